#!/usr/bin/env python
"""Entry point for the deepspeed launcher: `deepspeed --num_gpus 2 train.py --ds_config zero3.json --config tiny.yaml`
(the same as `deepspeed --module fast_electra_ds.train ...`; `--help` for the arguments)."""
import sys

from fast_electra_ds.train import main

if __name__ == "__main__":
    sys.exit(main())
