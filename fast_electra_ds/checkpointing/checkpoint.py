"""Checkpoints: the DeepSpeed checkpoint plus what the trainer needs to continue exactly
(step, consumed samples, method/curriculum state, every rank's RNG state).

A checkpoint is written into `step_N.saving`; each rank then records the size and CRC-32 of every
file it wrote in `manifest_rank<r>.json`, rank 0 writes the COMPLETE marker and renames the
directory to `step_N` (a re-save of an existing step swaps the complete one aside first, so it is
never deleted before its replacement is complete) and points DeepSpeed's `latest` at it. A
directory without COMPLETE (a process died while writing) is never taken as the latest; one whose
files no longer match its manifests is damaged and `--resume` falls back to the newest intact one.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..errors import UserError
from ..runtime.resources import fail_on_every_rank
from .safe_load import weights_only_loads

COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
LATEST = "latest"  # DeepSpeed's tag file: zero_to_fp32.py and engine.load_checkpoint(tag=None) read it
SAVING, REPLACED = ".saving", ".replaced"
UNIVERSAL = "universal"  # checkpoints/universal/step_N: a checkpoint converted for another number of ranks
_NAME = re.compile(r"step_(\d{8})(\.saving|\.replaced)?")
_PREFERENCE = {"": 0, SAVING: 1, REPLACED: 2}  # for one step: the final name, then the newer of the two others

_allow_inexact_resume = False


def allow_inexact_resume(allowed: bool) -> None:
    """`--allow-inexact-resume`: resume from a checkpoint whose RNG state is missing (the losses then
    differ from an uninterrupted run's)."""
    global _allow_inexact_resume
    _allow_inexact_resume = allowed


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def _step_dirs(root: Path) -> list[tuple[int, str, Path]]:
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), match.group(2) or "", path))
    return found


def complete_checkpoints(root: Path) -> list[Path]:
    """One complete checkpoint directory per step, oldest first."""
    best: dict[int, tuple[int, Path]] = {}
    for step, suffix, path in _step_dirs(root):
        if (path / COMPLETE).is_file() and (step not in best or _PREFERENCE[suffix] < best[step][0]):
            best[step] = (_PREFERENCE[suffix], path)
    return [best[step][1] for step in sorted(best)]


# --- verification ------------------------------------------------------------------------------------

def _crc32(path: Path) -> str:
    value = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            value = zlib.crc32(chunk, value)
    return f"{value:08x}"


def _owner(name: str) -> int:
    """The rank that writes a file of the checkpoint: DeepSpeed's zero_pp_rank_<r>_* and our *_rank<r>.*
    name it; the rest (mp_rank_00_model_states.pt, trainer_state.json) is rank 0's."""
    match = re.search(r"(?:zero_pp_rank_|_rank)(\d+)[_.]", name)
    return int(match.group(1)) if match else 0


def write_manifest(directory: Path, rank: int, world_size: int) -> None:
    files = {p.name: {"size": p.stat().st_size, "crc32": _crc32(p)} for p in sorted(directory.iterdir())
             if p.is_file() and not p.name.startswith("manifest_") and p.name != COMPLETE and _owner(p.name) == rank}
    _write_atomically(directory / f"manifest_rank{rank}.json", json.dumps({"rank": rank, "world_size": world_size, "files": files}, indent=1))


def damage(checkpoint: Path, part: tuple[int, int] = (0, 1)) -> str | None:
    """What is wrong with a complete checkpoint (a missing, truncated or altered file, unreadable
    JSON), or None. `part` = (i, n): check only every n-th file from the i-th (ranks share the work)."""
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return f"{TRAINER_STATE} is missing or not valid JSON"
    try:
        marker = json.loads((checkpoint / COMPLETE).read_text())
        world_size = int(marker["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # written before manifests existed: nothing to check against
    expected: dict[str, dict] = {}
    for rank in range(world_size):
        try:
            expected.update(json.loads((checkpoint / f"manifest_rank{rank}.json").read_text())["files"])
        except (OSError, ValueError, KeyError):
            return f"manifest_rank{rank}.json is missing or not valid JSON"
    for index, (name, record) in enumerate(sorted(expected.items())):
        if index % part[1] != part[0]:
            continue
        path = checkpoint / name
        if name.startswith("rng_state_rank") and not path.exists() and _allow_inexact_resume:
            continue
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != record["size"]:
            return f"{name} has {path.stat().st_size} bytes, {record['size']} were written"
        if _crc32(path) != record["crc32"]:
            return f"{name} does not match its checksum"
    return None


def _shared_damage(checkpoint: Path, all_ranks: bool) -> str | None:
    """damage(); with `all_ranks` (every rank of the process group calls this) the files are shared
    out over the ranks and every rank gets the answer."""
    if not all_ranks:
        return damage(checkpoint)
    found: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(found, damage(checkpoint, (dist.get_rank(), dist.get_world_size())))
    return next((problem for problem in found if problem), None)


def _warn(text: str) -> None:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def resolve_checkpoint(path: str | Path, all_ranks: bool = False) -> Path:
    """A run directory (its newest intact checkpoint, damaged ones skipped with a warning) or one
    checkpoint directory (which must be intact). `all_ranks`: every rank calls this at once (a
    collective), and each reads only its share of the files."""
    path = Path(path)
    if (path / COMPLETE).is_file():
        problem = _shared_damage(path, all_ranks)
        if problem:
            raise UserError(f"checkpoint {path} is damaged: {problem}", "use an earlier checkpoint or the run directory (its newest intact checkpoint)")
        return path
    if path.is_dir() and _NAME.fullmatch(path.name):
        raise UserError(f"checkpoint {path} is incomplete (the process writing it died)", "use an earlier checkpoint or the run directory")
    found = complete_checkpoints(checkpoint_root(path))
    if not found:
        raise UserError(f"no complete checkpoint in {path}", "pass a run directory that has saved a checkpoint (its checkpoints/step_*/COMPLETE), or start without --resume")
    problems = []
    for checkpoint in reversed(found):
        problem = _shared_damage(checkpoint, all_ranks)
        if not problem:
            if problems:
                _warn("; ".join(f"checkpoint {c} is damaged ({p})" for c, p in problems) + f"; using {checkpoint} instead")
            return checkpoint
        problems.append((checkpoint, problem))
    newest, problem = problems[0]
    fix = "pass --allow-inexact-resume to resume without it, or start a new train.out_dir" if "rng_state_rank" in problem else "start a new train.out_dir (or without --resume)"
    earlier = f"; the {len(problems) - 1} earlier ones are damaged too" if len(problems) > 1 else ""
    raise UserError(f"no intact checkpoint in {path}: {newest.name} is damaged ({problem}){earlier}", fix)


# --- RNG state, stored as tensors and plain values (loadable with weights_only=True) -------------------

def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss},
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    python, numpy = state["python"], state["numpy"]
    if isinstance(python, dict):
        random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
        np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    else:  # the format before tensors: random.getstate() and np.random.get_state() as they were
        random.setstate(python)
        np.random.set_state(numpy)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _load_rng_file(path: Path) -> dict[str, Any]:
    # Checkpoints written before the tensor format hold numpy arrays: allow exactly those classes.
    numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    numpy_array = [np.ndarray, np.dtype, np.dtype("uint32").__class__, numpy_core.multiarray._reconstruct]
    with torch.serialization.safe_globals(numpy_array):
        return torch.load(path, weights_only=True)


# --- save and load -------------------------------------------------------------------------------------

def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        torch.save(_rng_state(), staging / f"rng_state_rank{rank}.pt")
        if rank == 0:
            _write_atomically(staging / TRAINER_STATE, json.dumps(trainer_state, indent=1))
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
        _write_atomically(staging / COMPLETE, json.dumps({"step": step, "world_size": world_size}) + "\n")
        _install(staging, final)
        _write_atomically(root / LATEST, tag)
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
    for step, _, path in _step_dirs(root):
        if step < newest and path not in kept:
            shutil.rmtree(path, ignore_errors=True)


# --- another number of ranks: DeepSpeed's universal checkpoint ----------------------------------------

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
    _write_atomically(tmp / COMPLETE, json.dumps({"converted_from": str(checkpoint)}) + "\n")
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


def load_checkpoint(engine, checkpoint: Path) -> dict[str, Any]:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG; return the trainer state."""
    rng_file = checkpoint / f"rng_state_rank{dist.get_rank()}.pt"
    if checkpoint.parent.name == UNIVERSAL:  # another number of ranks: no rank's RNG state carries over
        with weights_only_loads(f"checkpoint {checkpoint}"):
            load_path, client_state = engine.load_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
        if load_path is None:
            raise UserError(f"DeepSpeed could not load the universal checkpoint {checkpoint}", "resume on the number of ranks that wrote it")
        _warn("resuming on another number of ranks: the run continues closely, not exactly (RNG state and batch split differ)")
        return json.loads((checkpoint / TRAINER_STATE).read_text())
    if not rng_file.is_file() and not _allow_inexact_resume:
        raise UserError(f"checkpoint {checkpoint} lacks {rng_file.name}: a resume from it would not repeat the uninterrupted run",
                        "pass --allow-inexact-resume to resume anyway, or resume from an earlier checkpoint")
    with weights_only_loads(f"checkpoint {checkpoint}"):
        load_path, client_state = engine.load_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    if load_path is None:
        raise UserError(f"DeepSpeed could not load checkpoint {checkpoint}", "check that it was written by a run with the same DeepSpeed config")
    if rng_file.is_file():
        _set_rng_state(_load_rng_file(rng_file))
    else:
        _warn(f"checkpoint {checkpoint} lacks {rng_file.name}: resuming inexactly (--allow-inexact-resume)")
    return client_state["trainer"]
