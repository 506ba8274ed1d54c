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
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

CATEGORIES = {"param": _MemRefType.PARAM, "buffer": _MemRefType.BUFFER, "grad": _MemRefType.GRAD,
              "activation": _MemRefType.ACT, "temp": _MemRefType.TEMP, "optimizer": _MemRefType.OPT,
              "other": _MemRefType.OTH}

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class TrackedPeak:
    total: int  # bytes at the peak of the step, one process, no ZeRO
    by_category: dict[str, int]  # at that peak
    frozen_param_bytes: int  # parameters of frozen models (never divided by ZeRO)

    def per_rank(self, zero_stage: int, world_size: int) -> int:
        """The peak of one data-parallel rank under ZeRO `zero_stage` with `world_size` ranks."""
        n = max(1, world_size)
        divided = 0
        if zero_stage >= 1:
            divided += self.by_category["optimizer"]
        if zero_stage >= 2:
            divided += self.by_category["grad"]
        if zero_stage >= 3:
            divided += max(0, self.by_category["param"] - self.frozen_param_bytes)
        return int(self.total - divided * (1 - 1 / n))


def track_training_step(build: Callable[[], tuple[list[torch.nn.Module], list[torch.nn.Module], Callable[[], torch.Tensor]]],
                        precision: str = "bf16", fake: bool = True, iterations: int = 2,
                        device_type: str = "cpu") -> TrackedPeak:
    """Track `iterations` training steps (the second has the optimizer states from the first).
    `build()` (run inside the fake mode) returns (trained modules, frozen modules, loss function);
    the loss function runs everything of a step before backward (a frozen model's no-grad forward
    included). Precision: 16-bit autocast over fp32 parameters, or fp32."""
    mode = FakeTensorMode() if fake else nullcontext()
    with mode:
        trained, frozen, loss_fn = build()
        params = [p for m in trained for p in m.parameters() if p.requires_grad]  # frozen modules: not in the optimizer
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        tracker = MemTracker()
        tracker.track_external(*trained, *frozen, optimizer)
        autocast = (torch.autocast(device_type, dtype=DTYPES[precision]) if precision != "fp32" else nullcontext())
        with tracker:
            for i in range(iterations):
                with autocast:
                    loss = loss_fn()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                del loss
                if i + 1 < iterations:
                    tracker.reset_mod_stats()
        snapshot = next(iter(tracker.get_tracker_snapshot("peak").values()))
        frozen_bytes = sum(p.numel() * p.element_size() for m in frozen for p in m.parameters())
    by_category = {name: int(snapshot.get(ref, 0)) for name, ref in CATEGORIES.items()}
    return TrackedPeak(total=int(snapshot["Total"]), by_category=by_category, frozen_param_bytes=frozen_bytes)
