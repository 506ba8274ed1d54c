"""Why does Fast-ELECTRA learn less context than ELECTRA? One change per pre-training run, in
the effectiveness study's setting (same corpus, tokenizer, model, lr and main-model FLOPs), beside the
study's own `electra` and `fast` runs.

  H1, the curriculum gives full-strength replacements too early:
    fast-tau0.3, fast-tau1 (slower annealing at T0 = 2), fast-t4-tau0.3 (hotter start),
    fast-weak-aux (an aux trained only WEAK_AUX_STEPS steps: val MLM loss near electra's early generator's),
    fast-target (curriculum.kind=target: T follows the aux's cross-entropy path, methods/curriculum.py)
  H2, fast's main model lacks the generative signal that shared embeddings give electra's:
    fast-clm (model.corrective_lm=true), electra-unshared (generator.share_embeddings=false)
  robustness (the issue's bar for a new default): fast-target-lr3x and electra-lr3x, at LR_FACTOR x
    the study's peak lr (where the study's electra stalled at AUC 0.5)

It takes the study's arguments (benchmarks/study.sh passes them: `bash benchmarks/study.sh fidelity
VARIANT...`) and its work directory, so the data, the tokenizer and the aux are the study's. Stages
are resumable like the study's; `--save-state DIR` copies each finished stage's record and metrics
there (benchmarks/results/study/state/ in git), so no stage is ever redone. `--pretrain-seeds 1 2 3`:
seed 1 is the study's train.seed, seed k the study's + k - 1 (stage `<variant>-seed<k>`). `--precision
fp32` runs every stage, the baselines included, in fp32 (stages `<variant>-fp32`): on a CPU without native
bf16 the study's bf16 runs are several times slower.
Outputs: fidelity.{md,json} and fidelity_curves.png in --out-dir (fidelity-fp32.* for --precision fp32).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import effectiveness
from benchmarks.common import RESULTS, markdown_table, pyplot, save_figure
from benchmarks.study.analysis import unigram_entropy
from benchmarks.study.budget import budget_from_steps, flops_per_sequence, steps_for_budget
from benchmarks.study.pretraining import pretrain
from benchmarks.study.settings import LR_FACTOR, Settings
from benchmarks.study.stages import done, record_path, run_metrics
from fast_electra_ds.errors import UserError, run_guarded

WEAK_AUX = "aux-weak"
WEAK_AUX_STEPS = 300  # the study's aux reached val MLM 6.44 at its step 250 (electra's generator: 6.66 at 250)


@dataclass(frozen=True)
class Variant:
    method: str
    overrides: tuple[str, ...] = ()
    hypothesis: str = ""
    aux: str = "aux"  # the study's aux stage whose export fast samples from
    lr_factor: float = 1.0  # x the study's peak lr (the robustness runs)
    notes: str = field(default="", compare=False)


BASELINES = {"electra": Variant("electra", hypothesis="baseline"), "fast": Variant("fast", hypothesis="baseline")}
VARIANTS = {
    "fast-tau0.3": Variant("fast", ("curriculum.tau=0.3",), "H1", notes="T0 = 2, tau 0.3"),
    "fast-tau1": Variant("fast", ("curriculum.tau=1.0",), "H1", notes="T0 = 2, tau 1.0"),
    "fast-t4-tau0.3": Variant("fast", ("curriculum.t0=4", "curriculum.tau=0.3"), "H1", notes="T0 = 4, tau 0.3"),
    "fast-weak-aux": Variant("fast", (), "H1", aux=WEAK_AUX, notes=f"aux trained {WEAK_AUX_STEPS} steps"),
    "fast-target": Variant("fast", ("curriculum.kind=target",), "H1", notes="T follows the aux CE path"),
    "fast-clm": Variant("fast", ("model.corrective_lm=true",), "H2", notes="corrective LM head on the discriminator"),
    "electra-unshared": Variant("electra", ("generator.share_embeddings=false",), "H2", notes="generator's own embeddings"),
    "fast-target-lr3x": Variant("fast", ("curriculum.kind=target",), "robustness", lr_factor=LR_FACTOR, notes=f"fast-target at {LR_FACTOR:g}x peak lr"),
    "electra-lr3x": Variant("electra", (), "robustness", lr_factor=LR_FACTOR, notes=f"electra at {LR_FACTOR:g}x peak lr"),
}
ALL = {**BASELINES, **VARIANTS}
CURVE_KEYS = ("val_rtd_context_gain", "val_rtd_auc", "val_rtd_prior_gap")


def stage_name(variant: str, seed: int, precision: str = "bf16") -> str:
    """The study's own runs are bf16; runs at another precision carry it in their name (and compare only
    with each other)."""
    name = variant if precision == "bf16" else f"{variant}-{precision}"
    return name if seed == 1 else f"{name}-seed{seed}"


def save_state(settings: Settings, stage: str, state: Path | None) -> None:
    """Copy a finished stage's record, metrics and wall time into `state` (committed with the results)."""
    if state is None or done(settings.work, stage) is None:
        return
    (state / "stages").mkdir(parents=True, exist_ok=True)
    shutil.copy2(record_path(settings.work, stage), state / "stages" / f"{stage}.json")
    (state / stage).mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "stage_wall_time.json"):
        if (settings.work / stage / name).is_file():
            shutil.copy2(settings.work / stage / name, state / stage / name)


def run_variant(settings: Settings, name: str, seed: int, steps: int, base_seed: int, state: Path | None) -> dict | None:
    variant = ALL[name]
    extra = list(variant.overrides)
    if seed != 1:
        extra.append(f"train.seed={base_seed + seed - 1}")
    if variant.method == "fast":
        if variant.aux == WEAK_AUX:
            pretrain(settings, WEAK_AUX, "aux-mlm", WEAK_AUX_STEPS, [])
            save_state(settings, WEAK_AUX, state)
        extra.append(f"aux.path={settings.work / variant.aux / 'hf'}")
    stage = stage_name(name, seed, settings.precision)
    record = pretrain(settings, stage, variant.method, steps, extra, lr_factor=variant.lr_factor)
    save_state(settings, stage, state)
    return record


def final_validation(settings: Settings, stage: str) -> dict:
    validated = [r for r in run_metrics(settings, stage) if "val_rtd_context_gain" in r]
    return validated[-1] if validated else {}


def compared_runs(settings: Settings, names: list[str]) -> list[tuple[str, str]]:
    """(variant, precision) pairs to report: every variant at the run's precision, and at another precision
    the study's own bf16 baselines beside them (the reference where no same-precision baseline ran)."""
    runs = [(name, settings.precision) for name in names]
    if settings.precision != "bf16":
        runs += [(name, "bf16") for name in BASELINES]
    return runs


def summarise(settings: Settings, names: list[str], seeds: list[int], steps: int) -> dict:
    """Per run (variant and precision): the last validation of each seed, medians, and the ratio to electra's
    median gain (at the same precision where that ran, else the study's bf16 electra)."""
    rows = {}
    for name, precision in compared_runs(settings, names):
        finals = {seed: final_validation(settings, stage_name(name, seed, precision)) for seed in seeds}
        finals = {seed: f for seed, f in finals.items() if f}
        if not finals:
            continue
        finished = [seed for seed in finals if done(settings.work, stage_name(name, seed, precision))]
        rows[stage_name(name, 1, precision)] = {
            "variant": name, "precision": precision, "method": ALL[name].method, "hypothesis": ALL[name].hypothesis,
            "change": ALL[name].notes, "overrides": list(ALL[name].overrides), "seeds": sorted(finals), "finished_seeds": sorted(finished),
            "last_step": {str(s): f["step"] for s, f in finals.items()},
            **{key: statistics.median(f[key] for f in finals.values()) for key in CURVE_KEYS},
            "per_seed": {str(s): {key: f[key] for key in CURVE_KEYS} for s, f in finals.items()}}
    same = stage_name("electra", 1, settings.precision)
    reference = same if same in rows else "electra" if "electra" in rows else None
    for row in rows.values():
        row["gain_over_electra"] = row["val_rtd_context_gain"] / rows[reference]["val_rtd_context_gain"] if reference else None
    return {"steps": steps, "global_batch": settings.global_batch, "electra_reference": reference, "rows": rows}


def render(summary: dict, command: str, curves: str) -> str:
    header = ["run", "hypothesis", "change", "seeds (finished)", "last step", "val context gain (median)", "x electra",
              "val AUC", "val prior gap"]
    body = [[name, r["hypothesis"], r["change"], f"{len(r['seeds'])} ({len(r['finished_seeds'])})",
             " ".join(str(v) for v in r["last_step"].values()),
             r["val_rtd_context_gain"], r["gain_over_electra"], r["val_rtd_auc"], r["val_rtd_prior_gap"]]
            for name, r in summary["rows"].items()]
    return "\n".join([
        "Why Fast-ELECTRA lags ELECTRA: one change per run at the study's setting (last validation; a run with last step "
        f"below {summary['steps']} is still running)", "", markdown_table(header, body, digits=4), "",
        f"- Command: `{command}`; curves: {curves} (validation against main-model training tokens; dashed: another precision).",
        f"- x electra: over the median gain of `{summary['electra_reference']}`.",
        "- Context gain: nats of RTD loss the discriminator saves over a token-identity-only predictor on held-out "
        "sequences (metrics/learning.py); the bar for 'learned context' is 0.02."])


def plot(path: Path, settings: Settings, names: list[str], seeds: list[int]) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    tokens_per_step = settings.tokens_per_step
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, precision in compared_runs(settings, names):
        for seed in seeds:
            records = [r for r in run_metrics(settings, stage_name(name, seed, precision)) if "val_rtd_context_gain" in r]
            if not records:
                continue
            x = [r["step"] * tokens_per_step / 1e6 for r in records]
            style = dict(linewidth=2.5, color="black" if name == "electra" else "grey") if name in BASELINES else {}
            if precision != settings.precision:
                style["linestyle"] = "--"
            for ax, key in zip(axes, CURVE_KEYS):
                ax.plot(x, [r[key] for r in records], marker=".", label=stage_name(name, seed, precision), **style)
    for ax, key in zip(axes, CURVE_KEYS):
        ax.set_xlabel("main-model training tokens (M)")
        ax.set_title(key)
    axes[0].axhline(0.02, linestyle="--", color="black", linewidth=0.8)
    axes[0].legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=90)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=[], choices=list(ALL), help="runs to make, in this order")
    parser.add_argument("--pretrain-seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--save-state", type=Path, help="copy each finished stage's record and metrics here")
    parser.add_argument("--fidelity-out", type=Path, help="where fidelity.{md,json} and the curves go (default: --out-dir)")
    own, rest = parser.parse_known_args(argv)
    args = effectiveness.parse_args(rest)
    settings = effectiveness.make_settings(args)
    if done(settings.work, "prepare") is None:
        raise UserError(f"{settings.work} holds no prepared study data", "run benchmarks/study.sh first (it prepares the corpus)")
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(settings.work / "tokenizer"))
    per_sequence = flops_per_sequence(settings.run_config(), vocab_size, unigram_entropy(settings))
    budget = settings.budget or budget_from_steps(settings.main_steps, settings.global_batch, per_sequence)
    steps = steps_for_budget(budget, settings.global_batch, per_sequence["electra"]["main"])
    base_seed = settings.run_config().train.seed
    for seed in own.pretrain_seeds:
        for name in own.variants:
            run_variant(settings, name, seed, steps, base_seed, own.save_state)
    names = [*BASELINES, *VARIANTS]
    seeds = sorted({1, *own.pretrain_seeds, *(s for s in range(2, 6) if any(done(settings.work, stage_name(n, s, settings.precision)) for n in names))})
    summary = summarise(settings, names, seeds, steps)
    command = "python benchmarks/fidelity.py " + " ".join(argv)
    out = own.fidelity_out or Path(args.out_dir or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    base = "fidelity" if settings.precision == "bf16" else f"fidelity-{settings.precision}"
    (out / f"{base}.json").write_text(json.dumps({"command": command, "precision": settings.precision, **summary}, indent=1) + "\n")
    text = render(summary, command, f"{base}_curves.png")
    (out / f"{base}.md").write_text(text + "\n")
    plot(out / f"{base}_curves.png", settings, names, seeds)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
