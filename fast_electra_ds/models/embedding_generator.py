"""The embedding generator ("Emb-Gen", Kang et al., KAIST, Section 2 "Generator Replacement" and
Table 1): no generator network; a selected token is replaced by one of its k nearest neighbours (L2)
in the discriminator's own input word-embedding table, and an optional loss pulls the original and
replaced embeddings together. This module holds the search, the ZeRO-3-aware access to the table and
the engine module (discriminator + pull loss)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import ElectraForPreTraining

from ..errors import UserError
from ..metrics.pairs import Metrics, ratio
from .objectives import rtd_loss

# Distance blocks hold at most BLOCK_ELEMENTS float32 scores (64 MiB): a few queries (one micro-batch's
# selected ids) are scored against the whole vocabulary at once, a whole-vocabulary search (64k x 64k)
# in [QUERY_BLOCK, >= VOCAB_BLOCK] blocks, so no [V, V] matrix is ever held.
QUERY_BLOCK = 2048
VOCAB_BLOCK = 8192
BLOCK_ELEMENTS = 16 * 2**20


@torch.no_grad()
def nearest_neighbours(table: torch.Tensor, query_ids: torch.Tensor, k: int, excluded_ids: Sequence[int] = (),
                       query_block: int = QUERY_BLOCK, vocab_block: int | None = None) -> torch.Tensor:
    """Ids [U, k] of the k rows of `table` [V, E] nearest by L2 distance to the rows `query_ids` [U],
    nearest first. The query token itself and `excluded_ids` (special tokens) are never returned;
    another id whose row equals the query's (a duplicate) is a neighbour at distance 0. Ties are broken
    by torch.topk: arbitrary among exact ties (duplicate rows), but the same for the same table and queries
    (every rank searching the same gathered table agrees).

    Blocked over queries and vocabulary (block width `vocab_block`, by default as wide as BLOCK_ELEMENTS
    allows) with a running top-k: each block's own top-k is merged into the best so far, so the global
    k nearest are found without holding a [U, V] (let alone [V, V]) matrix. Ranking uses ||w||² − 2·q·w,
    which orders rows as ||q − w||² does (||q||² is constant per query), by one addmm per block in float32."""
    vocab_size = table.shape[0]
    table = table.detach().float()
    squared_norms = torch.einsum("ve,ve->v", table, table)  # (not pow(2).sum(): an 8M-element pow is slow on CPU)
    excluded = torch.tensor(sorted(set(excluded_ids)), dtype=torch.long, device=table.device)
    inf = float("inf")
    results = []
    for q_start in range(0, len(query_ids), query_block):
        queries = query_ids[q_start:q_start + query_block]
        width = vocab_block or max(VOCAB_BLOCK, BLOCK_ELEMENTS // len(queries))
        rows = torch.arange(len(queries), device=table.device)
        best_scores = torch.empty(len(queries), 0, device=table.device)
        best_ids = torch.empty(len(queries), 0, dtype=torch.long, device=table.device)
        for v_start in range(0, vocab_size, width):
            v_end = min(v_start + width, vocab_size)
            scores = torch.addmm(squared_norms[v_start:v_end], table[queries], table[v_start:v_end].T, alpha=-2)
            in_block = excluded[(excluded >= v_start) & (excluded < v_end)]
            scores.index_fill_(1, in_block - v_start, inf)
            own = (queries >= v_start) & (queries < v_end)
            scores[rows[own], queries[own] - v_start] = inf
            scores, ids = scores.topk(min(k, v_end - v_start), dim=1, largest=False, sorted=False)
            scores, ids = torch.cat([best_scores, scores], dim=1), torch.cat([best_ids, ids + v_start], dim=1)
            best_scores, picked = scores.topk(min(k, scores.shape[1]), dim=1, largest=False, sorted=True)
            best_ids = ids.gather(1, picked)
        results.append(best_ids)
    return torch.cat(results) if results else torch.empty(0, k, dtype=torch.long, device=table.device)


def check_neighbour_count(k: int, vocab_size: int, excluded_ids: Sequence[int]) -> None:
    candidates = vocab_size - len(set(excluded_ids)) - 1  # minus the token itself
    if not 1 <= k <= candidates:
        raise UserError(f"emb_gen.k is {k}, but a token has {candidates} candidate neighbours (vocabulary {vocab_size} minus special tokens and itself)",
                        f"set emb_gen.k between 1 and {candidates}")


@contextmanager
def full_table(weight: torch.nn.Parameter) -> Iterator[torch.Tensor]:
    """The whole embedding table, read-only. Under ZeRO-3 the parameter is partitioned: it is gathered
    on every rank (a collective, so every rank must enter together) and partitioned again on exit;
    otherwise it is the parameter itself. Use the tensor only inside the `with`."""
    import deepspeed

    with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
        yield weight.detach()


def load_embedding_table(path: str, vocab_size: int, embedding_size: int, fingerprint: str) -> torch.Tensor:
    """The input word-embedding table [V, E] (float32) of the Hugging Face model in the local
    directory `path` (the paper's "Emb-Gen (Pre-trained)": embeddings of a trained ELECTRA-Small)."""
    from transformers import AutoModel

    from ..data.tokenizer import load_tokenizer, tokenizer_fingerprint

    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise UserError(f"emb_gen.embeddings_from {path} has no config.json", "pass a local Hugging Face model directory, e.g. the hf/ export of an electra run")
    if any((directory / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        if tokenizer_fingerprint(load_tokenizer(path)) != fingerprint:
            raise UserError(f"the tokenizer of emb_gen.embeddings_from ({path}) differs from the data's tokenizer", "take embeddings from a model trained with the data's tokenizer")
    try:
        model = AutoModel.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a model from emb_gen.embeddings_from {path} ({str(err).splitlines()[0]})", "pass a local Hugging Face model directory") from None
    table = model.get_input_embeddings().weight.detach().clone()
    if tuple(table.shape) != (vocab_size, embedding_size):
        raise UserError(f"emb_gen.embeddings_from {path} has a {table.shape[0]} x {table.shape[1]} word-embedding table, the main model needs {vocab_size} x {embedding_size} (vocabulary x model.embedding_size)",
                        "take embeddings from a model with the same tokenizer and embedding size")
    return table


def copy_into_embeddings(weight: torch.nn.Parameter, table: torch.Tensor) -> None:
    """Overwrite the (possibly ZeRO-3 partitioned) embedding parameter with `table`: gathered, written
    (every rank loaded the same table) and re-partitioned from rank 0's copy (modifier_rank=0), so every
    rank ends up with its shard of `table`."""
    import deepspeed

    with torch.no_grad(), deepspeed.zero.GatheredParameters([weight], modifier_rank=0):
        weight.copy_(table.to(device=weight.device, dtype=weight.dtype))


def embedding_pull_loss(embeddings: torch.nn.Embedding, original_ids: torch.Tensor, replacement_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over pairs of the squared L2 distance between the original and the replacement token's
    embedding (Kang et al.: "additional loss term which minimizes the L2 distance between the original
    and replaced token embedding vectors ... to offer stability"; squared, so its gradient is defined
    for duplicates too), and the pair count. Calls the embedding module, not its weight, so under
    ZeRO-3 the engine gathers the table and the gradient reaches both rows."""
    vectors = embeddings(torch.cat([original_ids, replacement_ids])).float()
    original, replacement = vectors.split(len(original_ids))
    return (original - replacement).pow(2).sum(), torch.tensor(len(original_ids), device=vectors.device)


class EmbeddingGeneratorRTD(torch.nn.Module):
    """The engine module of `emb-gen`: the discriminator with its RTD loss over all real tokens, plus
    pull_weight x the mean squared L2 distance between the original and replacement embeddings at the
    replaced positions (0 disables it)."""

    def __init__(self, discriminator: ElectraForPreTraining, pull_weight: float):
        super().__init__()
        self.discriminator = discriminator
        self.pull_weight = pull_weight

    @property
    def word_embeddings(self) -> torch.nn.Embedding:
        return self.discriminator.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, is_replaced: torch.Tensor,
                original_ids: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        logits = self.discriminator(input_ids=input_ids, attention_mask=attention_mask).logits
        loss, metrics = rtd_loss(logits, is_replaced, attention_mask, input_ids=input_ids, vocab_size=self.discriminator.config.vocab_size)
        if self.pull_weight > 0:
            pull_sum, pairs = embedding_pull_loss(self.word_embeddings, original_ids[is_replaced], input_ids[is_replaced])
            loss = loss + self.pull_weight * pull_sum / pairs.clamp(min=1)
            metrics["emb_pull_loss"] = ratio(pull_sum, pairs)
        return loss, {"loss": ratio(loss, 1), **metrics}
