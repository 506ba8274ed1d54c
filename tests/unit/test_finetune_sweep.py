"""benchmarks/finetune_sweep.py: the grid, the best setting and its ties, the tables, and resuming, with the
single fine-tuning run replaced by a stand-in; (slow) the real command on a tiny model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import finetune_sweep as fs  # noqa: E402
from benchmarks.study.stages import finish  # noqa: E402
from fast_electra_ds.errors import UserError  # noqa: E402
from fast_electra_ds.finetune.runner import subset  # noqa: E402
from fast_electra_ds.finetune.tasks import Split  # noqa: E402

# The stand-in's dev accuracy per (model, lr, layer decay) on the sweep seed; other seeds add seed / 1000.
ACCURACY = {"mlm": {(1e-4, 0.8): 0.70, (1e-4, 1.0): 0.71, (1e-3, 0.8): 0.74, (1e-3, 1.0): 0.72},
            "rand": {(1e-4, 0.8): 0.60, (1e-4, 1.0): 0.65, (1e-3, 0.8): 0.65, (1e-3, 1.0): 0.65}}  # a three-way tie


@pytest.fixture
def setup(tmp_path):
    """Two model directories and an SST-2-layout task directory."""
    for name in ACCURACY:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    task = tmp_path / "glue" / "SST-2"
    task.mkdir(parents=True)
    for split in ("train", "dev"):
        (task / f"{split}.tsv").write_text("sentence\tlabel\ngood\t1\n")
    return tmp_path


def argv(root: Path, *extra: str) -> list[str]:
    return ["--models", *(f"{name}={root / name}" for name in ACCURACY), "--task", str(root / "glue" / "SST-2"),
            "--lrs", "1e-4", "1e-3", "--sizes", "full", "200", "--seeds", "full=2", "200=3", "--work", str(root / "work"),
            "--out", str(root / "out" / "sweep.md"), *extra]


@pytest.fixture
def calls(monkeypatch):
    """Replaces the single run: records what a real run records, from ACCURACY; `calls.fail` names stages that crash."""
    class Calls(list):
        fail: set[str] = set()

    made = Calls()

    def fake_run(work, stage, out, model_dir, task, task_args, seed, *, overrides, train_limit, about, recipe="auto"):
        made.append(stage)
        if stage in made.fail:
            raise UserError(f"{stage} failed (exit 1)")
        setting = (about["lr"], about["layer_decay"])
        assert overrides == [*about["set"], f"lr={setting[0]!r}", f"layer_decay={setting[1]!r}"] and task == "sst2"
        assert train_limit == (None if about["size"] == "full" else int(about["size"])) and task_args[-1].endswith("SST-2")
        accuracy = ACCURACY[about["model"]][setting] + (seed - 1) / 1000
        summary = {"train_examples": train_limit or 1000, "recipe": {"name": "small", "epochs": 3.0, "batch_size": 32, "warmup_fraction": 0.1},
                   "per_seed_stats": {str(seed): {"final_train_loss": round(1 - accuracy, 4)}}}
        return finish(work, stage, {**about, "task": task, "seed": seed, "accuracy": accuracy, "majority_baseline": 0.58, "summary": summary,
                                   "wall_time_s": 1.0})

    monkeypatch.setattr(fs, "finetune_run", fake_run)
    return made


def sweep_of(root: Path, *extra: str) -> fs.Sweep:
    return fs.make_sweep(fs.parse_args(argv(root, *extra)))


def test_the_grid_is_setting_major_on_the_sweep_seed(setup):
    sweep = sweep_of(setup, "--sweep-seed", "7")
    runs = fs.grid_runs(sweep, "200")
    assert len(runs) == 2 * 2 * 2 and {run.seed for run in runs} == {7} and {run.size for run in runs} == {"200"}
    assert [(run.model, run.lr, run.layer_decay) for run in runs[:2]] == [("mlm", 1e-4, 0.8), ("rand", 1e-4, 0.8)]
    assert sweep.seeds("full") == [7, 8] and sweep.seeds("200") == [7, 8, 9]


def test_best_setting_and_its_ties():
    assert fs.best_setting(ACCURACY["mlm"]) == (1e-3, 0.8)
    assert fs.best_setting(ACCURACY["rand"]) == (1e-4, 1.0)  # the smaller lr, then decay 1.0
    assert fs.best_setting({(3e-4, 0.8): 0.6, (3e-4, 1.0): 0.6, (1e-3, 1.0): 0.6}) == (3e-4, 1.0)


def test_sweep_then_seeds_then_tables(setup, calls):
    assert fs.main(argv(setup)) == 0
    # per size: 2 models x 4 settings, then each model's other seeds at its chosen setting (full: 1, 200: 2)
    assert len(calls) == (8 + 2 * 1) + (8 + 2 * 2)
    assert "sweep-sst2-mlm-full-lr0.001-ld0.8-seed2" in calls and "sweep-sst2-rand-200-lr0.0001-ld1-seed3" in calls
    assert not any(stage.endswith(("seed2", "seed3")) and "-lr0.0001-ld0.8-" in stage for stage in calls)
    report = json.loads((setup / "out" / "sweep.json").read_text())
    mlm_200 = next(r for r in report["results"] if (r["model"], r["size"]) == ("mlm", "200"))
    assert (mlm_200["lr"], mlm_200["layer_decay"], mlm_200["train_examples"]) == (1e-3, 0.8, 200)
    assert mlm_200["per_seed"] == {"1": 0.74, "2": 0.741, "3": 0.742} and mlm_200["median"] == 0.741
    assert (mlm_200["min"], mlm_200["max"], mlm_200["majority_baseline"]) == (0.74, 0.742, 0.58)
    assert len(report["grid"]) == 2 * 2 * 4 and report["seeds"] == {"full": [1, 2], "200": [1, 2, 3]}
    text = (setup / "out" / "sweep.md").read_text()
    assert "| 200 | mlm | 0.001 | 0.8 | **0.741** | 0.740–0.742 | 1: 0.740, 2: 0.741, 3: 0.742 | 0.580 | 0 of 3 | 0.259 |" in text
    assert "| full (1,000) | rand | 0.0001 | 1 | **0.65" in text and fs.TIE_RULE in text
    assert "| 200 | rand | 0.600 | **0.650** | 0.650 | 0.650 |" in text  # the sweep grid, the chosen cell in bold
    assert f"Command: `python benchmarks/finetune_sweep.py --models mlm={setup / 'mlm'}" in text


def test_a_finished_run_is_not_run_again_and_a_crashed_one_is_redone(setup, calls):
    calls.fail = {"sweep-sst2-rand-full-lr0.001-ld1-seed1"}
    with pytest.raises(UserError, match="1 run.s. failed, the first sweep-sst2-rand-full-lr0.001-ld1-seed1"):
        fs.main(argv(setup))
    first = len(calls)
    assert first == (8 + 1) + (8 + 2 * 2)  # rand's full sweep incomplete: no seed 2 for it there
    assert "sweep 3/4 runs" in (setup / "out" / "sweep.md").read_text()
    calls.clear()
    calls.fail = set()
    assert fs.main(argv(setup)) == 0
    assert calls == ["sweep-sst2-rand-full-lr0.001-ld1-seed1", "sweep-sst2-rand-full-lr0.0001-ld1-seed2"]
    calls.clear()
    assert fs.main(argv(setup)) == 0 and calls == []
    assert fs.main(argv(setup, "--report-only")) == 0 and calls == []


def test_a_sweep_with_settings_is_a_sweep_of_its_own(setup, calls):
    """--set reaches every run before lr and layer decay; its stages name the settings, so the plain
    sweep's finished runs are not taken for its own, and its tables say what was set."""
    assert fs.main(argv(setup)) == 0
    plain = len(calls)
    calls.clear()
    assert fs.main(argv(setup, "--set", "pooling=mean", "epochs=10")) == 0
    assert len(calls) == plain and all(stage.startswith("sweep-sst2+epochs=10+pooling=mean-") for stage in calls)
    text = (setup / "out" / "sweep.md").read_text()
    assert "with epochs=10 pooling=mean set for every run" in text and "# Fine-tuning sweep on sst2+epochs=10+pooling=mean" in text
    assert json.loads((setup / "out" / "sweep.json").read_text())["set"] == ["epochs=10", "pooling=mean"]
    calls.clear()
    assert fs.main(argv(setup)) == 0 and calls == []  # the plain sweep's records are still its own


def test_a_name_recorded_for_another_directory_is_refused(setup, calls):
    assert fs.main(argv(setup)) == 0
    args = argv(setup)
    args[args.index(f"mlm={setup / 'mlm'}")] = f"mlm={setup / 'rand'}"
    with pytest.raises(UserError, match="was run with mlm="):
        fs.main(args)


@pytest.mark.parametrize("extra, message", [
    (["--models", "mlm"], "is not NAME=DIR"),
    (["--models", "a/b=x"], "is not NAME=DIR"),
    (["--models", "mlm=/no/such/dir"], "no config.json"),
    (["--sizes", "full", "tiny"], "is not 'full' or a number"),
    (["--sizes", "500", "0500"], "repeats a size"),
    (["--seeds", "300=2"], "SIZE=COUNT"),
    (["--seeds", "0"], "SIZE=COUNT"),
    (["--lrs", "-1"], "--lrs"),
    (["--layer-decays", "1.5"], "--layer-decays"),
    (["--jobs", "0"], "--jobs"),
    (["--task", "/no/such/task"], "not found"),
    (["--out", "x.json"], "not a .md path"),
    (["--set", "lr=1e-3"], "the sweep's own axes"),
    (["--set", "pooling=max"], "pooling 'max' is not one of"),
    (["--set", "epochs=ten"], "is not a number"),
    (["--set", "colour=red"], "unknown recipe key"),
])
def test_bad_input_is_one_user_error(setup, calls, extra, message):
    with pytest.raises(UserError, match=message):
        fs.main(argv(setup) + extra)
    assert calls == []


def test_seed_counts():
    assert fs.parse_seed_counts(None, ["full", "2000", "500"]) == {"full": 3, "2000": 5, "500": 5}
    assert fs.parse_seed_counts(["2", "500=4"], ["full", "2000", "500"]) == {"full": 2, "2000": 2, "500": 4}


def test_a_task_directory_holding_a_task_file(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (tmp_path / "speeches.yaml").write_text("name: speeches\ntrain: train.tsv\ndev: dev.tsv\ntext_a: sentence\nlabel: label\nlabels: [0, 1]\nmetric: accuracy\n")
    assert fs.task_arguments(str(tmp_path), tmp_path) == ("speeches", ["--task", str(tmp_path / "speeches.yaml")])


def test_the_smaller_subsets_rows_are_among_the_larger_ones():
    """What the docs say of --max-train-examples: one fixed subset per N, the smaller within the larger."""
    rows = Split(path=Path("train.tsv"), text_a=[str(i) for i in range(5000)], text_b=None, labels=list(range(5000)))
    small, large = set(subset(rows, 500).labels), set(subset(rows, 2000).labels)
    assert len(small) == 500 and len(large) == 2000 and small < large
    assert subset(rows, 500).labels == subset(rows, 500).labels and np.all(np.diff(subset(rows, 500).labels) > 0)


@pytest.mark.slow
def test_the_real_command_on_a_tiny_model(tmp_path):
    """Two real `fast-electra finetune` runs (a 1-layer model, 64 training rows): the sweep seed, then seed 2."""
    import subprocess

    import torch
    from transformers import ElectraConfig, ElectraForPreTraining

    from fast_electra_ds.data.tokenizer import train_tokenizer
    from fast_electra_ds.finetune.rotten_tomatoes import write_sst2

    glue = write_sst2(tmp_path / "glue")
    text = tmp_path / "text.txt"
    text.write_text("\n".join(line.split("\t")[0] for line in (glue / "SST-2" / "train.tsv").read_text().splitlines()[1:]))
    model = tmp_path / "tiny"
    train_tokenizer([text], model, vocab_size=2000)
    torch.manual_seed(0)
    ElectraForPreTraining(ElectraConfig(vocab_size=2000, embedding_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                                        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)).save_pretrained(model)
    out = tmp_path / "sweep.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "finetune_sweep.py"), "--models", f"tiny={model}", "--task", str(glue / "SST-2"),
               "--sizes", "64", "--lrs", "1e-3", "--layer-decays", "1.0", "--seeds", "2", "--jobs", "1",
               "--work", str(tmp_path / "work"), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (row,) = json.loads(out.with_suffix(".json").read_text())["results"]
    assert (row["lr"], row["layer_decay"], row["train_examples"], list(row["per_seed"])) == (1e-3, 1.0, 64, ["1", "2"])
    assert 0 < row["median"] < 1 and "| 64 | tiny | 0.001 | 1 |" in out.read_text()
