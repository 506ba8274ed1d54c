"""Sampling replacement tokens from an auxiliary model's logits."""
from __future__ import annotations

import torch


def sample_with_temperature(
    logits: torch.Tensor, temperature: float, generator: torch.Generator, disallowed_ids: list[int] = ()
) -> torch.Tensor:
    """x̂ ~ Softmax(log p / T), one draw per row of `logits` [M, V], computed in float32.

    log p and the raw logits differ by a per-row constant, which the softmax ignores, so the logits
    are divided by T directly. Special tokens are never proposed (a [MASK] or [PAD] in the
    corrupted input would make detection trivial)."""
    scaled = logits.float() / temperature
    if len(disallowed_ids):
        scaled[:, list(disallowed_ids)] = float("-inf")
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def gumbel_max_sample(logits: torch.Tensor, generator: torch.Generator, disallowed_ids: list[int] = ()) -> torch.Tensor:
    """argmax(logits + Gumbel noise) in float32: an exact sample of Softmax(logits), as ELECTRA draws
    from its generator."""
    logits = logits.float()
    if len(disallowed_ids):
        logits = logits.clone()
        logits[:, list(disallowed_ids)] = float("-inf")
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    exponential = (-torch.log(uniform.clamp_min(1e-12))).clamp_min(1e-12)
    gumbel = -torch.log(exponential)
    return (logits + gumbel).argmax(dim=-1)
