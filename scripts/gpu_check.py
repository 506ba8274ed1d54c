"""Check a GPU machine in one command (scripts/gpu_check.sh): the CUDA paths this project has, run
for real, each check PASS, FAIL or SKIP with its reason. Writes <out>/results.md and results.json and
exits 1 on any FAIL. With --cpu the same checks run on CPU ranks and the GPU-only ones are SKIP.

Checks: a `fast` run under ZeRO-3 bf16 on 1 device (and on 2 GPUs when present) whose loss falls,
which resumes exactly and whose export reproduces it; the Adam implementation (no JIT build);
no attention mask for packed batches and SDPA's flash / memory-efficient kernel chosen; the frozen
aux in 16 bit on the device, outside the engine; model.compile without graph breaks; the fp16 config with forced overflow steps; peak
memory of real steps against the memory simulation at `small` and a base shape; Fast/Original step
time and MFU against a GEMM peak measured in the same run, with fast-offline/Original and its
main-only floor beside them (issue 21's GPU figures).

The harness, the checks and the report are scripts/gpu_checks/'s modules.

Internal: `--inner NAME AUX_DIR` runs one in-process group of checks in a fresh process (its own
process group and CUDA state) and prints its results as JSON on the last line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fast_electra_ds.runtime.launch import launch_env  # noqa: E402
from gpu_checks.harness import FAIL, SKIP, Runs, result, run_inner  # noqa: E402
from gpu_checks.inner import inner_device, inner_memory, inner_throughput  # noqa: E402
from gpu_checks.report import write_report  # noqa: E402
from gpu_checks.run_checks import check_compile, check_fast_run, check_fp16_overflow  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on CPU ranks; the GPU-only checks are SKIP")
    parser.add_argument("--out", default=str(ROOT / "runs/gpu_check"), help="where results.md, results.json and logs/ go")
    parser.add_argument("--inner", nargs=3, metavar=("GROUP", "AUX", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        group, aux, device = args.inner
        found = {"device": lambda: inner_device(Path(aux), device), "memory": inner_memory, "throughput": inner_throughput}[group]()
        print(json.dumps(found), flush=True)
        return 0

    started = time.time()
    # Its runs are its own: a caller's rendezvous (or a port in use) stays out.
    env = launch_env(cpu=False, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if args.cpu:
        env["DS_ACCELERATOR"] = "cpu"
        os.environ["DS_ACCELERATOR"] = "cpu"
    import torch

    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run on a GPU node, or "
              "scripts/gpu_check.sh --cpu for the CPU subset", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    def record(found: list[dict] | dict) -> None:
        for r in found if isinstance(found, list) else [found]:
            results.append(r)
            print(f"{r['status']:4}  {r['check']}: {r['reason']}", flush=True)

    def attempt(name: str, check, *check_args) -> None:
        try:
            record(check(*check_args))
        except Exception as error:
            record(result(name, FAIL, f"{type(error).__name__}: {str(error).splitlines()[0][:400]}"))

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        runs = Runs(Path(tmp), logs, env)
        aux = Path(tmp) / "aux"
        try:
            runs.prepare()
            runs.train("aux_mlm", aux, "method=aux-mlm", "train.steps=8")
            aux_ready = True
        except Exception as error:
            record(result("setup_aux_model", FAIL, f"{type(error).__name__}: {str(error).splitlines()[0][:400]}"))
            aux_ready = False
        if aux_ready:
            aux = aux / "hf"
            attempt(f"fast_zero3_bf16_1{'gpu' if device == 'cuda' else 'cpu'}", check_fast_run, runs, aux, 1, device)
            if gpus >= 2:
                attempt("fast_zero3_bf16_2gpu", check_fast_run, runs, aux, 2, device)
            else:
                record(result("fast_zero3_bf16_2gpu", SKIP, f"needs 2 GPUs ({gpus} visible); 2 CPU ranks are the integration tests' subject"))
            attempt("device_checks", run_inner, "device", aux, device, env, logs, 600)
            attempt("fp16_forced_overflow", check_fp16_overflow, runs, aux, device)
        if device == "cuda" and aux_ready:
            attempt("compile_fast_graph_breaks", check_compile, runs, aux)
        else:
            record(result("compile_fast_graph_breaks", SKIP, "run on GPUs only: about a minute of compilation on CPU (tests/unit/test_compile.py covers a block)"))
        if device == "cuda":
            attempt("memory_vs_simulation", run_inner, "memory", aux, device, env, logs, 600)
            attempt("step_time_mfu", run_inner, "throughput", aux, device, env, logs, 600)
        else:
            record(result("memory_vs_simulation", SKIP, "needs a GPU (torch.cuda.max_memory_allocated); the CPU comparison is benchmarks/memory.py's validation"))
            record(result("step_time_mfu", SKIP, "needs a GPU (CPU step times: benchmarks/engine_throughput.py)"))

    summary = write_report(out, device, started, results)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
