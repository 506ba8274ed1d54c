"""The "ELECTRA 15%" ablation (Clark et al. 2020, section 3.2): as `electra`, but the discriminator's
loss (and its metrics) only over the selected (masked) positions."""
from __future__ import annotations

from .base import register
from .electra import Electra


@register
class Electra15(Electra):
    name = "electra-15"
    selected_only = True
