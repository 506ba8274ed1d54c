"""A small real corpus for checks that train end to end (tests, scripts/gpu_check.py, benchmarks/faults.py):
Python's pydoc topics (shipped with Python, no download), a sentencepiece tokenizer trained on them,
and their token shards."""
from __future__ import annotations

from pathlib import Path

from .prepare import prepare
from .text import write_pydoc_corpus
from .tokenizer import train_tokenizer


def prepare_tiny_corpus(root: Path, corpus: Path | None = None, vocab_size: int = 2000) -> dict[str, Path]:
    """root/tokenizer and root/data from the pydoc corpus at `corpus` (written to root/corpus.txt when
    not given); returns the paths as {"corpus", "tokenizer", "data", "root"}."""
    root = Path(root)
    if corpus is None:
        corpus = root / "corpus.txt"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        write_pydoc_corpus(corpus)
    train_tokenizer([str(corpus)], root / "tokenizer", vocab_size=vocab_size)
    prepare([str(corpus)], str(root / "tokenizer"), root / "data", workers=1, progress=False)
    return {"corpus": Path(corpus), "tokenizer": root / "tokenizer", "data": root / "data", "root": root}
