"""Megatron-LM / NeMo corpora read as they are: .bin/.idx written by megatron-core's own
IndexedDatasetBuilder (as tools/preprocess_data.py does: add_item per sentence, end_document per
document), with no meta.json, document- and sentence-level."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fast_electra_ds.data.dataset import PackedDataset
from fast_electra_ds.data.prepare import entropy_of_counts, import_indexed_dataset, prepare
from fast_electra_ds.data.text import iter_documents
from fast_electra_ds.data.tokenizer import load_tokenizer, tokenizer_fingerprint, train_tokenizer
from fast_electra_ds.errors import UserError

SEQ_LEN = 64


def sentences(document: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?:])\s+", document) if s.strip()]


def build(prefix: Path, documents: list[list[list[int]]], dtype=np.int32, by_document: bool = False) -> Path:
    """Write `documents` (each a list of sequences of token ids) with megatron-core's builder: a
    sequence at a time, or (`by_document`) a document at a time, as preprocess_data.py does now."""
    builder = import_indexed_dataset().IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for document in documents:
        if by_document:
            builder.add_document(torch.tensor([t for sequence in document for t in sequence]), [len(s) for s in document])
            continue
        for sequence in document:
            builder.add_item(torch.tensor(sequence, dtype=torch.int64))
        builder.end_document()
    builder.finalize(str(prefix) + ".idx")
    return prefix


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The pydoc corpus tokenized two ways: one sequence per document, and one per sentence."""
    from fast_electra_ds.data.text import write_pydoc_corpus

    root = tmp_path_factory.mktemp("megatron")
    write_pydoc_corpus(root / "pydoc.txt")
    tokenizer = load_tokenizer(train_tokenizer([root / "pydoc.txt"], root / "tokenizer", vocab_size=1000))
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    texts = list(iter_documents(root / "pydoc.txt"))
    by_document = [[encode(text)] for text in texts]
    by_sentence = [[encode(s) for s in sentences(text)] for text in texts]
    return {"root": root, "tokenizer": tokenizer, "tokenizer_dir": root / "tokenizer",
            "by_document": by_document, "by_sentence": by_sentence,
            "document_prefix": build(root / "pydoc_text_document", by_document),
            "sentence_prefix": build(root / "pydoc_text_sentence", by_sentence, dtype=np.uint16)}


def expected_stream(documents, sep: int) -> list[int]:
    """Each document's sequences as one run of text, documents joined by [SEP]."""
    stream: list[int] = []
    for document in documents:
        if stream:
            stream.append(sep)
        stream += [token for sequence in document for token in sequence]
    return stream


def packed_stream(dataset: PackedDataset) -> list[int]:
    ids = dataset.special_ids
    inner: list[int] = []
    for i in range(len(dataset)):
        item = dataset[i]
        real = int(item["attention_mask"].sum())
        row = item["input_ids"].tolist()
        assert row[0] == ids["cls"] and row[real - 1] == ids["sep"] and set(row[real:]) <= {ids["pad"]}
        assert real == dataset.seq_len or i == len(dataset) - 1  # only the last sample is padded
        inner += row[1:real - 1]
    return inner


@pytest.mark.parametrize("level", ["document", "sentence"])
def test_megatron_corpus_packs_into_the_expected_token_stream(corpus, level, capsys):
    documents, prefix = corpus[f"by_{level}"], corpus[f"{level}_prefix"]
    shard = import_indexed_dataset().IndexedDataset(str(prefix))
    assert len(shard.document_indices) - 1 == len(documents)
    if level == "sentence":  # several sequences per document, as sentence-split BERT corpora have
        assert len(shard) > 3 * len(documents)
    assert not (prefix.parent / "meta.json").exists()

    tokenizer = corpus["tokenizer"]
    dataset = PackedDataset(str(prefix), SEQ_LEN, tokenizer=tokenizer)
    assert packed_stream(dataset) == expected_stream(documents, tokenizer.sep_token_id)
    assert dataset.vocab_size == len(tokenizer) == 1000
    assert dataset.special_ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert dataset.fingerprint == tokenizer_fingerprint(tokenizer)
    assert dataset.meta["num_documents"] == len(documents) and "unigram_entropy" not in dataset.meta
    tokens = [t for document in documents for sequence in document for t in sequence]
    assert dataset.unigram_entropy() == pytest.approx(entropy_of_counts(np.bincount(tokens, minlength=1000)))
    line = capsys.readouterr().out
    assert "no meta.json, so only the token id range could be checked" in line and f"{len(documents)} documents" in line


def test_several_prefixes_a_directory_and_a_bin_path(corpus, tmp_path):
    sep = corpus["tokenizer"].sep_token_id
    halves = corpus["by_sentence"][:30], corpus["by_sentence"][30:]
    a, b = build(tmp_path / "a_text_sentence", halves[0]), build(tmp_path / "b_text_sentence", halves[1], np.uint16, by_document=True)
    expected = expected_stream(corpus["by_sentence"], sep)
    for path in (f"{a},{b}", [a, b], str(tmp_path), f"{a}.bin,{b}.idx"):
        dataset = PackedDataset(path, SEQ_LEN, tokenizer=corpus["tokenizer"])
        assert packed_stream(dataset) == expected, path


def test_empty_documents_add_no_separator(corpus, tmp_path):
    prefix = build(tmp_path / "gaps", [[[10, 11], [12]], [], [[13]], [[]], [[14, 15]]])
    dataset = PackedDataset(prefix, SEQ_LEN, tokenizer=corpus["tokenizer"])
    assert packed_stream(dataset) == [10, 11, 12, 3, 13, 3, 14, 15]


def test_prepared_datasets_still_read_and_their_token_ids_are_the_same(corpus, tmp_path):
    prepare([corpus["root"] / "pydoc.txt"], corpus["tokenizer_dir"], tmp_path / "prepared", workers=1, progress=False)
    prepared = PackedDataset(tmp_path / "prepared", SEQ_LEN, tokenizer=corpus["tokenizer"])
    bare = PackedDataset(corpus["document_prefix"], SEQ_LEN, tokenizer=corpus["tokenizer"])
    assert packed_stream(prepared) == packed_stream(bare)
    assert prepared.fingerprint == bare.fingerprint
    assert prepared.unigram_entropy() == pytest.approx(bare.unigram_entropy())
    with pytest.raises(UserError, match="together with other corpora.*Megatron/NeMo prefixes only"):
        PackedDataset(f"{tmp_path / 'prepared'},{corpus['document_prefix']}", SEQ_LEN, tokenizer=corpus["tokenizer"])


def test_a_corpus_made_with_another_vocabulary_is_refused(corpus, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a of and to in is it for".split()
    (small / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (small / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    with pytest.raises(UserError, match=r"pydoc_text_sentence holds token id \d+, outside the tokenizer's 14 ids; pass data.tokenizer="):
        PackedDataset(corpus["sentence_prefix"], SEQ_LEN, tokenizer=load_tokenizer(small))
    with pytest.raises(UserError, match="has no meta.json naming its vocabulary; pass the tokenizer"):
        PackedDataset(corpus["sentence_prefix"], SEQ_LEN)


def test_bad_paths_and_damaged_foreign_shards(corpus, tmp_path):
    tokenizer = corpus["tokenizer"]
    with pytest.raises(UserError, match=r"nothing_here does not exist.*prefix of a Megatron/NeMo corpus"):
        PackedDataset(tmp_path / "nothing_here", SEQ_LEN, tokenizer=tokenizer)
    with pytest.raises(UserError, match=r"several words: space-separated prefixes.*separate prefixes with commas"):
        PackedDataset(f"{corpus['document_prefix']} {corpus['sentence_prefix']}", SEQ_LEN, tokenizer=tokenizer)
    with pytest.raises(UserError, match=r"not a prepared dataset \(no meta.json\) and holds no Megatron .bin/.idx files"):
        PackedDataset(tmp_path, SEQ_LEN, tokenizer=tokenizer)
    prefix = tmp_path / "copy"
    for suffix in (".bin", ".idx"):
        shutil.copy(str(corpus["sentence_prefix"]) + suffix, str(prefix) + suffix)
    data = Path(str(prefix) + ".bin")
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"shard copy: data file copy.bin .* truncated or corrupted; check .*copy.bin/.idx"):
        PackedDataset(prefix, SEQ_LEN, tokenizer=tokenizer)
    multimodal = import_indexed_dataset().IndexedDatasetBuilder(str(tmp_path / "mm.bin"), dtype=np.int32, multimodal=True)
    multimodal.add_item(torch.tensor([5, 6]), mode=1)
    multimodal.end_document()
    multimodal.finalize(str(tmp_path / "mm.idx"))
    with pytest.raises(UserError, match="shard mm is a multimodal IndexedDataset"):
        PackedDataset(tmp_path / "mm", SEQ_LEN, tokenizer=tokenizer)


def test_token_counts_of_a_large_corpus_are_sampled_evenly(monkeypatch, tmp_path):
    from fast_electra_ds.data import indexed

    # 4 shards of 1000 tokens, each one id: 20 chunks of 10 tokens must visit every shard alike.
    prefixes = [build(tmp_path / f"s{i}", [[[5 + i] * 1000]]) for i in range(4)]
    shards = [indexed.open_shard(p, "fix") for p in prefixes]
    monkeypatch.setattr(indexed, "_SCAN_TOKENS", 10)
    assert indexed.token_counts(shards, 10, budget=4000)[5:9].tolist() == [1000] * 4  # small enough: all counted
    assert indexed.token_counts(shards, 10, budget=200)[5:9].tolist() == [50] * 4
    assert indexed.token_range(shards) == (5, 8)
