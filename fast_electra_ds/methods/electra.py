"""ELECTRA (Clark et al., ICLR 2020): a generator and a discriminator trained jointly, in one engine
module. The generator (size: `generator.*_fraction` of the discriminator) shares the discriminator's
embeddings and predicts the selected positions of the masked input; its samples (Softmax at T = 1, as
ELECTRA's Gumbel-max draws them) replace them; the discriminator detects the replaced tokens over every real token.
loss = generator.gen_weight * L_MLM + generator.disc_weight * L_RTD (ELECTRA: 1 and 50)."""
from __future__ import annotations

from typing import Any

import torch
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from ..accounting.flops import mlm_head_flops, rtd_head_flops
from ..models.corrective_lm import corrective_lm_head, masked_lm_view
from ..models.pretraining import JointElectra
from .base import register
from .joint import JointMethod


@register
class Electra(JointMethod):
    name = "electra"
    main_class = ElectraForPreTraining
    selected_only = False  # RTD loss over every real token
    supports_corrective_lm = True
    supports_unshared_embeddings = True

    def joint_module(self, generator: ElectraForMaskedLM, main: ElectraForPreTraining) -> JointElectra:
        gen = self.config.generator
        return JointElectra(generator, main, self.tokens.special_ids, gen.gen_weight, gen.disc_weight, self.selected_only,
                            shared_embeddings=gen.share_embeddings)

    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        module = super().build_model(ds_config)
        module.corrective_lm = corrective_lm_head(module.main, self.config.model, ds_config)  # None unless model.corrective_lm
        return module

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """As JointMethod's, plus corrective_lm/ (an ElectraForMaskedLM of the discriminator's encoder
        and the CLM head) with model.corrective_lm."""
        exports = super().exports(module)
        head = getattr(module, "corrective_lm", None)
        if head is not None:
            exports["corrective_lm"] = masked_lm_view(module.main, head)
        return exports

    def main_head_flops(self, config: ElectraConfig, seq_len: int, masked: float) -> float:
        clm = mlm_head_flops(config, seq_len) if self.config.model.corrective_lm else 0  # CLM head at every position
        return rtd_head_flops(config, seq_len) + clm
