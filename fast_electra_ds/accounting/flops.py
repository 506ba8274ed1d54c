"""Analytic FLOPs of Electra-style encoders, with the usual counts (a multiply-add is 2 FLOPs):
per token and layer, forward 24h² + 4sh for a 4h feed-forward (QKV/O projections 8h², feed-forward
4h·ff, attention scores and mixing 4sh); backward = 2 × forward. Mirrors the shape of
google-research/electra's flops_computation.py, simplified to the terms that matter."""
from __future__ import annotations

from transformers import PretrainedConfig


def encoder_forward_flops(config: PretrainedConfig, seq_len: int) -> float:
    """Forward FLOPs of the embeddings projection and transformer layers for one sequence."""
    h, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token_layer = 8 * h * h + 4 * h * ff + 4 * seq_len * h
    embedding_projection = 2 * config.embedding_size * h if config.embedding_size != h else 0
    return seq_len * (layers * per_token_layer + embedding_projection)


def rtd_head_flops(config: PretrainedConfig, positions: float) -> float:
    """Electra's discriminator head: dense h×h then h×1."""
    h = config.hidden_size
    return positions * (2 * h * h + 2 * h)


def mlm_head_flops(config: PretrainedConfig, positions: float) -> float:
    """Electra's generator head: dense h×e then the e×V vocabulary projection."""
    e, h = config.embedding_size, config.hidden_size
    return positions * (2 * h * e + 2 * e * config.vocab_size)


def training_flops(forward: float) -> float:
    return 3 * forward
