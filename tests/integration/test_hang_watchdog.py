"""A hung rank is noticed: with one rank of a 2-rank job stopped (SIGSTOP, as a swapping node or a
debugger would), the job ends by train.stall_minutes, long before the collective timeout, with one
line naming the stopped rank, a stack dump from the live rank, and its checkpoints intact. Rank 0 too:
it hosts the rendezvous store, whose calls then never answer."""
import signal
import subprocess
import time

import pytest

from fast_electra_ds.checkpointing import checkpoint_root, complete_checkpoints
from tests.helpers import common, processes_of, rank_pid, start, steps_logged, wait_until

pytestmark = pytest.mark.integration

STALL_MINUTES = 0.5  # long enough for a tiny step on 2 loaded cores, far below the collective timeout
COLLECTIVE_TIMEOUT_MINUTES = 10


@pytest.mark.parametrize("stopped_rank", [1, 0])
def test_a_stopped_rank_is_named_within_the_stall_window(prepared, tmp_path, stopped_rank):
    job = start(common(prepared, tmp_path, "method=aux-mlm", "train.steps=100000", "train.save_every=2",
                       f"train.stall_minutes={STALL_MINUTES}", f"train.collective_timeout_minutes={COLLECTIVE_TIMEOUT_MINUTES}"))
    stopped = None
    try:
        wait_until(lambda: steps_logged(tmp_path) >= 4 or job.poll() is not None, 300, "no training steps logged")
        assert job.poll() is None, job.communicate()[0][-3000:]
        stopped = rank_pid(tmp_path, stopped_rank)
        checkpoints_before = set(complete_checkpoints(checkpoint_root(tmp_path)))
        stopped_at = time.time()
        subprocess.run(["kill", "-STOP", str(stopped)], check=True)
        output = job.communicate(timeout=COLLECTIVE_TIMEOUT_MINUTES * 60 - 60)[0]
        took = time.time() - stopped_at
    finally:
        for pid in processes_of(tmp_path):  # never leave a stray (or stopped) rank behind
            subprocess.run(["kill", "-CONT", pid])
            subprocess.run(["kill", "-9", pid])
        if job.poll() is None:
            job.kill()
    print(f"rank {stopped_rank} stopped: job ended {took:.0f} s later (stall window {STALL_MINUTES * 60:.0f} s), rc {job.returncode}")
    assert job.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if "error: " in line and "stall_minutes" in line]
    assert len(errors) == 1, output[-3000:]
    assert f"rank(s) {stopped_rank} stopped responding" in errors[0] and "latest complete checkpoint" in errors[0]
    assert "Traceback" not in output, output[-3000:]
    assert "stall-rank*.txt" in errors[0] and (tmp_path / f"stall-rank{1 - stopped_rank}.txt").read_text().strip()
    assert took < COLLECTIVE_TIMEOUT_MINUTES * 60 / 2
    assert checkpoints_before <= set(complete_checkpoints(checkpoint_root(tmp_path)))  # nothing lost

