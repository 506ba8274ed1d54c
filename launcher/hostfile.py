#!/usr/bin/env python3
"""Write an MPI-style hostfile (`host slots=N`, one line per node) for `deepspeed --hostfile`.

    python launcher/hostfile.py --slots 8 node1 node2 node3 node4 > hosts   # a list
    python launcher/hostfile.py node1:8 node2:4 > hosts                     # per-host slots
    python launcher/hostfile.py --slots 8 - < nodes.txt > hosts             # one name a line from stdin
    python launcher/hostfile.py > hosts                                     # inside a Slurm allocation

Without hosts, the nodes of $SLURM_JOB_NODELIST (`scontrol show hostnames`). --slots defaults to
$SLURM_NTASKS_PER_NODE, else the GPUs nvidia-smi lists on this machine, else 1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def default_slots() -> int:
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0].split(",")[0]
    if per_node.isdigit():
        return int(per_node)
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpus = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
        if listed.returncode == 0 and gpus:
            return len(gpus)
    return 1


def slurm_hosts() -> list[str]:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        fail("no hosts given and not inside a Slurm allocation ($SLURM_JOB_NODELIST is unset); pass host names")
    shown = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
    if shown.returncode != 0:
        fail(f"scontrol show hostnames {nodelist} failed: {shown.stderr.strip()}")
    return shown.stdout.split()


def hostfile(entries: list[str], slots: int) -> str:
    lines, seen = [], set()
    for entry in entries:
        host, _, count = entry.partition(":")
        if not host:
            continue
        if count and not (count.isdigit() and int(count) > 0):
            fail(f"{entry!r}: slots must be a positive number (host:slots)")
        if host in seen:
            fail(f"host {host} is listed twice")
        seen.add(host)
        lines.append(f"{host} slots={count or slots}")
    if not lines:
        fail("no hosts")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hosts", nargs="*", help="host or host:slots; '-' reads names from stdin")
    parser.add_argument("--slots", type=int, default=None, help="processes per host (default: see above)")
    parser.add_argument("--out", help="write here instead of stdout")
    args = parser.parse_args(argv)
    if args.slots is not None and args.slots < 1:
        fail(f"--slots {args.slots} must be at least 1")
    entries = [name for h in args.hosts for name in (sys.stdin.read().split() if h == "-" else [h])] or slurm_hosts()
    text = hostfile(entries, args.slots or default_slots())
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
