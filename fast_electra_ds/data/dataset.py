"""Packed pre-training samples over prepared shards, and the per-rank micro-batch stream.

Packing: the documents of all shards, in order, form one token stream with a [SEP] between
consecutive documents (a document split into sentences, one IndexedDataset sequence each, is one
run of text). The stream is cut into pieces of `seq_len - 2` tokens and every sample is
`[CLS] piece [SEP]`; the last sample is padded with [PAD] (attention_mask 0). No token is dropped
and none is repeated within an epoch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .blend import BlendedDataset, parse_blend
from .indexed import open_shard, resolve_corpus, token_counts, token_range
from .prepare import META_FILE, entropy_of_counts


def open_dataset(path, seq_len: int, tokenizer=None):
    """`data.path` opened: a PackedDataset, or a BlendedDataset of one per entry of a weighted blend."""
    blend = parse_blend(path)
    if blend is None:
        return PackedDataset(path, seq_len, tokenizer=tokenizer)
    parts = [PackedDataset(entry, seq_len, tokenizer=tokenizer) for _, entry in blend]
    dataset = BlendedDataset(parts, [weight for weight, _ in blend], [entry for _, entry in blend])
    _note("data: a blend, samples drawn in proportion to the weights: "
          + ", ".join(f"{weight:.4g} {entry} ({len(part)} sequences)" for (weight, entry), part in zip(blend, parts)))
    return dataset


def _rerun(data_dir: Path) -> str:
    return f"re-run `fast-electra prepare` to rebuild {data_dir}"


def _note(text: str) -> None:
    """One line on rank 0 (the dataset is built before the trainer's logger)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(f"[fast-electra] {text}", flush=True)


class PackedDataset(torch.utils.data.Dataset):
    """Fixed-length `[CLS] ... [SEP]` samples over the shards of a prepared dataset directory, or of
    Megatron/NeMo IndexedDataset prefixes (data/indexed.py says which `path`s are read).

    Item i is {"input_ids": LongTensor[seq_len], "attention_mask": LongTensor[seq_len]}. Only the
    documents that overlap the sample are read (from memory-mapped shard files)."""

    def __init__(self, path, seq_len: int, tokenizer=None):
        if seq_len < 3:
            raise UserError(f"sequence length {seq_len} is too short", "use a sequence length of at least 3 ([CLS] token [SEP])")
        self.seq_len = int(seq_len)
        self._counts = None  # token frequencies, counted once when needed
        prepared, prefixes = resolve_corpus(path)
        if prepared is not None:
            self._open_prepared(prepared, tokenizer)
        else:
            self._open_megatron_corpus(prefixes, tokenizer)

        # Global document k lives in shard doc_shard[k], from token doc_offset[k] on.
        self.doc_lengths = np.concatenate([s.doc_lengths for s in self.shards] or [np.zeros(0, np.int64)])
        self.doc_shard = np.concatenate([np.full(len(s.doc_lengths), i, np.int32) for i, s in enumerate(self.shards)] or [np.zeros(0, np.int32)])
        self.doc_offset = np.concatenate([s.doc_offsets for s in self.shards] or [np.zeros(0, np.int64)])

        self.num_tokens = int(self.doc_lengths.sum())
        if self.num_tokens == 0:
            raise UserError(f"{self.data_dir} contains no tokens", "re-run `fast-electra prepare` on files with text")
        # Stream position where document k starts: its preceding documents plus one [SEP] each.
        self.doc_starts = np.concatenate([[0], np.cumsum(self.doc_lengths + 1)[:-1]]).astype(np.int64)
        self.stream_length = self.num_tokens + len(self.doc_lengths) - 1
        self.tokens_per_sample = self.seq_len - 2
        self.num_samples = -(-self.stream_length // self.tokens_per_sample)

    def _open_prepared(self, data_dir: Path, tokenizer) -> None:
        """A `fast-electra prepare` directory: meta.json names the shards and the tokenizer's fingerprint."""
        self.data_dir = data_dir
        meta_path = data_dir / META_FILE
        try:
            self.meta = meta = json.loads(meta_path.read_text())
            self.vocab_size = int(meta["vocab_size"])
            self.special_ids = {key: meta["special_ids"][key] for key in ("pad", "unk", "cls", "sep", "mask")}
            self.fingerprint = str(meta["tokenizer_fingerprint"])
            shard_entries = meta["shards"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{meta_path} is corrupted ({type(e).__name__}: {e})", _rerun(data_dir)) from None

        if tokenizer is not None:
            from .tokenizer import tokenizer_fingerprint

            if tokenizer_fingerprint(tokenizer) != self.fingerprint:
                raise UserError(f"vocabulary mismatch: the tokenizer (fingerprint {tokenizer_fingerprint(tokenizer)}, "
                                f"{len(tokenizer)} tokens) is not the one {data_dir} was prepared with "
                                f"(fingerprint {self.fingerprint}, {self.vocab_size} tokens)",
                                "re-run `fast-electra prepare` with this tokenizer, or use the tokenizer the data was prepared with")
        self.shards = [open_shard(data_dir / entry["name"], _rerun(data_dir), entry) for entry in shard_entries]

    def _open_megatron_corpus(self, prefixes: list[Path], tokenizer) -> None:
        """Bare .bin/.idx prefixes: the vocabulary is the given tokenizer's; with no fingerprint to
        compare, only the token id range can be checked against it."""
        from .tokenizer import special_token_ids, tokenizer_fingerprint

        self.data_dir = prefixes[0].parent
        where = str(prefixes[0]) if len(prefixes) == 1 else f"{len(prefixes)} Megatron/NeMo prefixes ({prefixes[0]}, ...)"
        if tokenizer is None:
            raise UserError(f"{where} has no {META_FILE} naming its vocabulary", "pass the tokenizer it was tokenized with (data.tokenizer=DIR)")
        self.vocab_size = len(tokenizer)
        self.special_ids = special_token_ids(tokenizer)
        missing = [key for key in ("pad", "cls", "sep", "mask") if self.special_ids[key] is None]
        if missing:
            raise UserError(f"the tokenizer has no {', '.join(missing)} token, which packing and masking need",
                            "use a tokenizer with [PAD], [CLS], [SEP] and [MASK] tokens (BERT-style)")
        self.fingerprint = tokenizer_fingerprint(tokenizer)
        self.shards = [open_shard(p, f"check {p}.bin/.idx, or rebuild them with Megatron's tools/preprocess_data.py") for p in prefixes]
        min_id, max_id = token_range(self.shards)
        if min_id < 0 or max_id >= self.vocab_size:
            raise UserError(f"{where} holds token id {min_id if min_id < 0 else max_id}, outside the tokenizer's {self.vocab_size} ids",
                            "pass data.tokenizer=<the tokenizer the corpus was tokenized with>")
        documents = sum(len(s.doc_lengths) for s in self.shards)
        tokens = sum(int(s.doc_lengths.sum()) for s in self.shards)
        self.meta = {"format": "megatron-indexed", "prefixes": [str(p) for p in prefixes], "vocab_size": self.vocab_size,
                     "special_ids": self.special_ids, "tokenizer_fingerprint": self.fingerprint,
                     "num_documents": documents, "num_tokens": tokens}
        _note(f"data: {where}: {documents} documents, {tokens} tokens; no {META_FILE}, so only the token id range "
              f"could be checked against the tokenizer (max id {max_id} < {self.vocab_size}): its ids are taken to be this tokenizer's")

    def token_counts(self) -> np.ndarray:
        """How often each token id occurs in the corpus (counted from the shards once; estimated
        from 2.7e8 tokens spread over a larger corpus, see data/indexed.py)."""
        if self._counts is None:
            self._counts = token_counts(self.shards, self.vocab_size)
        return self._counts

    def __len__(self) -> int:
        return self.num_samples

    def stream_slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the packed stream (documents joined by [SEP])."""
        out = np.full(stop - start, self.special_ids["sep"], dtype=np.int64)  # gaps between documents are [SEP]
        k = int(np.searchsorted(self.doc_starts, start, side="right")) - 1
        while k < len(self.doc_lengths) and self.doc_starts[k] < stop:
            doc_start, doc_len = int(self.doc_starts[k]), int(self.doc_lengths[k])
            lo, hi = max(start, doc_start), min(stop, doc_start + doc_len)
            if hi > lo:
                first = int(self.doc_offset[k]) + lo - doc_start
                out[lo - start:hi - start] = self.shards[self.doc_shard[k]].tokens[first:first + hi - lo]
            k += 1
        # A shard changed in place after it was checked at open (same size, other ids) would fail deep
        # in the model's embedding lookup; two reductions over a sample's ids cost next to nothing.
        if len(out) and (out.min() < 0 or out.max() >= self.vocab_size):
            self._name_bad_shard(start, stop)
        return out

    def _name_bad_shard(self, start: int, stop: int) -> None:
        k = int(np.searchsorted(self.doc_starts, start, side="right")) - 1
        while k < len(self.doc_lengths) and self.doc_starts[k] < stop:
            shard, first = self.shards[self.doc_shard[k]], int(self.doc_offset[k])
            ids = np.asarray(shard.tokens[first:first + int(self.doc_lengths[k])]).astype(np.int64)
            bad = np.nonzero((ids < 0) | (ids >= self.vocab_size))[0]
            if len(bad):
                fix = (_rerun(self.data_dir) if self.meta.get("format") != "megatron-indexed"
                       else f"rebuild {shard.prefix}.bin/.idx with the tokenizer of data.tokenizer")
                raise UserError(f"shard {shard.prefix.name} ({shard.prefix}.bin) holds token id {int(ids[bad[0]])} at token {first + int(bad[0])}, "
                                f"outside the vocabulary's {self.vocab_size} ids: the file was changed after it was written", fix)
            k += 1
        raise UserError(f"the data at {self.data_dir} holds token ids outside the vocabulary's {self.vocab_size} ids", _rerun(self.data_dir))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range for {self.num_samples} samples")
        start = index * self.tokens_per_sample
        inner = self.stream_slice(start, min(start + self.tokens_per_sample, self.stream_length))
        input_ids = np.full(self.seq_len, self.special_ids["pad"], dtype=np.int64)
        input_ids[0] = self.special_ids["cls"]
        input_ids[1:1 + len(inner)] = inner
        input_ids[1 + len(inner)] = self.special_ids["sep"]
        attention_mask = np.zeros(self.seq_len, dtype=np.int64)
        attention_mask[:len(inner) + 2] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}


    def subset(self, indices: np.ndarray) -> "SampleSubset":
        """The samples at `indices` (the training part of the validation split)."""
        return SampleSubset(self, indices)

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the corpus's token frequencies: the loss of a masked-LM that predicts
        frequencies and ignores context. `prepare` records it in meta.json; counted here otherwise."""
        if "unigram_entropy" in self.meta:
            return float(self.meta["unigram_entropy"])
        return entropy_of_counts(self.token_counts()[:self.vocab_size])


def validation_split(num_samples: int, val_sequences: int, blocks: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) of the packed samples. Validation takes at most 5% of
    them, as the last samples of `blocks` equal regions: spread over the corpus (its sources are
    concatenated in order), yet contiguous, so training sees the neighbouring text of only 2 x blocks
    held-out edges. Deterministic: the same split for every seed and rank."""
    count = min(int(val_sequences), num_samples // 20)
    if count <= 0:
        return np.arange(num_samples), np.zeros(0, dtype=np.int64)
    blocks = max(1, min(blocks, count))
    held = []
    for b in range(blocks):
        end = (b + 1) * num_samples // blocks
        take = count // blocks + (1 if b < count % blocks else 0)
        held.append(np.arange(end - take, end))
    val = np.concatenate(held)
    keep = np.ones(num_samples, dtype=bool)
    keep[val] = False
    return np.nonzero(keep)[0], val


class SampleSubset(torch.utils.data.Dataset):
    """The samples of `dataset` at `indices`, renumbered 0..len-1 (the training part of a split)."""

    def __init__(self, dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.dataset[int(self.indices[index])]


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


class EpochOrder:
    """Position in the training stream -> sample: epochs 0, 1, ... of `epoch_permutation`."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples, self.seed = num_samples, seed
        self._permutations: dict[int, torch.Tensor] = {}

    def __call__(self, position: int) -> int:
        epoch = position // self.num_samples
        if epoch not in self._permutations:
            # Positions come in order and a step spans at most a few epochs: drop the earlier ones.
            for old in [e for e in self._permutations if e < epoch - 2]:
                del self._permutations[old]
            self._permutations[epoch] = epoch_permutation(self.num_samples, self.seed, epoch)
        return int(self._permutations[epoch][position % self.num_samples])


def micro_batch_positions(consumed_samples: int, micro: int, micro_batch_size: int, rank: int, world_size: int) -> list[int]:
    """Positions in the training stream of rank `rank`'s micro-batch `micro` of the step that starts
    after `consumed_samples`: RankBatches' order (each micro-batch takes micro_batch_size * world_size
    positions, rank r the r-th slice), so a step covers the same positions on any world size."""
    first = consumed_samples + (micro * world_size + rank) * micro_batch_size
    return list(range(first, first + micro_batch_size))


class RankBatches:
    """Infinite iterator of this rank's micro-batches (dicts of [micro_batch_size, seq_len] tensors).

    The global sample order is the concatenation over epochs 0, 1, 2, ... of
    `epoch_permutation(N, seed, epoch)`, or the dataset's own `sample_order(seed)` (a blend's).
    Each step consumes the next micro_batch_size * world_size
    global positions and rank r takes slice [r*micro, (r+1)*micro] of them, so ranks are disjoint
    and together cover every sample once per epoch. `consumed_samples` counts all ranks; building
    with the value saved in a checkpoint resumes exactly where that run stopped."""

    def __init__(self, dataset, micro_batch_size: int, rank: int, world_size: int, seed: int, consumed_samples: int = 0):
        if micro_batch_size < 1 or world_size < 1:
            raise ValueError(f"micro_batch_size ({micro_batch_size}) and world_size ({world_size}) must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        if consumed_samples < 0:
            raise ValueError(f"consumed_samples must be >= 0, got {consumed_samples}")
        if len(dataset) < 1:
            raise ValueError("the dataset is empty")
        self.dataset = dataset
        self.micro_batch_size, self.rank, self.world_size, self.seed = micro_batch_size, rank, world_size, seed
        self.consumed_samples = int(consumed_samples)
        order = getattr(dataset, "sample_order", None)
        self._order = order(seed) if order is not None else EpochOrder(len(dataset), seed)

    @property
    def epoch(self) -> int:
        return self.consumed_samples // len(self.dataset)

    def _sample_at(self, position: int) -> int:
        return self._order(position)

    def sample_indices(self) -> list[int]:
        """Dataset indices of this rank's next micro-batch (without consuming it)."""
        positions = micro_batch_positions(self.consumed_samples, 0, self.micro_batch_size, self.rank, self.world_size)
        return [self._sample_at(position) for position in positions]

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        items = [self.dataset[i] for i in self.sample_indices()]
        self.consumed_samples += self.micro_batch_size * self.world_size
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}
