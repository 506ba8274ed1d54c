"""The product's launch line on one process, then its export used as a user would: a transformers
pipeline on a text far longer than the model's positions, and the model card."""
import json

import numpy as np
import pytest

from tests.helpers import run_train_single

pytestmark = pytest.mark.integration


def test_launch_line_export_model_card_and_pipeline(prepared, tmp_path):
    out = tmp_path / "run"
    # Overrides before the flags, bare shipped names, a hyperparameter from the command line.
    result = run_train_single(["method=aux-mlm", f"data.path={prepared['data']}", f"data.tokenizer={prepared['tokenizer']}",
                               f"train.out_dir={out}", "train.steps=12", "optim.lr=1e-3", "optim.warmup_ratio=0.25",
                               "--config", "tiny.yaml", "--ds_config", "zero3.json"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FutureWarning" not in result.stderr + result.stdout  # DeepSpeed's deprecated collectives, once per step before

    ds = json.loads((out / "ds_config.json").read_text())  # the resolved JSON, saved with the run
    assert ds["optimizer"]["params"]["lr"] == ds["scheduler"]["params"]["warmup_max_lr"] == 1e-3
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 3 and ds["scheduler"]["params"]["warmup_type"] == "linear"

    hf = out / "hf"
    tokenizer_config = json.loads((hf / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 128  # configs/tiny.yaml's max_position_embeddings
    assert not {"local_files_only", "is_local"} & set(tokenizer_config)

    card = (hf / "README.md").read_text()
    last = [record for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in record][-1]
    assert "method `aux-mlm`" in card and "12 of 12 optimizer steps" in card and '"lr": 0.001' in card
    assert f"| loss | {last['loss']:.6g} | 12 |" in card
    from huggingface_hub import ModelCard

    metadata = ModelCard.load(hf / "README.md").data  # the Hub's own reader accepts the card
    assert metadata.library_name == "transformers" and "aux-mlm" in metadata.tags

    from transformers import pipeline

    extractor = pipeline("feature-extraction", model=str(hf), tokenizer=str(hf))
    text = " ".join(["the parser reads a token and returns its value"] * 112)  # 1008 words, far over 128 tokens
    assert len(text.split()) >= 1000
    features = np.array(extractor(text, truncation=True))
    assert features.shape == (1, 128, 64)
