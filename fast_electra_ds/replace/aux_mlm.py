"""Stage 1 of Fast-ELECTRA: train the auxiliary masked-LM once, on the same data and machinery."""
from __future__ import annotations

from typing import Any

import torch
from transformers import ElectraForMaskedLM

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, training_flops
from ..models.main import build_model, electra_config, scaled_sizes
from ..models.pretraining import MaskedLanguageModel
from ..objectives import Metrics
from .base import Method, StepContext, register


@register
class AuxMaskedLM(Method):
    name = "aux-mlm"

    def hf_config(self):
        aux = self.config.aux
        sizes = scaled_sizes(self.config.model.sizes(), aux.depth_fraction, aux.hidden_fraction)
        return electra_config(sizes, self.config.model, self.tokens.vocab_size, self.tokens.pad_id)

    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        return MaskedLanguageModel(build_model(ElectraForMaskedLM, self.hf_config(), ds_config, self.config.model.attn_implementation))

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {"": module.mlm}

    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, torch.Tensor], Metrics]:
        masking = self.config.masking
        selected, masked = self.select_and_corrupt(batch, ctx, masking.mask_token_prob, masking.random_token_prob)
        inputs = {"input_ids": masked, "attention_mask": batch["attention_mask"], "selected": selected,
                  "targets": batch["input_ids"][selected]}
        return inputs, {}

    def flops_per_sequence(self, seq_len: int) -> float:
        config = self.hf_config()
        return training_flops(encoder_forward_flops(config, seq_len) + mlm_head_flops(config, seq_len * self.config.masking.mask_prob))
