"""Tokenize raw text into Megatron IndexedDataset shards (`fast-electra prepare`).

Layout of a prepared dataset directory:
  shard_00000.bin / shard_00000.idx, shard_00001.*, ...  one IndexedDataset sequence per document,
                                                       no special tokens (PackedDataset adds them)
  meta.json                                            written last: its presence marks a complete dataset
The directory is built under a temporary name next to `out_dir` and renamed at the end, so an
interrupted prepare never leaves something that looks like a finished dataset.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, check_writable, writing_to
from ..runtime.temp_dirs import clean_orphans, temp_name
from .text import iter_documents
from .tokenizer import load_tokenizer, special_token_ids, tokenizer_fingerprint

META_FILE = "meta.json"
META_FORMAT_VERSION = 1
DOCUMENTS_PER_CHUNK = 64  # unit of work sent to a worker process
MAX_NON_TEXT_FRACTION = 0.2  # of the decoded characters: replaced bytes (U+FFFD) and control characters


def check_text_sanity(stats: dict, input_files, max_non_text: float) -> None:
    """Refuse input that is mostly not text (binary data, a wrong encoding): a few undecodable
    bytes (a Latin-1 accent in UTF-8 text) are counted and accepted, a corpus of them is not."""
    chars = stats.get("chars", 0)
    non_text = stats.get("replaced_chars", 0) + stats.get("control_chars", 0)
    if chars and non_text / chars > max_non_text:
        raise UserError(f"the input files ({', '.join(map(str, input_files))}) are not text: {non_text / chars:.0%} of the decoded characters "
                        f"are undecodable bytes or control characters (limit {max_non_text:.0%})",
                        "pass UTF-8 text, or raise the limit with --max-non-text-fraction")


def import_indexed_dataset():
    """megatron.core warns loudly at import about the optional Transformer Engine / Apex."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def shard_prefix(directory: Path, index: int) -> Path:
    return Path(directory) / f"shard_{index:05d}"


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size < 65500 else np.int32


# ---- worker side: one tokenizer per process, loaded once by the pool initializer ----
_worker_tokenizer = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_dir)


def _tokenize_chunk(documents: list[str]) -> list[np.ndarray]:
    # verbose=False: tokenizers with a model_max_length (e.g. BERT's 512) would warn about long
    # documents, which are expected here (PackedDataset cuts them into samples).
    encoded = _worker_tokenizer(documents, add_special_tokens=False, return_attention_mask=False,
                                return_token_type_ids=False, verbose=False)["input_ids"]
    return [np.asarray(ids, dtype=np.int64) for ids in encoded]


def _chunks(input_files, text_field: str, stats: dict):
    chunk: list[str] = []
    for path in input_files:
        for document in iter_documents(path, text_field=text_field, stats=stats):
            chunk.append(document)
            if len(chunk) == DOCUMENTS_PER_CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _tokenized_chunks(chunks, tokenizer_dir: str, workers: int):
    """Tokenized chunks in input order. With several workers, at most 4 chunks per worker are in
    flight (Pool.imap would read the whole corpus into its task queue ahead of the workers)."""
    if workers <= 1:
        _init_worker(tokenizer_dir)
        for chunk in chunks:
            yield _tokenize_chunk(chunk)
        return
    # The parent may already have used the Rust tokenizer's thread pool (e.g. in tests); after a
    # fork that would print a warning and fall back to one thread anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(tokenizer_dir,)) as pool:
        pending = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_tokenize_chunk, (chunk,)))
            if len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class _ShardWriter:
    """Writes documents into shard_00000, shard_00001, ... starting a new shard once the current
    one holds `shard_tokens` tokens (a document is never split across shards)."""

    def __init__(self, directory: Path, dtype, shard_tokens: int):
        self.builder_class = import_indexed_dataset().IndexedDatasetBuilder
        self.directory, self.dtype, self.shard_tokens = directory, dtype, shard_tokens
        self.shards: list[dict] = []
        self.builder = None

    def add(self, token_ids: np.ndarray) -> None:
        if self.builder is not None and self.shards[-1]["tokens"] >= self.shard_tokens:
            self._finish_shard()
        if self.builder is None:
            prefix = shard_prefix(self.directory, len(self.shards))
            self.builder = self.builder_class(str(prefix) + ".bin", dtype=self.dtype)
            self.shards.append({"name": prefix.name, "documents": 0, "tokens": 0})
        self.builder.add_item(torch.from_numpy(token_ids))
        self.builder.end_document()
        self.shards[-1]["documents"] += 1
        self.shards[-1]["tokens"] += int(token_ids.size)

    def _finish_shard(self) -> None:
        self.builder.finalize(str(shard_prefix(self.directory, len(self.shards) - 1)) + ".idx")
        self.builder = None

    def close(self) -> list[dict]:
        if self.builder is not None:
            self._finish_shard()
        return self.shards


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path {out_dir} exists and is not a directory", "pass a directory path to --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"output directory {out_dir} already exists and is not empty",
                        "pass --overwrite to replace it, or choose another --out")


def _publish(tmp_dir: Path, out_dir: Path) -> None:
    """Replace out_dir by the finished tmp_dir with renames (atomic on one filesystem)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(temp_name(out_dir, "old"))
        out_dir.rename(old)
    tmp_dir.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def entropy_of_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def prepare(input_files, tokenizer_dir, out_dir, workers: int = 2, text_field: str = "text",
            shard_tokens: int = 50_000_000, progress: bool = True, overwrite: bool = False,
            max_non_text_fraction: float = MAX_NON_TEXT_FRACTION) -> dict:
    """Tokenize every document of `input_files` with the tokenizer in `tokenizer_dir` into
    IndexedDataset shards in `out_dir`. Output bytes do not depend on `workers`.
    Returns the meta dict that is also written to out_dir/meta.json."""
    from tqdm import tqdm

    started = time.perf_counter()
    input_files = [Path(p) for p in ([input_files] if isinstance(input_files, (str, Path)) else input_files)]
    if not input_files:
        raise UserError("no input files given", "pass --input FILE [FILE ...]")
    for path in input_files:  # fail fast, before spawning workers
        if path.is_dir():
            # e.g. a Hugging Face `save_to_disk` directory: its data is in data-*.arrow files
            kind = next((s for s in (".arrow", ".parquet", ".jsonl") if any(path.glob(f"*{s}"))), ".txt")
            raise UserError(f"input {path} is a directory", f"pass the files inside it, e.g. --input {path}/*{kind}")
        if not path.is_file():
            raise UserError(f"input file {path} does not exist", "check the --input path")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}", "pass --workers 1 or more")
    if shard_tokens < 1:
        raise UserError(f"shard_tokens must be positive, got {shard_tokens}", "pass a positive shard size")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    check_writable(out_dir, "--out")

    tokenizer = load_tokenizer(tokenizer_dir)  # validates the directory in the parent
    vocab_size = len(tokenizer)
    dtype = token_dtype(vocab_size)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(out_dir, ("tmp", "old"))  # left by a prepare killed before it finished
    tmp_dir = out_dir.with_name(temp_name(out_dir, "tmp"))
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    stats: dict = {"undecodable_lines": 0, "replaced_chars": 0}
    documents = empty_documents = tokens = 0
    token_counts = np.zeros(vocab_size, dtype=np.int64)  # for the unigram entropy in meta.json
    try:
        writer = _ShardWriter(tmp_dir, dtype, shard_tokens)
        with tqdm(desc="prepare", unit=" docs", disable=not progress, file=sys.stderr) as bar:
            # closing(): stop the worker pool right away if anything below raises
            tokenized_chunks = contextlib.closing(_tokenized_chunks(_chunks(input_files, text_field, stats), str(tokenizer_dir), workers))
            with tokenized_chunks as chunks:
                for tokenized in chunks:
                    for token_ids in tokenized:
                        if token_ids.size == 0:  # e.g. text made only of characters the normaliser removes
                            empty_documents += 1
                            continue
                        writer.add(token_ids)
                        np.add.at(token_counts, token_ids, 1)
                        documents += 1
                        tokens += int(token_ids.size)
                    bar.update(len(tokenized))
        shards = writer.close()
        check_text_sanity(stats, input_files, max_non_text_fraction)
        if tokens == 0:
            raise UserError(f"the input files ({', '.join(map(str, input_files))}) produced no tokens",
                            "pass files with text the tokenizer can encode")
        meta = {
            "format_version": META_FORMAT_VERSION,
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
            "tokenizer_dir": str(Path(tokenizer_dir).resolve()),
            "vocab_size": vocab_size,
            "special_ids": special_token_ids(tokenizer),
            "dtype": np.dtype(dtype).name,
            "num_documents": documents,
            "num_tokens": tokens,
            # nats: the loss of a masked-LM that ignores context; training logs <mlm>_prior_gap against it
            "unigram_entropy": entropy_of_counts(token_counts),
            "num_shards": len(shards),
            "shards": shards,
            "empty_documents_skipped": empty_documents,
            "undecodable_lines": stats["undecodable_lines"],
            "replaced_chars": stats["replaced_chars"],
            "control_chars": stats.get("control_chars", 0),
            "source_files": [str(p.resolve()) for p in input_files],
            "text_field": text_field,
        }
        (tmp_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _publish(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    meta["seconds"] = time.perf_counter() - started
    return meta


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fast-electra prepare",
                                     description="Tokenize text into Megatron IndexedDataset shards for pre-training.")
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE", help="text (.txt), JSON lines (.jsonl), .json, or Hugging Face datasets' .parquet / .arrow files; .gz/.bz2 ok for text and JSON")
    parser.add_argument("--tokenizer", required=True, metavar="DIR", help="Hugging Face tokenizer directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="output dataset directory")
    parser.add_argument("--workers", type=int, default=2, help="tokenizer processes (default: 2)")
    parser.add_argument("--text-field", default="text", help="JSON field or Parquet/Arrow column holding the text (default: text)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--max-non-text-fraction", type=float, default=MAX_NON_TEXT_FRACTION, metavar="F",
                        help=f"refuse input whose decoded characters are more than F undecodable bytes or control characters (default: {MAX_NON_TEXT_FRACTION})")
    args = parser.parse_args(argv)

    with writing_to(args.out):
        meta = prepare(args.input, args.tokenizer, args.out, workers=args.workers, text_field=args.text_field,
                       overwrite=args.overwrite, progress=sys.stderr.isatty(), max_non_text_fraction=args.max_non_text_fraction)
    seconds = max(meta["seconds"], 1e-9)
    undecodable = f", {meta['undecodable_lines']} lines with undecodable bytes replaced" if meta["undecodable_lines"] else ""
    print(f"prepared {args.out}: {meta['num_documents']} documents, {meta['num_tokens']} tokens, "
          f"{meta['num_shards']} shard(s), {meta['num_tokens'] / seconds:,.0f} tokens/s{undecodable}")
    return 0
