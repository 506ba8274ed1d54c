"""A 2-rank --resume with a changed config: a changed seq_len is refused in one line for the job,
before any weight is loaded and with the checkpoints untouched; a changed data path is accepted
with its note; every session's config stays in config-history/."""
import shutil

import pytest

from fast_electra_ds.checkpointing import HISTORY, checkpoint_root
from tests.helpers import assert_user_error, common, launch

pytestmark = pytest.mark.integration


def snapshot(root):
    return {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_resume_refuses_a_changed_seq_len_and_notes_a_changed_data_path(prepared, tmp_path):
    run = tmp_path / "run"
    args = common(prepared, run, "method=aux-mlm", "train.export=false")
    launch([*args, "train.steps=2"])
    before = snapshot(checkpoint_root(run))

    refused = launch([*args, "train.steps=3", "data.seq_len=32", "--resume"], check=False)
    assert_user_error(refused, "data.seq_len was 64, now 32", "new train.out_dir")
    assert "state_dict" not in refused.stdout + refused.stderr
    assert snapshot(checkpoint_root(run)) == before
    assert len(list((run / HISTORY).iterdir())) == 1  # the refused session ran under nothing

    moved = tmp_path / "moved-data"
    shutil.copytree(prepared["data"], moved)
    resumed = launch([*args, f"data.path={moved}", "train.steps=3", "--resume"])
    notes = [line for line in resumed.stdout.splitlines() if "resume: data.path changed" in line]
    assert len(notes) == 1 and str(moved) in notes[0], resumed.stdout[-3000:]
    assert (checkpoint_root(run) / "step_00000003" / "COMPLETE").is_file()
    assert len(list((run / HISTORY).iterdir())) == 2
