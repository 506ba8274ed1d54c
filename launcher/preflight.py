"""Check train.py's arguments the way train.py does (config YAML, DeepSpeed JSON, overrides, the whole
config checked by config/validate.py) without starting anything, and print the absolute
train.out_dir. A mistake is one `error:` line, exit 2.

    python launcher/preflight.py --ds_config ds_configs/zero3.json --config configs/tiny.yaml train.out_dir=runs/x
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fast_electra_ds.errors import run_guarded  # noqa: E402


def check(argv: list[str]) -> int:
    from fast_electra_ds.config.run_config import load_config, load_ds_config
    from fast_electra_ds.config.validate import validate_config
    from fast_electra_ds.methods import METHODS
    from fast_electra_ds.train import parse_args

    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    validate_config(config, METHODS)
    load_ds_config(args.ds_config)
    print(Path(config.train.out_dir).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(check, sys.argv[1:]))
