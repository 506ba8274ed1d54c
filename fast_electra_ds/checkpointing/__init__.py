"""Checkpoints on disk: writing them completely or not at all, finding the newest intact one, resuming
across world sizes (checkpoint), and loading DeepSpeed's files without pickle (safe_load)."""
