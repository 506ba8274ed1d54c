"""The DeepSpeed JSON: checked against the world size, with what this machine decides filled in
(batch sizes, the Adam implementation, the scheduler's "auto" step counts)."""
from __future__ import annotations

import json
from typing import Any

from .config import RunConfig
from .errors import UserError


def resolve_ds_config(ds_config: dict[str, Any], world_size: int, config: RunConfig, on_cuda: bool) -> dict[str, Any]:
    ds = json.loads(json.dumps(ds_config))
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
                        f"set train_batch_size to {micro * accumulation * world_size} or remove it")
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
            # DeepSpeed's fused Adam is a CUDA kernel; on CPU it would JIT-build for a minute and
            # gain nothing, so torch's Adam (foreach) is the CPU choice. With offload DeepSpeed
            # picks its own CPU Adam.
            params["torch_adam"] = (not on_cuda) if choice == "auto" else choice == "false"
    scheduler = ds.get("scheduler")
    if scheduler:
        params = scheduler.setdefault("params", {})
        if params.get("total_num_steps") == "auto":
            params["total_num_steps"] = config.train.steps
        if params.get("warmup_num_steps") == "auto":
            params["warmup_num_steps"] = max(1, config.train.steps // 10)
    return ds
