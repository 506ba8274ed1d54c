"""scripts/gpu_check.sh --cpu: the GPU check runs here too, its GPU-only checks SKIP, so the script
cannot rot while no GPU is at hand. About 1-2 min on 2 loaded CPU cores (6 short train.py runs)."""
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, cpu_env

pytestmark = pytest.mark.integration

EVERY_CHECK = {"fast_zero3_bf16_1cpu", "fast_zero3_bf16_2gpu", "optimizer_no_jit", "attention_mask_dropped", "sdpa_flash_kernel",
               "aux_16bit_on_device", "fp16_forced_overflow", "memory_vs_simulation", "step_time_mfu", "compile_fast_graph_breaks"}
GPU_ONLY = {"fast_zero3_bf16_2gpu", "sdpa_flash_kernel", "memory_vs_simulation", "step_time_mfu", "compile_fast_graph_breaks"}
FP16_CHECK = "fp16_forced_overflow"


def cpu_runs_fp16() -> bool:
    """Whether DeepSpeed's CPU accelerator supports fp16 on this machine (oneDNN fp16: a CPU capability,
    e.g. AVX512-FP16 or AMX-FP16). Asked in the environment the script runs in."""
    asked = subprocess.run([sys.executable, "-c", "from deepspeed.accelerator import get_accelerator; "
                            "print('fp16', bool(get_accelerator().is_fp16_supported()))"],
                           env=cpu_env(), capture_output=True, text=True, timeout=300)
    answer = [line for line in asked.stdout.splitlines() if line.startswith("fp16 ")]
    assert asked.returncode == 0 and answer, asked.stderr[-2000:]
    return answer[-1] == "fp16 True"


def test_gpu_check_cpu_mode_passes_and_reports(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--cpu", "--out", str(tmp_path)], cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    status = {r["check"]: r["status"] for r in report["results"]}
    assert set(status) == EVERY_CHECK
    # The fp16 check needs the CPU's fp16 support; without it, a SKIP that says so is the right answer, not a FAIL.
    fp16_here = cpu_runs_fp16()
    skipped = GPU_ONLY if fp16_here else GPU_ONLY | {FP16_CHECK}
    assert {c for c, s in status.items() if s == "SKIP"} == skipped
    assert all(status[c] == "PASS" for c in EVERY_CHECK - skipped)
    if not fp16_here:
        reason = next(r["reason"] for r in report["results"] if r["check"] == FP16_CHECK)
        assert "does not support fp16" in reason, reason
    assert report["results"][0]["details"]["resume_max_loss_difference"] == 0  # exact resume on CPU
    markdown = (tmp_path / "results.md").read_text()
    assert all(f"| {c} | {s} |" in markdown for c, s in status.items())
    assert f"| {FP16_CHECK} | {status[FP16_CHECK]} |" in done.stdout  # the table is printed too


@pytest.mark.slow
def test_gpu_only_checks_run_their_logic_at_tiny_size_on_cpu():
    """The memory and step-time checks, which --cpu skips, at the tiny shape on CPU (about 1 min):
    their code paths cannot rot either."""
    done = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'scripts'); import json, gpu_check as g; "
                           "print(json.dumps(g.inner_memory(('tiny',)) + g.inner_throughput('tiny')))"],
                          cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    found = {r["check"]: r for r in json.loads(done.stdout.strip().splitlines()[-1])}
    assert found["memory_vs_simulation_tiny"]["status"] == "PASS", found["memory_vs_simulation_tiny"]["reason"]
    assert set(found["memory_vs_simulation_tiny"]["details"]["rows"]) == {"main", "original", "fast"}
    throughput = found["step_time_mfu"]["details"]
    assert throughput["fast_step_ms"] > 0 and throughput["original_step_ms"] > 0 and 0 < throughput["fast_mfu"] <= 1
    assert throughput["fast_offline_over_original"]["measured"] > 0 and throughput["main_only_over_original"]["measured"] > 0
