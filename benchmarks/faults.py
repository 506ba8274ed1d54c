"""The fault catalogue: a tiny fp32 run on 2 CPU ranks through the deepspeed launcher, hurt
the ways a cluster or a user hurts a run, then resumed as a user would (`--resume`, nothing deleted by
hand). Writes benchmarks/results/faults.{json,md}.

    python benchmarks/faults.py [--kills 20] [--steps 40] [--save-every 5] [--work DIR]

Faults:
  kill -9 during training, at random points, cycling through: one rank, all ranks, the `deepspeed`
    launcher, and one rank / all ranks while a checkpoint is being written (`step_N.saving` exists);
    after each, the run is resumed and killed again until --kills kills were made, then it finishes
  SIGUSR1 to the ranks and SIGTERM to the launcher (the ranks checkpoint and exit), then resume
  damage to the newest checkpoint of a run stopped half-way: a truncated shard, a bit-flipped shard,
    a truncated trainer_state.json, a deleted COMPLETE marker, a deleted rng_state file
  a second job on the same train.out_dir while one runs (must refuse, the first must finish intact)
  a world-size change (2 ranks -> 1 rank) on --resume (close, not exact: not counted as compared)
  a disk full while saving (train.out_dir on a small tmpfs; only where mounting one is allowed)
  bf16: one stop/resume with the shipped bf16 config, compared like the fp32 ones

A fault is survived when the run reaches its last step, with every logged step present, after the
resume(s) and nothing deleted by hand (the disk-full one: one error line and an intact checkpoint to
resume from). A resume is exact when every loss it logged equals the uninterrupted run's.
lost_steps = the last step logged before the fault - the step the resume continued from.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, publish  # noqa: E402
from fast_electra_ds.metrics.logger import read_metrics  # noqa: E402
from fast_electra_ds.runtime.launch import launch_env, train_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Bench:
    def __init__(self, args):
        self.args, self.work = args, Path(args.work)
        self.rng = random.Random(args.seed)
        self.records: list[dict] = []
        self.jobs: list[subprocess.Popen] = []
        self.started, self.argv = time.time(), []
        self.campaign_ok = self.bf16_exact = None
        self.exit_aborts = 0
        self.rounds_ok: list[bool] = []
        self.skipped = ""

    # --- runs -----------------------------------------------------------------------------------------
    def train_args(self, out: Path, *extra: str, ds: Path | None = None) -> list[str]:
        return ["--ds_config", str(ds or self.fp32), "--config", str(ROOT / "configs/tiny.yaml"), "method=electra",
                f"data.path={self.prep / 'data'}", f"data.tokenizer={self.prep / 'tokenizer'}", f"train.out_dir={out}",
                f"train.steps={self.args.steps}", f"train.save_every={self.args.save_every}", "train.log_every=1",
                "train.export=false", *extra]

    def start(self, out: Path, *extra: str, ranks: int = 2, ds: Path | None = None) -> subprocess.Popen:
        resume = ["--resume"] if list((out / "checkpoints").glob("step_*/COMPLETE")) else []
        self.resuming = bool(resume)  # without a checkpoint yet, a relaunch starts over: resumed from step 0
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

    @staticmethod
    def metrics(out: Path) -> dict[int, dict]:
        path = out / "metrics.jsonl"
        return {r["step"]: r for r in read_metrics(path)} if path.exists() else {}

    @staticmethod
    def processes(out: Path) -> list[str]:
        return subprocess.run(["pgrep", "-f", f"train.out_dir={out}( |$)"], capture_output=True, text=True).stdout.split()

    @staticmethod
    def resumed_from(output: str) -> int | None:
        found = re.findall(r"resumed from \S*step_(\d{8})", output)
        return int(found[-1]) if found else None

    def exact(self, out: Path, after: int, reference: dict[int, dict] | None = None) -> bool | None:
        """Every loss logged after `after` equals the reference's; None when none was logged (nothing to compare)."""
        reference = reference or self.reference
        produced = {s: r for s, r in self.metrics(out).items() if s > after}
        if not produced:
            return None
        return all(r["loss"] == reference[s]["loss"] and r.get("mlm_loss") == reference[s].get("mlm_loss") for s, r in produced.items())

    def complete(self, out: Path) -> bool:
        return sorted(self.metrics(out)) == list(range(1, self.args.steps + 1))

    def publish(self, finished: bool) -> dict:
        """Write faults.{json,md}; also after every fault, so an interrupted catalogue leaves what it found."""
        rows = self.records
        compared = [r for r in rows if r["exact"] is not None]
        lost = [r["lost_steps"] for r in rows if r["lost_steps"] is not None]
        summary = {"tried": len(rows), "survived": sum(r["survived"] for r in rows), "exact_resumes": sum(bool(r["exact"]) for r in compared),
                   "compared_resumes": len(compared), "lost_steps_max": max(lost, default=0)}
        results = {**summary, "finished": finished,
                   "settings": {"steps": self.args.steps, "save_every": self.args.save_every, "kills": self.args.kills, "ranks": 2,
                                "precision": "fp32 (the bf16 row: the shipped zero3.json)", "seed": self.args.seed},
                   "kill_campaign_final_losses_equal_reference": self.campaign_ok, "bf16_resumes_exact": self.bf16_exact,
                   "not_run": self.skipped or None, "rank_aborts_at_exit_after_done": self.exit_aborts, "minutes": round((time.time() - self.started) / 60, 1), "faults": rows}
        text = "\n".join([
            "# Fault catalogue", "",
            f"`python benchmarks/faults.py {' '.join(self.argv)}`: a tiny ELECTRA run, {self.args.steps} steps, a checkpoint every "
            f"{self.args.save_every}, 2 CPU ranks, fp32, {results['minutes']} min" + ("." if finished else " so far (interrupted or still running)."), "",
            f"**{summary['survived']} / {summary['tried']} faults survived; {summary['exact_resumes']} / {summary['compared_resumes']} compared resumes "
            f"exact; at most {summary['lost_steps_max']} steps lost.** bf16 resumes exact: {results['bf16_resumes_exact']}. "
            f"The kill campaign's final losses equal the uninterrupted run's: {results['kill_campaign_final_losses_equal_reference']}.",
            *([f"Not run: {self.skipped}."] if self.skipped else []),
            *([f"Launches where a rank aborted at exit after finishing (`{self.ABORT_AT_EXIT}`, a teardown crash, not a fault here): {self.exit_aborts}."] if self.exit_aborts else []), "",
            markdown_table(["fault", "survived", "exact", "lost steps", "note"],
                           [[r["fault"], r["survived"], r["exact"], r["lost_steps"], r["note"]] for r in rows])])
        publish("faults", results, text, self.args.out_dir, quiet=finished is False)
        return summary

    ABORT_AT_EXIT = "terminate called without an active exception"

    def ok(self, rc: int, output: str) -> bool:
        """The job succeeded. A rank that aborts at exit after the run printed `done:` (a teardown crash
        seen on this machine, not one of the faults here) is counted apart, not taken for a failure."""
        if rc == 0:
            return True
        if self.ABORT_AT_EXIT in output and "[fast-electra] done:" in output:
            self.exit_aborts += 1
            return True
        return False

    def record(self, kind: str, survived: bool, exact: bool | None = None, lost: int | None = None, note: str = "") -> None:
        row = {"fault": kind, "survived": survived, "exact": exact, "lost_steps": lost, "note": note}
        self.records.append(row)
        print(f"[faults] {kind}: survived={survived} exact={exact} lost={lost} {note}", flush=True)
        self.publish(finished=False)

    # --- setup ------------------------------------------------------------------------------------------
    def setup(self) -> None:
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
        self.half = self.work / "half"  # stopped half-way, two checkpoints: the base of the damage faults
        rc, output = self.run(self.half, f"train.stop_after={half}")
        assert self.ok(rc, output) and (self.half / "checkpoints" / f"step_{half:08d}" / "COMPLETE").is_file(), output[-3000:]
        self.half_step = half

    # --- kill -9 ----------------------------------------------------------------------------------------
    KINDS = ("one rank", "all ranks", "launcher", "one rank mid-save", "all ranks mid-save")

    def kill_campaign(self) -> None:
        """One run killed again and again: each launch resumes from the previous kill, is judged when it
        ends (its resume point, its losses), and is itself killed until --kills kills were made."""
        kills, pending, rounds = 0, None, 0
        out = self.work / "kills-1"
        while True:
            if pending is None and kills and kills < self.args.kills and self.complete(out):
                rounds += 1  # this run reached its end before enough kills: another run, from step 0
                out = self.work / f"kills-{rounds + 1}"
            kind = self.KINDS[kills % len(self.KINDS)] if kills < self.args.kills else None
            before = max(self.metrics(out), default=0)
            launched = time.time()
            job = self.start(out)
            killed = False
            victims: list[str] = []
            while kind and job.poll() is None and not victims:
                if "mid-save" in kind and self.saving_since(out, launched):
                    killed = True
                elif "mid-save" not in kind and max(self.metrics(out), default=0) > before:
                    time.sleep(self.rng.uniform(0, 1.5))  # a random point within the next steps
                    killed = job.poll() is None
                if killed:
                    ranks = [p for p in self.processes(out) if "--local_rank" in self.command_line(p)]
                    victims = ranks[-1:] if kind.startswith("one rank") else ranks if kind.startswith("all ranks") else [str(job.pid)]
                    killed = bool(victims)
                time.sleep(0.02)
            last_logged, orphans = max(self.metrics(out), default=0), []
            if killed:
                for pid in victims:
                    subprocess.run(["kill", "-9", pid])
                kills += 1
                gone_by = time.time() + 180
                while self.processes(out) and time.time() < gone_by:
                    time.sleep(0.5)
                orphans = self.processes(out)
                for pid in orphans:
                    subprocess.run(["kill", "-9", pid])
            output = job.communicate()[0]
            if pending is not None:  # this launch was the resume after the previous kill
                resumed = self.resumed_from(output) if pending["resuming"] else 0
                survived = resumed is not None and pending["orphans"] == 0
                self.record(pending["kind"], survived, self.exact(out, resumed) if survived else None,
                            max(0, pending["last_logged"] - resumed) if resumed is not None else None,  # a stop may checkpoint a step later
                            f"killed after step {pending['last_logged']}, resumed from {resumed}" + (f", {pending['orphans']} orphans left" if pending["orphans"] else ""))
            if not killed:
                if kills < self.args.kills and job.returncode == 0 and self.complete(out):
                    pending = None
                    self.rounds_ok.append(self.complete(out) and all(self.metrics(out)[s]["loss"] == self.reference[s]["loss"] for s in self.reference))
                    continue
                break
            pending = {"kind": f"kill -9 {kind}", "last_logged": last_logged, "orphans": len(orphans),
                       "resuming": bool(list((out / "checkpoints").glob("step_*/COMPLETE")))}
        last_ok = self.ok(job.returncode, output) and self.complete(out) and all(self.metrics(out)[s]["loss"] == self.reference[s]["loss"] for s in self.reference)
        self.campaign_ok = all(self.rounds_ok) and last_ok
        print(f"[faults] kill campaign: {kills} kills over {len(self.rounds_ok) + 1} runs; each run's losses equal the reference at its end: {self.campaign_ok}", flush=True)

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

    @staticmethod
    def command_line(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return ""

    # --- signals ----------------------------------------------------------------------------------------
    def signal_fault(self, name: str, to_launcher: bool, signum: int) -> None:
        out = self.work / slug(f"signal-{name}")
        job = self.start(out)
        while job.poll() is None and max(self.metrics(out), default=0) < 3:
            time.sleep(0.1)
        last = max(self.metrics(out), default=0)
        if to_launcher:
            os.kill(job.pid, signum)
        else:
            for pid in self.processes(out):
                if "--local_rank" in self.command_line(pid):
                    os.kill(int(pid), signum)
        deadline = time.time() + 300
        while self.processes(out) and time.time() < deadline:
            time.sleep(0.5)
        orphans = self.processes(out)
        for pid in orphans:
            subprocess.run(["kill", "-9", pid])
        job.communicate()
        marker = out / "STOPPED_BY_SIGNAL"
        stopped = json.loads(marker.read_text())["step"] if marker.exists() else None
        rc, output = self.run(out)
        resumed = self.resumed_from(output)
        survived = self.ok(rc, output) and self.complete(out) and not orphans and stopped is not None
        self.record(name, survived, self.exact(out, resumed or 0) if survived else None,
                    max(0, last - resumed) if resumed is not None else None, f"checkpointed at step {stopped}, resumed from {resumed}")

    # --- damaged checkpoints ------------------------------------------------------------------------------
    def damage_fault(self, name: str, harm) -> None:
        out = self.work / slug(f"damage-{name}")
        shutil.copytree(self.half, out)
        newest = out / "checkpoints" / f"step_{self.half_step:08d}"
        harm(newest)
        rc, output = self.run(out)
        resumed = self.resumed_from(output)
        survived = self.ok(rc, output) and self.complete(out)
        warning = next((line for line in output.splitlines() if "warning: checkpoint" in line), "")
        self.record(name, survived, self.exact(out, resumed or 0) if survived else None,
                    self.half_step - resumed if resumed is not None else None, warning.split("warning: ", 1)[-1].replace(f"{out}/checkpoints/", ""))

    # --- the rest -------------------------------------------------------------------------------------------
    def second_job(self) -> None:
        """A second job on the directory of a running one (that runs long enough to be caught running)."""
        out = self.work / "second-job"
        job = self.start(out, "train.steps=100000")
        while job.poll() is None and max(self.metrics(out), default=0) < 2:
            time.sleep(0.1)
        rc2, output2 = self.run(out, ranks=1, timeout=300)
        errors = [line for line in output2.splitlines() if line.startswith("error: ")]
        for pid in self.processes(out):  # then the first job is stopped as a scheduler would: it checkpoints
            if "--local_rank" in self.command_line(pid):
                os.kill(int(pid), signal.SIGUSR1)
        output = job.communicate(timeout=300)[0]
        marker = out / "STOPPED_BY_SIGNAL"
        stopped = json.loads(marker.read_text())["step"] if marker.exists() else None
        first_intact = self.ok(job.returncode, output) and stopped is not None and sorted(self.metrics(out)) == list(range(1, stopped + 1))
        survived = rc2 == 2 and len(errors) == 1 and "in use by another job" in errors[0] and first_intact
        self.record("second job on the same train.out_dir", survived, None, 0,
                    (errors[0] if errors else output2[-200:]).replace(str(out), "DIR")[:160] + f"; the first job went on to step {stopped}")

    def world_size_change(self) -> None:
        out = self.work / "world-size"
        shutil.copytree(self.half, out)
        rc, output = self.run(out, ranks=1)
        said = next((line for line in output.splitlines() if "ranks, this run has" in line), "")
        records = self.metrics(out)
        close = self.ok(rc, output) and self.complete(out) and all(abs(records[s]["loss"] / self.reference[s]["loss"] - 1) < 0.05 for s in records if s > self.half_step)
        self.record("world size 2 -> 1 on --resume", close, None, 0, said[-160:])

    def disk_full(self) -> None:
        mount = self.work / "tmpfs"
        mount.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True, text=True)
        if mounted.returncode != 0:
            self.skipped = f"disk full: not run (mounting a tmpfs failed: {mounted.stderr.strip()[:120]})"
            print(f"[faults] {self.skipped}", flush=True)
            return
        try:
            out = mount / "run"
            rc, output = self.run(out)
            errors = [line for line in output.splitlines() if line.startswith("error: ")]
            from fast_electra_ds.checkpointing import resolve_checkpoint

            try:
                intact = resolve_checkpoint(out)
            except Exception:  # noqa: BLE001 - none at all is a failure to survive here
                intact = None
            names_space = any("free space" in e or "disk full" in e for e in errors)
            self.record("disk full while saving (6 MB tmpfs)", rc != 0 and names_space and intact is not None, None, None,
                        (errors[0][:160] if errors else output[-200:]) + f"; intact: {intact.name if intact else None}")
        finally:
            subprocess.run(["umount", "-l", str(mount)])

    def bf16(self) -> None:
        ds = ROOT / "ds_configs/zero3.json"
        reference_dir = self.work / "bf16-reference"
        runs = [self.run(reference_dir, ds=ds)]
        reference = self.metrics(reference_dir)
        out = self.work / "bf16-resume"
        runs.append(self.run(out, f"train.stop_after={self.half_step + 2}", ds=ds))
        runs.append(self.run(out, ds=ds))
        resumed = self.resumed_from(runs[-1][1])
        survived = all(self.ok(rc, output) for rc, output in runs) and self.complete(out)
        self.bf16_exact = self.exact(out, resumed or 0, reference) if survived else None
        self.record("bf16: stop at a checkpoint, resume", survived, self.bf16_exact, 0, f"resumed from {resumed}; compared with a bf16 reference")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def harm_truncate(name_glob):
    def harm(checkpoint: Path) -> None:
        path = sorted(checkpoint.glob(name_glob))[-1]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return harm


def harm_flip(checkpoint: Path) -> None:
    path = sorted(checkpoint.glob("*optim_states.pt"))[-1]
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


def run_catalogue(bench: Bench, args) -> None:
    """The kill campaign, the longest, runs last: an interrupted catalogue still has the rest."""
    bench.setup()
    if "signals" not in args.skip:
        bench.signal_fault("SIGUSR1 to the ranks", to_launcher=False, signum=signal.SIGUSR1)
        bench.signal_fault("SIGTERM to the launcher", to_launcher=True, signum=signal.SIGTERM)
    if "damage" not in args.skip:
        bench.damage_fault("truncated optimizer shard", harm_truncate("*optim_states.pt"))
        bench.damage_fault("bit-flipped optimizer shard", harm_flip)
        bench.damage_fault("truncated trainer_state.json", harm_truncate("trainer_state.json"))
        bench.damage_fault("deleted COMPLETE marker", lambda c: (c / "COMPLETE").unlink())
        bench.damage_fault("deleted rng_state file", lambda c: (c / "rng_state_rank1.pt").unlink())
    if "second-job" not in args.skip:
        bench.second_job()
    if "world-size" not in args.skip:
        bench.world_size_change()
    if "disk-full" not in args.skip:
        bench.disk_full()
    if "bf16" not in args.skip:
        bench.bf16()
    if "kills" not in args.skip:
        bench.kill_campaign()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kill -9 points in the campaign (default 20)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/fast-electra-faults")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--skip", nargs="*", default=[], choices=["kills", "signals", "damage", "second-job", "world-size", "disk-full", "bf16"])
    args = parser.parse_args(argv)
    bench = Bench(args)
    bench.argv = argv if argv is not None else sys.argv[1:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the cleanup below
    try:
        run_catalogue(bench, args)
    finally:
        bench.stop_all()
    summary = bench.publish(finished=True)
    return 0 if summary["survived"] == summary["tried"] else 1


if __name__ == "__main__":
    sys.exit(main())
