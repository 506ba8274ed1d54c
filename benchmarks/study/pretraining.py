"""The pre-training stages: one `deepspeed train.py` run per stage on CPU ranks (resumed where a
session cut it short), the ZeRO-3 config it runs under, and the untrained random-init baseline."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from fast_electra_ds.metrics.logger import read_metrics
from fast_electra_ds.models.encoder import electra_config
from fast_electra_ds.runtime.launch import train_command

from .settings import RANDOM_INIT, ROOT, Settings, preset_path, pretraining_lr
from .stages import done, done_before, finish, say, stream


def pretrain(settings: Settings, stage: str, method: str, steps: int, extra: list[str], lr_factor: float = 1.0) -> dict | None:
    """One `deepspeed train.py` run on CPU ranks, exported to <work>/<stage>/hf; `lr_factor` scales
    the peak learning rate (the robustness runs)."""
    out = settings.work / stage
    if record := done_before(settings.work, stage, lambda r: f"{r['steps']} steps, {r['wall_time_s']:.0f} s"):
        return record
    if settings.report_only:
        return None
    from fast_electra_ds.checkpointing import checkpoint_root, complete_checkpoints

    # A stage cut short (a session's end) continues from its last checkpoint; its wall time adds up.
    resume = out.is_dir() and bool(complete_checkpoints(checkpoint_root(out)))
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    ds_config = write_ds_config(settings, lr_factor)
    overrides = settings.overrides + [f"method={method}", f"train.steps={steps}", f"train.out_dir={out}",
                                      f"data.path={settings.work / 'data'}", f"data.tokenizer={settings.work / 'tokenizer'}",
                                      f"train.log_every={max(1, steps // 100)}", f"train.eval_every={max(1, steps // settings.evaluations)}",
                                      f"train.save_every={max(1, steps // settings.evaluations)}", "train.keep_last=1",
                                      "train.progress=lines", f"aux.dtype={settings.precision}", *extra]
    command = train_command(["--ds_config", str(ds_config), "--config", str(preset_path(settings.preset)), *overrides,
                             *(["--resume"] if resume else [])], settings.ranks, launcher=True)
    say(f"{stage}: {method}, {steps} steps on {settings.ranks} ranks{' (resumed)' if resume else ''} (log: {settings.work / 'logs' / (stage + '.log')})")
    started = time.time()
    partial_wall = out / "stage_wall_time.json"
    earlier = json.loads(partial_wall.read_text())["wall_time_s"] if partial_wall.is_file() else 0.0
    log = settings.work / "logs" / f"{stage}{'-resumed' if resume else ''}.log"

    def save_wall_time() -> None:
        partial_wall.parent.mkdir(parents=True, exist_ok=True)
        partial_wall.write_text(json.dumps({"wall_time_s": earlier + time.time() - started}))

    def show(line: str) -> bool:
        if "[fast-electra] step=" in line:
            save_wall_time()  # at every logged step: a run killed with its session keeps its wall time up to there
            return True
        return "[fast-electra] method" in line

    try:
        stream(command, log, show)
    finally:
        save_wall_time()
    wall = earlier + time.time() - started
    metrics = read_metrics(out / "metrics.jsonl")
    validated = [r for r in metrics if any(k.startswith("val_") for k in r)]
    return finish(settings.work, stage, {"method": method, "steps": steps, "wall_time_s": wall, "hf": str(out / "hf"),
                                         "first": metrics[0], "last": metrics[-1], "last_validation": validated[-1] if validated else None})


def write_ds_config(settings: Settings, lr_factor: float = 1.0) -> Path:
    """The project's ZeRO-3 JSON with this benchmark's micro-batch (the JSON owns batch sizes) and
    peak learning rate (times `lr_factor`)."""
    config = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    config["train_micro_batch_size_per_gpu"] = settings.micro_batch
    config.pop("train_batch_size", None)
    config["optimizer"]["params"]["lr"] = pretraining_lr(settings) * lr_factor
    config["scheduler"]["params"]["warmup_max_lr"] = "auto"  # the optimizer's lr (ds_config.py)
    config["bf16"] = {"enabled": settings.precision == "bf16"}
    name = "ds_config" + ("" if lr_factor == 1.0 else f"_lr{lr_factor:g}x") + ("" if settings.precision == "bf16" else f"_{settings.precision}")
    path = settings.work / f"{name}.json"
    path.write_text(json.dumps(config, indent=1) + "\n")
    return path


def random_init(settings: Settings, vocab_size: int, pad_id: int) -> dict | None:
    """The no-pre-training baseline: the main model's config at random initialisation, with the tokenizer."""
    if record := done(settings.work, RANDOM_INIT):
        return record
    if settings.report_only:
        return None
    import torch
    from transformers import AutoTokenizer, ElectraForPreTraining

    config = settings.run_config()
    torch.manual_seed(config.train.seed)
    model = ElectraForPreTraining(electra_config(config.model.sizes(), config.model, vocab_size, pad_id))
    out = settings.work / RANDOM_INIT / "hf"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(settings.work / "tokenizer").save_pretrained(out)
    return finish(settings.work, RANDOM_INIT, {"method": RANDOM_INIT, "steps": 0, "wall_time_s": 0.0, "hf": str(out)})
