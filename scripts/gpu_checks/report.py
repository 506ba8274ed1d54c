"""The check's report: the environment it ran in, results.json, results.md and the printed table."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .harness import FAIL


def table(results: list[dict]) -> str:
    lines = ["| check | status | reason |", "|---|---|---|"]
    lines += [f"| {r['check']} | {r['status']} | {r['reason'].replace('|', '/')} |" for r in results]
    return "\n".join(lines)


def environment(device: str) -> dict:
    import deepspeed
    import torch
    import transformers

    info = {"device": device, "torch": torch.__version__, "deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device == "cuda" else []}
    return info


def write_report(out: Path, device: str, started: float, results: list[dict]) -> dict:
    """results.json and results.md in `out`, the table printed; returns the summary."""
    summary = {"environment": environment(device), "wall_time_s": round(time.time() - started, 1), "results": results,
               "failed": [r["check"] for r in results if r["status"] == FAIL]}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    env_line = ", ".join(f"{k} {v}" for k, v in summary["environment"].items() if v)
    (out / "results.md").write_text(f"# GPU check\n\n{env_line}; {summary['wall_time_s']:.0f} s\n\n{table(results)}\n")
    print("\n" + table(results))
    print(f"\n{len(results) - len(summary['failed'])} of {len(results)} checks passed or skipped in {summary['wall_time_s']:.0f} s; "
          f"{out / 'results.md'}")
    return summary
