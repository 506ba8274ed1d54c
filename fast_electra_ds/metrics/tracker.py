"""Metric sums kept on the device and reduced over ranks only when something reads them.

A micro-batch's metrics are metrics.pairs.Metrics pairs (numerator, denominator); their sums over
micro-batches and ranks, divided once, are exact averages whatever the token counts. Nothing here
calls .item() or .cpu() per micro-batch: on a GPU that would be a host sync that stalls ZeRO-3's
overlap. One all-reduce of everything packed into one vector, then one copy to the host."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .pairs import Metrics
from .learning import TOKEN_COUNTS, TokenOnlyDetector, summarize


class MetricSums:
    def __init__(self) -> None:
        self.sums: dict[str, list[torch.Tensor]] = {}

    def add(self, metrics: Metrics) -> None:
        for name, (numerator, denominator) in metrics.items():
            numerator, denominator = numerator.detach().float(), torch.as_tensor(denominator).detach().float()
            if name in self.sums:
                self.sums[name][0] += numerator
                self.sums[name][1] += denominator.to(numerator.device)
            else:
                self.sums[name] = [numerator.clone(), denominator.clone().to(numerator.device)]

    def __bool__(self) -> bool:
        return bool(self.sums)

    def clear(self) -> None:
        self.sums.clear()

    def reduce(self, device: torch.device) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """(scalar averages, summed vector statistics), identical on every rank."""
        names = sorted(self.sums)
        if not names:
            return {}, {}
        parts = [torch.cat([self.sums[n][0].reshape(-1).to(device), self.sums[n][1].reshape(-1).to(device)]) for n in names]
        packed = torch.cat(parts)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(packed)
        packed = packed.cpu()
        scalars, vectors, offset = {}, {}, 0
        for name, part in zip(names, parts):
            values = packed[offset:offset + part.numel()]
            offset += part.numel()
            if part.numel() == 2:  # a scalar numerator and its denominator
                scalars[name] = float(values[0] / values[1]) if values[1] > 0 else float("nan")
            else:
                vectors[name] = values[:-1]
        return scalars, vectors


def with_learning_metrics(scalars: dict[str, float], vectors: dict[str, torch.Tensor], detector: TokenOnlyDetector | None,
                          unigram_entropy: float | None) -> dict[str, float]:
    """The averaged scalars plus the metrics that say whether the model learns: RTD AUC / prior gap /
    context gain (metrics/learning.py), and for every masked-LM loss its gap to the corpus's unigram
    entropy (`<name>_prior_gap`; > 0: better than predicting token frequencies)."""
    out = {k: v for k, v in scalars.items() if k != "rtd_bce"}
    out.update(summarize(vectors, scalars, detector))
    if unigram_entropy is not None:
        for name, value in scalars.items():
            if name.endswith("mlm_loss") and math.isfinite(value):
                out[name[: -len("_loss")] + "_prior_gap"] = unigram_entropy - value
    return out


class TrainingMetrics:
    """The trainer's metrics: a log window's sums (everything logged), the current step's scalar sums
    for methods whose schedules read every step's metrics, and the token-only detector's counts."""

    def __init__(self, device: torch.device, per_step: bool, unigram_entropy: float | None) -> None:
        self.device = device
        self.per_step = per_step
        self.unigram_entropy = unigram_entropy
        self.window = MetricSums()
        self.step = MetricSums()
        self.detector = TokenOnlyDetector()

    def add(self, metrics: Metrics) -> None:
        self.window.add(metrics)
        if self.per_step:
            self.step.add({k: v for k, v in metrics.items() if v[0].dim() == 0})

    def discard_window(self) -> None:
        """Forget the sums since the last log (a rollback drops the diverged steps)."""
        self.window.clear()
        self.step.clear()

    def step_values(self) -> dict[str, float]:
        """This step's scalar averages (one small all-reduce), only for methods that read them."""
        if not self.per_step:
            return {}
        scalars, _ = self.step.reduce(self.device)
        self.step.clear()
        return scalars

    def window_values(self) -> dict[str, float]:
        """The log window's averages and learning metrics; starts a new window."""
        scalars, vectors = self.window.reduce(self.device)
        self.window.clear()
        # Prequential: the token-only detector scores the window from the counts of earlier windows,
        # as the discriminator's loss on it comes from weights trained on earlier batches; then learns it.
        values = with_learning_metrics(scalars, vectors, self.detector, self.unigram_entropy)
        if TOKEN_COUNTS in vectors:
            self.detector.update(vectors[TOKEN_COUNTS])
        return values

    def state_dict(self) -> dict:
        return {"token_only_detector": self.detector.state_dict()}

    def load_state_dict(self, state: dict | None) -> None:
        self.detector.load_state_dict((state or {}).get("token_only_detector", {}))
