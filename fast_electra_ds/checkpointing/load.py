"""Loading a checkpoint into the engine: weights, optimizer, scheduler and this rank's RNG state, so
the run continues exactly (closely, from a universal checkpoint)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ..errors import UserError
from .layout import TRAINER_STATE, UNIVERSAL, warn
from .rng import load_rng_file, set_rng_state
from .safe_load import weights_only_loads


def load_checkpoint(engine, checkpoint: Path, inexact: bool = False) -> dict[str, Any]:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG; return the trainer state.
    `inexact` (--allow-inexact-resume): a checkpoint without this rank's RNG state loads, with a warning."""
    rng_file = checkpoint / f"rng_state_rank{dist.get_rank()}.pt"
    if checkpoint.parent.name == UNIVERSAL:  # another number of ranks: no rank's RNG state carries over
        with weights_only_loads(f"checkpoint {checkpoint}"):
            load_path, client_state = engine.load_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
        if load_path is None:
            raise UserError(f"DeepSpeed could not load the universal checkpoint {checkpoint}", "resume on the number of ranks that wrote it")
        warn("resuming on another number of ranks: the run continues closely, not exactly (RNG state and batch split differ)")
        return json.loads((checkpoint / TRAINER_STATE).read_text())
    if not rng_file.is_file() and not inexact:
        raise UserError(f"checkpoint {checkpoint} lacks {rng_file.name}: a resume from it would not repeat the uninterrupted run",
                        "pass --allow-inexact-resume to resume anyway, or resume from an earlier checkpoint")
    with weights_only_loads(f"checkpoint {checkpoint}"):
        load_path, client_state = engine.load_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    if load_path is None:
        raise UserError(f"DeepSpeed could not load checkpoint {checkpoint}", "check that it was written by a run with the same DeepSpeed config")
    if rng_file.is_file():
        set_rng_state(load_rng_file(rng_file))
    else:
        warn(f"checkpoint {checkpoint} lacks {rng_file.name}: resuming inexactly (--allow-inexact-resume)")
    return client_state["trainer"]
