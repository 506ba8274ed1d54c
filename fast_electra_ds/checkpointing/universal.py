"""Resuming on another number of ranks: the checkpoint converted to DeepSpeed's universal checkpoint
(checkpoints/universal/step_N, made by rank 0)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ..errors import UserError
from ..runtime.temp_dirs import write_atomically
from .layout import COMPLETE, SAVING, TRAINER_STATE, UNIVERSAL
from .safe_load import weights_only_loads


def saved_world_size(checkpoint: Path) -> int | None:
    try:
        return int(json.loads((checkpoint / COMPLETE).read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):  # written before COMPLETE recorded it
        return len(list(checkpoint.glob("*zero_pp_rank_*_optim_states.pt"))) or None


def _to_universal(checkpoint: Path, universal: Path) -> None:
    import contextlib
    import io
    from argparse import Namespace

    from deepspeed.checkpoint import ds_to_universal

    tmp = universal.with_name(universal.name + SAVING)
    shutil.rmtree(tmp, ignore_errors=True)
    args = Namespace(input_folder=str(checkpoint), output_folder=str(tmp), num_extract_workers=1, num_merge_workers=1,
                     keep_temp_folder=False, strict=True, inject_missing_state=False)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), weights_only_loads(f"checkpoint {checkpoint}"):
            ds_to_universal.main(args)
    except UserError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as err:  # DeepSpeed's own failure, with its log: one line
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"checkpoint {checkpoint} could not be converted to DeepSpeed's universal format ({type(err).__name__}: {str(err)[:200]})",
                        f"resume on {saved_world_size(checkpoint)} ranks") from None
    shutil.copy2(checkpoint / TRAINER_STATE, tmp / TRAINER_STATE)
    write_atomically(tmp / COMPLETE, json.dumps({"converted_from": str(checkpoint)}) + "\n")
    for old in universal.parent.iterdir():  # one conversion is kept: the one being resumed from
        if old != tmp:
            shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, universal)


def for_world_size(checkpoint: Path, world_size: int, ds_config: dict[str, Any]) -> Path:
    """The checkpoint to load on `world_size` ranks: itself, or when it was written by another number
    of ranks, its conversion to DeepSpeed's universal checkpoint (made by rank 0 into
    checkpoints/universal/), with `ds_config` set to load it. Call on every rank before deepspeed.initialize."""
    saved = saved_world_size(checkpoint)
    if saved is None or saved == world_size:
        return checkpoint
    universal = checkpoint.parent / UNIVERSAL / checkpoint.name.split(".")[0]
    problem: list[str | None] = [None]
    if dist.get_rank() == 0:
        print(f"[fast-electra] checkpoint {checkpoint.name} was written by {saved} rank{'s' * (saved != 1)}, this run has {world_size}: "
              f"loading it through DeepSpeed's universal checkpoint ({universal})", flush=True)
        try:
            _to_universal(checkpoint, universal)  # afresh: a step may have been re-saved since an earlier conversion
        except UserError as err:
            problem[0] = str(err)
    dist.broadcast_object_list(problem, src=0)  # the others wait for the conversion
    if problem[0]:
        raise UserError(problem[0])
    ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return universal
