"""Step time through the DeepSpeed engine the trainer runs: deepspeed.initialize on the
method's module with the shipped ds_configs/zero3.json (ZeRO-3, bf16), then per step prepare_batch,
engine forward, engine.backward, before_optimizer_step, engine.step, as trainer.Trainer.train. On 1 and
2 ranks (processes started here; gloo on CPU, nccl on GPUs), the methods interleaved (one step of each
in turn), median over steps of the slowest rank's step time.

    python benchmarks/engine_throughput.py [--shapes small base] [--ranks 1 2] [--steps 4] [--warmup 1]

Methods: `fast`; `original` = method electra with a generator of the aux model's size (depth 1/3, full
width: the poster's Original); `electra` = method electra as config.py builds it (ELECTRA's 1/4-width
generator); `main-only` = fast's main model alone on already-corrupted input (a random mask_prob share
of the positions replaced by random tokens: no aux, no sampler), the measured floor of fast's step:
main-only/original bounds what any aux and sampler can reach; `fast-offline` = fast reading its
replacements from a pass made beforehand (aux.replacements, docs/offline-replacements.md: no aux, no
sampler, the real read path), whose making is timed too (tokens/s of the pass on rank 0). Shapes (main model preset, sequence, micro-batch, vocabulary): small = small, 128, 8, 30522;
base = base, 256, 1, 30522 (a base-like shape that fits a CPU).

Beside each ratio: the FLOPs-predicted one (each method's flops_per_sequence, accounting/flops.py),
achieved model FLOP/s per rank, the share of the step spent in GEMMs (torch.profiler self time of
aten::mm / addmm / bmm / baddbmm / linear kernels over the step, one profiled step per method on rank 0),
and MFU against a GEMM peak measured in the same run at the model's shapes (bf16 [tokens x h] @ [h x 4h]
and [tokens x h] @ [h x h], best of several)."""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import random_id_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHAPES = {"small": dict(preset="small", seq_len=128, micro_batch=8, vocab_size=30522),
          "base": dict(preset="base", seq_len=256, micro_batch=1, vocab_size=30522),
          "tiny": dict(preset="tiny", seq_len=64, micro_batch=2, vocab_size=1000)}
MAIN_ONLY = "main-only"
OFFLINE = "fast-offline"
METHODS = ("fast", "original", "electra", MAIN_ONLY, OFFLINE)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")


def run_config(method: str, shape: dict, steps: int):
    from fast_electra_ds.config.run_config import RunConfig

    config = RunConfig(method={"original": "electra", MAIN_ONLY: "fast", OFFLINE: "fast"}.get(method, method))
    config.model.preset = shape["preset"]
    config.model.max_position_embeddings = max(shape["seq_len"], 512)
    config.data.seq_len = shape["seq_len"]
    config.train.steps = steps
    if method == "original":  # the poster's Original: the generator of the aux model's size
        config.generator.depth_fraction, config.generator.hidden_fraction = config.aux.depth_fraction, config.aux.hidden_fraction
    return config


def ds_config(shape: dict) -> dict:
    """The shipped ds_configs/zero3.json with this shape's micro-batch; no monitors (nothing written)."""
    ds = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    for section in ("tensorboard", "wandb", "csv_monitor", "comet"):
        ds.pop(section, None)
    ds.update(train_micro_batch_size_per_gpu=shape["micro_batch"], gradient_accumulation_steps=1)
    ds.pop("train_batch_size", None)
    return ds


def step_positions(number: int, rank: int, micro: int, world: int) -> list[int]:
    """The stream positions of `rank`'s samples in step `number` (one micro-batch per rank per step)."""
    from fast_electra_ds.data.dataset import micro_batch_positions

    return micro_batch_positions(number * micro * world, 0, micro, rank, world)


def make_pass(directory: Path, config, tokens, device, batch_of, world: int, micro: int, total_steps: int) -> dict:
    """The pass fast-offline reads: the online path (data.corruption_rng=sample) over every rank's
    batch of every step, one shard per step, written as `fast-electra replacements` writes them; timed."""
    from fast_electra_ds.data.replacements import shard_name, write_manifest
    from fast_electra_ds.methods import METHODS as REGISTRY, StepContext
    from fast_electra_ds.replacements import append_batch, new_parts, write_parts

    maker = REGISTRY["fast"](config, tokens, device)
    maker.setup()
    directory.mkdir(parents=True, exist_ok=True)
    write_manifest(directory, {**maker.planned(micro * world, micro, world), "samples": total_steps * micro * world,
                               "shard_samples": micro * world, "validation_steps": []})
    tokens_made, flops, started = 0, 0.0, time.perf_counter()
    for number in range(total_steps):
        parts = new_parts()
        for rank in range(world):
            batch = batch_of(number, rank)
            ctx = StepContext(number, number / total_steps, torch.Generator(), positions=step_positions(number, rank, micro, world))
            with torch.no_grad():
                append_batch(parts, batch["input_ids"], *maker.propose(batch, ctx))
            tokens_made += batch["input_ids"].numel()
            flops += micro * maker.aux_flops_per_sequence(batch["input_ids"].shape[1])
        write_parts(directory / shard_name(number), parts)
    _sync(device)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in directory.glob("shard-*.npz"))
    return {"tokens_per_s": tokens_made / seconds, "aux_tflops_per_s": flops / seconds / 1e12, "bytes_per_token": size / tokens_made}


def gemm_peak_tflops(shape: dict, hidden: int, device: torch.device, repeats: int = 5) -> float:
    """bf16 GEMM FLOP/s at the model's shapes: tokens x h @ h x 4h (FFN) and h x h (attention
    projections), the best of `repeats` of each."""
    tokens = shape["micro_batch"] * shape["seq_len"]
    best = 0.0
    for n in (4 * hidden, hidden):
        a = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16)
        b = torch.randn(hidden, n, device=device, dtype=torch.bfloat16)
        a @ b
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            _sync(device)
            best = max(best, 4 * 2 * tokens * hidden * n / (time.perf_counter() - start) / 1e12)
    return best


def main_only_inputs(method, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The main model's inputs without an aux: mask_prob of the positions replaced by uniformly random
    tokens (the step's cost does not depend on which tokens; these few elementwise ops are all that is
    left of the replacement)."""
    original = batch["input_ids"]
    replaced = torch.rand(original.shape, generator=generator, device=original.device) < method.config.masking.mask_prob
    random_tokens = torch.randint(5, method.tokens.vocab_size, original.shape, generator=generator, device=original.device)
    corrupted = torch.where(replaced, random_tokens, original)
    inputs = {"input_ids": corrupted, "attention_mask": batch["attention_mask"], "is_replaced": corrupted != original}
    if method.config.model.corrective_lm:
        inputs["original_ids"] = original
    return inputs


def flops_per_sequence(name: str, method, seq_len: int) -> float:
    return method.main_flops_per_sequence(seq_len) if name == MAIN_ONLY else method.flops_per_sequence(seq_len)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _worker(rank: int, world: int, port: int, shape_name: str, methods: list[str], steps: int, warmup: int, aux_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    import deepspeed
    import torch.distributed as dist
    from transformers import ElectraForMaskedLM

    from fast_electra_ds.config.ds_config import resolve_ds_config
    from fast_electra_ds.models.encoder import electra_config, scaled_sizes
    from fast_electra_ds.methods import METHODS as REGISTRY, StepContext

    on_cuda = torch.cuda.is_available()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks share the CPU cores
    device = torch.device(f"cuda:{rank}" if on_cuda else "cpu")
    if on_cuda:
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if on_cuda else "gloo")
    shape = SHAPES[shape_name]
    tokens = random_id_tokens(shape["vocab_size"], "engine-throughput")
    total_steps = warmup + steps + 1
    offline_pass = None

    def batch_of(number: int, rank: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 * number + rank)
        ids = torch.randint(5, tokens.vocab_size, (shape["micro_batch"], shape["seq_len"]), generator=g)
        ids[:, 0], ids[:, -1] = tokens.cls_id, tokens.sep_id
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}

    runners = {}
    for name in methods:
        torch.manual_seed(0)
        config = run_config(name, shape, total_steps)
        if rank == 0 and not (Path(aux_dir) / "config.json").is_file():
            sizes = scaled_sizes(config.model.sizes(), config.aux.depth_fraction, config.aux.hidden_fraction)
            ElectraForMaskedLM(electra_config(sizes, config.model, tokens.vocab_size, tokens.pad_id)).save_pretrained(aux_dir)
        dist.barrier()
        config.aux.path = aux_dir
        if name == OFFLINE:
            config.data.corruption_rng = "sample"
            if rank == 0:
                offline_pass = make_pass(Path(aux_dir).parent / "replacements", config, tokens, device, batch_of, world, shape["micro_batch"], total_steps)
            dist.barrier()
            config.aux.replacements = str(Path(aux_dir).parent / "replacements")
        method = REGISTRY[config.method](config, tokens, device)
        if name != MAIN_ONLY:  # main-only loads no aux
            method.setup()
        ds = resolve_ds_config(ds_config(shape), world, config, on_cuda)
        module = method.build_model(ds)
        engine, _, _, _ = deepspeed.initialize(model=module, model_parameters=method.param_groups(module), config=ds)
        engine.train()
        runners[name] = (method, engine)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # again: DeepSpeed's set-up changes it
    hidden = run_config("fast", shape, 1).model.sizes()["hidden_size"]
    peak = gemm_peak_tflops(shape, hidden, device)

    def step(name: str, number: int) -> None:
        method, engine = runners[name]
        batch = batch_of(number, rank)
        ctx = StepContext(number, number / total_steps, torch.Generator(device=device).manual_seed(number * 100 + rank),
                          positions=step_positions(number, rank, shape["micro_batch"], world))  # those fast-offline's pass used
        inputs = main_only_inputs(method, batch, ctx.generator) if name == MAIN_ONLY else method.prepare_batch(batch, ctx)[0]
        loss, _ = engine(**inputs)
        engine.backward(loss)
        method.before_optimizer_step(engine.optimizer.param_groups)
        engine.step()

    times = {name: [] for name in methods}
    for number in range(warmup + steps):
        for name in methods:  # interleaved: load drift hits every method alike
            dist.barrier()
            _sync(device)
            start = time.perf_counter()
            step(name, number)
            _sync(device)
            if number >= warmup:
                times[name].append(time.perf_counter() - start)
    # the slowest rank's time of each step
    flat = torch.tensor([t for name in methods for t in times[name]], dtype=torch.float64)
    dist.all_reduce(flat, op=dist.ReduceOp.MAX)
    gemm_share, rest = {}, {}
    for name in methods:  # one profiled step each (not timed)
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        dist.barrier()
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            step(name, warmup + steps)
            _sync(device)
            wall = time.perf_counter() - start
        events = prof.key_averages()
        attr = "self_device_time_total" if on_cuda else "self_cpu_time_total"
        gemm_us = sum(getattr(e, attr) for e in events if e.key in GEMM_OPS)
        gemm_share[name] = gemm_us / 1e6 / wall
        others = sorted((e for e in events if e.key not in GEMM_OPS and getattr(e, attr) > 0), key=lambda e: -getattr(e, attr))
        rest[name] = [(e.key, getattr(e, attr) / 1e6 / wall) for e in others[:5]]  # what holds the rest of the step
    if rank == 0:
        per = iter(flat.tolist())
        from fast_electra_ds.runtime.device import cpu_bf16_is_emulated

        result = {"shape": shape_name, **shape, "ranks": world, "device": str(device), "threads": torch.get_num_threads(),
                  "gemm_peak_tflops": peak, "bf16_emulated": device.type == "cpu" and cpu_bf16_is_emulated(),
                  "steps": steps, "warmup": warmup, "methods": {}, "offline_pass": offline_pass}
        for name in methods:
            step_times = [next(per) for _ in times[name]]
            method = runners[name][0]
            per_sequence = flops_per_sequence(name, method, shape["seq_len"])
            flops_per_rank = per_sequence * shape["micro_batch"]
            median = statistics.median(step_times)
            result["methods"][name] = {"step_s": median, "step_times": step_times, "gflops_per_sequence": per_sequence / 1e9,
                                       "model_tflops_per_rank": flops_per_rank / median / 1e12,
                                       "mfu": flops_per_rank / median / 1e12 / peak, "gemm_share": gemm_share[name],
                                       "top_other_ops": rest[name]}
        Path(out).write_text(json.dumps(result))
    for _, engine in runners.values():
        engine.destroy()
    dist.barrier()
    dist.destroy_process_group()


def measure(shape_name: str, ranks: int, methods: list[str], steps: int, warmup: int) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        out = str(Path(tmp) / "result.json")
        mp.start_processes(_worker, args=(ranks, port, shape_name, methods, steps, warmup, str(Path(tmp) / "aux"), out),
                           nprocs=ranks, join=True, start_method="spawn")
        result = json.loads(Path(out).read_text())
    add_ratios(result)
    return result


RATIOS = (("fast", "original"), ("fast", "electra"), (MAIN_ONLY, "original"),  # main-only: fast/original's measured floor
          (OFFLINE, "original"), (OFFLINE, "fast"))


def ratio_key(numerator: str, denominator: str) -> str:
    return f"{numerator.replace('-', '_')}_over_{denominator}"


def add_ratios(result: dict) -> None:
    """fast over original and over electra, and main-only over original (the floor): measured
    step-time ratio (median of the per-step ratios of interleaved steps, and its range) and the
    FLOPs-predicted one."""
    m = result["methods"]
    for numerator, denominator in RATIOS:
        if numerator in m and denominator in m:
            paired = [a / b for a, b in zip(m[numerator]["step_times"], m[denominator]["step_times"])]
            result[ratio_key(numerator, denominator)] = {
                "measured": statistics.median(paired), "range": [min(paired), max(paired)],
                "predicted": m[numerator]["gflops_per_sequence"] / m[denominator]["gflops_per_sequence"]}


def mfu_cell(result: dict, method: dict) -> str:
    """MFU, where the peak it divides by means something: not on a CPU that emulates bf16 (the peak is
    the emulation's), and not above 100% (the peak was timed under other load than the steps)."""
    if result.get("bf16_emulated"):
        return "– (bf16 emulated on this CPU)"
    if method["mfu"] > 1:
        return f"– (peak mis-timed: {method['mfu']:.0%})"
    return f"{method['mfu']:.1%}"


def render(results: list[dict]) -> str:
    lines = ["Step time through the DeepSpeed engine (ZeRO-3 bf16, ds_configs/zero3.json), methods interleaved, "
             "median of the slowest rank's step time; ratios are medians of per-step ratios (range in brackets).", "",
             "| shape | ranks | method | step ms | model GFLOPs/seq | model TFLOP/s per rank | GEMM share | MFU (vs GEMM peak) | GEMM peak TFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, m in r["methods"].items():
            lines.append(f"| {r['shape']} | {r['ranks']} | {name} | {m['step_s'] * 1e3:.1f} | {m['gflops_per_sequence']:.2f} | "
                         f"{m['model_tflops_per_rank']:.4f} | {m['gemm_share']:.0%} | {mfu_cell(r, m)} | {r['gemm_peak_tflops']:.3f} |")
    lines += ["", "| shape | ranks | fast/original measured | predicted (FLOPs) | fast/electra measured | predicted (FLOPs) "
              "| floor: main-only/original measured | predicted (FLOPs) | fast-offline/original measured | predicted (FLOPs) "
              "| fast-offline/fast measured | predicted (FLOPs) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cells = []
        for numerator, denominator in RATIOS:
            x = r.get(ratio_key(numerator, denominator))
            cells += [f"{x['measured']:.3f} ({x['range'][0]:.3f}–{x['range'][1]:.3f})", f"{x['predicted']:.3f}"] if x else ["–", "–"]
        lines.append(f"| {r['shape']} | {r['ranks']} | " + " | ".join(cells) + " |")
    for r in results:
        if r.get("offline_pass"):
            x = r["offline_pass"]
            lines += ["", f"fast-offline's pass ({r['shape']}, made on rank 0 of {r['ranks']}): {x['tokens_per_s']:,.0f} tokens/s, "
                      f"{x['aux_tflops_per_s']:.4f} aux TFLOP/s, {x['bytes_per_token']:.3f} bytes per token (one shard per step)."]
    lines += ["", "main-only is fast's main model alone (no aux, no sampler) through the same engine, interleaved with the "
              "others: no aux or sampler can bring fast/original below main-only/original, measured or predicted."]
    lines += ["", "Largest non-GEMM self times (share of the profiled step):"]
    for r in results:
        for name, m in r["methods"].items():
            ops = ", ".join(f"{op} {share:.0%}" for op, share in m.get("top_other_ops", []))
            lines.append(f"- {r['shape']}, {r['ranks']} rank(s), {name}: {ops}")
    device = results[0]["device"] if results else "?"
    lines += ["", f"Device: {device}, {results[0]['threads'] if results else '?'} threads per rank. "
              "GEMM share: profiler self time of matmul kernels over the profiled step's wall time; the rest is "
              "elementwise kernels (GELU, LayerNorm, softmax, dropout's RNG), attention, the optimizer and, across ranks, communication.",
              "",
              "AccumulateGrad on 2 ranks is mostly waiting for the other rank, not accumulating. DeepSpeed's ZeRO-3 registers its "
              "gradient hook with register_post_accumulate_grad_hook (deepspeed/utils/torch.py register_grad_hook; "
              "stage3.py reduce_partition_and_remove_grads), so the hook runs inside AccumulateGrad; when a parameter "
              "fills the reduce bucket, the hook all-reduces the bucket (stage3.py __avg_scatter_contiguous_grads: "
              "dist.all_reduce, synchronous; the CPU accelerator has no side stream) and blocks until the slower rank "
              "gets there. The profiler records no op for that wait, so it lands in AccumulateGrad's self time. It is "
              "DeepSpeed's, and its size is the ranks' imbalance in that one profiled step, not a property of the method: "
              "cProfile around engine.backward at `small`, 2 ranks (2 buckets, so 2 waits a step), beside another "
              "2-rank job on 2 cores, measured 0.07-0.66 s of waiting per backward for fast, 0.08-1.18 s for original "
              "and 0.07-0.88 s for electra, in backwards of 1.1-5.1 s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["small", "base"], choices=list(SHAPES))
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS), help="directory for engine_throughput.json / .md ('' to write nothing)")
    args = parser.parse_args(argv)
    results = [measure(shape, ranks, args.methods, args.steps, args.warmup) for shape in args.shapes for ranks in args.ranks]
    text = render(results)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "engine_throughput.json").write_text(json.dumps(results, indent=1))
        (Path(args.out) / "engine_throughput.md").write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
