"""Data pipeline on real text: the embedded pydoc corpus -> tokenizer -> shards -> packed samples."""
from __future__ import annotations

import bz2
import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

from fast_electra_ds.data.dataset import PackedDataset, RankBatches, epoch_permutation
from fast_electra_ds.data.prepare import cli as prepare_cli
from fast_electra_ds.data.prepare import import_indexed_dataset, prepare
from fast_electra_ds.data.text import iter_documents, write_pydoc_corpus
from fast_electra_ds.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, tokenizer_fingerprint, train_tokenizer
from fast_electra_ds.data.tokenizer import cli as tokenizer_cli
from fast_electra_ds.errors import UserError

SENTENCE = "The import statement finds a module, loads and initializes it, and defines a name in the local namespace."
SHARD_TOKENS = 40_000  # small, so the pydoc corpus (~110k tokens) spans several shards


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """Train one small tokenizer and prepare the pydoc corpus once for the whole file."""
    root = tmp_path_factory.mktemp("data")
    corpus = root / "pydoc.txt"
    num_docs = write_pydoc_corpus(corpus)
    tokenizer_dir = train_tokenizer([corpus], root / "tokenizer", vocab_size=2000)
    data_dir = root / "prepared"
    meta = prepare([corpus], tokenizer_dir, data_dir, workers=2, shard_tokens=SHARD_TOKENS, progress=False)
    return {"root": root, "corpus": corpus, "num_docs": num_docs, "tokenizer_dir": Path(tokenizer_dir),
            "tokenizer": load_tokenizer(tokenizer_dir), "data_dir": data_dir, "meta": meta}


def token_stream(work) -> list[int]:
    """The packed stream computed independently: documents tokenized directly, joined by [SEP]."""
    tokenizer = work["tokenizer"]
    stream: list[int] = []
    for i, document in enumerate(iter_documents(work["corpus"])):
        if i:
            stream.append(tokenizer.sep_token_id)
        stream.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
    return stream


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def copy_prepared(work, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(work["data_dir"], copy)
    return copy


# ---------------------------------------------------------------- text


def test_pydoc_corpus_reads_back_as_the_same_documents(work):
    documents = list(iter_documents(work["corpus"]))
    assert len(documents) == work["num_docs"] > 50
    assert any("assert" in d for d in documents)
    assert all(d == d.strip() and "\n\n" not in d for d in documents)
    # deterministic
    again = write_pydoc_corpus(work["root"] / "again.txt")
    assert again == work["num_docs"]
    assert (work["root"] / "again.txt").read_bytes() == work["corpus"].read_bytes()


def test_plain_jsonl_json_and_compressed_inputs(tmp_path):
    plain = write(tmp_path / "a.txt", "first line\nstill first\n\n\n  \nsecond doc\n")
    assert list(iter_documents(plain)) == ["first line\nstill first", "second doc"]
    jsonl = write(tmp_path / "b.jsonl", '{"body": "one"}\n\n{"body": "two", "id": 3}\n')
    assert list(iter_documents(jsonl, text_field="body")) == ["one", "two"]
    as_json = write(tmp_path / "c.json", json.dumps([{"text": "x y"}, {"text": "z"}]))
    assert list(iter_documents(as_json)) == ["x y", "z"]
    gz = write(tmp_path / "d.jsonl.gz", gzip.compress(b'{"text": "zipped"}\n'))
    assert list(iter_documents(gz)) == ["zipped"]
    bz = write(tmp_path / "e.txt.bz2", bz2.compress(b"bzipped text\n\nmore\n"))
    assert list(iter_documents(bz)) == ["bzipped text", "more"]


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    path = write(tmp_path / "bad.txt", b"Good text \xff\xfe here.\n\nSecond \xc3 doc.\n\nClean doc.\n")
    stats = {}
    documents = list(iter_documents(path, stats=stats))
    assert documents[0] == "Good text \ufffd\ufffd here." and "\ufffd" in documents[1]
    assert documents[2] == "Clean doc."
    assert stats["undecodable_lines"] == 2 and stats["replaced_chars"] == 3


def test_missing_empty_and_textless_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list(iter_documents(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="is empty"):
        list(iter_documents(write(tmp_path / "empty.txt", "")))
    with pytest.raises(UserError, match="contains no text"):
        list(iter_documents(write(tmp_path / "blank.txt", "\n  \n\t\n")))


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = write(tmp_path / "docs.jsonl", '{"text": "fine"}\n{"content": "no text field"}\n')
    with pytest.raises(UserError) as info:
        list(iter_documents(path))
    message = str(info.value)
    assert "docs.jsonl line 2" in message and "'text'" in message and "--text-field" in message
    bad = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(UserError, match=r"bad.jsonl line 2 is not valid JSON"):
        list(iter_documents(bad))


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_dir_loads_offline_with_specials(work):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(work["tokenizer_dir"]), local_files_only=True)
    assert tokenizer.is_fast and len(tokenizer) == 2000
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id,
            tokenizer.sep_token_id, tokenizer.mask_token_id) == (0, 1, 2, 3, 4)
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS
    assert (work["tokenizer_dir"] / "tokenizer.json").is_file()
    assert (work["tokenizer_dir"] / "spm.model").is_file()


def test_encode_decode_round_trip(work):
    tokenizer = work["tokenizer"]
    ids = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    assert min(ids) >= len(SPECIAL_TOKENS)  # no specials unless written literally
    assert len(ids) < len(SENTENCE.split()) * 3  # real subwords, not characters
    assert tokenizer.decode(ids) == SENTENCE
    with_specials = tokenizer(SENTENCE)["input_ids"]
    assert with_specials == [tokenizer.cls_token_id] + ids + [tokenizer.sep_token_id]
    assert tokenizer.mask_token_id in tokenizer("a [MASK] b", add_special_tokens=False)["input_ids"]


def test_tokenizer_training_is_deterministic(work, tmp_path):
    again = Path(train_tokenizer([work["corpus"]], tmp_path / "again", vocab_size=2000))
    assert (again / "tokenizer.json").read_bytes() == (work["tokenizer_dir"] / "tokenizer.json").read_bytes()
    assert tokenizer_fingerprint(load_tokenizer(again)) == tokenizer_fingerprint(work["tokenizer"])


def test_vocab_too_large_is_a_user_error(work, tmp_path):
    with pytest.raises(UserError, match=r"too large for this corpus.*smaller --vocab-size"):
        train_tokenizer([work["corpus"]], tmp_path / "huge", vocab_size=200_000)


def test_load_tokenizer_errors(work, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "not_a_tokenizer").mkdir()
    with pytest.raises(UserError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path / "not_a_tokenizer")
    no_mask = tmp_path / "no_mask"
    shutil.copytree(work["tokenizer_dir"], no_mask)
    config = json.loads((no_mask / "tokenizer_config.json").read_text())
    del config["mask_token"]
    (no_mask / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="has no mask token"):
        load_tokenizer(no_mask)


def bert_tokenizer_dir(root: Path) -> Path:
    """A WordPiece (BERT) tokenizer directory whose special ids are not 0..4."""
    directory = root / "bert"
    directory.mkdir()
    words = "the a an of and to in is it for that with as on be by this are or from".split()
    vocab = ["[UNK]", ".", ",", "(", ")", "[SEP]", "[PAD]", "[CLS]", "[MASK]"] + words + ["##s", "##ed", "##ing"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    return directory


def test_existing_bert_tokenizer_works_end_to_end(work, tmp_path):
    directory = bert_tokenizer_dir(tmp_path)
    tokenizer = load_tokenizer(directory)
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id) == (6, 7, 5, 8)
    text = write(tmp_path / "t.txt", "It is the end of a line.\n\nAnd this is in the other one.\n")
    prepare([text], directory, tmp_path / "prepared", workers=1, progress=False)
    dataset = PackedDataset(tmp_path / "prepared", seq_len=64, tokenizer=tokenizer)
    assert dataset.special_ids == {"pad": 6, "unk": 0, "cls": 7, "sep": 5, "mask": 8}
    ids = dataset[0]["input_ids"].tolist()
    assert ids[0] == 7 and ids[-1] == 6 and 5 in ids


# ---------------------------------------------------------------- prepare


def test_prepare_writes_megatron_shards_matching_direct_tokenization(work):
    data_dir, meta = work["data_dir"], work["meta"]
    on_disk = json.loads((data_dir / "meta.json").read_text())
    assert on_disk["tokenizer_fingerprint"] == tokenizer_fingerprint(work["tokenizer"])
    assert on_disk["vocab_size"] == 2000 and on_disk["dtype"] == "uint16"
    assert on_disk["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert on_disk["num_documents"] == work["num_docs"] and meta["num_documents"] == work["num_docs"]
    assert on_disk["num_shards"] >= 3 and on_disk["undecodable_lines"] == 0
    assert on_disk["source_files"] == [str(work["corpus"].resolve())]

    IndexedDataset = import_indexed_dataset().IndexedDataset
    documents = []
    for i in range(on_disk["num_shards"]):
        shard = IndexedDataset(str(data_dir / f"shard_{i:05d}"))
        assert len(shard) == len(shard.get_document_indices()) - 1  # one sequence per document
        documents += [shard[j].tolist() for j in range(len(shard))]
    direct = [work["tokenizer"](d, add_special_tokens=False)["input_ids"] for d in iter_documents(work["corpus"])]
    assert documents == direct
    assert sum(map(len, direct)) == on_disk["num_tokens"] > 50_000
    assert not any(token < len(SPECIAL_TOKENS) for document in documents for token in document if token != 1)
    assert not [p for p in data_dir.parent.iterdir() if ".tmp-" in p.name]


def test_prepare_output_is_identical_for_one_and_two_workers(work, tmp_path):
    prepare([work["corpus"]], work["tokenizer_dir"], tmp_path / "one", workers=1, shard_tokens=SHARD_TOKENS, progress=False)
    names = sorted(p.name for p in work["data_dir"].iterdir() if p.suffix in (".bin", ".idx"))
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir() if p.suffix in (".bin", ".idx"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (work["data_dir"] / name).read_bytes(), name


def test_prepare_counts_undecodable_bytes(work, tmp_path):
    text = write(tmp_path / "bad.txt", b"Some \xff text.\n\nMore text.\n")
    meta = prepare([text], work["tokenizer_dir"], tmp_path / "out", workers=1, progress=False)
    assert meta["undecodable_lines"] == 1 and meta["num_documents"] == 2
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["undecodable_lines"] == 1


def test_prepare_refuses_existing_out_dir_unless_overwrite(work, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(UserError, match=r"already exists.*--overwrite"):
        prepare([work["corpus"]], work["tokenizer_dir"], out, workers=1, progress=False)
    meta = prepare([work["corpus"]], work["tokenizer_dir"], out, workers=1, progress=False, overwrite=True)
    assert not (out / "something").exists() and (out / "meta.json").is_file()
    assert meta["num_tokens"] == work["meta"]["num_tokens"] and meta["num_shards"] == 1


def test_failed_prepare_leaves_nothing_behind(work, tmp_path):
    bad = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n' * 100 + '{"txt": "no"}\n')
    with pytest.raises(UserError, match="line 101"):
        prepare([work["corpus"], bad], work["tokenizer_dir"], tmp_path / "out", workers=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_prepare_input_errors(work, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare([tmp_path / "missing.txt"], work["tokenizer_dir"], tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="is empty"):
        prepare([write(tmp_path / "empty.txt", "")], work["tokenizer_dir"], tmp_path / "out", workers=1, progress=False)
    with pytest.raises(UserError, match="tokenizer directory .* does not exist"):
        prepare([work["corpus"]], tmp_path / "no_tokenizer", tmp_path / "out", progress=False)


def test_clis_print_summaries(work, tmp_path, capsys):
    text = write(tmp_path / "t.txt", "\n\n".join(iter_documents(work["corpus"])))
    assert tokenizer_cli(["--input", str(text), "--out", str(tmp_path / "tok"), "--vocab-size", "1000"]) == 0
    assert "tokenizer: 1000 tokens" in capsys.readouterr().out
    assert prepare_cli(["--input", str(text), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "ds"), "--workers", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert f"{work['num_docs']} documents" in line and "1 shard(s)" in line and "tokens/s" in line


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("seq_len", [64, 509])
def test_packed_samples_reproduce_the_token_stream(work, seq_len):
    dataset = PackedDataset(work["data_dir"], seq_len=seq_len, tokenizer=work["tokenizer"])
    cls, sep, pad = 2, 3, 0
    inner: list[int] = []
    for i in range(len(dataset)):
        item = dataset[i]
        ids, mask = item["input_ids"], item["attention_mask"]
        assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (seq_len,)
        real = int(mask.sum())
        assert mask[:real].all() and not mask[real:].any()  # padding only at the end
        assert ids[0] == cls and ids[real - 1] == sep and (ids[real:] == pad).all()
        if i < len(dataset) - 1:
            assert real == seq_len  # only the last sample may be padded
        inner += ids[1:real - 1].tolist()
    assert inner == token_stream(work)
    assert dataset.vocab_size == 2000 and dataset.fingerprint == work["meta"]["tokenizer_fingerprint"]


def test_corpus_shorter_than_one_sample_gives_one_padded_sample(work, tmp_path):
    prepare([write(tmp_path / "tiny.txt", "Hello world.\n\nBye.\n")], work["tokenizer_dir"], tmp_path / "tiny", workers=1, progress=False)
    dataset = PackedDataset(tmp_path / "tiny", seq_len=128)
    assert len(dataset) == 1
    item = dataset[0]
    real = int(item["attention_mask"].sum())
    assert 5 < real < 128 and item["input_ids"][real:].eq(0).all()
    encode = lambda text: work["tokenizer"](text, add_special_tokens=False)["input_ids"]
    assert item["input_ids"][:real].tolist() == [2] + encode("Hello world.") + [3] + encode("Bye.") + [3]


def test_missing_meta_json(tmp_path):
    with pytest.raises(UserError, match=r"not a prepared dataset.*fast-electra prepare"):
        PackedDataset(tmp_path, seq_len=128)


def test_tokenizer_mismatch(work, tmp_path):
    other = load_tokenizer(train_tokenizer([work["corpus"]], tmp_path / "other", vocab_size=1500))
    with pytest.raises(UserError, match=r"vocabulary mismatch.*re-run `fast-electra prepare` with this tokenizer"):
        PackedDataset(work["data_dir"], seq_len=128, tokenizer=other)


def test_truncated_bin(work, tmp_path):
    data_dir = copy_prepared(work, tmp_path)
    bin_path = data_dir / "shard_00001.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"shard_00001.*truncated or corrupted.*re-run `fast-electra prepare`"):
        PackedDataset(data_dir, seq_len=128)


def test_corrupted_and_truncated_idx(work, tmp_path):
    data_dir = copy_prepared(work, tmp_path)
    idx_path = data_dir / "shard_00000.idx"
    original = idx_path.read_bytes()
    idx_path.write_bytes(b"garbage!!" + original[9:])
    with pytest.raises(UserError, match=r"shard_00000 has a corrupted index file.*re-run"):
        PackedDataset(data_dir, seq_len=128)
    idx_path.write_bytes(original[:-8])
    with pytest.raises(UserError, match=r"shard_00000 has a truncated or corrupted index"):
        PackedDataset(data_dir, seq_len=128)
    idx_path.write_bytes(original[:20])
    with pytest.raises(UserError, match=r"shard_00000 has a corrupted index"):
        PackedDataset(data_dir, seq_len=128)


def test_missing_shard_file(work, tmp_path):
    data_dir = copy_prepared(work, tmp_path)
    (data_dir / "shard_00002.bin").unlink()
    with pytest.raises(UserError, match=r"shard_00002 is missing its .bin file"):
        PackedDataset(data_dir, seq_len=128)


# ---------------------------------------------------------------- rank batches


@pytest.fixture(scope="module")
def dataset(work):
    return PackedDataset(work["data_dir"], seq_len=64)


def test_rank_batches_are_disjoint_and_cover_an_epoch(dataset):
    micro, world = 4, 3
    n = len(dataset)
    iterators = [RankBatches(dataset, micro, rank, world, seed=7) for rank in range(world)]
    per_rank: list[list[int]] = [[] for _ in range(world)]
    while iterators[0].consumed_samples < n:
        for rank, iterator in enumerate(iterators):
            per_rank[rank] += iterator.sample_indices()
            iterator.consumed_samples += micro * world  # skip loading tensors: indices are what matters here
    first_epoch = [per_rank[r][i * micro:(i + 1) * micro] for i in range(len(per_rank[0]) // micro) for r in range(world)]
    flat = [index for batch in first_epoch for index in batch][:n]
    assert sorted(flat) == list(range(n))  # one epoch covers every sample exactly once
    steps_in_epoch = n // (micro * world)
    complete = [set(per_rank[r][:steps_in_epoch * micro]) for r in range(world)]
    assert all(not (complete[a] & complete[b]) for a in range(world) for b in range(a + 1, world))


def test_rank_batches_yield_dataset_samples(dataset):
    iterator = RankBatches(dataset, micro_batch_size=2, rank=1, world_size=2, seed=3)
    indices = iterator.sample_indices()
    batch = next(iterator)
    assert batch["input_ids"].shape == (2, 64) and batch["attention_mask"].shape == (2, 64)
    assert torch.equal(batch["input_ids"], torch.stack([dataset[i]["input_ids"] for i in indices]))
    assert iterator.consumed_samples == 4
    expected = epoch_permutation(len(dataset), 3, 0)[2:4].tolist()  # rank 1's slice of the first step
    assert indices == expected


def test_rank_batches_order_depends_on_seed_and_epoch(dataset):
    n = len(dataset)
    first = RankBatches(dataset, 8, 0, 1, seed=11).sample_indices()
    assert first == RankBatches(dataset, 8, 0, 1, seed=11).sample_indices()
    assert first != RankBatches(dataset, 8, 0, 1, seed=12).sample_indices()
    assert first != RankBatches(dataset, 8, 0, 1, seed=11, consumed_samples=n).sample_indices()  # epoch 1
    assert not torch.equal(epoch_permutation(n, 11, 0), epoch_permutation(n, 11, 1))


def test_resume_from_consumed_samples_matches_uninterrupted(dataset):
    uninterrupted = RankBatches(dataset, micro_batch_size=3, rank=1, world_size=2, seed=5)
    for _ in range(4):
        next(uninterrupted)
    consumed = uninterrupted.consumed_samples
    assert consumed == 4 * 3 * 2
    resumed = RankBatches(dataset, micro_batch_size=3, rank=1, world_size=2, seed=5, consumed_samples=consumed)
    for _ in range(3):
        a, b = next(uninterrupted), next(resumed)
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    assert resumed.consumed_samples == uninterrupted.consumed_samples
    # across an epoch boundary too
    n = len(dataset)
    late = RankBatches(dataset, 8, 0, 2, seed=5, consumed_samples=n - 5)
    assert late.sample_indices() == (epoch_permutation(n, 5, 0)[n - 5:].tolist() + epoch_permutation(n, 5, 1)[:3].tolist())


def test_rank_batches_smaller_dataset_than_a_step(work, tmp_path):
    prepare([write(tmp_path / "tiny.txt", "Hello world.\n")], work["tokenizer_dir"], tmp_path / "tiny", workers=1, progress=False)
    tiny = PackedDataset(tmp_path / "tiny", seq_len=32)
    assert len(tiny) == 1
    iterator = RankBatches(tiny, micro_batch_size=3, rank=1, world_size=2, seed=0)
    batch = next(iterator)
    assert batch["input_ids"].shape == (3, 32) and iterator.consumed_samples == 6 and iterator.epoch == 6


def test_rank_batches_argument_errors(dataset):
    with pytest.raises(ValueError, match="rank 2"):
        RankBatches(dataset, 4, rank=2, world_size=2, seed=0)
    with pytest.raises(ValueError, match="must be positive"):
        RankBatches(dataset, 0, rank=0, world_size=1, seed=0)
    with pytest.raises(ValueError, match="must be positive"):
        RankBatches(dataset, 4, rank=0, world_size=0, seed=0)


# ---------------------------------------------------------------- changed or orphaned files

def test_a_shard_overwritten_in_place_is_named_at_the_sample_that_reads_it(work, tmp_path):
    import numpy as np

    data = copy_prepared(work, tmp_path)
    dataset = PackedDataset(data, 64)
    second = dataset.shards[1]
    position = int(second.doc_offsets[3]) + 2  # a token inside the second shard's fourth document
    tokens = np.memmap(f"{second.prefix}.bin", dtype=second.tokens.dtype, mode="r+")
    tokens[position] = 2000  # one id past the 2000-token vocabulary; the file keeps its size
    tokens.flush()
    dataset = PackedDataset(data, 64)  # the open-time checks (sizes, index) still pass
    stream_position = int(dataset.doc_starts[len(dataset.shards[0].doc_lengths) + 3]) + 2
    bad_sample = stream_position // dataset.tokens_per_sample
    assert dataset[bad_sample - 1]["input_ids"].max() < 2000
    with pytest.raises(UserError, match=rf"shard {second.prefix.name} .* holds token id 2000 at token {position}, outside the vocabulary's 2000 ids"):
        dataset[bad_sample]


def test_prepare_removes_the_temp_directory_of_a_killed_prepare(work, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import cpu_env

    big = tmp_path / "big.txt"
    big.write_text(work["corpus"].read_text() * 3)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fast_electra_ds.cli", "prepare", "--input", str(big), "--tokenizer", str(work["tokenizer_dir"]),
               "--out", str(out), "--workers", "1"]
    job = subprocess.Popen(command, env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 1200  # a loaded machine took over 300 s to start the prepare
    while not list(tmp_path.glob(".out.tmp-*")) and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    output = job.communicate()[0].decode(errors="replace")
    assert job.returncode == -signal.SIGKILL, output[-2000:]  # killed while it ran, not finished or failed before
    [orphan] = tmp_path.glob(".out.tmp-*")  # what kill -9 leaves
    result = subprocess.run(command, env=cpu_env(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not orphan.exists() and not list(tmp_path.glob(".out.*"))
    said = [line for line in result.stderr.splitlines() if line.startswith("warning: removed")]
    assert len(said) == 1 and str(orphan) in said[0] and f"process {job.pid} no longer runs" in said[0], result.stderr[-2000:]
    assert json.loads((out / "meta.json").read_text())["num_documents"] > work["num_docs"]
