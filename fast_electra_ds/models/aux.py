"""The frozen, inference-only auxiliary masked-LM that Fast-ELECTRA samples replacements from."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel

from ..errors import UserError
from .encoder import attend_without_unpadded_mask
from .sampling import sample_and_argmax


def masked_lm_head(model: PreTrainedModel) -> torch.nn.Module | None:
    """The part of a *ForMaskedLM model that maps hidden states to vocabulary logits, so it can be
    applied to the masked positions only (at 15% masking that skips 85% of the head's FLOPs)."""
    if hasattr(model, "generator_predictions"):  # Electra
        return torch.nn.Sequential(model.generator_predictions, model.generator_lm_head)
    if hasattr(model, "cls"):  # BERT
        return model.cls
    if hasattr(model, "lm_head"):  # RoBERTa, XLM-R, DeBERTa
        return model.lm_head
    if hasattr(model, "vocab_transform"):  # DistilBERT
        return torch.nn.Sequential(model.vocab_transform, model.activation, model.vocab_layer_norm, model.vocab_projector)
    return None


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise UserError(f"unknown aux.dtype {name!r}", "use auto, bf16, fp16 or fp32")
    return table[name]


class FrozenAux:
    """A whole copy of the auxiliary model on this rank, outside ZeRO and outside the optimizer:
    16-bit, eval mode, no gradients, run under torch.inference_mode()."""

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.encoder = model.base_model
        self.head = masked_lm_head(model)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """The vocabulary logits at the selected positions only [M, V], in the aux's dtype."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden[selected])

    @torch.inference_mode()
    def propose(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                temperature: float, generator: torch.Generator, disallowed_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled tokens at the selected positions [M], and the aux model's argmax there [M] (from the
        sampler's own max pass: no second pass over the vocabulary)."""
        return sample_and_argmax(self.logits(input_ids, attention_mask, selected), temperature, generator, disallowed_ids)


def load_frozen_aux(path: str, vocab_size: int, fingerprint: str, dtype_name: str, device: torch.device) -> FrozenAux:
    from ..data.tokenizer import load_tokenizer, tokenizer_fingerprint

    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise UserError(f"auxiliary model directory {path} has no config.json", "pass a Hugging Face masked-LM directory, e.g. the hf/ export of an aux-mlm run")
    architectures = json.loads((directory / "config.json").read_text()).get("architectures") or []
    if architectures and not any(a.endswith("ForMaskedLM") for a in architectures):
        raise UserError(f"auxiliary model {path} is a {architectures[0]}, which has no masked-LM head", "pass a *ForMaskedLM directory, e.g. the hf/ export of an aux-mlm run")
    if any((directory / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        aux_fingerprint = tokenizer_fingerprint(load_tokenizer(path))
        if aux_fingerprint != fingerprint:
            raise UserError(f"the auxiliary model's tokenizer ({path}) differs from the data's tokenizer", "prepare the data with the auxiliary model's tokenizer, or train the aux model on this data")
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if config.vocab_size != vocab_size:
        raise UserError(f"vocabulary mismatch: auxiliary model {path} has {config.vocab_size} tokens, the data's tokenizer {vocab_size}", "use the tokenizer the auxiliary model was trained with")
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=False, output_loading_info=True,
                                                          dtype=pick_dtype(dtype_name, device))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the auxiliary model from {path} ({str(err).splitlines()[0]})", "pass a Hugging Face masked-LM directory") from None
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserError(f"auxiliary model {path} lacks weights ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): it has no trained masked-LM head", "pass a directory saved from a *ForMaskedLM model, e.g. the hf/ export of an aux-mlm run")
    if masked_lm_head(model) is None:
        raise UserError(f"auxiliary model {path} ({type(model).__name__}) has no masked-LM head this project knows", "use an Electra, BERT, RoBERTa or DistilBERT masked-LM")
    model.to(device).eval().requires_grad_(False)
    attend_without_unpadded_mask(model)  # a batch without padding: no attention mask (SDPA's flash kernel)
    return FrozenAux(model)
