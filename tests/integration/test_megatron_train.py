"""`python train.py` on a sentence-split corpus written by megatron-core's own IndexedDatasetBuilder,
passed as a bare .bin/.idx prefix (no meta.json), as a Megatron-LM or NeMo user would, alone and in
a weighted blend with a prepared directory."""
import json
import math
import re

import numpy as np
import pytest
import torch

from fast_electra_ds.data.prepare import import_indexed_dataset
from fast_electra_ds.data.text import iter_documents
from fast_electra_ds.data.tokenizer import load_tokenizer
from tests.helpers import ROOT, assert_user_error, metrics, run_train_single

pytestmark = pytest.mark.integration


def sentence_prefix(prepared, corpus, tmp_path):
    tokenizer = load_tokenizer(prepared["tokenizer"])
    prefix = tmp_path / "pydoc_text_sentence"
    builder = import_indexed_dataset().IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    for document in iter_documents(corpus):
        for sentence in re.split(r"(?<=[.!?:])\s+", document):
            builder.add_item(torch.tensor(tokenizer(sentence, add_special_tokens=False)["input_ids"]))
        builder.end_document()
    builder.finalize(str(prefix) + ".idx")
    return prefix


def test_train_on_a_megatron_sentence_corpus(prepared, corpus, tmp_path):
    prefix = sentence_prefix(prepared, corpus, tmp_path)
    run = tmp_path / "run"
    result = run_train_single(["--ds_config", str(ROOT / "ds_configs/zero3.json"), "--config", str(ROOT / "configs/tiny.yaml"),
                               "method=electra", f"data.path={prefix}", f"data.tokenizer={prepared['tokenizer']}",
                               f"train.out_dir={run}", "train.steps=3", "train.export=false"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no meta.json, so only the token id range could be checked against the tokenizer" in result.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)


def test_train_on_a_weighted_blend(prepared, corpus, tmp_path):
    prefix = sentence_prefix(prepared, corpus, tmp_path)
    run = tmp_path / "run"
    result = run_train_single(["--ds_config", str(ROOT / "ds_configs/zero3.json"), "--config", str(ROOT / "configs/tiny.yaml"),
                               "method=aux-mlm", f"data.path=1 {prepared['data']} 3 {prefix}", f"data.tokenizer={prepared['tokenizer']}",
                               f"train.out_dir={run}", "train.steps=3", "train.export=false"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"data: a blend, samples drawn in proportion to the weights: 0.25 {prepared['data']} (" in result.stdout
    assert f"0.75 {prefix} (" in result.stdout
    steps = [r for r in metrics(run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in steps)
    bad = run_train_single(["--ds_config", str(ROOT / "ds_configs/zero3.json"), "--config", str(ROOT / "configs/tiny.yaml"),
                            f"data.path=0.5 {prefix} 0.5", f"data.tokenizer={prepared['tokenizer']}", f"train.out_dir={tmp_path / 'bad'}"])
    assert_user_error(bad, "has 3 words, not weight-prefix pairs")
    assert not (tmp_path / "bad").exists()
