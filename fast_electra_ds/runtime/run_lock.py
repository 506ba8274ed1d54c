"""One job per train.out_dir: rank 0 holds `<out_dir>/RUN_LOCK` (host, pid, process start time, job)
while the job runs, so a second job on the same directory refuses with one line instead of training
beside the first and writing the same checkpoints and metrics.

A lock is stale, and taken over, when its process is gone: on this host its pid no longer runs with
the recorded start time; on another host its heartbeat (the file's mtime, renewed every 30 s) is
older than 5 minutes; under Slurm, a requeued job replaces its own earlier run's lock.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
from pathlib import Path

from .resources import fail_on_every_rank

LOCK_FILE = "RUN_LOCK"
HEARTBEAT_S = 30
STALE_AFTER_S = 300


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot; /proc/<pid>/stat field 22), or None
    if no such process runs (a zombie has ended): with the pid it names one process even across pid reuse."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def this_job() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start_time": process_start_time(pid), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "master": f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}", "slurm_job": os.environ.get("SLURM_JOB_ID")}


def is_stale(lock: dict, age_s: float) -> bool:
    if lock.get("slurm_job") and lock["slurm_job"] == os.environ.get("SLURM_JOB_ID"):
        return True  # this job's earlier run (a requeue): Slurm ended its processes before restarting it
    if lock.get("host") == socket.gethostname():
        return process_start_time(int(lock.get("pid", 0))) != lock.get("start_time")
    return age_s > STALE_AFTER_S


def _read(path: Path) -> tuple[dict, float] | None:
    try:
        return json.loads(path.read_text()), time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}, time.time() - path.stat().st_mtime  # half-written by a process that died: stale when old


def try_acquire(out_dir: Path) -> str | None:
    """Take the lock for this process; return None, or the one-line reason it is held."""
    path = out_dir / LOCK_FILE
    record = json.dumps(this_job())
    for _ in range(3):  # a stale lock removed by a rival between our read and our create: try again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            found = _read(path)
            if found is None:
                continue
            lock, age = found
            if lock and not is_stale(lock, age):
                return (f"train.out_dir {out_dir} is in use by another job (host {lock.get('host')}, pid {lock.get('pid')}, "
                        f"started {lock.get('started')})")
            if lock == {} and age < 10:
                return f"train.out_dir {out_dir} is being locked by another job starting now"
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record + "\n")
        return None
    return f"train.out_dir {out_dir}: could not take {LOCK_FILE}"


def release(out_dir: Path) -> None:
    """Remove the lock if it is still this process's."""
    path = out_dir / LOCK_FILE
    found = _read(path)
    if found and found[0].get("pid") == os.getpid() and found[0].get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _heartbeat(path: Path) -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        try:
            os.utime(path)
        except OSError:
            return


def hold_run_lock(out_dir: str | Path) -> None:
    """Every rank calls this once the process group is up: rank 0 takes the lock (released at exit),
    and when it is held by another job rank 0 raises the one-line error while the other ranks
    leave quietly (exit status 2), so the job's output holds the reason once."""
    import torch.distributed as dist

    out_dir = Path(out_dir)
    verdict: list[str | None] = [None]
    if dist.get_rank() == 0:
        verdict[0] = try_acquire(out_dir)
        if verdict[0] is None:
            atexit.register(release, out_dir)
            threading.Thread(target=_heartbeat, args=(out_dir / LOCK_FILE,), daemon=True).start()
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        fail_on_every_rank(verdict[0], "wait for it to finish or stop it, or choose another train.out_dir")
