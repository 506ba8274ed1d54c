"""launcher/slurm/train.sbatch against a real Slurm 22.05: a throwaway 2-node cluster (virtual nodes n1,
n2 on this host, launcher/slurm/ci_cluster.sh, installed with apt-get when missing), a 2-node x 1-process
ZeRO-3 CPU run, a run that gets Slurm's warning signal mid-run, requeues itself and resumes with the
same losses, and bad input that fails before training."""
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, cpu_env, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

CLUSTER = ROOT / "launcher/slurm/ci_cluster.sh"
SBATCH = ROOT / "launcher/slurm/train.sbatch"
STEPS = 40


def cluster_shell(ci_dir: Path, command: str, port: int, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, SLURM_CI_DIR=str(ci_dir), SLURM_CI_PORT=str(port), SLURM_CI_KEEP="1")  # removed by the fixture
    return subprocess.run(["bash", "-c", f'source "{CLUSTER}" && {command}'], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("apt-get") and not shutil.which("slurmctld"):
        pytest.skip("the throwaway Slurm cluster needs root and apt-get (Debian) or an installed Slurm")
    # munged wants o+x on every directory above its socket: not under pytest's private tmp directory.
    ci_dir, port = Path(tempfile.mkdtemp(prefix="slurm-ci.", dir="/tmp")), free_port()
    ci_dir.chmod(0o755)
    up = cluster_shell(ci_dir, "slurm_up 2", port)
    if up.returncode != 0:
        cluster_shell(ci_dir, "slurm_down", port)
        if "slurm_install failed" in up.stderr:
            pytest.skip("Slurm could not be installed (apt-get install slurmctld slurmd slurm-client munge failed)")
        raise AssertionError(f"the Slurm cluster did not start:\n{up.stdout}\n{up.stderr[-3000:]}")
    env = dict(cpu_env(), SLURM_CONF=str(ci_dir / "slurm.conf"))
    env.pop("OMP_NUM_THREADS", None)  # train.sbatch chooses it: CPUs on the node / processes per node
    try:
        yield {"env": env, "dir": ci_dir}
    finally:
        down = cluster_shell(ci_dir, "slurm_down", port)
        assert down.returncode == 0, down.stderr
        assert f"slurm-ci {ci_dir}" not in Path("/etc/hosts").read_text()
        shutil.rmtree(ci_dir, ignore_errors=True)


def train_args(prepared, out_dir, ds_config=None):
    return ["--ds_config", str(ds_config or ROOT / "ds_configs/zero3.json"), "--config", str(ROOT / "configs/tiny.yaml"),
            f"data.path={prepared['data']}", f"data.tokenizer={prepared['tokenizer']}", f"train.out_dir={out_dir}",
            "method=electra", f"train.steps={STEPS}", "train.log_every=1"]


# --time must exceed train.sbatch's --signal=B:USR1@300, or the warning comes at once.
def sbatch(slurm, log: Path, args: list[str], *options: str, env: dict | None = None, wait: bool = True):
    command = ["sbatch", "--parsable", "-N", "2", "--ntasks-per-node", "1", "--time", "10", "-o", str(log), *options]
    command += ["--wait"] if wait else []
    command += [str(SBATCH), *args]
    return subprocess.Popen(command, cwd=ROOT, env=env or slurm["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(job: subprocess.Popen, log: Path, timeout: float = 240) -> int:
    try:
        job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        raise AssertionError(f"the Slurm job did not finish in {timeout} s:\n{log.read_text()[-3000:] if log.exists() else ''}")
    return job.returncode


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]


@pytest.fixture(scope="module")
def uninterrupted(slurm, prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-run")
    run, log = root / "run", root / "job.out"
    started = time.time()
    returncode = finish(sbatch(slurm, log, train_args(prepared, run)), log)
    assert returncode == 0, log.read_text()[-4000:]
    return run, log, time.time() - started


def test_two_node_job_trains_checkpoints_and_exports(uninterrupted):
    from transformers import ElectraForPreTraining

    run, log, wall = uninterrupted
    print(f"2-node sbatch --wait: {wall:.1f} s")
    text = log.read_text()
    assert "world=2 (2 x 1, srun)" in text and "MASTER_ADDR=n1" in text and "training finished" in text, text
    for rank in range(2):
        record = json.loads((run / "placement" / f"rank{rank}.json").read_text())
        assert record["rank"] == rank and record["world_size"] == 2
    job_id = log_job_id(text)
    assert sorted(p.name for p in (run / "logs").glob("*.log")) == [f"slurm-{job_id}-restart0-rank{r}.log" for r in (0, 1)]
    assert list((run / "checkpoints").glob(f"step_{STEPS:08d}/COMPLETE"))
    assert [r["step"] for r in metrics(run)] == list(range(1, STEPS + 1))
    assert not (run / "STOPPED_BY_SIGNAL").exists()
    model = ElectraForPreTraining.from_pretrained(run / "hf")
    assert model.config.num_hidden_layers == 2


def log_job_id(text: str) -> str:
    return text.split("] job ", 1)[1].split()[0]


def nodes_idle(slurm) -> bool:
    """Every node has finished cleaning up the previous run: a batch job restarted on a node whose
    old slurmstepd is still exiting fails at once (seen here: exit 1 within 2 ms)."""
    states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=slurm["env"], capture_output=True, text=True).stdout.split()
    steps = subprocess.run(["pgrep", "-f", "slurmstepd"], capture_output=True, text=True).stdout.split()
    return bool(states) and all(state == "idle" for state in states) and not steps


def release_when_requeued(slurm, job_id: str, deadline: float) -> None:
    """Slurm 22.05 gives a requeued batch job a begin time about two minutes out (Reason=BeginTime); a
    test need not wait for it."""
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], env=slurm["env"], capture_output=True, text=True).stdout.split()
        if state[:2] == ["PENDING", "BeginTime"] and nodes_idle(slurm):
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=slurm["env"], check=True)
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} was not requeued")


def wait_for_job(slurm, job_id: str, log: Path, deadline: float) -> int:
    """The exit status of the job's last run (no accounting: from scontrol, before MinJobAge drops it)."""
    while time.time() < deadline:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=slurm["env"], capture_output=True, text=True).stdout
        fields = dict(item.split("=", 1) for item in shown.split() if "=" in item)
        if fields.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"):
            return int(fields["ExitCode"].split(":")[0])
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish:\n{log.read_text()[-3000:]}")


def test_warning_signal_checkpoints_requeues_and_resumes_with_the_same_losses(slurm, prepared, uninterrupted, tmp_path):
    run, log = tmp_path / "run", tmp_path / "job.out"
    started = time.time()
    job = sbatch(slurm, log, train_args(prepared, run))
    deadline = time.time() + 400
    while time.time() < deadline and len(metrics(run) if (run / "metrics.jsonl").exists() else []) < 3:
        assert job.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    job_id = log_job_id(log.read_text())
    # What Slurm does at --signal=B:USR1@300: signal the batch shell, which forwards to the ranks.
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm["env"], check=True)
    release_when_requeued(slurm, job_id, time.time() + 300)
    # sbatch --wait may return at the requeue (Slurm 22.05) or only at the job's end: follow the job's
    # own state, with a bound generous enough for a loaded 2-core machine, and then reap sbatch.
    returncode = wait_for_job(slurm, job_id, log, time.time() + 900)
    finish(job, log, timeout=120)
    text = log.read_text()
    print(f"interrupted + requeued + resumed: {time.time() - started:.1f} s")
    assert returncode == 0, text[-4000:]
    assert "received USR1: forwarding" in text and f"requeueing job {job_id}" in text, text
    assert "restart 1 on" in text and "found a complete checkpoint" in text and "training finished" in text, text
    stopped_at = json.loads(text.split("checkpointed on a signal (", 1)[1].split(")", 1)[0])["step"]
    assert 3 <= stopped_at < STEPS
    assert f"resumed from {run}/checkpoints/step_{stopped_at:08d}" in (run / "logs" / f"slurm-{job_id}-restart1-rank0.log").read_text()
    resumed, reference = metrics(run), metrics(uninterrupted[0])
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed, reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a["step"], a["loss"], b["loss"])
    assert not (run / "STOPPED_BY_SIGNAL").exists()
    assert (run / "hf" / "model.safetensors").exists()


def one_error_line(log: Path, *fragments: str) -> None:
    errors = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_bad_input_fails_with_one_line_before_training(slurm, prepared, tmp_path):
    missing_json = sbatch(slurm, tmp_path / "ds.out", train_args(prepared, tmp_path / "a", ds_config=tmp_path / "nope.json"))
    args = train_args(prepared, tmp_path / "b")
    missing_yaml = sbatch(slurm, tmp_path / "yaml.out", [a.replace("tiny.yaml", "absent.yaml") for a in args])
    wrong_nodes = sbatch(slurm, tmp_path / "nodes.out", args, env=dict(slurm["env"], FE_NODES="4"))
    for job, log in ((missing_json, tmp_path / "ds.out"), (missing_yaml, tmp_path / "yaml.out"), (wrong_nodes, tmp_path / "nodes.out")):
        assert finish(job, log, timeout=60) == 2, log.read_text()
    one_error_line(tmp_path / "ds.out", "DeepSpeed config", "nope.json not found")
    one_error_line(tmp_path / "yaml.out", "config file", "absent.yaml not found")
    one_error_line(tmp_path / "nodes.out", "FE_NODES=4", "allocation has 2 nodes", "sbatch -N 4")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing started


def test_hostfile_from_the_allocation(slurm):
    shown = subprocess.run(["srun", "-N", "2", "--ntasks-per-node", "1", "--time", "1", "bash", "-c",
                            f'[ "$SLURM_PROCID" != 0 ] || python3 {ROOT}/launcher/hostfile.py'],
                           cwd=ROOT, env=slurm["env"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "n1 slots=1\nn2 slots=1\n"


def test_torchrun_and_deepspeed_no_ssh_launch_two_nodes(slurm, prepared, tmp_path):
    """The other two ways to start ranks under Slurm: torchrun per node (launcher/torchrun_node.sh) and
    train.sbatch's FE_LAUNCH=deepspeed (`deepspeed --no_ssh --node_rank=$SLURM_NODEID`)."""
    torchrun_args = [a.replace(f"train.steps={STEPS}", "train.steps=3") for a in train_args(prepared, tmp_path / "torchrun")]
    deepspeed_args = [a.replace(f"train.steps={STEPS}", "train.steps=3") for a in train_args(prepared, tmp_path / "deepspeed")]
    wrap = " ".join(["srun", str(ROOT / "launcher/torchrun_node.sh"), *torchrun_args])
    torchrun = subprocess.Popen(["sbatch", "--wait", "-N", "2", "--ntasks-per-node", "1", "--time", "10", "-o", str(tmp_path / "torchrun.out"),
                                 "--wrap", wrap], cwd=ROOT, env=dict(slurm["env"], MASTER_PORT=str(free_port())), text=True)
    deepspeed = sbatch(slurm, tmp_path / "deepspeed.out", deepspeed_args, env=dict(slurm["env"], FE_LAUNCH="deepspeed"))
    for job, name in ((torchrun, "torchrun"), (deepspeed, "deepspeed")):
        assert finish(job, tmp_path / f"{name}.out") == 0, (tmp_path / f"{name}.out").read_text()[-4000:]
        for rank in range(2):
            record = json.loads((tmp_path / name / "placement" / f"rank{rank}.json").read_text())
            assert record["world_size"] == 2
        assert [r["step"] for r in metrics(tmp_path / name)] == [1, 2, 3]
    assert "world=2 (2 x 1, deepspeed)" in (tmp_path / "deepspeed.out").read_text()
