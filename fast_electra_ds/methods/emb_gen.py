"""Emb-Gen (Kang et al., KAIST, Section 2 "Generator Replacement", Table 1 rows Emb-Gen and Emb-Gen
(Pre-trained)): no generator network. Each selected token is replaced by one of its k nearest
neighbours (L2) in the discriminator's own input word-embedding table, chosen uniformly; the
discriminator detects the replaced tokens; an optional loss pulls the original and replacement
embeddings together.

Masking: 15% of the real tokens are selected as in ELECTRA, and EVERY selected token is replaced. The
ELECTRA rule that keeps 15% of the selected tokens concerns the generator's [MASK]ed input; there is
no generator here, and the paper replaces "the 15% of the tokens with top-k similar words" so that
"we can maintain the ratio of replaced tokens" (masking.mask_token_prob / random_token_prob are not
used). A replacement is never the token itself, so every selected position is labelled replaced
(the rule "replaced = differs from the original" is kept all the same).

The search runs outside the engine, in prepare_batch, without gradients; under ZeRO-3 the partitioned
table is gathered whole on every rank for it (read-only). Randomness comes from the trainer's
per-micro-batch ctx.generator, so a resumed run draws the same replacements."""
from __future__ import annotations

from typing import Any

import torch
from transformers import ElectraForPreTraining

from ..accounting.flops import encoder_forward_flops, rtd_head_flops, training_flops
from ..errors import UserError
from ..models.embedding_generator import (EmbeddingGeneratorRTD, check_neighbour_count, copy_into_embeddings, full_table,
                                          load_embedding_table, nearest_neighbours)
from ..models.encoder import build_model
from ..metrics.pairs import Metrics
from .base import Method, StepContext, register
from .fast import replacement_labels
from .masking import maskable_positions, select_positions

SEARCH_TABLES = ("current", "frozen")


@register
class EmbGen(Method):
    name = "emb-gen"

    def __init__(self, config, tokens, device):
        super().__init__(config, tokens, device)
        emb = config.emb_gen
        check_neighbour_count(emb.k, tokens.vocab_size, tokens.special_ids)
        if emb.refresh_every < 1:
            raise UserError(f"emb_gen.refresh_every is {emb.refresh_every}", "use 1 (search every step) or more (reuse a whole-vocabulary neighbour table)")
        if emb.pull_weight < 0:
            raise UserError(f"emb_gen.pull_weight is {emb.pull_weight}", "use 0 (off) or a positive weight")
        if emb.search_table not in SEARCH_TABLES:
            raise UserError(f"unknown emb_gen.search_table {emb.search_table!r}", f"use one of {', '.join(SEARCH_TABLES)}")
        if emb.search_table == "frozen" and not emb.embeddings_from:
            raise UserError("emb_gen.search_table=frozen needs a pre-trained table", "set emb_gen.embeddings_from=<HF model directory>, or use search_table=current")
        self.module: EmbeddingGeneratorRTD | None = None
        self.pretrained: torch.Tensor | None = None  # [V, E] from embeddings_from, loaded in setup()
        self.table: torch.Tensor | None = None  # [V, k] neighbours of every id (refresh_every > 1, or frozen)
        self.table_step: int | None = None  # the step whose table it was computed from (-1: frozen)
        self.rank_sequences_per_step: int | None = None  # micro-batch x accumulation, known under DeepSpeed

    # --- built once -------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the pre-trained table (trainer only: export and benchmarks need no copy of it). With
        search_table=frozen its neighbours are computed here, once, identically on every rank."""
        emb = self.config.emb_gen
        if emb.embeddings_from:
            self.pretrained = load_embedding_table(emb.embeddings_from, self.tokens.vocab_size,
                                                   self.main_config().embedding_size, self.tokens.fingerprint)
            if emb.search_table == "frozen":
                table = self.pretrained.to(self.device)
                self.table = nearest_neighbours(table, torch.arange(len(table), device=self.device), emb.k, self.tokens.special_ids)
                self.table_step = -1

    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        if ds_config:
            self.rank_sequences_per_step = ds_config["train_micro_batch_size_per_gpu"] * ds_config.get("gradient_accumulation_steps", 1)
        discriminator = build_model(ElectraForPreTraining, self.main_config(), ds_config, self.config.model.attn_implementation)
        if self.pretrained is not None:
            copy_into_embeddings(discriminator.get_input_embeddings().weight, self.pretrained)
        self.module = EmbeddingGeneratorRTD(discriminator, self.config.emb_gen.pull_weight)
        return self.module

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {"": module.discriminator}

    # --- per micro-batch ----------------------------------------------------------------------
    def neighbours(self, original: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """The k nearest neighbours [M, k] of each original token [M]."""
        emb = self.config.emb_gen
        if emb.search_table == "current" and emb.refresh_every == 1:
            unique, inverse = torch.unique(original, return_inverse=True)  # each distinct id searched once
            with full_table(self.module.word_embeddings.weight) as table:
                return nearest_neighbours(table, unique, emb.k, self.tokens.special_ids)[inverse]
        if emb.search_table == "current" and (self.table is None or (ctx.step % emb.refresh_every == 0 and self.table_step != ctx.step)):
            with full_table(self.module.word_embeddings.weight) as table:
                self.table = nearest_neighbours(table, torch.arange(len(table), device=table.device), emb.k, self.tokens.special_ids)
            self.table_step = ctx.step
        return self.table[original]

    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, torch.Tensor], Metrics]:
        original, attention_mask = batch["input_ids"], batch["attention_mask"]
        maskable = maskable_positions(original, attention_mask, self.tokens.special_ids)
        selected = select_positions(maskable, self.config.masking.mask_prob, ctx.generator)
        candidates = self.neighbours(original[selected], ctx).to(original.device)
        choice = torch.randint(candidates.shape[1], (len(candidates), 1), generator=ctx.generator, device=original.device)
        corrupted = original.clone()
        corrupted[selected] = candidates.gather(1, choice).squeeze(1)
        inputs = {"input_ids": corrupted, "attention_mask": attention_mask,
                  "is_replaced": replacement_labels(original, corrupted), "original_ids": original}
        return inputs, {}

    # --- resumable state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A whole-vocabulary table built from the training embeddings (refresh_every > 1) cannot be
        rebuilt on resume (the embeddings it came from are gone), so it is saved."""
        emb = self.config.emb_gen
        if emb.search_table == "current" and emb.refresh_every > 1 and self.table is not None:
            return {"neighbour_table": self.table.tolist(), "table_step": self.table_step}
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "neighbour_table" in state:
            self.table = torch.tensor(state["neighbour_table"], dtype=torch.long, device=self.device)
            self.table_step = state["table_step"]

    def flops_per_sequence(self, seq_len: int) -> float:
        """Discriminator training FLOPs, plus the search: each selected position's token against the whole
        vocabulary, 2·V·E per position (refresh_every = 1; repeated ids are searched once, so this is an
        upper bound), or the whole-vocabulary table, 2·V²·E, once per refresh_every steps, spread
        over the sequences of a step on one rank (every rank builds it)."""
        main = self.main_config()
        discriminator = training_flops(encoder_forward_flops(main, seq_len) + rtd_head_flops(main, seq_len))
        emb = self.config.emb_gen
        vocab, dim = main.vocab_size, main.embedding_size
        if emb.search_table == "frozen":
            return discriminator
        if emb.refresh_every == 1 or not self.rank_sequences_per_step:
            return discriminator + seq_len * self.config.masking.mask_prob * 2 * vocab * dim
        return discriminator + 2 * vocab * vocab * dim / (emb.refresh_every * self.rank_sequences_per_step)
