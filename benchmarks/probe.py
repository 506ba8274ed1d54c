"""Linear probe: how much of a task a frozen encoder's features carry, apart from fine-tuning.

For each exported model, the encoder runs once over a task's train and dev sentences (eval mode, no
gradient); the features are the last hidden states pooled over each sentence's tokens (`mean`) or the
first token's ([CLS], `cls`: what fine-tuning's classifier reads, and what RTD never trains), and a
logistic regression (scikit-learn, standardised features, C chosen on a fixed slice of the train set)
is fit on train and scored on dev. Fine-tuning can fail for reasons of its own (the recipe, the
learning rate); a probe asks only whether pre-training put the task's signal into the features. The
same model at random initialisation is the baseline the features must beat.

Beside the probe, two diagnostics of why a model that probes well can fine-tune badly:
- geometry (`--geometry N`): on N dev sentences, per layer, the mean cosine similarity between different
  inputs' [CLS] states and mean-pooled states, and their spread (mean distance to the inputs' mean
  state over the mean state norm). A top layer that is nearly the same for every input leaves a
  fine-tuned classifier little to start from;
- domain gap (`--corpus-data DIR`, the pre-training shards): the share of the task's pieces that are the
  tokenizer's unknown piece, and KL(task unigram || corpus unigram) in nats over the pieces.

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


POOLINGS = ("mean", "cls")


@torch.no_grad()
def features(tokenizer, encoder, sentences: list[str], max_len: int = 128, batch: int = 64) -> dict[str, np.ndarray]:
    """Pooling name -> [sentences, hidden] features from one pass of the encoder."""
    out: dict[str, list[np.ndarray]] = {pooling: [] for pooling in POOLINGS}
    for start in range(0, len(sentences), batch):
        encoded = tokenizer(sentences[start:start + batch], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        hidden = encoder(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out["mean"].append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
        out["cls"].append(hidden[:, 0].float().numpy())
    return {pooling: np.concatenate(parts) for pooling, parts in out.items()}


@torch.no_grad()
def geometry(tokenizer, encoder, sentences: list[str], max_len: int = 128) -> list[dict[str, float]]:
    """Per layer (0 = the embeddings' output): cosine similarity between different inputs and spread,
    for the first token's state and the mean-pooled state."""
    encoded = tokenizer(sentences, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
    hidden_states = encoder(**encoded, output_hidden_states=True).hidden_states
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    layers = []
    for hidden in hidden_states:
        hidden = hidden.float()
        row = {}
        for pooling, states in (("cls", hidden[:, 0]), ("mean", (hidden * mask).sum(1) / mask.sum(1))):
            unit = torch.nn.functional.normalize(states, dim=-1)
            cosine = unit @ unit.T
            n = len(states)
            row[f"{pooling}_cosine"] = float((cosine.sum() - cosine.diagonal().sum()) / (n * (n - 1)))
            row[f"{pooling}_spread"] = float((states - states.mean(0)).norm(dim=-1).mean() / states.norm(dim=-1).mean())
        layers.append(row)
    return layers


def domain_gap(tokenizer, sentences: list[str], corpus_counts: np.ndarray) -> dict[str, float]:
    """Unknown-piece rate of the task text and KL(task || corpus) over the tokenizer's pieces (the
    corpus counts smoothed by one, so a piece the corpus never had costs a finite amount)."""
    ids = np.concatenate([np.asarray(tokenizer(s, add_special_tokens=False)["input_ids"], dtype=np.int64) for s in sentences])
    vocab = max(len(corpus_counts), int(ids.max()) + 1)
    task = np.bincount(ids, minlength=vocab).astype(np.float64)
    corpus = np.zeros(vocab)
    corpus[:len(corpus_counts)] = corpus_counts
    p, q = task / task.sum(), (corpus + 1) / (corpus + 1).sum()
    seen = p > 0
    unk = tokenizer.unk_token_id
    return {"unknown_rate": float(task[unk] / task.sum()) if unk is not None else 0.0,
            "kl_task_corpus": float((p[seen] * np.log(p[seen] / q[seen])).sum()), "task_tokens": int(task.sum())}


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


def geometry_lines(diagnostics: dict) -> list[str]:
    lines = []
    if any(diagnostics["geometry"].values()):
        lines += ["", f"Geometry of the states on the first {diagnostics['geometry_sentences']} dev sentences of each task: cosine between different inputs (1 = the same direction for every input) and spread (distance to the "
                  "mean state / its norm), at the embeddings' output (layer 0) and the top layer", "",
                  "| task | model | [CLS] cosine top | [CLS] spread top | mean cosine top | mean spread top | [CLS] cosine layer 0 "
                  "| mean cosine layer 0 |", "|---|---|---|---|---|---|---|---|"]
        for task, by_model in diagnostics["geometry"].items():
            for name, layers in by_model.items():
                top, bottom = layers[-1], layers[0]
                lines.append(f"| {task} | {name} | {top['cls_cosine']:.3f} | {top['cls_spread']:.3f} | {top['mean_cosine']:.3f} "
                             f"| {top['mean_spread']:.3f} | {bottom['cls_cosine']:.3f} | {bottom['mean_cosine']:.3f} |")
    if diagnostics["domain_gap"]:
        lines += ["", "Domain gap between the pre-training corpus and each task's text", "",
                  "| task | unknown-piece rate | KL(task ‖ corpus) nats | task pieces |", "|---|---|---|---|"]
        for task, gap in diagnostics["domain_gap"].items():
            lines.append(f"| {task} | {gap['unknown_rate']:.4f} | {gap['kl_task_corpus']:.3f} | {gap['task_tokens']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="exported model directories")
    parser.add_argument("--task", nargs="+", required=True, help="task directories with train.tsv and dev.tsv (sentence, label)")
    parser.add_argument("--out", help="markdown table to write (and a .json beside it)")
    parser.add_argument("--geometry", type=int, default=0, metavar="N", help="also measure the states' geometry on N dev sentences")
    parser.add_argument("--corpus-data", help="the pre-training shards (fast-electra prepare's output): report the domain gap")
    parser.add_argument("--no-probe", dest="probe", action="store_false", help="only the diagnostics (--geometry, --corpus-data)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    tasks = {Path(d).name: (read_tsv(Path(d) / "train.tsv"), read_tsv(Path(d) / "dev.tsv")) for d in args.task}
    results: dict[str, dict[str, dict]] = {task: {} for task in tasks}
    diagnostics: dict = {"geometry": {task: {} for task in tasks}, "geometry_sentences": args.geometry, "domain_gap": {}}
    corpus_counts = None
    if args.corpus_data:
        from fast_electra_ds.data.dataset import PackedDataset

        corpus_counts = PackedDataset(args.corpus_data, 128).token_counts()
    for model_dir in map(Path, args.models):
        tokenizer, encoder = load_encoder(model_dir)  # once per model, for every task
        name = model_dir.parent.name if model_dir.name == "hf" else model_dir.name
        for task, ((train_sentences, train_y), (dev_sentences, dev_y)) in tasks.items():
            majority = float(max(np.mean(dev_y == label) for label in np.unique(train_y)))
            if args.geometry:
                diagnostics["geometry"][task][name] = geometry(tokenizer, encoder, dev_sentences[:args.geometry])
            if corpus_counts is not None and task not in diagnostics["domain_gap"]:  # one tokenizer for the study's models
                diagnostics["domain_gap"][task] = domain_gap(tokenizer, train_sentences + dev_sentences, corpus_counts)
            if not args.probe:
                continue
            train_x, dev_x = features(tokenizer, encoder, train_sentences), features(tokenizer, encoder, dev_sentences)
            for pooling in POOLINGS:
                result = probe(train_x[pooling], train_y, dev_x[pooling], dev_y)
                results[task][f"{name} {pooling}"] = result | {"model": name, "pooling": pooling, "majority_baseline": majority}
                print(f"{task} {name} ({pooling}): probe dev accuracy {result['dev_accuracy']:.4f} (C {result['c']}, "
                      f"train {result['train_accuracy']:.4f}; majority {majority:.4f})", flush=True)
    if args.out:
        command = "python benchmarks/probe.py " + " ".join(sys.argv[1:] if argv is None else argv)
        lines = ["Linear probe (frozen encoder; last hidden states mean-pooled or the first token's; logistic regression)", "",
                 f"Command: `{command}`", ""]
        if any(results.values()):
            lines += ["| task | model | pooling | probe dev accuracy | probe train accuracy | C | dev majority |", "|---|---|---|---|---|---|---|"]
        for task, by_model in results.items():
            for r in by_model.values():
                lines.append(f"| {task} | {r['model']} | {r['pooling']} | {r['dev_accuracy']:.4f} | {r['train_accuracy']:.4f} | {r['c']} "
                             f"| {r['majority_baseline']:.4f} |")
        lines += geometry_lines(diagnostics)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps(results | {"diagnostics": diagnostics}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
