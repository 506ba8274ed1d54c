"""The catalogue's findings: one row per fault tried, the outcomes that are not rows (the kill
campaign's losses, the bf16 resumes, what could not run), written as faults.{json,md}."""
from __future__ import annotations

import time

from benchmarks.common import markdown_table, publish

from .harness import ABORT_AT_EXIT, Harness


class Report:
    def __init__(self, args, argv: list[str], harness: Harness):
        self.args, self.argv, self.harness = args, argv, harness
        self.started = time.time()
        self.records: list[dict] = []
        self.campaign_ok = self.bf16_exact = None
        self.skipped = ""

    def record(self, kind: str, survived: bool, exact: bool | None = None, lost: int | None = None, note: str = "") -> None:
        row = {"fault": kind, "survived": survived, "exact": exact, "lost_steps": lost, "note": note}
        self.records.append(row)
        print(f"[faults] {kind}: survived={survived} exact={exact} lost={lost} {note}", flush=True)
        self.publish(finished=False)

    def summary(self) -> dict:
        rows = self.records
        compared = [r for r in rows if r["exact"] is not None]
        lost = [r["lost_steps"] for r in rows if r["lost_steps"] is not None]
        return {"tried": len(rows), "survived": sum(r["survived"] for r in rows), "exact_resumes": sum(bool(r["exact"]) for r in compared),
                "compared_resumes": len(compared), "lost_steps_max": max(lost, default=0)}

    def publish(self, finished: bool) -> dict:
        """Write faults.{json,md}; also after every fault, so an interrupted catalogue leaves what it found."""
        rows, summary, exit_aborts = self.records, self.summary(), self.harness.exit_aborts
        results = {**summary, "finished": finished,
                   "settings": {"steps": self.args.steps, "save_every": self.args.save_every, "kills": self.args.kills, "ranks": 2,
                                "precision": "fp32 (the bf16 row: the shipped zero3.json)", "seed": self.args.seed},
                   "kill_campaign_final_losses_equal_reference": self.campaign_ok, "bf16_resumes_exact": self.bf16_exact,
                   "not_run": self.skipped or None, "rank_aborts_at_exit_after_done": exit_aborts, "minutes": round((time.time() - self.started) / 60, 1), "faults": rows}
        text = "\n".join([
            "# Fault catalogue", "",
            f"`python benchmarks/faults.py {' '.join(self.argv)}`: a tiny ELECTRA run, {self.args.steps} steps, a checkpoint every "
            f"{self.args.save_every}, 2 CPU ranks, fp32, {results['minutes']} min" + ("." if finished else " so far (interrupted or still running)."), "",
            f"**{summary['survived']} / {summary['tried']} faults survived; {summary['exact_resumes']} / {summary['compared_resumes']} compared resumes "
            f"exact; at most {summary['lost_steps_max']} steps lost.** bf16 resumes exact: {results['bf16_resumes_exact']}. "
            f"The kill campaign's final losses equal the uninterrupted run's: {results['kill_campaign_final_losses_equal_reference']}.",
            *([f"Not run: {self.skipped}."] if self.skipped else []),
            *([f"Launches where a rank aborted at exit after finishing (`{ABORT_AT_EXIT}`; a non-zero exit, so the fault it ended "
               f"counts as not survived): {exit_aborts}."] if exit_aborts else []), "",
            markdown_table(["fault", "survived", "exact", "lost steps", "note"],
                           [[r["fault"], r["survived"], r["exact"], r["lost_steps"], r["note"]] for r in rows])])
        publish("faults", results, text, self.args.out_dir, quiet=finished is False)
        return summary
