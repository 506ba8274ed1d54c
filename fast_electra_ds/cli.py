"""`fast-electra <command>`: tokenizer, prepare, export, train (a local alias of train.py), finetune, glue-data,
replacements."""
from __future__ import annotations

import sys

from . import __version__
from .errors import run_guarded

USAGE = """usage: fast-electra <command> [options]

Run `fast-electra <command> --help` for a command's options; `fast-electra --version` prints the version.

commands:
  tokenizer   train a sentencepiece tokenizer into a Hugging Face tokenizer directory
  prepare     tokenize text files into Megatron IndexedDataset token shards
  train       train in this process, one rank (several: `deepspeed train.py ...` in a checkout,
              `deepspeed --module fast_electra_ds.train ...` from an installed wheel)
  export      consolidate a checkpoint into a Hugging Face model directory
  finetune    fine-tune a model directory on GLUE-layout or custom tasks over several seeds
  glue-data   write a labelled data set in the GLUE layout (rotten-tomatoes)
  replacements  make method fast's replacements ahead of time, from the training's arguments (several
              ranks: `deepspeed --module fast_electra_ds.replacements ...`)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"fast-electra {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "tokenizer":
        from .data.tokenizer import cli as function
    elif command == "prepare":
        from .data.prepare import cli as function
    elif command == "export":
        from .export.exporter import cli as function
    elif command == "train":
        from .train import cli as function
    elif command == "finetune":
        from .finetune.cli import cli as function
    elif command == "glue-data":
        from .finetune.rotten_tomatoes import cli as function
    elif command == "replacements":
        from .replacements import cli as function
    else:
        print(f"error: unknown command {command!r}; use one of tokenizer, prepare, train, export, finetune, glue-data, replacements", file=sys.stderr)
        return 2
    return run_guarded(function, rest)


if __name__ == "__main__":
    sys.exit(main())
