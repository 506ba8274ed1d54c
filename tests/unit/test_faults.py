"""benchmarks/faults.py's judgement (benchmarks/fault_suite/): exit codes are the truth, so a run that
printed `done` and then had a rank abort at exit did not survive its fault."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.fault_suite.catalogue import damage_fault  # noqa: E402
from benchmarks.fault_suite.harness import ABORT_AT_EXIT, DONE, Harness  # noqa: E402
from benchmarks.fault_suite.report import Report  # noqa: E402

HALF_STEP = 20
RESUMED = f"[fast-electra] resumed from /x/checkpoints/step_{HALF_STEP:08d}\n"
FINISHED_THEN_ABORTED = RESUMED + f'{DONE} {{"step": 40}}\n{ABORT_AT_EXIT}\n[launcher] exits with return code = -6\n'


def catalogue(tmp_path: Path) -> tuple[Harness, Report]:
    args = SimpleNamespace(work=str(tmp_path / "work"), seed=0, steps=40, save_every=5, kills=20, out_dir=tmp_path / "out")
    harness = Harness(args)
    return harness, Report(args, ["--steps", "40"], harness)


@pytest.mark.parametrize("rc", [250, -6])
def test_done_then_an_abort_at_exit_is_a_failed_launch(tmp_path, rc):
    harness, _ = catalogue(tmp_path)
    assert harness.ok(rc, FINISHED_THEN_ABORTED) is False
    assert harness.exit_aborts == 1


def test_only_exit_code_zero_succeeds_and_only_aborts_after_done_are_counted_apart(tmp_path):
    harness, _ = catalogue(tmp_path)
    assert harness.ok(0, RESUMED + f"{DONE} {{}}\n") is True
    assert harness.ok(1, "error: something else\n") is False
    assert harness.ok(-6, ABORT_AT_EXIT + "\n") is False  # aborted before finishing: a failure, not a teardown crash
    assert harness.exit_aborts == 0


@pytest.mark.parametrize("rc, survived", [(250, False), (0, True)])
def test_a_fault_whose_resume_aborts_at_exit_is_not_survived(tmp_path, monkeypatch, rc, survived):
    """The damage fault end to end with the launch replaced: every step logged, `done` printed; only
    the exit code differs."""
    harness, report = catalogue(tmp_path)
    harness.half, harness.half_step, harness.reference = tmp_path / "half", HALF_STEP, {}
    checkpoint = harness.half / "checkpoints" / f"step_{HALF_STEP:08d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").touch()
    monkeypatch.setattr(harness, "run", lambda out, *extra, **kw: (rc, FINISHED_THEN_ABORTED if rc else RESUMED + f"{DONE} {{}}\n"))
    monkeypatch.setattr(harness, "complete", lambda out: True)
    damage_fault(harness, report, "deleted COMPLETE marker", lambda c: (c / "COMPLETE").unlink())
    summary = report.publish(finished=True)
    assert (summary["tried"], summary["survived"]) == (1, int(survived))
    results = json.loads((tmp_path / "out" / "faults.json").read_text())
    assert results["faults"][0]["survived"] is survived
    assert results["rank_aborts_at_exit_after_done"] == (0 if survived else 1)
    assert ("counts as not survived" in (tmp_path / "out" / "faults.md").read_text()) is not survived
