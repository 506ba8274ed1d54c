"""The study's stages as records: a stage is finished when <work>/stages/<stage>.json exists (so a
re-run skips it), its wall time is summed over resumed sessions, and its child process streams into a
log under <work>/logs."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from fast_electra_ds.errors import UserError
from fast_electra_ds.metrics.logger import read_metrics
from fast_electra_ds.runtime.launch import launch_env
from fast_electra_ds.runtime.temp_dirs import write_atomically

from .settings import ROOT, Settings


SPEAKER = "effectiveness"  # the program whose stages these are, in front of every line it says


def say(text: str) -> None:
    print(f"[{SPEAKER} {time.strftime('%H:%M:%S')}] {text}", flush=True)


def record_path(work: Path, stage: str) -> Path:
    return work / "stages" / f"{stage}.json"


def done(work: Path, stage: str) -> dict | None:
    path = record_path(work, stage)
    return json.loads(path.read_text()) if path.is_file() else None


def done_before(work: Path, stage: str, summary) -> dict | None:
    """The stage's record when it finished before (saying so, with `summary(record)`), else None."""
    if record := done(work, stage):
        say(f"{stage}: done before ({summary(record)}), skipped")
    return record


def finish(work: Path, stage: str, record: dict) -> dict:
    """Record `stage` as finished, whole or not at all (a half-written record would stop every later run)."""
    path = record_path(work, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=1) + "\n")
    return record


def stream(command: list[str], log: Path, show) -> None:
    """Run `command`, writing everything to `log` and echoing the lines `show(line)` accepts."""
    env = launch_env(cpu=True, keep_set=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            out.write(line)
            if show(line):
                print("    " + line.rstrip()[:160], flush=True)
        code = process.wait()
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise UserError(f"{' '.join(command[:4])} ... failed (exit {code}); last lines of {log}:\n{tail}",
                        "fix the cause above, then re-run: finished stages are kept")


def stages_wall_time(work: Path) -> float:
    """The whole pipeline's wall time: the sum of every finished stage's, so a resumed run reports the total."""
    return sum(json.loads(path.read_text()).get("wall_time_s", 0.0) for path in (work / "stages").glob("*.json"))


def run_metrics(settings: Settings, stage: str) -> list[dict]:
    path = settings.work / stage / "metrics.jsonl"
    return read_metrics(path) if path.is_file() else []
