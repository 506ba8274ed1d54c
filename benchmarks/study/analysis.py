"""From finished stages to figures: one row per model (steps, FLOPs, wall time, accuracies, what
its last validation learned), the robustness verdicts and the machine-readable summary."""
from __future__ import annotations

import math
import statistics
from typing import Any

from fast_electra_ds.errors import UserError
from fast_electra_ds.metrics.learning import CONTEXT_GAIN_LEARNED  # the bar for "learned context"

from .settings import RANDOM_INIT, TASK, Settings, pretraining_lr


LEARNING_KEYS = ("val_mlm_loss", "val_mlm_prior_gap", "val_rtd_loss", "val_rtd_auc", "val_rtd_prior_gap", "val_rtd_context_gain")
MLM_GAP_LEARNED = 0.5  # nats below the unigram entropy: the bar for "the masked-LM learned context"


def accuracy_stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values}


def build_rows(per_sequence: dict, budget: float, settings: Settings, pre: dict[str, dict], fine: dict[str, dict],
               aux: dict | None) -> list[dict]:
    """One row per pre-trained model (and the random-init baseline): steps, FLOPs, wall time, accuracy."""
    rows = []
    aux_training = aux["steps"] * settings.global_batch * per_sequence["aux-mlm"]["main"] if aux else 0.0
    for name in [*settings.methods, RANDOM_INIT]:
        record = pre.get(name)
        if record is None:
            continue
        steps = record["steps"]
        sequences = steps * settings.global_batch
        main = sequences * per_sequence[name]["main"] if name in per_sequence else 0.0
        other = sequences * per_sequence[name]["other"] if name in per_sequence else 0.0
        row = {"model": name, "steps": steps, "main_tflops": main / 1e12, "other_tflops": other / 1e12,
               "total_tflops": (main + other) / 1e12,
               "total_with_aux_tflops": (main + other + (aux_training if name == "fast" else 0.0)) / 1e12,
               "pretrain_wall_s": record["wall_time_s"], "final_loss": record.get("last", {}).get("loss"),
               # Did the discriminator learn RTD at all? 0 means it still calls every token original.
               "final_rtd_acc_replaced": record.get("last", {}).get("rtd_acc_replaced")}
        validation = record.get("last_validation") or {}
        row.update({key: validation[key] for key in LEARNING_KEYS if key in validation})
        row["tasks"] = {}
        for task, by_model in fine.items():
            runs = by_model.get(name) or []
            if not runs:
                continue
            row["tasks"][task] = accuracy_stats([r["accuracy"] for r in runs]) | {"seeds": len(runs)}
            row["finetune_wall_s"] = row.get("finetune_wall_s", 0.0) + sum(r["wall_time_s"] for r in runs)
            if task == TASK:  # the first task's columns, as before
                row.update({f"acc_{k}": v for k, v in accuracy_stats([r["accuracy"] for r in runs]).items()})
                row["seeds"] = [r["seed"] for r in runs]
        rows.append(row)
    return rows


def unigram_entropy(settings: Settings) -> float | None:
    from fast_electra_ds.data.dataset import PackedDataset

    try:
        return PackedDataset(settings.work / "data", 128).unigram_entropy()
    except UserError:
        return None


def robustness_verdict(high: dict, default: dict | None) -> dict:
    """Did the run at LR_FACTOR x the peak lr diverge (non-finite loss) or stall (no context learned
    where the default-lr run learned some)?"""
    last = high.get("last_validation") or {}
    finite = all(math.isfinite(v) for v in (high.get("last", {}).get("loss", float("nan")), last.get("val_rtd_loss", float("nan"))))
    gain = last.get("val_rtd_context_gain")
    reference = (default or {}).get("last_validation", {}) or {}
    return {"steps": high["steps"], "diverged": not finite, "val_rtd_context_gain": gain, "val_rtd_auc": last.get("val_rtd_auc"),
            "default_lr_val_rtd_context_gain": reference.get("val_rtd_context_gain"),
            "stalled": gain is None or gain < CONTEXT_GAIN_LEARNED}


def summary_schema(settings: Settings, rows: list[dict], unigram: float | None, tokens: int, vocab_size: int) -> dict:
    """The machine-readable summary the issue asks for: setting, unigram entropy, per method its
    main-model training TFLOPs, its final validation learning metric and each task's accuracy."""
    config = settings.run_config()
    methods = {}
    for r in rows:
        entry = {"main_train_tflops": r["main_tflops"], "tasks": r.get("tasks", {})}
        for key in ("val_mlm_loss", "val_rtd_context_gain", "val_rtd_auc", "val_rtd_prior_gap", "val_mlm_prior_gap"):
            if key in r:
                entry[key] = r[key]
        methods[r["model"]] = entry
    return {"setting": {"preset": settings.preset, "model": config.model.sizes(), "seq_len": config.data.seq_len,
                        "vocab_size": vocab_size, "global_batch": settings.global_batch, "lr": pretraining_lr(settings),
                        "main_steps": settings.main_steps, "corpus_tokens": tokens, "ranks": settings.ranks,
                        "overrides": settings.overrides},
            "unigram_entropy": unigram, "methods": methods}
