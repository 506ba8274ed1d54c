"""What a resumed run may change from the run that wrote its checkpoints, and what each change means.

A run record is what the run directory keeps of a session: its config (config.yaml), the tokenizer
fingerprint (tokens.json: a hash of the vocabulary and special ids, so a tokenizer directory moved
elsewhere is the same tokenizer and another one of the same size is not) and the global batch
(ds_config.json). `compare` sorts the differences of two records into
- refusals: the checkpoint's weights or its token ids would not mean the same thing (the model's
  shape, the method, the tokenizer, the sequence length);
- notes: allowed, with one line on what it changes from this step on;
- nothing: fields of the run's layout (where and how often it logs, saves, validates).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .run_config import MODEL_PRESETS

FINGERPRINT, GLOBAL_BATCH = "tokenizer fingerprint", "global batch"

# Must match: what the checkpoint's tensors and the data's token ids are shaped by.
MODEL_SIZE_KEYS = tuple(MODEL_PRESETS["tiny"])
FIXED = ("method", *(f"model.{key}" for key in MODEL_SIZE_KEYS), "model.max_position_embeddings", "model.corrective_lm",
         "data.seq_len", FINGERPRINT)

# How the run is kept and watched; a change needs no note.
QUIET = {f"train.{key}" for key in ("out_dir", "log_every", "save_every", "save_every_minutes", "keep_last", "eval_every", "progress",
                                    "stop_after", "export", "collective_timeout_minutes", "max_skipped_share", "skipped_window",
                                    "on_divergence", "max_rollbacks")}
QUIET |= {"model.preset"}  # compared through the sizes it resolves to

MEANINGS = {
    "data.path": "training goes on over the new data from this step, at the same position of the run's seeded sample order",
    GLOBAL_BATCH: "the sample order changes from this step (each step takes the next global-batch samples), the learning-rate schedule stays per step",
    "data.tokenizer": "the same vocabulary (equal fingerprint) from another directory",
    "data.val_sequences": "the validation split, and with it the numbering of the training samples, changes from this step",
    "train.seed": "the sample order and the corruption's randomness change from this step",
    "data.corruption_rng": "masks and replacements are drawn from this step per sample (sample) or per rank and micro-batch (step); the sample order stays",
    "aux.replacements": "replacements come from this step from the named pass (or from the aux model when empty); with data.corruption_rng=sample the same ones",
    "curriculum.kind": "the sampling temperature follows the other schedule from this step (method=fast's default became target after 0.1.0: pass curriculum.kind=exp to keep an older run's)",
    "train.steps": "the schedules that follow the fraction of training done (learning rate, curriculum) follow the new length from this step",
}


@dataclass
class Refusal:
    field: str
    saved: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.field} was {self.saved}, now {self.now}"


def record(config: dict[str, Any], tokens: dict[str, Any] | None, ds_config: dict[str, Any] | None) -> dict[str, Any]:
    """The flat record of one session (dotted config keys, model sizes resolved from the preset)."""
    flat = _flatten(config)
    model = config.get("model") or {}
    sizes = dict(MODEL_PRESETS.get(model.get("preset"), {}))
    sizes.update({key: model[key] for key in MODEL_SIZE_KEYS if model.get(key) is not None})
    flat.update({f"model.{key}": value for key, value in sizes.items()})
    if tokens and tokens.get("fingerprint"):
        flat[FINGERPRINT] = tokens["fingerprint"]
    if ds_config and ds_config.get("train_batch_size"):
        flat[GLOBAL_BATCH] = ds_config["train_batch_size"]
    return flat


def compare(saved: dict[str, Any], now: dict[str, Any]) -> tuple[list[Refusal], list[str]]:
    """(refusals, notes) between the record that wrote the checkpoints and this session's. A field
    either record lacks (an older version's run directory, a new option) is not compared."""
    changed = [key for key in now if key in saved and saved[key] != now[key]]
    refusals = [Refusal(key, saved[key], now[key]) for key in FIXED if key in changed]
    notes = []
    for key in changed:
        if key in FIXED or key in QUIET:
            continue
        meaning = MEANINGS.get(key, "in effect from this step")
        notes.append(f"{key} changed from {saved[key]} to {now[key]}: {meaning}")
    return refusals, notes


def refusal_message(refusals: list[Refusal], run_dir: str) -> tuple[str, str]:
    """(problem, fix) of one UserError line."""
    fields = "; ".join(map(str, refusals))
    reverts = " ".join(f"{r.field}={r.saved}" for r in refusals if r.field != FINGERPRINT)
    if any(r.field == FINGERPRINT for r in refusals):
        reverts = (reverts + " and " if reverts else "") + "the tokenizer and data the run was started with (its copy: " + f"{run_dir}/tokenizer)"
    return (f"--resume of {run_dir} refused: {fields} (the checkpoints' weights and token ids would not mean the same thing)",
            f"start a new train.out_dir for the new setting, or resume with {reverts}")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
