"""Fast-ELECTRA's learning curriculum by temperature ("simulated annealing", poster eq. 1): the aux's
replacements are drawn from Softmax(log p_aux / T), and T falls to 1 over training. Two kinds
(`curriculum.kind`):

- `exp`: the poster's T(u) = 1 + (T0 - 1) * exp(-u / tau), u = fraction of training done. Its T0 and
  tau are per-scale knobs: the same T gives an easy task with a weak aux and a hard one with a strong aux.

- `target`: T is chosen per micro-batch so that the aux's cross-entropy of the ORIGINAL tokens at the
  selected positions, under the distribution the sampler draws from (Softmax(logits / T) over the
  allowed tokens), equals a target c*(u). The path is what a jointly trained generator does: it starts
  at the corpus's unigram entropy H (a generator that knows only token frequencies) and ends at the
  aux's own T = 1 cross-entropy CE(1) of that batch at u = `span`:

      c*(u) = H + (CE(1) - H) * min(u / span, 1)

  Linear in u: one parameter, and no claim about a shape nobody has measured to matter. ELECTRA's
  generator in the study (benchmarks/results/study/state/electra) falls faster early (6.24 nats at
  u = 1/6, where this path with H = 6.95, CE(1) = 5.72 and span 0.5 asks 6.54): the linear path is
  the gentler of the two early on, which is what "full-strength replacements too early" asks to test.
  Ending at the batch's own CE(1) makes T exactly 1 from u = span on. When c* is at or below CE(1)
  (past the span, or an aux worse than the unigram distribution) T = 1: a temperature below 1 would
  sharpen the aux beyond what it learned. With the study's aux on a training batch (608 selected
  positions, V = 8000): CE(1) = 5.89, and T = 2.26 at u = 0, 1.66 at u = 0.25, 1.34 at u = 0.4
  (where `exp` with T0 = 2, tau = 0.1 is at 1.08 by u = 0.25).

  `span` defaults to 0.5: electra's generator in the study (3000 steps) had validation MLM loss 5.796
  at u = 0.5, within 0.100 nats of its final 5.696 (5.835, 0.14 above, at u = 0.417); its training
  loss first came within 0.1 nats of its final value at u = 0.42.

  T is found by bisection on log T in [0, log T_MAX] over the batch's logits. The cross-entropy is
  convex in 1/T (a log-sum-exp plus a linear term), so when CE(1) < c* the set {T >= 1 : CE(T) <= c*}
  is an interval starting at 1, and the bisection converges to its upper end, the one T >= 1 with
  CE(T) = c*, even where CE is not monotone (an over-confident aux, whose CE first dips below CE(1)
  just above T = 1). A c* above CE(T_MAX) (a corpus close to uniform) clamps T at T_MAX. T is the last
  evaluated point, within log(T_MAX) / 2^BISECTION_STEPS = 0.0027 of the solution in log T; CE rises
  by at most ~1.7 nats per unit of log T (the study's aux), so CE(T) is within ~0.005 nats of c*, and
  the logged `aux_ce` is that point's measured CE.

  Cost: 1 + BISECTION_STEPS = 11 passes over the selected rows' [M, V] float32 logits (CE(1), then
  the bisection), each a multiply, an exp and a sum, plus one shift by the row maximum: about 50
  operations per logit, against 2 * embedding_size FLOPs per logit for the aux head's vocabulary
  projection alone and the aux encoder over every token. At the study's setting (2-layer, 128-wide
  aux, V = 8000, 128 tokens, 19 selected per sequence) that is ~7.7 MFLOP next to the aux forward's
  157 MFLOP per sequence (5%). On a CPU exp costs more than a FLOP: measured side by side on one
  micro-batch of 608 x 8000 logits, the search took about a tenth of the bf16 aux forward's time.
  Past the span it is one pass; `exp` makes one pass too, for `aux_ce`. No extra aux forward: the
  logits are the ones the sampler draws from. T depends only on the data and the frozen aux, never on the main
  model, so the replacements stay precomputable.
"""
from __future__ import annotations

import math

import torch

from ..config.run_config import CurriculumConfig
from ..errors import UserError
from ..metrics.pairs import Metrics, ratio

T_MAX = 16.0  # the largest temperature `target` picks (the study's aux needs 2.26 at u = 0)
BISECTION_STEPS = 10
CHUNK_ELEMENTS = 1 << 24  # float32 logits per chunk of rows on a GPU: 64 MiB
CPU_CHUNK_ELEMENTS = 1 << 18  # on a CPU: 1 MiB, in cache


def temperature(progress: float, t0: float, tau: float) -> float:
    """T(u) = 1 + (T0 - 1) * exp(-u / tau) for u = fraction of training done, in [0, 1]."""
    if tau <= 0:
        return 1.0
    return 1.0 + (t0 - 1.0) * math.exp(-progress / tau)


def target_path(progress: float, start: float, end: float, span: float) -> float:
    """c*(u) = start + (end - start) * min(u / span, 1): linear from `start` at u = 0 to `end` at u = span."""
    return start + (end - start) * min(progress / span, 1.0)


class SamplerLogits:
    """The selected rows' logits as the sampler sees them (float32, disallowed tokens at -inf), shifted
    by each row's maximum, and the original tokens' entries: the cross-entropy at any T from them."""

    def __init__(self, logits: torch.Tensor, targets: torch.Tensor, disallowed_ids: list[int]):
        shifted = logits.to(torch.float32, copy=True)
        if len(disallowed_ids):
            shifted[:, list(disallowed_ids)] = float("-inf")
        shifted -= shifted.max(dim=-1, keepdim=True).values
        self.shifted = shifted
        self.at_target = shifted.gather(1, targets[:, None]).squeeze(1)  # finite: targets are never disallowed
        # Chunks of rows through one reused buffer: on a CPU cache-sized (2x faster than whole-tensor
        # temporaries, measured at 608 x 8000), on a GPU large (few kernel launches).
        elements = CHUNK_ELEMENTS if shifted.device.type == "cuda" else CPU_CHUNK_ELEMENTS
        self.chunk = max(1, elements // max(1, shifted.shape[1]))
        self.buffer = torch.empty(min(self.chunk, shifted.shape[0]), shifted.shape[1], device=shifted.device)

    def cross_entropy(self, temperature: torch.Tensor | float) -> torch.Tensor:
        """Mean over rows of -log Softmax(logits / T)[target], a 0-dim float32 tensor (no host sync)."""
        inverse = 1.0 / torch.as_tensor(temperature, dtype=torch.float32, device=self.shifted.device)
        log_norm = []
        for part in self.shifted.split(self.chunk):
            scaled = self.buffer[:part.shape[0]]
            torch.mul(part, inverse, out=scaled)
            log_norm.append(scaled.exp_().sum(dim=-1))
        return (torch.cat(log_norm).log() - self.at_target * inverse).mean()


def target_temperature(rows: SamplerLogits, progress: float, unigram_entropy: float,
                       span: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T, c*, CE(T)) for this batch, 0-dim tensors; T = 1 exactly past the span or when c* <= CE(1).
    The T returned is the bisection's last evaluated point, so CE(T) is measured, not interpolated."""
    at_one = rows.cross_entropy(1.0)
    one = torch.ones((), device=at_one.device)
    if progress >= span:
        return one, at_one, at_one
    target = unigram_entropy + (at_one - unigram_entropy) * (progress / span)
    low = torch.zeros((), device=at_one.device)
    high = torch.full((), math.log(T_MAX), device=at_one.device)
    for _ in range(BISECTION_STEPS):  # on the device: no host sync per step
        middle = (low + high) / 2
        achieved = rows.cross_entropy(middle.exp())
        below = achieved < target
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    at_or_below = target <= at_one
    return torch.where(at_or_below, one, middle.exp()), target, torch.where(at_or_below, at_one, achieved)


class Curriculum:
    """The configured curriculum: `choose` gives the sampling temperature for a micro-batch and the
    metrics that show it (`aux_ce`: the aux's CE of the original tokens under the sampled distribution;
    for `target` also `aux_target_ce` and `temperature`, averaged over micro-batches and ranks)."""

    def __init__(self, config: CurriculumConfig, unigram_entropy: float | None):
        config.check()
        if config.kind == "target" and unigram_entropy is None:
            raise UserError("curriculum.kind=target needs the corpus's unigram entropy, which was not given", "train through the trainer, which reads it from the data, or use curriculum.kind=exp")
        self.config = config
        self.unigram_entropy = unigram_entropy

    def scheduled(self, progress: float) -> float | None:
        """The temperature when it follows from u alone (`exp`), else None."""
        if self.config.kind == "exp":
            return temperature(progress, self.config.t0, self.config.tau)
        return None

    @torch.no_grad()
    def choose(self, logits: torch.Tensor, targets: torch.Tensor, progress: float,
               disallowed_ids: list[int]) -> tuple[float, Metrics]:
        """(T for the sampler, metrics) from the selected rows' aux logits [M, V] and original tokens [M]."""
        scheduled = self.scheduled(progress)
        count = logits.shape[0]
        if count == 0:  # nothing selected: no mean to log
            return (1.0 if scheduled is None else scheduled), {}
        rows = SamplerLogits(logits, targets, disallowed_ids)
        if scheduled is not None:
            return scheduled, {"aux_ce": ratio(rows.cross_entropy(scheduled) * count, count)}
        chosen, target, achieved = target_temperature(rows, progress, self.unigram_entropy, self.config.span)
        metrics = {"temperature": ratio(chosen, 1), "aux_target_ce": ratio(target * count, count),
                   "aux_ce": ratio(achieved * count, count)}
        return float(chosen), metrics
