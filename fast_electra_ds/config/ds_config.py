"""The DeepSpeed JSON: the `optim` section's command-line hyperparameters written in, checked against
the world size, with what this machine decides filled in (batch sizes, the Adam implementation, the
scheduler's "auto" step counts and peak lr)."""
from __future__ import annotations

import json
from typing import Any

from .run_config import OptimConfig, RunConfig
from ..runtime.device import adam_params, prebuilt_fused_adam
from ..errors import UserError


BATCH_KEYS = {"micro_batch": "train_micro_batch_size_per_gpu", "grad_accum": "gradient_accumulation_steps", "global_batch": "train_batch_size"}
OPTIMIZER_KEYS = ("lr", "weight_decay", "betas", "eps")
DEFAULT_WARMUP_RATIO = 0.1  # of train.steps, for a JSON's "warmup_num_steps": "auto"


def apply_batch_overrides(ds: dict[str, Any], optim: OptimConfig) -> None:
    """optim.micro_batch / grad_accum / global_batch replace the JSON's numbers. Of the three, the
    ones the user did not set and that would contradict the ones they did are derived again:
    setting the global batch re-derives the accumulation (or the micro batch, when the accumulation
    is set too); setting the micro batch or the accumulation re-derives the global batch."""
    given = {ds_key: getattr(optim, key) for key, ds_key in BATCH_KEYS.items() if getattr(optim, key) is not None}
    for key, ds_key in BATCH_KEYS.items():
        if ds_key in given and given[ds_key] < 1:
            raise UserError(f"optim.{key} is {given[ds_key]}", "give a positive integer")
    if not given:
        return
    if "train_batch_size" not in given:
        ds.pop("train_batch_size", None)
    elif "gradient_accumulation_steps" in given and "train_micro_batch_size_per_gpu" not in given:
        ds.pop("train_micro_batch_size_per_gpu", None)
    elif "gradient_accumulation_steps" not in given:
        ds.pop("gradient_accumulation_steps", None)
    ds.update(given)


def apply_optim(ds: dict[str, Any], optim: OptimConfig, steps: int) -> None:
    """The optimizer and scheduler hyperparameters of `optim` into the JSON, with one peak lr:
    the scheduler's warmup_max_lr is the optimizer's lr ("auto", or a number equal to it)."""
    optimizer = ds.get("optimizer")
    given = {key: getattr(optim, key) for key in OPTIMIZER_KEYS if getattr(optim, key) is not None}
    if given and not optimizer:
        raise UserError(f"optim.{next(iter(given))} is set but the DeepSpeed config has no optimizer section", "add one, as in ds_configs/zero3.json")
    if optim.betas is not None and len(optim.betas) != 2:
        raise UserError(f"optim.betas is {optim.betas}, not two numbers", "e.g. optim.betas=0.9,0.999")
    json_lr = None
    if optimizer:
        params = optimizer.setdefault("params", {})
        json_lr = params.get("lr")
        params.update(given)
    scheduler = ds.get("scheduler")
    if not scheduler:
        if optim.warmup_ratio is not None or optim.warmup_steps is not None or optim.min_lr is not None:
            raise UserError("optim.warmup_* / optim.min_lr are set but the DeepSpeed config has no scheduler section", "add one, as in ds_configs/zero3.json")
        return
    params = scheduler.setdefault("params", {})
    if "warmup_max_lr" in params:
        peak, lr = params["warmup_max_lr"], (optimizer or {}).get("params", {}).get("lr")
        if peak != "auto" and json_lr is not None and peak != json_lr:
            raise UserError(f"the DeepSpeed config's scheduler warmup_max_lr {peak} differs from its optimizer lr {json_lr}",
                            'set "warmup_max_lr": "auto" (it follows the optimizer lr; change the lr with optim.lr=...)')
        if lr is not None:
            params["warmup_max_lr"] = lr
        elif peak == "auto":
            raise UserError('the scheduler\'s warmup_max_lr is "auto" but the optimizer sets no lr', "set optimizer.params.lr in the DeepSpeed JSON or pass optim.lr=...")
    if optim.min_lr is not None:
        params["warmup_min_lr"] = optim.min_lr
    if optim.warmup_ratio is not None and optim.warmup_steps is not None:
        raise UserError("both optim.warmup_ratio and optim.warmup_steps are set", "set only one")
    if optim.warmup_ratio is not None and not 0 <= optim.warmup_ratio <= 1:
        raise UserError(f"optim.warmup_ratio is {optim.warmup_ratio}", "give a fraction of train.steps between 0 and 1, e.g. 0.01")
    if optim.warmup_steps is not None and optim.warmup_steps < 1:
        raise UserError(f"optim.warmup_steps is {optim.warmup_steps}", "give at least 1 (DeepSpeed's schedulers need a positive warmup)")
    if optim.warmup_steps is not None and optim.warmup_steps > steps:
        raise UserError(f"optim.warmup_steps {optim.warmup_steps} exceeds train.steps {steps}", "give fewer warmup steps or use optim.warmup_ratio")
    if optim.warmup_steps is not None:
        params["warmup_num_steps"] = optim.warmup_steps
    elif optim.warmup_ratio is not None:
        params["warmup_num_steps"] = max(1, int(optim.warmup_ratio * steps))
    elif params.get("warmup_num_steps") == "auto":
        params["warmup_num_steps"] = max(1, int(DEFAULT_WARMUP_RATIO * steps))
    if params.get("total_num_steps") == "auto":
        params["total_num_steps"] = steps


def resolve_ds_config(ds_config: dict[str, Any], world_size: int, config: RunConfig, on_cuda: bool) -> dict[str, Any]:
    ds = json.loads(json.dumps(ds_config))
    apply_batch_overrides(ds, config.optim)
    apply_optim(ds, config.optim, config.train.steps)
    micro = ds.get("train_micro_batch_size_per_gpu")
    accumulation = ds.get("gradient_accumulation_steps")
    total = ds.get("train_batch_size")
    if micro is None and (total is None or accumulation is None):
        raise UserError("the DeepSpeed config sets no train_micro_batch_size_per_gpu", "set it (and optionally gradient_accumulation_steps)")
    if micro is None:
        micro, rest = divmod(total, accumulation * world_size)
        if rest or micro < 1:
            raise UserError(f"train_batch_size {total} is not divisible by gradient_accumulation_steps {accumulation} x world size {world_size}", "choose batch numbers with train_batch_size = micro x accumulation x world size")
    if accumulation is None:
        accumulation = 1 if total is None else total // (micro * world_size)
    if total is not None and total != micro * accumulation * world_size:
        raise UserError(f"inconsistent batch sizes: train_batch_size {total} != micro batch {micro} x gradient_accumulation_steps {accumulation} x world size {world_size} = {micro * accumulation * world_size}",
                        f"set train_batch_size (or optim.global_batch) to {micro * accumulation * world_size} or remove it, or set optim.micro_batch / optim.grad_accum to fit")
    if min(micro, accumulation) < 1:
        raise UserError(f"batch numbers must be positive (micro batch {micro}, accumulation {accumulation})", "fix the DeepSpeed config")
    ds.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accumulation, train_batch_size=micro * accumulation * world_size)

    optimizer = ds.get("optimizer")
    if optimizer and optimizer.get("type", "").lower() in ("adam", "adamw"):
        params = optimizer.setdefault("params", {})
        offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") != "none"
        choice = config.train.fused_adam
        if choice not in ("auto", "true", "false"):
            raise UserError(f"train.fused_adam is {choice!r}", "use auto, true or false")
        if not offload and "torch_adam" not in params:
            # No JIT build by default (device.adam_params). With offload DeepSpeed picks its own CPU Adam.
            chosen = adam_params(choice, on_cuda, prebuilt_fused_adam())
            params.update({key: value for key, value in chosen.items() if key not in params and not (key == "fused" and "foreach" in params)})
    return ds
