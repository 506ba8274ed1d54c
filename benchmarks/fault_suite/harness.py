"""Launching the catalogue's tiny run (2 CPU ranks through the deepspeed launcher, fp32 unless told),
finding its processes, reading what it logged, and judging how it ended."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from fast_electra_ds.metrics.logger import read_metrics
from fast_electra_ds.runtime.launch import launch_env, train_command

ROOT = Path(__file__).resolve().parents[2]
DONE = "[fast-electra] done:"
ABORT_AT_EXIT = "terminate called without an active exception"


def exit_ok(rc: int) -> bool:
    """A launch succeeded when it exited 0: a scheduler counts the exit code, not what the log said (a
    rank that printed `done` and then aborted at exit fails the job and gets it requeued)."""
    return rc == 0


def aborted_at_exit(rc: int, output: str) -> bool:
    """The run finished (`done` printed), then a rank aborted during teardown."""
    return rc != 0 and DONE in output and ABORT_AT_EXIT in output


class Harness:
    def __init__(self, args):
        self.args, self.work = args, Path(args.work)
        self.rng = random.Random(args.seed)  # where in a step the kill campaign strikes
        self.jobs: list[subprocess.Popen] = []
        self.exit_aborts = 0  # launches that finished, then aborted at exit (counted as failures)

    # --- runs -----------------------------------------------------------------------------------------
    def train_args(self, out: Path, *extra: str, ds: Path | None = None) -> list[str]:
        return ["--ds_config", str(ds or self.fp32), "--config", str(ROOT / "configs/tiny.yaml"), "method=electra",
                f"data.path={self.prep / 'data'}", f"data.tokenizer={self.prep / 'tokenizer'}", f"train.out_dir={out}",
                f"train.steps={self.args.steps}", f"train.save_every={self.args.save_every}", "train.log_every=1",
                "train.export=false", *extra]

    def start(self, out: Path, *extra: str, ranks: int = 2, ds: Path | None = None) -> subprocess.Popen:
        # Without a checkpoint yet, a relaunch starts over (resumed from step 0).
        resume = ["--resume"] if list((out / "checkpoints").glob("step_*/COMPLETE")) else []
        job = subprocess.Popen(train_command(self.train_args(out, *extra, ds=ds) + resume, ranks), cwd=ROOT, env=launch_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.jobs.append(job)
        return job

    def stop_all(self) -> None:
        """Leave no job behind when the catalogue itself is interrupted."""
        for job in self.jobs:
            if job.poll() is None:
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def run(self, out: Path, *extra: str, ranks: int = 2, ds: Path | None = None, timeout: float = 900) -> tuple[int, str]:
        job = self.start(out, *extra, ranks=ranks, ds=ds)
        try:
            output, _ = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            output, _ = job.communicate()
        return job.returncode, output

    def ok(self, rc: int, output: str) -> bool:
        """The launch exited 0. One that finished and then aborted at exit is also counted apart, so the
        report says how often that teardown crash cost a fault."""
        if aborted_at_exit(rc, output):
            self.exit_aborts += 1
        return exit_ok(rc)

    # --- what a run left ------------------------------------------------------------------------------
    @staticmethod
    def metrics(out: Path) -> dict[int, dict]:
        path = out / "metrics.jsonl"
        return {r["step"]: r for r in read_metrics(path)} if path.exists() else {}

    @staticmethod
    def processes(out: Path) -> list[str]:
        return subprocess.run(["pgrep", "-f", f"train.out_dir={out}( |$)"], capture_output=True, text=True).stdout.split()

    @staticmethod
    def command_line(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def rank_processes(self, out: Path) -> list[str]:
        return [pid for pid in self.processes(out) if "--local_rank" in self.command_line(pid)]

    def kill_leftovers(self, out: Path, within: float) -> list[str]:
        """Wait up to `within` seconds for the run's processes to end, then kill -9 what is left (returned:
        the orphans)."""
        deadline = time.time() + within
        while self.processes(out) and time.time() < deadline:
            time.sleep(0.5)
        orphans = self.processes(out)
        for pid in orphans:
            subprocess.run(["kill", "-9", pid])
        return orphans

    @staticmethod
    def resumed_from(output: str) -> int | None:
        found = re.findall(r"resumed from \S*step_(\d{8})", output)
        return int(found[-1]) if found else None

    @staticmethod
    def stopped_at(out: Path) -> int | None:
        """The step a signal made the run checkpoint at, from its marker."""
        marker = out / "STOPPED_BY_SIGNAL"
        return json.loads(marker.read_text())["step"] if marker.exists() else None

    @staticmethod
    def saving_since(out: Path, since: float) -> bool:
        """A checkpoint is being written by this launch (not a leftover of an earlier kill)."""
        for path in (out / "checkpoints").glob("step_*.saving"):
            try:
                if path.stat().st_mtime > since:
                    return True
            except OSError:
                pass
        return False

    def exact(self, out: Path, after: int, reference: dict[int, dict] | None = None) -> bool | None:
        """Every loss logged after `after` equals the reference's; None when none was logged (nothing to compare)."""
        reference = reference or self.reference
        produced = {s: r for s, r in self.metrics(out).items() if s > after}
        if not produced:
            return None
        return all(r["loss"] == reference[s]["loss"] and r.get("mlm_loss") == reference[s].get("mlm_loss") for s, r in produced.items())

    def complete(self, out: Path) -> bool:
        return sorted(self.metrics(out)) == list(range(1, self.args.steps + 1))

    def equals_reference(self, out: Path) -> bool:
        return self.complete(out) and all(self.metrics(out)[s]["loss"] == self.reference[s]["loss"] for s in self.reference)

    # --- the runs every fault starts from ---------------------------------------------------------------
    def setup(self) -> None:
        """The tiny corpus, the fp32 config, the uninterrupted reference run, and a run stopped half-way
        with two checkpoints (the base of the damage faults)."""
        from fast_electra_ds.data.tiny import prepare_tiny_corpus

        shutil.rmtree(self.work, ignore_errors=True)
        self.prep = self.work / "prep"
        prepare_tiny_corpus(self.prep)
        ds = json.loads((ROOT / "ds_configs/zero3.json").read_text())
        ds["bf16"] = {"enabled": False}
        self.fp32 = self.work / "zero3_fp32.json"
        self.fp32.write_text(json.dumps(ds, indent=1))
        started = time.time()
        rc, output = self.run(self.work / "reference")
        assert self.ok(rc, output), output[-3000:]
        self.reference = self.metrics(self.work / "reference")
        self.run_seconds = time.time() - started
        print(f"[faults] reference run: {self.args.steps} steps in {self.run_seconds:.0f} s", flush=True)
        half = self.args.steps // 2 // self.args.save_every * self.args.save_every
        self.half = self.work / "half"
        rc, output = self.run(self.half, f"train.stop_after={half}")
        assert self.ok(rc, output) and (self.half / "checkpoints" / f"step_{half:08d}" / "COMPLETE").is_file(), output[-3000:]
        self.half_step = half

