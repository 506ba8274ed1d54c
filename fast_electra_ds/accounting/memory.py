"""Peak memory of one training step, tracked tensor by tensor with torch's MemTracker, for real or
simulated (FakeTensorMode: shapes only, nothing allocated), and the ZeRO division of model states.

Accounting of one data-parallel rank (ZeRO paper, Rajbhandari et al. 2020, §5; what DeepSpeed does):
the tracked step runs plain torch (fp32 parameters, 16-bit autocast, AdamW), whose model states are
parameters 4Ψ + gradients 4Ψ + Adam moments 8Ψ = 16Ψ bytes, the same total as DeepSpeed's mixed
precision (16-bit parameters 2Ψ + 16-bit gradients 2Ψ + fp32 master copy, momentum and variance 12Ψ).
Of the tracked categories, at the moment of the peak, ZeRO-1 divides the optimizer states by the
world size N, ZeRO-2 also the gradients, ZeRO-3 also the parameters (of the trained models only: a
frozen auxiliary model is a whole copy on every rank). ZeRO-3's buffers are modelled from the
DeepSpeed config (`ZeroBuffers`, `deepspeed_peak`); not modelled: allocator fragmentation and the
CUDA context.

ZeRO-3 buffers shipped in ds_configs/ (`zero3_buffer_sizes`, scaled by the largest hidden size h; a
transformer layer holds about 12·h² parameters). DeepSpeed's defaults are sized for billion-parameter
models and, for ELECTRA's 14M-335M, cost memory for nothing or keep the whole model gathered:
- reduce_bucket_size 12·h² (default 5e8 = 1 GB of 16-bit gradients per rank): the contiguous
  gradient bucket; one layer's gradients per reduce-scatter, issued as backward finishes that layer
  (overlap_comm). Measured at `small`, ZeRO-3, 1 rank: the bucket was 954 of the step's 1109 MiB.
- stage3_prefetch_bucket_size 12·h² (default 5e7): all-gather the next layer while this one computes.
- stage3_param_persistence_threshold 10·h (default 1e5; Hugging Face's "auto" is also 10·h): biases and
  LayerNorm vectors (h to 4h elements) stay whole on every rank, no all-gather each; every weight
  matrix (≥ h²) is partitioned. The default 1e5 kept every h×h matrix of `small` (h² = 65536) whole.
- stage3_max_live_parameters 3·12·h² (default 1e9): the prefetcher's cap, the current and two layers.
- stage3_max_reuse_distance 12·h² (default 1e9): a parameter stays gathered after use only if it is
  used again within this many parameters of the module trace (one trace covers forward AND
  backward: deepspeed/runtime/zero/partitioned_param_coordinator.py __params_to_release). With the
  default, for any model under 1e9 parameters every parameter is reused (in backward) within the
  distance, so none is released in forward and each rank holds the whole 16-bit model at the peak.
Hugging Face's "auto" (transformers.integrations.deepspeed: reduce_bucket_size h², prefetch 0.9·h²,
persistence 10·h) has the same h-scaling with one h×h matrix per bucket; a layer (12·h²) per
collective is used here, fewer and larger messages for these small models (base: 7M elements, 14 MB)."""
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
    largest_numel: int = 0  # the largest trained parameter (ZeRO-3 gathers it whole while its module runs)

    @property
    def dynamic(self) -> int:
        """Activations, temporaries and 16-bit gradients at the peak: what is not parameters."""
        return self.peak - self.trained_param_bytes - self.frozen_param_bytes


def track_forward_backward(build: Callable[[], tuple[list[torch.nn.Module], list[torch.nn.Module], Callable[[], torch.Tensor]]],
                           fake: bool = True, persistence_threshold: int = 100_000,
                           gradients_leave: bool = False) -> TrackedStep:
    """Forward and backward of `build()`'s loss function under MemTracker (FakeTensorMode: nothing is
    allocated). The optimizer step is not run: DeepSpeed's optimizer states are counted by
    `deepspeed_peak` from the parameter counts.

    gradients_leave (ZeRO-3): each trained parameter's gradient is freed as soon as it is accumulated,
    as DeepSpeed's stage-3 hook does (stage3.py reduce_partition_and_remove_grads: the gradient is
    copied into the reduce bucket, counted in `deepspeed_peak`'s buffers, and once the bucket is
    reduced `partition_grads` sets param.grad = None; this rank's partition is in the model states). Without
    it the step holds every gradient computed so far, as ZeRO-0/1 do."""
    mode = FakeTensorMode() if fake else nullcontext()
    with mode:
        trained, frozen, loss_fn = build()
        tracker = MemTracker()
        tracker.track_external(*trained, *frozen)
        with tracker:
            loss = loss_fn()
            # registered after the forward, so MemTracker's own gradient hooks (installed during it) see
            # each gradient before this one frees it
            handles = [p.register_post_accumulate_grad_hook(_free_gradient) for p in _trained_params(trained)] \
                if gradients_leave else []
            loss.backward()
            del loss
            for handle in handles:
                handle.remove()
        snapshot = next(iter(tracker.get_tracker_snapshot("peak").values()))
        params = _trained_params(trained)
        frozen_bytes = sum(p.numel() * p.element_size() for m in frozen for p in m.parameters())
        return TrackedStep(peak=int(snapshot["Total"]), trained_param_bytes=sum(p.numel() * p.element_size() for p in params),
                           trained_numel=sum(p.numel() for p in params),
                           persistent_numel=sum(p.numel() for p in params if p.numel() <= persistence_threshold),
                           frozen_param_bytes=frozen_bytes, largest_numel=max((p.numel() for p in params), default=0))


def _trained_params(trained: list[torch.nn.Module]) -> list[torch.nn.Parameter]:
    return list({id(p): p for m in trained for p in m.parameters() if p.requires_grad}.values())  # tied: once


def _free_gradient(param: torch.nn.Parameter) -> None:
    param.grad = None


def zero3_buffer_sizes(hidden_size: int) -> dict[str, int]:
    """The ZeRO-3 buffer keys shipped in ds_configs/ for models up to hidden size `hidden_size` (the
    shipped files use 1024, ELECTRA-Large; the module docstring says why each)."""
    layer = 12 * hidden_size ** 2
    return {"reduce_bucket_size": layer, "stage3_prefetch_bucket_size": layer,
            "stage3_param_persistence_threshold": 10 * hidden_size, "stage3_max_live_parameters": 3 * layer,
            "stage3_max_reuse_distance": layer}


@dataclass
class ZeroBuffers:
    """The buffer settings of a DeepSpeed config's zero_optimization section, DeepSpeed's defaults
    (deepspeed/runtime/zero/config.py) where it sets none."""
    reduce_bucket_size: int = 500_000_000
    contiguous_gradients: bool = True
    prefetch_bucket_size: int = 50_000_000
    param_persistence_threshold: int = 100_000
    max_live_parameters: int = 1_000_000_000
    max_reuse_distance: int = 1_000_000_000

    @classmethod
    def from_ds_config(cls, ds: dict) -> "ZeroBuffers":
        zero, default = ds.get("zero_optimization", {}), cls()
        return cls(int(zero.get("reduce_bucket_size", default.reduce_bucket_size)),
                   bool(zero.get("contiguous_gradients", default.contiguous_gradients)),
                   int(zero.get("stage3_prefetch_bucket_size", default.prefetch_bucket_size)),
                   int(zero.get("stage3_param_persistence_threshold", default.param_persistence_threshold)),
                   int(zero.get("stage3_max_live_parameters", default.max_live_parameters)),
                   int(zero.get("stage3_max_reuse_distance", default.max_reuse_distance)))


def deepspeed_peak(step: TrackedStep, zero_stage: int, world_size: int, precision: str,
                   reduce_bucket_size: int = 500_000_000, contiguous_gradients: bool = True,
                   zero: ZeroBuffers | None = None) -> dict[str, int]:
    """Peak bytes of one DeepSpeed training step on one of `world_size` data-parallel ranks, by part.

    Model states (Ψ trained parameters, N ranks, 16-bit = 2 bytes; DeepSpeed 0.19 with bf16/fp16, torch
    AdamW; each term matches an allocation of the engine, checked against the measured engine step):
      16-bit parameters 2Ψ, fp32 master copy 4Ψ, Adam moments 8Ψ (ZeRO paper §3: 16Ψ with gradients);
      ZeRO-0 (bf16 optimizer): 2Ψ + 12Ψ, the 16-bit gradients live in the step (dynamic part);
      ZeRO-1/2: 2Ψ + 12Ψ/N (ZeRO-2 also reduces gradients into partitions; not validated here);
      ZeRO-3: (2Ψ 16-bit partition + 12Ψ + 2Ψ gradient-partition buffer, in the 16-bit
      grad_accum_dtype) / N, plus the parameters under param_persistence_threshold kept gathered
      (2·Ψ_persistent on N > 1 ranks, beside their partitions: see "gathered"), plus the
      contiguous-gradient bucket: reduce_bucket_size 16-bit elements (DeepSpeed's default 5e8 = 1 GB
      per rank when the config does not set it);
      and the gathered working copy ("gathered"): 16-bit full parameters held at the peak, min(Ψ −
      Ψ_persistent, largest parameter (gathered whole while its module runs; the tied word embeddings
      at the corrective-LM head) + stage3_max_reuse_distance (kept for reuse across the
      forward/backward turn) + min(prefetch bucket, max live parameters)). With DeepSpeed's default
      reuse distance (1e9) that is the whole 16-bit model. Whole, not the (1 − 1/N) beyond this rank's
      partition: on N > 1 ranks the all-gather writes into a fresh full-size buffer and the partition
      stays allocated beside it (partition_parameters.py _all_gather_sequential / all_gather_coalesced:
      torch.empty(ds_numel rounded up to N) per gather); on one rank nothing is gathered
      (_no_gather_coalesced: the parameter is a view of its partition).
    `zero` (ZeroBuffers) gives every ZeRO-3 buffer setting; without it, `reduce_bucket_size` and
    `contiguous_gradients` with DeepSpeed's other defaults.
    fp32 (no 16-bit engine): parameters are the master copy: 4Ψ + 8Ψ (+ 4Ψ gradients dynamic).
    Dynamic part: activations, temporaries and 16-bit gradients at the peak of forward + backward
    (`step.dynamic`; for ZeRO-3 tracked with gradients_leave, so no full gradient stays beyond the
    bucket); frozen models: whole on every rank."""
    zero = zero or ZeroBuffers(reduce_bucket_size=reduce_bucket_size, contiguous_gradients=contiguous_gradients)
    reduce_bucket_size, contiguous_gradients = zero.reduce_bucket_size, zero.contiguous_gradients
    n = max(1, world_size)
    psi = step.trained_numel
    gathered = 0
    lp = 4 if precision == "fp32" else 2
    master_and_adam = 8 * psi if precision == "fp32" else 12 * psi
    if zero_stage == 0:
        states = lp * psi + master_and_adam
        buffers = 0
    elif zero_stage in (1, 2):
        states = lp * psi + master_and_adam / n
        buffers = reduce_bucket_size * lp if zero_stage == 2 and contiguous_gradients else 0
    else:
        # persistent parameters stay gathered: a full copy beside the partition (as the gathered ones)
        states = (lp * psi + master_and_adam + lp * psi) / n + (lp * step.persistent_numel if n > 1 else 0)
        buffers = reduce_bucket_size * lp if contiguous_gradients else 0
        held = step.largest_numel + zero.max_reuse_distance + min(zero.prefetch_bucket_size, zero.max_live_parameters)
        gathered = lp * min(psi - step.persistent_numel, held) if n > 1 else 0
    parts = {"model_states": int(states), "buffers": int(buffers), "gathered": int(gathered), "dynamic": step.dynamic,
             "frozen": step.frozen_param_bytes}
    parts["total"] = sum(parts.values())
    return parts
