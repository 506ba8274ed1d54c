"""Saving a checkpoint: refused before anything is written when the disk cannot hold it, written into
step_N.saving, installed as step_N once every rank's files are on disk, older ones pruned; a disk that
fills up while writing is one error line and the partial save is removed."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserError
from ..runtime.resources import fail_on_every_rank
from ..runtime.temp_dirs import write_atomically
from .integrity import write_manifest
from .layout import COMPLETE, LATEST, REPLACED, SAVING, TRAINER_STATE, checkpoint_root, complete_checkpoints, step_dirs, tag_for
from .rng import rng_state


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def expected_checkpoint_bytes(engine, root: Path) -> int:
    """The previous checkpoint's size, or before the first one: 16 bytes a parameter (fp32 master
    weights and two Adam moments, the module's own weights)."""
    found = complete_checkpoints(root)
    if found:
        return _directory_bytes(found[-1])
    return 16 * sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())


def _resume_hint(root: Path) -> str:
    found = complete_checkpoints(root)
    return f"re-launch with --resume (it continues from {found[-1]})" if found else "re-launch (no checkpoint was completed yet)"


def check_free_space(engine, root: Path, step: int) -> None:
    """Refuse a save that cannot fit, before writing anything (rank 0 decides, every rank agrees)."""
    verdict: list[Any] = [None]
    if dist.get_rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        needed = expected_checkpoint_bytes(engine, root) * 1.1 + (1 << 20)  # a margin for metadata and growth
        free = shutil.disk_usage(root).free
        if free < needed:
            verdict[0] = (f"not enough free space for checkpoint {tag_for(step)} in {root}: {free / 2**20:.1f} MiB free, {needed / 2**20:.1f} MiB needed",
                          f"free space there (or lower train.keep_last), then {_resume_hint(root)}")
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0]:
        fail_on_every_rank(*verdict[0])


def _disk_full(err: BaseException, root: Path) -> bool:
    """torch.save reports ENOSPC as a RuntimeError ("unexpected pos 1024 vs 918", its cause an
    "iostream error"): look through the chain, then at the disk itself."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(seen) or "iostream error" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(root).free < (1 << 20)
    except OSError:
        return False


def save_checkpoint(engine, run_dir: Path, step: int, trainer_state: dict[str, Any], keep_last: int) -> Path:
    root = checkpoint_root(run_dir)
    tag = tag_for(step)
    final, staging = root / tag, root / (tag + SAVING)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    check_free_space(engine, root, step)
    if rank == 0 and staging.exists():
        shutil.rmtree(staging)  # a leftover of a run that died while writing this step
    dist.barrier()
    try:
        engine.save_checkpoint(str(root), tag=staging.name, client_state={"trainer": trainer_state}, save_latest=False)
        torch.save(rng_state(), staging / f"rng_state_rank{rank}.pt")
        if rank == 0:
            write_atomically(staging / TRAINER_STATE, json.dumps(trainer_state, indent=1))
        write_manifest(staging, rank, world_size)
    except (OSError, RuntimeError) as err:
        if not _disk_full(err, root):
            raise
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"disk full while saving checkpoint {tag} in {root} (no space left on device)",
                        f"free space there, then {_resume_hint(root)}") from None
    dist.barrier()  # every rank's files and manifest are on disk
    if rank == 0:
        write_atomically(staging / COMPLETE, json.dumps({"step": step, "world_size": world_size}) + "\n")
        _install(staging, final)
        write_atomically(root / LATEST, tag)
        _prune(root, step, keep_last)
    dist.barrier()
    return final


def _install(staging: Path, final: Path) -> None:
    """Rename the complete `staging` to `final`; a complete `final` (a re-save of its step) is swapped
    aside, not deleted, until the new one is in place."""
    if not final.exists():
        os.replace(staging, final)
        return
    if not (final / COMPLETE).is_file():
        shutil.rmtree(final)  # a half-written checkpoint of this step from before staging directories
        os.replace(staging, final)
        return
    replaced = final.with_name(final.name + REPLACED)
    shutil.rmtree(replaced, ignore_errors=True)  # a leftover of an earlier swap: the complete final exists
    os.replace(final, replaced)
    os.replace(staging, final)
    shutil.rmtree(replaced, ignore_errors=True)


def _prune(root: Path, newest: int, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints (all with keep_last <= 0); remove the other
    directories of older steps: older checkpoints, half-written ones, leftovers of a swap."""
    complete = complete_checkpoints(root)
    kept = set(complete[-keep_last:] if keep_last > 0 else complete)
    for step, _, path in step_dirs(root):
        if step < newest and path not in kept:
            shutil.rmtree(path, ignore_errors=True)
