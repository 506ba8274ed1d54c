"""The faults the run's own guards must catch: divergence, a changed config on --resume, a shard
changed on disk (one line for the job, whichever ranks read it), a hung rank,
torn or garbage metrics lines, and the temporary directories of killed exports and prepares. Each
hurts a copy of the half-way run (or a fresh run), checks what the guard said and kept, then resumes
as a user would and checks that the run finishes (and, where the data is the same, exactly)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fast_electra_ds.runtime.temp_dirs import host_hash

from .harness import ROOT, Harness
from .report import Report

STALL_MINUTES = 0.5  # the hang faults' train.stall_minutes: far below the collective timeout (30)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "error: " in line]


def checkpoints(out: Path) -> list[str]:
    return sorted(p.parent.name for p in (out / "checkpoints").glob("step_*/COMPLETE"))


def resume_after(h: Harness, out: Path) -> tuple[bool, bool | None, int | None, str]:
    """The user's plain `--resume` after the fault: (finished, exact, resumed from, note)."""
    rc, output = h.run(out)
    resumed = h.resumed_from(output)
    finished = h.ok(rc, output) and h.complete(out)
    return finished, (h.exact(out, resumed or 0) if finished else None), resumed, "" if finished else f"; the resume exited {rc}"


def refused_then_resumed(h: Harness, report: Report, name: str, *override: str, expect: str, code: int,
                         rollbacks: int = 0) -> None:
    """A launch that must stop with one line (`expect` in it, exit `code`) and keep every checkpoint
    (after `rollbacks` lines of rollbacks.jsonl, where rollback is on); then a plain resume that finishes."""
    out = h.work / name.replace(" ", "-").replace("=", "-")
    shutil.copytree(h.half, out)
    before = checkpoints(out)
    rc, output = h.run(out, *override)
    errors = error_lines(output)
    said = rc == code and len(errors) == 1 and expect in errors[0] and "Traceback" not in output
    rolled = (out / "rollbacks.jsonl").read_text().count("\n") if (out / "rollbacks.jsonl").is_file() else 0
    said = said and rolled == rollbacks
    kept = checkpoints(out)[: len(before)] == before
    finished, exact, resumed, tail = resume_after(h, out)
    report.record(name, said and kept and finished, exact, h.half_step - resumed if resumed is not None else None,
                  (errors[0].split("error: ", 1)[-1][:150] if errors else f"exit {rc}, no error line") + tail)


def changed_but_allowed(h: Harness, report: Report, name: str, override: str, note: str, same_data: bool) -> None:
    """A resume with a field that may change: it says so in a line and finishes."""
    out = h.work / name.replace(" ", "-")
    shutil.copytree(h.half, out)
    rc, output = h.run(out, override)
    resumed = h.resumed_from(output)
    said = next((line for line in output.splitlines() if "resume:" in line and note in line), "")
    finished = h.ok(rc, output) and h.complete(out)
    exact = h.exact(out, resumed or 0) if finished and same_data else None
    report.record(name, finished and bool(said) and exact is not False, exact,
                  h.half_step - resumed if resumed is not None else None, said.split("resume: ", 1)[-1][:150])


def hang(h: Harness, report: Report, stopped_rank: int) -> None:
    """One rank stopped (SIGSTOP) mid-training: the job must end by train.stall_minutes with one line
    naming that rank, leave its checkpoints, and resume."""
    out = h.work / f"hang-rank{stopped_rank}"
    shutil.copytree(h.half, out)
    job = h.start(out, f"train.stall_minutes={STALL_MINUTES}", "train.steps=100000")
    while job.poll() is None and max(h.metrics(out), default=0) < h.half_step + 2:
        time.sleep(0.1)
    ranks = {int(pid): pid for pid in h.rank_processes(out)}
    victim = next((pid for pid in ranks.values() if f"--local_rank={stopped_rank}" in h.command_line(pid)), None)
    before = checkpoints(out)
    stopped_at = time.time()
    if victim is not None:
        os.kill(int(victim), 19)  # SIGSTOP
    try:
        output = job.communicate(timeout=600)[0]
    except subprocess.TimeoutExpired:
        output = ""
    took = time.time() - stopped_at
    for pid in h.processes(out):
        subprocess.run(["kill", "-CONT", pid])
        subprocess.run(["kill", "-9", pid])
    job.communicate() if job.poll() is None else None
    errors = [line for line in error_lines(output) if "stall_minutes" in line]
    said = len(errors) == 1 and f"rank(s) {stopped_rank} stopped responding" in errors[0] and job.returncode != 0
    kept = checkpoints(out)[: len(before)] == before
    # The fault's run went past the catalogue's steps: finish it at its own length, as a user would.
    rc, output = h.run(out, "train.steps=100000", "train.stop_after=1")
    finished = h.ok(rc, output) and h.resumed_from(output) is not None
    report.record(f"hang: rank {stopped_rank} stopped (SIGSTOP)", said and kept and finished, None, None,
                  f"ended {took:.0f} s after the stop (window {STALL_MINUTES * 60:.0f} s): "
                  + (errors[0].split("error: ", 1)[-1][:110] if errors else f"exit {job.returncode}, no stall line"))


def torn_metrics(h: Harness, report: Report, name: str, damage) -> None:
    out = h.work / name.replace(" ", "-")
    shutil.copytree(h.half, out)
    damage(out / "metrics.jsonl")
    rc, output = h.run(out)
    resumed = h.resumed_from(output)
    warning = next((line for line in output.splitlines() if "warning" in line and "metrics.jsonl" in line), "")
    finished = h.ok(rc, output) and h.complete(out)
    report.record(name, finished and bool(warning), h.exact(out, resumed or 0) if finished else None,
                  h.half_step - resumed if resumed is not None else None, warning.split("warning: ", 1)[-1][:150])


def tear_last_line(path: Path) -> None:
    text = path.read_text()
    path.write_text(text + text.splitlines()[-1][: len(text.splitlines()[-1]) // 2])  # a write cut short


def garbage_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(len(lines) // 2, "\x00\x00garbage{\n")
    path.write_text("".join(lines))


def dead_pid() -> int:
    """A process id that no process has now."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def orphan_export(h: Harness, report: Report) -> None:
    """The temporary directory of an export killed half-way: the next run that exports there removes it."""
    out = h.work / "orphan-export"
    shutil.copytree(h.half, out)
    orphan = out / f".hf.export-{dead_pid()}-{host_hash()}-x1"
    orphan.mkdir()
    (orphan / "model.safetensors").write_bytes(b"\0" * 4096)
    rc, output = h.run(out, "train.export=true")
    said = next((line for line in output.splitlines() if "removed" in line and orphan.name in line), "")
    finished = h.ok(rc, output) and h.complete(out) and (out / "hf" / "config.json").is_file()
    report.record("orphan of a killed export", finished and not orphan.exists() and bool(said), None, 0,
                  said.split("warning: ", 1)[-1].replace(str(out), "DIR")[:150])


def orphan_prepare(h: Harness, report: Report) -> None:
    """The temporary directory of a killed `prepare`: the next prepare of that output removes it."""
    target = h.work / "orphan-prepare" / "data"
    target.parent.mkdir(parents=True)
    orphan = target.parent / f".data.tmp-{dead_pid()}-{host_hash()}"
    orphan.mkdir()
    (orphan / "shard_00000.bin").write_bytes(b"\0" * 4096)
    corpus = h.work / "orphan-prepare" / "corpus.txt"
    corpus.write_text("\n\n".join(f"Document {i}: the parser reads a token and returns its value." * 5 for i in range(50)))
    done = subprocess.run([sys.executable, "-m", "fast_electra_ds.cli", "prepare", "--input", str(corpus), "--tokenizer",
                           str(h.prep / "tokenizer"), "--out", str(target)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    said = next((line for line in done.stderr.splitlines() if "removed" in line and orphan.name in line), "")
    report.record("orphan of a killed prepare", done.returncode == 0 and not orphan.exists() and (target / "meta.json").is_file() and bool(said),
                  None, 0, said.split("warning: ", 1)[-1].replace(str(target.parent), "DIR")[:150])


def finished_launches_exit_0(h: Harness, report: Report, repeats: int = 3) -> None:
    """Exit codes are the truth: finished launches, back to back, each exit 0 (no abort at exit)."""
    codes = []
    for attempt in range(repeats):
        rc, output = h.run(h.work / f"exit-codes-{attempt}", "train.steps=2")
        codes.append(rc if h.ok(rc, output) else f"{rc}")
    report.record(f"{repeats} finished launches exit 0", codes == [0] * repeats, None, 0, f"exit codes {codes}")


def run_guards(h: Harness, report: Report) -> None:
    refused_then_resumed(h, report, "divergence: resume at optim.lr=1e30", "optim.lr=1e30", expect="diverged", code=4)
    refused_then_resumed(h, report, "divergence with rollback: lr=1e30, 2 rollbacks then the stop", "optim.lr=1e30",
                         "train.on_divergence=rollback", "train.max_rollbacks=2", expect="diverged", code=4, rollbacks=2)
    refused_then_resumed(h, report, "resume with data.seq_len changed", "data.seq_len=32", expect="data.seq_len", code=2)
    refused_then_resumed(h, report, "resume with model.num_hidden_layers changed", "model.num_hidden_layers=1",
                         expect="num_hidden_layers", code=2)
    refused_then_resumed(h, report, "resume with model.max_position_embeddings changed", "model.max_position_embeddings=256",
                         expect="max_position_embeddings", code=2)
    data_copy = h.work / "data-copy"
    shutil.copytree(h.prep / "data", data_copy, dirs_exist_ok=True)
    changed_but_allowed(h, report, "resume with data.path moved", f"data.path={data_copy}", "data.path", same_data=True)
    changed_but_allowed(h, report, "resume with the global batch changed", "optim.micro_batch=2", "global batch", same_data=False)
    corrupted = h.work / "data-out-of-range-ids"
    shutil.copytree(h.prep / "data", corrupted, dirs_exist_ok=True)
    for binary in corrupted.glob("*.bin"):
        binary.write_bytes(b"\xff" * binary.stat().st_size)  # the same size: ids 65535, found only when read
    refused_then_resumed(h, report, "resume on a shard overwritten in place with out-of-range ids", f"data.path={corrupted}",
                         expect="token id 65535", code=2)
    hang(h, report, stopped_rank=1)
    hang(h, report, stopped_rank=0)
    torn_metrics(h, report, "torn last line of metrics.jsonl", tear_last_line)
    torn_metrics(h, report, "garbage line inside metrics.jsonl", garbage_line)
    orphan_export(h, report)
    orphan_prepare(h, report)
    finished_launches_exit_0(h, report)
