"""The "Replace MLM" ablation (Clark et al. 2020, section 3.2): masked-LM where the selected positions
hold samples of a jointly trained generator instead of [MASK]. The main model (an ElectraForMaskedLM
of the main sizes) predicts the original token at the selected positions.
loss = generator.gen_weight * L_MLM(generator) + 1 * L_MLM(main); main metrics: main_mlm_*."""
from __future__ import annotations

from transformers import ElectraConfig, ElectraForMaskedLM

from ..accounting.flops import mlm_head_flops
from ..models.pretraining import JointReplaceMLM
from .base import register
from .joint import JointMethod


@register
class ReplaceMLM(JointMethod):
    name = "replace-mlm"
    main_class = ElectraForMaskedLM

    def joint_module(self, generator: ElectraForMaskedLM, main: ElectraForMaskedLM) -> JointReplaceMLM:
        return JointReplaceMLM(generator, main, self.tokens.special_ids, self.config.generator.gen_weight, 1.0)

    def main_head_flops(self, config: ElectraConfig, seq_len: int, masked: float) -> float:
        return mlm_head_flops(config, masked)
