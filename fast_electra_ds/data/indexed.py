"""Reading Megatron-LM / NeMo IndexedDataset shards (`<prefix>.bin` + `<prefix>.idx`).

`data.path` names either a directory written by `fast-electra prepare` (shards plus meta.json), or
corpora as Megatron's tools/preprocess_data.py and NeMo write them, with no meta.json: one or
several prefixes (comma-separated), or directories holding such prefixes. Documents come from the
.idx document indices; a document may span several sequences (a sentence-split corpus writes one
sequence per sentence), and the writer lays a document's sequences out contiguously in the .bin, so
every document is one contiguous run of tokens (checked here from the sequence pointers).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .prepare import META_FILE, import_indexed_dataset

_IDX_HEADER = b"MMIDIDX\x00\x00"
_IDX_FIXED_BYTES = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count
# megatron's DType codes: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
_TOKEN_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
_FLOAT_CODES = {6, 7}
_SCAN_TOKENS = 1 << 24  # tokens read at a time when scanning a shard (bounded memory)


@dataclass
class Shard:
    """One .bin/.idx pair: its tokens (memory-mapped) and its non-empty documents."""
    prefix: Path
    tokens: np.ndarray  # the whole .bin
    doc_offsets: np.ndarray  # int64: where each document starts in `tokens`
    doc_lengths: np.ndarray  # int64: tokens of each document (all > 0)


def resolve_corpus(path) -> tuple[Path | None, list[Path]]:
    """(prepared directory, []) or (None, prefixes) for `data.path`: a prepared directory, or
    Megatron/NeMo prefixes (`x` for x.bin/x.idx; `x.bin` or `x.idx` also work), directories of
    them, several joined by commas (or given as a list)."""
    if isinstance(path, (list, tuple)):
        entries = [str(p) for p in path]
    else:
        entries = [str(path)] if Path(str(path)).exists() else str(path).split(",")
    entries = [e.strip() for e in entries if e.strip()]
    if not entries:
        raise UserError("data.path is empty", "pass data.path=<directory written by fast-electra prepare, or Megatron/NeMo .bin/.idx prefix>")
    prepared, prefixes = [], []
    for entry in entries:
        p = Path(entry)
        if p.is_dir() and (p / META_FILE).is_file():
            prepared.append(p)
        elif Path(entry + ".idx").is_file() and Path(entry + ".bin").is_file():
            # A prefix, even beside a directory of its name: Megatron caches its indices in <prefix>/cache/.
            prefixes.append(p)
        elif p.is_dir():
            found = sorted(idx.with_suffix("") for idx in p.glob("*.idx"))
            if not found:
                raise UserError(f"{p} is not a prepared dataset (no {META_FILE}) and holds no Megatron .bin/.idx files",
                                "run `fast-electra prepare` to create it (an interrupted prepare leaves no meta.json), "
                                "or pass data.path=<prefix> of a Megatron/NeMo corpus")
            prefixes += found
        elif p.suffix in (".bin", ".idx") and p.is_file():
            prefixes.append(p.with_suffix(""))
        elif Path(entry + ".idx").exists() or Path(entry + ".bin").exists():
            prefixes.append(p)
        elif len(entry.split()) > 1:  # Megatron's unweighted form "/c/wiki /c/books" (weighted blends: data/blend.py)
            raise UserError(f"data.path entry {entry!r} does not exist (several words: space-separated prefixes?)",
                            'separate prefixes with commas to concatenate them (data.path=/c/wiki,/c/books), '
                            'or weigh them as Megatron does (data.path="0.3 /c/wiki 0.7 /c/books")')
        else:
            raise UserError(f"data.path entry {entry} does not exist (no directory, and no {entry}.bin/.idx)",
                            "pass a directory written by `fast-electra prepare`, or the prefix of a Megatron/NeMo corpus (its path without .bin/.idx)")
    if prepared and (len(prepared) > 1 or prefixes):
        raise UserError(f"data.path names a prepared dataset ({prepared[0]}) together with other corpora",
                        "pass one prepared directory, or Megatron/NeMo prefixes only (prepare several inputs into one directory)")
    return (prepared[0], []) if prepared else (None, prefixes)


def _idx_dtype(idx_path: Path, name: str, fix: str) -> type:
    """The token dtype from the .idx header, whose sizes we check
    ourselves: megatron reads a truncated or corrupted file without complaint (or with bare asserts)."""
    with open(idx_path, "rb") as f:
        head = f.read(_IDX_FIXED_BYTES)
    if len(head) < _IDX_FIXED_BYTES or head[:9] != _IDX_HEADER:
        raise UserError(f"shard {name} has a corrupted index file {idx_path.name} (bad header)", fix)
    version, code, sequences, boundaries = struct.unpack("<QBQQ", head[9:])
    if version != 1 or (code not in _TOKEN_DTYPES and code not in _FLOAT_CODES):
        raise UserError(f"shard {name} has a corrupted index file {idx_path.name} (version {version}, dtype code {code})", fix)
    if code in _FLOAT_CODES:
        raise UserError(f"shard {name} holds floating-point values, not token ids", "pass a corpus of token ids")
    expected = _IDX_FIXED_BYTES + sequences * (4 + 8) + boundaries * 8
    size = os.path.getsize(idx_path)
    if size == expected + sequences and sequences:  # one mode byte per sequence
        raise UserError(f"shard {name} is a multimodal IndexedDataset", "pass a text corpus (tokens only)")
    if size != expected:
        raise UserError(f"shard {name} has a truncated or corrupted index file {idx_path.name} ({size} bytes, expected {expected})", fix)
    return _TOKEN_DTYPES[code]


def open_shard(prefix: Path, fix: str, expected: dict | None = None) -> Shard:
    """Open and check one .bin/.idx pair; every failure is a UserError ending with `fix`.
    `expected`: the shard's meta.json entry (tokens, documents), for a prepared dataset."""
    name = prefix.name
    idx_path, bin_path = Path(str(prefix) + ".idx"), Path(str(prefix) + ".bin")
    for path in (idx_path, bin_path):
        if not path.is_file():
            raise UserError(f"shard {name} is missing its {path.suffix} file ({path})", fix)
    dtype = _idx_dtype(idx_path, name, fix)
    if os.path.getsize(bin_path) == 0:
        raise UserError(f"shard {name} has an empty data file {bin_path.name}", fix)
    try:
        index = import_indexed_dataset().IndexedDataset(str(prefix)).index
    except (AssertionError, ValueError, OSError, KeyError, struct.error) as e:
        raise UserError(f"shard {name} cannot be read ({type(e).__name__}: {e})", fix) from None

    lengths = index.sequence_lengths.astype(np.int64)
    pointers, bounds = index.sequence_pointers, index.document_indices.astype(np.int64)
    item_bytes, bin_bytes = np.dtype(dtype).itemsize, os.path.getsize(bin_path)
    # Contiguous sequences (each starts where the previous ends) make a document one run of tokens.
    if (lengths < 0).any() or int(lengths.sum()) * item_bytes != bin_bytes or (
        len(lengths) and (pointers[0] != 0 or (np.diff(pointers) != lengths[:-1] * item_bytes).any())
    ):
        raise UserError(f"shard {name}: data file {bin_path.name} ({bin_bytes} bytes) does not match its index "
                        f"({int(lengths.sum())} tokens of {item_bytes} bytes); it is truncated or corrupted", fix)
    if len(bounds) == 0 or bounds[0] != 0 or bounds[-1] != len(lengths) or (np.diff(bounds) < 0).any():
        raise UserError(f"shard {name} has a corrupted index file {idx_path.name} (its document indices do not "
                        f"cover its {len(lengths)} sequences in order)", fix)
    sequence_starts = np.concatenate([[0], np.cumsum(lengths)])
    doc_offsets, doc_ends = sequence_starts[bounds[:-1]], sequence_starts[bounds[1:]]
    documents = len(bounds) - 1
    if expected is not None and (expected.get("tokens"), expected.get("documents")) != (int(lengths.sum()), documents):
        raise UserError(f"shard {name} holds {int(lengths.sum())} tokens in {documents} documents but meta.json "
                        f"records {expected.get('tokens')} in {expected.get('documents')}", fix)
    keep = doc_ends > doc_offsets  # an empty document would pack as two [SEP]s in a row
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    return Shard(prefix, tokens, doc_offsets[keep].astype(np.int64), (doc_ends - doc_offsets)[keep].astype(np.int64))


def token_range(shards: list[Shard]) -> tuple[int, int]:
    """(smallest, largest) token id in the shards; a full pass, but a fast one (~3e9 ids/s)."""
    low, high = None, None
    for shard in shards:
        for start in range(0, len(shard.tokens), _SCAN_TOKENS):
            chunk = shard.tokens[start:start + _SCAN_TOKENS]
            low = int(chunk.min()) if low is None else min(low, int(chunk.min()))
            high = int(chunk.max()) if high is None else max(high, int(chunk.max()))
    return (low, high) if low is not None else (0, -1)


def token_counts(shards: list[Shard], vocab_size: int, budget: int = 1 << 28) -> np.ndarray:
    """How often each id < vocab_size occurs in the shards: all of them up to `budget` tokens, else
    `budget` tokens in chunks spread evenly over the corpus (counting is ~6e7 ids/s; an estimate
    from 2.7e8 tokens is as good for what it is used for, the unigram entropy)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    sizes = np.array([len(shard.tokens) for shard in shards], dtype=np.int64)
    total = int(sizes.sum())
    if total <= budget:
        chunks = [(i, start) for i, size in enumerate(sizes) for start in range(0, int(size), _SCAN_TOKENS)]
    else:
        shard_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        positions = [j * total // (budget // _SCAN_TOKENS) for j in range(budget // _SCAN_TOKENS)]
        shard_of = np.searchsorted(shard_starts, positions, side="right") - 1
        chunks = [(int(i), int(p - shard_starts[i])) for i, p in zip(shard_of, positions)]
    for i, start in chunks:
        chunk = np.asarray(shards[i].tokens[start:start + _SCAN_TOKENS]).astype(np.int64, copy=False)
        counts += np.bincount(chunk[(chunk >= 0) & (chunk < vocab_size)], minlength=vocab_size)
    return counts
