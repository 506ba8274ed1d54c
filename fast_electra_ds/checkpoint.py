"""Checkpoints: the DeepSpeed checkpoint plus what the trainer needs to continue exactly
(step, consumed samples, method/curriculum state, every rank's RNG state).

A checkpoint counts only once every rank has written its part and rank 0 has then written the
COMPLETE marker; a directory without it (a process died while writing) is never taken as the
latest and is overwritten or pruned later.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .errors import UserError

COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / COMPLETE).is_file())


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its latest complete checkpoint) or one checkpoint directory."""
    path = Path(path)
    if (path / COMPLETE).is_file():
        return path
    if path.is_dir() and path.name.startswith("step_"):
        raise UserError(f"checkpoint {path} is incomplete (the process writing it died)", "use an earlier checkpoint or the run directory")
    found = complete_checkpoints(checkpoint_root(path))
    if not found:
        raise UserError(f"no complete checkpoint in {path}", "pass a run directory that has saved a checkpoint (its checkpoints/step_*/COMPLETE), or start without --resume")
    return found[-1]


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(engine, run_dir: Path, step: int, trainer_state: dict[str, Any], keep_last: int) -> Path:
    root = checkpoint_root(run_dir)
    tag = tag_for(step)
    rank = dist.get_rank()
    if rank == 0 and (root / tag).exists():
        shutil.rmtree(root / tag)  # a leftover from a run that died while writing this step
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tag, client_state={"trainer": trainer_state}, save_latest=False)
    torch.save(_rng_state(), root / tag / f"rng_state_rank{rank}.pt")
    dist.barrier()  # every rank's shards and RNG state are on disk
    if rank == 0:
        _write_atomically(root / tag / TRAINER_STATE, json.dumps(trainer_state, indent=1))
        _write_atomically(root / tag / COMPLETE, f"{step}\n")
        for old in complete_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return root / tag


def load_checkpoint(engine, checkpoint: Path) -> dict[str, Any]:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG; return the trainer state."""
    load_path, client_state = engine.load_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    if load_path is None:
        raise UserError(f"DeepSpeed could not load checkpoint {checkpoint}", "check that it was written by a run with the same DeepSpeed config")
    rng_file = checkpoint / f"rng_state_rank{dist.get_rank()}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return client_state["trainer"]
