"""How the checks run: each a result (PASS, FAIL or SKIP with its reason), training runs through
train.py as a user starts them (logs kept), and in-process groups of checks in a fresh process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fast_electra_ds.metrics.logger import read_metrics
from fast_electra_ds.runtime.launch import train_command

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"  # its --inner runs one group of in-process checks
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


def result(name: str, status: str, reason: str, **details) -> dict:
    return {"check": name, "status": status, "reason": reason, "details": details}


class Runs:
    """Training runs through train.py as a user starts them, logs kept under <out>/logs."""

    def __init__(self, work: Path, logs: Path, env: dict[str, str]):
        self.work, self.logs, self.env = work, logs, env
        self.data = work / "data"
        self.tokenizer = work / "tokenizer"

    def prepare(self) -> None:
        from fast_electra_ds.data.tiny import prepare_tiny_corpus

        prepare_tiny_corpus(self.work)

    def train(self, name: str, out_dir: Path, *overrides: str, ranks: int = 1, ds_config: str | Path = "zero3.json",
              timeout: float = 600, extra_env: dict[str, str] | None = None) -> dict:
        """One train.py run; returns its `done` record (raises with the log's tail if it failed)."""
        args = ["--ds_config", str(ds_config), "--config", str(ROOT / "configs/tiny.yaml"), f"data.path={self.data}",
                f"data.tokenizer={self.tokenizer}", f"train.out_dir={out_dir}", "train.log_every=1", *overrides]
        command = train_command(args, ranks)
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            completed = subprocess.run(command, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                       timeout=timeout)
        text = log.read_text(errors="replace")
        done = [line for line in text.splitlines() if "[fast-electra] done: " in line]
        if completed.returncode != 0 or not done:
            tail = [line for line in text.splitlines() if line.strip() and "WARNING" not in line][-3:]
            raise RuntimeError(f"{name} failed (exit {completed.returncode}, log {log}): {' | '.join(tail)[-400:]}")
        return json.loads(done[-1].split("[fast-electra] done: ", 1)[1])


def losses(run_dir: Path) -> dict[int, float]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def run_inner(name: str, aux: Path, device: str, env: dict, logs: Path, timeout: float) -> list[dict]:
    log = logs / f"inner_{name}.log"
    with log.open("w") as out:
        completed = subprocess.run([sys.executable, str(SCRIPT), "--inner", name, str(aux), device], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=out, text=True, timeout=timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("[")]
    if completed.returncode != 0 or not lines:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip() and "WARNING" not in line][-2:]
        raise RuntimeError(f"exit {completed.returncode} (log {log}): {' | '.join(tail)[-300:]}")
    return json.loads(lines[-1])
