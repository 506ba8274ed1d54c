#!/usr/bin/env bash
# torchrun, one invocation per node (run it on every node, e.g. from your own scheduler or by hand):
#
#   NNODES=4 NODE_RANK=<0..3> NPROC_PER_NODE=8 MASTER_ADDR=node1 launcher/torchrun_node.sh <train.py args>
#
# Static rendezvous at MASTER_ADDR:MASTER_PORT (default 29500). Inside a Slurm allocation NNODES and
# NODE_RANK default to SLURM_JOB_NUM_NODES and SLURM_NODEID, MASTER_ADDR to the first node:
#   srun --ntasks-per-node=1 launcher/torchrun_node.sh <train.py args>
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NNODES=${NNODES:-${SLURM_JOB_NUM_NODES:-1}}
NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-0}}
if [ -z "${MASTER_ADDR:-}" ]; then
  if [ -n "${SLURM_JOB_NODELIST:-}" ]; then MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
  elif [ "$NNODES" = 1 ]; then MASTER_ADDR=127.0.0.1
  else echo "error: set MASTER_ADDR to the first node's address (NNODES=$NNODES)" >&2; exit 2; fi
fi
if [ -z "${NPROC_PER_NODE:-}" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then NPROC_PER_NODE=$(nvidia-smi -L | wc -l)
  else NPROC_PER_NODE=1; export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}; fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"${PYTHON:-python3}" "$ROOT/launcher/preflight.py" "$@" >/dev/null || exit 2
cd "$ROOT"
exec torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
  --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" train.py "$@"
