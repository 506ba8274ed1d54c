"""The `deepspeed` launcher killed as a user or scheduler would: kill -9 of the runner leaves
no orphan rank, SIGTERM to it makes the ranks checkpoint and exit, and a second job on the same
train.out_dir refuses with one line while the first runs."""
import json
import signal
import subprocess
import time

import pytest

from tests.helpers import common, processes_of, run_train_single, start, steps_logged, wait_until

pytestmark = pytest.mark.integration


def stop_and_check(job, run, how, timeout=240):
    """Signal the runner, then: no process of the job left, a checkpoint from the stop, its step."""
    before = steps_logged(run)
    job.send_signal(how)
    started = time.time()
    try:
        wait_until(lambda: not processes_of(run), timeout, f"ranks still running {timeout} s after {how.name} to the launcher: {processes_of(run)}")
    finally:
        for pid in processes_of(run):  # never leave a stray job behind the test
            subprocess.run(["kill", "-9", pid])
        job.kill()
        output = job.communicate()[0]
    marker = json.loads((run / "STOPPED_BY_SIGNAL").read_text())
    assert marker["step"] >= before and (run / "checkpoints" / f"step_{marker['step']:08d}" / "COMPLETE").is_file(), output[-3000:]
    print(f"{how.name} to the launcher: ranks checkpointed step {marker['step']} and exited in {time.time() - started:.1f} s")
    return marker["step"], output


def running(args, run, after_step=0):
    job = start(args)
    try:
        wait_until(lambda: steps_logged(run) > after_step + 1 or job.poll() is not None, 240, "no training step logged")
        assert job.poll() is None, job.communicate()[0][-3000:]
    except BaseException:
        job.kill()
        raise
    return job


def test_kill_9_of_the_launcher_leaves_no_rank_and_a_second_job_is_refused(prepared, tmp_path):
    args = common(prepared, tmp_path, "method=aux-mlm", "train.steps=100000")
    job = running(args, tmp_path)
    try:
        second = run_train_single(args + ["--resume"])
    except BaseException:
        job.kill()
        raise
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    stopped, output = stop_and_check(job, tmp_path, signal.SIGKILL)
    assert second.returncode == 2 and len(errors) == 1 and "is in use by another job" in errors[0], second.stderr[-3000:]
    assert "launcher process" in output and "is gone" in output


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_and_a_resume_continues(prepared, tmp_path):
    args = common(prepared, tmp_path, "method=aux-mlm", "train.steps=100000")
    first, _ = stop_and_check(running(args, tmp_path), tmp_path, signal.SIGTERM)
    job = running(args + ["--resume"], tmp_path, after_step=first)  # the lock of the stopped job is gone with it
    second, output = stop_and_check(job, tmp_path, signal.SIGTERM)
    assert f"resumed from {tmp_path / 'checkpoints' / f'step_{first:08d}'}" in output and second > first
