"""Ranks die with their launcher. `deepspeed train.py` runs the `deepspeed` runner, which starts
`deepspeed.launcher.launch`, which starts the ranks. The runner does not forward SIGTERM and nothing
forwards SIGKILL, so killing it used to leave both ranks training as orphans.

Each rank started by a launcher therefore
  * asks the kernel for SIGTERM when its parent (launch, torchrun) dies (prctl PR_SET_PDEATHSIG), and
  * watches the launcher processes above it (parent and a `deepspeed`/`torchrun` grandparent) once
    a second, sending itself SIGTERM when one is gone.
SIGTERM is the trainer's stop signal: the ranks checkpoint at the end of the step and exit. If a
rank has not exited ORPHAN_GRACE_S seconds later (a collective that never returns), it exits hard.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .run_lock import process_start_time

PR_SET_PDEATHSIG = 1
LAUNCHERS = ("deepspeed", "torchrun", "torch.distributed.run", "torch/distributed/run.py")
ORPHAN_GRACE_S = float(os.environ.get("FE_ORPHAN_GRACE_S", "300"))
POLL_S = 1.0


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def launcher_processes() -> list[tuple[int, str]]:
    """(pid, start time) of the launcher processes above this rank: the chain of ancestors whose
    command line names a launcher, starting at the parent. Empty when started without one (a user's
    shell is not a launcher: its exit must not stop `nohup python train.py`)."""
    chain, pid = [], os.getppid()
    while pid > 1 and len(chain) < 2 and any(name in command_line(pid) for name in LAUNCHERS):
        chain.append((pid, process_start_time(pid)))
        pid = parent_of(pid)
    return chain


def _set_parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(chain: list[tuple[int, str]], on_death) -> None:
    while True:
        time.sleep(POLL_S)
        gone = next((pid for pid, started in chain if process_start_time(pid) != started), None)
        if gone is not None:
            on_death(gone)
            return


def _stop_then_exit(pid: int) -> None:
    print(f"[fast-electra] launcher process {pid} is gone: checkpointing and exiting (rank pid {os.getpid()})", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    print(f"[fast-electra] still running {ORPHAN_GRACE_S:.0f} s after the launcher died: exiting", file=sys.stderr, flush=True)
    os._exit(143)


def die_with_launcher() -> list[tuple[int, str]]:
    """Tie this rank's life to its launcher (see the module docstring); returns the watched processes."""
    chain = launcher_processes()
    if not chain:
        return []
    _set_parent_death_signal(signal.SIGTERM)
    if process_start_time(chain[0][0]) != chain[0][1]:  # the parent died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=_watch, args=(chain, _stop_then_exit), daemon=True, name="launcher-watch").start()
    return chain
