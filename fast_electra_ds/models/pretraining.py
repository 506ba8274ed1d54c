"""The trainable modules that go into the DeepSpeed engine. Each wraps Hugging Face models and
returns (loss, metrics), so the engine's forward is the whole objective."""
from __future__ import annotations

import torch
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from ..objectives import Metrics, mlm_loss, rtd_loss


class ReplacedTokenDetection(torch.nn.Module):
    """The discriminator and its RTD loss over all real tokens."""

    def __init__(self, discriminator: ElectraForPreTraining):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, is_replaced: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        logits = self.discriminator(input_ids=input_ids, attention_mask=attention_mask).logits
        loss, metrics = rtd_loss(logits, is_replaced, attention_mask)
        return loss, {"loss": metrics["rtd_loss"], **metrics}


def masked_lm_logits(model: ElectraForMaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     selected: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits at the selected positions only [M, V]: the head's cost scales with the
    number of predictions, not the sequence length."""
    hidden = model.electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return model.generator_lm_head(model.generator_predictions(hidden[selected]))


class MaskedLanguageModel(torch.nn.Module):
    """An Electra masked-LM trained on its own (stage 1 of Fast-ELECTRA: the auxiliary model)."""

    def __init__(self, mlm: ElectraForMaskedLM):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        loss, metrics = mlm_loss(masked_lm_logits(self.mlm, input_ids, attention_mask, selected), targets)
        return loss, {"loss": metrics["mlm_loss"], **metrics}
