"""The fine-tuning stages: every pre-trained model (and random-init) on each task and seed, one
`fast-electra finetune` process each, `settings.jobs` at a time; the task files they read."""
from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .settings import TASK, Settings
from .stages import done_before, finish, say, stream


def glue_dir(settings: Settings) -> Path:
    return rotten_tomatoes_glue(settings.work)


def rotten_tomatoes_glue(work: Path) -> Path:
    """Rotten Tomatoes critic snippets in SST-2 layout (fast_electra_ds.finetune.rotten_tomatoes) as
    work/glue/SST-2, written once (the split is deterministic); returns work/glue."""
    from fast_electra_ds.finetune.rotten_tomatoes import write_sst2

    out = work / "glue"
    if not (out / "SST-2" / "dev.tsv").is_file():
        write_sst2(out)
    return out


def convention_task(settings: Settings) -> Path:
    """Party of 2012 US convention speech paragraphs (fast_electra_ds.finetune.convention)."""
    from fast_electra_ds.finetune.convention import write_task

    out = settings.work / "convention"
    if not (out / "convention.yaml").is_file():
        write_task(out)
    return out / "convention.yaml"


def accuracy_of(record: dict) -> str:
    return f"accuracy {record['accuracy']:.4f}"


def finetune(settings: Settings, name: str, model_dir: str, task: str, seed: int) -> dict | None:
    """One fine-tuning run of the study (one model, one task, one seed) as a resumable stage."""
    stage = f"finetune-{name}-seed{seed}" if task == TASK else f"finetune-{task}-{name}-seed{seed}"
    if record := done_before(settings.work, stage, accuracy_of):
        return record
    if settings.report_only:
        return None
    task_args = ["--task", TASK, "--data", str(glue_dir(settings))] if task == TASK else ["--task", str(convention_task(settings))]
    return finetune_run(settings.work, stage, settings.work / "finetune" / name / f"seed{seed}", model_dir, task, task_args, seed,
                        recipe=settings.recipe, overrides=settings.finetune_overrides,
                        train_limit=settings.finetune_train_limit, about={"model": name})


def finetune_run(work: Path, stage: str, out: Path, model_dir: str, task: str, task_args: list[str], seed: int, *,
                 recipe: str = "auto", overrides: list[str] | None = None, train_limit: int | None = None,
                 about: dict | None = None) -> dict:
    """Run `fast-electra finetune` for one seed in its own process and record it as `stage` under `work`
    (`about` first in the record). One thread like each pre-training rank (measured: with 2 OpenMP
    threads on 2 busy cores a step took 5.3 s instead of 0.7 s, the threads waiting on each other;
    OMP_NUM_THREADS from the environment wins). `task` is the name its summary is filed under."""
    command = [sys.executable, "-m", "fast_electra_ds.cli", "finetune", "--model", str(model_dir), *task_args,
               "--out", str(out), "--seeds", str(seed), "--recipe", recipe, "--no-progress"]
    if overrides:
        command += ["--set", *overrides]
    if train_limit:  # a fixed random subset, the same for every model and seed (finetune/runner.py SUBSET_SEED)
        command += ["--max-train-examples", str(train_limit)]
    say(f"{stage} (log: {work / 'logs' / (stage + '.log')})")
    started = time.time()
    shutil.rmtree(out / task, ignore_errors=True)
    stream(command, work / "logs" / f"{stage}.log", lambda line: line.startswith(f"{task} seed") and "accuracy" in line)
    summary = json.loads((out / task / "summary.json").read_text())
    return finish(work, stage, {**(about or {}), "task": task, "seed": seed, "accuracy": summary["per_seed"][str(seed)]["accuracy"],
                                "majority_baseline": summary.get("majority_baseline"), "summary": summary,
                                "wall_time_s": time.time() - started})


def finetune_all(settings: Settings, pre: dict[str, dict]) -> dict[str, dict[str, list[dict]]]:
    """Every model on every task and seed, `settings.jobs` runs at a time (each run is one thread, so
    2 jobs fill 2 cores). Seed-major order: every model's seed 1 on each task, then seed 2, ...; a run
    cut short still compares all models."""
    # The task files once, before runs in parallel could race to write them.
    if TASK in settings.tasks and not settings.report_only:
        glue_dir(settings)
    if "convention" in settings.tasks and not settings.report_only:
        convention_task(settings)
    runs = [(task, name, seed) for seed in settings.seeds for task in settings.tasks for name in pre]
    with ThreadPoolExecutor(max_workers=settings.jobs) as pool:
        results = list(pool.map(lambda run: finetune(settings, run[1], pre[run[1]]["hf"], run[0], run[2]), runs))
    fine: dict[str, dict[str, list[dict]]] = {task: {name: [] for name in pre} for task in settings.tasks}
    for (task, name, _), result in zip(runs, results):
        if result is not None:
            fine[task][name].append(result)
    return fine
