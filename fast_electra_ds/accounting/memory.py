"""Peak memory of one training step, tracked tensor by tensor with torch's MemTracker, for real or
simulated (FakeTensorMode: shapes only, nothing allocated), and the ZeRO division of model states.

Accounting of one data-parallel rank (ZeRO paper, Rajbhandari et al. 2020, §5; what DeepSpeed does):
the tracked step runs plain torch (fp32 parameters, 16-bit autocast, AdamW), whose model states are
parameters 4Ψ + gradients 4Ψ + Adam moments 8Ψ = 16Ψ bytes, the same total as DeepSpeed's mixed
precision (16-bit parameters 2Ψ + 16-bit gradients 2Ψ + fp32 master copy, momentum and variance 12Ψ).
Of the tracked categories, at the moment of the peak, ZeRO-1 divides the optimizer states by the
world size N, ZeRO-2 also the gradients, ZeRO-3 also the parameters (of the trained models only: a
frozen auxiliary model is a whole copy on every rank). Not modelled: ZeRO-3's gathered working copy
of the layer(s) in flight, communication buckets, allocator fragmentation and the CUDA context."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# --- DeepSpeed's accounting: what the engine holds per rank (validated against the real engine) -----

@dataclass
class TrackedStep:
    """One forward + backward of 16-bit modules (as DeepSpeed's bf16/fp16 engine runs them: no
    autocast, no fp32 copy in the module), tracked tensor by tensor."""
    peak: int  # bytes at the peak of forward + backward, whole models, one process
    trained_param_bytes: int  # 16-bit parameters of the trained modules
    trained_numel: int
    persistent_numel: int  # trained parameters small enough for ZeRO-3 to keep whole (param_persistence_threshold)
    frozen_param_bytes: int  # frozen models' parameters (whole on every rank)

    @property
    def dynamic(self) -> int:
        """Activations, temporaries and 16-bit gradients at the peak: what is not parameters."""
        return self.peak - self.trained_param_bytes - self.frozen_param_bytes


def track_forward_backward(build: Callable[[], tuple[list[torch.nn.Module], list[torch.nn.Module], Callable[[], torch.Tensor]]],
                           fake: bool = True, persistence_threshold: int = 100_000) -> TrackedStep:
    """Forward and backward of `build()`'s loss function under MemTracker (FakeTensorMode: nothing is
    allocated). The optimizer step is not run: DeepSpeed's optimizer states are counted by
    `deepspeed_peak` from the parameter counts."""
    mode = FakeTensorMode() if fake else nullcontext()
    with mode:
        trained, frozen, loss_fn = build()
        tracker = MemTracker()
        tracker.track_external(*trained, *frozen)
        with tracker:
            loss = loss_fn()
            loss.backward()
            del loss
        snapshot = next(iter(tracker.get_tracker_snapshot("peak").values()))
        params = {id(p): p for m in trained for p in m.parameters() if p.requires_grad}.values()  # tied: once
        frozen_bytes = sum(p.numel() * p.element_size() for m in frozen for p in m.parameters())
        return TrackedStep(peak=int(snapshot["Total"]), trained_param_bytes=sum(p.numel() * p.element_size() for p in params),
                           trained_numel=sum(p.numel() for p in params),
                           persistent_numel=sum(p.numel() for p in params if p.numel() <= persistence_threshold),
                           frozen_param_bytes=frozen_bytes)


def deepspeed_peak(step: TrackedStep, zero_stage: int, world_size: int, precision: str,
                   reduce_bucket_size: int = 500_000_000, contiguous_gradients: bool = True) -> dict[str, int]:
    """Peak bytes of one DeepSpeed training step on one of `world_size` data-parallel ranks, by part.

    Model states (Ψ trained parameters, N ranks, 16-bit = 2 bytes; DeepSpeed 0.19 with bf16/fp16, torch
    AdamW; each term matches an allocation of the engine, checked against the measured engine step):
      16-bit parameters 2Ψ, fp32 master copy 4Ψ, Adam moments 8Ψ (ZeRO paper §3: 16Ψ with gradients);
      ZeRO-0 (bf16 optimizer): 2Ψ + 12Ψ, the 16-bit gradients live in the step (dynamic part);
      ZeRO-1/2: 2Ψ + 12Ψ/N (ZeRO-2 also reduces gradients into partitions; not validated here);
      ZeRO-3: (2Ψ 16-bit partition + 12Ψ + 2Ψ gradient-partition buffer, in the 16-bit
      grad_accum_dtype) / N, plus the parameters under param_persistence_threshold kept whole
      (2·Ψ_persistent·(1 − 1/N)), plus the contiguous-gradient bucket: reduce_bucket_size 16-bit
      elements (DeepSpeed's default 5e8 = 1 GB per rank when the config does not set it).
    fp32 (no 16-bit engine): parameters are the master copy: 4Ψ + 8Ψ (+ 4Ψ gradients dynamic).
    Dynamic part: activations, temporaries and 16-bit gradients at the peak of forward + backward
    (`step.dynamic`); frozen models: whole on every rank."""
    n = max(1, world_size)
    psi = step.trained_numel
    lp = 4 if precision == "fp32" else 2
    master_and_adam = 8 * psi if precision == "fp32" else 12 * psi
    if zero_stage == 0:
        states = lp * psi + master_and_adam
        buffers = 0
    elif zero_stage in (1, 2):
        states = lp * psi + master_and_adam / n
        buffers = reduce_bucket_size * lp if zero_stage == 2 and contiguous_gradients else 0
    else:
        states = (lp * psi + master_and_adam + lp * psi) / n + lp * step.persistent_numel * (1 - 1 / n)
        buffers = reduce_bucket_size * lp if contiguous_gradients else 0
    parts = {"model_states": int(states), "buffers": int(buffers), "dynamic": step.dynamic, "frozen": step.frozen_param_bytes}
    parts["total"] = sum(parts.values())
    return parts
