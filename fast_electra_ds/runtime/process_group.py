"""Starting the process group quietly and with an actionable error: DeepSpeed's collectives warn on
every call, a first start compiles DeepSpeed ops without a word (said here, with the time it took),
and a taken rendezvous port is one line that says which port to pass instead."""
from __future__ import annotations

import contextlib
import os
import random
import socket
import time
import warnings
from pathlib import Path

from ..errors import UserError

# DeepSpeed 0.19 calls torch.distributed.all_gather_into_tensor / reduce_scatter_tensor, which torch
# marks deprecated with a FutureWarning; ZeRO-3 calls them every step and the warning reappeared on
# every step (31 times in a 30-step single-rank run). Nothing for a user to act on (the calls are
# inside DeepSpeed): filtered once, these two messages only.
# The variables a launcher sets for its ranks: a process that starts runs of its own must not pass
# its own (or its caller's) on, or a single-process run would rendezvous on a port already in use.
RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")

DEEPSPEED_DEPRECATED_COLLECTIVES = r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated"


def quiet_known_warnings() -> None:
    warnings.filterwarnings("ignore", message=DEEPSPEED_DEPRECATED_COLLECTIVES, category=FutureWarning)


SCHEDULER_NOT_STARTED = "Attempting to get learning rate from scheduler before it has started"


@contextlib.contextmanager
def scheduler_built_quietly():
    """DeepSpeed's WarmupLR and WarmupDecayLR constructors (runtime/lr_schedules.py) set the first
    learning rate by calling their own get_lr() before their first step, which then warns that the
    scheduler has not started: every run, about DeepSpeed's own call. Dropped while the engine is
    built only; the same warning from any later call (a real misuse) still shows."""
    from deepspeed.utils import logger

    def keep(record) -> bool:
        return SCHEDULER_NOT_STARTED not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _op_is_built(name: str) -> bool:
    """Whether torch's extension cache already holds the compiled op (then loading it takes a second)."""
    from torch.utils.cpp_extension import _get_build_directory

    try:
        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").is_file()
    except (OSError, RuntimeError):
        return False


def explain_op_builds(say=None) -> None:
    """A DeepSpeed op that is neither pre-installed nor in torch's extension cache is compiled when
    first used (on CPU: the shared-memory collectives, at init_distributed; 85 s on a 2-core
    machine), and DeepSpeed says nothing meanwhile. From now on this process says so once (rank 0)
    before such a build, and how long it took after. Idempotent."""
    from deepspeed.ops.op_builder.builder import OpBuilder

    if getattr(OpBuilder.load, "explained", False):
        return
    say = say or (lambda text: print(f"[fast-electra] {text}", flush=True) if os.environ.get("RANK", "0") == "0" else None)
    original = OpBuilder.load

    def load(self, verbose=False):
        from deepspeed.git_version_info import installed_ops

        if self.name in OpBuilder._loaded_ops or installed_ops.get(self.name, False) or _op_is_built(self.name):
            return original(self, verbose)
        say(f"DeepSpeed is compiling its {self.name} op, once per machine and DeepSpeed/torch version "
            f"(about a minute or two; later starts load it from torch's extension cache, TORCH_EXTENSIONS_DIR)")
        started = time.perf_counter()
        module = original(self, verbose)
        say(f"DeepSpeed's {self.name} op compiled in {time.perf_counter() - started:.0f} s")
        return module

    load.explained = True
    OpBuilder.load = load


def ephemeral_port_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port() -> int:
    """A port free now, taken below the ephemeral range when one there is free: a port the OS hands
    out for bind(0) is ephemeral, and between this check and the launcher's bind an outgoing
    connection (gloo opens many) could be given the same one. That race failed about one test run in
    three while a 2-rank job ran beside the suite."""
    floor = ephemeral_port_floor()
    for port in random.Random(os.getpid() ^ time.monotonic_ns()).sample(range(max(1024, floor - 12000), floor), 20):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(timeout_minutes: float) -> None:
    """deepspeed.init_distributed with the run's collective timeout (train.collective_timeout_minutes:
    DeepSpeed's own default is 10 minutes, set otherwise only by DEEPSPEED_TIMEOUT), a taken
    MASTER_PORT as one line naming a free one."""
    from datetime import timedelta

    import deepspeed
    import torch.distributed as dist

    try:
        deepspeed.init_distributed(verbose=False, timeout=timedelta(minutes=timeout_minutes))
    except dist.DistNetworkError as err:
        if "EADDRINUSE" not in str(err):
            raise
        port = os.environ.get("MASTER_PORT", "?")
        other = free_port()
        raise UserError(f"the rendezvous port {port} (MASTER_PORT) is already in use on this machine, probably by another run",
                        f"pass a free port to the launcher, e.g. deepspeed --master_port {other} ... (torchrun --master_port {other}; "
                        f"python train.py: MASTER_PORT={other})") from None
