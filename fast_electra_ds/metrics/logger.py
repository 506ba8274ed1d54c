"""Where logged scalars go, from rank 0: metrics.jsonl, the console (a tqdm bar on a terminal, plain
lines otherwise) and DeepSpeed's monitor (TensorBoard, W&B, CSV), configured in the DeepSpeed JSON
as DeepSpeed documents it. Training scalars are tagged `train/<name>`, validation ones `val/<name>`."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

MONITORS = ("tensorboard", "csv_monitor")  # those writing files: placed in the run directory when no path is set


def place_monitor_outputs(ds_config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Monitors enabled without an output_path write under the run directory
    (`tensorboard/`, `csv_monitor/`), not under the launch directory. W&B keeps its files under
    the run directory too (WANDB_DIR), and honours WANDB_MODE=offline for machines without network."""
    for name in MONITORS:
        section = ds_config.get(name)
        if isinstance(section, dict) and section.get("enabled") and not section.get("output_path"):
            section["output_path"] = str(run_dir)
            section.setdefault("job_name", name)
    wandb = ds_config.get("wandb")
    if isinstance(wandb, dict) and wandb.get("enabled"):
        os.environ.setdefault("WANDB_DIR", str(run_dir))
    return ds_config


def strict(value: Any) -> Any:
    """NaN and infinities (a metric undefined in a window, a loss that overflowed) as None: JSON has no
    NaN, and strict readers (jq, JavaScript, many JSON libraries) refuse the bare `NaN` Python writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def metrics_line(record: dict[str, Any]) -> str:
    """One line of metrics.jsonl: strict JSON, `null` for an undefined value."""
    return json.dumps(strict(record), allow_nan=False) + "\n"


def read_metrics(path: Path, undefined: Any = float("nan")) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, `null` read back as `undefined` (NaN by default, so arithmetic
    and formatting treat it as before); a last line cut by a crash is skipped. Also reads files written
    with bare NaN by earlier versions."""
    records = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append({k: undefined if v is None else v for k, v in record.items()})
    return records


def trim_metrics(path: Path, last_step: int) -> int:
    """Keep the records up to `last_step` (a resumed run rewrites the steps after its checkpoint) and
    drop lines that are not records (a line cut by a crash or a full disk). Returns how many were dropped."""
    kept, dropped = [], 0
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if step <= last_step:
            kept.append(line)
    Path(path).write_text("".join(line + "\n" for line in kept))
    return dropped


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class RunLogger:
    """`progress`: "bar" (tqdm), "lines" (one line per logged step) or "auto" (a bar when stderr is
    a terminal). Only rank 0 writes anything."""

    def __init__(self, run_dir: Path, rank: int, monitor, total_steps: int, start_step: int, progress: str = "auto") -> None:
        self.metrics_file = run_dir / "metrics.jsonl"
        self.rank = rank
        self.monitor = monitor if monitor is not None and getattr(monitor, "enabled", False) else None
        self.total_steps = total_steps
        self.start_step = start_step
        self.started = time.perf_counter()
        self.bar = None
        if rank == 0 and (progress == "bar" or (progress == "auto" and sys.stderr.isatty())):
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def print(self, text: str) -> None:
        if self.rank == 0:
            line = f"[fast-electra] {text}"
            if self.bar is not None:
                self.bar.write(line)
            else:
                print(line, flush=True)

    def advance(self, step: int) -> None:
        """One optimizer step done."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return ""
        rate = done / (time.perf_counter() - self.started)
        left = (self.total_steps - step) / rate
        return f"{step}/{self.total_steps} {rate:.3g} steps/s eta {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"

    def record(self, step: int, samples: int, values: dict[str, Any]) -> None:
        """One record: a line of metrics.jsonl, monitor scalars and the console. Keys `val_<name>`
        are validation metrics (monitor tag `val/<name>`), the others training ones (`train/<name>`).
        The monitor's x axis is `samples` (sequences consumed, all ranks), as in DeepSpeed's own events
        (Train/Samples/lr): W&B needs one axis that never goes back within a run."""
        if self.rank != 0:
            return
        record = {"step": step, "samples": samples, **values}
        with self.metrics_file.open("a") as out:
            out.write(metrics_line(record))
        if self.monitor is not None:
            events = [(f"val/{name[4:]}" if name.startswith("val_") else f"train/{name}", float(v), samples)
                      for name, v in {"step": step, **values}.items() if isinstance(v, (int, float)) and math.isfinite(float(v))]
            self.monitor.write_events(events)
        train = " ".join(f"{k}={format_value(v)}" for k, v in record.items() if not k.startswith("val_"))
        val = " ".join(f"{k}={format_value(v)}" for k, v in record.items() if k.startswith("val_"))
        if self.bar is not None:
            self.bar.set_postfix({k: format_value(values[k]) for k in ("loss", "rtd_auc") if k in values}, refresh=False)
            self.print(train)
        else:
            self.print(f"{train} [{self.eta(step)}]")
        if val:
            self.print(f"step={step} {val}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
