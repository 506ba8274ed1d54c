"""`method=fast curriculum.kind=target` through train.py (one process): it trains, starts its target at
the corpus's unigram entropy and logs the chosen temperature and both cross-entropies every step."""
import json

import pytest
from transformers import ElectraForMaskedLM

from tests.helpers import assert_user_error, run_train_single, tiny_electra_config, train_args

pytestmark = pytest.mark.integration


def test_target_curriculum_trains_and_logs_its_values(prepared, tmp_path):
    aux = tmp_path / "aux"
    ElectraForMaskedLM(tiny_electra_config(2000)).save_pretrained(aux)  # random: worse than the unigram distribution
    run = tmp_path / "run"
    result = run_train_single(train_args(prepared, run, "method=fast", f"aux.path={aux}", "curriculum.kind=target",
                                         "train.steps=4", "curriculum.span=0.5", "train.export=false"))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    entropy = json.loads((prepared["data"] / "meta.json").read_text())["unigram_entropy"]
    assert records[0]["aux_target_ce"] == pytest.approx(entropy, abs=1e-4)  # u = 0
    for record in records:
        assert record["aux_ce"] > record["aux_target_ce"] - 1e-4  # this aux cannot go lower: T = 1
        assert record["temperature"] == 1.0 and record["rtd_loss"] > 0
    assert records[2]["aux_target_ce"] == pytest.approx(records[2]["aux_ce"], abs=1e-5)  # u = 0.5: the span's end


def test_unknown_curriculum_kind_is_one_error_line(prepared, tmp_path):
    result = run_train_single(train_args(prepared, tmp_path / "run", "method=fast", "curriculum.kind=cosine"))
    assert_user_error(result, "curriculum.kind", "exp, target")
