"""Downstream evaluation: fine-tune an exported model on GLUE-layout or custom tasks (issue 7).

`run(model_dir, task, data_dir, out_dir, seeds, recipe="auto", overrides=None) -> dict` fine-tunes
over several seeds and writes OUT/<task>/summary.json; `run_tasks` does several tasks and the
"Average" line; `rotten_tomatoes.write_sst2(out_dir)` writes the sentiment data set."""
from __future__ import annotations

from .runner import run, run_tasks

__all__ = ["run", "run_tasks"]
