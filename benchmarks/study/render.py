"""The study's outputs: the markdown tables (effectiveness.md), the CSV, the accuracy-against-FLOPs
chart, the validation curves and the setting-search record."""
from __future__ import annotations

import csv
from pathlib import Path

from benchmarks.common import markdown_table, publish, pyplot, save_figure
from fast_electra_ds.metrics.learning import CONTEXT_GAIN_LEARNED  # the bar for "learned context"

from .analysis import LEARNING_KEYS, MLM_GAP_LEARNED, robustness_verdict
from .settings import LR_FACTOR, Settings, pretraining_lr
from .stages import done, run_metrics


def render(rows: list[dict], aux: dict | None, per_sequence: dict, budget: float, settings: Settings, corpus: dict,
           majority: float | None, tokens: int | None, wall: float, command: str) -> str:
    aux_tflops = aux["steps"] * settings.global_batch * per_sequence["aux-mlm"]["main"] / 1e12 if aux else None
    header = ["Model", "Steps", "Main TFLOPs", "Generator/aux TFLOPs", "Total TFLOPs", "Total incl. aux training",
              "Pre-train wall s", "Replaced detected (last log)", "Acc median", "Acc min–max", "Acc per seed", "Fine-tune wall s"]
    body = []
    for r in rows:
        spread = f"{r['acc_min']:.3f}–{r['acc_max']:.3f}" if "acc_median" in r else None
        seeds = " ".join(f"{v:.3f}" for v in r.get("acc_per_seed", []))
        body.append([r["model"], r["steps"], r["main_tflops"], r["other_tflops"], r["total_tflops"], r["total_with_aux_tflops"],
                     r["pretrain_wall_s"], r.get("final_rtd_acc_replaced"), r.get("acc_median"), spread, seeds, r.get("finetune_wall_s")])
    if aux:
        body.append(["aux-mlm (stage 1 of fast, once)", aux["steps"], aux_tflops, 0.0, aux_tflops, aux_tflops,
                     aux["wall_time_s"], None, None, None, None, None])
    if majority is not None:
        body.append(["majority class", 0, 0.0, 0.0, 0.0, 0.0, 0.0, None, majority, None, None, None])
    table = markdown_table(header, body, digits=3)
    config = settings.run_config()
    sizes = config.model.sizes()
    lines = [
        "Effectiveness at equal main-model pre-training FLOPs: Rotten Tomatoes sentiment (SST-2 layout), dev accuracy",
        "", table, "",
        f"- Command: `{command}`; wall time of all stages {wall / 60:.1f} min (summed over resumed sessions).",
        f"- Main model: {sizes['num_hidden_layers']} × {sizes['hidden_size']} (embedding {sizes['embedding_size']}, "
        f"{sizes['num_attention_heads']} heads, FFN {sizes['intermediate_size']}), sequence length {config.data.seq_len}, "
        f"vocabulary {settings.vocab_size}; preset `{settings.preset}`{', overrides ' + ' '.join(settings.overrides) if settings.overrides else ''}; "
        f"{settings.ranks} CPU ranks (ZeRO-3, deepspeed launcher), global batch {settings.global_batch}, peak learning rate "
        f"{pretraining_lr(settings):g} (AdamW, linear warm-up and decay).",
        f"- Budget: {budget / 1e12:.2f} TFLOPs of main-model training each (forward + backward, accounting/flops.py); per sequence "
        f"mlm {per_sequence['mlm']['main'] / 1e9:.3f}, electra/fast {per_sequence['electra']['main'] / 1e9:.3f} GFLOPs; "
        f"on top: electra's generator {per_sequence['electra']['other'] / 1e9:.3f} (trained), fast's frozen aux forward "
        f"{per_sequence['fast']['other'] / 1e9:.3f} GFLOPs per sequence.",
        f"- Corpus: {corpus['documents']} documents, {corpus['words']:,} words ("
        + "; ".join(f"{Path(p['source']).name}: {p['documents']} documents, {p['words']:,} words" for p in corpus["parts"])
        + (f"), {tokens:,} tokens." if tokens else ")."),
        f"- Fine-tuning: `fast-electra finetune --recipe {settings.recipe}`"
        + (f" --set {' '.join(settings.finetune_overrides)}" if settings.finetune_overrides else "")
        + f", seeds {' '.join(map(str, settings.seeds))}"
        + (f", a fixed random {settings.finetune_train_limit} of the training rows" if settings.finetune_train_limit else "")
        + "; random-init is the same main model, not pre-trained.",
        "- Wall times are measured on a shared machine (other jobs on the same 2 cores inflate them).",
    ]
    return "\n".join(lines)


def render_learning(rows: list[dict], aux: dict | None, robustness: dict[str, dict], defaults: dict[str, dict],
                    settings: Settings, majority: dict) -> str:
    """What each model learned (held-out text, the last validation) and the second task."""
    header = ["Model", "val MLM loss", "val MLM gap to unigram", "val RTD loss", "val RTD AUC", "val RTD prior gap",
              "val RTD context gain", *[f"{task} median (min–max, seeds)" for task in settings.tasks]]
    body = []
    for r in rows:
        cells = [r["model"], *(r.get(k) for k in LEARNING_KEYS)]
        for task in settings.tasks:
            t = r.get("tasks", {}).get(task)
            cells.append(f"{t['median']:.3f} ({t['min']:.3f}–{t['max']:.3f}, {t['seeds']})" if t else None)
        body.append(cells)
    if aux and aux.get("last_validation"):  # fast's frozen aux: how good a sampler it is, beside electra's generator
        last = aux["last_validation"]
        body.append(["aux-mlm (fast's frozen aux)", *(last.get(k) for k in LEARNING_KEYS), *(None for _ in settings.tasks)])
    if any(majority.values()):
        body.append(["majority class", None, None, None, None, None, None, *(majority.get(t) for t in settings.tasks)])
    lines = ["", "What was learned: validation on held-out sequences (fixed masks and samples) at the end of pre-training; "
             "fine-tuning dev accuracy on both tasks", "", markdown_table(header, body, digits=4), ""]
    if robustness:
        lines += [f"Robustness: electra and fast at {LR_FACTOR:g} x the peak learning rate ({pretraining_lr(settings) * LR_FACTOR:g})", ""]
        for method, record in robustness.items():
            last = record.get("last_validation") or {}
            verdict = robustness_verdict(record, defaults.get(method))
            state = "diverged" if verdict["diverged"] else "stalled" if verdict["stalled"] else "learned context"
            lines.append(f"- {method}: **{state}** (context gain bar {CONTEXT_GAIN_LEARNED}): val RTD loss {last.get('val_rtd_loss')}, "
                         f"AUC {last.get('val_rtd_auc')}, context gain {last.get('val_rtd_context_gain')} against "
                         f"{verdict['default_lr_val_rtd_context_gain']} at the default lr (last log: loss {record.get('last', {}).get('loss')})")
    return "\n".join(lines)


def write_outputs(out_dir: Path, rows: list[dict], results: dict, text: str, quiet: bool) -> None:
    publish("effectiveness", results, text, out_dir, quiet)
    header = ["model", "steps", "main_tflops", "other_tflops", "total_tflops", "total_with_aux_tflops", "pretrain_wall_s",
              "final_loss", "final_rtd_acc_replaced", "acc_median", "acc_min", "acc_max", "acc_stdev", "acc_per_seed", "finetune_wall_s"]
    with (out_dir / "effectiveness.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            writer.writerow([" ".join(f"{v:.4f}" for v in r[k]) if k == "acc_per_seed" and k in r else r.get(k, "") for k in header])
    plot(out_dir / "effectiveness.png", rows, results.get("majority_baseline"))


def plot(path: Path, rows: list[dict], majority: float | None) -> bool:
    """Accuracy (median, min–max bar) against total pre-training FLOPs, one point per model."""
    plt = pyplot()
    if plt is None:
        print("PNG skipped: matplotlib is not installed (pip install -e .[bench])")
        return False
    rows = [r for r in rows if "acc_median" in r]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        x = r["total_tflops"]
        ax.errorbar([x], [r["acc_median"]], yerr=[[r["acc_median"] - r["acc_min"]], [r["acc_max"] - r["acc_median"]]],
                    fmt="o", capsize=4, label=f"{r['model']} ({x:.2f} TFLOPs)")
        if r["model"] == "fast" and r["total_with_aux_tflops"] > x:
            ax.plot([x, r["total_with_aux_tflops"]], [r["acc_median"]] * 2, ":", color="grey")
            ax.annotate("+ aux training", (r["total_with_aux_tflops"], r["acc_median"]), fontsize=8, color="grey")
    if majority is not None:
        ax.axhline(majority, linestyle="--", color="black", linewidth=1, label=f"majority class ({majority:.3f})")
    ax.set_xlabel("total pre-training TFLOPs (main + generator / frozen aux)")
    ax.set_ylabel("dev accuracy (median, min–max over seeds)")
    ax.set_title("Rotten Tomatoes sentiment after equal main-model pre-training FLOPs")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(plt, fig, path)


def plot_curves(path: Path, settings: Settings, stages: list[str], unigram: float | None) -> bool:
    """Validation curves against main-model training tokens: MLM loss (mlm, the electra generator, the
    aux) beside the unigram entropy, and the RTD context gain / AUC of every discriminator."""
    plt = pyplot()
    if plt is None:
        return False
    tokens_per_step = settings.tokens_per_step
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    drawn = False
    for stage in ["aux", *stages]:
        records = [r for r in run_metrics(settings, stage) if "val_loss" in r]
        if not records:
            continue
        x = [r["step"] * tokens_per_step / 1e6 for r in records]
        for ax, key in zip(axes, ("val_mlm_loss", "val_rtd_context_gain", "val_rtd_auc")):
            if key in records[-1]:
                ax.plot(x, [r.get(key, float("nan")) for r in records], marker=".", label=stage)
                drawn = True
    if not drawn:
        plt.close(fig)
        return False
    if unigram is not None:
        axes[0].axhline(unigram, color="black", linestyle="--", linewidth=1, label=f"unigram entropy {unigram:.2f}")
        axes[0].axhline(unigram - MLM_GAP_LEARNED, color="grey", linestyle=":", linewidth=1, label=f"entropy - {MLM_GAP_LEARNED}")
    axes[1].axhline(CONTEXT_GAIN_LEARNED, color="grey", linestyle=":", linewidth=1, label=f"{CONTEXT_GAIN_LEARNED} nats")
    axes[1].axhline(0, color="black", linewidth=0.5)
    axes[2].axhline(0.5, color="black", linewidth=0.5)
    for ax, title in zip(axes, ("validation MLM loss (nats)", "validation RTD context gain (nats)", "validation RTD AUC")):
        ax.set_title(title)
        ax.set_xlabel("training tokens (millions)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(plt, fig, path)


def write_search_record(path: Path, settings: Settings, stages: list[str], unigram: float | None, command: str) -> str:
    """The setting search: for the setting run, each pre-training run's validation curve (finished or
    still running) and whether it meets the bars -- (a) `mlm`'s validation MLM loss at least
    MLM_GAP_LEARNED below the unigram entropy, (b) `electra`'s validation context gain at least
    CONTEXT_GAIN_LEARNED."""
    tokens_per_step = settings.tokens_per_step
    lines = [f"Setting search and study status (generated by `{command}` from {settings.work}; "
             f"unigram entropy {unigram:.4f} nats)" if unigram is not None else "Setting search and study status", ""]
    for stage in ["aux", *stages]:
        records = [r for r in run_metrics(settings, stage) if "val_loss" in r]
        if not records:
            continue
        finished = done(settings.work, stage) is not None
        keys = [k for k in ("val_mlm_loss", "val_mlm_prior_gap", "val_rtd_loss", "val_rtd_auc", "val_rtd_prior_gap", "val_rtd_context_gain")
                if k in records[-1]]
        body = [[r["step"], r["step"] * tokens_per_step / 1e6, *(r.get(k) for k in keys)] for r in records]
        lines += [f"**{stage}** ({'finished' if finished else 'still running: the last validation so far'})", "",
                  markdown_table(["step", "tokens (M)", *keys], body, digits=4), ""]
        last = records[-1]
        if stage == "mlm" and "val_mlm_prior_gap" in last:
            met = last["val_mlm_prior_gap"] >= MLM_GAP_LEARNED
            lines += [f"(a) mlm's validation MLM loss {last['val_mlm_loss']:.3f} is {last['val_mlm_prior_gap']:.3f} nats below the unigram "
                      f"entropy: {'MET' if met else 'not met'} (bar: {MLM_GAP_LEARNED})", ""]
        if stage == "electra" and "val_rtd_context_gain" in last:
            met = last["val_rtd_context_gain"] >= CONTEXT_GAIN_LEARNED
            lines += [f"(b) electra's validation context gain {last['val_rtd_context_gain']:.4f} nats: {'MET' if met else 'not met'} "
                      f"(bar: {CONTEXT_GAIN_LEARNED}){'' if finished else ' so far'}", ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return text
