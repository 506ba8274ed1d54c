"""The wall-time checkpoint rule in a real run: with train.save_every off and a clock that is always
due, every step checkpoints; the start line says the policy."""
import pytest

from fast_electra_ds import checkpointing as ckpt
from tests.helpers import ROOT, run_train_single

pytestmark = pytest.mark.integration


def test_wall_time_rule_checkpoints_a_run(prepared, tmp_path):
    out = tmp_path / "run"
    result = run_train_single(["--ds_config", str(ROOT / "ds_configs/zero3.json"), "--config", str(ROOT / "configs/tiny.yaml"),
                               f"data.path={prepared['data']}", f"data.tokenizer={prepared['tokenizer']}", f"train.out_dir={out}",
                               "method=aux-mlm", "train.steps=3", "train.save_every=0", "train.save_every_minutes=0.000001",
                               "train.keep_last=0", "train.export=false", "train.progress=lines"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in ckpt.complete_checkpoints(ckpt.checkpoint_root(out))] == [ckpt.tag_for(step) for step in (1, 2, 3)]
    assert "checkpoints every 1e-06 minutes of wall time and at the end (all kept)" in result.stdout
