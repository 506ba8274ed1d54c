"""Building the trainable Electra models so that ZeRO-3 partitions them as they are created."""
from __future__ import annotations

from typing import Any

import torch
from transformers import ElectraConfig, PreTrainedModel
from transformers.integrations import HfDeepSpeedConfig
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from ..config.run_config import ModelConfig
from ..data.unpadded import is_unpadded_mask


def electra_config(sizes: dict[str, int], model: ModelConfig, vocab_size: int, pad_id: int) -> ElectraConfig:
    return ElectraConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_id,
        max_position_embeddings=model.max_position_embeddings,
        hidden_dropout_prob=model.dropout,
        attention_probs_dropout_prob=model.dropout,
        **sizes,
    )


def scaled_sizes(sizes: dict[str, int], depth_fraction: float, hidden_fraction: float) -> dict[str, int]:
    """A smaller model's sizes as fractions of `sizes` (head width kept at 64 where possible)."""
    hidden = max(16, int(round(sizes["hidden_size"] * hidden_fraction)))
    heads = max(1, min(sizes["num_attention_heads"], hidden // 64 if hidden >= 64 else 1))
    while hidden % heads:
        heads -= 1
    return dict(
        num_hidden_layers=max(1, int(round(sizes["num_hidden_layers"] * depth_fraction))),
        hidden_size=hidden,
        # ELECTRA shares the embedding width between generator and discriminator.
        embedding_size=sizes["embedding_size"],
        num_attention_heads=heads,
        intermediate_size=max(4 * hidden if hidden_fraction < 1 else sizes["intermediate_size"], 16),
    )


def build_model(model_class: type[PreTrainedModel], config: ElectraConfig, ds_config: dict[str, Any] | None,
                attn_implementation: str = "sdpa") -> PreTrainedModel:
    """Instantiate `model_class` from `config`. Under ZeRO-3 the parameters are partitioned while
    they are created (transformers wraps construction in deepspeed.zero.Init when an
    HfDeepSpeedConfig is alive), so no rank ever holds the whole model."""
    zero3 = bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage", 0) == 3
    hf_ds_config = HfDeepSpeedConfig(ds_config) if zero3 else None  # noqa: F841 (must stay alive while building)
    try:
        model = model_class._from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)
    finally:
        if hf_ds_config is not None:
            # Otherwise every later from_pretrained (the frozen aux model, export) would be partitioned too.
            unset_hf_deepspeed_config()
    return attend_without_unpadded_mask(model)


# A batch without padding (data/unpadded.py) gives attention no mask: SDPA may take its flash kernel.
def _drop_unpadded_mask(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    if is_unpadded_mask(kwargs.get("attention_mask")):
        return args, {**kwargs, "attention_mask": None}
    return None


def attend_without_unpadded_mask(model: PreTrainedModel) -> PreTrainedModel:
    """Give `model`'s encoder no attention mask for a batch without padding (every call of it, from
    the task model or directly, passes attention_mask by keyword)."""
    model.base_model.register_forward_pre_hook(_drop_unpadded_mask, with_kwargs=True)
    return model


def is_partitioned(param: torch.nn.Parameter) -> bool:
    return hasattr(param, "ds_tensor")


def local_and_total_numel(module: torch.nn.Module) -> tuple[int, int]:
    """Parameters this rank holds, and the model's total (ZeRO-3 aware)."""
    local = total = 0
    for param in module.parameters():
        if is_partitioned(param):
            local += param.ds_tensor.numel()
            total += param.ds_numel
        else:
            local += param.numel()
            total += param.numel()
    return local, total
