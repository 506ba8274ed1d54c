"""Metrics that show whether replaced-token detection is learning, and whether it uses context.

Why these: with 12-15% of tokens replaced, recall at p > 0.5 stays 0 until the detector is confident,
and the RTD loss moves by thousandths of a nat in the first millions of tokens. These move earlier:

- `rtd_auc`: ROC AUC of the RTD logits (replaced vs original) over the counted tokens. 0.5 = chance.
- `rtd_prior_gap`: H(base rate of the labels) - RTD loss, in nats. > 0: better than predicting the
  base rate everywhere.
- `rtd_context_gain`: loss of a token-only detector - RTD loss, in nats. The token-only detector
  predicts p(replaced | observed token id) from running per-token counts (fading over
  COUNT_MEMORY_TOKENS), smoothed toward the global rate, or the base rate itself where that scores
  better; a detector that never looks at context can at best match it, so > 0 means the discriminator
  uses context, and the gain is at most the prior gap. Training windows are scored prequentially (counts of the earlier windows only, as the
  discriminator's own loss comes from weights that have not seen the window); validation is scored
  against everything training counted.
- `rtd_precision`, `rtd_recall`: of "replaced" at p > 0.5.

Everything is accumulated on the device without host syncs (no boolean indexing, no .item()): a
logit histogram per class and per-token label counts, summed over micro-batches and ranks like the
other metrics (metrics.pairs.Metrics pairs with vector numerators), then summarised once per log step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# AUC resolution: logits are binned into LOGIT_BINS equal bins over [-LOGIT_RANGE, LOGIT_RANGE]
# (width 0.004 nats of logit); ties within a bin count one half, as in Mann-Whitney.
LOGIT_BINS = 4096
LOGIT_RANGE = 8.0
# Pseudo-counts of the token-only detector's prior (the global replaced rate) for each token id.
TOKEN_PRIOR_COUNTS = 2.0
# The bar for "the discriminator learned context" (demo summary, effectiveness study), in nats.
CONTEXT_GAIN_LEARNED = 0.02
# Tokens after which the token-only detector's counts have faded to 1/e: long enough for rare
# tokens to be counted, short enough to follow a replacement distribution that changes in training.
COUNT_MEMORY_TOKENS = 4_000_000

HISTOGRAM = "rtd_logit_hist"  # [2 * LOGIT_BINS]: original tokens' bins, then replaced tokens'
TOKEN_COUNTS = "rtd_token_counts"  # [2 * V]: per observed token id, (original, replaced) counts
VECTOR_STATS = (HISTOGRAM, TOKEN_COUNTS)


def rtd_statistics(logits: torch.Tensor, is_replaced: torch.Tensor, counted: torch.Tensor,
                   input_ids: torch.Tensor | None = None, vocab_size: int | None = None, bce: torch.Tensor | None = None):
    """Sums for the learning metrics of one micro-batch: logits, labels, counted-token mask and the
    observed token ids, all [B, S]; `bce`, the per-token losses if the caller has them already.
    Returns metrics.pairs.Metrics-style (numerator, denominator) pairs."""
    weight = counted.detach().float().reshape(-1)
    logits = logits.detach().float().reshape(-1)
    replaced = is_replaced.reshape(-1).long()
    one = torch.ones((), device=logits.device)
    scaled = (logits.clamp(-LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) * (LOGIT_BINS / (2 * LOGIT_RANGE))
    bins = scaled.long().clamp(0, LOGIT_BINS - 1)
    histogram = torch.zeros(2 * LOGIT_BINS, device=logits.device).index_add_(0, replaced * LOGIT_BINS + bins, weight)
    predicted = (logits > 0).float() * weight
    true_positive = (predicted * replaced).sum()
    if bce is None:
        bce = F.binary_cross_entropy_with_logits(logits, replaced.float(), reduction="none")
    bce = bce.detach().float().reshape(-1)
    stats = {
        HISTOGRAM: (histogram, one),
        "rtd_bce": ((bce * weight).sum(), weight.sum()),  # token-weighted over micro-batches and ranks
        "rtd_precision": (true_positive, predicted.sum()),
        "rtd_recall": (true_positive, (replaced * weight).sum()),
    }
    if input_ids is not None:
        if vocab_size is None:
            raise ValueError("vocab_size is needed with input_ids")
        index = input_ids.reshape(-1).long() * 2 + replaced
        stats[TOKEN_COUNTS] = (torch.zeros(2 * vocab_size, device=logits.device).index_add_(0, index, weight), one)
    return stats


def binary_entropy(q: float) -> float:
    if not 0.0 < q < 1.0:
        return 0.0
    return -(q * math.log(q) + (1 - q) * math.log(1 - q))


def auc_from_histogram(histogram: torch.Tensor) -> float:
    """P(logit of a replaced token > logit of an original one), ties one half."""
    original, replaced = histogram.double().reshape(2, -1)
    n_original, n_replaced = original.sum(), replaced.sum()
    if n_original <= 0 or n_replaced <= 0:
        return float("nan")
    originals_below = torch.cumsum(original, 0) - original
    return float((replaced * (originals_below + 0.5 * original)).sum() / (n_original * n_replaced))


class TokenOnlyDetector:
    """p(replaced | observed token) from running counts over training, smoothed toward the global
    replaced rate. Its state is the cumulative [V, 2] counts (kept in the trainer's checkpoint)."""

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None  # float64 [V, 2]: (original, replaced)

    def update(self, window_counts: torch.Tensor) -> None:
        """Add a window's counts; older counts fade with a memory of COUNT_MEMORY_TOKENS, since the
        replacement distribution moves during training (a generator learns, a temperature anneals)
        and stale rates would make the token-only detector look worse than it can be."""
        window_counts = window_counts.detach().double().cpu().reshape(-1, 2)
        if self.counts is None:
            self.counts = window_counts.clone()
        else:
            self.counts = self.counts * math.exp(-float(window_counts.sum()) / COUNT_MEMORY_TOKENS) + window_counts

    def loss(self, window_counts: torch.Tensor) -> float:
        """Mean binary cross-entropy (nats) of this detector on the tokens counted in `window_counts`."""
        window = window_counts.detach().double().cpu().reshape(-1, 2)
        counts = self.counts if self.counts is not None else window
        total = counts.sum()
        if window.sum() <= 0 or total <= 0:
            return float("nan")
        rate = counts[:, 1].sum() / total
        p = (counts[:, 1] + TOKEN_PRIOR_COUNTS * rate) / (counts.sum(1) + TOKEN_PRIOR_COUNTS)
        p = p.clamp(1e-12, 1 - 1e-12)
        return float(-(window[:, 1] * p.log() + window[:, 0] * (1 - p).log()).sum() / window.sum())

    def state_dict(self) -> dict:
        if self.counts is None:
            return {}
        nonzero = (self.counts.sum(1) > 0).nonzero().squeeze(1)
        return {"vocab_size": int(self.counts.shape[0]), "ids": nonzero.tolist(),
                "counts": self.counts[nonzero].tolist()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            self.counts = None
            return
        self.counts = torch.zeros(state["vocab_size"], 2, dtype=torch.float64)
        if state["ids"]:
            self.counts[torch.tensor(state["ids"])] = torch.tensor(state["counts"], dtype=torch.float64)


def summarize(vectors: dict[str, torch.Tensor], scalars: dict[str, float], detector: TokenOnlyDetector | None,
              prefix: str = "") -> dict[str, float]:
    """The learning metrics from summed (reduced) statistics: `vectors` holds one window's vector
    stats, `scalars` its averaged scalars (rtd_bce). The context gain scores the window's token counts
    against `detector` as it stands: the training tracker adds the window to it first (in-sample),
    validation scores held-out tokens against what training counted."""
    out: dict[str, float] = {}
    histogram = vectors.get(prefix + HISTOGRAM)
    bce = scalars.get(prefix + "rtd_bce")
    if histogram is None or bce is None:
        return out
    original, replaced = histogram.double().reshape(2, -1).sum(1).tolist()
    out[prefix + "rtd_auc"] = auc_from_histogram(histogram)
    if original + replaced > 0:
        out[prefix + "rtd_prior_gap"] = binary_entropy(replaced / (original + replaced)) - bce
    counts = vectors.get(prefix + TOKEN_COUNTS)
    if counts is not None and detector is not None and original + replaced > 0:
        # Predicting the base rate everywhere is itself a detector that ignores context: the
        # token-only loss is never worse than it, so the context gain never exceeds the prior gap.
        token_only = min(detector.loss(counts), binary_entropy(replaced / (original + replaced)))
        out[prefix + "rtd_context_gain"] = token_only - bce
    return out
