"""The divergence guard: a run whose training diverged stops before anything of it is saved or
exported, so the good checkpoints, `latest` and hf/ stay as they were.

Diverged means: a step applied with a non-finite loss (bf16/fp32: the weights are then ruined), more
than train.max_skipped_share of the last train.skipped_window steps skipped as fp16 overflows (fp16:
the loss scaler can no longer find a scale; a non-finite loss there is a skipped step, the weights are
untouched), or non-finite weights found before a save."""
from __future__ import annotations

from collections import deque

import torch
import torch.distributed as dist

from ..errors import UserError
from ..runtime.resources import raise_on_every_rank


class Divergence(UserError):
    """Training diverged; nothing from the diverged steps was saved."""

    exit_code = 4


class DivergenceGuard:
    def __init__(self, device: torch.device, window: int, max_skipped_share: float, loss_scaled: bool = True):
        self.device = device
        # Only fp16's loss scaler skips a step for a good reason (an overflow it recovers from). Without
        # one, DeepSpeed may still report a step with non-finite gradients as not applied, but the model
        # is past saving: a non-finite loss is divergence whether or not the step was applied.
        self.loss_scaled = loss_scaled
        self.max_skipped_share = max_skipped_share
        self.skipped: deque[bool] = deque(maxlen=window)
        self.nonfinite = torch.zeros((), device=device)

    def reset(self) -> None:
        """After a rollback: the window starts again from the reloaded checkpoint."""
        self.skipped.clear()
        self.nonfinite.zero_()

    def see_loss(self, loss: torch.Tensor) -> None:
        """Each micro-batch's loss, kept on the device (no sync here)."""
        self.nonfinite = torch.maximum(self.nonfinite, (~torch.isfinite(loss.detach().float())).any().float())

    def end_step(self, applied: bool) -> str | None:
        """After the step's update: the reason the run diverged, agreed by every rank, or None."""
        flag = self.nonfinite.reshape(1).clone()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.nonfinite.zero_()
        if flag.item() > 0 and (applied or not self.loss_scaled):
            return "the loss is not finite (nan or inf)" + (" and the update was applied" if applied else "")
        self.skipped.append(not applied)
        skipped = sum(self.skipped)
        if len(self.skipped) == self.skipped.maxlen and skipped > self.max_skipped_share * len(self.skipped):
            return (f"{skipped} of the last {len(self.skipped)} steps were skipped as fp16 overflows "
                    f"(more than train.max_skipped_share={self.max_skipped_share:g})")
        return None


def weights_are_finite(module: torch.nn.Module, device: torch.device) -> bool:
    """Every rank checks its own share (ZeRO-3: the partition it holds), one all-reduce."""
    bad = torch.zeros(1, device=device)
    for parameter in module.parameters():
        held = getattr(parameter, "ds_tensor", None)
        held = parameter.data if held is None else held
        if held.numel():
            bad = torch.maximum(bad, (~torch.isfinite(held)).any().float().reshape(1).to(device))
    dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bad.item() == 0


def stop_diverged(rank: int, step: int, reason: str, last_good: str | None) -> None:
    """Every rank calls this with the same agreed reason: rank 0 raises the one line, the others leave
    with the same exit status a moment later."""
    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was saved before it"
    raise_on_every_rank(Divergence(f"training diverged at step {step}: {reason}; nothing from it was saved, {where}",
                                   "lower optim.lr (or check the data), then continue from that checkpoint with --resume"), rank)
