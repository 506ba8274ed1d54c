"""Shared by the benchmark scripts: setting options on the command line, markdown tables, charts, output."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

from fast_electra_ds.accounting.paper import SETTINGS, PaperSetting, get_setting

RESULTS = Path(__file__).resolve().parent / "results"

SPECIALS = dict(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)  # the special ids of the benchmarks' random-id batches


def random_id_tokens(vocab_size: int, fingerprint: str):
    """The token ids of a benchmark batch of uniformly random non-special ids (TokenInfo.of_random_ids)."""
    from fast_electra_ds.methods import TokenInfo

    return TokenInfo.of_random_ids(vocab_size, fingerprint, **SPECIALS)


def add_setting_args(parser: argparse.ArgumentParser, default: Iterable[str] = ("paper-base", "paper-large")) -> None:
    parser.add_argument("--settings", nargs="+", default=list(default), choices=list(SETTINGS),
                        help="named settings (paper-base, paper-large: the poster's; tiny, small: runnable on a CPU)")
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--vocab-size", type=int)
    parser.add_argument("--main-layers", type=int)
    parser.add_argument("--main-hidden", type=int)
    parser.add_argument("--aux-layers", type=int)
    parser.add_argument("--aux-hidden", type=int)
    parser.add_argument("--mask-prob", type=float)
    parser.add_argument("--no-corrective-lm", dest="corrective_lm", action="store_const", const=False,
                        help="main model without the vocabulary head over all positions")
    parser.add_argument("--micro-batch", type=int)
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3])
    parser.add_argument("--world-size", type=int)
    parser.add_argument("--original-generator", choices=["electra", "poster"],
                        help="memory of Original: electra = this project's generator (shared embeddings, MLM head at the "
                             "masked positions; the default of tiny/small); poster = own embeddings, MLM head over all "
                             "positions (the default of paper-base/paper-large)")


def settings_from_args(args: argparse.Namespace) -> list[PaperSetting]:
    keys = ["seq_len", "vocab_size", "main_layers", "main_hidden", "aux_layers", "aux_hidden", "mask_prob",
            "corrective_lm", "micro_batch", "precision", "zero_stage", "world_size", "original_generator"]
    overrides = {k: getattr(args, k, None) for k in keys}
    return [get_setting(name, **overrides) for name in args.settings]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]], digits: int = 1) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v, digits) for v in row) + " |")
    return "\n".join(lines)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def publish(name: str, results: Any, text: str, out_dir: Path | None, quiet: bool) -> None:
    """Print a benchmark's table and write it as <name>.json and <name>.md under out_dir."""
    if not quiet:
        print(text)
    if out_dir is not None:
        write_json(out_dir / f"{name}.json", results)
        (out_dir / f"{name}.md").write_text(text + "\n")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None where matplotlib is not installed
    (it is an extra: pip install -e .[bench]); the charts are then skipped."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(plt, fig, path: Path, dpi: int = 100) -> bool:
    """Lay out `fig`, write it to `path` (its folder made) and close it; True, for the charts' return."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True
