"""benchmarks/probe.py: a linear probe on frozen encoder features finds a signal that is in the
features and finds none where the labels are noise."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import probe  # noqa: E402
from fast_electra_ds.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_export(prepared, tmp_path_factory):
    """A 2-layer ELECTRA at random initialisation with the suite's tokenizer, saved as an export is."""
    import torch
    from transformers import AutoTokenizer, ElectraConfig, ElectraForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(prepared["tokenizer"])
    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=len(tokenizer), hidden_size=64, embedding_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id or 0)
    out = tmp_path_factory.mktemp("export")
    ElectraForPreTraining(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def task(tmp_path: Path, rows: list[tuple[str, int]], name: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for split, part in (("train", rows[: len(rows) * 3 // 4]), ("dev", rows[len(rows) * 3 // 4:])):
        (directory / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in part))
    return directory


def sentences(count: int) -> list[tuple[str, int]]:
    """Label 1 when the sentence names a class, 0 when it names a function: a word the features see."""
    rng = np.random.default_rng(1)
    fillers = ["the value is returned", "it is called with arguments", "see the module for details", "an error is raised"]
    return [(f"{rng.choice(fillers)} by this {'class' if label else 'function'} {rng.choice(fillers)}", int(label))
            for label in rng.integers(0, 2, count)]


def test_probe_reads_a_signal_in_the_features_and_none_in_noise(tiny_export, tmp_path):
    rows = sentences(400)
    signal = task(tmp_path, rows, "signal")
    noise_labels = np.random.default_rng(2).integers(0, 2, len(rows))
    noise = task(tmp_path, [(s, int(label)) for (s, _), label in zip(rows, noise_labels)], "noise")
    assert probe.main(["--models", str(tiny_export), "--task", str(signal), str(noise), "--out", str(tmp_path / "probe.md")]) == 0
    found = json.loads((tmp_path / "probe.json").read_text())
    name = tiny_export.name
    assert found["signal"][name]["dev_accuracy"] > 0.9
    assert found["noise"][name]["dev_accuracy"] < 0.7
    assert f"| signal | {name} |" in (tmp_path / "probe.md").read_text()


def test_probe_rejects_a_task_without_sentence_and_label(tiny_export, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("text\ty\nhello\t1\n")
    (bad / "dev.tsv").write_text("text\ty\nhello\t1\n")
    with pytest.raises(UserError, match="no sentence/label columns"):
        probe.main(["--models", str(tiny_export), "--task", str(bad)])
