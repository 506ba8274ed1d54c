"""The launch line of a training run, written once for the tests, benchmarks and scripts: the
deepspeed launcher on N ranks with a free rendezvous port (`deepspeed --num_gpus N --master_port P
train.py ARGS`), or one process without a launcher (`python train.py ARGS`), the same for a module entry
point (`--module`: the replacements pass), and the environment its processes get."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .process_group import RENDEZVOUS_VARIABLES, free_port

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"  # the source checkout's entry point
TRAIN_MODULE = "fast_electra_ds.train"  # the same entry point where the package is installed from a wheel


def launcher_line(ranks: int) -> list[str]:
    """`deepspeed --num_gpus <ranks> --master_port <a free port>`."""
    return ["deepspeed", "--num_gpus", str(ranks), "--master_port", str(free_port())]


def deepspeed_command(script: str | Path, args: list[str], ranks: int) -> list[str]:
    """`deepspeed --num_gpus <ranks> --master_port <a free port> <script> <args>`."""
    return [*launcher_line(ranks), str(script), *args]


def module_command(module: str, args: list[str], ranks: int) -> list[str]:
    """`python -m <module> <args>` on one rank; `deepspeed --num_gpus <ranks> --master_port <free> --module <module> <args>` on more."""
    if ranks == 1:
        return [sys.executable, "-m", module, *args]
    return [*launcher_line(ranks), "--module", module, *args]


def train_command(args: list[str], ranks: int = 2, launcher: bool = False) -> list[str]:
    """train.py with `args` on `ranks` ranks through the deepspeed launcher; one rank runs as a plain
    `python train.py` unless `launcher`. The checkout's train.py puts its own package first on the path
    (a worktree tests its own code); without a checkout, the installed module runs."""
    checkout = TRAIN_SCRIPT.is_file()
    if ranks == 1 and not launcher:
        return [sys.executable, *([str(TRAIN_SCRIPT)] if checkout else ["-m", TRAIN_MODULE]), *args]
    if checkout:
        return deepspeed_command(TRAIN_SCRIPT, args, ranks)
    return [*launcher_line(ranks), "--module", TRAIN_MODULE, *args]


def launch_env(cpu: bool = True, keep_set: bool = False, **extra: str) -> dict[str, str]:
    """This process's environment for a run it starts: output unbuffered, no rendezvous variables of
    its own (or its caller's) passed on (a launcher sets them for its ranks; a single process would
    otherwise rendezvous on a port already in use); with `cpu`, DeepSpeed's CPU accelerator and one
    OpenMP thread per rank (where `keep_set`, values already in the environment win)."""
    env = {key: value for key, value in os.environ.items() if key not in RENDEZVOUS_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    if cpu:
        for key, value in (("DS_ACCELERATOR", "cpu"), ("OMP_NUM_THREADS", "1")):
            env[key] = env.get(key, value) if keep_set else value
    env.update(extra)
    return env
