"""Checkpoints on disk: the DeepSpeed checkpoint plus what the trainer needs to continue exactly (step,
consumed samples, method/curriculum state, every rank's RNG state), written completely or not at all.

- layout: where checkpoints live, what makes one complete, the newest complete one;
- integrity: each rank's manifest of sizes and CRC-32s, damage found, the newest intact checkpoint;
- save: free space checked first, staged writing, installation, pruning; load: resuming from one;
- rng: the RNG states; universal: resuming on another number of ranks; safe_load: no unpickling;
- run_record: what wrote the checkpoints (configs, their history, parameter shapes), checked on --resume.

Callers use the names imported here."""
from .integrity import damage, resolve_checkpoint
from .layout import COMPLETE, TRAINER_STATE, checkpoint_root, complete_checkpoints, tag_for
from .load import load_checkpoint
from .run_record import HISTORY, SHAPES, check_model_shapes, check_resume, parameter_shapes, write_history
from .save import save_checkpoint
from .universal import for_world_size, saved_world_size

__all__ = ["COMPLETE", "HISTORY", "SHAPES", "TRAINER_STATE", "check_model_shapes", "check_resume", "checkpoint_root", "complete_checkpoints",
           "damage", "for_world_size", "load_checkpoint", "parameter_shapes", "resolve_checkpoint", "saved_world_size", "save_checkpoint",
           "tag_for", "write_history"]
