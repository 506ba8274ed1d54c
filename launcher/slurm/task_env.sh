#!/usr/bin/env bash
# One srun task = one training process: torch env:// rendezvous variables from Slurm's, then exec the
# command (so SIGUSR1/SIGTERM forwarded by srun reach python itself).
export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
export LOCAL_WORLD_SIZE=${SLURM_NTASKS_PER_NODE%%(*}
export LOCAL_WORLD_SIZE=${LOCAL_WORLD_SIZE:-1}
: "${MASTER_ADDR:?MASTER_ADDR is not set (train.sbatch sets it)}" "${MASTER_PORT:?MASTER_PORT is not set}"
exec "$@"
