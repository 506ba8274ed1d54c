"""`fast-electra finetune`: fine-tune a model directory on GLUE-layout or custom tasks."""
from __future__ import annotations

import argparse

from ..errors import writing_to
from .recipes import Recipe
from .tasks import GLUE_TASKS

EPILOG = f"""tasks: {', '.join(GLUE_TASKS)} (files under --data GLUE_DIR/<Task>/ in the official GLUE layout),
or a custom task file (.yaml/.json) naming its TSV files, columns, labels and metric:
  name: reviews
  train: train.tsv          # relative to the task file
  dev: dev.tsv
  text_a: sentence          # text_b: second column for sentence pairs
  label: label
  labels: [negative, positive]   # or: regression
  metric: accuracy          # or a list: accuracy, f1, mcc, pearson, spearman (first = main)
  header: true              # false: no header row, columns are 0-based numbers
  test: test.tsv            # optional: predicted into OUT/<task>/seed_<s>/<name>.tsv

Test files present under GLUE_DIR/<Task>/ (test.tsv; MNLI test_matched.tsv, test_mismatched.tsv) are
predicted per seed into GLUE's submission files (OUT/<task>/seed_<s>/CoLA.tsv, SST-2.tsv, ..., MNLI-m.tsv).

--set keys: {', '.join(Recipe.__dataclass_fields__)}
"""


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fast-electra finetune", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune an exported model (or any local Hugging Face encoder) over several seeds "
                    "and report the median dev score per task, as the ELECTRA papers do.")
    parser.add_argument("--model", required=True, metavar="DIR", help="model directory with its tokenizer (fast-electra export)")
    parser.add_argument("--task", "--tasks", dest="tasks", nargs="+", required=True, metavar="TASK",
                        help="GLUE task name(s) or custom task file(s)")
    parser.add_argument("--data", metavar="GLUE_DIR", help="GLUE_DIR holding <Task>/train.tsv, dev.tsv (GLUE tasks)")
    parser.add_argument("--out", required=True, metavar="OUT", help="writes OUT/<task>/summary.json and summary.md")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="one run per seed (default 1 2 3)")
    parser.add_argument("--recipe", default="auto", choices=["auto", "small", "base", "large"],
                        help="ELECTRA's hyper-parameters per size; auto picks by hidden size")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override recipe keys, e.g. --set lr=1e-4 epochs=3")
    parser.add_argument("--max-train-examples", type=int, help="use a fixed random subset of the training set")
    parser.add_argument("--max-dev-examples", type=int, help="use a fixed random subset of each dev set")
    parser.add_argument("--save-model", choices=["none", "last", "best"], default="none",
                        help="keep each seed's fine-tuned model in OUT/<task>/seed_<s>/model: the last, or the epoch "
                             "with the best dev main metric (the reported scores stay the end of training's)")
    parser.add_argument("--init", choices=["pretrained", "random"], default="pretrained",
                        help="random: the model's architecture at random initialisation (the no-pre-training baseline)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from .runner import run, run_tasks

    kwargs = dict(max_train_examples=args.max_train_examples, max_dev_examples=args.max_dev_examples,
                  progress=not args.no_progress, save=args.save_model, init=args.init)
    with writing_to(args.out):
        if len(args.tasks) == 1:
            summary = run(args.model, args.tasks[0], args.data, args.out, args.seeds, args.recipe, args.overrides, **kwargs)
            print(f"{summary['task']}: {summary['metric']} median {summary['main_median']:.4f} over seeds {summary['seeds']} "
                  f"(majority baseline {summary['majority_baseline']:.4f}); {args.out}/{summary['task']}/summary.md")
        else:
            combined = run_tasks(args.model, args.tasks, args.data, args.out, args.seeds, args.recipe, args.overrides, **kwargs)
            print(f"average {combined['average']:.4f} (GLUE convention {combined['glue_average']:.4f}) "
                  f"over {', '.join(combined['tasks'])}; {args.out}/summary.md")
    return 0
