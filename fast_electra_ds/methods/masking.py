"""Choosing and corrupting positions, as ELECTRA's pretrain_helpers.mask does."""
from __future__ import annotations

import torch

from .corruption_rng import SampleDraws, StepDraws, as_draws


def maskable_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: list[int]) -> torch.Tensor:
    """True where a token may be masked: real text, never padding or a special token."""
    maskable = attention_mask.bool()
    for token_id in special_ids:
        maskable &= input_ids != token_id
    return maskable


def select_positions(maskable: torch.Tensor, mask_prob: float, generator: torch.Generator | StepDraws | SampleDraws) -> torch.Tensor:
    """Pick round(mask_prob * n) maskable positions per sequence (at least one when any is
    maskable), uniformly without replacement: a fixed count per sequence, as in ELECTRA.
    `generator`: a torch.Generator, or the draws of methods/corruption_rng.py."""
    counts = maskable.sum(dim=1)
    to_pick = torch.clamp(torch.round(counts.float() * mask_prob).long(), min=1)
    to_pick = torch.minimum(to_pick, counts)
    noise = as_draws(generator).selection_noise(maskable.shape, maskable.device)
    noise = noise.masked_fill(~maskable, 2.0)  # never picked before a maskable position
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < to_pick.unsqueeze(1)


def corrupt_inputs(
    input_ids: torch.Tensor,
    selected: torch.Tensor,
    mask_token_id: int,
    mask_token_prob: float,
    random_token_prob: float,
    vocab_size: int,
    generator: torch.Generator | StepDraws | SampleDraws,
    special_ids: list[int] = (),
) -> torch.Tensor:
    """Of the selected positions: `mask_token_prob` become [MASK], `random_token_prob` a random
    non-special token, the rest stay as they are (ELECTRA: 85/0/15; BERT: 80/10/10)."""
    draws = as_draws(generator)
    draw = draws.corruption_draw(input_ids.shape, input_ids.device)
    to_mask = selected & (draw < mask_token_prob)
    to_randomise = selected & (draw >= mask_token_prob) & (draw < mask_token_prob + random_token_prob)
    corrupted = input_ids.masked_fill(to_mask, mask_token_id)
    if random_token_prob > 0:
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[list(special_ids)] = False
        candidates = allowed.nonzero().squeeze(1).to(input_ids.device)
        picks = candidates[draws.random_picks(len(candidates), input_ids.shape, input_ids.device)]
        corrupted = torch.where(to_randomise, picks, corrupted)
    return corrupted
