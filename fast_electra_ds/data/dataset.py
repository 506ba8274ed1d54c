"""Packed pre-training samples over prepared shards, and the per-rank micro-batch stream.

Packing: the documents of all shards, in order, form one token stream with a [SEP] between
consecutive documents. The stream is cut into pieces of `seq_len - 2` tokens and every sample is
`[CLS] piece [SEP]`; the last sample is padded with [PAD] (attention_mask 0). No token is dropped
and none is repeated within an epoch.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .prepare import META_FILE, entropy_of_counts, import_indexed_dataset

_IDX_HEADER = b"MMIDIDX\x00\x00"
_IDX_FIXED_BYTES = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count
_DTYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}  # megatron DType code -> bytes


def _rerun(data_dir: Path) -> str:
    return f"re-run `fast-electra prepare` to rebuild {data_dir}"


def _check_idx_file(idx_path: Path, data_dir: Path) -> None:
    """Validate the .idx header and sizes ourselves: megatron reads garbage without complaint
    (or with bare asserts) when a file is truncated or corrupted."""
    name = idx_path.with_suffix("").name
    with open(idx_path, "rb") as f:
        head = f.read(_IDX_FIXED_BYTES)
    if len(head) < _IDX_FIXED_BYTES or head[:9] != _IDX_HEADER:
        raise UserError(f"shard {name} has a corrupted index file {idx_path.name} (bad header)", _rerun(data_dir))
    version, code, sequences, documents = struct.unpack("<QBQQ", head[9:])
    if version != 1 or code not in _DTYPE_SIZES:
        raise UserError(f"shard {name} has a corrupted index file {idx_path.name} (version {version}, dtype code {code})", _rerun(data_dir))
    expected = _IDX_FIXED_BYTES + sequences * (4 + 8) + documents * 8
    if os.path.getsize(idx_path) != expected:
        raise UserError(f"shard {name} has a truncated or corrupted index file {idx_path.name} "
                        f"({os.path.getsize(idx_path)} bytes, expected {expected})", _rerun(data_dir))


def _open_shard(data_dir: Path, name: str, expected: dict | None):
    """Open one shard as a megatron IndexedDataset, converting every failure into a UserError."""
    prefix = data_dir / name
    idx_path, bin_path = Path(str(prefix) + ".idx"), Path(str(prefix) + ".bin")
    for path in (idx_path, bin_path):
        if not path.is_file():
            raise UserError(f"shard {name} is missing its {path.suffix} file ({path})", _rerun(data_dir))
    _check_idx_file(idx_path, data_dir)
    if os.path.getsize(bin_path) == 0:
        raise UserError(f"shard {name} has an empty data file {bin_path.name}", _rerun(data_dir))
    try:
        shard = import_indexed_dataset().IndexedDataset(str(prefix))
    except (AssertionError, ValueError, OSError, KeyError, struct.error) as e:
        raise UserError(f"shard {name} cannot be read ({type(e).__name__}: {e})", _rerun(data_dir)) from None

    lengths = shard.index.sequence_lengths.astype(np.int64)
    pointers = shard.index.sequence_pointers
    item_bytes = shard.index.dtype_size
    bin_bytes = os.path.getsize(bin_path)
    if len(lengths) != len(shard.get_document_indices()) - 1:
        raise UserError(f"shard {name} does not hold one sequence per document", _rerun(data_dir))
    if (lengths < 0).any() or int(lengths.sum()) * item_bytes != bin_bytes or (
        len(lengths) and (pointers[0] != 0 or (np.diff(pointers) != lengths[:-1] * item_bytes).any())
    ):
        raise UserError(f"shard {name}: data file {bin_path.name} ({bin_bytes} bytes) does not match its index "
                        f"({int(lengths.sum())} tokens of {item_bytes} bytes); it is truncated or corrupted", _rerun(data_dir))
    if expected is not None and (expected.get("tokens"), expected.get("documents")) != (int(lengths.sum()), len(lengths)):
        raise UserError(f"shard {name} holds {int(lengths.sum())} tokens in {len(lengths)} documents but meta.json "
                        f"records {expected.get('tokens')} in {expected.get('documents')}", _rerun(data_dir))
    return shard, lengths


class PackedDataset(torch.utils.data.Dataset):
    """Fixed-length `[CLS] ... [SEP]` samples over the shards of a prepared dataset directory.

    Item i is {"input_ids": LongTensor[seq_len], "attention_mask": LongTensor[seq_len]}. Only the
    documents that overlap the sample are read (from memory-mapped shard files)."""

    def __init__(self, data_dir, seq_len: int, tokenizer=None):
        self.data_dir = data_dir = Path(data_dir)
        meta_path = data_dir / META_FILE
        if not meta_path.is_file():
            raise UserError(f"{data_dir} is not a prepared dataset (no {META_FILE})",
                            "run `fast-electra prepare` to create it (an interrupted prepare leaves no meta.json)")
        try:
            self.meta = meta = json.loads(meta_path.read_text())
            self.vocab_size = int(meta["vocab_size"])
            self.special_ids = {key: meta["special_ids"][key] for key in ("pad", "unk", "cls", "sep", "mask")}
            self.fingerprint = str(meta["tokenizer_fingerprint"])
            shard_entries = meta["shards"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{meta_path} is corrupted ({type(e).__name__}: {e})", _rerun(data_dir)) from None
        if seq_len < 3:
            raise UserError(f"sequence length {seq_len} is too short", "use a sequence length of at least 3 ([CLS] token [SEP])")
        self.seq_len = int(seq_len)

        if tokenizer is not None:
            from .tokenizer import tokenizer_fingerprint

            if tokenizer_fingerprint(tokenizer) != self.fingerprint:
                raise UserError(f"vocabulary mismatch: the tokenizer (fingerprint {tokenizer_fingerprint(tokenizer)}, "
                                f"{len(tokenizer)} tokens) is not the one {data_dir} was prepared with "
                                f"(fingerprint {self.fingerprint}, {self.vocab_size} tokens)",
                                "re-run `fast-electra prepare` with this tokenizer, or use the tokenizer the data was prepared with")

        self.shards = []
        lengths_per_shard = []
        for entry in shard_entries:
            shard, lengths = _open_shard(data_dir, entry["name"], entry)
            self.shards.append(shard)
            lengths_per_shard.append(lengths)
        self.doc_lengths = np.concatenate(lengths_per_shard) if lengths_per_shard else np.zeros(0, np.int64)
        # Global document k lives in shard doc_shard[k] as sequence doc_local[k].
        self.doc_shard = np.concatenate([np.full(len(l), i, np.int32) for i, l in enumerate(lengths_per_shard)] or [np.zeros(0, np.int32)])
        self.doc_local = np.concatenate([np.arange(len(l), dtype=np.int64) for l in lengths_per_shard] or [np.zeros(0, np.int64)])

        self.num_tokens = int(self.doc_lengths.sum())
        if self.num_tokens == 0:
            raise UserError(f"{data_dir} contains no tokens", "re-run `fast-electra prepare` on files with text")
        # Stream position where document k starts: its preceding documents plus one [SEP] each.
        self.doc_starts = np.concatenate([[0], np.cumsum(self.doc_lengths + 1)[:-1]]).astype(np.int64)
        self.stream_length = self.num_tokens + len(self.doc_lengths) - 1
        self.tokens_per_sample = self.seq_len - 2
        self.num_samples = -(-self.stream_length // self.tokens_per_sample)

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
                shard = self.shards[self.doc_shard[k]]
                out[lo - start:hi - start] = shard.get(int(self.doc_local[k]), offset=lo - doc_start, length=hi - lo)
            k += 1
        return out

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


    def unigram_entropy(self) -> float:
        """Entropy (nats) of the corpus's token frequencies: the loss of a masked-LM that predicts
        frequencies and ignores context. `prepare` records it in meta.json; counted here otherwise."""
        if "unigram_entropy" in self.meta:
            return float(self.meta["unigram_entropy"])
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for entry, shard in zip(self.meta["shards"], self.shards):
            tokens = np.memmap(self.data_dir / (entry["name"] + ".bin"), dtype=shard.index.dtype, mode="r")
            for start in range(0, len(tokens), 1 << 24):  # bounded memory for large shards
                counts += np.bincount(tokens[start:start + (1 << 24)], minlength=self.vocab_size)[:self.vocab_size]
        return entropy_of_counts(counts)


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


class RankBatches:
    """Infinite iterator of this rank's micro-batches (dicts of [micro_batch_size, seq_len] tensors).

    The global sample order is the concatenation over epochs 0, 1, 2, ... of
    `epoch_permutation(N, seed, epoch)`. Each step consumes the next micro_batch_size * world_size
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
        self._permutations: dict[int, torch.Tensor] = {}

    @property
    def epoch(self) -> int:
        return self.consumed_samples // len(self.dataset)

    def _sample_at(self, position: int) -> int:
        num_samples = len(self.dataset)
        epoch = position // num_samples
        if epoch not in self._permutations:
            # A step spans at most a few epochs; drop permutations of finished ones.
            for old in [e for e in self._permutations if e < self.epoch]:
                del self._permutations[old]
            self._permutations[epoch] = epoch_permutation(num_samples, self.seed, epoch)
        return int(self._permutations[epoch][position % num_samples])

    def sample_indices(self) -> list[int]:
        """Dataset indices of this rank's next micro-batch (without consuming it)."""
        first = self.consumed_samples + self.rank * self.micro_batch_size
        return [self._sample_at(first + j) for j in range(self.micro_batch_size)]

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        items = [self.dataset[i] for i in self.sample_indices()]
        self.consumed_samples += self.micro_batch_size * self.world_size
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}
