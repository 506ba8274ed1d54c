"""Counting FLOPs by running a model through torch.utils.flop_counter.FlopCounterMode.

torch 2.13 has no formula for CPU SDPA (`aten._scaled_dot_product_flash_attention_for_cpu` and its
backward count 0), which makes counts of an attention model ~8% low on CPU; `register_cpu_sdpa_flops`
adds them (the same formulas torch uses for the CUDA SDPA kernels: forward 4·b·heads·s·s·d,
backward twice that). Run models on the meta device or under FakeTensorMode to count paper-sized
models without allocating them."""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def register_cpu_sdpa_flops() -> None:
    """Idempotent: register FLOP formulas for CPU SDPA forward and backward."""
    forward = aten._scaled_dot_product_flash_attention_for_cpu
    backward = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward not in flop_counter.flop_registry and forward.default not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(forward)
        def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)
    if backward not in flop_counter.flop_registry and backward.default not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(backward)
        def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """FLOPs of everything `fn` runs, and the count per operator."""
    register_cpu_sdpa_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def count_forward_backward(loss_fn: Callable[[], torch.Tensor]) -> dict[str, int]:
    """Forward FLOPs of `loss_fn()` and backward FLOPs of `loss.backward()`, counted separately."""
    holder: dict[str, torch.Tensor] = {}

    def forward() -> None:
        holder["loss"] = loss_fn()

    fwd, fwd_ops = count_flops(forward)
    bwd, bwd_ops = count_flops(lambda: holder["loss"].backward())
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd, "forward_ops": fwd_ops, "backward_ops": bwd_ops}
