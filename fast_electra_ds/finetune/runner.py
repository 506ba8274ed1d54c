"""Fine-tune a model on tasks over several seeds and summarise as the papers do.

Per task: every seed's dev metrics, their median (ELECTRA reports the median of 10 fine-tuning runs
per task, Section 3.1 "Evaluation"), the spread, the majority-class baseline, the recipe and the
wall time -> OUT/<task>/summary.json and summary.md. Per seed, as run_glue does: with `save_model`
the fine-tuned model and its tokenizer -> OUT/<task>/seed_<s>/model, and when the task's test files
are present its test-set predictions in GLUE's submission format -> OUT/<task>/seed_<s>/<Task>.tsv. For several tasks, OUT/summary.json and
summary.md add the papers' "Average" column, two ways:

- `average`: the mean over tasks of each task's main metric (ELECTRA Tables 1, 2, 8: Matthews corr.
  for CoLA, Spearman for STS-B, accuracy for the others, MNLI matched);
- `glue_average`: the GLUE leaderboard's convention, where a task with two metrics scores their
  mean first (MRPC and QQP: F1 and accuracy; STS-B: Pearson and Spearman; MNLI: matched and
  mismatched accuracy). BERT's and most later papers' GLUE "Average" use this one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import UserError, check_writable
from ..metrics.logger import strict
from ..runtime.temp_dirs import write_atomically
from . import trainer
from .recipes import make_recipe, size_for_hidden
from .tasks import Split, Task, get_task, load_task_data, present_test_files, read_test_split

SUBSET_SEED = 0  # --max-*-examples take a fixed random subset, the same for every seed and method
DOUBLE_UNORDERED_TASKS = ("mrpc", "stsb")  # ELECTRA's code: pairs whose order means nothing
SAVE_CHOICES = ("none", "last", "best")
SAVED_MARKER = "fast_electra_finetune.json"  # in a saved model directory: only such a directory is ever replaced


def save_model(model, tokenizer, target: Path, about: dict) -> None:
    """The model and its tokenizer into `target`, written aside and renamed into place (never half a
    model); an earlier save of this command is replaced, any other existing directory is refused."""
    if target.exists() and not (target / SAVED_MARKER).is_file():
        raise UserError(f"{target} exists and is not a model saved by fast-electra finetune", "move it away or choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / SAVED_MARKER).write_text(json.dumps(about, indent=2) + "\n")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".model-old-", dir=target.parent))
            os.replace(target, old / "model")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_submission(path: Path, ids: list[str], predictions, task: Task) -> None:
    """GLUE's submission format: a header `index<TAB>prediction`, then each test row's id and its
    label string (a score with 3 decimals for regression)."""
    if task.is_regression:
        values = [f"{float(p):.3f}" for p in predictions]
    else:
        values = [task.labels[int(p)] for p in predictions]
    write_atomically(path, "index\tprediction\n" + "".join(f"{i}\t{v}\n" for i, v in zip(ids, values)))


def json_text(value) -> str:
    """Strict JSON for the summaries: an undefined metric (a correlation of constant predictions) is
    `null`, not the bare NaN that jq, JavaScript and strict parsers refuse."""
    return json.dumps(strict(value), indent=2, allow_nan=False) + "\n"


def write_dev_predictions(path: Path, split: Split, predictions, task: Task) -> None:
    """Each dev example with its gold label and the prediction, in the order scored: `index` (the row
    among the examples evaluated), the text(s), `label`, `prediction` (label strings; scores with 3
    decimals for regression). The texts come from a TSV, so they hold no tab or newline."""
    show = (lambda v: f"{float(v):.3f}") if task.is_regression else (lambda v: task.labels[int(v)])  # noqa: E731
    texts = [split.text_a] if split.text_b is None else [split.text_a, split.text_b]
    header = ["index", "text_a"] + (["text_b"] if split.text_b is not None else []) + ["label", "prediction"]
    rows = ["\t".join([str(i), *(t[i] for t in texts), show(split.labels[i]), show(p)]) for i, p in enumerate(predictions)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, "\t".join(header) + "\n" + "".join(row + "\n" for row in rows))


def subset(split: Split, limit: int | None) -> Split:
    """At most `limit` examples, a fixed random choice kept in file order."""
    if not limit or len(split) <= limit:
        return split
    keep = np.sort(np.random.RandomState(SUBSET_SEED).choice(len(split), size=limit, replace=False))
    pick = lambda values: [values[i] for i in keep]  # noqa: E731
    return replace(split, text_a=pick(split.text_a), text_b=None if split.text_b is None else pick(split.text_b),
                   labels=pick(split.labels))


def both_orders(split: Split) -> Split:
    """Each pair, then each pair with its sentences swapped (ELECTRA's double_unordered)."""
    return replace(split, text_a=split.text_a + split.text_b, text_b=split.text_b + split.text_a,
                   labels=split.labels + split.labels)


def _across_seeds(per_seed: dict[str, dict[str, float]], reduce) -> dict[str, float]:
    names = next(iter(per_seed.values())).keys()
    return {name: float(reduce([results[name] for results in per_seed.values()])) for name in names}


def prior_loss(task: Task, train_labels: np.ndarray) -> float | None:
    """The training loss of predicting the training labels' frequencies for every input (classification):
    a final train loss near it means the run learned nothing from the text."""
    if task.is_regression:
        return None
    shares = np.bincount(train_labels.astype(np.int64), minlength=task.num_labels) / len(train_labels)
    return float(-(shares[shares > 0] * np.log(shares[shares > 0])).sum())


def glue_score(task: Task, values: dict[str, float]) -> float:
    return float(np.mean([values[name] for name in task.glue_score_metrics]))


def run(model_dir, task, data_dir, out_dir, seeds, recipe: str = "auto", overrides=None, *,
        max_train_examples: int | None = None, max_dev_examples: int | None = None,
        progress: bool = True, save: str = "none", init: str = "pretrained") -> dict:
    """Fine-tune `model_dir` on `task` (a GLUE name with `data_dir` = GLUE_DIR, or a custom task file)
    once per seed; write OUT/<task>/summary.json + summary.md and return the summary. `save`: "last"
    or "best" (epoch by dev main metric) keeps each seed's model; `init`: "random" fine-tunes the
    same architecture from random weights (the no-pre-training baseline)."""
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds {seeds} must be a non-empty list of distinct integers", "e.g. --seeds 1 2 3")
    if save not in SAVE_CHOICES:
        raise UserError(f"save {save!r} is not one of {', '.join(SAVE_CHOICES)}", "e.g. --save-model best")
    if init not in trainer.INITS:
        raise UserError(f"init {init!r} is not one of {', '.join(trainer.INITS)}", "e.g. --init random")
    config = trainer.model_config(model_dir)
    task_spec = get_task(str(task), data_dir)
    check_writable(out_dir, "--out")  # before hours of fine-tuning
    tokenizer = trainer.load_tokenizer(model_dir)
    hidden = int(getattr(config, "hidden_size", 768))
    the_recipe = make_recipe(recipe, hidden, task_spec.name, overrides, getattr(config, "fast_electra_pooling", None))
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and the_recipe.max_seq_len > max_positions:
        raise UserError(f"max_seq_len {the_recipe.max_seq_len} exceeds the model's {max_positions} positions",
                        f"--set max_seq_len={max_positions}")
    collator = trainer.padding_collator(tokenizer, model_dir)

    train_split, dev_splits = load_task_data(task_spec)
    train_split = subset(train_split, max_train_examples)
    dev_splits = {k: subset(v, max_dev_examples) for k, v in dev_splits.items()}
    segments = int(getattr(config, "type_vocab_size", 0) or 0) > 1
    doubled = the_recipe.double_unordered and task_spec.glue_dir and task_spec.name in DOUBLE_UNORDERED_TASKS
    train = trainer.encode(tokenizer, both_orders(train_split) if doubled else train_split, the_recipe.max_seq_len, segments)
    dev = {k: trainer.encode(tokenizer, v, the_recipe.max_seq_len, segments) for k, v in dev_splits.items()}
    baseline = trainer.majority_baseline(task_spec, train.labels, dev)
    label_prior_loss = prior_loss(task_spec, train.labels)
    tests = {suffix: read_test_split(task_spec, name) for suffix, name in present_test_files(task_spec).items()}
    test = {suffix: (ids, trainer.encode(tokenizer, split, the_recipe.max_seq_len, segments)) for suffix, (ids, split) in tests.items()}

    task_out = out_dir / task_spec.name
    task_out.mkdir(parents=True, exist_ok=True)
    per_seed, per_seed_stats = {}, {}
    for seed in seeds:
        seed_started = time.perf_counter()
        results, stats, model, dev_predictions = trainer.train_one_seed(model_dir, task_spec, train, dev, collator, the_recipe, seed,
                                                                        progress, init=init, keep_best=save == "best")
        seed_out = task_out / f"seed_{seed}"
        for name, predictions in dev_predictions.items():  # "<suffix>": the reported (final) model's; "best<suffix>": the saved best's
            suffix = name.removeprefix("best")
            path = seed_out / ("dev_predictions" + "".join(f"_{part}" for part in (suffix, "best" if name.startswith("best") else "") if part) + ".tsv")
            write_dev_predictions(path, dev_splits[suffix], predictions, task_spec)
            stats.setdefault("dev_predictions", []).append(str(path))
        if save != "none":
            which = f"best (epoch {stats['best_epoch']})" if save == "best" else "last"
            save_model(model, tokenizer, seed_out / "model", {"task": task_spec.name, "seed": seed, "saved": which,
                                                               "base_model": str(model_dir), "init": init, "dev_metrics": stats.get("best_metrics", results)})
            stats["saved_model"], stats["saved"] = str(seed_out / "model"), which
        device, autocast = trainer.device_and_autocast()
        for suffix, (ids, encoded) in test.items():
            predictions = trainer.predict(model, encoded, collator, the_recipe.eval_batch_size, task_spec.is_regression, device, autocast)
            seed_out.mkdir(parents=True, exist_ok=True)
            write_submission(seed_out / task_spec.submission[suffix], ids, predictions, task_spec)
            stats.setdefault("test_predictions", []).append(str(seed_out / task_spec.submission[suffix]))
        del model
        stats["wall_time_s"] = round(time.perf_counter() - seed_started, 2)
        per_seed[str(seed)], per_seed_stats[str(seed)] = results, stats
        write_atomically(task_out / f"seed_{seed}.json", json_text({"metrics": results, **stats}))
        if progress:
            print(f"{task_spec.name} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items())
                  + f" ({stats['wall_time_s']:.0f} s)", flush=True)

    median = _across_seeds(per_seed, np.median)
    device, autocast = trainer.device_and_autocast()
    summary = {
        "task": task_spec.name,
        "metric": task_spec.main_metric,
        "per_seed": per_seed,
        "median": median,
        "min": _across_seeds(per_seed, np.min),
        "max": _across_seeds(per_seed, np.max),
        "main_median": median[task_spec.main_metric],
        "glue_score_median": glue_score(task_spec, median),
        "glue_score_metrics": list(task_spec.glue_score_metrics),
        "majority_baseline": baseline[task_spec.main_metric],
        "majority_baseline_metrics": baseline,
        # Failed runs as Mosbach et al. (ICLR 2021, "On the stability of fine-tuning BERT") count them: no better than the majority class.
        "seeds_at_majority": [int(seed) for seed, results in per_seed.items() if results[task_spec.main_metric] <= baseline[task_spec.main_metric]],
        "prior_train_loss": label_prior_loss,
        "model": str(model_dir),
        "init": init,
        "recipe": {"name": size_for_hidden(hidden) if recipe == "auto" else recipe, **the_recipe.to_dict()},
        "seeds": seeds,
        "train_examples": len(train_split),
        "trained_in_both_orders": bool(doubled),
        "dev_examples": {k or "dev": len(v) for k, v in dev_splits.items()},
        "per_seed_stats": per_seed_stats,
        "device": device.type + (f" ({autocast} autocast)" if autocast else ""),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    write_atomically(task_out / "summary.json", json_text(summary))
    write_atomically(task_out / "summary.md", task_markdown(summary))
    return summary


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def task_markdown(summary: dict) -> str:
    names = list(summary["median"])
    random = " (its architecture at random initialisation: no pre-training)" if summary.get("init") == "random" else ""
    lines = [f"# {summary['task']}: fine-tuning {summary['model']}{random}", "",
             f"Main metric: **{summary['metric']}**, median over seeds {summary['seeds']}: "
             f"**{_pct(summary['main_median'])}** (majority-class baseline {_pct(summary['majority_baseline'])}). "
             f"Values in %. {summary['train_examples']} training examples, dev {summary['dev_examples']}, "
             f"{summary['wall_time_s']:.0f} s on {summary['device']}.", "",
             "| seed | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for seed, results in summary["per_seed"].items():
        lines.append(f"| {seed} | " + " | ".join(_pct(results[n]) for n in names) + " |")
    for label in ("median", "min", "max"):
        lines.append(f"| **{label}** | " + " | ".join(_pct(summary[label][n]) for n in names) + " |")
    lines.append("| majority | " + " | ".join(_pct(summary["majority_baseline_metrics"][n]) for n in names) + " |")
    recipe = ", ".join(f"{k}={v}" for k, v in summary["recipe"].items())
    lines += ["", f"Recipe: {recipe}.", ""]
    losses = ", ".join(f"{seed}: {stats['final_train_loss']:.3f}" for seed, stats in summary["per_seed_stats"].items())
    prior = summary.get("prior_train_loss")
    lines.append(f"Final train loss per seed: {losses}" + (f" (predicting the label frequencies: {prior:.3f})." if prior is not None else "."))
    if summary.get("seeds_at_majority"):
        lines.append(f"Seeds no better than the majority class (failed runs): {', '.join(map(str, summary['seeds_at_majority']))}.")
    lines.append("")
    for seed, stats in summary["per_seed_stats"].items():
        if "saved_model" in stats:
            lines.append(f"- seed {seed}: model ({stats['saved']}) in `{stats['saved_model']}`")
        for path in stats.get("dev_predictions", []):
            lines.append(f"- seed {seed}: dev-set predictions `{path}`")
        for path in stats.get("test_predictions", []):
            lines.append(f"- seed {seed}: test-set predictions `{path}`")
    lines.append("")
    return "\n".join(lines)


def run_tasks(model_dir, tasks, data_dir, out_dir, seeds, recipe: str = "auto", overrides=None, **kwargs) -> dict:
    """`run` for each task, then OUT/summary.json + summary.md with both "Average" conventions
    (see the module docstring)."""
    started = time.perf_counter()
    summaries = [run(model_dir, task, data_dir, out_dir, seeds, recipe, overrides, **kwargs) for task in tasks]
    combined = {
        "model": str(model_dir),
        "seeds": [int(s) for s in seeds],
        "tasks": {s["task"]: {"metric": s["metric"], "main_median": s["main_median"],
                              "glue_score_median": s["glue_score_median"], "glue_score_metrics": s["glue_score_metrics"],
                              "majority_baseline": s["majority_baseline"]} for s in summaries},
        "average": float(np.mean([s["main_median"] for s in summaries])),
        "glue_average": float(np.mean([s["glue_score_median"] for s in summaries])),
        "average_note": "average: mean of each task's main metric (ELECTRA's tables); glue_average: a task with "
                        "two metrics scores their mean first (GLUE leaderboard, BERT)",
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    out_dir = Path(out_dir)
    write_atomically(out_dir / "summary.json", json_text(combined))
    names = list(combined["tasks"])
    lines = [f"# Fine-tuning {model_dir}: median over seeds {combined['seeds']} (values in %)", "",
             "| | " + " | ".join(names) + " | Average |", "|---" * (len(names) + 2) + "|",
             "| main metric | " + " | ".join(f"{_pct(combined['tasks'][n]['main_median'])} ({combined['tasks'][n]['metric']})" for n in names)
             + f" | {_pct(combined['average'])} |",
             "| GLUE score | " + " | ".join(f"{_pct(combined['tasks'][n]['glue_score_median'])}" for n in names)
             + f" | {_pct(combined['glue_average'])} |",
             "| majority class | " + " | ".join(_pct(combined["tasks"][n]["majority_baseline"]) for n in names) + " | |",
             "", f"{combined['average_note']}.", ""]
    write_atomically(out_dir / "summary.md", "\n".join(lines))
    return combined
