"""A rank that finished exits 0, every time: a finished tiny 2-rank launch, repeated, never aborts at
exit ("terminate called without an active exception" came from a thread still inside a torch op when
the interpreter exited). A config mistake is one line for the whole job. A few minutes on 2 loaded
CPU cores."""
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


def test_a_config_mistake_in_a_2_rank_launch_is_one_line_for_the_job(prepared, tmp_path):
    """Every rank finds the same mistake before the process group: rank 0 alone says it."""
    done = launch(common(prepared, tmp_path, "method=bogus"), check=False)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")]
    assert done.returncode != 0 and len(errors) == 1 and "unknown method 'bogus'" in errors[0], errors
