"""Stage 1 of Fast-ELECTRA: train the auxiliary masked-LM once, on the same data and machinery.
The `mlm` method with the auxiliary model's sizes (`aux.*_fraction` of the main model's) and
ELECTRA's corruption rates (`masking.*`)."""
from __future__ import annotations

from ..models.encoder import scaled_sizes
from .base import register
from .mlm import MaskedLM


@register
class AuxMaskedLM(MaskedLM):
    name = "aux-mlm"

    def sizes(self) -> dict[str, int]:
        aux = self.config.aux
        return scaled_sizes(self.config.model.sizes(), aux.depth_fraction, aux.hidden_fraction)

    def corruption_rates(self) -> tuple[float, float]:
        return self.config.masking.mask_token_prob, self.config.masking.random_token_prob
