"""Check a GPU machine in one command (scripts/gpu_check.sh): the CUDA paths this project has, run
for real, each check PASS, FAIL or SKIP with its reason. Writes <out>/results.md and results.json and
exits 1 on any FAIL. With --cpu the same checks run on CPU ranks and the GPU-only ones are SKIP.

Checks: a `fast` run under ZeRO-3 bf16 on 1 device (and on 2 GPUs when present) whose loss falls,
which resumes exactly and whose export reproduces it; the Adam implementation (no JIT build);
no attention mask for packed batches and SDPA's flash / memory-efficient kernel chosen; the frozen
aux in 16 bit on the device, outside the engine; model.compile without graph breaks; the fp16 config with forced overflow steps; peak
memory of real steps against the memory simulation at `small` and a base shape; Fast/Original step
time and MFU against a GEMM peak measured in the same run.

Internal: `--inner NAME AUX_DIR` runs one in-process group of checks in a fresh process (its own
process group and CUDA state) and prints its results as JSON on the last line."""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fast_electra_ds.metrics.logger import read_metrics  # noqa: E402
from fast_electra_ds.runtime.process_group import RENDEZVOUS_VARIABLES  # noqa: E402

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
STEPS = 12  # training steps of the `fast` runs (tiny model): enough for the loss to fall
RESUME_TOLERANCE = {"cpu": 0.0, "cuda": 5e-3}  # |loss difference| resumed vs uninterrupted (GPU kernels are not all deterministic)
EXPORT_TOLERANCE = 0.05  # max |logit difference|, exported Hugging Face model vs the 16-bit engine
MEMORY_TOLERANCE = 0.10


def result(name: str, status: str, reason: str, **details) -> dict:
    return {"check": name, "status": status, "reason": reason, "details": details}


# --- running training --------------------------------------------------------------------------------

class Runs:
    """Training runs through train.py as a user starts them, logs kept under <out>/logs."""

    def __init__(self, work: Path, logs: Path, env: dict[str, str]):
        self.work, self.logs, self.env = work, logs, env
        self.data = work / "data"
        self.tokenizer = work / "tokenizer"

    def prepare(self) -> None:
        from fast_electra_ds.data.tiny import prepare_tiny_corpus

        prepare_tiny_corpus(self.work)

    def train(self, name: str, out_dir: Path, *overrides: str, ranks: int = 1, ds_config: str | Path = "zero3.json",
              timeout: float = 600, extra_env: dict[str, str] | None = None) -> dict:
        """One train.py run; returns its `done` record (raises with the log's tail if it failed)."""
        args = ["--ds_config", str(ds_config), "--config", str(ROOT / "configs/tiny.yaml"), f"data.path={self.data}",
                f"data.tokenizer={self.tokenizer}", f"train.out_dir={out_dir}", "train.log_every=1", *overrides]
        from fast_electra_ds.runtime.launch import train_command

        command = train_command(args, ranks)
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            completed = subprocess.run(command, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                       timeout=timeout)
        text = log.read_text(errors="replace")
        done = [line for line in text.splitlines() if "[fast-electra] done: " in line]
        if completed.returncode != 0 or not done:
            tail = [line for line in text.splitlines() if line.strip() and "WARNING" not in line][-3:]
            raise RuntimeError(f"{name} failed (exit {completed.returncode}, log {log}): {' | '.join(tail)[-400:]}")
        return json.loads(done[-1].split("[fast-electra] done: ", 1)[1])


def losses(run_dir: Path) -> dict[int, float]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def check_fast_run(runs: Runs, aux: Path, ranks: int, device: str) -> dict:
    name = f"fast_zero3_bf16_{ranks}{'gpu' if device == 'cuda' else 'cpu'}"
    backend = "NCCL" if device == "cuda" else "gloo"
    whole, parts = runs.work / f"{name}_whole", runs.work / f"{name}_resumed"
    common = ("method=fast", f"aux.path={aux}", f"train.steps={STEPS}")
    done = runs.train(f"{name}_whole", whole, *common, ranks=ranks)
    runs.train(f"{name}_first_half", parts, *common, f"train.stop_after={STEPS // 2}", ranks=ranks)
    resumed = runs.train(f"{name}_resumed", parts, *common, "--resume", ranks=ranks)
    a, b = losses(whole), losses(parts)
    first, last = sum(a[s] for s in (1, 2, 3)) / 3, sum(a[s] for s in (STEPS - 2, STEPS - 1, STEPS)) / 3
    gap = max(abs(a[s] - b[s]) for s in a)
    export = max((done.get("export_max_logit_difference") or {"missing": math.inf}).values())
    export_resumed = max((resumed.get("export_max_logit_difference") or {"missing": math.inf}).values())
    details = dict(ranks=ranks, backend=backend, loss_first3=first, loss_last3=last, resume_max_loss_difference=gap,
                   export_max_logit_difference=max(export, export_resumed), steps=STEPS)
    problems = []
    if not last < first:
        problems.append(f"loss did not fall ({first:.4f} -> {last:.4f})")
    if sorted(a) != sorted(b) or gap > RESUME_TOLERANCE[device]:
        problems.append(f"resumed run differs from the uninterrupted one (max |loss difference| {gap:.3g} > {RESUME_TOLERANCE[device]})")
    if max(export, export_resumed) > EXPORT_TOLERANCE:
        problems.append(f"export differs from the engine (max |logit difference| {max(export, export_resumed):.3g} > {EXPORT_TOLERANCE})")
    if problems:
        return result(name, FAIL, "; ".join(problems), **details)
    return result(name, PASS, f"{ranks} rank(s), {backend}: loss {first:.4f} -> {last:.4f}, resumed run's largest loss difference {gap:.2g}, "
                              f"export's largest logit difference {max(export, export_resumed):.2g}", **details)


def check_fp16_overflow(runs: Runs, aux: Path, device: str) -> dict:
    """Every step overflows (initial loss scale 2^40): DeepSpeed skips every update. The trainer's step
    counter and consumed_samples still advance; the lr and the temperature curriculum do not."""
    name = "fp16_forced_overflow"
    from deepspeed.accelerator import get_accelerator

    if not get_accelerator().is_fp16_supported():
        return result(name, SKIP, f"DeepSpeed's {get_accelerator()._name} accelerator does not support fp16 here")
    config = json.loads((ROOT / "ds_configs/zero3_fp16.json").read_text())
    config["fp16"]["initial_scale_power"] = 40
    path = runs.work / "fp16_overflow.json"
    path.write_text(json.dumps(config))
    out, steps = runs.work / name, 4
    runs.train(name, out, "method=fast", f"aux.path={aux}", f"train.steps={steps}", "train.export=false", ds_config=path)
    logged = records(out)
    from fast_electra_ds import checkpointing as ckpt
    from fast_electra_ds.config.run_config import RunConfig

    final = ckpt.complete_checkpoints(ckpt.checkpoint_root(out))[-1]
    state = json.loads((final / ckpt.TRAINER_STATE).read_text())
    t0 = RunConfig().curriculum.t0
    batch = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"]
    details = dict(steps=state["step"], consumed_samples=state["consumed_samples"], lrs=[r["lr"] for r in logged],
                   temperatures=[r["temperature"] for r in logged], t0=t0)
    problems = []
    if state["step"] != steps or state["consumed_samples"] != steps * batch:
        problems.append(f"step {state['step']} / consumed_samples {state['consumed_samples']}, expected {steps} / {steps * batch}")
    if any(r["lr"] != 0 for r in logged):
        problems.append("the lr advanced on skipped steps")
    if any(not math.isclose(r["temperature"], t0) for r in logged):
        problems.append(f"the temperature left T0={t0} on skipped steps ({details['temperatures']})")
    if problems:
        return result(name, FAIL, "; ".join(problems), **details)
    return result(name, PASS, f"{steps} overflowing steps skipped: step counter and consumed_samples advanced, lr 0 and T = T0 throughout", **details)


def check_compile(runs: Runs, aux: Path) -> dict:
    """model.compile=true on `fast`: the compiled blocks break no graph (TORCH_LOGS=graph_breaks)."""
    name = "compile_fast_graph_breaks"
    runs.train(name, runs.work / name, "method=fast", f"aux.path={aux}", "train.steps=4", "train.export=false", "model.compile=true",
               extra_env={"TORCH_LOGS": "graph_breaks"})
    breaks = [line for line in (runs.logs / f"{name}.log").read_text(errors="replace").splitlines() if "Graph break" in line and "user code at" in line]
    where = sorted({line.split("user code at ", 1)[1].strip() for line in breaks})
    if breaks:
        return result(name, FAIL, f"{len(breaks)} graph break(s) at {', '.join(where)[:300]}", locations=where)
    return result(name, PASS, "4 compiled fast steps under ZeRO-3 with no graph break")


# --- in-process checks (run by --inner in a fresh process) ---------------------------------------------

def inner_device(aux: Path, device_name: str) -> list[dict]:
    import torch

    from fast_electra_ds.runtime.device import bind_device

    device = bind_device() if device_name == "cuda" else torch.device("cpu")
    out = []
    for check in (_optimizer, _attention, _aux_placement):
        try:
            out.extend(check(device, aux))
        except Exception as error:  # a broken check is a FAIL with its reason, the others still run
            out.append(result(check.__name__.strip("_"), FAIL, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"))
    return out


def _optimizer(device, aux: Path) -> list[dict]:
    import deepspeed
    import torch
    from deepspeed.ops.op_builder.builder import OpBuilder
    from transformers import ElectraForPreTraining

    from benchmarks.engine_memory import _init_single_rank
    from fast_electra_ds.config.run_config import RunConfig, load_ds_config
    from fast_electra_ds.runtime.device import prebuilt_fused_adam
    from fast_electra_ds.config.ds_config import resolve_ds_config
    from fast_electra_ds.models.encoder import build_model, electra_config

    _init_single_rank()
    config = RunConfig()
    config.model.preset = "tiny"
    ds = resolve_ds_config(load_ds_config(str(ROOT / "ds_configs/zero3.json")), 1, config, device.type == "cuda")
    for section in ("tensorboard", "scheduler"):
        ds.pop(section, None)
    model = build_model(ElectraForPreTraining, electra_config(config.model.sizes(), config.model, 1000, 0), ds)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()], config=ds)
    inner = getattr(optimizer, "optimizer", optimizer)
    kind = f"{type(inner).__module__}.{type(inner).__name__}"
    fused, foreach = inner.defaults.get("fused"), inner.defaults.get("foreach")
    jit_built = sorted(op for op in OpBuilder._loaded_ops if "adam" in op)
    details = dict(optimizer=kind, fused=fused, foreach=foreach, prebuilt_fused_adam=prebuilt_fused_adam(), loaded_ops=jit_built,
                   ds_params={k: v for k, v in ds["optimizer"]["params"].items() if k in ("torch_adam", "fused", "foreach")})
    expected_fused = device.type == "cuda" and not prebuilt_fused_adam()
    if jit_built and not prebuilt_fused_adam():
        return [result("optimizer_no_jit", FAIL, f"DeepSpeed op(s) {jit_built} were built at run time", **details)]
    if expected_fused and not (isinstance(inner, torch.optim.AdamW) and fused):
        return [result("optimizer_no_jit", FAIL, f"expected torch's fused AdamW on CUDA, got {kind} (fused={fused})", **details)]
    return [result("optimizer_no_jit", PASS, f"{kind} (fused={fused}, foreach={foreach}), no DeepSpeed op built at run time", **details)]


def _attention(device, aux: Path) -> list[dict]:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import ElectraForPreTraining

    from fast_electra_ds.config.run_config import RunConfig
    from fast_electra_ds.data.unpadded import unpadded_mask
    from fast_electra_ds.models.encoder import build_model, electra_config

    config = RunConfig()
    config.model.preset = "small"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(ElectraForPreTraining, electra_config(config.model.sizes(), config.model, 1000, 0), None).to(device, dtype).eval()
    seen = []
    model.base_model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True)
    ids = torch.randint(5, 1000, (4, 128), device=device)
    padded = torch.ones(4, 128, dtype=torch.long, device=device)
    padded[1, 100:] = 0
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def kernels(mask) -> list[str]:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
            with profile(activities=activities) as prof:
                model(input_ids=ids, attention_mask=mask)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return sorted({e.key for e in prof.key_averages() if any(s in e.key.lower() for s in ("flash", "efficient", "fmha", "attention", "cudnn"))})

    unpadded_kernels = kernels(unpadded_mask((4, 128), torch.long, device))
    dropped = seen[-1] is None
    padded_kernels = kernels(padded)
    out = [result("attention_mask_dropped", PASS if dropped else FAIL,
                  "a packed batch (no padding) reaches the encoder with no attention mask" if dropped else
                  "a packed batch still reaches the encoder with an attention mask", unpadded=unpadded_kernels, padded=padded_kernels)]
    if device.type != "cuda":
        out.append(result("sdpa_flash_kernel", SKIP, "needs a GPU (on CPU SDPA runs its flash-for-CPU kernel with or without a mask)",
                          unpadded=unpadded_kernels))
        return out
    device_kernels = [k for k in unpadded_kernels if not k.startswith("aten::")]
    flash = [k for k in unpadded_kernels if "flash" in k.lower()]
    efficient = [k for k in unpadded_kernels if "efficient" in k.lower() or "fmha" in k.lower() or "cudnn" in k.lower()]
    status = PASS if flash or efficient else FAIL
    chosen = "flash" if flash else ("memory-efficient / cuDNN" if efficient else "neither flash nor memory-efficient")
    out.append(result("sdpa_flash_kernel", status, f"SDPA chose {chosen} for a packed bf16 batch", kernels=unpadded_kernels,
                      device_kernels=device_kernels, padded_kernels=padded_kernels))
    return out


def _aux_placement(device, aux: Path) -> list[dict]:
    import torch

    from fast_electra_ds.data.tokenizer import load_tokenizer, tokenizer_fingerprint
    from fast_electra_ds.models.aux import load_frozen_aux

    tokenizer = load_tokenizer(str(aux))
    frozen = load_frozen_aux(str(aux), len(tokenizer), tokenizer_fingerprint(tokenizer), "auto", device)
    params = list(frozen.model.parameters())
    dtypes = sorted({str(p.dtype) for p in params})
    devices = sorted({p.device.type for p in params})
    wanted = "torch.float16" if device.type == "cuda" and not torch.cuda.is_bf16_supported() else "torch.bfloat16"
    ids = torch.randint(5, len(tokenizer), (2, 32), device=device)
    selected = torch.zeros(2, 32, dtype=torch.bool, device=device)
    selected[:, 3] = True
    sampled, _ = frozen.propose(ids, torch.ones_like(ids), selected, 1.0, torch.Generator(device=device).manual_seed(0), [0, 1, 2, 3])
    details = dict(dtypes=dtypes, devices=devices, requires_grad=any(p.requires_grad for p in params), training=frozen.model.training,
                   sampled_device=sampled.device.type)
    ok = dtypes == [wanted] and devices == [device.type] and not details["requires_grad"] and not frozen.model.training and sampled.device.type == device.type
    return [result("aux_16bit_on_device", PASS if ok else FAIL,
                   f"frozen aux {'/'.join(dtypes)} on {'/'.join(devices)}, no gradients, eval mode, sampling on the device" if ok else
                   f"frozen aux is {dtypes} on {devices} (requires_grad {details['requires_grad']}), expected {wanted} on {device.type}", **details)]


def inner_memory(names: tuple[str, ...] = ("small", "paper-base")) -> list[dict]:
    """Real steps' torch.cuda.max_memory_allocated against the simulation (benchmarks/memory.py)."""
    from benchmarks.memory import KINDS, measure_real, simulate
    from fast_electra_ds.accounting.paper import get_setting

    out = []
    for name in names:
        setting = get_setting(name, zero_stage=3, world_size=1, precision="bf16", original_generator="electra")
        simulated, measured = simulate(setting), measure_real(setting, repeats=1)
        rows = {}
        for kind in KINDS:
            sim, real = simulated[f"{kind}_total" if kind != "main" else "main"], measured[f"{kind}_total" if kind != "main" else "main"]
            rows[kind] = {"simulated_mib": sim / 2**20, "measured_mib": real / 2**20, "error": (sim - real) / real}
        worst = max(abs(r["error"]) for r in rows.values())
        text = ", ".join(f"{k} {r['measured_mib']:.0f}/{r['simulated_mib']:.0f} MiB" for k, r in rows.items())
        out.append(result(f"memory_vs_simulation_{name}", PASS if worst <= MEMORY_TOLERANCE else FAIL,
                          f"measured/simulated {text} (worst {worst:.1%}, limit {MEMORY_TOLERANCE:.0%})", rows=rows))
    return out


def inner_throughput(shape: str = "base") -> list[dict]:
    """Fast and Original (electra with the aux-size generator) through the DeepSpeed engine as the
    trainer runs them (benchmarks/engine_throughput.py), MFU against a GEMM peak measured in that run."""
    from benchmarks.engine_throughput import measure

    r = measure(shape, 1, ["fast", "original"], steps=4, warmup=1)
    fast, original, ratio = r["methods"]["fast"], r["methods"]["original"], r["fast_over_original"]
    details = dict(gemm_peak_tflops=r["gemm_peak_tflops"], fast_step_ms=fast["step_s"] * 1e3, original_step_ms=original["step_s"] * 1e3,
                   fast_mfu=fast["mfu"], original_mfu=original["mfu"], fast_over_original=ratio, shape=shape)
    text = (f"Fast {fast['step_s'] * 1e3:.1f} ms / Original {original['step_s'] * 1e3:.1f} ms per step through the engine "
            f"(ratio {ratio['measured']:.2f}, FLOPs predict {ratio['predicted']:.2f}); MFU {fast['mfu']:.0%} / {original['mfu']:.0%} "
            f"of a {r['gemm_peak_tflops']:.0f} TFLOP/s bf16 GEMM peak measured in the same run (shape {shape})")
    sane = all(0 < m["mfu"] <= 1 for m in (fast, original))
    if not sane:
        return [result("step_time_mfu", FAIL, text + "; MFU out of (0, 1]", **details)]
    if ratio["measured"] >= 1:
        return [result("step_time_mfu", FAIL, text + "; Fast is not faster per step than Original", **details)]
    return [result("step_time_mfu", PASS, text, **details)]


def run_inner(name: str, aux: Path, device: str, env: dict, logs: Path, timeout: float) -> list[dict]:
    log = logs / f"inner_{name}.log"
    with log.open("w") as out:
        completed = subprocess.run([sys.executable, __file__, "--inner", name, str(aux), device], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=out, text=True, timeout=timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("[")]
    if completed.returncode != 0 or not lines:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip() and "WARNING" not in line][-2:]
        raise RuntimeError(f"exit {completed.returncode} (log {log}): {' | '.join(tail)[-300:]}")
    return json.loads(lines[-1])


# --- the report ------------------------------------------------------------------------------------------

def table(results: list[dict]) -> str:
    lines = ["| check | status | reason |", "|---|---|---|"]
    lines += [f"| {r['check']} | {r['status']} | {r['reason'].replace('|', '/')} |" for r in results]
    return "\n".join(lines)


def environment(device: str) -> dict:
    import deepspeed
    import torch
    import transformers

    info = {"device": device, "torch": torch.__version__, "deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device == "cuda" else []}
    return info


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
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    for inherited in RENDEZVOUS_VARIABLES:  # its runs are its own: a caller's rendezvous (or a port in use) stays out
        env.pop(inherited, None)
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

    summary = {"environment": environment(device), "wall_time_s": round(time.time() - started, 1), "results": results,
               "failed": [r["check"] for r in results if r["status"] == FAIL]}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    env_line = ", ".join(f"{k} {v}" for k, v in summary["environment"].items() if v)
    (out / "results.md").write_text(f"# GPU check\n\n{env_line}; {summary['wall_time_s']:.0f} s\n\n{table(results)}\n")
    print("\n" + table(results))
    print(f"\n{len(results) - len(summary['failed'])} of {len(results)} checks passed or skipped in {summary['wall_time_s']:.0f} s; "
          f"{out / 'results.md'}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
