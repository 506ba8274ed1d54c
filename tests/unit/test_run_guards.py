"""Guards around a run: train.out_dir must be writable before anything is built, one job
per train.out_dir (a run lock with stale-lock detection), and ranks that die with their launcher."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fast_electra_ds.runtime import run_lock
from fast_electra_ds.errors import UserError
from fast_electra_ds.runtime.resources import check_out_dir_writable
from tests.helpers import ROOT, run_train_single

# --- train.out_dir writable ------------------------------------------------------------------------------


def test_out_dir_under_a_file_or_in_proc_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="a_file is a file"):
        check_out_dir_writable(tmp_path / "a_file" / "run")
    with pytest.raises(UserError, match="/proc/fe_run cannot be written"):
        check_out_dir_writable("/proc/fe_run")
    check_out_dir_writable(tmp_path / "new" / "run")
    assert list((tmp_path / "new" / "run").iterdir()) == []  # created, the probe file removed


def test_train_refuses_an_unwritable_out_dir_before_building_anything(prepared, tmp_path):
    (tmp_path / "a_file").write_text("x")
    started = time.time()
    result = run_train_single(["--ds_config", str(ROOT / "ds_configs/zero3.json"), "--config", str(ROOT / "configs/tiny.yaml"),
                               f"data.path={prepared['data']}", f"data.tokenizer={prepared['tokenizer']}",
                               f"train.out_dir={tmp_path / 'a_file' / 'run'}", "method=electra"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and "a_file is a file" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "DeepSpeed info" not in result.stdout + result.stderr
    print(f"refused in {time.time() - started:.1f} s")


# --- the run lock ----------------------------------------------------------------------------------------------


@pytest.fixture
def other_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def write_lock(out_dir, **fields):
    (out_dir / run_lock.LOCK_FILE).write_text(json.dumps(fields))


def test_a_live_job_holds_the_lock_a_dead_one_does_not(tmp_path, other_process):
    import socket

    pid = other_process.pid
    write_lock(tmp_path, host=socket.gethostname(), pid=pid, start_time=run_lock.process_start_time(pid), started="earlier")
    reason = run_lock.try_acquire(tmp_path)
    assert f"is in use by another job (host {socket.gethostname()}, pid {pid}" in reason
    other_process.kill()
    other_process.wait()
    assert run_lock.try_acquire(tmp_path) is None  # its process is gone: stale, taken over
    assert json.loads((tmp_path / run_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "in use by another job" in run_lock.try_acquire(tmp_path)  # this process holds it now
    run_lock.release(tmp_path)
    assert not (tmp_path / run_lock.LOCK_FILE).exists()


def test_a_reused_pid_is_not_mistaken_for_the_lock_holder(tmp_path):
    import socket

    write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid(), start_time="1", started="long ago")  # same pid, other process
    assert run_lock.try_acquire(tmp_path) is None


def test_a_lock_from_another_host_is_stale_only_without_heartbeat(tmp_path):
    write_lock(tmp_path, host="node-elsewhere", pid=1234, start_time="99", started="now")
    assert "node-elsewhere" in run_lock.try_acquire(tmp_path)
    old = time.time() - run_lock.STALE_AFTER_S - 10
    os.utime(tmp_path / run_lock.LOCK_FILE, (old, old))
    assert run_lock.try_acquire(tmp_path) is None


def test_a_requeued_slurm_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    write_lock(tmp_path, host="node-elsewhere", pid=1234, start_time="99", started="now", slurm_job="77")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert run_lock.try_acquire(tmp_path) is None


def test_release_leaves_another_jobs_lock_alone(tmp_path):
    write_lock(tmp_path, host="node-elsewhere", pid=1234, start_time="99", started="now")
    run_lock.release(tmp_path)
    assert (tmp_path / run_lock.LOCK_FILE).exists()


# --- ranks die with their launcher -----------------------------------------------------------------------------

RANK = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from fast_electra_ds.runtime.launcher_death import die_with_launcher
    out = Path(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: (out.write_text("SIGTERM"), sys.exit(0)))  # the trainer checkpoints here
    watched = die_with_launcher()
    Path(str(out) + ".ready").write_text(str(len(watched)))
    time.sleep(60)
""")
# A launcher stand-in: its command line names deepspeed's launch module, it starts the next process and waits.
LAUNCHER = "import subprocess, sys, time; p = subprocess.Popen(sys.argv[2:]); p.wait(); time.sleep(60)"


def wait_for(path, timeout=30):
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.1)
    return path.exists()


@pytest.mark.parametrize("killed", ["parent", "grandparent"])
def test_a_rank_gets_sigterm_when_its_launcher_is_killed(tmp_path, killed):
    out = tmp_path / "rank"
    rank = [sys.executable, "-c", RANK, str(out)]
    launch = [sys.executable, "-c", LAUNCHER, "deepspeed.launcher.launch", *rank]
    runner = subprocess.Popen([sys.executable, "-c", LAUNCHER, "deepspeed", *launch], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert wait_for(out.with_name("rank.ready")), "the rank did not start"
        assert out.with_name("rank.ready").read_text() == "2"  # watching launch and the deepspeed runner
        children = subprocess.run(["pgrep", "-P", str(runner.pid)], capture_output=True, text=True).stdout.split()
        victim = runner.pid if killed == "grandparent" else int(children[0])
        os.kill(victim, signal.SIGKILL)
        started = time.time()
        assert wait_for(out, timeout=15), f"the rank was not told to stop after its {killed} was killed"
        print(f"rank stopped {time.time() - started:.1f} s after its {killed} was killed")
    finally:
        subprocess.run(["pkill", "-9", "-P", str(runner.pid)])
        runner.kill()
        runner.wait()


def test_a_rank_without_a_launcher_ignores_its_parent(tmp_path):
    """`nohup python train.py &` from a shell: the shell's exit must not stop the run."""
    out = tmp_path / "rank"
    result = subprocess.Popen([sys.executable, "-c", RANK, str(out)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert wait_for(out.with_name("rank.ready"))
        assert out.with_name("rank.ready").read_text() == "0"
    finally:
        result.kill()
        result.wait()
