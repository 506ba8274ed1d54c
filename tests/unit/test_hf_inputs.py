"""`fast-electra prepare` on local Hugging Face `datasets` files: Parquet, Arrow (the stream format
`datasets` writes, and pyarrow's file format) and JSON lines, with --text-field."""
from __future__ import annotations

import json
import sys

import pytest

from fast_electra_ds.data.dataset import PackedDataset
from fast_electra_ds.data.prepare import cli as prepare_cli
from fast_electra_ds.data.text import iter_documents
from fast_electra_ds.data.tokenizer import load_tokenizer
from fast_electra_ds.errors import UserError

pa = pytest.importorskip("pyarrow")  # a test extra (pyproject.toml); fast-electra itself needs it only for these formats
import pyarrow.ipc  # noqa: E402
import pyarrow.parquet  # noqa: E402

ROWS = [{"id": i, "body": f"Row {i} says: the import statement finds a module and loads it."} for i in range(2500)]
ROWS[7]["body"] = None  # a missing value is no document
TEXTS = [r["body"] for r in ROWS if r["body"] is not None]


def prepare_ok(inputs, tokenizer, out, *extra) -> dict:
    assert prepare_cli(["--input", *map(str, inputs), "--tokenizer", str(tokenizer), "--out", str(out), "--workers", "1", *extra]) == 0
    return json.loads((out / "meta.json").read_text())


def packed_tokens(out, tokenizer_dir) -> int:
    dataset = PackedDataset(out, 64, tokenizer=load_tokenizer(tokenizer_dir))
    return dataset.num_tokens


def test_datasets_parquet_arrow_and_jsonl_files_prepare_alike(prepared, tmp_path):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_list(ROWS)
    table.to_parquet(str(tmp_path / "train.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))  # data-00000-of-00001.arrow: Arrow IPC stream
    table.to_json(str(tmp_path / "train.jsonl"))
    [arrow] = (tmp_path / "saved").glob("*.arrow")
    direct = [text.strip() for text in TEXTS]
    for path in (tmp_path / "train.parquet", arrow, tmp_path / "train.jsonl"):
        assert list(iter_documents(path, text_field="body")) == direct, path

    tokens = set()
    for name, path in (("parquet", tmp_path / "train.parquet"), ("arrow", arrow), ("jsonl", tmp_path / "train.jsonl")):
        meta = prepare_ok([path], prepared["tokenizer"], tmp_path / name, "--text-field", "body")
        assert meta["num_documents"] == len(TEXTS) and meta["text_field"] == "body"
        tokens.add(meta["num_tokens"])
        assert packed_tokens(tmp_path / name, prepared["tokenizer"]) == meta["num_tokens"]
    assert len(tokens) == 1  # the same documents, the same tokens
    for suffix in ("parquet", "arrow"):
        assert (tmp_path / suffix / "shard_00000.bin").read_bytes() == (tmp_path / "jsonl" / "shard_00000.bin").read_bytes()


def test_pyarrow_written_files_in_batches(tmp_path):
    table = pa.Table.from_pylist(ROWS)
    pa.parquet.write_table(table, tmp_path / "t.parquet", row_group_size=300)
    with pa.OSFile(str(tmp_path / "file.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=300)
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=300)
    for name in ("t.parquet", "file.arrow", "stream.arrow"):
        stats: dict = {}
        assert list(iter_documents(tmp_path / name, text_field="body", stats=stats)) == TEXTS, name
        assert stats["chars"] == sum(map(len, TEXTS)) and stats["control_chars"] == 0


def test_columnar_input_errors(tmp_path, monkeypatch):
    pa.parquet.write_table(pa.Table.from_pylist(ROWS[:3]), tmp_path / "t.parquet")
    with pytest.raises(UserError, match=r"t.parquet has no column 'text' \(columns: id, body\); pass --text-field"):
        list(iter_documents(tmp_path / "t.parquet"))
    with pytest.raises(UserError, match=r"column 'id' is of type int64, not text"):
        list(iter_documents(tmp_path / "t.parquet", text_field="id"))
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "t.parquet").read_bytes()[:200])
    with pytest.raises(UserError, match=r"cut.parquet is not a readable Parquet file"):
        list(iter_documents(tmp_path / "cut.parquet", text_field="body"))
    (tmp_path / "x.arrow").write_bytes(b"not arrow at all" * 10)
    with pytest.raises(UserError, match=r"x.arrow is not a readable Arrow IPC file"):
        list(iter_documents(tmp_path / "x.arrow", text_field="body"))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"reading t.parquet needs pyarrow, which is not installed; pip install pyarrow"):
        list(iter_documents(tmp_path / "t.parquet", text_field="body"))


def test_prepare_cli_one_line_error_for_a_missing_column(prepared, tmp_path):
    from tests.helpers import run_cli

    pa.parquet.write_table(pa.Table.from_pylist(ROWS[:3]), tmp_path / "t.parquet")
    result = run_cli(["prepare", "--input", str(tmp_path / "t.parquet"), "--tokenizer", str(prepared["tokenizer"]), "--out", str(tmp_path / "out")])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 't.parquet'} has no column 'text' (columns: id, body); "
                                                      "pass --text-field with the column that holds the text")
    assert not (tmp_path / "out").exists()


def test_tokenizer_trains_on_a_parquet_file(tmp_path):
    from fast_electra_ds.data.tokenizer import train_tokenizer

    rows = [{"body": f"zyxwvut number {i % 10} of a parquet row"} for i in range(2000)]
    pa.parquet.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    tokenizer = load_tokenizer(train_tokenizer([tmp_path / "t.parquet"], tmp_path / "tok", vocab_size=34, text_field="body"))
    assert len(tokenizer) == 34  # the most this text supports: it was read
    assert tokenizer.unk_token_id not in tokenizer("zyxwvut number 7 of a parquet row")["input_ids"]
