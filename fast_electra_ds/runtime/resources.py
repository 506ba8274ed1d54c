"""Resources a run needs, checked before anything is built: a writable train.out_dir. (Free space
for each checkpoint is checked by checkpoint.save_checkpoint, where its size is known.)"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..errors import UserError
from .job_failure import QUIET_EXIT_DELAY_S


def check_out_dir_writable(out_dir: str | Path) -> None:
    """Create train.out_dir (if absent) and a file in it: a path under a file, on a read-only or
    virtual file system (/proc) or without permission fails here in one line, not after the model
    and DeepSpeed engine were built."""
    out_dir = Path(out_dir)
    probe = out_dir / f".write_test.{socket.gethostname()}.{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        blocking = next((p for p in [out_dir, *out_dir.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file" if blocking else (err.strerror or str(err))
        raise UserError(f"train.out_dir {out_dir} cannot be written ({reason})", "choose a directory you can write, e.g. train.out_dir=runs/<name>") from None


def fail_on_every_rank(problem: str, fix: str) -> None:
    """Every rank calls this with the same agreed error (a collective decision): see raise_on_every_rank."""
    import torch.distributed as dist

    raise_on_every_rank(UserError(problem, fix), dist.get_rank() if dist.is_initialized() else 0)


def raise_on_every_rank(error: UserError, rank: int) -> None:
    """Every rank calls this with the same agreed `error`: rank 0 raises it (marked as known to every
    rank, so nobody is told again), the other ranks leave quietly with its exit status a moment later,
    so the job's output holds the line once."""
    if rank == 0:
        error.known_to_every_rank = True
        raise error
    time.sleep(QUIET_EXIT_DELAY_S)  # let rank 0 print the reason before the launcher sees this rank's exit
    raise SystemExit(error.exit_code)
