"""Where checkpoints live and what makes one complete: run_dir/checkpoints/step_N, written into
step_N.saving and renamed when every rank's files and the COMPLETE marker are on disk (a re-save swaps
the complete one aside as step_N.replaced until its replacement is in place)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch.distributed as dist

COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
LATEST = "latest"  # DeepSpeed's tag file: zero_to_fp32.py and engine.load_checkpoint(tag=None) read it
SAVING, REPLACED = ".saving", ".replaced"
UNIVERSAL = "universal"  # checkpoints/universal/step_N: a checkpoint converted for another number of ranks
STEP_NAME = re.compile(r"step_(\d{8})(\.saving|\.replaced)?")
_PREFERENCE = {"": 0, SAVING: 1, REPLACED: 2}  # for one step: the final name, then the newer of the two others


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def step_dirs(root: Path) -> list[tuple[int, str, Path]]:
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), match.group(2) or "", path))
    return found


def complete_checkpoints(root: Path) -> list[Path]:
    """One complete checkpoint directory per step, oldest first."""
    best: dict[int, tuple[int, Path]] = {}
    for step, suffix, path in step_dirs(root):
        if (path / COMPLETE).is_file() and (step not in best or _PREFERENCE[suffix] < best[step][0]):
            best[step] = (_PREFERENCE[suffix], path)
    return [best[step][1] for step in sorted(best)]


def warn(text: str) -> None:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        print(f"warning: {text}", file=sys.stderr, flush=True)
