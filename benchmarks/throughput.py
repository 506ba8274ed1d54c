"""Step time, tokens/s, model TFLOP/s and MFU of the pre-training methods at the same main-model size,
in one process, interleaved (one step of each method in turn), median of several steps after warm-up,
on the current device. MFU is against the device's dense matmul peak measured in the same run.
This times plain torch (autocast); the step through the DeepSpeed engine the trainer runs (ZeRO-3,
1 and 2 ranks) is benchmarks/engine_throughput.py.

    python benchmarks/throughput.py [--methods mlm electra fast] [--preset small] [--seq-len 128]
                                    [--micro-batch 8] [--steps 6] [--warmup 2]

Any registered method runs as the trainer runs it (trainer.py), without the DeepSpeed engine: `setup()`
(every method gets `aux.path` = a random ElectraForMaskedLM of the aux size saved to a temporary
directory, which `fast` loads as its frozen aux), the module from `build_model(None)`, torch AdamW over
`param_groups(module)`, then per step `prepare_batch`, forward, backward, `before_optimizer_step`,
optimizer step, and `end_step(ctx, metrics)` with the step's averaged metrics. Forward and backward run
under 16-bit autocast (`--precision`, bf16 by default as in ds_configs/; the frozen aux is 16-bit either
way). Model FLOPs are each method's own `flops_per_sequence` (analytic, accounting/flops.py).

Every method runs with config.py's defaults (`--generator config`: ELECTRA's 1/4-width full-depth
generator for the jointly trained ones), so methods compare as they train. `--generator aux` gives every
jointly trained generator the aux model's size (depth 1/3, full width): the poster's "Original", which
report.py uses for the Fast-vs-Original target. The
"predicted" speed-up of a method over `electra` is FLOPs(electra) / FLOPs(method); the target
is that `fast` is at least that much faster per step."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from benchmarks.common import RESULTS, markdown_table, publish, random_id_tokens
from fast_electra_ds.config.run_config import RunConfig
from fast_electra_ds.methods import METHODS, StepContext, TokenInfo
from fast_electra_ds.metrics.tracker import TrainingMetrics



def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5, budget_s: float = 0.5) -> float:
    """Dense matmul TFLOP/s of this device: best of `repeats` n×n×n matmuls. n shrinks where one would
    take longer than `budget_s`: a 16-bit matmul on a CPU without native support (bf16 without
    AVX512-BF16/AMX) is emulated, orders of magnitude slower, and a 2048-cube took minutes."""
    probe = 256
    a = torch.randn(probe, probe, device=device, dtype=dtype)
    a @ a
    _sync(device)
    start = time.perf_counter()
    a @ a
    _sync(device)
    n = matmul_size(time.perf_counter() - start, probe, n, budget_s)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e12


def matmul_size(probe_s: float, probe: int, n: int, budget_s: float) -> int:
    """The largest of n, n/2, n/4, ... (not below `probe`) whose matmul, scaled by n³ from a probe-size
    one that took `probe_s`, stays within `budget_s`."""
    while n > probe and probe_s * (n / probe) ** 3 > budget_s:
        n //= 2
    return n


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runner(name: str, config: RunConfig, tokens: TokenInfo, device: torch.device, aux_dir: Path):
    """The method, its module and optimizer, built as trainer.py builds them (plain torch instead of
    deepspeed.initialize)."""
    from transformers import ElectraForMaskedLM

    from fast_electra_ds.models.encoder import electra_config, scaled_sizes

    if not (aux_dir / "config.json").is_file():
        sizes = scaled_sizes(config.model.sizes(), config.aux.depth_fraction, config.aux.hidden_fraction)
        ElectraForMaskedLM(electra_config(sizes, config.model, tokens.vocab_size, tokens.pad_id)).save_pretrained(aux_dir)
    config.aux.path = str(aux_dir)  # read by methods with a frozen aux (fast), ignored by the others
    method = METHODS[name](config, tokens, device)
    method.setup()
    module = method.build_model(None).to(device).train()
    groups = method.param_groups(module) if hasattr(method, "param_groups") else [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    return method, module, optimizer


def train_step(method, module, optimizer, batch: dict[str, torch.Tensor], ctx: StepContext, autocast) -> None:
    """One optimizer step with every hook the trainer calls (trainer.Trainer.train)."""
    inputs, outside_metrics = method.prepare_batch(batch, ctx)
    with autocast:
        loss, metrics = module(**inputs)
    loss.backward()
    if hasattr(method, "before_optimizer_step"):
        method.before_optimizer_step(optimizer.param_groups)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    tracker = TrainingMetrics(torch.device("cpu"), per_step=method.reads_step_metrics, unigram_entropy=None)
    tracker.add({**metrics, **outside_metrics})
    method.end_step(ctx, tracker.step_values())


def run(methods: list[str] | None = None, preset: str = "small", seq_len: int = 128, micro_batch: int = 8,
        vocab_size: int = 8000, steps: int = 6, warmup: int = 2, out_dir: Path | None = RESULTS, quiet: bool = False,
        precision: str = "bf16", generator: str = "config") -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wanted = methods or ["mlm", "electra", "fast"]
    missing = [m for m in wanted if m not in METHODS]
    wanted = [m for m in wanted if m in METHODS]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    torch.manual_seed(0)
    tokens = random_id_tokens(vocab_size, "benchmark")
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            config = RunConfig(method=name)
            config.model.preset = preset
            config.model.max_position_embeddings = max(seq_len, 512)
            config.data.seq_len = seq_len
            config.train.steps = warmup + steps
            if generator == "aux":  # the poster's Original: a generator of the aux model's size
                config.generator.depth_fraction, config.generator.hidden_fraction = config.aux.depth_fraction, config.aux.hidden_fraction
            runners[name] = make_runner(name, config, tokens, device, Path(tmp) / "aux")
        peak = matmul_peak_tflops(device, dtype)
        times: dict[str, list[float]] = {name: [] for name in wanted}
        cpu_times: dict[str, list[float]] = {name: [] for name in wanted}  # this process's CPU time: less sensitive to other load
        generator_rng = torch.Generator().manual_seed(0)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else torch.autocast(device.type, enabled=False)
        total = (warmup + steps) * len(wanted)
        with tqdm(total=total, desc="throughput", disable=quiet, file=sys.stderr) as bar:
            for step in range(warmup + steps):
                for name in wanted:  # interleaved: drift in machine load hits every method alike
                    ids = torch.randint(5, vocab_size, (micro_batch, seq_len), generator=generator_rng)
                    ids[:, 0], ids[:, -1] = tokens.cls_id, tokens.sep_id
                    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
                    ctx = StepContext(step=step, progress=step / (warmup + steps),
                                      generator=torch.Generator(device=device).manual_seed(step))
                    _sync(device)
                    start, cpu_start = time.perf_counter(), time.process_time()
                    train_step(*runners[name], batch, ctx, autocast)
                    _sync(device)
                    if step >= warmup:
                        times[name].append(time.perf_counter() - start)
                        cpu_times[name].append(time.process_time() - cpu_start)
                    bar.set_postfix_str(name)
                    bar.update(1)
    rows = {}
    for name in wanted:
        method = runners[name][0]
        t = statistics.median(times[name])
        flops = method.flops_per_sequence(seq_len) * micro_batch
        rows[name] = {"step_s": t, "tokens_per_s": micro_batch * seq_len / t, "model_tflops": flops / t / 1e12,
                      "mfu": flops / t / 1e12 / peak, "gflops_per_sequence": method.flops_per_sequence(seq_len) / 1e9,
                      "step_times": times[name], "cpu_s": statistics.median(cpu_times[name]), "cpu_times": cpu_times[name]}
    add_speedups(rows)
    result = {"device": str(device), "dtype": str(dtype), "matmul_peak_tflops": peak, "preset": preset, "seq_len": seq_len,
              "micro_batch": micro_batch, "vocab_size": vocab_size, "steps": steps, "warmup": warmup, "methods": rows,
              "missing_methods": missing, "threads": torch.get_num_threads(), "generator": generator}
    publish("throughput", result, render(result), out_dir, quiet)
    return result


def add_speedups(rows: dict[str, dict]) -> None:
    """Measured and predicted (FLOPs) speed-up per step of each method over electra, and whether the
    measured one reaches the prediction (the target: "Fast faster than Electra per step by at least the
    FLOPs ratio predicts")."""
    base = rows.get("electra")
    for name, m in rows.items():
        if base is None or name == "electra":
            m.update(measured_speedup=None, cpu_time_speedup=None, predicted_speedup=None, target_met=None)
            continue
        m["measured_speedup"] = base["step_s"] / m["step_s"]
        m["cpu_time_speedup"] = base["cpu_s"] / m["cpu_s"]
        m["predicted_speedup"] = base["gflops_per_sequence"] / m["gflops_per_sequence"] if m["gflops_per_sequence"] else None
        m["target_met"] = m["predicted_speedup"] is not None and m["measured_speedup"] >= m["predicted_speedup"]


def render(r: dict) -> str:
    def met(m: dict) -> str:
        return "–" if m.get("target_met") is None else ("yes" if m["target_met"] else "no")

    rows = [[name, m["step_s"] * 1e3, m["tokens_per_s"], m["gflops_per_sequence"], m["model_tflops"] * 1e3, m["mfu"] * 100,
             m.get("predicted_speedup"), m.get("measured_speedup"), m.get("cpu_time_speedup"), met(m)] for name, m in r["methods"].items()]
    generator = {"aux": "the aux model's size (depth 1/3, full width)", "config": "config.py's size (ELECTRA's: 1/4 width, full depth)"}
    text = (f"Throughput on {r['device']} ({r['threads']} threads, {r['dtype']} autocast), main model preset `{r['preset']}`, "
            f"{r['micro_batch']} × {r['seq_len']} tokens, vocabulary {r['vocab_size']}, median of {r['steps']} steps after "
            f"{r['warmup']} warm-up, methods interleaved; jointly trained generator of "
            f"{generator.get(r.get('generator', 'config'), r.get('generator'))}; measured matmul peak "
            f"{r['matmul_peak_tflops'] * 1e3:.1f} GFLOP/s. Speed-up is per step over electra: predicted = "
            f"FLOPs(electra)/FLOPs(method), measured = step time(electra)/step time(method) (wall clock; the CPU-time ratio of this "
            f"process beside it is less sensitive to other load on the machine); target met = measured ≥ predicted.\n\n"
            + markdown_table(["method", "step ms", "tokens/s", "model GFLOPs/seq", "model GFLOP/s", "MFU %",
                              "speed-up predicted (FLOPs)", "speed-up measured", "speed-up (CPU time)", "target met"], rows, digits=2))
    if r["missing_methods"]:
        text += f"\n\nNot registered (skipped): {', '.join(r['missing_methods'])}"
    return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["mlm", "electra", "fast"], help=f"any of: {', '.join(sorted(METHODS))}")
    parser.add_argument("--preset", default="small", help="main model preset (tiny, small, base, large)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16", help="autocast dtype of forward and backward")
    parser.add_argument("--generator", choices=["config", "aux"], default="config",
                        help="jointly trained generators: config.py's size (ELECTRA's) or the aux model's (the poster's Original)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for throughput.json / .md ('' to write nothing)")
    args = parser.parse_args(argv)
    return run(args.methods, args.preset, args.seq_len, args.micro_batch, args.vocab_size, args.steps, args.warmup,
               Path(args.out) if args.out else None, precision=args.precision, generator=args.generator)


if __name__ == "__main__":
    main()
