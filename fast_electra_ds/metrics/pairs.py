"""Metrics as (numerator, denominator) pairs, so the trainer can sum them over micro-batches and ranks
and divide once: exact averages whatever the token counts."""
from __future__ import annotations

import torch

Metrics = dict[str, tuple[torch.Tensor, torch.Tensor]]


def ratio(numerator: torch.Tensor, denominator: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    return numerator.detach().float(), torch.as_tensor(denominator, dtype=torch.float32, device=numerator.device)
