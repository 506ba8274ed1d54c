"""The data stages: the corpus (text files from the sources plus pydoc), the sentencepiece tokenizer
trained on it, and its token shards, each a stage record that a re-run skips."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fast_electra_ds.errors import UserError

from .settings import Settings
from .stages import done, finish, say


def assemble_corpus(out_dir: Path, sources: list[str] | None, pydoc: bool = True) -> dict[str, Any]:
    """The pre-training text files: each source (default: gensim's shortened Wikipedia dump) as
    blank-line-separated documents (a MediaWiki dump is stripped into wiki.txt-style files, other
    files are used as they are), plus the embedded pydoc corpus. Returns the files and their counts."""
    from fast_electra_ds.data.text import iter_documents, write_pydoc_corpus
    from fast_electra_ds.data.wiki import is_wiki_dump, wiki_test_dump, write_wiki_corpus

    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, source in enumerate(sources if sources else [str(wiki_test_dump())]):
        path = Path(source)
        if not path.is_file():
            raise UserError(f"corpus file {path} does not exist", "pass existing text, JSON lines or MediaWiki XML files to --corpus")
        if is_wiki_dump(path):
            text_file = out_dir / f"wiki{index}.txt"
            stats = write_wiki_corpus(path, text_file)
            parts.append({"source": str(path), "file": str(text_file), "documents": stats["documents"], "words": stats["words"],
                          "pages": stats["pages"], "redirects": stats["redirects"], "too_short": stats["too_short"]})
        else:
            documents = list(iter_documents(path))
            parts.append({"source": str(path), "file": str(path), "documents": len(documents),
                          "words": sum(len(d.split()) for d in documents)})
    if pydoc:
        text_file = out_dir / "pydoc.txt"
        write_pydoc_corpus(text_file)
        documents = list(iter_documents(text_file))
        parts.append({"source": "pydoc_data.topics (embedded)", "file": str(text_file), "documents": len(documents),
                      "words": sum(len(d.split()) for d in documents)})
    return {"parts": parts, "files": [p["file"] for p in parts],
            "documents": sum(p["documents"] for p in parts), "words": sum(p["words"] for p in parts)}


def prepare_data(settings: Settings) -> tuple[dict, dict]:
    """The corpus, tokenizer and prepare stages, each run unless finished; returns the corpus and the
    prepare records."""
    corpus = done(settings.work, "corpus")
    if corpus is None:
        say("corpus: Wikipedia articles + pydoc")
        begun = time.time()
        corpus = assemble_corpus(settings.work / "corpus", settings.corpus, settings.pydoc)
        corpus = finish(settings.work, "corpus", {**corpus, "wall_time_s": time.time() - begun})
    say(f"corpus: {corpus['documents']} documents, {corpus['words']:,} words")
    if done(settings.work, "tokenizer") is None:
        from fast_electra_ds.data.tokenizer import train_tokenizer

        say(f"tokenizer: sentencepiece unigram, {settings.vocab_size} pieces")
        begun = time.time()
        train_tokenizer(corpus["files"], settings.work / "tokenizer", vocab_size=settings.vocab_size)
        finish(settings.work, "tokenizer", {"vocab_size": settings.vocab_size, "wall_time_s": time.time() - begun})
    prepared = done(settings.work, "prepare")
    if prepared is None:
        from fast_electra_ds.data.prepare import prepare

        say("prepare: token shards")
        meta = prepare(corpus["files"], settings.work / "tokenizer", settings.work / "data", workers=min(2, os.cpu_count() or 1), overwrite=True)
        prepared = finish(settings.work, "prepare", {"num_tokens": meta["num_tokens"], "num_documents": meta["num_documents"],
                                                     "wall_time_s": meta["seconds"]})
    say(f"prepared: {prepared['num_tokens']:,} tokens")
    return corpus, prepared
