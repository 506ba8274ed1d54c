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
    for pooling in probe.POOLINGS:
        assert found["signal"][f"{name} {pooling}"]["dev_accuracy"] > 0.9, pooling
        assert found["noise"][f"{name} {pooling}"]["dev_accuracy"] < 0.7, pooling
    assert f"| signal | {name} | cls |" in (tmp_path / "probe.md").read_text()


def test_geometry_tells_a_collapsed_state_from_a_spread_one(tiny_export):
    import torch

    tokenizer, encoder = probe.load_encoder(tiny_export)
    texts = [s for s, _ in sentences(40)]
    spread = probe.geometry(tokenizer, encoder, texts)
    assert len(spread) == encoder.config.num_hidden_layers + 1
    with torch.no_grad():  # a top layer whose output no longer depends on the input: its LayerNorm passes only the bias
        encoder.encoder.layer[-1].output.LayerNorm.weight.zero_()
        encoder.encoder.layer[-1].output.LayerNorm.bias.normal_()
    collapsed = probe.geometry(tokenizer, encoder, texts)
    assert collapsed[-1]["mean_cosine"] > 0.999 and collapsed[-1]["mean_spread"] < 1e-4 and collapsed[-1]["cls_spread"] < 1e-4
    assert spread[-1]["mean_cosine"] < 0.999 and spread[-1]["mean_spread"] > 1e-3  # a random encoder's [CLS] alone may be near-constant
    assert collapsed[0] == spread[0]  # the layers below are untouched


def test_domain_gap_is_zero_for_the_corpus_itself_and_grows_with_the_distance(tiny_export):
    import numpy as np

    tokenizer, _ = probe.load_encoder(tiny_export)
    texts = [s for s, _ in sentences(50)]
    ids = np.concatenate([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])
    counts = np.bincount(ids, minlength=len(tokenizer)).astype(np.float64) * 1000  # the task's own distribution, large
    near = probe.domain_gap(tokenizer, texts, counts)
    far = probe.domain_gap(tokenizer, texts, np.ones(len(tokenizer)))  # a uniform corpus
    assert near["kl_task_corpus"] < 0.01 < far["kl_task_corpus"]
    assert near["unknown_rate"] == 0.0


def test_probe_rejects_a_task_without_sentence_and_label(tiny_export, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("text\ty\nhello\t1\n")
    (bad / "dev.tsv").write_text("text\ty\nhello\t1\n")
    with pytest.raises(UserError, match="no sentence/label columns"):
        probe.main(["--models", str(tiny_export), "--task", str(bad)])
