"""BERT-style masked-LM on the main model's sizes (the seed papers' MLM baseline), and the shared
code of every method that trains one Electra masked-LM on its own (`aux-mlm` subclasses it).

Corruption rates of `mlm` are BERT's and fixed: of the `masking.mask_prob` selected positions, 80%
become [MASK], 10% a random non-special token, 10% stay as they are. The loss is cross-entropy at
the selected positions only."""
from __future__ import annotations

from typing import Any

import torch
from transformers import ElectraConfig, ElectraForMaskedLM

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, training_flops
from ..models.encoder import build_model, electra_config
from ..models.pretraining import MaskedLanguageModel
from ..metrics.pairs import Metrics
from .base import Method, StepContext, register

BERT_MASK_TOKEN_PROB = 0.8
BERT_RANDOM_TOKEN_PROB = 0.1


@register
class MaskedLM(Method):
    name = "mlm"
    sample_indexed = True  # all its draws are the masking's

    def sizes(self) -> dict[str, int]:
        return self.config.model.sizes()

    def corruption_rates(self) -> tuple[float, float]:
        """(mask_token_prob, random_token_prob) of the selected positions."""
        return BERT_MASK_TOKEN_PROB, BERT_RANDOM_TOKEN_PROB

    def hf_config(self) -> ElectraConfig:
        return electra_config(self.sizes(), self.config.model, self.tokens.vocab_size, self.tokens.pad_id)

    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        return MaskedLanguageModel(build_model(ElectraForMaskedLM, self.hf_config(), ds_config, self.config.model.attn_implementation))

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {"": module.mlm}

    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, torch.Tensor], Metrics]:
        selected, masked = self.select_and_corrupt(batch, ctx, *self.corruption_rates())
        inputs = {"input_ids": masked, "attention_mask": batch["attention_mask"], "selected": selected,
                  "targets": batch["input_ids"][selected]}
        return inputs, {}

    def flops_per_sequence(self, seq_len: int) -> float:
        config = self.hf_config()
        return training_flops(encoder_forward_flops(config, seq_len) + mlm_head_flops(config, seq_len * self.config.masking.mask_prob))
