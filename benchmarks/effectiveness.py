"""Is Fast-ELECTRA "as effective"? A small-scale version of the seed papers' comparison on this machine.

The same main model is pre-trained with `mlm`, `electra` and `fast` (its auxiliary masked-LM trained
once with `aux-mlm`, its cost reported on its own row) at an EQUAL budget of main-model training
FLOPs, through the real pipeline (tokenizer -> token shards -> `deepspeed train.py` on CPU ranks ->
export). Each export, plus the same model at random initialisation, is then fine-tuned on the
Rotten Tomatoes critic snippets (SST-2 layout, `fast_electra_ds.finetune`) over several seeds; the
table reports dev accuracy (median and spread as the papers report GLUE), the pre-training FLOPs of
each part and the measured wall time.

    python benchmarks/effectiveness.py                 # the default: 1.5-2 hours on 2 CPU cores (--seeds 1: about 75 min)
    python benchmarks/effectiveness.py --quick         # smoke run, a few minutes (writes only under --work)
    python benchmarks/effectiveness.py --preset small --main-steps 20000 --seeds 1 2 3 4 5 --ranks 8 \
        --corpus enwiki-pages-articles.xml.bz2 more.txt --set data.seq_len=128

Equal budget: the budget is B = main_steps x global batch x F_rtd, where F_rtd is the training FLOPs of
one sequence through the discriminator (encoder + RTD head, forward + backward; accounting/flops.py).
Each method gets round(B / (global batch x F_main(method))) steps, F_main being what its main model
spends per sequence: `mlm` adds its vocabulary head at the masked positions, so it gets fewer steps;
`electra`'s generator and `fast`'s frozen aux forward are NOT in F_main (ELECTRA, Clark et al. 2020,
compares its discriminator at equal pre-training compute to BERT; we hold the main model's compute
equal and report the generator's and the aux's on top, so their extra cost is visible).

Corpus: the shortened English Wikipedia dump in gensim's wheel (`pip install --no-deps gensim`;
data/wiki.py strips the markup) plus the embedded pydoc corpus; `--corpus` replaces the Wikipedia part
with any files `fast-electra prepare` reads (a MediaWiki XML dump is recognised by its content).

Stages are resumable: each writes its outputs under --work and is skipped when they exist (`--fresh`
starts over). Results: benchmarks/results/effectiveness.{md,json,csv,png} via publish().
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, publish, pyplot
from fast_electra_ds.accounting.flops import encoder_forward_flops, mlm_head_flops, rtd_head_flops, training_flops
from fast_electra_ds.config.run_config import RunConfig, load_config
from fast_electra_ds.errors import UserError, run_guarded
from fast_electra_ds.metrics.learning import CONTEXT_GAIN_LEARNED  # the bar for "learned context"
from fast_electra_ds.metrics.logger import read_metrics
from fast_electra_ds.runtime.launch import launch_env, train_command
from fast_electra_ds.models.encoder import electra_config, scaled_sizes

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("mlm", "electra", "fast")
RANDOM_INIT = "random-init"  # the no-pre-training baseline: the same main model, untrained
TASK = "sst2"  # Rotten Tomatoes in SST-2's layout
TASKS = (TASK, "convention")  # and the party of 2012 convention speech paragraphs (finetune/convention.py)
ROBUSTNESS = ("electra", "fast")  # also pre-trained at LR_FACTOR x the peak learning rate
LR_FACTOR = 3.0


# --- FLOPs and the equal budget ---------------------------------------------------------------------

def flops_per_sequence(config: RunConfig, vocab_size: int) -> dict[str, dict[str, float]]:
    """Training FLOPs of one sequence per method, split into the main model's ("main") and the rest
    ("other": electra's generator, trained; fast's frozen aux, forward only), and of the stage-1
    aux-mlm ("aux-mlm": its main is the aux being trained). Same terms as each method's
    flops_per_sequence (methods/*.py), with the aux of `fast` sized by aux.*_fraction as aux-mlm trains it."""
    s = config.data.seq_len
    masked = s * config.masking.mask_prob
    sizes = config.model.sizes()
    main = electra_config(sizes, config.model, vocab_size, 0)
    generator = electra_config(scaled_sizes(sizes, config.generator.depth_fraction, config.generator.hidden_fraction),
                               config.model, vocab_size, 0)
    aux = electra_config(scaled_sizes(sizes, config.aux.depth_fraction, config.aux.hidden_fraction), config.model, vocab_size, 0)
    rtd_main = training_flops(encoder_forward_flops(main, s) + rtd_head_flops(main, s))
    aux_forward = encoder_forward_flops(aux, s) + mlm_head_flops(aux, masked)
    return {
        "mlm": {"main": training_flops(encoder_forward_flops(main, s) + mlm_head_flops(main, masked)), "other": 0.0},
        "electra": {"main": rtd_main, "other": training_flops(encoder_forward_flops(generator, s) + mlm_head_flops(generator, masked))},
        "fast": {"main": rtd_main, "other": aux_forward},
        "aux-mlm": {"main": training_flops(aux_forward), "other": 0.0},
    }


def budget_from_steps(main_steps: int, global_batch: int, per_sequence: dict[str, dict[str, float]]) -> float:
    """The main-model FLOPs budget: `main_steps` steps of the discriminator (electra's and fast's main
    model cost the same per sequence)."""
    return main_steps * global_batch * per_sequence["electra"]["main"]


def steps_for_budget(budget: float, global_batch: int, main_flops_per_sequence: float) -> int:
    """Optimizer steps that spend `budget` main-model FLOPs (at least one)."""
    if budget <= 0 or global_batch <= 0 or main_flops_per_sequence <= 0:
        raise UserError(f"cannot split a budget of {budget:g} FLOPs into steps of {global_batch} sequences",
                        "give a positive --budget or --main-steps and a positive --micro-batch")
    return max(1, round(budget / (global_batch * main_flops_per_sequence)))


# --- corpus -----------------------------------------------------------------------------------------

def assemble_corpus(out_dir: Path, sources: list[str] | None, pydoc: bool = True) -> dict[str, Any]:
    """The pre-training text files: each source (default: gensim's shortened Wikipedia dump) as
    blank-line-separated documents (a MediaWiki dump is stripped into wiki.txt-style files, other
    files are used as they are), plus the embedded pydoc corpus. Returns the files and their counts."""
    from fast_electra_ds.data.text import iter_documents, write_pydoc_corpus
    from fast_electra_ds.data.wiki import is_wiki_dump, wiki_test_dump, write_wiki_corpus

    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, source in enumerate(sources if sources else [str(wiki_test_dump())]):
        path = Path(source)
        if not path.is_file():
            raise UserError(f"corpus file {path} does not exist", "pass existing text, JSON lines or MediaWiki XML files to --corpus")
        if is_wiki_dump(path):
            text_file = out_dir / f"wiki{index}.txt"
            stats = write_wiki_corpus(path, text_file)
            parts.append({"source": str(path), "file": str(text_file), "documents": stats["documents"], "words": stats["words"],
                          "pages": stats["pages"], "redirects": stats["redirects"], "too_short": stats["too_short"]})
        else:
            documents = list(iter_documents(path))
            parts.append({"source": str(path), "file": str(path), "documents": len(documents),
                          "words": sum(len(d.split()) for d in documents)})
    if pydoc:
        text_file = out_dir / "pydoc.txt"
        write_pydoc_corpus(text_file)
        documents = list(iter_documents(text_file))
        parts.append({"source": "pydoc_data.topics (embedded)", "file": str(text_file), "documents": len(documents),
                      "words": sum(len(d.split()) for d in documents)})
    return {"parts": parts, "files": [p["file"] for p in parts],
            "documents": sum(p["documents"] for p in parts), "words": sum(p["words"] for p in parts)}


# --- stages -----------------------------------------------------------------------------------------

@dataclass
class Settings:
    work: Path
    preset: str
    overrides: list[str]
    ranks: int
    micro_batch: int
    vocab_size: int
    aux_steps: int
    main_steps: int
    budget: float | None
    methods: list[str]
    seeds: list[int]
    corpus: list[str] | None
    pydoc: bool
    recipe: str
    finetune_overrides: list[str]
    finetune_train_limit: int | None
    lr: float | None = None  # peak pre-training learning rate; None: ds_configs/zero3.json's
    evaluations: int = 12  # validations (and checkpoints) per pre-training run: the curves
    tasks: tuple[str, ...] = TASKS
    robustness: bool = False  # also electra and fast at LR_FACTOR x the peak lr
    report_only: bool = False  # build the table from the finished stages, run nothing
    jobs: int = 1  # fine-tuning runs at once
    precision: str = "bf16"  # of the pre-training runs' DeepSpeed engine (and the frozen aux): bf16 or fp32

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.ranks

    def run_config(self, extra: list[str] | None = None) -> RunConfig:
        return load_config([str(preset_path(self.preset))], self.overrides + (extra or []))


def preset_path(preset: str) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"config file {path} not found", "pass --preset with a name in configs/ or a YAML path")
        return path
    path = ROOT / "configs" / f"{preset}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
        raise UserError(f"unknown preset {preset!r}", f"use one of {names} or a YAML path")
    return path


def say(text: str) -> None:
    print(f"[effectiveness {time.strftime('%H:%M:%S')}] {text}", flush=True)


def record_path(work: Path, stage: str) -> Path:
    return work / "stages" / f"{stage}.json"


def done(work: Path, stage: str) -> dict | None:
    path = record_path(work, stage)
    return json.loads(path.read_text()) if path.is_file() else None


def finish(work: Path, stage: str, record: dict) -> dict:
    path = record_path(work, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def stream(command: list[str], log: Path, show) -> None:
    """Run `command`, writing everything to `log` and echoing the lines `show(line)` accepts."""
    env = launch_env(cpu=True, keep_set=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            out.write(line)
            if show(line):
                print("    " + line.rstrip()[:160], flush=True)
        code = process.wait()
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise UserError(f"{' '.join(command[:4])} ... failed (exit {code}); last lines of {log}:\n{tail}",
                        "fix the cause above, then re-run: finished stages are kept")


def pretrain(settings: Settings, stage: str, method: str, steps: int, extra: list[str], lr_factor: float = 1.0) -> dict | None:
    """One `deepspeed train.py` run on CPU ranks, exported to <work>/<stage>/hf; `lr_factor` scales
    the peak learning rate (the robustness runs)."""
    out = settings.work / stage
    if record := done(settings.work, stage):
        say(f"{stage}: done before ({record['steps']} steps, {record['wall_time_s']:.0f} s), skipped")
        return record
    if settings.report_only:
        return None
    from fast_electra_ds.checkpointing import checkpoint_root, complete_checkpoints

    # A stage cut short (a session's end) continues from its last checkpoint; its wall time adds up.
    resume = out.is_dir() and bool(complete_checkpoints(checkpoint_root(out)))
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    ds_config = write_ds_config(settings, lr_factor)
    overrides = settings.overrides + [f"method={method}", f"train.steps={steps}", f"train.out_dir={out}",
                                      f"data.path={settings.work / 'data'}", f"data.tokenizer={settings.work / 'tokenizer'}",
                                      f"train.log_every={max(1, steps // 100)}", f"train.eval_every={max(1, steps // settings.evaluations)}",
                                      f"train.save_every={max(1, steps // settings.evaluations)}", "train.keep_last=1",
                                      "train.progress=lines", f"aux.dtype={settings.precision}", *extra]
    command = train_command(["--ds_config", str(ds_config), "--config", str(preset_path(settings.preset)), *overrides,
                             *(["--resume"] if resume else [])], settings.ranks, launcher=True)
    say(f"{stage}: {method}, {steps} steps on {settings.ranks} ranks{' (resumed)' if resume else ''} (log: {settings.work / 'logs' / (stage + '.log')})")
    started = time.time()
    partial_wall = out / "stage_wall_time.json"
    earlier = json.loads(partial_wall.read_text())["wall_time_s"] if partial_wall.is_file() else 0.0
    log = settings.work / "logs" / f"{stage}{'-resumed' if resume else ''}.log"

    def save_wall_time() -> None:
        partial_wall.parent.mkdir(parents=True, exist_ok=True)
        partial_wall.write_text(json.dumps({"wall_time_s": earlier + time.time() - started}))

    def show(line: str) -> bool:
        if "[fast-electra] step=" in line:
            save_wall_time()  # at every logged step: a run killed with its session keeps its wall time up to there
            return True
        return "[fast-electra] method" in line

    try:
        stream(command, log, show)
    finally:
        save_wall_time()
    wall = earlier + time.time() - started
    metrics = read_metrics(out / "metrics.jsonl")
    validated = [r for r in metrics if any(k.startswith("val_") for k in r)]
    return finish(settings.work, stage, {"method": method, "steps": steps, "wall_time_s": wall, "hf": str(out / "hf"),
                                         "first": metrics[0], "last": metrics[-1], "last_validation": validated[-1] if validated else None})


def write_ds_config(settings: Settings, lr_factor: float = 1.0) -> Path:
    """The project's ZeRO-3 JSON with this benchmark's micro-batch (the JSON owns batch sizes) and
    peak learning rate (times `lr_factor`)."""
    config = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    config["train_micro_batch_size_per_gpu"] = settings.micro_batch
    config.pop("train_batch_size", None)
    config["optimizer"]["params"]["lr"] = pretraining_lr(settings) * lr_factor
    config["scheduler"]["params"]["warmup_max_lr"] = "auto"  # the optimizer's lr (ds_config.py)
    config["bf16"] = {"enabled": settings.precision == "bf16"}
    name = "ds_config" + ("" if lr_factor == 1.0 else f"_lr{lr_factor:g}x") + ("" if settings.precision == "bf16" else f"_{settings.precision}")
    path = settings.work / f"{name}.json"
    path.write_text(json.dumps(config, indent=1) + "\n")
    return path


def pretraining_lr(settings: Settings) -> float:
    return settings.lr if settings.lr is not None else json.loads((ROOT / "ds_configs" / "zero3.json").read_text())["optimizer"]["params"]["lr"]


def random_init(settings: Settings, vocab_size: int, pad_id: int) -> dict | None:
    """The no-pre-training baseline: the main model's config at random initialisation, with the tokenizer."""
    if record := done(settings.work, RANDOM_INIT):
        return record
    if settings.report_only:
        return None
    import torch
    from transformers import AutoTokenizer, ElectraForPreTraining

    config = settings.run_config()
    torch.manual_seed(config.train.seed)
    model = ElectraForPreTraining(electra_config(config.model.sizes(), config.model, vocab_size, pad_id))
    out = settings.work / RANDOM_INIT / "hf"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(settings.work / "tokenizer").save_pretrained(out)
    return finish(settings.work, RANDOM_INIT, {"method": RANDOM_INIT, "steps": 0, "wall_time_s": 0.0, "hf": str(out)})


def glue_dir(settings: Settings) -> Path:
    """Rotten Tomatoes critic snippets in SST-2 layout (fast_electra_ds.finetune.rotten_tomatoes)."""
    from fast_electra_ds.finetune.rotten_tomatoes import write_sst2

    out = settings.work / "glue"
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


def finetune(settings: Settings, name: str, model_dir: str, task: str, seed: int) -> dict | None:
    """One fine-tuning run (one model, one task, one seed): `fast-electra finetune` in its own process, one
    thread like each pre-training rank (measured: with 2 OpenMP threads on 2 busy cores a step took 5.3 s
    instead of 0.7 s, the threads waiting on each other; OMP_NUM_THREADS from the environment wins)."""
    stage = f"finetune-{name}-seed{seed}" if task == TASK else f"finetune-{task}-{name}-seed{seed}"
    if record := done(settings.work, stage):
        say(f"{stage}: done before (accuracy {record['accuracy']:.4f}), skipped")
        return record
    if settings.report_only:
        return None
    out = settings.work / "finetune" / name / f"seed{seed}"
    task_args = ["--task", TASK, "--data", str(glue_dir(settings))] if task == TASK else ["--task", str(convention_task(settings))]
    command = [sys.executable, "-m", "fast_electra_ds.cli", "finetune", "--model", model_dir, *task_args,
               "--out", str(out), "--seeds", str(seed), "--recipe", settings.recipe, "--no-progress"]
    if settings.finetune_overrides:
        command += ["--set", *settings.finetune_overrides]
    if settings.finetune_train_limit:  # the same fixed random subset for every model and seed
        command += ["--max-train-examples", str(settings.finetune_train_limit)]
    say(f"{stage} (log: {settings.work / 'logs' / (stage + '.log')})")
    started = time.time()
    shutil.rmtree(out / task, ignore_errors=True)
    stream(command, settings.work / "logs" / f"{stage}.log", lambda line: line.startswith(f"{task} seed") and "accuracy" in line)
    summary = json.loads((out / task / "summary.json").read_text())
    return finish(settings.work, stage, {"model": name, "task": task, "seed": seed, "accuracy": summary["per_seed"][str(seed)]["accuracy"],
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


# --- the table ----------------------------------------------------------------------------------------

def accuracy_stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values}


def stages_wall_time(work: Path) -> float:
    """The whole pipeline's wall time: the sum of every finished stage's, so a resumed run reports the total."""
    return sum(json.loads(path.read_text()).get("wall_time_s", 0.0) for path in (work / "stages").glob("*.json"))


def build_rows(per_sequence: dict, budget: float, settings: Settings, pre: dict[str, dict], fine: dict[str, dict],
               aux: dict | None) -> list[dict]:
    """One row per pre-trained model (and the random-init baseline): steps, FLOPs, wall time, accuracy."""
    rows = []
    aux_training = aux["steps"] * settings.global_batch * per_sequence["aux-mlm"]["main"] if aux else 0.0
    for name in [*settings.methods, RANDOM_INIT]:
        record = pre.get(name)
        if record is None:
            continue
        steps = record["steps"]
        sequences = steps * settings.global_batch
        main = sequences * per_sequence[name]["main"] if name in per_sequence else 0.0
        other = sequences * per_sequence[name]["other"] if name in per_sequence else 0.0
        row = {"model": name, "steps": steps, "main_tflops": main / 1e12, "other_tflops": other / 1e12,
               "total_tflops": (main + other) / 1e12,
               "total_with_aux_tflops": (main + other + (aux_training if name == "fast" else 0.0)) / 1e12,
               "pretrain_wall_s": record["wall_time_s"], "final_loss": record.get("last", {}).get("loss"),
               # Did the discriminator learn RTD at all? 0 means it still calls every token original.
               "final_rtd_acc_replaced": record.get("last", {}).get("rtd_acc_replaced")}
        validation = record.get("last_validation") or {}
        row.update({key: validation[key] for key in LEARNING_KEYS if key in validation})
        row["tasks"] = {}
        for task, by_model in fine.items():
            runs = by_model.get(name) or []
            if not runs:
                continue
            row["tasks"][task] = accuracy_stats([r["accuracy"] for r in runs]) | {"seeds": len(runs)}
            row["finetune_wall_s"] = row.get("finetune_wall_s", 0.0) + sum(r["wall_time_s"] for r in runs)
            if task == TASK:  # the first task's columns, as before
                row.update({f"acc_{k}": v for k, v in accuracy_stats([r["accuracy"] for r in runs]).items()})
                row["seeds"] = [r["seed"] for r in runs]
        rows.append(row)
    return rows


LEARNING_KEYS = ("val_mlm_loss", "val_mlm_prior_gap", "val_rtd_loss", "val_rtd_auc", "val_rtd_prior_gap", "val_rtd_context_gain")
MLM_GAP_LEARNED = 0.5  # nats below the unigram entropy: the bar for "the masked-LM learned context"


def unigram_entropy(settings: Settings) -> float | None:
    from fast_electra_ds.data.dataset import PackedDataset

    try:
        return PackedDataset(settings.work / "data", 128).unigram_entropy()
    except UserError:
        return None


def run_metrics(settings: Settings, stage: str) -> list[dict]:
    path = settings.work / stage / "metrics.jsonl"
    return read_metrics(path) if path.is_file() else []


def robustness_verdict(high: dict, default: dict | None) -> dict:
    """Did the run at LR_FACTOR x the peak lr diverge (non-finite loss) or stall (no context learned
    where the default-lr run learned some)?"""
    last = high.get("last_validation") or {}
    finite = all(math.isfinite(v) for v in (high.get("last", {}).get("loss", float("nan")), last.get("val_rtd_loss", float("nan"))))
    gain = last.get("val_rtd_context_gain")
    reference = (default or {}).get("last_validation", {}) or {}
    return {"steps": high["steps"], "diverged": not finite, "val_rtd_context_gain": gain, "val_rtd_auc": last.get("val_rtd_auc"),
            "default_lr_val_rtd_context_gain": reference.get("val_rtd_context_gain"),
            "stalled": gain is None or gain < CONTEXT_GAIN_LEARNED}


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


def summary_schema(settings: Settings, rows: list[dict], unigram: float | None, tokens: int, vocab_size: int) -> dict:
    """The machine-readable summary the issue asks for: setting, unigram entropy, per method its
    main-model training TFLOPs, its final validation learning metric and each task's accuracy."""
    config = settings.run_config()
    methods = {}
    for r in rows:
        entry = {"main_train_tflops": r["main_tflops"], "tasks": r.get("tasks", {})}
        for key in ("val_mlm_loss", "val_rtd_context_gain", "val_rtd_auc", "val_rtd_prior_gap", "val_mlm_prior_gap"):
            if key in r:
                entry[key] = r[key]
        methods[r["model"]] = entry
    return {"setting": {"preset": settings.preset, "model": config.model.sizes(), "seq_len": config.data.seq_len,
                        "vocab_size": vocab_size, "global_batch": settings.global_batch, "lr": pretraining_lr(settings),
                        "main_steps": settings.main_steps, "corpus_tokens": tokens, "ranks": settings.ranks,
                        "overrides": settings.overrides},
            "unigram_entropy": unigram, "methods": methods}


def plot_curves(path: Path, settings: Settings, stages: list[str], unigram: float | None) -> bool:
    """Validation curves against main-model training tokens: MLM loss (mlm, the electra generator, the
    aux) beside the unigram entropy, and the RTD context gain / AUC of every discriminator."""
    plt = pyplot()
    if plt is None:
        return False
    tokens_per_step = settings.global_batch * settings.run_config().data.seq_len
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_search_record(path: Path, settings: Settings, stages: list[str], unigram: float | None, command: str) -> str:
    """The setting search: for the setting run, each pre-training run's validation curve (finished or
    still running) and whether it meets the bars -- (a) `mlm`'s validation MLM loss at least
    MLM_GAP_LEARNED below the unigram entropy, (b) `electra`'s validation context gain at least
    CONTEXT_GAIN_LEARNED."""
    tokens_per_step = settings.global_batch * settings.run_config().data.seq_len
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --- main -------------------------------------------------------------------------------------------------

QUICK = dict(preset="tiny", vocab_size=2000, aux_steps=30, main_steps=40, seeds=[1], finetune_train_limit=400,
             finetune_overrides=["epochs=1"], overrides=["data.seq_len=64", "train.seed=1234"], lr=None)
DEFAULT = dict(preset="demo", vocab_size=8000, aux_steps=1000, main_steps=2000, seeds=[1, 2, 3], finetune_train_limit=None,
               finetune_overrides=[], overrides=[], lr=None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[8:12]))
    parser.add_argument("--quick", action="store_true", help="smoke run in a few minutes (tiny model, few steps, one seed); "
                        "results go under --work unless --out-dir is given")
    parser.add_argument("--preset", help=f"configs/<name>.yaml or a YAML path (default {DEFAULT['preset']}; --quick: {QUICK['preset']})")
    parser.add_argument("--set", dest="overrides", nargs="+", default=None, metavar="KEY=VALUE",
                        help="config overrides for every pre-training run, e.g. model.num_hidden_layers=6 data.seq_len=256")
    parser.add_argument("--main-steps", type=int, help=f"steps of the discriminator; sets the budget (default {DEFAULT['main_steps']})")
    parser.add_argument("--budget", type=float, help="main-model training FLOPs per method (overrides --main-steps), e.g. 2e15")
    parser.add_argument("--aux-steps", type=int, help=f"steps of the stage-1 aux-mlm (default {DEFAULT['aux_steps']})")
    parser.add_argument("--vocab-size", type=int, help=f"sentencepiece vocabulary (default {DEFAULT['vocab_size']})")
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per rank and step (default 8)")
    parser.add_argument("--lr", type=float, help=f"peak pre-training learning rate (default {DEFAULT['lr'] or 'that of ds_configs/zero3.json'})")
    parser.add_argument("--ranks", type=int, default=2, help="CPU ranks (deepspeed --num_gpus; default 2)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, help="fine-tuning seeds (default 1 2 3)")
    parser.add_argument("--corpus", nargs="+", metavar="FILE", help="pre-training text instead of gensim's Wikipedia dump "
                        "(MediaWiki XML dumps, text, JSON lines; .bz2/.gz)")
    parser.add_argument("--no-pydoc", dest="pydoc", action="store_false", help="leave out the embedded pydoc corpus")
    parser.add_argument("--recipe", default="auto", help="fine-tuning recipe: auto, small, base, large")
    parser.add_argument("--finetune-set", nargs="+", default=None, metavar="KEY=VALUE", help="fine-tuning overrides (lr, epochs, batch_size, ...)")
    parser.add_argument("--finetune-train-limit", type=int, help="fine-tune on a fixed random N training rows only")
    parser.add_argument("--work", default=None, help="stage outputs (default runs/effectiveness, --quick: runs/effectiveness-quick)")
    parser.add_argument("--out-dir", default=None, help=f"where the tables go (default {RESULTS})")
    parser.add_argument("--fresh", action="store_true", help="delete --work first and redo every stage")
    parser.add_argument("--report-only", action="store_true", help="only build the table from the stages finished so far")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="fine-tuning tasks (default: both)")
    parser.add_argument("--robustness", action="store_true", help=f"also pre-train {' and '.join(ROBUSTNESS)} at {LR_FACTOR:g}x the peak lr")
    parser.add_argument("--evaluations", type=int, default=12, help="validations (and checkpoints) per pre-training run (default 12)")
    parser.add_argument("--jobs", type=int, default=1, help="fine-tuning runs at once, one thread each (default 1; "
                        "2 fills 2 cores)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="pre-training precision (default bf16; "
                        "fp32 where the CPU has no native bf16: emulated bf16 ran 4x slower than fp32 on an AVX2-only CPU)")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def make_settings(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else DEFAULT
    pick = lambda value, key: base[key] if value is None else value
    work = Path(args.work or ("runs/effectiveness-quick" if args.quick else "runs/effectiveness"))
    if not work.is_absolute():
        work = ROOT / work
    for name, value in [("--micro-batch", args.micro_batch), ("--ranks", args.ranks), ("--jobs", args.jobs)]:
        if value < 1:
            raise UserError(f"{name} is {value}", f"give a positive {name}")
    return Settings(work=work, preset=pick(args.preset, "preset"), overrides=pick(args.overrides, "overrides"), ranks=args.ranks,
                    micro_batch=args.micro_batch, vocab_size=pick(args.vocab_size, "vocab_size"),
                    aux_steps=pick(args.aux_steps, "aux_steps"), main_steps=pick(args.main_steps, "main_steps"),
                    budget=args.budget, methods=args.methods, seeds=pick(args.seeds, "seeds"), corpus=args.corpus,
                    pydoc=args.pydoc, recipe=args.recipe, finetune_overrides=pick(args.finetune_set, "finetune_overrides"),
                    finetune_train_limit=pick(args.finetune_train_limit, "finetune_train_limit"), lr=pick(args.lr, "lr"),
                    report_only=args.report_only, tasks=tuple(args.tasks), robustness=args.robustness, evaluations=args.evaluations, jobs=args.jobs,
                    precision=args.precision)


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    started = time.time()
    settings = make_settings(args)
    settings.run_config()  # bad presets and override keys fail before any work
    if args.fresh:
        shutil.rmtree(settings.work, ignore_errors=True)
    if settings.report_only and done(settings.work, "prepare") is None:
        raise UserError(f"no finished stages in {settings.work}", "run without --report-only first (or pass its --work)")
    settings.work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir) if args.out_dir else (settings.work / "results" if args.quick else RESULTS)

    corpus = done(settings.work, "corpus")
    if corpus is None:
        say("corpus: Wikipedia articles + pydoc")
        begun = time.time()
        corpus = assemble_corpus(settings.work / "corpus", settings.corpus, settings.pydoc)
        corpus = finish(settings.work, "corpus", {**corpus, "wall_time_s": time.time() - begun})
    say(f"corpus: {corpus['documents']} documents, {corpus['words']:,} words")
    if done(settings.work, "tokenizer") is None:
        from fast_electra_ds.data.tokenizer import train_tokenizer

        say(f"tokenizer: sentencepiece unigram, {settings.vocab_size} pieces")
        begun = time.time()
        train_tokenizer(corpus["files"], settings.work / "tokenizer", vocab_size=settings.vocab_size)
        finish(settings.work, "tokenizer", {"vocab_size": settings.vocab_size, "wall_time_s": time.time() - begun})
    prepared = done(settings.work, "prepare")
    if prepared is None:
        from fast_electra_ds.data.prepare import prepare

        say("prepare: token shards")
        meta = prepare(corpus["files"], settings.work / "tokenizer", settings.work / "data", workers=min(2, os.cpu_count() or 1), overwrite=True)
        prepared = finish(settings.work, "prepare", {"num_tokens": meta["num_tokens"], "num_documents": meta["num_documents"],
                                                     "wall_time_s": meta["seconds"]})
    say(f"prepared: {prepared['num_tokens']:,} tokens")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.work / "tokenizer")
    vocab_size = len(tokenizer)
    per_sequence = flops_per_sequence(settings.run_config(), vocab_size)
    budget = settings.budget if settings.budget else budget_from_steps(settings.main_steps, settings.global_batch, per_sequence)
    steps = {m: steps_for_budget(budget, settings.global_batch, per_sequence[m]["main"]) for m in settings.methods}
    say(f"budget {budget / 1e12:.2f} TFLOPs of main-model training each: " + ", ".join(f"{m} {s} steps" for m, s in steps.items()))
    pre: dict[str, dict] = {}
    aux = None
    for method in settings.methods:
        extra = []
        if method == "fast":  # its auxiliary model first (stage 1, once), right before it is needed
            aux = pretrain(settings, "aux", "aux-mlm", settings.aux_steps, [])
            extra = [f"aux.path={settings.work / 'aux' / 'hf'}"]
        pre[method] = pretrain(settings, method, method, steps[method], extra)
    pre[RANDOM_INIT] = random_init(settings, vocab_size, tokenizer.pad_token_id or 0)
    pre = {name: record for name, record in pre.items() if record is not None}  # --report-only: the finished ones

    fine = finetune_all(settings, pre)
    majority = {task: next((r["majority_baseline"] for runs in fine[task].values() for r in runs), None) for task in settings.tasks}

    # Fast-ELECTRA's robustness claim: electra and fast again at LR_FACTOR x the peak learning rate.
    robustness = {}
    if settings.robustness:
        for method in [m for m in ROBUSTNESS if m in settings.methods]:
            extra = [f"aux.path={settings.work / 'aux' / 'hf'}"] if method == "fast" else []
            if (record := pretrain(settings, f"{method}-lr{LR_FACTOR:g}x", method, steps[method], extra, lr_factor=LR_FACTOR)) is not None:
                robustness[method] = record

    rows = build_rows(per_sequence, budget, settings, pre, fine, aux)
    wall = stages_wall_time(settings.work)
    command = "python benchmarks/effectiveness.py" + (" " + " ".join(argv) if argv else "")
    text = render(rows, aux, per_sequence, budget, settings, corpus, majority.get(TASK), prepared["num_tokens"], wall, command)
    text += "\n" + render_learning(rows, aux, robustness, pre, settings, majority)
    unigram = unigram_entropy(settings)
    results = {"command": command, "wall_time_s": wall, "budget_flops": budget, "flops_per_sequence": per_sequence,
               "global_batch": settings.global_batch, "lr": pretraining_lr(settings), "ranks": settings.ranks, "preset": settings.preset,
               "overrides": settings.overrides, "vocab_size": vocab_size, "corpus": corpus, "tokens": prepared["num_tokens"],
               "aux": aux, "rows": rows, "majority_baseline": majority.get(TASK), "majority_baselines": majority, "seeds": settings.seeds,
               "finetune_overrides": settings.finetune_overrides, "finetune_train_limit": settings.finetune_train_limit,
               "robustness": {m: robustness_verdict(r, pre.get(m)) for m, r in robustness.items()},
               **summary_schema(settings, rows, unigram, prepared["num_tokens"], vocab_size)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(out_dir, rows, results, text, args.quiet)
    all_stages = [*settings.methods, *(f"{m}-lr{LR_FACTOR:g}x" for m in ROBUSTNESS if settings.robustness and m in settings.methods)]
    plot_curves(out_dir / "effectiveness_curves.png", settings, all_stages, unigram)
    write_search_record(out_dir / "effectiveness_search.md", settings, all_stages, unigram, command)
    say(f"done: this session {(time.time() - started) / 60:.1f} min, all stages {wall / 60:.1f} min; results in {out_dir}")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(argv), argv)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
