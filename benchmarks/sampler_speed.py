"""The replacement sampler, old against new, side by side in one process: time per call of
drawing one token per masked position from Softmax(logits / T) and taking the aux model's argmax there,
on 16-bit logits [rows x V].

    python benchmarks/sampler_speed.py [--shapes 152x30522 152x128000] [--repeats 10] [--temperature 2]

- old: float32 softmax + torch.multinomial, and logits.argmax (what FrozenAux.propose did);
- gumbel: float32 argmax(logits + Gumbel noise) (what electra's generator did);
- new: models/sampling.py's blocked inverse CDF, which returns the argmax from its own max pass.
Calls alternate old/gumbel/new (interleaved), medians are reported with new/old and new/gumbel ratios.
152 x 30522 is `small`'s masked positions per micro-batch at vocabulary 30522."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from fast_electra_ds.models.sampling import reference_sample, sample_and_argmax

SPECIALS = [0, 1, 2, 3, 4]


def gumbel_reference(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The Gumbel-max draw, the sampler models/sampling.py replaced."""
    logits = logits.float().clone()
    logits[:, SPECIALS] = float("-inf")
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    gumbel = -torch.log((-torch.log(uniform.clamp_min(1e-12))).clamp_min(1e-12))
    return (logits + gumbel).argmax(dim=-1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(rows: int, vocab: int, temperature: float, repeats: int, device: torch.device) -> dict[str, float]:
    logits = (torch.randn(rows, vocab, device=device) * 3).bfloat16()
    generator = torch.Generator(device=device).manual_seed(0)
    runs = {
        "old": lambda: (reference_sample(logits, temperature, generator, SPECIALS), logits.argmax(-1)),
        "gumbel": lambda: gumbel_reference(logits / temperature, generator),
        "new": lambda: sample_and_argmax(logits, temperature, generator, SPECIALS),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats + 1):  # the first round warms up
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            if repeat:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["152x30522", "152x128000"], help="ROWSxVOCAB")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows_out = []
    print(f"device {device}, torch threads {torch.get_num_threads()}, median of {args.repeats} interleaved calls")
    print(f"{'shape':>14} {'old ms':>9} {'gumbel ms':>10} {'new ms':>9} {'new/old':>8} {'new/gumbel':>10}")
    for shape in args.shapes:
        rows, vocab = (int(x) for x in shape.split("x"))
        ms = measure(rows, vocab, args.temperature, args.repeats, device)
        row = {"shape": shape, **{f"{k}_ms": v for k, v in ms.items()},
               "new_over_old": ms["new"] / ms["old"], "new_over_gumbel": ms["new"] / ms["gumbel"]}
        rows_out.append(row)
        print(f"{shape:>14} {ms['old']:9.2f} {ms['gumbel']:10.2f} {ms['new']:9.2f} {row['new_over_old']:8.3f} {row['new_over_gumbel']:10.3f}")
    return rows_out


if __name__ == "__main__":
    main()
