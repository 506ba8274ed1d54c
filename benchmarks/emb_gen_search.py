"""Cost of `emb-gen`'s nearest-neighbour search (fast_electra_ds/models/embedding_generator.py) at
30k-64k vocabularies, on the current device, in milliseconds (measured, median of --repeats):

- per step (emb_gen.refresh_every=1, the default): the unique ids of one micro-batch's selected
  positions searched against the whole table (uniformly random ids: nearly all distinct, the worst case);
- table refresh (refresh_every=N): the [V, k] neighbours of every id. Its cost is linear in the number
  of query rows (each query block is independent), so by default it is timed on --refresh-rows rows and
  scaled by V / rows (marked "scaled"); --full-refresh times the whole table. Per step it costs
  refresh / N.

    python benchmarks/emb_gen_search.py [--vocab-sizes 32000 64000] [--dims 256 768] [--positions 154 2458]
                                        [--k 10] [--refresh-every 100] [--refresh-rows 4096] [--full-refresh]

The table is random (timing does not depend on the values). Under ZeRO-3 each search also all-gathers
the table (V·E 16-bit values), which this single-process script does not include."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import markdown_table
from fast_electra_ds.models.embedding_generator import nearest_neighbours

SPECIALS = [0, 1, 2, 3, 4]


def timed_ms(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(vocab_sizes: list[int], dims: list[int], positions: list[int], k: int = 10, refresh_every: int = 100,
        refresh_rows: int = 4096, full_refresh: bool = False, repeats: int = 3, quiet: bool = False) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator().manual_seed(0)
    rows = []
    for vocab in vocab_sizes:
        for dim in dims:
            table = torch.randn(vocab, dim, generator=generator).to(device)
            row = {"vocab": vocab, "dim": dim}
            for count in positions:
                ids = torch.randint(len(SPECIALS), vocab, (count,), generator=generator).to(device)
                row[f"step_{count}"] = timed_ms(lambda: nearest_neighbours(table, torch.unique(ids), k, SPECIALS), device, repeats)
            queried = vocab if full_refresh else min(refresh_rows, vocab)
            query = torch.arange(queried, device=device)
            measured = timed_ms(lambda: nearest_neighbours(table, query, k, SPECIALS), device, 1 if full_refresh else repeats)
            row["refresh_ms"] = measured * vocab / queried
            row["refresh_scaled"] = queried < vocab
            row["refresh_per_step_ms"] = row["refresh_ms"] / refresh_every
            rows.append(row)
    if not quiet:
        print(render(rows, positions, k, refresh_every, device))
    return rows


def render(rows: list[dict], positions: list[int], k: int, refresh_every: int, device: torch.device) -> str:
    header = ["vocabulary", "embedding dim"] + [f"per step, {n} positions (ms)" for n in positions] + \
             ["table refresh (ms)", f"refresh / {refresh_every} steps (ms per step)"]
    body = [[r["vocab"], r["dim"], *[r[f"step_{n}"] for n in positions],
             f"{r['refresh_ms']:.0f}{' (scaled)' if r['refresh_scaled'] else ''}", r["refresh_per_step_ms"]] for r in rows]
    return (f"emb-gen neighbour search, k = {k}, on {device} ({torch.get_num_threads()} threads), float32, median\n\n"
            + markdown_table(header, body, digits=1))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[32000, 64000])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768], help="embedding widths (model.embedding_size)")
    parser.add_argument("--positions", type=int, nargs="+", default=[154, 2458],
                        help="selected positions per micro-batch (15%% of 8 x 128 and of 128 x 128 tokens)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--refresh-every", type=int, default=100)
    parser.add_argument("--refresh-rows", type=int, default=4096, help="query rows timed for the table refresh, then scaled")
    parser.add_argument("--full-refresh", action="store_true", help="time the refresh of the whole table")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    return run(args.vocab_sizes, args.dims, args.positions, args.k, args.refresh_every, args.refresh_rows,
               args.full_refresh, args.repeats)


if __name__ == "__main__":
    main()
