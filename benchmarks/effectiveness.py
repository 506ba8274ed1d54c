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
one sequence through the discriminator (encoder + RTD head, forward + backward), each method's FLOPs
being its own `flops_per_sequence` (fast_electra_ds/methods/, counted by accounting/flops.py).
Each method gets round(B / (global batch x F_main(method))) steps, F_main being what its main model
spends per sequence: `mlm` adds its vocabulary head at the masked positions, so it gets fewer steps;
`electra`'s generator and `fast`'s frozen aux forward are NOT in F_main (ELECTRA, Clark et al. 2020,
compares its discriminator at equal pre-training compute to BERT; we hold the main model's compute
equal and report the generator's and the aux's on top, so their extra cost is visible).

Corpus: the shortened English Wikipedia dump in gensim's wheel (`pip install --no-deps gensim`;
data/wiki.py strips the markup) plus the embedded pydoc corpus; `--corpus` replaces the Wikipedia part
with any files `fast-electra prepare` reads (a MediaWiki XML dump is recognised by its content).

Stages are resumable: each writes its outputs under --work and is skipped when they exist (`--fresh`
starts over). Results: effectiveness.{md,json,csv,png} under --work/results, or --out-dir (the study
publishes to benchmarks/results/study/, the one place that claims it).
This file is the command line and the order of the stages; the stages, the budget, the analysis and
the rendering are benchmarks/study/'s modules.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.study.analysis import build_rows, robustness_verdict, summary_schema, unigram_entropy
from benchmarks.study.budget import budget_from_steps, flops_per_sequence, steps_for_budget
from benchmarks.study.finetuning import finetune_all
from benchmarks.study.prepare import prepare_data
from benchmarks.study.pretraining import pretrain, random_init
from benchmarks.study.render import plot_curves, render, render_learning, write_outputs, write_search_record
from benchmarks.study.settings import LR_FACTOR, METHODS, RANDOM_INIT, ROBUSTNESS, ROOT, TASK, TASKS, Settings, pretraining_lr
from benchmarks.study.stages import done, say, stages_wall_time
from fast_electra_ds.errors import UserError, run_guarded


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
    parser.add_argument("--out-dir", default=None, help="where the tables go (default: --work/results)")
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
    out_dir = Path(args.out_dir) if args.out_dir else settings.work / "results"

    corpus, prepared = prepare_data(settings)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.work / "tokenizer")
    vocab_size = len(tokenizer)
    unigram = unigram_entropy(settings)
    per_sequence = flops_per_sequence(settings.run_config(), vocab_size, unigram)
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
