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
  the run's guards (fault_suite/guards.py): a resume at optim.lr=1e30 (divergence: exit 4, every checkpoint
    kept), the same with train.on_divergence=rollback (two rollbacks, then that stop), resumes that change data.seq_len, the depth or the positions (refused in one line) or the data
    path and global batch (allowed, said), a rank stopped by SIGSTOP (the watchdog names it), a torn last
    line and a garbage line in metrics.jsonl, the temporary directories of a killed export and prepare,
    and finished launches that must each exit 0

A fault is survived when the run reaches its last step, with every logged step present, after the
resume(s) and nothing deleted by hand, and the launch that finished it exits 0 (a rank that prints
`done` and then aborts at exit fails: a scheduler goes by the exit code). The disk-full one: one error
line and an intact checkpoint to resume from. A resume is exact when every loss it logged equals the
uninterrupted run's. lost_steps = the last step logged before the fault - the step the resume continued from.
The harness, the faults and the report are benchmarks/fault_suite/'s modules.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS  # noqa: E402
from benchmarks.fault_suite.catalogue import run_catalogue  # noqa: E402
from benchmarks.fault_suite.harness import Harness  # noqa: E402
from benchmarks.fault_suite.report import Report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kill -9 points in the campaign (default 20)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/fast-electra-faults")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--skip", nargs="*", default=[], choices=["kills", "signals", "damage", "second-job", "world-size", "disk-full", "bf16", "guards"])
    args = parser.parse_args(argv)
    harness = Harness(args)
    report = Report(args, argv if argv is not None else sys.argv[1:], harness)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the cleanup below
    try:
        run_catalogue(harness, report, args.skip)
    finally:
        harness.stop_all()
    summary = report.publish(finished=True)
    return 0 if summary["survived"] == summary["tried"] else 1


if __name__ == "__main__":
    sys.exit(main())
