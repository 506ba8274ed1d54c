"""Run the three benchmarks and write benchmarks/results/ (markdown, CSV, JSON, PNG bar charts) and
benchmarks/README.md with the generated tables.

    python benchmarks/report.py [--quick]

--quick (under 10 minutes on a 2-core CPU): fewer throughput steps. Both modes validate the simulated
memory against the real DeepSpeed step at `small` (ZeRO-0 and ZeRO-3, one rank) and time the methods at
the `small` preset (12 × 256, 8 × 128 tokens), where the step is long enough for the FLOPs to decide it
(at `tiny`, fixed per-step overheads dominate and the FLOPs ratio says nothing). The FLOPs and
simulated-memory tables are the same either way.

It also times fast, Original and electra through the DeepSpeed engine (benchmarks/engine_throughput.py:
ZeRO-3 bf16, ds_configs/zero3.json, 2 ranks, interleaved) at `small` and a base-like shape, and writes
results/targets.json: fast_over_original_step_time {small, base} (that engine run's median ratio),
fast_over_original_memory and fast_over_electra_memory {paper-base, paper-large} (simulated; Original =
the poster's generator, electra = this project's), engine "deepspeed"; and what bounds the targets:
main_only_over_original_step_time {small, base} (the main model's step alone in the same engine run:
the measured floor of fast/original) beside step_time_flops_predicted, fast_over_original_memory_zero3
{zero3-8ranks, zero3-16ranks: {paper-base, paper-large}} and memory_bound_zero_cost_aux (main/Original,
the ratio if the aux cost nothing) per set-up; fast_offline_over_original_step_time and _memory for fast
reading replacements made ahead of time (aux.replacements). --engine-results reuses a stored engine_throughput.json
(e.g. a longer `python benchmarks/engine_throughput.py` run) instead of timing the engine again."""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json

from benchmarks import engine_throughput as engine_bench
from benchmarks import flops as flops_bench
from benchmarks import memory as memory_bench
from benchmarks import throughput as throughput_bench
from benchmarks.common import RESULTS, pyplot
from fast_electra_ds.accounting.paper import get_setting

README = Path(__file__).resolve().parent / "README.md"


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def bar_charts(out: Path, flops: dict, memory: dict) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    written = []
    for kind, data, unit in [("flops", flops, "GFLOPs per sequence"), ("memory", memory, "GB per rank")]:
        fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 4), squeeze=False)
        for ax, (name, values) in zip(axes[0], data.items()):
            labels = list(values)
            ours = [values[k][0] for k in labels]
            paper = [values[k][1] or 0 for k in labels]
            x = range(len(labels))
            ax.bar([i - 0.2 for i in x], ours, width=0.4, label="ours")
            ax.bar([i + 0.2 for i in x], paper, width=0.4, label="paper")
            ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
            ax.set_title(name)
            ax.set_ylabel(unit)
            ax.legend()
        fig.tight_layout()
        path = out / f"{kind}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path.name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller validation and throughput runs (< 10 min on 2 CPU cores)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--micro-batch", type=int, default=8, help="micro-batch of the simulated memory table")
    parser.add_argument("--settings", nargs="+", default=["paper-base", "paper-large"], help="settings of the FLOPs and memory tables")
    parser.add_argument("--steps", type=int, help="timed throughput steps per method")
    parser.add_argument("--validate", default="small", help="setting at which the memory simulation is checked against the real step")
    parser.add_argument("--throughput-preset", default="small", help="main-model preset of the throughput runs")
    parser.add_argument("--validate-stages", type=int, nargs="+", default=[0, 3], help="ZeRO stages of the memory validation")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    parser.add_argument("--engine-shapes", nargs="+", default=["small", "base"], choices=list(engine_bench.SHAPES),
                        help="shapes of the step time through the DeepSpeed engine (targets.json)")
    parser.add_argument("--engine-ranks", type=int, default=2, help="ranks of that run")
    parser.add_argument("--engine-results", help="an engine_throughput.json to report instead of timing the engine again")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    settings = [get_setting(name, micro_batch=args.micro_batch) for name in args.settings]

    print("FLOPs (counted under FakeTensorMode) ...", file=sys.stderr)
    fl = flops_bench.run(settings, out, quiet=True)
    print("memory (simulated at paper scale, validated for real) ...", file=sys.stderr)
    mem = memory_bench.run(settings, args.validate, out, quiet=False, validate_stages=tuple(args.validate_stages))
    print("throughput ...", file=sys.stderr)
    tp = throughput_bench.run(preset=args.throughput_preset, steps=args.steps or (5 if args.quick else 12),
                              warmup=1 if args.quick else 3, out_dir=out, quiet=False,
                              generator="aux")  # the poster's Original: a generator of the aux's size

    if args.engine_results:
        engine = json.loads(Path(args.engine_results).read_text())
        engine_source = f"from {Path(args.engine_results).name}: " + ", ".join(
            f"{r['shape']} {r['steps']} interleaved steps after {r['warmup']} warm-up" for r in engine)
    else:
        print("step time through the DeepSpeed engine ...", file=sys.stderr)
        steps = 2 if args.quick else 4
        engine = [engine_bench.measure(shape, args.engine_ranks, list(engine_bench.METHODS), steps=steps, warmup=1)
                  for shape in args.engine_shapes]
        engine_source = f"{steps} interleaved steps after 1 warm-up"
    (out / "engine_throughput.json").write_text(json.dumps(engine, indent=1))
    (out / "engine_throughput.md").write_text(engine_bench.render(engine) + "\n")
    against_electra = {s.name: memory_bench.simulate(s.replace(original_generator="electra")) for s in settings}
    by_setup = mem["by_setup"]
    setups = list(next(iter(by_setup.values()))) if by_setup else []
    targets = {"fast_over_original_step_time": {r["shape"]: r["fast_over_original"]["measured"] for r in engine},
               "fast_over_original_memory": {n: r["ours"]["fast_total"] / r["ours"]["original_total"] for n, r in mem["simulated"].items()},
               "fast_over_electra_memory": {n: r["fast_total"] / r["original_total"] for n, r in against_electra.items()},
               "engine": "deepspeed",
               # what bounds the step-time target: the main model's step alone, timed in the same run
               "main_only_over_original_step_time": {r["shape"]: r["main_only_over_original"]["measured"]
                                                     for r in engine if "main_only_over_original" in r},
               "step_time_flops_predicted": {key: {r["shape"]: r[key]["predicted"] for r in engine if key in r}
                                             for key in ("fast_over_original", "main_only_over_original")},
               # the memory target under ZeRO-3 at realistic world sizes, and the bound no aux can beat per set-up
               "fast_over_original_memory_zero3": {setup: {n: by_setup[n][setup]["fast_over_original"] for n in by_setup}
                                                   for setup in setups if setup.startswith("zero3")},
               "memory_bound_zero_cost_aux": {setup: {n: by_setup[n][setup]["bound_zero_cost_aux"] for n in by_setup} for setup in setups},
               # replacements made ahead of time (aux.replacements): the engine's step, and the memory at each setting's own set-up
               "fast_offline_over_original_step_time": {r["shape"]: r["fast_offline_over_original"]["measured"]
                                                        for r in engine if "fast_offline_over_original" in r},
               "fast_offline_over_original_memory": {n: by_setup[n][own]["fast_offline_over_original"] for n, r in mem["simulated"].items()
                                                     if (own := memory_bench.setup_name(r["ours"]["zero_stage"], r["ours"]["world_size"]))
                                                     in by_setup.get(n, {})},
               "step_time_setup": f"ZeRO-3 bf16 (ds_configs/zero3.json), {engine[0]['ranks']} ranks, median of interleaved steps ({engine_source})",
               "memory_setup": "simulated (benchmarks/memory.py) at the settings' micro-batch, precision, ZeRO stage and world size; "
                               "*_zero3 and memory_bound_zero_cost_aux: ZeRO stage and world size as the set-up's name says "
                               "(zero3-8ranks: ZeRO-3 over 8 ranks); the bound is main/Original, the ratio if the aux cost nothing"}
    (out / "targets.json").write_text(json.dumps(targets, indent=1))

    flop_rows, mem_rows, chart_f, chart_m = [], [], {}, {}
    for name, r in fl.items():
        c, p = r["counted"], r["paper"] or {}
        chart_f[name] = {}
        for key in ["main", "original_aux", "original_total", "fast_aux", "fast_total", "fast_masked_aux", "fast_masked_total"]:
            flop_rows.append([name, key, c[key] / 1e9, r["analytic"][key] / 1e9, p.get(key)])
            chart_f[name][key] = (c[key] / 1e9, p.get(key))
    write_csv(out / "flops.csv", ["setting", "quantity", "counted_gflops", "analytic_gflops", "paper_gflops"], flop_rows)
    for name, r in mem["simulated"].items():
        o, p = r["ours"], r["paper"] or {}
        chart_m[name] = {}
        for key in ["main", "original_aux", "original_total", "fast_aux", "fast_total"]:
            mem_rows.append([name, key, o[key] / 1e9, p.get(f"mem_{key}"), o["micro_batch"], o["precision"], o["zero_stage"], o["world_size"]])
            chart_m[name][key] = (o[key] / 1e9, p.get(f"mem_{key}"))
    write_csv(out / "memory.csv", ["setting", "quantity", "ours_gb", "paper_gb", "micro_batch", "precision", "zero_stage", "world_size"], mem_rows)
    validation_rows = [[v["setting"]["name"], v["setting"]["zero_stage"], v["setting"]["world_size"], key, v["simulated"][key],
                        v["measured"][key], v["simulated"][key] / v["measured"][key] if v["measured"][key] else None]
                       for v in mem["validation"] for key in ("main", "original_aux", "original_total", "fast_aux", "fast_total")]
    write_csv(out / "memory_validation.csv", ["setting", "zero_stage", "world_size", "quantity", "simulated_bytes", "measured_bytes",
                                               "simulated_over_measured"], validation_rows)
    write_csv(out / "throughput.csv", ["method", "step_s", "tokens_per_s", "model_tflops", "mfu", "predicted_speedup",
                                       "measured_speedup", "target_met"],
              [[n, m["step_s"], m["tokens_per_s"], m["model_tflops"], m["mfu"], m["predicted_speedup"], m["measured_speedup"],
                m["target_met"]] for n, m in tp["methods"].items()])
    charts = bar_charts(out, chart_f, chart_m)
    elapsed = time.time() - start
    sections = {name: (out / f"{name}.md").read_text() for name in ("flops", "memory", "throughput", "engine_throughput")}
    command = "python benchmarks/report.py" + (" --quick" if args.quick else "") + (
        f" --engine-results {Path(args.engine_results).name}" if args.engine_results else "")
    body = (f"Generated by `{command}` in {elapsed / 60:.1f} min"
            + (" (the engine step times not re-timed: step_time_setup in targets.json)" if args.engine_results else "") + ".\n\n"
            f"## GFLOPs\n\n{sections['flops']}\n## Memory\n\n{sections['memory']}\n## Throughput\n\n{sections['throughput']}\n"
            f"\n## Step time through the DeepSpeed engine\n\n{sections['engine_throughput']}\n"
            f"\nTargets (targets.json): `{json.dumps(targets)}`\n"
            + ("\n## Charts\n\n" + "\n".join(f"![{c}]({c})" for c in charts) + "\n" if charts else
               "\nPNG charts skipped: matplotlib is not installed (`pip install matplotlib`).\n"))
    (out / "report.md").write_text(body)
    if not args.no_readme:
        template = README.read_text() if README.exists() else ""
        marker = "<!-- generated -->"
        head = template.split(marker)[0] if marker in template else template
        README.write_text(head.rstrip() + f"\n\n{marker}\n\n" + body.replace("](", "](results/"))
    print(f"wrote {out} in {elapsed:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
