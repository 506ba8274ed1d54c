"""Fast-ELECTRA (Dong et al., ICLR 2024): replacements from a frozen auxiliary masked-LM, sampled at
a temperature that falls to 1 over training (the curriculum: methods/curriculum.py)."""
from __future__ import annotations

from typing import Any

import torch
from transformers import ElectraConfig, ElectraForPreTraining

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, rtd_head_flops, training_flops
from ..errors import UserError
from ..models.aux import FrozenAux, load_frozen_aux
from ..models.corrective_lm import corrective_lm_head, masked_lm_view
from ..models.encoder import build_model
from ..models.sampling import sample_and_argmax
from ..models.pretraining import ReplacedTokenDetection
from ..metrics.pairs import Metrics, ratio
from .base import Method, StepContext, register
from .curriculum import Curriculum


def replacement_labels(original: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """Replaced means different from the original: a sampled token equal to it counts as original."""
    return corrupted != original


@register
class FastElectra(Method):
    name = "fast"
    supports_corrective_lm = True
    aux: FrozenAux

    def __init__(self, config, tokens, device):
        super().__init__(config, tokens, device)
        self.curriculum = Curriculum(config.curriculum, tokens.unigram_entropy)  # checks the curriculum keys before the aux loads

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

    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, torch.Tensor], Metrics]:
        original, attention_mask = batch["input_ids"], batch["attention_mask"]
        masking = self.config.masking
        selected, masked = self.select_and_corrupt(batch, ctx, masking.mask_token_prob, masking.random_token_prob)
        # T from the same logits the sampler draws from (`target` reads the original tokens there):
        # no second aux forward, and nothing of the main model, so replacements stay precomputable.
        logits = self.aux.logits(masked, attention_mask, selected)
        temperature, curriculum_metrics = self.curriculum.choose(logits, original[selected], ctx.progress, self.tokens.special_ids)
        sampled, aux_argmax = sample_and_argmax(logits, temperature, ctx.generator, self.tokens.special_ids)
        del logits
        corrupted = original.clone()
        corrupted[selected] = sampled
        inputs = {"input_ids": corrupted, "attention_mask": attention_mask,
                  "is_replaced": replacement_labels(original, corrupted)}
        if self.config.model.corrective_lm:
            inputs["original_ids"] = original
        return inputs, {"aux_acc": ratio((aux_argmax == original[selected]).sum(), selected.sum()), **curriculum_metrics}

    def logged_values(self, ctx: StepContext) -> dict[str, float]:
        """`exp`: the temperature at the window's last step (`target` logs its chosen T as a metric,
        averaged over the window's micro-batches)."""
        scheduled = self.curriculum.scheduled(ctx.progress)
        return {} if scheduled is None else {"temperature": scheduled}

    def main_flops_per_sequence(self, seq_len: int) -> float:
        """The main model's training step alone (no aux): the floor of Fast's step."""
        main = self.main_config()
        main_forward = encoder_forward_flops(main, seq_len) + rtd_head_flops(main, seq_len)
        if self.config.model.corrective_lm:
            main_forward += mlm_head_flops(main, seq_len)  # the CLM head at every position
        return training_flops(main_forward)

    def aux_flops_per_sequence(self, seq_len: int, aux: ElectraConfig | None = None) -> float:
        """The frozen aux's forward (encoder, MLM head at the masked positions): the loaded aux's, or
        that of an aux of config `aux` (one not trained yet, sized as aux-mlm will train it)."""
        aux = aux if aux is not None else self.aux.model.config
        return encoder_forward_flops(aux, seq_len) + mlm_head_flops(aux, seq_len * self.config.masking.mask_prob)

    def flops_per_sequence(self, seq_len: int) -> float:
        return self.main_flops_per_sequence(seq_len) + self.aux_flops_per_sequence(seq_len)

