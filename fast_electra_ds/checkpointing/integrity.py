"""Whether a complete checkpoint is intact: each rank records the size and CRC-32 of every file it
wrote (manifest_rank<r>.json); a directory whose files no longer match is damaged, and a run
directory resolves to its newest intact checkpoint."""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import torch.distributed as dist

from ..errors import UserError
from ..runtime.temp_dirs import write_atomically
from .layout import COMPLETE, STEP_NAME, TRAINER_STATE, checkpoint_root, complete_checkpoints, warn


def crc32(path: Path) -> str:
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
    files = {p.name: {"size": p.stat().st_size, "crc32": crc32(p)} for p in sorted(directory.iterdir())
             if p.is_file() and not p.name.startswith("manifest_") and p.name != COMPLETE and _owner(p.name) == rank}
    write_atomically(directory / f"manifest_rank{rank}.json", json.dumps({"rank": rank, "world_size": world_size, "files": files}, indent=1))


def damage(checkpoint: Path, part: tuple[int, int] = (0, 1), inexact: bool = False) -> str | None:
    """What is wrong with a complete checkpoint (a missing, truncated or altered file, unreadable
    JSON), or None. `part` = (i, n): check only every n-th file from the i-th (ranks share the work).
    `inexact` (--allow-inexact-resume): a missing RNG state file is no damage."""
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
        if name.startswith("rng_state_rank") and not path.exists() and inexact:
            continue
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != record["size"]:
            return f"{name} has {path.stat().st_size} bytes, {record['size']} were written"
        if crc32(path) != record["crc32"]:
            return f"{name} does not match its checksum"
    return None


def shared_damage(checkpoint: Path, all_ranks: bool, inexact: bool = False) -> str | None:
    """damage(); with `all_ranks` (every rank of the process group calls this) the files are shared
    out over the ranks and every rank gets the answer."""
    if not all_ranks:
        return damage(checkpoint, inexact=inexact)
    found: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(found, damage(checkpoint, (dist.get_rank(), dist.get_world_size()), inexact))
    return next((problem for problem in found if problem), None)


def resolve_checkpoint(path: str | Path, all_ranks: bool = False, inexact: bool = False) -> Path:
    """A run directory (its newest intact checkpoint, damaged ones skipped with a warning) or one
    checkpoint directory (which must be intact). `all_ranks`: every rank calls this at once (a
    collective), and each reads only its share of the files. `inexact` as in damage()."""
    path = Path(path)
    if (path / COMPLETE).is_file():
        problem = shared_damage(path, all_ranks, inexact)
        if problem:
            raise UserError(f"checkpoint {path} is damaged: {problem}", "use an earlier checkpoint or the run directory (its newest intact checkpoint)")
        return path
    if path.is_dir() and STEP_NAME.fullmatch(path.name):
        raise UserError(f"checkpoint {path} is incomplete (the process writing it died)", "use an earlier checkpoint or the run directory")
    found = complete_checkpoints(checkpoint_root(path))
    if not found:
        raise UserError(f"no complete checkpoint in {path}", "pass a run directory that has saved a checkpoint (its checkpoints/step_*/COMPLETE), or start without --resume")
    problems = []
    for checkpoint in reversed(found):
        problem = shared_damage(checkpoint, all_ranks, inexact)
        if not problem:
            if problems:
                warn("; ".join(f"checkpoint {c} is damaged ({p})" for c, p in problems) + f"; using {checkpoint} instead")
            return checkpoint
        problems.append((checkpoint, problem))
    newest, problem = problems[0]
    fix = "pass --allow-inexact-resume to resume without it, or start a new train.out_dir" if "rng_state_rank" in problem else "start a new train.out_dir (or without --resume)"
    earlier = f"; the {len(problems) - 1} earlier ones are damaged too" if len(problems) > 1 else ""
    raise UserError(f"no intact checkpoint in {path}: {newest.name} is damaged ({problem}){earlier}", fix)
