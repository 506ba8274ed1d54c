"""The "All-Tokens MLM" ablation (Clark et al. 2020, section 3.2): the input is corrupted with
generator samples as in `electra`; the main model (an ElectraForMaskedLM of the main sizes) predicts
the identity of every real token, with ELECTRA's copy mechanism
p(x_t) = D(x_t)·1[x_t = input_t] + (1 − D(x_t))·p_mlm(x_t), D a sigmoid gate on the main model's
hidden states. loss = generator.gen_weight * L_MLM(generator) + 1 * L_all-tokens(main)."""
from __future__ import annotations

from transformers import ElectraConfig, ElectraForMaskedLM

from ..accounting.flops import mlm_head_flops
from ..models.pretraining import JointAllTokensMLM
from .base import register
from .joint import JointMethod


@register
class AllTokensMLM(JointMethod):
    name = "all-tokens-mlm"
    main_class = ElectraForMaskedLM

    def joint_module(self, generator: ElectraForMaskedLM, main: ElectraForMaskedLM) -> JointAllTokensMLM:
        return JointAllTokensMLM(generator, main, self.tokens.special_ids, self.config.generator.gen_weight, 1.0)

    def main_head_flops(self, config: ElectraConfig, seq_len: int, masked: float) -> float:
        return mlm_head_flops(config, seq_len) + 2 * config.hidden_size * seq_len  # vocabulary head + copy gate
