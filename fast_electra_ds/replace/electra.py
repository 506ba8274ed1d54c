"""ELECTRA (Clark et al., ICLR 2020): a generator and a discriminator trained jointly, in one engine
module. The generator (size: `generator.*_fraction` of the discriminator) shares the discriminator's
embeddings and predicts the selected positions of the masked input; its Gumbel-max samples replace
them; the discriminator detects the replaced tokens over every real token.
loss = generator.gen_weight * L_MLM + generator.disc_weight * L_RTD (ELECTRA: 1 and 50)."""
from __future__ import annotations

from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from ..accounting.flops import rtd_head_flops
from ..models.pretraining import JointElectra
from .base import register
from .joint import JointMethod


@register
class Electra(JointMethod):
    name = "electra"
    main_class = ElectraForPreTraining
    selected_only = False  # RTD loss over every real token

    def joint_module(self, generator: ElectraForMaskedLM, main: ElectraForPreTraining) -> JointElectra:
        gen = self.config.generator
        return JointElectra(generator, main, self.tokens.special_ids, gen.gen_weight, gen.disc_weight, self.selected_only)

    def main_head_flops(self, config: ElectraConfig, seq_len: int, masked: float) -> float:
        return rtd_head_flops(config, seq_len)
