"""Sampling replacement tokens from a model's vocabulary logits: one exact draw per row of
Softmax(logits / T), by a blocked inverse CDF.

Why not torch.multinomial or Gumbel-max: both draw one random number per vocabulary entry (multinomial
draws Exp(1) noise over the whole row), which cost 5x the aux model's forward at `small`.
The inverse CDF needs one uniform per row. Its precision problem is the CDF: a float32 cumsum over
30k-128k entries carries an error of the order of the small probabilities themselves, and a float32
uniform cannot pick tokens rarer than 2^-24. So the CDF is two-level: float32 sums of blocks of
BLOCK entries, a float64 cumsum over the blocks (a few hundred per row), a float64 uniform picks the
block, then a float64 cumsum inside that one block picks the token. Every probability is then the
float32 softmax's, up to a relative ~1e-6 (float32 exp and block sums), and no [rows x V] cumsum or
noise tensor is made. Randomness: exactly `rows` float64 uniforms from `generator`, so the
(seed, step, micro-batch, rank) generator the trainer passes fixes the draw (exact resume)."""
from __future__ import annotations

import torch

BLOCK = 256  # entries per CDF block: ~sqrt(V) for V = 30k-128k keeps both cumsums short


def sample_and_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None,
                      disallowed_ids: list[int] = (), uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂ ~ Softmax(logits / T) over the allowed tokens, argmax of `logits` over the whole vocabulary),
    one of each per row of `logits` [M, V], in float32. The argmax comes from the max pass the sampler
    makes anyway (it includes the disallowed tokens, as `logits.argmax(-1)` does). `uniform`: the rows'
    float64 uniforms drawn beforehand (per-sample draws), instead of `rows` draws from `generator`."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    rows, vocab = logits.shape
    blocks = -(-vocab // BLOCK)
    device = logits.device
    weights = torch.empty(rows, blocks * BLOCK, dtype=torch.float32, device=device)
    weights[:, vocab:] = float("-inf")  # padding to whole blocks: weight 0
    weights[:, :vocab] = logits
    disallowed = torch.as_tensor(list(disallowed_ids), dtype=torch.long, device=device)
    if len(disallowed):
        special = weights[:, disallowed]  # [M, k], before masking: for the full-vocabulary argmax
        weights[:, disallowed] = float("-inf")
    top, argmax = weights.max(dim=-1)  # over the allowed tokens: the softmax's shift
    full_argmax = argmax
    if len(disallowed):
        special_top, special_at = special.max(dim=-1)
        special_id = disallowed[special_at]
        wins = (special_top > top) | ((special_top == top) & (special_id < argmax))  # argmax takes the first maximum
        full_argmax = torch.where(wins, special_id, argmax)

    # weights = exp((logits - top) / T), in place: one fused pass for the affine map, one for exp.
    torch.add(top[:, None] / -temperature, weights, alpha=1 / temperature, out=weights)
    weights.exp_()
    by_block = weights.view(rows, blocks, BLOCK)
    block_mass = by_block.sum(dim=-1).double()  # [M, blocks]
    cdf = block_mass.cumsum(dim=-1)
    total = cdf[:, -1]
    if uniform is None:
        uniform = torch.rand(rows, dtype=torch.float64, generator=generator, device=device)
    # target in [0, total): the first block whose cdf exceeds it has positive mass
    target = torch.minimum(uniform * total, torch.nextafter(total, torch.zeros_like(total)))
    # A row with non-finite logits (a diverged model) has no CDF: its indices are clamped here and its
    # draw replaced by its argmax below, so the step runs on and the divergence guard stops the run.
    block = torch.searchsorted(cdf, target[:, None], right=True).squeeze(1).clamp_max(blocks - 1)
    below = torch.where(block > 0, cdf.gather(1, (block - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
    row = torch.arange(rows, device=device)
    inside = by_block[row, block].double().cumsum(dim=-1)  # [M, BLOCK]: the chosen block only
    inside_total = inside[:, -1]
    # the residual, rescaled from the float32 block sum to the float64 one (they differ by ~1e-7)
    residual = (target - below) * (inside_total / block_mass[row, block])
    residual = torch.minimum(residual, torch.nextafter(inside_total, torch.zeros_like(inside_total)))
    offset = torch.searchsorted(inside, residual[:, None], right=True).squeeze(1).clamp_max(BLOCK - 1)  # lands on a positive weight
    drawn = torch.where(torch.isfinite(total) & (total > 0), block * BLOCK + offset, argmax)
    return drawn, full_argmax


def sample_with_temperature(logits: torch.Tensor, temperature: float, generator: torch.Generator,
                            disallowed_ids: list[int] = ()) -> torch.Tensor:
    """x̂ ~ Softmax(log p / T), one draw per row of `logits` [M, V], computed in float32.

    log p and the raw logits differ by a per-row constant, which the softmax ignores, so the logits
    are divided by T directly. Special tokens are never proposed (a [MASK] or [PAD] in the
    corrupted input would make detection trivial)."""
    return sample_and_argmax(logits, temperature, generator, disallowed_ids)[0]


def gumbel_max_sample(logits: torch.Tensor, generator: torch.Generator, disallowed_ids: list[int] = ()) -> torch.Tensor:
    """An exact sample of Softmax(logits) per row, as ELECTRA draws from its generator (its code uses
    argmax(logits + Gumbel noise); the distribution is the same, drawn here by the cheaper inverse CDF
    above: one uniform per row instead of one per vocabulary entry)."""
    return sample_and_argmax(logits, 1.0, generator, disallowed_ids)[0]


def reference_sample(logits: torch.Tensor, temperature: float, generator: torch.Generator,
                     disallowed_ids: list[int] = ()) -> torch.Tensor:
    """The sampler this module replaced (float32 softmax + torch.multinomial): kept for the
    benchmark (benchmarks/sampler_speed.py) and the tests that compare against it."""
    scaled = logits.float() / temperature
    if len(disallowed_ids):
        scaled[:, list(disallowed_ids)] = float("-inf")
    return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator).squeeze(1)
