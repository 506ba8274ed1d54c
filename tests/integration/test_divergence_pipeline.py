"""A forced divergence (a resume at optim.lr=1e30) stops the run with one line naming the step and
the last good checkpoint, exit status 4; the good checkpoint stays the only one, nothing is exported.
One process, a few tiny steps."""
import pytest

from fast_electra_ds.checkpointing import checkpoint_root, complete_checkpoints
from fast_electra_ds.checkpointing.layout import LATEST
from tests.helpers import common, run_train_single

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
