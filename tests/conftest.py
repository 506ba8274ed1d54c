"""Shared fixtures: a real corpus (Python's pydoc topics), a tokenizer and token shards made once
per session, and a helper that runs train.py on several CPU ranks through the deepspeed launcher."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fast_electra_ds.runtime.process_group import RENDEZVOUS_VARIABLES, free_port  # noqa: F401 (tests import free_port from here)

ROOT = Path(__file__).resolve().parents[1]


def cpu_env() -> dict:
    # W&B offline: tests never reach a network (and a run with W&B on must work without one).
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", WANDB_MODE="offline", WANDB_SILENT="true")
    for inherited in RENDEZVOUS_VARIABLES:  # in-process helpers (engine_memory) set them in this process
        env.pop(inherited, None)
    return env


def launch(args: list[str], ranks: int = 2, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """`deepspeed --num_gpus <ranks> train.py <args>` on CPU ranks (gloo)."""
    command = ["deepspeed", "--num_gpus", str(ranks), "--master_port", str(free_port()), str(ROOT / "train.py"), *args]
    result = subprocess.run(command, cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise AssertionError(f"launch failed ({result.returncode}):\n{tail}")
    return result


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`fast-electra <args>` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fast_electra_ds.cli", *args], cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_train_single(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python train.py <args>`: one process, no launcher."""
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    from fast_electra_ds.data.text import write_pydoc_corpus

    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    write_pydoc_corpus(path)
    return path


@pytest.fixture(scope="session")
def prepared(corpus, tmp_path_factory) -> dict:
    """A 2000-token sentencepiece tokenizer and token shards of the pydoc corpus."""
    from fast_electra_ds.data.prepare import prepare
    from fast_electra_ds.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("prepared")
    train_tokenizer([str(corpus)], root / "tokenizer", vocab_size=2000)
    prepare([str(corpus)], str(root / "tokenizer"), root / "data", workers=1, progress=False)
    return {"tokenizer": root / "tokenizer", "data": root / "data", "root": root}
