"""data.seq_len_schedule through the deepspeed launcher on 2 CPU ranks: the logged length, tokens and
FLOPs change at the switch step, validation runs at each phase's length, and a run stopped at the
switch and again just after it, then resumed, logs the losses of an uninterrupted run."""
import json

import pytest
import torch

from fast_electra_ds.config.run_config import load_config
from fast_electra_ds.methods import METHODS, TokenInfo
from tests.helpers import common, launch, metrics

pytestmark = pytest.mark.integration

STEPS, SWITCH = 6, 3  # 32 tokens for steps 1-3, then 64 for steps 4-6
GLOBAL_BATCH = 16  # zero3.json: 8 sequences per rank, 2 ranks
OVERRIDES = ["method=electra", f"train.steps={STEPS}", "data.seq_len=64", "data.seq_len_schedule=32:0.5",
             "train.eval_every=3", "train.export=false"]


def run_args(prepared, out_dir, *extra):
    return common(prepared, out_dir, *OVERRIDES, *extra)


@pytest.fixture(scope="module")
def two_phase_run(prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("two_phase")
    result = launch(run_args(prepared, run))
    return run, result.stdout + result.stderr


def test_length_tokens_and_flops_follow_the_switch(prepared, two_phase_run):
    run, output = two_phase_run
    records = metrics(run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert [r["seq_len"] for r in records] == [32] * SWITCH + [64] * (STEPS - SWITCH)
    assert [r["samples"] for r in records] == [GLOBAL_BATCH * r["step"] for r in records]  # sequences per step kept
    config = load_config([str(run / "config.yaml")])
    method = METHODS["electra"](config, TokenInfo(**json.loads((run / "tokens.json").read_text())), torch.device("cpu"))
    for r in records:
        assert r["tokens_per_s"] * r["step_time_s"] == pytest.approx(GLOBAL_BATCH * r["seq_len"], rel=1e-6)
        flops = r["tflops_per_s"] * r["step_time_s"] * 1e12
        assert flops == pytest.approx(GLOBAL_BATCH * method.flops_per_sequence(r["seq_len"]), rel=1e-6)
    assert method.flops_per_sequence(64) > 2 * method.flops_per_sequence(32)
    assert f"step {SWITCH + 1}: sequence length 32 -> 64; the global batch stays {GLOBAL_BATCH} sequences, 512 -> 1024 tokens per step" in output
    assert all(r["loss"] == r["loss"] for r in records)  # finite at both lengths
    validated = [r for r in records if "val_rtd_loss" in r]
    assert [r["step"] for r in validated] == [SWITCH, STEPS]  # at 32 tokens, then at 64


def test_resume_at_and_after_the_switch_gives_the_same_losses(prepared, two_phase_run, tmp_path):
    run, _ = two_phase_run
    launch(run_args(prepared, tmp_path, f"train.stop_after={SWITCH}"))  # stops before the first step at 64
    assert [r["seq_len"] for r in metrics(tmp_path)] == [32] * SWITCH
    launch(run_args(prepared, tmp_path, "train.stop_after=1", "--resume"))  # one step at 64, then stops
    assert [r["step"] for r in metrics(tmp_path)] == list(range(1, SWITCH + 2))
    launch(run_args(prepared, tmp_path, "--resume"))
    resumed, uninterrupted = metrics(tmp_path), metrics(run)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    assert [r["seq_len"] for r in resumed] == [r["seq_len"] for r in uninterrupted]
    for a, b in zip(resumed, uninterrupted):
        assert a["samples"] == b["samples"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a["step"], a["loss"], b["loss"])
    assert resumed[-1]["val_rtd_loss"] == pytest.approx(uninterrupted[-1]["val_rtd_loss"], rel=1e-5)
