"""Fast-ELECTRA (Dong et al., ICLR 2024): replacements from a frozen auxiliary masked-LM, sampled at
a temperature that anneals from T0 to 1 over training."""
from __future__ import annotations

from typing import Any

import torch
from transformers import ElectraForPreTraining

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, rtd_head_flops, training_flops
from ..errors import UserError
from ..models.aux import FrozenAux, load_frozen_aux
from ..models.corrective_lm import corrective_lm_head, masked_lm_view
from ..models.encoder import build_model
from ..models.pretraining import ReplacedTokenDetection
from ..metrics.pairs import Metrics, ratio
from .base import Method, StepContext, register
from .curriculum import temperature


def replacement_labels(original: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """Replaced means different from the original: a sampled token equal to it counts as original."""
    return corrupted != original


@register
class FastElectra(Method):
    name = "fast"
    supports_corrective_lm = True
    aux: FrozenAux

    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        model = self.config.model
        discriminator = build_model(ElectraForPreTraining, self.main_config(), ds_config, model.attn_implementation)
        return ReplacedTokenDetection(discriminator, corrective_lm_head(discriminator, model, ds_config))

    def setup(self) -> None:
        if not self.config.aux.path:
            raise UserError("method fast needs an auxiliary masked-LM (aux.path is empty)", "train one with method aux-mlm and pass aux.path=<run>/hf, or any local HF masked-LM directory")
        self.aux = load_frozen_aux(self.config.aux.path, self.tokens.vocab_size, self.tokens.fingerprint, self.config.aux.dtype, self.device)

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        return {"aux": self.aux.model}

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """The discriminator; with model.corrective_lm also corrective_lm/: an ElectraForMaskedLM of the
        same encoder and the CLM head (Hugging Face's ElectraForPreTraining has no vocabulary head)."""
        if module.corrective_lm is None:
            return {"": module.discriminator}
        return {"": module.discriminator, "corrective_lm": masked_lm_view(module.discriminator, module.corrective_lm)}

    def temperature(self, progress: float) -> float:
        return temperature(progress, self.config.curriculum.t0, self.config.curriculum.tau)

    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, torch.Tensor], Metrics]:
        original, attention_mask = batch["input_ids"], batch["attention_mask"]
        masking = self.config.masking
        selected, masked = self.select_and_corrupt(batch, ctx, masking.mask_token_prob, masking.random_token_prob)
        sampled, aux_argmax = self.aux.propose(masked, attention_mask, selected, self.temperature(ctx.progress),
                                               ctx.generator, self.tokens.special_ids)
        corrupted = original.clone()
        corrupted[selected] = sampled
        inputs = {"input_ids": corrupted, "attention_mask": attention_mask,
                  "is_replaced": replacement_labels(original, corrupted)}
        if self.config.model.corrective_lm:
            inputs["original_ids"] = original
        return inputs, {"aux_acc": ratio((aux_argmax == original[selected]).sum(), selected.sum())}

    def logged_values(self, ctx: StepContext) -> dict[str, float]:
        return {"temperature": self.temperature(ctx.progress)}

    def main_flops_per_sequence(self, seq_len: int) -> float:
        """The main model's training step alone (no aux): the floor of Fast's step."""
        main = self.main_config()
        main_forward = encoder_forward_flops(main, seq_len) + rtd_head_flops(main, seq_len)
        if self.config.model.corrective_lm:
            main_forward += mlm_head_flops(main, seq_len)  # the CLM head at every position
        return training_flops(main_forward)

    def flops_per_sequence(self, seq_len: int) -> float:
        aux = self.aux.model.config
        masked = seq_len * self.config.masking.mask_prob
        aux_forward = encoder_forward_flops(aux, seq_len) + mlm_head_flops(aux, masked)
        return self.main_flops_per_sequence(seq_len) + aux_forward

