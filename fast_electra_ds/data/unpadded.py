"""The attention mask of a batch without padding.

Packed sequences have no padding, yet a mask passed to SDPA rules out its flash kernel. Transformers
drops an all-ones mask itself only by reading it (a device-to-host sync in every forward) and never
under torch.compile. So a batch known on the host to have no padding carries a stride-0 ones mask:
everything reads it as the ones it is, and the models (models/encoder.py) see it without reading the
device and give attention no mask."""
from __future__ import annotations

import torch


def unpadded_mask(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The attention mask of a batch without padding."""
    return torch.ones((), dtype=dtype, device=device).expand(shape)


def is_unpadded_mask(mask: torch.Tensor | None) -> bool:
    return isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.stride() == (0, 0)
