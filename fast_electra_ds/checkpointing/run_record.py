"""The run directory's record of what wrote its checkpoints, and the resume check against it.

Each session keeps config.yaml (the current config), ds_config.json, tokens.json, model_shapes.json
(every parameter's shape) and a dated copy of its configs in config-history/, never overwritten, so
the run keeps every config it ran under. On --resume rank 0 compares the saved record with the new
one before any weight is loaded (config/resume_changes.py says which fields may change), and the job
reports a refusal or the notes once, not once per rank."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist
import yaml

from ..config.resume_changes import compare, record, refusal_message
from ..runtime.resources import fail_on_every_rank

HISTORY = "config-history"
SHAPES = "model_shapes.json"


def _rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _agree(verdict: Any) -> Any:
    """Rank 0's verdict on every rank."""
    box = [verdict]
    if dist.is_initialized():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def _read(path: Path, parse) -> Any:
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None  # absent or unreadable: that part is not compared


def saved_record(run_dir: Path) -> dict[str, Any] | None:
    config = _read(run_dir / "config.yaml", yaml.safe_load)
    if not isinstance(config, dict):
        return None
    return record(config, _read(run_dir / "tokens.json", json.loads), _read(run_dir / "ds_config.json", json.loads))


def check_resume(run_dir: Path, config: dict[str, Any], tokens: dict[str, Any], ds_config: dict[str, Any]) -> list[str]:
    """Every rank calls this on --resume: a UserError (one line for the job) when a field that must not
    change did, else the notes on what changed (for rank 0 to print)."""
    verdict: tuple[tuple[str, str] | None, list[str]] = (None, [])
    if _rank0():
        saved = saved_record(run_dir)
        if saved is not None:
            refusals, notes = compare(saved, record(config, tokens, ds_config))
            verdict = (refusal_message(refusals, str(run_dir)) if refusals else None, notes)
    problem, notes = _agree(verdict)
    if problem:
        fail_on_every_rank(*problem)
    return notes


def parameter_shapes(module) -> dict[str, list[int]]:
    """Full shapes (ZeRO-3 keeps a partitioned parameter's in ds_shape)."""
    return {name: list(getattr(p, "ds_shape", None) or p.shape) for name, p in module.named_parameters()}


def check_model_shapes(run_dir: Path, shapes: dict[str, list[int]], changed: list[str]) -> None:
    """Before loading weights: the model built now has the shapes the checkpoints hold (a backstop for
    fields the config comparison does not know, e.g. a method's own model sizes). `changed`: the
    notes, named as the likely cause."""
    problem = None
    saved = _read(run_dir / SHAPES, json.loads) if _rank0() else None
    if isinstance(saved, dict):
        differing = sorted(set(saved) ^ set(shapes)) or sorted(n for n in shapes if saved[n] != shapes[n])
        if differing:
            name = differing[0]
            cause = f"; changed fields: {', '.join(note.split(' changed')[0] for note in changed)}" if changed else ""
            problem = (f"--resume of {run_dir} refused: the model built now does not fit its checkpoints (parameter {name}: "
                       f"{saved.get(name, 'absent')} in the checkpoints, {shapes.get(name, 'absent')} now{cause})",
                       "start a new train.out_dir for the new model, or resume with the config in config.yaml")
    problem = _agree(problem)
    if problem:
        fail_on_every_rank(*problem)


def write_history(run_dir: Path, config: dict[str, Any], ds_config: dict[str, Any], step: int) -> Path:
    """config-history/<UTC time>-step<N>.yaml (the run config, and the DeepSpeed JSON under `ds_config`);
    a name already taken gets a suffix, so no earlier session's copy is ever replaced."""
    history = run_dir / HISTORY
    history.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-step{step}"
    text = yaml.safe_dump({**config, "ds_config": ds_config}, sort_keys=False)
    for attempt in range(1, 1000):
        path = history / (f"{stem}.yaml" if attempt == 1 else f"{stem}-{attempt}.yaml")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    raise FileExistsError(f"{history}: no free name for {stem}")
