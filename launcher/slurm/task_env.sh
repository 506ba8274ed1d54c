#!/usr/bin/env bash
# One srun task = one training process: torch env:// rendezvous variables from Slurm's, then exec the
# command (so SIGUSR1/SIGTERM forwarded by srun reach python itself).
export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
# A task bound to one GPU (srun --gpus-per-task=1, --gpu-bind=single) sees only it, as cuda:0, whatever its
# SLURM_LOCALID; DeepSpeed takes the device as cuda:LOCAL_RANK (fast_electra_ds/runtime/device.py does the same in Python).
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${CUDA_VISIBLE_DEVICES#*,}" = "$CUDA_VISIBLE_DEVICES" ]; then
  export LOCAL_RANK=0
fi
export LOCAL_WORLD_SIZE=${SLURM_NTASKS_PER_NODE%%(*}
export LOCAL_WORLD_SIZE=${LOCAL_WORLD_SIZE:-1}
: "${MASTER_ADDR:?MASTER_ADDR is not set (train.sbatch sets it)}" "${MASTER_PORT:?MASTER_PORT is not set}"
exec "$@"
