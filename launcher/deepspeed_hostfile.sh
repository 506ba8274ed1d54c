#!/usr/bin/env bash
# Multi-node through the deepspeed launcher over pdsh/ssh (no scheduler): every host needs passwordless
# ssh from this one, pdsh here, the same repository path and environment, and a shared train.out_dir.
#
#   HOSTS="node1 node2 node3 node4" SLOTS=8 launcher/deepspeed_hostfile.sh <train.py args>
#   HOSTFILE=hosts launcher/deepspeed_hostfile.sh <train.py args>
#
# Writes the hostfile (launcher/hostfile.py) and an environment file (DS_ENV_FILE, read like
# ~/.deepspeed_env) under runs/launcher/ with the variables below, which the launcher exports on every node (it forwards only PYTHON*, NCCL*, UCX*,
# MV2*, MLFLOW* on its own). MASTER_ADDR defaults to the first host, MASTER_PORT to 29500.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
"$PYTHON" "$ROOT/launcher/preflight.py" "$@" >/dev/null || exit 2
if [ -z "${HOSTFILE:-}" ]; then
  [ -n "${HOSTS:-}" ] || { echo "error: set HOSTS=\"node1 node2 ...\" (and SLOTS=processes per node) or HOSTFILE=<file>" >&2; exit 2; }
  mkdir -p "$ROOT/runs/launcher"; HOSTFILE=$ROOT/runs/launcher/hostfile
  # shellcheck disable=SC2086
  "$PYTHON" "$ROOT/launcher/hostfile.py" ${SLOTS:+--slots "$SLOTS"} $HOSTS --out "$HOSTFILE"
fi
[ -f "$HOSTFILE" ] || { echo "error: hostfile $HOSTFILE not found" >&2; exit 2; }
command -v pdsh >/dev/null || [ "${DS_LAUNCHER:-pdsh}" != pdsh ] || { echo "error: pdsh not found; apt-get install pdsh, or DS_LAUNCHER=openmpi|mvapich" >&2; exit 2; }
# Passed to every node: interface choice, InfiniBand knobs, threads, accelerator.
mkdir -p "$ROOT/runs/launcher"; export DS_ENV_FILE=$ROOT/runs/launcher/deepspeed_env
: > "$DS_ENV_FILE"
for name in $(compgen -e | grep -E '^(NCCL_|GLOO_SOCKET_IFNAME$|TP_SOCKET_IFNAME$|OMP_NUM_THREADS$|DS_ACCELERATOR$|CUDA_VISIBLE_DEVICES$|HF_HOME$|TORCH_EXTENSIONS_DIR$|PATH$|LD_LIBRARY_PATH$)'); do
  printf '%s=%s\n' "$name" "${!name}" >> "$DS_ENV_FILE"
done
MASTER_ADDR=${MASTER_ADDR:-$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")}
cd "$ROOT"
exec deepspeed --hostfile "$HOSTFILE" --launcher "${DS_LAUNCHER:-pdsh}" --master_addr "$MASTER_ADDR" \
  --master_port "${MASTER_PORT:-29500}" train.py "$@"
