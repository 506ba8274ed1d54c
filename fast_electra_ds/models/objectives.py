"""Losses and their metrics (metrics.pairs: (numerator, denominator) pairs summed over micro-batches
and ranks, then divided once)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..metrics.learning import rtd_statistics
from ..metrics.pairs import Metrics, ratio


def rtd_loss(logits: torch.Tensor, is_replaced: torch.Tensor, attention_mask: torch.Tensor,
             positions: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
             vocab_size: int | None = None) -> tuple[torch.Tensor, Metrics]:
    """Binary cross-entropy of replaced-token detection, averaged over every real (non-padding)
    token, or only over `positions` when given (the "ELECTRA 15%" ablation). The metrics include the
    learning statistics of metrics/learning.py; with the observed `input_ids` (and the vocabulary
    size) also the per-token counts behind the context gain."""
    counted = attention_mask.bool() if positions is None else positions & attention_mask.bool()
    # Weighted by the counted-token mask, not gathered by it: no data-dependent shapes, so no host
    # sync on a GPU and no graph break under torch.compile.
    weight = counted.float()
    tokens = weight.sum()
    target = is_replaced.float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    statistics = rtd_statistics(logits, is_replaced, counted, input_ids, vocab_size, bce=bce)
    loss = (bce * weight).sum() / tokens.clamp(min=1)
    correct = ((logits.detach() > 0).float() == target).float() * weight
    replaced = target * weight
    metrics = {
        "rtd_loss": ratio(loss, 1),
        "rtd_acc": ratio(correct.sum(), tokens),
        "rtd_acc_replaced": ratio((correct * target).sum(), replaced.sum()),
        "rtd_acc_original": ratio((correct * (1 - target)).sum(), tokens - replaced.sum()),
        "replaced_frac": ratio(replaced.sum(), tokens),
        **statistics,
    }
    return loss, metrics


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor, prefix: str = "mlm") -> tuple[torch.Tensor, Metrics]:
    """Cross-entropy of predicting `targets` [M] from `logits` [M, V] (already gathered at the
    predicted positions)."""
    loss = F.cross_entropy(logits.float(), targets)
    correct = logits.argmax(dim=-1) == targets
    return loss, {f"{prefix}_loss": ratio(loss, 1), f"{prefix}_acc": ratio(correct.sum(), correct.numel())}
