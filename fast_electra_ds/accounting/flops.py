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


# --- size-based forms (no Hugging Face config needed), shared with benchmarks/ ------------------------

def layer_forward_flops_per_token(hidden: int, intermediate: int, seq_len: int) -> float:
    """One transformer layer, one token, forward: QKV and output projections 8h², feed-forward
    4·h·ff (= 16h² for ff = 4h, so 24h² in all), attention scores and mixing 4·s·h."""
    return 8 * hidden * hidden + 4 * hidden * intermediate + 4 * seq_len * hidden


def vocab_head_flops(hidden: int, vocab_size: int, positions: float) -> float:
    """A vocabulary projection h×V applied at `positions` tokens: 2·V·h each."""
    return positions * 2 * vocab_size * hidden


def encoder_flops(layers: int, hidden: int, intermediate: int, seq_len: int) -> float:
    """Forward FLOPs of `layers` transformer layers over one sequence of `seq_len` tokens."""
    return seq_len * layers * layer_forward_flops_per_token(hidden, intermediate, seq_len)


def paper_flops(setting, aux_head_positions: str = "all") -> dict[str, float]:
    """FLOPs per sequence as the Fast-ELECTRA poster counts them (its tables are reproduced exactly by
    this): encoder layers 24h² + 4sh per token and layer, a vocabulary head 2·V·h per position, and
    nothing else (no embeddings, no RTD head, no LayerNorm/softmax); training = 3 × forward.

    main  = 3 · (main encoder + vocabulary head over all s positions)   (METRO's corrective-LM head)
    aux   = aux encoder + MLM head over all s positions, × 3 if trained (Original), × 1 if frozen (Fast)
    `aux_head_positions="masked"` applies the frozen aux's head at mask_prob·s positions only (what
    this project's `fast` method does). `setting` is an accounting.paper.PaperSetting.
    Returns forward and training FLOPs of each part and the Original / Fast totals."""
    s = setting.seq_len
    main_fwd = encoder_flops(setting.main_layers, setting.main_hidden, setting.main_intermediate, s)
    if setting.corrective_lm:
        main_fwd += vocab_head_flops(setting.main_hidden, setting.vocab_size, s)
    aux_encoder = encoder_flops(setting.aux_layers, setting.aux_hidden, setting.aux_intermediate, s)
    aux_fwd_all = aux_encoder + vocab_head_flops(setting.aux_hidden, setting.vocab_size, s)
    masked = setting.mask_prob * s
    aux_fwd_masked = aux_encoder + vocab_head_flops(setting.aux_hidden, setting.vocab_size, masked)
    fast_aux = aux_fwd_masked if aux_head_positions == "masked" else aux_fwd_all
    main = training_flops(main_fwd)
    original_aux = training_flops(aux_fwd_all)
    return {"main": main, "original_aux": original_aux, "original_total": main + original_aux,
            "fast_aux": fast_aux, "fast_total": main + fast_aux,
            "fast_masked_aux": aux_fwd_masked, "fast_masked_total": main + aux_fwd_masked}
