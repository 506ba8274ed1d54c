"""Peak memory of one training step for main / aux / total, Original ELECTRA vs Fast-ELECTRA, per
data-parallel rank, printed beside the poster's table.

(a) simulated: the models (accounting/paper.py: the project's discriminator with its corrective-LM
    head, the generator sharing its embeddings, the frozen aux) run forward + backward in 16 bits, as
    DeepSpeed's bf16 engine runs them, under FakeTensorMode, tracked tensor by tensor by torch's
    MemTracker (nothing is allocated, so paper-base / paper-large run on a laptop); the engine's model
    states, buffers and ZeRO partitioning are added from the parameter counts
    (accounting/memory.py: deepspeed_peak documents each term).
(b) measured: the project's real training step at a small size: each method's build_model,
    deepspeed.initialize with ds_configs/zero3.json's settings (ZeRO stage, bf16), one rank, a warm-up
    step then the measured one (benchmarks/engine_memory.py; CPU: allocator-level count of live
    tensor bytes through torch.profiler; CUDA: max_memory_allocated). It validates (a) at identical
    settings: micro-batch, sequence length, precision, ZeRO stage, world size 1.

    python benchmarks/memory.py [--settings paper-base paper-large] [--micro-batch 8] [--zero-stage 0]
                                [--world-size 1] [--precision bf16] [--validate small]
                                [--validate-stages 0 3] [--setups 0:1 3:8 3:16]

--setups: Fast/Original at each ZeRO stage:world size, beside the bound main/Original (the ratio if
the aux cost nothing), for every setting: under ZeRO-3 the trained models' states shrink with the
ranks while the frozen aux stays whole on each, so the ratio and its bound depend on the set-up.
Fast-offline (fast reading replacements made ahead of time, aux.replacements) is the main model's step
on a batch whose replaced ids come from the pass's shards: no aux and no sampler on the rank.

Original: the generator (the aux model's size) and the main model train jointly; main = the main
model's step alone, aux = total − main. Its generator (`--original-generator`) is the poster's at
paper-base / paper-large (own embeddings, MLM head over all positions, as the poster's GFLOPs count it)
and this project's `electra` at tiny / small (embeddings shared with the main model, MLM head at the
masked positions: the step the validation measures). Fast: the frozen 16-bit aux runs a no-grad forward (its head at
the masked positions only, as `fast` does), then the main model trains; aux = total − main (its 16-bit
parameters, plus any part of its inference peak above the main's)."""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from benchmarks.common import RESULTS, add_setting_args, markdown_table, settings_from_args, publish
from fast_electra_ds.accounting.memory import DTYPES, TrackedStep, ZeroBuffers, deepspeed_peak, track_forward_backward
from fast_electra_ds.accounting.paper import PAPER_TABLES, PaperAux, PaperMain, PaperSetting, get_setting, paper_params
from fast_electra_ds.models.pretraining import share_embeddings

GB = 1e9  # the poster's GB: its Fast aux memory is the aux parameters in 16 bits in units of 10⁹ bytes
KINDS = ("main", "original", "fast")
SETUP_KINDS = (*KINDS, "fast-offline")  # fast reading replacements made ahead of time (aux.replacements): no aux on the rank
GENERATORS = {"electra": "this project's `electra` (embeddings shared, MLM head at the masked positions)",
              "poster": "own embeddings, MLM head over all positions (as the poster's GFLOPs)"}


def step_builder(setting: PaperSetting, kind: str, device: str = "cpu"):
    """kind: "main" (the main model's step alone), "original" (joint generator + main, as `electra`),
    "fast" (frozen aux + main, as `fast`). Everything in the 16-bit dtype of `setting.precision`."""
    b, s = setting.micro_batch, setting.seq_len
    masked = max(1, round(setting.mask_prob * s))
    dtype = DTYPES[setting.precision]

    def build():
        with torch.device(device):  # build in place (.to() of a fake model fails)
            return _build()

    def _build():
        g = torch.Generator(device="cpu").manual_seed(0)
        ids = torch.randint(5, setting.vocab_size, (b, s), generator=g).to(device)
        is_replaced = torch.zeros(b, s, dtype=torch.bool, device=device)
        positions = torch.arange(b * masked, device=device) * (s // masked)  # flat indices of the masked positions
        main = PaperMain(setting, dtype=dtype).train()
        if kind == "main":
            return [main], [], lambda: main(ids, is_replaced)
        if kind == "fast-offline":  # the batch's replacements come from the pass's shards (int32 ids at the masked positions)
            replacements = torch.randint(5, setting.vocab_size, (b * masked,), generator=g, dtype=torch.int32).to(device)

            def loss_fn():
                corrupted = ids.flatten().index_put((positions,), replacements.long()).view(b, s)
                return main(corrupted, is_replaced, ids)
            return [main], [], loss_fn
        if kind == "original":
            generator = PaperAux(setting, dtype=dtype).train()
            poster = setting.original_generator == "poster"
            if not poster:
                share_embeddings(generator.mlm, main.discriminator)  # as `electra` (and COCO-LM) share them

            def loss_fn():
                if poster:  # the head over all positions (the poster's GFLOPs), the loss at the masked ones
                    logits = generator.logits(ids).flatten(0, 1)[positions]
                else:
                    logits = generator.logits(ids, positions)  # the generator's head at the masked positions
                gen_loss = torch.nn.functional.cross_entropy(logits.float(), ids.flatten()[positions])
                with torch.no_grad():  # Gumbel-max sampling in float32, as models/sampling.py
                    noise = torch.rand(logits.shape, device=logits.device)
                    sampled = (logits.float() - torch.log(-torch.log(noise))).argmax(-1)
                corrupted = ids.flatten().index_put((positions,), sampled).view(b, s)
                return gen_loss + 50 * main(corrupted, is_replaced, ids)
            return [main, generator], [], loss_fn
        if kind == "fast":
            aux = PaperAux(setting, dtype=dtype).eval()
            # (requires_grad stays on only because MemTracker hooks every parameter it meets; the aux runs
            # under no_grad, so it never gets a gradient, and counts as frozen)

            def loss_fn():
                with torch.no_grad():  # sampling at temperature T in float32, as FrozenAux.propose
                    logits = aux.logits(ids, positions).float() / 1.5
                    sampled = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
                corrupted = ids.flatten().index_put((positions,), sampled).view(b, s)
                return main(corrupted, is_replaced, ids)
            return [main], [aux], loss_fn
        raise ValueError(kind)
    return build


def zero_buffers(setting: PaperSetting) -> ZeroBuffers:
    """The ZeRO buffer settings of the DeepSpeed config the measured step uses (ds_configs/zero3.json)."""
    from benchmarks.engine_memory import ds_config_for

    return ZeroBuffers.from_ds_config(ds_config_for(setting))


def simulate(setting: PaperSetting, fake: bool = True, device: str = "cpu", progress: tqdm | None = None) -> dict:
    zero = zero_buffers(setting)
    per_rank, detail = {}, {}
    for kind in KINDS:
        if progress is not None:
            progress.set_postfix_str(f"{setting.name} {kind}")
        step: TrackedStep = track_forward_backward(step_builder(setting, kind, device), fake=fake,
                                                   persistence_threshold=zero.param_persistence_threshold,
                                                   gradients_leave=setting.zero_stage == 3)
        parts = deepspeed_peak(step, setting.zero_stage, setting.world_size, setting.precision, zero=zero)
        per_rank[kind], detail[kind] = parts["total"], {**parts, "trained_params": step.trained_numel}
        if progress is not None:
            progress.update(1)
    return summarize(setting, per_rank, detail)


MEMORY_SETUPS = ((0, 1), (3, 8), (3, 16))  # (ZeRO stage, world size): the simulation, and ZeRO-3 on 1 and 2 nodes of 8


def ratios_by_setup(settings: list[PaperSetting], setups: tuple[tuple[int, int], ...] = MEMORY_SETUPS) -> dict:
    """Fast/Original peak memory per rank at each (ZeRO stage, world size), beside the bound no aux can
    beat: main / Original, the ratio if the aux cost nothing (Fast = the main model's step alone).
    Each step is tracked once per setting and per gradient regime (ZeRO-3 frees gradients as they
    come), then divided per setup by `deepspeed_peak`."""
    out = {}
    for setting in settings:
        tracked, out[setting.name] = {}, {}
        for stage, world in setups:
            s = setting.replace(zero_stage=stage, world_size=world)
            zero = zero_buffers(s)
            totals = {}
            for kind in SETUP_KINDS:
                key = (kind, stage == 3)
                if key not in tracked:
                    tracked[key] = track_forward_backward(step_builder(s, kind), persistence_threshold=zero.param_persistence_threshold,
                                                          gradients_leave=stage == 3)
                totals[kind] = deepspeed_peak(tracked[key], stage, world, s.precision, zero=zero)["total"]
            out[setting.name][setup_name(stage, world)] = {
                "zero_stage": stage, "world_size": world, "main": totals["main"], "original": totals["original"], "fast": totals["fast"],
                "fast_over_original": totals["fast"] / totals["original"], "bound_zero_cost_aux": totals["main"] / totals["original"],
                "fast_offline": totals["fast-offline"], "fast_offline_over_original": totals["fast-offline"] / totals["original"]}
    return out


def setup_name(stage: int, world: int) -> str:
    return f"zero{stage}-{world}ranks"


def render_setups(by_setup: dict, target: float = 0.65) -> str:
    rows = [[name, f"ZeRO-{r['zero_stage']}", r["world_size"], r["main"] / GB, r["original"] / GB, r["fast"] / GB,
             f"{r['fast_over_original']:.3f}", f"{r['bound_zero_cost_aux']:.3f}", "yes" if r["fast_over_original"] <= target else "no",
             r["fast_offline"] / GB, f"{r['fast_offline_over_original']:.3f}"]
            for name, setups in by_setup.items() for r in setups.values()]
    return ("Fast/Original peak memory per rank by engine set-up (simulated, GB per rank), beside the bound no aux can "
            "beat: main/Original, the ratio if the aux cost nothing; Fast-offline reads replacements made ahead of time "
            "(aux.replacements: no aux, no sampler on the rank)\n\n"
            + markdown_table(["Setting", "ZeRO", "ranks", "main", "Original", "Fast", "Fast/Original", "bound main/Original",
                              f"≤ {target}", "Fast-offline", "Fast-offline/Original"], rows, digits=2))


def summarize(setting: PaperSetting, per_rank: dict[str, int], detail: dict | None = None) -> dict:
    main, original, fast = per_rank["main"], per_rank["original"], per_rank["fast"]
    aux_params = paper_params(setting)["aux"] * torch.empty((), dtype=DTYPES[setting.precision]).element_size()
    return {"main": main, "original_aux": original - main, "original_total": original,
            "fast_aux": fast - main, "fast_total": fast, "aux_param_bytes_16bit": aux_params,
            "micro_batch": setting.micro_batch, "zero_stage": setting.zero_stage, "world_size": setting.world_size,
            "precision": setting.precision, "detail": detail or {}}


def measure_real(setting: PaperSetting, progress: tqdm | None = None, repeats: int | None = None) -> dict:
    """(b): the project's real training step through the DeepSpeed engine, one rank. Under ZeRO-3 the
    live bytes when the step starts vary by a few MiB from run to run (measured: main 1110.0 / 1112.2 /
    1115.2 MiB at `small`), as much as a small aux's parameters; ZeRO-0 usually measures the same bytes,
    but not always (seen once in six runs at `tiny`: 0.49 MB more in the Original step, whose aux
    row is 1.15 MB). So each
    kind is measured `repeats` times (default 3) in alternation and the median is kept; the spread is
    reported."""
    from benchmarks.engine_memory import measure_engine_step

    repeats = repeats or 3
    samples: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for _ in range(repeats):
        for kind in KINDS:
            if progress is not None:
                progress.set_postfix_str(f"{setting.name} ZeRO-{setting.zero_stage} {kind} (real)")
            samples[kind].append(measure_engine_step(setting, kind))
        if progress is not None:
            progress.update(3 / repeats)
    result = summarize(setting, {kind: int(statistics.median(v)) for kind, v in samples.items()})
    result["samples"] = samples
    return result


def run(settings: list[PaperSetting], validate: str | None = "small", out_dir: Path | None = RESULTS, quiet: bool = False,
        validate_stages: tuple[int, ...] = (0, 3), setups: tuple[tuple[int, int], ...] = MEMORY_SETUPS) -> dict:
    results = {"simulated": {}, "validation": [], "by_setup": ratios_by_setup(settings, setups) if setups else {}}
    total_steps = 3 * len(settings) + (6 * len(validate_stages) if validate else 0)
    with tqdm(total=total_steps, desc="memory", disable=quiet, file=sys.stderr) as bar:
        for setting in settings:
            results["simulated"][setting.name] = {"setting": vars(setting), "ours": simulate(setting, progress=bar),
                                                  "paper": PAPER_TABLES.get(setting.name)}
        if validate:
            for stage in validate_stages:
                small = get_setting(validate, zero_stage=stage, world_size=1,
                                    precision=settings[0].precision if settings else None)
                results["validation"].append({"setting": vars(small), "simulated": simulate(small, progress=bar),
                                              "measured": measure_real(small, progress=bar)})
    publish("memory", results, render(results), out_dir, quiet)
    return results


def render(results: dict) -> str:
    header = ["Setting", "Method", "Main (ours)", "Aux (ours)", "Total (ours)", "Main (paper)", "Aux (paper)",
              "Total (paper)", "ours/paper total"]
    rows, notes = [], []
    for name, r in results["simulated"].items():
        o, p = r["ours"], r["paper"] or {}
        for label, aux_key, total_key in [("Original", "original_aux", "original_total"), ("Fast-ELECTRA", "fast_aux", "fast_total")]:
            pt = p.get(f"mem_{total_key}")
            rows.append([name, label, o["main"] / GB, o[aux_key] / GB, o[total_key] / GB, p.get("mem_main"),
                         p.get(f"mem_{aux_key}"), pt, o[total_key] / GB / pt if pt else None])
        rows.append([name, "Ratio Fast/Original", 1.0, o["fast_aux"] / o["original_aux"], o["fast_total"] / o["original_total"],
                     1.0 if p else None, p["mem_fast_aux"] / p["mem_original_aux"] if p else None,
                     p["mem_fast_total"] / p["mem_original_total"] if p else None, None])
        d = o["detail"].get("original", {})
        notes.append(f"- {name}: micro-batch {o['micro_batch']} × {r['setting']['seq_len']} tokens per rank, {o['precision']} DeepSpeed engine, "
                     f"ZeRO-{o['zero_stage']}, {o['world_size']} rank(s); Original's generator: "
                     f"{GENERATORS[r['setting'].get('original_generator', 'electra')]}; the frozen aux's 16-bit parameters: "
                     f"{o['aux_param_bytes_16bit'] / GB:.3f} GB; Original total = model states {d.get('model_states', 0) / GB:.2f} + "
                     f"buffers {d.get('buffers', 0) / GB:.2f} + gathered parameters {d.get('gathered', 0) / GB:.2f} + activations/gradients {d.get('dynamic', 0) / GB:.2f} GB.")
    text = ("Peak memory of one training step per rank, GB = 10⁹ bytes (simulated: FakeTensorMode + MemTracker for the "
            "16-bit forward/backward, DeepSpeed's model states and buffers from the parameter counts)\n\n"
            + markdown_table(header, rows, digits=2) + "\n\n" + "\n".join(notes))
    if results.get("by_setup"):
        text += "\n\n" + render_setups(results["by_setup"])
    device = "cuda (max_memory_allocated)" if torch.cuda.is_available() else "cpu (allocator-level: torch.profiler memory events)"
    for v in results.get("validation") or []:
        vs = v["setting"]
        vrows = []
        for key in ("main", "original_aux", "original_total", "fast_aux", "fast_total"):
            sim, real = v["simulated"][key], v["measured"][key]
            agree = abs(sim / real - 1) <= 0.10 if real else None
            vrows.append([key, sim / 2**20, real / 2**20, sim / real if real else None, "yes" if agree else ("no" if agree is False else "–")])
        text += (f"\n\nValidation at `{vs['name']}` (micro-batch {vs['micro_batch']} × {vs['seq_len']}, {vs['precision']}, "
                 f"ZeRO-{vs['zero_stage']}, world size {vs['world_size']}): simulated vs measured through the real DeepSpeed "
                 f"training step on {device}, MiB{spread(v['measured'])}\n\n"
                 + markdown_table(["peak", "simulated", "measured", "simulated/measured", "within 10%"], vrows, digits=3))
    return text


def spread(measured: dict) -> str:
    samples = measured.get("samples") or {}
    if not samples or len(next(iter(samples.values()))) < 2:
        return ""
    ranges = ", ".join(f"{k} {(max(v) - min(v)) / 2**20:.1f}" for k, v in samples.items())
    return (f" (median of {len(next(iter(samples.values())))} measurements; their range, MiB: {ranges}: the aux rows are "
            f"differences of totals and carry that uncertainty)")


def zero_setup(text: str) -> tuple[int, int]:
    """`stage:world` (e.g. 3:8) as argparse's type: a malformed one is argparse's one-line error."""
    stage, _, world = text.partition(":")
    if not (stage.isdigit() and world.isdigit() and int(stage) <= 3 and int(world) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not ZeRO stage:world size, e.g. 3:8")
    return int(stage), int(world)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_args(parser)
    parser.add_argument("--validate", default="small", help="setting measured for real to validate the simulation ('' to skip)")
    parser.add_argument("--validate-stages", type=int, nargs="+", default=[0, 3], help="ZeRO stages of the validation (world size 1)")
    parser.add_argument("--setups", nargs="*", type=zero_setup, default=list(MEMORY_SETUPS),
                        help="ZeRO stage:world size pairs of the Fast/Original-by-set-up table, e.g. 3:8 (none to skip)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for memory.json / memory.md ('' to write nothing)")
    args = parser.parse_args(argv)
    return run(settings_from_args(args), args.validate or None, Path(args.out) if args.out else None,
               validate_stages=tuple(args.validate_stages), setups=tuple(args.setups))


if __name__ == "__main__":
    main()
