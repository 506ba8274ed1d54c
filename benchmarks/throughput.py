"""Step time, tokens/s, model TFLOP/s and MFU of the pre-training methods at the same main-model size,
in one process, interleaved (one step of each method in turn), median of several steps after warm-up,
on the current device. MFU is against the device's dense matmul peak measured in the same run.

    python benchmarks/throughput.py [--methods mlm electra fast] [--preset small] [--seq-len 128]
                                    [--micro-batch 8] [--steps 6] [--warmup 2]

Each method is what training runs: the module from `Method.build_model(None)` (plain torch, no
DeepSpeed engine), its `prepare_batch` (masking; for `fast` the frozen aux's sampling, from a random
ElectraForMaskedLM of the aux size saved to a temporary directory), torch AdamW. Model FLOPs are
each method's own `flops_per_sequence` (analytic, accounting/flops.py)."""
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

from benchmarks.common import RESULTS, markdown_table, publish
from fast_electra_ds.config import RunConfig
from fast_electra_ds.replace import METHODS, StepContext, TokenInfo

SPECIALS = dict(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Dense matmul TFLOP/s of this device: best of `repeats` n×n×n matmuls."""
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runner(name: str, config: RunConfig, tokens: TokenInfo, device: torch.device, aux_dir: Path):
    from transformers import ElectraForMaskedLM

    from fast_electra_ds.models.main import electra_config, scaled_sizes

    method = METHODS[name](config, tokens, device)
    if name == "fast":
        sizes = scaled_sizes(config.model.sizes(), config.aux.depth_fraction, config.aux.hidden_fraction)
        aux = ElectraForMaskedLM(electra_config(sizes, config.model, tokens.vocab_size, tokens.pad_id))
        aux.save_pretrained(aux_dir)
        config.aux.path = str(aux_dir)
        method.setup()
    module = method.build_model(None).to(device).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    return method, module, optimizer


def run(methods: list[str] | None = None, preset: str = "small", seq_len: int = 128, micro_batch: int = 8,
        vocab_size: int = 8000, steps: int = 6, warmup: int = 2, out_dir: Path | None = RESULTS, quiet: bool = False) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wanted = methods or ["mlm", "electra", "fast"]
    missing = [m for m in wanted if m not in METHODS]
    wanted = [m for m in wanted if m in METHODS]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # CPU trains in fp32 here
    torch.manual_seed(0)
    tokens = TokenInfo(vocab_size=vocab_size, fingerprint="benchmark", **SPECIALS)
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            config = RunConfig(method=name)
            config.model.preset = preset
            config.model.max_position_embeddings = max(seq_len, 512)
            config.data.seq_len = seq_len
            runners[name] = make_runner(name, config, tokens, device, Path(tmp) / "aux")
        peak = matmul_peak_tflops(device, dtype)
        times: dict[str, list[float]] = {name: [] for name in wanted}
        generator = torch.Generator().manual_seed(0)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else torch.autocast(device.type, enabled=False)
        total = (warmup + steps) * len(wanted)
        with tqdm(total=total, desc="throughput", disable=quiet, file=sys.stderr) as bar:
            for step in range(warmup + steps):
                for name in wanted:  # interleaved: drift in machine load hits every method alike
                    method, module, optimizer = runners[name]
                    ids = torch.randint(5, vocab_size, (micro_batch, seq_len), generator=generator)
                    ids[:, 0], ids[:, -1] = tokens.cls_id, tokens.sep_id
                    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
                    ctx = StepContext(step=step, progress=step / (warmup + steps),
                                      generator=torch.Generator(device=device).manual_seed(step))
                    _sync(device)
                    start = time.perf_counter()
                    inputs, _ = method.prepare_batch(batch, ctx)
                    with autocast:
                        loss, _ = module(**inputs)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    _sync(device)
                    if step >= warmup:
                        times[name].append(time.perf_counter() - start)
                    bar.set_postfix_str(name)
                    bar.update(1)
    rows = {}
    for name in wanted:
        method = runners[name][0]
        t = statistics.median(times[name])
        flops = method.flops_per_sequence(seq_len) * micro_batch
        rows[name] = {"step_s": t, "tokens_per_s": micro_batch * seq_len / t, "model_tflops": flops / t / 1e12,
                      "mfu": flops / t / 1e12 / peak, "gflops_per_sequence": method.flops_per_sequence(seq_len) / 1e9,
                      "step_times": times[name]}
    result = {"device": str(device), "dtype": str(dtype), "matmul_peak_tflops": peak, "preset": preset, "seq_len": seq_len,
              "micro_batch": micro_batch, "vocab_size": vocab_size, "steps": steps, "warmup": warmup, "methods": rows,
              "missing_methods": missing, "threads": torch.get_num_threads()}
    publish("throughput", result, render(result), out_dir, quiet)
    return result


def render(r: dict) -> str:
    base = r["methods"].get("electra", {}).get("step_s")
    rows = [[name, m["step_s"] * 1e3, m["tokens_per_s"], m["gflops_per_sequence"], m["model_tflops"] * 1e3, m["mfu"] * 100,
             base / m["step_s"] if base else None] for name, m in r["methods"].items()]
    text = (f"Throughput on {r['device']} ({r['threads']} threads, {r['dtype']}), main model preset `{r['preset']}`, "
            f"{r['micro_batch']} × {r['seq_len']} tokens, vocabulary {r['vocab_size']}, median of {r['steps']} steps after "
            f"{r['warmup']} warm-up, methods interleaved; measured matmul peak {r['matmul_peak_tflops'] * 1e3:.1f} GFLOP/s\n\n"
            + markdown_table(["method", "step ms", "tokens/s", "model GFLOPs/seq", "model GFLOP/s", "MFU %", "speed-up vs electra"],
                             rows, digits=2))
    if r["missing_methods"]:
        text += f"\n\nNot registered (skipped): {', '.join(r['missing_methods'])}"
    return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["mlm", "electra", "fast"])
    parser.add_argument("--preset", default="small", help="main model preset (tiny, small, base, large)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS), help="directory for throughput.json / .md ('' to write nothing)")
    args = parser.parse_args(argv)
    return run(args.methods, args.preset, args.seq_len, args.micro_batch, args.vocab_size, args.steps, args.warmup,
               Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
