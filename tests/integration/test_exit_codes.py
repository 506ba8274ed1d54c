"""A rank that finished exits 0, every time: a finished tiny 2-rank launch, repeated, never aborts at
exit ("terminate called without an active exception" came from a thread still inside a torch op when
the interpreter exited). A few minutes on 2 loaded CPU cores."""
import pytest

from tests.helpers import launch
from tests.helpers import common

pytestmark = pytest.mark.integration

REPEATS = 4


def test_finished_launches_exit_0_every_time(prepared, tmp_path):
    codes = []
    for attempt in range(REPEATS):
        # export off: the ranks exit right after the last step, while the reader thread is busiest
        done = launch(common(prepared, tmp_path / f"run{attempt}", "method=aux-mlm", "train.steps=2", "train.export=false"), check=False)
        output = done.stdout + done.stderr
        assert "[fast-electra] done:" in output, output[-3000:]
        assert "terminate called" not in output, output[-3000:]
        codes.append(done.returncode)
    assert codes == [0] * REPEATS
