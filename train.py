#!/usr/bin/env python
"""Entry point for the deepspeed launcher: `deepspeed --num_gpus 2 train.py --ds_config ds_configs/zero3.json --config configs/tiny.yaml`."""
import sys

from fast_electra_ds.train import main

if __name__ == "__main__":
    sys.exit(main())
