"""What a rank needs from its machine and launcher, below any training logic: the device it binds
(device), the process group and free ports (process_group), dying with its launcher (launcher_death),
the one-run-per-directory lock (run_lock), the disk and directory checks (resources) and the
temporary directories beside an output, cleaned once their writer is dead (temp_dirs)."""
