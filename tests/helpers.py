"""What the tests share besides fixtures (tests/conftest.py): running the product as a user does
(train.py through the deepspeed launcher or on one process, `fast-electra ...`), the arguments of a
tiny run, reading its metrics, and checking a one-line user error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fast_electra_ds.runtime.launch import launch_env, module_command, train_command
from fast_electra_ds.runtime.process_group import free_port  # noqa: F401 (tests take free ports from here)

ROOT = Path(__file__).resolve().parents[1]


def cpu_env() -> dict:
    # W&B offline: tests never reach a network (and a run with W&B on must work without one).
    # The checkout under test first on the path: a subprocess's `python -m fast_electra_ds...` imports
    # it, not whatever copy is installed (an editable install of another checkout failed two tests).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return launch_env(cpu=True, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=path)


def launch(args: list[str], ranks: int = 2, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """`deepspeed --num_gpus <ranks> train.py <args>` on CPU ranks (gloo)."""
    result = subprocess.run(train_command(args, ranks, launcher=True), cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise AssertionError(f"launch failed ({result.returncode}):\n{tail}")
    return result


def start(args: list[str], ranks: int = 2) -> subprocess.Popen:
    """The same launch, left running: output (stdout and stderr together) on the returned job's stdout."""
    return subprocess.Popen(train_command(args, ranks, launcher=True), cwd=ROOT, env=cpu_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`fast-electra <args>` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fast_electra_ds.cli", *args], cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_replacements(args: list[str], ranks: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
    """`fast-electra replacements <args>` on one process, or through the deepspeed launcher on `ranks`."""
    return subprocess.run(module_command("fast_electra_ds.replacements", args, ranks), cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_train_single(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python train.py <args>`: one process, no launcher."""
    return subprocess.run(train_command(args, ranks=1), cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=timeout)


def common(prepared, out_dir, *extra, ds_config: Path = ROOT / "ds_configs/zero3.json") -> list[str]:
    """The arguments of a tiny run on the prepared pydoc corpus, logging every step."""
    return ["--ds_config", str(ds_config), "--config", str(ROOT / "configs/tiny.yaml"),
            f"data.path={prepared['data']}", f"data.tokenizer={prepared['tokenizer']}", f"train.out_dir={out_dir}",
            "train.log_every=1", *extra]


def train_args(prepared, out_dir, *extra, ds_config=None) -> list[str]:
    """The arguments of a 2-step run on the prepared pydoc corpus."""
    return ["--ds_config", str(ds_config or ROOT / "ds_configs/zero3.json"), "--config", str(ROOT / "configs/tiny.yaml"),
            f"data.path={prepared['data']}", f"data.tokenizer={prepared['tokenizer']}", f"train.out_dir={out_dir}",
            "train.steps=2", *extra]


def tiny_electra_config(vocab_size: int):
    """A one-layer Electra config (an aux model or pre-trained directory for a test to save)."""
    from transformers import ElectraConfig

    return ElectraConfig(vocab_size=vocab_size, embedding_size=32, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=1, intermediate_size=64, max_position_embeddings=128)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def assert_user_error(result, *fragments) -> None:
    """Exit status 2, no traceback, one `error: ` line holding every fragment."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def processes_of(run: Path) -> list[str]:
    """Every process (launcher or rank) of a job on this train.out_dir."""
    return subprocess.run(["pgrep", "-f", f"train.out_dir={run}( |$)"], capture_output=True, text=True).stdout.split()


def rank_pid(run: Path, rank: int) -> int:
    """The process of one rank of a job on this train.out_dir (its environment says RANK=<rank>)."""
    for pid in processes_of(run):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no rank {rank} among {processes_of(run)}")


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.5)
