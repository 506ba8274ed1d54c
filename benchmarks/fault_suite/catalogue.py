"""The faults: each hurts the tiny run one way, resumes it as a user would, and records whether it
survived (benchmarks/faults.py's docstring says what counts)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .guards import run_guards
from .harness import ROOT, Harness
from .report import Report


# --- kill -9 ------------------------------------------------------------------------------------------
KINDS = ("one rank", "all ranks", "launcher", "one rank mid-save", "all ranks mid-save")


def kill_campaign(h: Harness, report: Report) -> None:
    """One run killed again and again: each launch resumes from the previous kill, is judged when it
    ends (its resume point, its losses, its exit code where it was not killed), and is itself killed
    until --kills kills were made."""
    kills, pending, rounds, rounds_ok = 0, None, 0, []
    out = h.work / "kills-1"
    while True:
        if pending is None and kills and kills < h.args.kills and h.complete(out):
            rounds += 1  # this run reached its end before enough kills: another run, from step 0
            out = h.work / f"kills-{rounds + 1}"
        kind = KINDS[kills % len(KINDS)] if kills < h.args.kills else None
        before = max(h.metrics(out), default=0)
        launched = time.time()
        job = h.start(out)
        killed = False
        victims: list[str] = []
        while kind and job.poll() is None and not victims:
            if "mid-save" in kind and h.saving_since(out, launched):
                killed = True
            elif "mid-save" not in kind and max(h.metrics(out), default=0) > before:
                time.sleep(h.rng.uniform(0, 1.5))  # a random point within the next steps
                killed = job.poll() is None
            if killed:
                ranks = h.rank_processes(out)
                victims = ranks[-1:] if kind.startswith("one rank") else ranks if kind.startswith("all ranks") else [str(job.pid)]
                killed = bool(victims)
            time.sleep(0.02)
        last_logged, orphans = max(h.metrics(out), default=0), []
        if killed:
            for pid in victims:
                subprocess.run(["kill", "-9", pid])
            kills += 1
            orphans = h.kill_leftovers(out, within=180)
        output = job.communicate()[0]
        ended_ok = killed or h.ok(job.returncode, output)  # a launch that ran to its end must exit 0
        if pending is not None:  # this launch was the resume after the previous kill
            resumed = h.resumed_from(output) if pending["resuming"] else 0
            survived = resumed is not None and pending["orphans"] == 0 and ended_ok
            report.record(pending["kind"], survived, h.exact(out, resumed) if survived else None,
                          max(0, pending["last_logged"] - resumed) if resumed is not None else None,  # a stop may checkpoint a step later
                          f"killed after step {pending['last_logged']}, resumed from {resumed}"
                          + (f", {pending['orphans']} orphans left" if pending["orphans"] else "")
                          + ("" if ended_ok else f", exit code {job.returncode}"))
        if not killed:
            if kills < h.args.kills and ended_ok and h.complete(out):
                pending = None
                rounds_ok.append(h.equals_reference(out))
                continue
            break
        pending = {"kind": f"kill -9 {kind}", "last_logged": last_logged, "orphans": len(orphans),
                   "resuming": bool(list((out / "checkpoints").glob("step_*/COMPLETE")))}
    report.campaign_ok = all(rounds_ok) and ended_ok and h.equals_reference(out)
    print(f"[faults] kill campaign: {kills} kills over {len(rounds_ok) + 1} runs; each run's losses equal the reference at its end: "
          f"{report.campaign_ok}", flush=True)


# --- signals --------------------------------------------------------------------------------------------
def signal_fault(h: Harness, report: Report, name: str, to_launcher: bool, signum: int) -> None:
    out = h.work / slug(f"signal-{name}")
    job = h.start(out)
    while job.poll() is None and max(h.metrics(out), default=0) < 3:
        time.sleep(0.1)
    last = max(h.metrics(out), default=0)
    if to_launcher:
        os.kill(job.pid, signum)
    else:
        for pid in h.rank_processes(out):
            os.kill(int(pid), signum)
    orphans = h.kill_leftovers(out, within=300)
    job.communicate()
    stopped = h.stopped_at(out)
    rc, output = h.run(out)
    resumed = h.resumed_from(output)
    survived = h.ok(rc, output) and h.complete(out) and not orphans and stopped is not None
    report.record(name, survived, h.exact(out, resumed or 0) if survived else None,
                  max(0, last - resumed) if resumed is not None else None, f"checkpointed at step {stopped}, resumed from {resumed}")


# --- damaged checkpoints --------------------------------------------------------------------------------
def damage_fault(h: Harness, report: Report, name: str, harm) -> None:
    out = h.work / slug(f"damage-{name}")
    shutil.copytree(h.half, out)
    harm(out / "checkpoints" / f"step_{h.half_step:08d}")
    rc, output = h.run(out)
    resumed = h.resumed_from(output)
    survived = h.ok(rc, output) and h.complete(out)
    warning = next((line for line in output.splitlines() if "warning: checkpoint" in line), "")
    report.record(name, survived, h.exact(out, resumed or 0) if survived else None,
                  h.half_step - resumed if resumed is not None else None, warning.split("warning: ", 1)[-1].replace(f"{out}/checkpoints/", ""))


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


# --- the rest ---------------------------------------------------------------------------------------------
def second_job(h: Harness, report: Report) -> None:
    """A second job on the directory of a running one (that runs long enough to be caught running)."""
    out = h.work / "second-job"
    job = h.start(out, "train.steps=100000")
    while job.poll() is None and max(h.metrics(out), default=0) < 2:
        time.sleep(0.1)
    rc2, output2 = h.run(out, ranks=1, timeout=300)
    errors = [line for line in output2.splitlines() if line.startswith("error: ")]
    for pid in h.rank_processes(out):  # then the first job is stopped as a scheduler would: it checkpoints
        os.kill(int(pid), signal.SIGUSR1)
    output = job.communicate(timeout=300)[0]
    stopped = h.stopped_at(out)
    first_intact = h.ok(job.returncode, output) and stopped is not None and sorted(h.metrics(out)) == list(range(1, stopped + 1))
    survived = rc2 == 2 and len(errors) == 1 and "in use by another job" in errors[0] and first_intact
    report.record("second job on the same train.out_dir", survived, None, 0,
                  (errors[0] if errors else output2[-200:]).replace(str(out), "DIR")[:160] + f"; the first job went on to step {stopped}")


def world_size_change(h: Harness, report: Report) -> None:
    out = h.work / "world-size"
    shutil.copytree(h.half, out)
    rc, output = h.run(out, ranks=1)
    said = next((line for line in output.splitlines() if "ranks, this run has" in line), "")
    records = h.metrics(out)
    close = h.ok(rc, output) and h.complete(out) and all(abs(records[s]["loss"] / h.reference[s]["loss"] - 1) < 0.05 for s in records if s > h.half_step)
    report.record("world size 2 -> 1 on --resume", close, None, 0, said[-160:])


def disk_full(h: Harness, report: Report) -> None:
    mount = h.work / "tmpfs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        report.skipped = f"disk full: not run (mounting a tmpfs failed: {mounted.stderr.strip()[:120]})"
        print(f"[faults] {report.skipped}", flush=True)
        return
    try:
        out = mount / "run"
        rc, output = h.run(out)
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        from fast_electra_ds.checkpointing import resolve_checkpoint

        try:
            intact = resolve_checkpoint(out)
        except Exception:  # noqa: BLE001 - none at all is a failure to survive here
            intact = None
        names_space = any("free space" in e or "disk full" in e for e in errors)
        report.record("disk full while saving (6 MB tmpfs)", rc != 0 and names_space and intact is not None, None, None,
                      (errors[0][:160] if errors else output[-200:]) + f"; intact: {intact.name if intact else None}")
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def bf16(h: Harness, report: Report) -> None:
    ds = ROOT / "ds_configs/zero3.json"
    reference_dir = h.work / "bf16-reference"
    runs = [h.run(reference_dir, ds=ds)]
    reference = h.metrics(reference_dir)
    out = h.work / "bf16-resume"
    runs.append(h.run(out, f"train.stop_after={h.half_step + 2}", ds=ds))
    runs.append(h.run(out, ds=ds))
    resumed = h.resumed_from(runs[-1][1])
    survived = all([h.ok(rc, output) for rc, output in runs]) and h.complete(out)
    report.bf16_exact = h.exact(out, resumed or 0, reference) if survived else None
    report.record("bf16: stop at a checkpoint, resume", survived, report.bf16_exact, 0, f"resumed from {resumed}; compared with a bf16 reference")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def run_catalogue(h: Harness, report: Report, skip: list[str]) -> None:
    """The kill campaign, the longest, runs last: an interrupted catalogue still has the rest."""
    h.setup()
    if "signals" not in skip:
        signal_fault(h, report, "SIGUSR1 to the ranks", to_launcher=False, signum=signal.SIGUSR1)
        signal_fault(h, report, "SIGTERM to the launcher", to_launcher=True, signum=signal.SIGTERM)
    if "damage" not in skip:
        damage_fault(h, report, "truncated optimizer shard", harm_truncate("*optim_states.pt"))
        damage_fault(h, report, "bit-flipped optimizer shard", harm_flip)
        damage_fault(h, report, "truncated trainer_state.json", harm_truncate("trainer_state.json"))
        damage_fault(h, report, "deleted COMPLETE marker", lambda c: (c / "COMPLETE").unlink())
        damage_fault(h, report, "deleted rng_state file", lambda c: (c / "rng_state_rank1.pt").unlink())
    if "second-job" not in skip:
        second_job(h, report)
    if "world-size" not in skip:
        world_size_change(h, report)
    if "disk-full" not in skip:
        disk_full(h, report)
    if "bf16" not in skip:
        bf16(h, report)
    if "guards" not in skip:
        run_guards(h, report)
    if "kills" not in skip:
        kill_campaign(h, report)
