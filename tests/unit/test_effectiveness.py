"""benchmarks/effectiveness.py and its parts (benchmarks/study/): the equal-budget arithmetic (from each
method's own FLOPs count), corpus assembly, the result rows; and (slow) the --quick run end to end."""
from __future__ import annotations

import bz2
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import effectiveness as eff  # noqa: E402
from benchmarks.study import analysis, budget, finetuning, prepare  # noqa: E402
from benchmarks.study.settings import RANDOM_INIT, TASK, TASKS  # noqa: E402
from fast_electra_ds.config.run_config import load_config  # noqa: E402
from fast_electra_ds.errors import UserError  # noqa: E402
from fast_electra_ds.methods import METHODS, TokenInfo  # noqa: E402

VOCAB = 8000
TOKENS = TokenInfo(vocab_size=VOCAB, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4, fingerprint="test")


@pytest.fixture(scope="module")
def demo():
    return load_config([str(ROOT / "configs" / "demo.yaml")])


def test_flops_per_sequence_agree_with_the_methods_own_counts(demo):
    per_sequence = budget.flops_per_sequence(demo, VOCAB)
    seq_len, cpu = demo.data.seq_len, torch.device("cpu")
    assert per_sequence["mlm"]["main"] == METHODS["mlm"](demo, TOKENS, cpu).flops_per_sequence(seq_len)
    electra = per_sequence["electra"]
    assert electra["main"] + electra["other"] == pytest.approx(METHODS["electra"](demo, TOKENS, cpu).flops_per_sequence(seq_len))
    # fast's frozen aux runs forward only: a third of what training it (aux-mlm) costs per sequence
    aux_training = METHODS["aux-mlm"](demo, TOKENS, cpu).flops_per_sequence(seq_len)
    assert per_sequence["aux-mlm"]["main"] == aux_training
    assert per_sequence["fast"]["other"] == pytest.approx(aux_training / 3)
    assert per_sequence["fast"]["main"] == electra["main"]
    # the MLM head over 15% of 128 positions costs more than the RTD head over all of them
    assert per_sequence["mlm"]["main"] > electra["main"] > electra["other"] > 0


def test_flops_do_not_depend_on_the_curriculum(demo):
    """A curriculum that starts from the corpus's unigram entropy can be counted when it is given."""
    target = load_config([str(ROOT / "configs" / "demo.yaml")], ["curriculum.kind=target"])
    assert budget.flops_per_sequence(target, VOCAB, unigram_entropy=6.9) == budget.flops_per_sequence(demo, VOCAB)
    with pytest.raises(UserError, match="unigram entropy"):
        budget.flops_per_sequence(target, VOCAB)


def test_equal_budget_gives_every_method_the_same_main_flops(demo):
    per_sequence = budget.flops_per_sequence(demo, VOCAB)
    batch = 16
    total = budget.budget_from_steps(2000, batch, per_sequence)
    steps = {m: budget.steps_for_budget(total, batch, per_sequence[m]["main"]) for m in ("mlm", "electra", "fast")}
    assert steps["electra"] == steps["fast"] == 2000
    assert steps["mlm"] < 2000
    for method, n in steps.items():
        spent = n * batch * per_sequence[method]["main"]
        assert abs(spent - total) <= 0.5 * batch * per_sequence[method]["main"], method  # within half a step
    assert budget.steps_for_budget(1.0, batch, per_sequence["mlm"]["main"]) == 1  # at least one step
    with pytest.raises(UserError, match="budget"):
        budget.steps_for_budget(0, batch, per_sequence["mlm"]["main"])


def test_assemble_corpus_strips_dumps_and_keeps_text_files(tmp_path):
    prose = " ".join(["Every article needs enough words to pass the stub filter of the reader."] * 6)
    dump = tmp_path / "dump.xml.bz2"
    dump.write_bytes(bz2.compress((
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><page><title>A</title><ns>0</ns><revision>'
        f"<text>'''A''' is [[b|linked]]. {prose}</text></revision></page><page><title>R</title><ns>0</ns>"
        '<redirect title="A"/><revision><text>#REDIRECT [[A]]</text></revision></page></mediawiki>').encode()))
    text = tmp_path / "extra.txt"
    text.write_text("first document here\n\nsecond one\n")
    corpus = prepare.assemble_corpus(tmp_path / "corpus", [str(dump), str(text)], pydoc=True)
    wiki, extra, pydoc = corpus["parts"]
    assert (wiki["documents"], wiki["redirects"], extra["documents"], extra["words"]) == (1, 1, 2, 5)
    assert Path(wiki["file"]).read_text().startswith("A is linked. Every article")
    assert extra["file"] == str(text)
    assert pydoc["documents"] == 79
    assert corpus["documents"] == 82 and corpus["words"] == wiki["words"] + 5 + pydoc["words"]
    with pytest.raises(UserError, match="does not exist"):
        prepare.assemble_corpus(tmp_path / "c2", [str(tmp_path / "missing.txt")])


def test_settings_defaults_quick_and_bad_input():
    default = eff.make_settings(eff.parse_args([]))
    assert (default.preset, default.main_steps, default.seeds, default.global_batch) == ("demo", eff.DEFAULT["main_steps"], [1, 2, 3], 16)
    quick = eff.make_settings(eff.parse_args(["--quick", "--seeds", "4", "5", "--ranks", "1"]))
    assert (quick.preset, quick.seeds, quick.global_batch, quick.work.name) == ("tiny", [4, 5], 8, "effectiveness-quick")
    with pytest.raises(UserError, match="unknown preset"):
        eff.make_settings(eff.parse_args(["--preset", "huge"])).run_config()
    with pytest.raises(UserError, match="unknown config key"):
        eff.make_settings(eff.parse_args(["--set", "model.depth=3"])).run_config()
    with pytest.raises(UserError, match="--micro-batch"):
        eff.make_settings(eff.parse_args(["--micro-batch", "0"]))
    with pytest.raises(UserError, match="--jobs"):
        eff.make_settings(eff.parse_args(["--jobs", "0"]))


def test_finetune_all_runs_every_model_task_seed_once_and_files_results_by_task_and_model(monkeypatch, tmp_path):
    """Two jobs at once: every (task, model, seed) runs exactly once, started seed-major, and each result
    lands under its own task and model in seed order whatever order the runs finish in."""
    import threading
    import time

    settings = eff.make_settings(eff.parse_args(["--work", str(tmp_path), "--jobs", "2", "--seeds", "1", "2"]))
    started, lock = [], threading.Lock()

    def fake_finetune(settings, name, model_dir, task, seed):
        with lock:
            started.append((seed, task, name))
        time.sleep(0.02 if seed == 1 else 0.0)  # later runs finish first
        return None if (name, seed) == ("fast", 2) else {"model": name, "task": task, "seed": seed, "dir": model_dir}

    monkeypatch.setattr(finetuning, "finetune", fake_finetune)
    monkeypatch.setattr(finetuning, "glue_dir", lambda settings: tmp_path)
    monkeypatch.setattr(finetuning, "convention_task", lambda settings: tmp_path)
    pre = {"mlm": {"hf": "m"}, "fast": {"hf": "f"}}
    fine = finetuning.finetune_all(settings, pre)
    assert sorted(started) == sorted((s, t, n) for s in (1, 2) for t in TASKS for n in pre)
    assert {seed for seed, _, _ in started[:4]} == {1}
    for task in TASKS:
        assert [r["seed"] for r in fine[task]["mlm"]] == [1, 2] and [r["seed"] for r in fine[task]["fast"]] == [1]
        assert {r["task"] for r in fine[task]["mlm"]} == {task} and {r["dir"] for r in fine[task]["fast"]} == {"f"}


def test_rows_add_up_flops_and_accuracies(demo):
    settings = eff.make_settings(eff.parse_args(["--methods", "mlm", "fast"]))
    per_sequence = budget.flops_per_sequence(settings.run_config(), VOCAB)
    summary = lambda *acc: [{"seed": i + 1, "accuracy": a, "wall_time_s": 1.0} for i, a in enumerate(acc)]  # noqa: E731
    pre = {"mlm": {"steps": 10, "wall_time_s": 5.0}, "fast": {"steps": 12, "wall_time_s": 6.0, "last": {"loss": 0.3, "rtd_acc_replaced": 0.25}},
           RANDOM_INIT: {"steps": 0, "wall_time_s": 0.0}}
    fine = {TASK: {"mlm": summary(0.6, 0.7, 0.65), "fast": summary(0.8, 0.7, 0.9), RANDOM_INIT: summary(0.5, 0.55, 0.52)},
            "convention": {"fast": summary(0.7, 0.75)}}
    pre["fast"]["last_validation"] = {"val_rtd_context_gain": 0.03, "val_rtd_auc": 0.6}
    rows = {r["model"]: r for r in analysis.build_rows(per_sequence, 1.0, settings, pre, fine, {"steps": 100, "wall_time_s": 9.0})}
    assert list(rows) == ["mlm", "fast", RANDOM_INIT]
    assert rows["fast"]["main_tflops"] == pytest.approx(12 * 16 * per_sequence["fast"]["main"] / 1e12)
    aux_training = 100 * 16 * per_sequence["aux-mlm"]["main"] / 1e12
    assert rows["fast"]["total_with_aux_tflops"] == pytest.approx(rows["fast"]["total_tflops"] + aux_training)
    assert rows["mlm"]["total_with_aux_tflops"] == rows["mlm"]["total_tflops"]
    assert (rows["fast"]["acc_median"], rows["fast"]["acc_min"], rows["fast"]["acc_max"]) == (0.8, 0.7, 0.9)
    assert rows[RANDOM_INIT]["total_tflops"] == 0 and rows[RANDOM_INIT]["acc_median"] == 0.52
    assert rows["mlm"]["seeds"] == [1, 2, 3] and rows["mlm"]["finetune_wall_s"] == 3.0
    assert rows["fast"]["final_rtd_acc_replaced"] == 0.25 and rows["mlm"]["final_rtd_acc_replaced"] is None
    assert rows["fast"]["tasks"]["convention"] == {"median": 0.725, "min": 0.7, "max": 0.75, "stdev": pytest.approx(0.0354, abs=1e-4),
                                                   "per_seed": [0.7, 0.75], "seeds": 2}
    assert rows["fast"]["finetune_wall_s"] == 5.0 and "convention" not in rows["mlm"]["tasks"]
    assert rows["fast"]["val_rtd_context_gain"] == 0.03 and "val_rtd_context_gain" not in rows["mlm"]
    summary_json = analysis.summary_schema(settings, list(rows.values()), 6.9, 1000, VOCAB)
    assert summary_json["methods"]["fast"]["tasks"][TASK]["median"] == 0.8
    assert summary_json["methods"]["fast"]["val_rtd_context_gain"] == 0.03 and summary_json["unigram_entropy"] == 6.9
    partial = analysis.build_rows(per_sequence, 1.0, settings, pre, {TASK: {"mlm": summary(0.6)}}, None)  # a run cut short
    assert "acc_median" not in partial[1] and partial[0]["acc_median"] == 0.6


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """The whole benchmark at smoke size: corpus, tokenizer, shards, aux + 3 methods on 2 ranks, exports,
    fine-tuning, table, CSV, plot. About 5 minutes on 2 CPU cores."""
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "effectiveness.py"), "--quick", "--work", str(tmp_path / "work"),
                             "--out-dir", str(out), "--quiet", "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "effectiveness.json").read_text())
    rows = {r["model"]: r for r in results["rows"]}
    assert list(rows) == ["mlm", "electra", "fast", RANDOM_INIT]
    assert rows["mlm"]["steps"] < rows["electra"]["steps"] == rows["fast"]["steps"] == eff.QUICK["main_steps"]
    assert rows["mlm"]["main_tflops"] == pytest.approx(rows["electra"]["main_tflops"], rel=0.05)
    for row in rows.values():
        assert 0.0 <= row["acc_min"] <= row["acc_median"] <= row["acc_max"] <= 1.0
    assert 0.5 < results["majority_baseline"] < 1.0
    assert (out / "effectiveness.png").stat().st_size > 0
    assert (out / "effectiveness.csv").read_text().count("\n") == 5
    assert "| fast |" in (out / "effectiveness.md").read_text()
    # resumable: a second run finds every stage done and only rebuilds the table
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "effectiveness.py"), "--quick", "--work", str(tmp_path / "work"),
                            "--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("skipped") >= 8, again.stdout[-2000:]
    report = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "effectiveness.py"), "--quick", "--report-only",
                             "--work", str(tmp_path / "missing"), "--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 2 and "no finished stages" in report.stderr
