"""What the unit tests of the methods share: a method run without the engine on the tiny config, its
token ids (TOKENS), method fast with a random aux, a padded batch, and the chi-square test of a
sampler's draws."""
from __future__ import annotations

import torch

from fast_electra_ds.config.run_config import RunConfig, load_config
from fast_electra_ds.methods import TokenInfo
from tests.helpers import ROOT

TOKENS = TokenInfo.of_random_ids(120, "test")  # batch() draws its ids uniformly from the 115 non-special ones


def config(*overrides: str) -> RunConfig:
    """configs/tiny.yaml without dropout, with `overrides`."""
    return load_config([str(ROOT / "configs/tiny.yaml")], ["model.dropout=0.0", *overrides])


def fast_method(*overrides, unigram_entropy=TOKENS.unigram_entropy, favoured=None):
    """Method fast on TOKENS with a random one-layer fp32 aux (seeded), without the engine."""
    from transformers import ElectraConfig, ElectraForMaskedLM

    from fast_electra_ds.methods import METHODS
    from fast_electra_ds.models.aux import FrozenAux

    tokens = TokenInfo(**{**TOKENS.__dict__, "unigram_entropy": unigram_entropy})
    method = METHODS["fast"](config("method=fast", *overrides), tokens, torch.device("cpu"))
    torch.manual_seed(3)
    aux = ElectraForMaskedLM(ElectraConfig(vocab_size=120, embedding_size=32, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=1, intermediate_size=64, max_position_embeddings=64))
    if favoured is not None:  # an aux that knows which tokens the data uses: better than a wider unigram distribution
        with torch.no_grad():
            aux.generator_lm_head.bias[favoured] += 6.0
    method.aux = FrozenAux(aux.eval().requires_grad_(False))
    return method


def batch(rows=8, length=32, padding=4, seed=0) -> dict[str, torch.Tensor]:
    """Random ids between [CLS] and [SEP], then `padding` pad tokens per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (rows, length), generator=g)
    ids[:, 0] = TOKENS.cls_id
    ids[:, length - padding - 1] = TOKENS.sep_id
    ids[:, length - padding:] = TOKENS.pad_id
    return {"input_ids": ids, "attention_mask": (ids != TOKENS.pad_id).long()}


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square goodness of fit; the p-value is the chi-square survival function,
    Q(k/2, x/2) (regularised upper incomplete gamma)."""
    expected = probs.double() * counts.sum().double()
    statistic = ((counts.double() - expected) ** 2 / expected).sum()
    dof = torch.tensor(len(counts) - 1, dtype=torch.float64)
    return torch.special.gammaincc(dof / 2, statistic / 2).item()
