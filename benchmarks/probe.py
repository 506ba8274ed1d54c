"""Linear probe: how much of a task a frozen encoder's features carry, apart from fine-tuning.

For each exported model, the encoder runs once over a task's train and dev sentences (eval mode, no
gradient); the features are the mean of the last hidden states over each sentence's tokens, and a
logistic regression (scikit-learn, standardised features, C chosen on a fixed slice of the train set)
is fit on train and scored on dev. Fine-tuning can fail for reasons of its own (the recipe, the
learning rate); a probe asks only whether pre-training put the task's signal into the features. The
same model at random initialisation is the baseline the features must beat.

    python benchmarks/probe.py --models runs/study/{mlm,electra,fast,random-init}/hf \\
        --task runs/study/glue/SST-2 runs/study/convention --out benchmarks/results/study/probe.md
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fast_electra_ds.errors import UserError, run_guarded  # noqa: E402

C_GRID = (0.01, 0.1, 1.0, 10.0)
VALIDATION_FRACTION = 0.2  # of the train set, to choose C; the probe is then refit on all of train


def read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or "sentence" not in rows[0] or "label" not in rows[0]:
        raise UserError(f"{path} has no sentence/label columns", "give a task directory in SST-2 layout (train.tsv, dev.tsv)")
    return [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])


def load_encoder(model_dir: Path):
    from transformers import AutoModel, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not an exported model (no config.json)", "pass the hf/ directory of a run")
    # the base encoder; pre-training heads are dropped
    return AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()


@torch.no_grad()
def features(tokenizer, encoder, sentences: list[str], max_len: int = 128, batch: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(sentences), batch):
        encoded = tokenizer(sentences[start:start + batch], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        hidden = encoder(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
    return np.concatenate(out)


def probe(train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    order = np.random.default_rng(0).permutation(len(train_y))
    held = order[: int(len(order) * VALIDATION_FRACTION)]
    fit = order[len(held):]

    def classifier(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    scores = {c: classifier(c).fit(train_x[fit], train_y[fit]).score(train_x[held], train_y[held]) for c in C_GRID}
    best = max(scores, key=scores.get)
    final = classifier(best).fit(train_x, train_y)
    return {"dev_accuracy": float(final.score(dev_x, dev_y)), "c": best, "train_accuracy": float(final.score(train_x, train_y))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="exported model directories")
    parser.add_argument("--task", nargs="+", required=True, help="task directories with train.tsv and dev.tsv (sentence, label)")
    parser.add_argument("--out", help="markdown table to write (and a .json beside it)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    tasks = {Path(d).name: (read_tsv(Path(d) / "train.tsv"), read_tsv(Path(d) / "dev.tsv")) for d in args.task}
    results: dict[str, dict[str, dict]] = {task: {} for task in tasks}
    for model_dir in map(Path, args.models):
        tokenizer, encoder = load_encoder(model_dir)  # once per model, for every task
        name = model_dir.parent.name if model_dir.name == "hf" else model_dir.name
        for task, ((train_sentences, train_y), (dev_sentences, dev_y)) in tasks.items():
            majority = float(max(np.mean(dev_y == label) for label in np.unique(train_y)))
            result = probe(features(tokenizer, encoder, train_sentences), train_y, features(tokenizer, encoder, dev_sentences), dev_y)
            results[task][name] = result | {"majority_baseline": majority}
            print(f"{task} {name}: probe dev accuracy {result['dev_accuracy']:.4f} (C {result['c']}, "
                  f"train {result['train_accuracy']:.4f}; majority {majority:.4f})", flush=True)
    if args.out:
        command = "python benchmarks/probe.py " + " ".join(sys.argv[1:] if argv is None else argv)
        lines = ["Linear probe (frozen encoder, mean-pooled last hidden states, logistic regression)", "", f"Command: `{command}`", "",
                 "| task | model | probe dev accuracy | probe train accuracy | C | dev majority |", "|---|---|---|---|---|---|"]
        for task, by_model in results.items():
            for name, r in by_model.items():
                lines.append(f"| {task} | {name} | {r['dev_accuracy']:.4f} | {r['train_accuracy']:.4f} | {r['c']} | {r['majority_baseline']:.4f} |")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
