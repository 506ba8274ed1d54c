"""Reading raw text into documents, and the embedded default corpus.

Formats (chosen by file name):
  * `.jsonl`: one JSON object per line, the document is `obj[text_field]`.
  * `.json`: a JSON array of objects (or strings); a file that is really JSON lines also works.
  * `.parquet`, `.arrow`: columnar files as Hugging Face `datasets` writes them (`to_parquet`,
    `save_to_disk`'s data-*.arrow, its cache files) or pyarrow does (Arrow IPC file or stream);
    the document is the `text_field` column. Read a record batch at a time, with pyarrow.
  * a MediaWiki XML dump (recognised by its `<mediawiki` start, any name): one document per article,
    markup stripped (data/wiki.py).
  * anything else: plain text, one document per blank-line-separated block.
A trailing `.gz` / `.bz2` is decompressed on the fly (`corpus.jsonl.gz` is JSON lines; not for the
columnar formats, which compress inside).

Bytes that are not valid UTF-8 are replaced with U+FFFD and counted into `stats` rather than
failing: a few bad bytes in a multi-GB crawl should not stop a pre-training run, but the count
is recorded in the prepared dataset's meta.json so it is visible.
"""
from __future__ import annotations

import bz2
import gzip
import json
import os
import re
from pathlib import Path
from typing import Iterator, MutableMapping

from ..errors import UserError
from .wiki import is_wiki_dump, iter_wiki_documents

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open}


def _open_binary(path: Path):
    opener = _OPENERS.get(path.suffix.lower(), open)
    return opener(path, "rb")


def _format_suffix(path: Path) -> str:
    """The suffix that decides the text format, looking through a compression suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _count(stats: MutableMapping | None, key: str, amount: int) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + amount


def _decoded_lines(path: Path, stats: MutableMapping | None) -> Iterator[tuple[int, str]]:
    """(line number, line without newline), decoding each line separately so a bad byte only
    affects its own line. Splitting raw bytes on b"\\n" is safe: UTF-8 never uses 0x0A inside a
    multi-byte character."""
    try:
        stream = _open_binary(path)
    except OSError as e:
        raise UserError(f"cannot open input file {path}: {e.strerror or e}", "check the path and its permissions")
    with stream:
        try:
            for number, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = raw.decode("utf-8", errors="replace")
                    _count(stats, "undecodable_lines", 1)
                    _count(stats, "replaced_chars", line.count("\ufffd"))
                if number == 1 and line.startswith("\ufeff"):  # byte-order mark
                    line = line[1:]
                line = line.rstrip("\r\n")
                _count(stats, "chars", len(line))
                if not line.isprintable():  # rare in text: only then count the control characters
                    _count(stats, "control_chars", sum(1 for c in line if c < " " and c != "\t" or c == "\x7f"))
                yield number, line
        except (OSError, EOFError) as e:  # e.g. a truncated or non-gzip .gz file
            raise UserError(f"cannot read input file {path}: {e}", "check that the file is a complete, valid archive")


def _plain_documents(path: Path, stats) -> Iterator[str]:
    block: list[str] = []
    for _, line in _decoded_lines(path, stats):
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block).strip()
            block = []
    if block:
        yield "\n".join(block).strip()


def _field_text(obj, text_field: str, where: str) -> str:
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, dict):
        raise UserError(f"{where} is a JSON {type(obj).__name__}, not an object", f"write one object with a {text_field!r} field per document")
    if text_field not in obj:
        keys = ", ".join(sorted(map(str, obj))[:10]) or "none"
        raise UserError(f"{where} has no field {text_field!r} (fields: {keys})", "pass --text-field with the field that holds the text")
    text = obj[text_field]
    if text is None:  # a missing value (Hugging Face datasets writes null): no document
        return ""
    if not isinstance(text, str):
        raise UserError(f"{where}: field {text_field!r} is a {type(text).__name__}, not a string", "pass --text-field naming a text field")
    return text


def _jsonl_documents(path: Path, text_field: str, stats) -> Iterator[str]:
    for number, line in _decoded_lines(path, stats):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {number} is not valid JSON ({e.msg})", "write one JSON object per line (JSON lines)")
        yield _field_text(obj, text_field, f"{path} line {number}").strip()


def _json_documents(path: Path, text_field: str, stats) -> Iterator[str]:
    lines = [line for _, line in _decoded_lines(path, stats)]
    try:
        data = json.loads("\n".join(lines))
    except json.JSONDecodeError:
        # Many ".json" corpora are really JSON lines.
        yield from _jsonl_documents(path, text_field, None)  # bytes were already counted above
        return
    items = data if isinstance(data, list) else [data]
    for i, obj in enumerate(items):
        yield _field_text(obj, text_field, f"{path} item {i}").strip()


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not tab or line breaks
_COLUMNAR = (".parquet", ".arrow")


def _import_pyarrow(path: Path):
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise UserError(f"reading {path.name} needs pyarrow, which is not installed",
                        "pip install pyarrow (Hugging Face datasets brings it)") from None
    return pyarrow


def _record_batches(pa, path: Path, text_field: str):
    """The record batches of a Parquet or Arrow file holding `text_field`, read one at a time (a
    memory map would keep every page read resident); the file is closed when they are done."""
    kind = "Parquet" if _format_suffix(path) == ".parquet" else "Arrow IPC"
    try:
        source = pa.OSFile(str(path))
        if kind == "Parquet":
            parquet = pa.parquet.ParquetFile(source)
            names = parquet.schema_arrow.names
            batches = parquet.iter_batches(batch_size=1024, columns=[text_field])  # lazy: nothing read before the check below
        else:
            try:  # the random-access file format (pyarrow's default for .arrow files) ...
                reader = pa.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:  # ... or the stream format (what Hugging Face datasets writes)
                source.seek(0)
                reader = pa.ipc.open_stream(source)
                batches = iter(reader)
            names = reader.schema.names
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path} is not a readable {kind} file ({str(e).splitlines()[0]})", f"pass a complete {kind} file") from None
    with source:
        if text_field not in names:
            raise UserError(f"{path} has no column {text_field!r} (columns: {', '.join(names[:20]) or 'none'})",
                            "pass --text-field with the column that holds the text")
        yield from batches


def _columnar_documents(path: Path, text_field: str, stats) -> Iterator[str]:
    if path.suffix.lower() in _OPENERS:
        raise UserError(f"{path} is a compressed {_format_suffix(path)} file", "pass it uncompressed (Parquet and Arrow compress inside)")
    pa = _import_pyarrow(path)
    try:
        for batch in _record_batches(pa, path, text_field):
            column = batch.column(batch.schema.get_field_index(text_field))
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise UserError(f"{path}: column {text_field!r} is of type {column.type}, not text",
                                "pass --text-field naming a text column")
            for text in column.to_pylist():
                if text is None:  # a missing value: no document
                    continue
                _count(stats, "chars", len(text))
                _count(stats, "control_chars", len(_CONTROL_CHARS.findall(text)))
                yield text.strip()
    except (pa.ArrowException, OSError) as e:  # e.g. a file truncated after its schema
        raise UserError(f"cannot read {path} ({str(e).splitlines()[0]})", "check that the file is complete") from None


def iter_documents(path, text_field: str = "text", stats: MutableMapping | None = None) -> Iterator[str]:
    """Yield the non-empty documents of one input file (see the module docstring for formats).

    `stats`, if given, is a dict that receives `undecodable_lines`, `replaced_chars`, `chars` and
    `control_chars` counts (plain text, JSON, Parquet and Arrow; a wiki dump is not counted).
    Raises UserError for a missing, empty or text-less file and for malformed JSON(L) lines.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"input file {path} does not exist", "check the --input path")
    if path.is_dir():
        raise UserError(f"input {path} is a directory", "pass the text files inside it")
    if os.path.getsize(path) == 0:
        raise UserError(f"input file {path} is empty", "pass a file with text")

    suffix = _format_suffix(path)
    if suffix == ".jsonl":
        documents = _jsonl_documents(path, text_field, stats)
    elif suffix == ".json":
        documents = _json_documents(path, text_field, stats)
    elif suffix in _COLUMNAR:
        documents = _columnar_documents(path, text_field, stats)
    elif is_wiki_dump(path):
        documents = iter_wiki_documents(path)
    else:
        documents = _plain_documents(path, stats)

    yielded = 0
    for document in documents:
        if document:
            yielded += 1
            yield document
    if yielded == 0:
        raise UserError(f"input file {path} contains no text", "pass a file with at least one non-empty document")


def pydoc_documents() -> list[str]:
    """The embedded default corpus: the English reference text that ships with every CPython
    (`pydoc_data.topics`, ~80 topics, ~0.5 MB). One document per topic, in sorted topic order;
    blank lines inside a topic are dropped so each topic stays one blank-line-separated block."""
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        lines = [line.rstrip() for line in topics[name].splitlines() if line.strip()]
        if lines:
            documents.append("\n".join(lines))
    return documents


def write_pydoc_corpus(out_path) -> int:
    """Write the embedded default corpus as a plain-text file (documents separated by a blank
    line; readable back with `iter_documents`). Returns the number of documents."""
    documents = pydoc_documents()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return len(documents)
