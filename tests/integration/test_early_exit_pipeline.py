"""`adaptive-exit` and `early-exit-disc` on 2 CPU ranks under ZeRO-3 through the deepspeed launcher:
falling losses, the logged P / sections, exact resume, the export, and that skipped sections'
consolidated weights stay bit-identical through a window (tiny models, windows of 2-3 steps)."""
import json
import shutil

import pytest
import torch

from tests.helpers import common, launch, metrics

pytestmark = pytest.mark.integration

ADAPTIVE = ["method=adaptive-exit", "early_exit.exits=1,2", "early_exit.initial_p=0.5,0.5", "early_exit.exit_loss_weights=1,2",
            "early_exit.window=3", "early_exit.alpha=1.0", "train.steps=24", "train.save_every=5", "train.keep_last=10"]
DISC = ["method=early-exit-disc", "model.num_hidden_layers=4", "early_exit.sections=1,2,3,4", "early_exit.window=2",
        "train.steps=20", "train.save_every=1", "train.keep_last=30"]


@pytest.fixture(scope="module")
def adaptive_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive")
    launch(common(prepared, out, *ADAPTIVE))
    return out


@pytest.fixture(scope="module")
def disc_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("disc")
    launch(common(prepared, out, *DISC))
    return out


def resume_from(run, step, prepared, out, *args):
    """A copy of `run` as it was at checkpoint `step` (later checkpoints and the export removed), resumed
    to the end: one launch instead of a stopped run plus a resumed one. The checkpoint is what a run
    stopped at `step` would have written (the trainer saves the same way at save_every and at a stop)."""
    shutil.copytree(run, out, dirs_exist_ok=True)
    shutil.rmtree(out / "hf")
    for checkpoint in (out / "checkpoints").glob("step_*"):
        if int(checkpoint.name.split("_")[1]) > step:
            shutil.rmtree(checkpoint)
    result = launch(common(prepared, out, *args) + ["--resume"])
    assert f"step_{step:08d} at step {step}" in result.stdout
    return metrics(out)


def falls(records, key, factor):
    return sum(r[key] for r in records[-3:]) / 3 < records[0][key] * factor


def test_adaptive_exit_trains_and_logs_p_and_per_exit_accuracy(adaptive_run):
    records = metrics(adaptive_run)
    assert [r["step"] for r in records] == list(range(1, 25))
    assert falls(records, "loss", 0.97) and falls(records, "rtd_loss", 0.97) and falls(records, "mlm_loss", 0.995)
    assert {r["exit_layer"] for r in records} == {1.0, 2.0}  # both exits drawn
    for r in records:
        assert set(r) >= {"p_exit1", "p_exit2", "rtd_acc_exit1", "rtd_acc_exit2", "mlm_loss_exit1", "mlm_loss_exit2"}
        ran = "rtd_acc_exit1" if r["exit_layer"] == 1.0 else "rtd_acc_exit2"
        other = "rtd_acc_exit2" if ran == "rtd_acc_exit1" else "rtd_acc_exit1"
        assert r[ran] == pytest.approx(r["rtd_acc"]) and r[other] is None  # undefined: null in strict JSON
        assert r["p_exit1"] + r["p_exit2"] == pytest.approx(1.0)
    p = [r["p_exit1"] for r in records]
    changed = [r["step"] for a, r in zip(p, records[1:]) if r["p_exit1"] != a]
    assert changed and all(step % 3 == 0 for step in changed)  # only at window ends
    assert p[:5] == [0.5] * 5  # the first window (steps 1-3) only sets acc_prev


def test_adaptive_exit_resumes_exactly(prepared, adaptive_run, tmp_path):
    resumed = resume_from(adaptive_run, 10, prepared, tmp_path, *ADAPTIVE)  # inside a window (10 % 3 = 1)
    uninterrupted = metrics(adaptive_run)
    assert [r["step"] for r in resumed] == list(range(1, 25))
    for a, b in zip(resumed, uninterrupted):
        assert a["exit_layer"] == b["exit_layer"] and a["p_exit1"] == b["p_exit1"], a["step"]
        for key in ("loss", "mlm_loss", "rtd_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)


def test_early_exit_disc_trains_exports_and_logs_sections(disc_run):
    from transformers import ElectraForPreTraining

    records = metrics(disc_run)
    assert [r["step"] for r in records] == list(range(1, 21))
    assert falls(records, "loss", 0.99) and falls(records, "mlm_loss", 0.99)
    assert records[0]["exit_layer"] == records[1]["exit_layer"] == 4.0  # the first window runs every section
    for r in records:
        assert {f"rtd_acc_section{s}" for s in (1, 2, 3, 4)} <= set(r) and "active_sections" in r
    model = ElectraForPreTraining.from_pretrained(disc_run / "hf")
    assert model.config.num_hidden_layers == 4  # the full-depth discriminator


def consolidated(run, step):
    from fast_electra_ds.export.exporter import consolidated_state_dict

    return consolidated_state_dict(run / "checkpoints" / f"step_{step:08d}")


def section_keys(state, section):
    """Parameter names of section `section` (1-based, one layer each here): its layer and its RTD head."""
    head = "main.discriminator_predictions." if section == 4 else f"section_heads.{section - 1}."
    return [k for k in state if k.startswith(f"main.electra.encoder.layer.{section - 1}.") or k.startswith(head)]


def test_skipped_sections_receive_no_updates_under_zero3(disc_run):
    """active_sections logged at step k is what steps k+1 .. k+window run; compare the consolidated fp32
    weights of the checkpoints at both ends of every window that skipped a section."""
    records = {r["step"]: r for r in metrics(disc_run)}
    windows = [(k, k + 2) for k in range(2, 19, 2) if records[k]["active_sections"] < 4]
    assert windows, "no window skipped a section in this run"
    for start, end in windows:
        assert all(records[s]["exit_layer"] == records[start]["active_sections"] for s in (start + 1, end))
        before, after = consolidated(disc_run, start), consolidated(disc_run, end)
        active = int(records[start]["active_sections"])
        for section in range(1, 5):
            keys = section_keys(before, section)
            assert len(keys) >= 18
            if section > active:
                assert all(torch.equal(before[k], after[k]) for k in keys), (start, section)
            else:
                assert not all(torch.equal(before[k], after[k]) for k in keys), (start, section)


def test_early_exit_disc_resumes_exactly(prepared, disc_run, tmp_path):
    resumed = resume_from(disc_run, 7, prepared, tmp_path, *DISC)  # inside a window
    uninterrupted = metrics(disc_run)
    assert [r["step"] for r in resumed] == list(range(1, 21))
    for a, b in zip(resumed, uninterrupted):
        assert a["active_sections"] == b["active_sections"], a["step"]
        for key in ("loss", "mlm_loss", "rtd_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    state = json.loads(sorted((tmp_path / "checkpoints").glob("step_*"))[-1].joinpath("trainer_state.json").read_text())
    assert set(state["method_state"]) == {"active", "last_acc", "window_sum", "window_count"}
