"""Peak memory of one training step for main / aux / total, Original ELECTRA vs Fast-ELECTRA, per
data-parallel rank, printed beside the poster's table.

(a) simulated: the real models (accounting/paper.py) run one AdamW + 16-bit-autocast training step
    under FakeTensorMode, tracked tensor by tensor by torch's MemTracker; nothing is allocated, so
    paper-base / paper-large run on a laptop. Model states are then divided as DeepSpeed's ZeRO
    divides them (accounting/memory.py documents the accounting).
(b) measured: the same step for real at a small size on the current device (CUDA:
    torch.cuda.max_memory_allocated; CPU: MemTracker over real tensors), which validates (a).

    python benchmarks/memory.py [--settings paper-base paper-large] [--micro-batch 8] [--zero-stage 0]
                                [--world-size 1] [--precision bf16] [--validate small]

Original: the aux (generator) and main model train jointly: aux forward, sampling, main forward,
one backward through both, one AdamW step; main = the main model's step alone, aux = total − main.
Fast: the frozen aux (16-bit, no gradients, not in the optimizer) runs a no-grad forward (its head
at the masked positions only, as this project's `fast` does), then the main model trains;
aux = total − main (its 16-bit parameters, plus any part of its inference peak above the main's)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from benchmarks.common import RESULTS, add_setting_args, markdown_table, settings_from_args, publish
from fast_electra_ds.accounting.memory import DTYPES, TrackedPeak, track_training_step
from fast_electra_ds.accounting.paper import PAPER_TABLES, PaperAux, PaperMain, PaperSetting, get_setting, paper_params

GB = 1e9  # the poster's GB: its Fast aux memory is the aux parameters in 16 bits in units of 10⁹ bytes


def step_builder(setting: PaperSetting, kind: str, device: str = "cpu"):
    """kind: "main" (the main model's step alone), "original" (joint aux + main), "fast" (frozen aux + main)."""
    b, s = setting.micro_batch, setting.seq_len
    masked = max(1, round(setting.mask_prob * s))

    def build():
        with torch.device(device):  # build in place (.to() of a fake model fails)
            return _build()

    def _build():
        g = torch.Generator(device="cpu").manual_seed(0)
        ids = torch.randint(5, setting.vocab_size, (b, s), generator=g).to(device)
        labels = torch.zeros(b, s, dtype=torch.long, device=device)
        positions = torch.arange(b * masked, device=device) * (s // masked)  # flat indices of the masked positions
        main = PaperMain(setting).train()
        if kind == "main":
            return [main], [], lambda: main(ids, labels)
        if kind == "original":
            aux = PaperAux(setting).train()

            def loss_fn():
                gen_loss = aux(ids)  # the poster counts the generator's head over all positions
                corrupted = ids.clone()
                return gen_loss + main(corrupted, labels)
            return [main, aux], [], loss_fn
        if kind == "fast":
            aux = PaperAux(setting, dtype=DTYPES[setting.precision]).eval()
            # (requires_grad stays on only because MemTracker hooks every parameter it meets; the aux runs
            # under no_grad and is not in the optimizer, so it never gets a gradient)

            def loss_fn():
                with torch.no_grad():
                    aux.logits(ids, positions)
                return main(ids.clone(), labels)
            return [main], [aux], loss_fn
        raise ValueError(kind)
    return build


def simulate(setting: PaperSetting, fake: bool = True, device: str = "cpu", progress: tqdm | None = None) -> dict:
    peaks: dict[str, TrackedPeak] = {}
    for kind in ("main", "original", "fast"):
        if progress is not None:
            progress.set_postfix_str(f"{setting.name} {kind}")
        peaks[kind] = track_training_step(step_builder(setting, kind, device), setting.precision, fake=fake, device_type=device)
        if progress is not None:
            progress.update(1)
    return summarize(setting, {k: p.per_rank(setting.zero_stage, setting.world_size) for k, p in peaks.items()},
                     {k: {"total": p.total, **p.by_category} for k, p in peaks.items()})


def summarize(setting: PaperSetting, per_rank: dict[str, int], detail: dict | None = None) -> dict:
    main, original, fast = per_rank["main"], per_rank["original"], per_rank["fast"]
    aux_params = paper_params(setting)["aux"] * torch.empty((), dtype=DTYPES[setting.precision]).element_size()
    return {"main": main, "original_aux": original - main, "original_total": original,
            "fast_aux": fast - main, "fast_total": fast, "aux_param_bytes_16bit": aux_params,
            "micro_batch": setting.micro_batch, "zero_stage": setting.zero_stage, "world_size": setting.world_size,
            "precision": setting.precision, "detail": detail or {}}


def measure_real(setting: PaperSetting, device: str | None = None) -> dict:
    """(b): the same three steps run for real on the current device."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        per_rank = {}
        for kind in ("main", "original", "fast"):
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            track_training_step(step_builder(setting, kind, device), setting.precision, fake=False, device_type="cuda")
            per_rank[kind] = torch.cuda.max_memory_allocated() - base
        return summarize(setting, per_rank)
    return simulate(setting, fake=False, device="cpu")


def run(settings: list[PaperSetting], validate: str | None = "small", out_dir: Path | None = RESULTS, quiet: bool = False) -> dict:
    results = {"simulated": {}, "validation": None}
    total_steps = 3 * len(settings) + (6 if validate else 0)
    with tqdm(total=total_steps, desc="memory", disable=quiet, file=sys.stderr) as bar:
        for setting in settings:
            results["simulated"][setting.name] = {"setting": vars(setting), "ours": simulate(setting, progress=bar),
                                                  "paper": PAPER_TABLES.get(setting.name)}
        if validate:
            small = get_setting(validate, micro_batch=settings[0].micro_batch if validate != "small" else None,
                                precision=settings[0].precision if settings else None)
            sim = simulate(small, fake=True, progress=bar)
            real = measure_real(small)
            bar.update(3)
            results["validation"] = {"setting": vars(small), "simulated": sim, "measured": real}
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
        notes.append(f"- {name}: micro-batch {o['micro_batch']} × {r['setting']['seq_len']} tokens per rank, {o['precision']} autocast, "
                     f"ZeRO-{o['zero_stage']}, {o['world_size']} rank(s); the frozen aux's 16-bit parameters: "
                     f"{o['aux_param_bytes_16bit'] / GB:.3f} GB.")
    text = ("Peak memory of one training step per rank, GB = 10⁹ bytes (simulated: FakeTensorMode + MemTracker)\n\n"
            + markdown_table(header, rows, digits=2) + "\n\n" + "\n".join(notes))
    v = results.get("validation")
    if v:
        vrows = []
        for key in ("main", "original_total", "fast_total"):
            sim, real = v["simulated"][key], v["measured"][key]
            vrows.append([key, sim / 2**20, real / 2**20, sim / real])
        device = "cuda (max_memory_allocated)" if torch.cuda.is_available() else "cpu (MemTracker over real tensors)"
        text += (f"\n\nValidation at `{v['setting']['name']}` (micro-batch {v['setting']['micro_batch']}, "
                 f"{v['setting']['precision']}), simulated vs measured on {device}, MiB\n\n"
                 + markdown_table(["peak", "simulated", "measured", "simulated/measured"], vrows, digits=3))
    return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_args(parser)
    parser.add_argument("--validate", default="small", help="setting measured for real to validate the simulation ('' to skip)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for memory.json / memory.md ('' to write nothing)")
    args = parser.parse_args(argv)
    return run(settings_from_args(args), args.validate or None, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
