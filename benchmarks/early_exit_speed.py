"""Steps/s of the early-exit methods (Kang et al.) against `electra`, per exit: how much a lower exit
saves, and what the methods' schedules cost on average. One process, methods interleaved step by step,
median step time after warm-up, plain torch (no DeepSpeed engine), fp32, on CPU.

    python benchmarks/early_exit_speed.py [--preset small] [--seq-len 128] [--micro-batch 8] [--steps 6] [--warmup 2]
                                          [--threads 1] [--clock cpu|wall] [--all-exits] [--also emb-gen fast]

The default clock is this process's CPU time with 1 thread: on a machine shared with other jobs the
wall time of a step depends on their load, its CPU time much less, so the ratios stay meaningful.

Rows: `electra`; `adaptive-exit` with P = initial_p (the paper's [0.1, 0.2, 0.3, 0.4]: the exit is drawn
every step, so use the mean, not the median, for it) and with P fixed on its lowest and highest exit
(every exit with --all-exits); `early-exit-disc` with its first and all sections active (every count with
--all-exits) (the method picks one per window; the table shows each); then the methods in `--also`
(default `emb-gen` and `fast`, whose frozen aux is a random model of the aux size, as in throughput.py),
so one run compares every generator-saving method with `electra`. Each step runs as the trainer runs
it: prepare_batch, forward, backward, before_optimizer_step, AdamW over param_groups."""
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

from benchmarks.common import SPECIALS, random_id_tokens
from benchmarks.throughput import make_runner
from fast_electra_ds.config.run_config import RunConfig
from fast_electra_ds.methods import METHODS, StepContext


def runner(name: str, preset: str, seq_len: int, vocab_size: int, aux_dir: Path):
    """Method, module and optimizer as throughput.py builds them (which also gives `fast` a frozen aux
    of the aux size, saved once to `aux_dir`)."""
    config = RunConfig(method=name)
    config.model.preset = preset
    config.model.max_position_embeddings = max(seq_len, 512)
    config.data.seq_len = seq_len
    tokens = random_id_tokens(vocab_size, "speed")
    return make_runner(name, config, tokens, torch.device("cpu"), aux_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--all-exits", action="store_true")
    parser.add_argument("--also", nargs="*", default=["emb-gen", "fast"], help=f"other methods to compare: any of {', '.join(sorted(METHODS))}")
    args = parser.parse_args(argv)
    unknown = [m for m in args.also if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)} in --also; use any of {', '.join(sorted(METHODS))}")
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    aux_dir = tempfile.TemporaryDirectory()  # lives until main returns: `fast` reads its aux from it

    def build(name: str):
        return runner(name, args.preset, args.seq_len, args.vocab_size, Path(aux_dir.name))

    runners = {"electra": build("electra")}
    adaptive = build("adaptive-exit")
    runners[f"adaptive-exit P={adaptive[0].p}"] = adaptive
    for i, layer in enumerate(adaptive[0].exits):
        if not args.all_exits and 0 < i < len(adaptive[0].exits) - 1:
            continue
        fixed = build("adaptive-exit")
        fixed[0].p = [1.0 if j == i else 0.0 for j in range(len(fixed[0].exits))]
        runners[f"adaptive-exit exit {layer} only"] = fixed
    disc = build("early-exit-disc")
    for k in range(len(disc[0].sections), 0, -1):
        if not args.all_exits and 1 < k < len(disc[0].sections):
            continue
        fixed = build("early-exit-disc")
        fixed[0].active = k
        fixed[0].end_step = lambda ctx, metrics: None  # keep the section count fixed
        runners[f"early-exit-disc layers 1-{fixed[0].sections[k - 1]}"] = fixed
    for name in args.also:
        runners[name] = build(name)
    times: dict[str, list[float]] = {name: [] for name in runners}
    data = torch.Generator().manual_seed(0)
    for step in range(args.warmup + args.steps):
        for name, (method, module, optimizer) in runners.items():  # interleaved: load drift hits all alike
            ids = torch.randint(5, args.vocab_size, (args.micro_batch, args.seq_len), generator=data)
            ids[:, 0], ids[:, -1] = SPECIALS["cls_id"], SPECIALS["sep_id"]
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            ctx = StepContext(step, 0.0, torch.Generator().manual_seed(step))
            start = clock()
            inputs, _ = method.prepare_batch(batch, ctx)
            loss, _ = module(**inputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.before_optimizer_step(optimizer.param_groups)
            optimizer.step()
            if step >= args.warmup:
                times[name].append(clock() - start)
    base = statistics.median(times["electra"])
    print(f"preset {args.preset}, {args.micro_batch} x {args.seq_len} tokens, vocabulary {args.vocab_size}, fp32, "
          f"{torch.get_num_threads()} thread(s), {args.clock} clock, median (and mean) of {args.steps} steps after "
          f"{args.warmup} warm-up, interleaved\n")
    print("| method | step ms median | steps/s | vs electra | step ms mean | model GFLOPs/seq |\n|---|---|---|---|---|---|")
    for name, (method, _, _) in runners.items():
        t, mean = statistics.median(times[name]), statistics.mean(times[name])
        print(f"| {name} | {t * 1e3:.0f} | {1 / t:.2f} | {base / t:.2f}x | {mean * 1e3:.0f} | {method.flops_per_sequence(args.seq_len) / 1e9:.2f} |")


if __name__ == "__main__":
    main()
