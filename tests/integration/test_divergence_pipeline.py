"""A forced divergence (a resume at optim.lr=1e30) stops the run with one line naming the step and
the last good checkpoint, exit status 4; the good checkpoint stays the only one, nothing is exported.
With train.on_divergence=rollback a forced NaN reloads the last checkpoint, skips the samples read
since, and the run finishes; a divergence that comes back stops after train.max_rollbacks.
One process, a few tiny steps."""
import json
import subprocess
import sys

import pytest

from fast_electra_ds.checkpointing import checkpoint_root, complete_checkpoints
from fast_electra_ds.checkpointing.layout import LATEST
from fast_electra_ds.runtime.launch import TRAIN_SCRIPT
from tests.helpers import ROOT, common, cpu_env, run_train_single

pytestmark = pytest.mark.integration


def test_a_diverged_resume_saves_nothing_and_names_the_good_checkpoint(prepared, tmp_path):
    good = run_train_single(common(prepared, tmp_path, "method=aux-mlm", "train.steps=3", "train.export=false"))
    assert good.returncode == 0, good.stderr[-3000:]
    [saved] = complete_checkpoints(checkpoint_root(tmp_path))
    latest = (checkpoint_root(tmp_path) / LATEST).read_text()
    diverged = run_train_single(common(prepared, tmp_path, "method=aux-mlm", "train.steps=12", "optim.lr=1e30", "train.save_every=100",
                                       "train.save_every_minutes=0", "train.keep_last=1") + ["--resume"])
    errors = [line for line in diverged.stderr.splitlines() if line.startswith("error: ")]
    assert diverged.returncode == 4 and len(errors) == 1, diverged.stderr[-3000:]
    assert "training diverged at step" in errors[0] and saved.name in errors[0]
    assert complete_checkpoints(checkpoint_root(tmp_path)) == [saved]  # the stop saved nothing, so keep_last=1 rotated nothing away
    assert (checkpoint_root(tmp_path) / LATEST).read_text() == latest and not (tmp_path / "hf").exists()


# train.py with the engine's forward poisoned at the given calls (a loss spike the data would cause),
# so the divergence is at a known step on any machine.
POISONED_TRAIN = """
import runpy, sys
import deepspeed.runtime.engine as engine

poison_at, calls, forward = {calls}, [0], engine.DeepSpeedEngine.forward

def poisoned(self, *args, **kwargs):
    loss, metrics = forward(self, *args, **kwargs)
    if self.training:
        calls[0] += 1
        if calls[0] in poison_at:
            loss = loss * float("nan")
    return loss, metrics

engine.DeepSpeedEngine.forward = poisoned
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def run_poisoned(tmp_path, args: list[str], calls: tuple[int, ...]):
    wrapper = tmp_path / "poisoned_train.py"
    wrapper.write_text(POISONED_TRAIN.format(calls=set(calls), script=str(TRAIN_SCRIPT)))
    return subprocess.run([sys.executable, str(wrapper), *args], cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=300)


def test_rollback_reloads_the_last_checkpoint_skips_the_samples_since_and_finishes(prepared, tmp_path):
    out = tmp_path / "run"
    result = run_poisoned(tmp_path, common(prepared, out, "method=aux-mlm", "train.steps=8", "train.save_every=3",
                                           "train.save_every_minutes=0", "train.on_divergence=rollback"), calls=(5,))
    assert result.returncode == 0, result.stderr[-3000:]
    [event] = [json.loads(line) for line in (out / "rollbacks.jsonl").read_text().splitlines()]
    assert event["diverged_at_step"] == 5 and event["resumed_at_step"] == 3 and "not finite" in event["reason"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == list(range(1, 9))  # the diverged steps 4-5 were dropped and trained again once
    assert all(r["loss"] == r["loss"] for r in records)  # no NaN survived into the log
    per_step = records[0]["samples"]
    assert event["skipped_samples"] == [3 * per_step, 5 * per_step]
    assert records[3]["samples"] == 6 * per_step  # step 4 again, after the two skipped steps' samples
    final = json.loads(sorted((out / "checkpoints").glob("step_*"))[-1].joinpath("trainer_state.json").read_text())
    assert final["step"] == 8 and final["consumed_samples"] == 10 * per_step
    assert "rolled back to" in result.stdout and '"rollbacks": 1' in result.stdout and (out / "hf").is_dir()


def test_rollback_stops_after_max_rollbacks_with_the_divergence_line(prepared, tmp_path):
    out = tmp_path / "run"
    result = run_poisoned(tmp_path, common(prepared, out, "method=aux-mlm", "train.steps=8", "train.save_every=2",
                                           "train.save_every_minutes=0", "train.on_divergence=rollback", "train.max_rollbacks=2",
                                           "train.export=false"), calls=(3, 4, 5))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 4 and len(errors) == 1, result.stderr[-3000:]
    assert "training diverged at step 3" in errors[0] and "step_00000002" in errors[0]
    first, second = [json.loads(line) for line in (out / "rollbacks.jsonl").read_text().splitlines()]
    assert first["skipped_samples"][1] == second["skipped_samples"][0]  # each rollback skips only what it read anew
    assert [p.name for p in complete_checkpoints(checkpoint_root(out))] == ["step_00000002"]
