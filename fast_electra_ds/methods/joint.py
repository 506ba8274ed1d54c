"""The shared code of the methods that train a generator jointly with the main model, in one
engine module (ELECTRA and the seed paper's ablations): sizes, construction, corruption, export,
FLOPs. The sampling happens inside the engine's forward (the generator's logits are computed
there), with the trainer's per-micro-batch torch.Generator passed in the inputs as `rng`, so a
resumed run draws exactly the same replacements."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import ElectraConfig, ElectraForMaskedLM, PreTrainedModel

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, training_flops
from ..models.encoder import build_model, electra_config, scaled_sizes
from ..models.pretraining import JointGenerator
from ..metrics.pairs import Metrics
from ..errors import UserError
from .base import Method, StepContext


class JointMethod(Method):
    main_class: ClassVar[type[PreTrainedModel]]  # the main model's Hugging Face class
    supports_unshared_embeddings: ClassVar[bool] = False  # generator.share_embeddings=false

    def setup(self) -> None:
        if not self.config.generator.share_embeddings and not self.supports_unshared_embeddings:
            raise UserError(f"method {self.name} always shares the generator's embeddings (generator.share_embeddings=false)",
                            "drop generator.share_embeddings=false, or use method electra or electra-15")

    def generator_config(self) -> ElectraConfig:
        gen = self.config.generator
        sizes = scaled_sizes(self.config.model.sizes(), gen.depth_fraction, gen.hidden_fraction)
        return electra_config(sizes, self.config.model, self.tokens.vocab_size, self.tokens.pad_id)

    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        attn = self.config.model.attn_implementation
        main = build_model(self.main_class, self.main_config(), ds_config, attn)
        generator = build_model(ElectraForMaskedLM, self.generator_config(), ds_config, attn)
        return self.joint_module(generator, main)

    def joint_module(self, generator: ElectraForMaskedLM, main: PreTrainedModel) -> JointGenerator:
        raise NotImplementedError

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """The main model at the top level; the generator in generator/, a stand-alone
        ElectraForMaskedLM (its embeddings are the main model's) usable as `aux.path` of `fast`."""
        return {"": module.main, "generator": module.generator}

    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, Any], Metrics]:
        masking = self.config.masking
        selected, masked = self.select_and_corrupt(batch, ctx, masking.mask_token_prob, masking.random_token_prob)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "masked_ids": masked,
                  "selected": selected, "rng": ctx.generator}
        return inputs, {}

    def main_head_flops(self, config: ElectraConfig, seq_len: int, masked: float) -> float:
        raise NotImplementedError

    def generator_flops_per_sequence(self, seq_len: int) -> float:
        """Training FLOPs of the generator: its encoder and its MLM head at the masked positions."""
        gen = self.generator_config()
        return training_flops(encoder_forward_flops(gen, seq_len) + mlm_head_flops(gen, seq_len * self.config.masking.mask_prob))

    def main_flops_per_sequence(self, seq_len: int) -> float:
        """Training FLOPs of the main model alone (what equal-budget comparisons hold equal)."""
        main = self.main_config()
        return training_flops(encoder_forward_flops(main, seq_len) + self.main_head_flops(main, seq_len, seq_len * self.config.masking.mask_prob))

    def flops_per_sequence(self, seq_len: int) -> float:
        """Training FLOPs of both models (sampling is negligible)."""
        return self.generator_flops_per_sequence(seq_len) + self.main_flops_per_sequence(seq_len)
