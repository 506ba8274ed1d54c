"""metrics.jsonl is strict JSON: an undefined value (NaN, an infinity) is `null`, which jq, JavaScript
and strict JSON libraries read; the project's own readers get NaN back."""
import json
import math

import pytest

from fast_electra_ds.metrics.logger import RunLogger, read_metrics, trim_metrics
from fast_electra_ds.export.model_card import final_metrics


def refuse_constants(name):
    raise ValueError(f"not JSON: {name}")


def test_undefined_values_are_null_and_read_back_as_nan(tmp_path):
    logger = RunLogger(tmp_path, rank=0, monitor=None, total_steps=3, start_step=0, progress="lines")
    logger.record(1, 8, {"loss": 2.5, "rtd_precision": float("nan"), "grad_norm": float("inf"), "lr": 1e-4})
    logger.record(2, 16, {"loss": float("-inf"), "rtd_precision": 0.75, "p": [0.5, float("nan")]})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    strict = [json.loads(line, parse_constant=refuse_constants) for line in lines]  # NaN/Infinity would raise here
    assert strict == [{"step": 1, "samples": 8, "loss": 2.5, "rtd_precision": None, "grad_norm": None, "lr": 1e-4},
                      {"step": 2, "samples": 16, "loss": None, "rtd_precision": 0.75, "p": [0.5, None]}]
    first, second = read_metrics(tmp_path / "metrics.jsonl")
    assert math.isnan(first["rtd_precision"]) and math.isnan(first["grad_norm"]) and math.isnan(second["loss"])
    assert first["loss"] == 2.5 and second["rtd_precision"] == 0.75


def test_readers_take_old_bare_nan_files_and_skip_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": NaN, "auc": 0.5}\n{"step": 2, "loss": null, "auc": 0.6}\n{"step": 3, "lo')
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2] and all(math.isnan(r["loss"]) for r in records)
    latest = final_metrics(path)
    assert latest["auc"] == (2, 0.6) and latest["loss"][0] == 2 and math.isnan(latest["loss"][1])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_no_record_can_write_bare_nan(tmp_path, value):
    logger = RunLogger(tmp_path, rank=0, monitor=None, total_steps=1, start_step=0, progress="lines")
    logger.record(1, 8, {"nested": {"x": value}})
    assert "NaN" not in (tmp_path / "metrics.jsonl").read_text() and "Infinity" not in (tmp_path / "metrics.jsonl").read_text()


def test_a_resume_trims_later_steps_and_drops_torn_or_garbage_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n' 'garbage\n' '{"step": 2, "loss": null}\n' '{"step": 3, "loss": 1.5}\n' '{"step": 4, "lo')
    assert trim_metrics(path, last_step=2) == 2  # the garbage line and the torn last one
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert path.read_text().endswith("}\n")
