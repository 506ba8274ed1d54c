"""Fast-ELECTRA (Dong et al., ICLR 2024): replacements from a frozen auxiliary masked-LM, sampled at
a temperature that falls to 1 over training (the curriculum: methods/curriculum.py). With
`aux.replacements=DIR` they are read from a pass made ahead of time (data/replacements.py): no aux
is loaded and no sampler runs."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import ElectraConfig, ElectraForPreTraining

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, rtd_head_flops, training_flops
from ..data.replacements import ReplacementStore, model_fingerprint, planned_manifest
from ..errors import UserError
from ..models.aux import FrozenAux, load_frozen_aux, pick_dtype
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
    sample_indexed = True
    aux: FrozenAux | None = None
    store: ReplacementStore | None = None

    def __init__(self, config, tokens, device):
        super().__init__(config, tokens, device)
        self.curriculum = Curriculum(config.curriculum, tokens.unigram_entropy)  # checks the curriculum keys before the aux loads

    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        model = self.config.model
        if self.store is not None and ds_config is not None:  # before the engine starts: a pass that is not this run's is refused
            global_batch, micro = ds_config["train_batch_size"], ds_config["train_micro_batch_size_per_gpu"]
            ranks = global_batch // (micro * ds_config.get("gradient_accumulation_steps", 1))
            self.store.check(self.planned(global_batch, micro, ranks), self.config.train.steps * global_batch)
        discriminator = build_model(ElectraForPreTraining, self.main_config(), ds_config, model.attn_implementation)
        return ReplacedTokenDetection(discriminator, corrective_lm_head(discriminator, model, ds_config))

    def setup(self) -> None:
        aux = self.config.aux
        if aux.replacements:
            if self.config.data.corruption_rng != "sample":
                raise UserError("aux.replacements needs data.corruption_rng=sample (the pass made them per sample)", "add data.corruption_rng=sample, as the pass had it")
            self.store = ReplacementStore(aux.replacements)
            return
        if not aux.path:
            raise UserError("method fast needs an auxiliary masked-LM (aux.path is empty)", "train one with method aux-mlm and pass aux.path=<run>/hf, or any local HF masked-LM directory, or aux.replacements=<a pass of fast-electra replacements>")
        self.aux = load_frozen_aux(aux.path, self.tokens.vocab_size, self.tokens.fingerprint, aux.dtype, self.device)

    def planned(self, global_batch: int, micro_batch: int, ranks: int) -> dict[str, Any]:
        """The manifest a pass for this run has (data/replacements.py); the aux's part only where one is named."""
        aux = self.config.aux
        made_by = None if not aux.path else {"fingerprint": model_fingerprint(aux.path), "dtype": str(pick_dtype(aux.dtype, self.device)).removeprefix("torch.")}
        return planned_manifest(self.config, self.tokens.fingerprint, self.tokens.unigram_entropy, global_batch, micro_batch, ranks, made_by)

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        return {} if self.aux is None else {"aux": self.aux.model}

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """The discriminator; with model.corrective_lm also corrective_lm/: an ElectraForMaskedLM of the
        same encoder and the CLM head (Hugging Face's ElectraForPreTraining has no vocabulary head)."""
        if module.corrective_lm is None:
            return {"": module.discriminator}
        return {"": module.discriminator, "corrective_lm": masked_lm_view(module.discriminator, module.corrective_lm)}

    def propose(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, Metrics]:
        """The online path: (selected [B, L], sampled ids [M] in row-major order, the aux's argmax [M], T,
        the curriculum's metrics). `fast-electra replacements` runs exactly this."""
        original, attention_mask = batch["input_ids"], batch["attention_mask"]
        masking = self.config.masking
        draws = self.draws(batch, ctx)
        selected, masked = self.select_and_corrupt(batch, ctx, masking.mask_token_prob, masking.random_token_prob, draws)
        # T from the same logits the sampler draws from (`target` reads the original tokens there):
        # no second aux forward, and nothing of the main model, so replacements stay precomputable.
        logits = self.aux.logits(masked, attention_mask, selected)
        temperature, curriculum_metrics = self.curriculum.choose(logits, original[selected], ctx.progress, self.tokens.special_ids)
        uniform = draws.sampler_uniforms(selected, logits.shape[0])  # where ctx.generator's stream always drew them
        sampled, aux_argmax = sample_and_argmax(logits, temperature, None, self.tokens.special_ids, uniform=uniform)
        return selected, sampled, aux_argmax, temperature, curriculum_metrics

    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, torch.Tensor], Metrics]:
        original, attention_mask = batch["input_ids"], batch["attention_mask"]
        if self.store is not None:
            selected, sampled, metrics = self.read_replacements(original, ctx)
        else:
            selected, sampled, aux_argmax, _, curriculum_metrics = self.propose(batch, ctx)
            metrics = {"aux_acc": ratio((aux_argmax == original[selected]).sum(), selected.sum()), **curriculum_metrics}
        corrupted = original.clone()
        corrupted[selected] = sampled
        inputs = {"input_ids": corrupted, "attention_mask": attention_mask,
                  "is_replaced": replacement_labels(original, corrupted)}
        if self.config.model.corrective_lm:
            inputs["original_ids"] = original
        return inputs, metrics

    def read_replacements(self, original: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """The pass's (selected, sampled ids in row-major order) of this micro-batch's samples, and the
        aux metrics the pass recorded, summed as the online path sums them."""
        columns, ids, stats = self.store.lookup(ctx.positions, ctx.step)
        rows = np.repeat(np.arange(len(columns)), [len(c) for c in columns])
        selected = torch.zeros(original.shape, dtype=torch.bool)
        selected[torch.from_numpy(rows), torch.from_numpy(np.concatenate(columns))] = True
        sampled = torch.from_numpy(np.concatenate(ids))
        counts = stats["counts"].astype(np.float64)
        total, device = counts.sum(), self.device

        def value(number: float) -> torch.Tensor:
            return torch.tensor(float(number), device=device)

        metrics = {"aux_acc": ratio(value(stats["correct"].sum()), total)}
        if total:
            metrics["aux_ce"] = ratio(value((stats["ce"] * counts).sum()), total)
            if self.config.curriculum.kind == "target":
                metrics.update(temperature=ratio(value(stats["temperature"].mean()), 1),
                               aux_target_ce=ratio(value((stats["target_ce"] * counts).sum()), total))
        return selected.to(original.device), sampled.to(original.device), metrics

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
        if self.aux is None:  # replacements read from a pass: no aux forward in the step
            return self.main_flops_per_sequence(seq_len)
        return self.main_flops_per_sequence(seq_len) + self.aux_flops_per_sequence(seq_len)

