"""Fine-tuning at each model's best setting: an lr x layer-decay sweep per model and training-set size, then seeds.

For every model (an exported directory given as NAME=DIR; the study's random-init export is the
no-pre-training baseline) and every training-set size (`full`, or N rows):

1. the sweep: every (lr, layer decay) of --lrs x --layer-decays on the sweep seed;
2. the best setting by dev accuracy (ties: the smaller lr, then the larger layer decay, 1.0 = none);
3. the other seeds (--seeds: 3 for full, 5 for the low-resource sizes by default) at that setting.

Scores are the dev accuracy at the end of fine-tuning (ELECTRA's protocol; `fast-electra finetune`
reports no best epoch unless it saves models). The rest of the recipe is ELECTRA's for the model's size
(`--recipe auto`: 3 epochs, batch 32, 10% warm-up). N rows are `fast-electra finetune
--max-train-examples N`: a fixed random subset (finetune/runner.py SUBSET_SEED), the same N rows for
every model and seed; the 500 rows are among the 2,000 (the first N of one fixed permutation).

`--set KEY=VALUE ...` changes the recipe of every run (e.g. `pooling=mean`, `epochs=10` for the small
sizes); such a sweep is a sweep of its own: its stages carry the settings (`sweep-<task>+pooling=mean-...`),
so it shares --work with the plain one without mixing records, and its tables say what was set.

Every run is one `fast-electra finetune` process (one thread; --jobs at once) and one resumable stage
(benchmarks/study/finetuning.py finetune_run): run the same command again and finished runs are
skipped, crashed ones redone.

    python benchmarks/finetune_sweep.py --work runs/finetune-sweep \\
        --models mlm=runs/study/mlm/hf electra=runs/study/electra-fp32/hf random-init=runs/study/random-init/hf \\
        --task runs/study/glue/SST-2 --out benchmarks/results/study/finetune_sweep.md
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.study import stages  # noqa: E402
from benchmarks.study.finetuning import accuracy_of, finetune_run, rotten_tomatoes_glue  # noqa: E402
from benchmarks.study.settings import TASK  # noqa: E402
from benchmarks.study.stages import done, done_before, say  # noqa: E402
from fast_electra_ds.errors import UserError, run_guarded  # noqa: E402

FULL = "full"
DEFAULT_SEEDS = {FULL: 3}  # runs per size at the chosen setting, the sweep seed's included
LOW_RESOURCE_SEEDS = 5
TIE_RULE = "ties go to the smaller lr, then to the larger layer decay, 1.0 being none"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # part of file names


@dataclass(frozen=True)
class Run:
    model: str
    size: str  # FULL or a number of training rows
    lr: float
    layer_decay: float
    seed: int


@dataclass
class Sweep:
    models: dict[str, Path]
    task: str  # the name `fast-electra finetune` files its summary under
    task_args: list[str]
    lrs: list[float]
    layer_decays: list[float]
    sizes: list[str]
    sweep_seed: int
    seed_counts: dict[str, int]
    work: Path
    jobs: int = 2
    fixed: tuple[str, ...] = ()  # --set KEY=VALUE for every run's recipe

    @property
    def kind(self) -> str:
        """The task, then the fixed settings: the start of every stage name of this sweep."""
        return self.task + "".join(f"+{item}" for item in self.fixed)

    def grid(self) -> list[tuple[float, float]]:
        return [(lr, decay) for lr in self.lrs for decay in self.layer_decays]

    def seeds(self, size: str) -> list[int]:
        return [self.sweep_seed + i for i in range(self.seed_counts[size])]

    def stage(self, run: Run) -> str:
        return f"sweep-{self.kind}-{run.model}-{run.size}-lr{run.lr:g}-ld{run.layer_decay:g}-seed{run.seed}"

    def record(self, run: Run) -> dict | None:
        return done(self.work, self.stage(run))


def grid_runs(sweep: Sweep, size: str) -> list[Run]:
    """Setting-major, so that a sweep cut short has compared every model at the same settings."""
    return [Run(model, size, lr, decay, sweep.sweep_seed) for lr, decay in sweep.grid() for model in sweep.models]


def best_setting(accuracies: dict[tuple[float, float], float]) -> tuple[float, float]:
    """The (lr, layer decay) with the best accuracy; TIE_RULE."""
    return min(accuracies, key=lambda setting: (-accuracies[setting], setting[0], -setting[1]))


def swept(sweep: Sweep, model: str, size: str) -> dict[tuple[float, float], dict]:
    """A model's finished sweep runs at `size`, by (lr, layer decay)."""
    return {(run.lr, run.layer_decay): record for run in grid_runs(sweep, size) if run.model == model and (record := sweep.record(run))}


def chosen_setting(sweep: Sweep, model: str, size: str) -> tuple[float, float] | None:
    """The model's best setting at `size`; None until its sweep there has finished."""
    records = swept(sweep, model, size)
    return best_setting({setting: r["accuracy"] for setting, r in records.items()}) if len(records) == len(sweep.grid()) else None


def seed_runs(sweep: Sweep, size: str) -> list[Run]:
    """The chosen settings' other seeds, seed-major."""
    chosen = {model: setting for model in sweep.models if (setting := chosen_setting(sweep, model, size))}
    return [Run(model, size, *chosen[model], seed) for seed in sweep.seeds(size) if seed != sweep.sweep_seed for model in chosen]


def run_one(sweep: Sweep, run: Run) -> dict:
    stage = sweep.stage(run)
    if record := done_before(sweep.work, stage, accuracy_of):
        return record
    out = sweep.work / "runs" / sweep.kind / run.model / run.size / f"lr{run.lr:g}-ld{run.layer_decay:g}" / f"seed{run.seed}"
    record = finetune_run(sweep.work, stage, out, str(sweep.models[run.model]), sweep.task, sweep.task_args, run.seed,
                          overrides=[*sweep.fixed, f"lr={run.lr!r}", f"layer_decay={run.layer_decay!r}"],
                          train_limit=None if run.size == FULL else int(run.size),
                          about={"model": run.model, "model_dir": str(sweep.models[run.model]), "size": run.size,
                                 "lr": run.lr, "layer_decay": run.layer_decay, "set": list(sweep.fixed)})
    say(f"{stage}: dev accuracy {record['accuracy']:.4f} ({record['wall_time_s']:.0f} s)")
    return record


def run_all(sweep: Sweep, runs: list[Run]) -> list[str]:
    """`runs`, `sweep.jobs` at a time in order; returns the failed runs' stages. A failure does not stop
    the others (an unattended sweep keeps going); it stays unrecorded, so the next launch redoes it."""
    failed = []
    pool = ThreadPoolExecutor(max_workers=sweep.jobs)
    try:
        futures = {pool.submit(run_one, sweep, run): sweep.stage(run) for run in runs}
        for future in as_completed(futures):
            try:
                future.result()
            except UserError as err:
                say(f"{futures[future]} failed: {err}")
                failed.append(futures[future])
    finally:  # on Ctrl-C: start nothing more (the running children get the signal too)
        pool.shutdown(wait=True, cancel_futures=True)
    return failed


def check_records(sweep: Sweep) -> None:
    """A finished run is skipped by its stage name: refuse when NAME now means another directory."""
    for path in sorted((sweep.work / "stages").glob(f"sweep-{sweep.kind}-*.json")):
        record = json.loads(path.read_text())
        wanted = sweep.models.get(record.get("model"))
        if wanted is not None and record.get("model_dir") != str(wanted):
            raise UserError(f"{path} was run with {record['model']}={record.get('model_dir')}, not {wanted}",
                            "give that name its earlier directory, another name, or another --work")


def summarise(sweep: Sweep) -> dict:
    """The finished runs as the sweep grid and, per size and model, the chosen setting's seeds."""
    grid, results = [], []
    for size in sweep.sizes:
        for model in sweep.models:
            records = swept(sweep, model, size)
            grid += [{"model": model, "size": size, "lr": lr, "layer_decay": decay, "seed": sweep.sweep_seed,
                      "accuracy": record["accuracy"]} for (lr, decay), record in records.items()]
            result = {"model": model, "size": size, "sweep_runs_done": len(records), "sweep_runs": len(sweep.grid())}
            if setting := chosen_setting(sweep, model, size):
                lr, decay = setting
                seed_records = {str(seed): record for seed in sweep.seeds(size) if (record := sweep.record(Run(model, size, lr, decay, seed)))}
                per_seed = {seed: record["accuracy"] for seed, record in seed_records.items()}
                values = list(per_seed.values())
                losses = [loss for record in seed_records.values() if (loss := final_train_loss(record)) is not None]
                result.update(lr=lr, layer_decay=decay, per_seed=per_seed, seeds_planned=len(sweep.seeds(size)),
                              median=statistics.median(values), min=min(values), max=max(values),
                              majority_baseline=records[setting]["majority_baseline"],
                              at_majority=sum(value <= records[setting]["majority_baseline"] for value in values),
                              final_train_loss_median=statistics.median(losses) if losses else None,
                              train_examples=records[setting]["summary"]["train_examples"])
            results.append(result)
    return {"grid": grid, "results": results}


def final_train_loss(record: dict) -> float | None:
    """The run's training loss over its last steps (fast-electra finetune's per-seed stats)."""
    stats = record.get("summary", {}).get("per_seed_stats", {}).get(str(record["seed"]), {})
    return stats.get("final_train_loss")


def size_label(size: str, rows: int | None = None) -> str:
    return (f"full ({rows:,})" if rows else "full") if size == FULL else f"{int(size):,}"


def markdown(sweep: Sweep, summary: dict, command: str, recipe: dict | None) -> str:
    settings = " x ".join([f"lr {{{', '.join(f'{lr:g}' for lr in sweep.lrs)}}}",
                           f"layer decay {{{', '.join(f'{d:g}' for d in sweep.layer_decays)}}}"])
    seeds = "; ".join(f"{size_label(size)}: {', '.join(map(str, sweep.seeds(size)))}" for size in sweep.sizes)
    about = (f"ELECTRA's {recipe['name']} recipe ({recipe['epochs']:g} epochs, batch {recipe['batch_size']}, "
             f"warm-up {recipe['warmup_fraction']:g}, pooling {recipe.get('pooling', 'cls')}) except lr and layer decay"
             if recipe else "ELECTRA's recipe for the model's size")
    if sweep.fixed:
        about += f", with {' '.join(sweep.fixed)} set for every run"
    lines = [f"# Fine-tuning sweep on {sweep.kind}: each model at its best lr and layer decay", "",
             f"Dev accuracy at the end of fine-tuning; {about}. Per model and training-set size the setting is chosen "
             f"by seed {sweep.sweep_seed}'s dev accuracy over {settings} ({TIE_RULE}), then run on seeds {seeds}. "
             f"Seed {sweep.sweep_seed} is one of the reported seeds and the dev set both chooses and scores (the task has "
             "no labelled test set): that flatters every model alike. A size of N rows is a fixed random subset, the same "
             "for every model and seed (the smaller sizes' rows are among the larger ones').", "",
             f"Command: `{command}`", "",
             "## Each model at its best setting", "",
             "| train rows | model | lr | layer decay | dev acc median | min–max | per seed | majority class | runs at majority "
             "| final train loss (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["results"]:
        if "lr" not in r:
            lines.append(f"| {size_label(r['size'])} | {r['model']} | sweep {r['sweep_runs_done']}/{r['sweep_runs']} runs | | | | | | | |")
            continue
        count = "" if len(r["per_seed"]) == r["seeds_planned"] else f" ({len(r['per_seed'])} of {r['seeds_planned']} seeds)"
        per_seed = ", ".join(f"{seed}: {acc:.3f}" for seed, acc in r["per_seed"].items())
        lines.append(f"| {size_label(r['size'], r['train_examples'])} | {r['model']} | {r['lr']:g} | {r['layer_decay']:g} "
                     f"| **{r['median']:.3f}**{count} | {r['min']:.3f}–{r['max']:.3f} | {per_seed} | {r['majority_baseline']:.3f} "
                     f"| {r['at_majority']} of {len(r['per_seed'])} | {'–' if r['final_train_loss_median'] is None else format(r['final_train_loss_median'], '.3f')} |")
    columns = sweep.grid()
    lines += ["", "A run at majority ends no better than always answering the training set's most frequent class: it failed "
              "to learn (Mosbach et al., ICLR 2021). Its final train loss then stays near the loss of predicting the label "
              "frequencies (ln 2 = 0.693 for balanced labels).",
              "", f"## The sweep: dev accuracy on seed {sweep.sweep_seed} (the chosen setting in bold)", "",
              "| train rows | model | " + " | ".join(f"lr {lr:g}, decay {d:g}" for lr, d in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    accuracy = {(g["model"], g["size"], g["lr"], g["layer_decay"]): g["accuracy"] for g in summary["grid"]}
    for r in summary["results"]:
        cells = []
        for lr, decay in columns:
            value = accuracy.get((r["model"], r["size"], lr, decay))
            text = "–" if value is None else f"{value:.3f}"
            cells.append(f"**{text}**" if (r.get("lr"), r.get("layer_decay")) == (lr, decay) else text)
        lines.append(f"| {size_label(r['size'])} | {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(sweep: Sweep, out: Path, command: str) -> None:
    summary = summarise(sweep)
    first = next((record for path in sorted((sweep.work / "stages").glob(f"sweep-{sweep.kind}-*.json"))
                  if (record := json.loads(path.read_text())).get("model") in sweep.models), None)
    recipe = first["summary"]["recipe"] if first else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(sweep, summary, command, recipe))
    about = {"command": command, "task": sweep.task, "set": list(sweep.fixed), "models": {name: str(path) for name, path in sweep.models.items()},
             "lrs": sweep.lrs, "layer_decays": sweep.layer_decays, "sizes": sweep.sizes, "sweep_seed": sweep.sweep_seed,
             "seeds": {size: sweep.seeds(size) for size in sweep.sizes}, "tie_rule": TIE_RULE, "recipe": recipe}
    out.with_suffix(".json").write_text(json.dumps({**about, **summary}, indent=1) + "\n")
    say(f"wrote {out} and {out.with_suffix('.json')}")


def absolute(path: str) -> Path:
    """As given, made absolute (a symlinked study directory keeps its name): the runs start in the repository root."""
    return Path(os.path.abspath(path))


def parse_models(items: list[str]) -> dict[str, Path]:
    models = {}
    for item in items:
        name, sep, directory = item.partition("=")
        if not sep or not NAME.fullmatch(name) or not directory:
            raise UserError(f"--models {item!r} is not NAME=DIR (NAME: letters, digits, . _ -)", "e.g. --models mlm=runs/study/mlm/hf")
        if name in models:
            raise UserError(f"--models names {name} twice", "give each model its own name")
        path = absolute(directory)
        if not (path / "config.json").is_file():
            raise UserError(f"--models {name}: {directory} is not an exported model (no config.json)",
                            "pass a run's hf/ directory, e.g. runs/study/mlm/hf")
        models[name] = path
    return models


def parse_sizes(items: list[str]) -> list[str]:
    sizes = []
    for item in items:
        if item != FULL and not (item.isdigit() and int(item) > 0):
            raise UserError(f"--sizes {item!r} is not 'full' or a number of training rows", "e.g. --sizes full 2000 500")
        sizes.append(item if item == FULL else str(int(item)))
    if len(set(sizes)) != len(sizes):
        raise UserError(f"--sizes {' '.join(items)} repeats a size", "give each size once")
    return sizes


def parse_seed_counts(items: list[str] | None, sizes: list[str]) -> dict[str, int]:
    """COUNT (every size) or SIZE=COUNT items over the defaults: 3 runs for full, 5 for N rows."""
    counts = {size: DEFAULT_SEEDS.get(size, LOW_RESOURCE_SEEDS) for size in sizes}
    for item in items or []:
        size, sep, count = item.rpartition("=")
        size = size if size == FULL or not size.isdigit() else str(int(size))
        if not count.isdigit() or int(count) < 1 or (sep and size not in counts):
            raise UserError(f"--seeds {item!r} is not COUNT or SIZE=COUNT for a size of --sizes", "e.g. --seeds full=3 2000=5 500=5")
        counts.update({key: int(count) for key in ([size] if sep else counts)})
    return counts


def task_arguments(task: str | None, work: Path) -> tuple[str, list[str]]:
    """(the task's name, its `fast-electra finetune` arguments) for a task file (or a directory holding
    one), else an SST-2-layout directory; none given: the Rotten Tomatoes data, written under --work as
    the study writes it."""
    from fast_electra_ds.finetune.tasks import get_task, is_task_file

    if task is None:
        return TASK, ["--task", TASK, "--data", str(rotten_tomatoes_glue(work))]
    path = absolute(task)
    if not path.exists():
        raise UserError(f"--task {task} not found", "pass an SST-2-layout directory (runs/study/glue/SST-2) or a task file (.yaml)")
    if path.is_dir() and len(files := [*path.glob("*.yaml"), *path.glob("*.yml")]) == 1:
        path = files[0]  # a task's directory, as the study's convention/ holds convention.yaml
    if is_task_file(path.name):
        return get_task(str(path)).name, ["--task", str(path)]
    get_task(TASK, path)  # refuses a directory without the SST-2 layout
    return TASK, ["--task", TASK, "--data", str(path)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[-4:]))
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR", help="exported model directories (a run's hf/)")
    parser.add_argument("--task", help="SST-2-layout directory (train.tsv, dev.tsv) or a task file (.yaml/.json, or its directory); "
                                       "default: the Rotten Tomatoes snippets, written under --work/glue")
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3], help="default 1e-4 3e-4 1e-3")
    parser.add_argument("--layer-decays", nargs="+", type=float, default=[0.8, 1.0], help="default 0.8 1.0")
    parser.add_argument("--sizes", nargs="+", default=[FULL, "2000", "500"], help="'full' or training rows (default full 2000 500)")
    parser.add_argument("--sweep-seed", type=int, default=1, help="the seed the settings are compared on (default 1)")
    parser.add_argument("--seeds", nargs="+", metavar="[SIZE=]COUNT",
                        help=f"runs at the chosen setting, the sweep seed's included (default full=3, others {LOW_RESOURCE_SEEDS})")
    parser.add_argument("--work", default="runs/finetune-sweep", help="runs and their records (default runs/finetune-sweep)")
    parser.add_argument("--out", help="markdown tables, a .json beside (default WORK/finetune_sweep.md)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="fixed",
                        help="recipe settings for every run besides lr and layer decay, e.g. pooling=mean epochs=10")
    parser.add_argument("--report-only", action="store_true", help="write the tables from the finished runs, run nothing")
    return parser.parse_args(argv)


def make_sweep(args: argparse.Namespace) -> Sweep:
    for option, values, ok in (("--lrs", args.lrs, lambda v: v > 0), ("--layer-decays", args.layer_decays, lambda v: 0 < v <= 1)):
        if not all(map(ok, values)) or len(set(values)) != len(values):
            raise UserError(f"{option} {' '.join(map(str, values))}: each must be {'positive' if option == '--lrs' else 'in (0, 1]'}, "
                            "and given once", f"e.g. {option} {'1e-4 3e-4 1e-3' if option == '--lrs' else '0.8 1.0'}")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} must be at least 1", "e.g. --jobs 2")
    work = absolute(args.work)
    sizes = parse_sizes(args.sizes)
    models = parse_models(args.models)
    task, task_args = task_arguments(args.task, work)
    return Sweep(models, task, task_args, args.lrs, args.layer_decays, sizes, args.sweep_seed,
                 parse_seed_counts(args.seeds, sizes), work, args.jobs, parse_fixed(args.fixed))


def parse_fixed(items: list[str]) -> tuple[str, ...]:
    """--set items checked against the recipe (a typo fails here, not in every run), in one order."""
    from fast_electra_ds.finetune.recipes import RECIPES, apply_overrides, parse_overrides

    settings = parse_overrides(items)
    if swept_keys := sorted({"lr", "layer_decay"} & set(settings)):
        raise UserError(f"--set {' '.join(swept_keys)}: the sweep's own axes", "give them with --lrs and --layer-decays")
    apply_overrides(RECIPES["small"], settings)
    if bad := [f"{key}={value}" for key, value in settings.items() if not NAME.fullmatch(f"{key}{value}".replace("=", ""))]:
        raise UserError(f"--set {bad[0]} cannot be part of a file name", "use letters, digits, '.', '_' or '-' in values")
    return tuple(f"{key}={value}" for key, value in sorted(settings.items()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    stages.SPEAKER = "finetune-sweep"
    sweep = make_sweep(args)
    out = Path(args.out) if args.out else sweep.work / "finetune_sweep.md"
    if out.suffix != ".md":
        raise UserError(f"--out {out} is not a .md path", "e.g. --out benchmarks/results/study/finetune_sweep.md")
    check_records(sweep)
    failed = []
    for size in [] if args.report_only else sweep.sizes:  # a size's table is complete before the next starts
        failed += run_all(sweep, grid_runs(sweep, size))
        failed += run_all(sweep, seed_runs(sweep, size))
    write_report(sweep, out, "python benchmarks/finetune_sweep.py " + shlex.join(argv))
    if failed:
        raise UserError(f"{len(failed)} run(s) failed, the first {failed[0]} (log: {sweep.work / 'logs' / (failed[0] + '.log')})",
                        "fix the cause, then run the same command again: finished runs are kept")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
