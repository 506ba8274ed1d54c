#!/usr/bin/env bash
# Validate a GPU machine or cluster node in one command (at most ~8 minutes on one GPU):
#   scripts/gpu_check.sh          every check on the visible GPUs (2-GPU checks when 2 are visible)
#   scripts/gpu_check.sh --cpu    the same checks on CPU ranks, GPU-only ones SKIP (what the test suite runs)
# Prints a table, writes runs/gpu_check/results.md and results.json (--out DIR to change), exits 1 on any FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
