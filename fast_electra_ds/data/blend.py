"""Weighted blends of corpora in Megatron's `--data-path` syntax: `data.path="0.3 /c/wiki 0.7 /c/books"`.

Megatron's semantics (megatron-core's BlendedDataset): the weights are normalised, and sample i of
the blend comes from the corpus whose share so far lags its weight most (megatron-core's own
`build_blending_indices` builds that index here), so every prefix of the sample stream holds each
corpus in proportion to its weight, within one sample. Each corpus is drawn from in its own seeded
shuffle, epoch after epoch: a corpus weighted above its share of the tokens repeats sooner than the
others. The blend's order is a function of the sample position alone, so a resumed run continues
exactly. The index is built for PERIOD samples and repeated, each corpus's draws continuing from
period to period (a fixed period keeps its memory at 10 MB whatever the corpus size).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

PERIOD = 1 << 20  # each corpus's count per period is within one sample of its weight times this
_FIX = 'write the blend as weight-prefix pairs, e.g. data.path="0.3 /c/wiki 0.7 /c/books" (positive weights, existing prefixes)'


def _number(word: str) -> float | None:
    try:
        return float(word)
    except ValueError:
        return None


def parse_blend(path) -> list[tuple[float, str]] | None:
    """[(normalised weight, corpus path), ...] for a weighted blend, or None when `path` is not one
    (a single path, even one with spaces, or comma-separated prefixes). A blend is several
    whitespace-separated words whose first is a number; anything malformed is one UserError."""
    if isinstance(path, (list, tuple)) or Path(str(path)).exists():
        return None
    words = str(path).split()
    if len(words) < 2 or _number(words[0]) is None:
        return None
    if len(words) % 2:
        raise UserError(f"data.path blend {str(path)!r} has {len(words)} words, not weight-prefix pairs", _FIX)
    weights, paths = [], []
    for weight_word, path_word in zip(words[0::2], words[1::2]):
        weight = _number(weight_word)
        if weight is None:
            raise UserError(f"data.path blend weight {weight_word!r} (before {path_word}) is not a number", _FIX)
        if not math.isfinite(weight) or weight <= 0:
            raise UserError(f"data.path blend weight {weight_word} of {path_word} is not a positive number", _FIX)
        if _number(path_word) is not None and not Path(path_word).exists():
            raise UserError(f"data.path blend has the number {path_word} where a prefix should follow weight {weight_word}", _FIX)
        weights.append(weight)
        paths.append(path_word)
    total = math.fsum(weights)
    return [(w / total, p) for w, p in zip(weights, paths)]


def blending_index(weights: list[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(corpus of each sample, how many earlier samples that corpus gave): megatron-core's
    BlendedDataset index for normalised `weights` and `size` samples, from its own C++ helper."""
    with warnings.catch_warnings():  # megatron.core warns at import about the optional Transformer Engine / Apex
        warnings.simplefilter("ignore")
        from megatron.core.datasets import helpers
    corpus = np.zeros(size, dtype=np.int16)
    draw = np.zeros(size, dtype=np.int64)
    helpers.build_blending_indices(corpus, draw, np.asarray(weights, dtype=np.float64), len(weights), size, False)
    return corpus, draw


class BlendedDataset(torch.utils.data.Dataset):
    """The samples of several PackedDatasets (one per blend entry, all with the same tokenizer),
    indexed as their concatenation; `weights` (normalised) say how often each is drawn in training.
    Exposes what the trainer reads of a PackedDataset (special ids, vocabulary, unigram entropy)."""

    def __init__(self, parts: list, weights: list[float], names: list[str]):
        first = parts[0]
        for part, name in zip(parts[1:], names[1:]):
            if (part.vocab_size, part.special_ids, part.fingerprint) != (first.vocab_size, first.special_ids, first.fingerprint):
                raise UserError(f"blend entry {name} was tokenized with another tokenizer than {names[0]}",
                                "blend corpora tokenized with one tokenizer (pass it as data.tokenizer)")
        self.parts, self.weights, self.names = parts, list(weights), list(names)
        self.seq_len, self.vocab_size = first.seq_len, first.vocab_size
        self.special_ids, self.fingerprint = first.special_ids, first.fingerprint
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        self.num_tokens = sum(p.num_tokens for p in parts)
        self.meta = {"format": "blend", "weights": self.weights, "paths": self.names, "parts": [p.meta for p in parts]}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][int(index) - int(self.offsets[part])]

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the token distribution training sees: each corpus's frequencies, weighted."""
        mixture = np.zeros(self.vocab_size, dtype=np.float64)
        for part, weight in zip(self.parts, self.weights):
            counts = part.token_counts()[:self.vocab_size].astype(np.float64)
            mixture += weight * counts / counts.sum()
        p = mixture[mixture > 0]
        return float(-(p * np.log(p)).sum())

    def subset(self, indices: np.ndarray) -> "BlendedSubset":
        return BlendedSubset(self, indices)


class BlendedSubset(torch.utils.data.Dataset):
    """The training samples of a blend (`indices`: the blend's samples left after the validation
    split), in the blend's order: `sample_order(seed)` replaces the one-permutation-per-epoch order."""

    def __init__(self, blend: BlendedDataset, indices: np.ndarray):
        indices = np.sort(np.asarray(indices, dtype=np.int64))
        part_of = np.searchsorted(blend.offsets, indices, side="right") - 1
        self.blend, self.indices = blend, indices
        self.part_starts = np.searchsorted(part_of, np.arange(len(blend.parts) + 1))  # each part's run in `indices`
        for k, name in enumerate(blend.names):
            if self.part_starts[k + 1] == self.part_starts[k]:
                raise UserError(f"blend entry {name} has no training sequences (all {len(blend.parts[k])} held out for validation)",
                                "give it more text, or lower data.val_sequences")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.blend[int(self.indices[index])]

    def sample_order(self, seed: int) -> "BlendOrder":
        return BlendOrder(np.diff(self.part_starts), self.part_starts[:-1], self.blend.weights, seed, PERIOD)


class BlendOrder:
    """Position in the training stream -> index into the BlendedSubset (see the module docstring)."""

    def __init__(self, sizes: np.ndarray, starts: np.ndarray, weights: list[float], seed: int, period: int):
        self.sizes, self.starts, self.seed, self.period = sizes.astype(np.int64), starts.astype(np.int64), seed, period
        self.corpus, self.draw = blending_index(weights, period)
        self.per_period = np.bincount(self.corpus, minlength=len(weights)).astype(np.int64)
        self._permutations: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, position: int) -> int:
        period, offset = divmod(int(position), self.period)
        k = int(self.corpus[offset])
        draw = period * int(self.per_period[k]) + int(self.draw[offset])  # this corpus's draws so far
        epoch, within = divmod(draw, int(self.sizes[k]))
        key = (k, epoch)
        if key not in self._permutations:
            for old in [e for e in self._permutations if e[0] == k and e[1] < epoch]:
                del self._permutations[old]  # a corpus's epochs are visited in order
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 32_771 + k)
            self._permutations[key] = torch.randperm(int(self.sizes[k]), generator=generator)
        return int(self.starts[k]) + int(self._permutations[key][within])
