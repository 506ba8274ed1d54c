"""The ELECTRA paper's ablations (`electra-15`, `replace-mlm`, `all-tokens-mlm`) on 2 CPU ranks under
ZeRO-3 in bf16 through the deepspeed launcher: each trains, checkpoints and exports a model that
matches the engine. all-tokens-mlm's copy gate is created next to the partitioned 16-bit models,
outside zero.Init, which is what this run exercises."""
import json

import pytest

from tests.helpers import common, launch, metrics

pytestmark = pytest.mark.integration

STEPS = 6
MAIN_LOSS = {"electra-15": "rtd_loss", "replace-mlm": "main_mlm_loss", "all-tokens-mlm": "main_mlm_loss"}


@pytest.mark.parametrize("method", sorted(MAIN_LOSS))
def test_ablation_trains_checkpoints_and_exports_on_two_ranks(method, prepared, tmp_path):
    result = launch(common(prepared, tmp_path, f"method={method}", f"train.steps={STEPS}", "train.save_every=3"))
    done = json.loads(result.stdout.split("[fast-electra] done: ")[-1].splitlines()[0])
    assert done["finished"] and done["step"] == STEPS
    assert max(done["export_max_logit_difference"].values()) < 5e-2  # bf16 engine vs the fp32 export
    records = metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    key = MAIN_LOSS[method]
    assert all(0 < r[key] < 20 and 0 < r["mlm_loss"] < 20 for r in records)  # finite, on both objectives
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000003", "step_00000006"]
    assert (tmp_path / "hf" / "model.safetensors").is_file()
