"""Which device this rank trains on, bound before the first collective, and which Adam runs there.

DeepSpeed (engine, init_process_group's device_id) takes the device as cuda:LOCAL_RANK. Where the
scheduler binds one GPU per task (Slurm --gpus-per-task=1: CUDA_VISIBLE_DEVICES holds one GPU, but
SLURM_LOCALID runs 0..G-1), that ordinal does not exist. So the ordinal is chosen from what this
process sees, and LOCAL_RANK is rewritten to it so DeepSpeed agrees."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import UserError


def visible_gpu_count(cuda_visible_devices: str | None, device_count: int) -> int:
    """GPUs this process can address: CUDA_VISIBLE_DEVICES' entries when set, else torch's count."""
    if cuda_visible_devices is None:
        return device_count
    entries = [e for e in cuda_visible_devices.split(",") if e.strip()]
    return min(len(entries), device_count) if device_count else len(entries)


def cuda_ordinal(local_rank: int, visible: int) -> int:
    """The ordinal this rank uses among the `visible` GPUs: its own one when it sees exactly one
    (a per-task binding), else its local rank."""
    if visible < 1:
        raise UserError("no GPU is visible to this process (CUDA_VISIBLE_DEVICES is empty)",
                        "give each task a GPU (srun --gpus-per-task=1 or --gpus-per-node), or run on CPU with DS_ACCELERATOR=cpu")
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise UserError(f"local rank {local_rank} has no GPU of its own: this process sees {visible} GPUs "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})",
                        "start at most one process per visible GPU on each node, or bind one GPU per task (srun --gpus-per-task=1)")
    return local_rank


def cpu_bf16_is_emulated(cpuinfo: str | None = None) -> bool:
    """True on an x86 CPU whose flags name neither AVX512-BF16 nor AMX-BF16: bf16 matmuls are then
    emulated, several times slower than fp32 (a study step took 5.7 s in bf16, 0.86 s in fp32 on an
    AVX2-only EPYC). False where it cannot tell (no /proc/cpuinfo, another architecture)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return flags is not None and not {"avx512_bf16", "amx_bf16"} & set(flags)  # x86 names its features "flags"


def bind_device() -> torch.device:
    """Set this rank's device before any process group exists (NCCL then never guesses it) and make
    LOCAL_RANK name it. CPU and other accelerators: nothing to bind."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() != "cuda":
        return training_device()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    ordinal = cuda_ordinal(local_rank, visible_gpu_count(os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count()))
    os.environ["LOCAL_RANK"] = str(ordinal)
    torch.cuda.set_device(ordinal)
    return torch.device("cuda", ordinal)


def training_device() -> torch.device:
    """This rank's device (after bind_device): the current CUDA device, or the accelerator's
    device for LOCAL_RANK, or the CPU."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        return torch.device("cpu")
    if accelerator.device_name() == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(accelerator.device_name(int(os.environ.get("LOCAL_RANK", 0))))


def barrier() -> None:
    """dist.barrier() that names this rank's GPU: without it NCCL guesses rank % GPUs when no
    collective has run yet, which is another rank's GPU under a per-task binding."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


# --- Adam ------------------------------------------------------------------------------------------

def prebuilt_fused_adam() -> bool:
    """DeepSpeed's FusedAdam was compiled when DeepSpeed was installed (DS_BUILD_FUSED_ADAM=1) for
    this accelerator: using it needs no nvcc or ninja at run time."""
    try:
        from deepspeed.accelerator import get_accelerator
        from deepspeed.git_version_info import accelerator_name, installed_ops
    except ImportError:
        return False
    return bool(installed_ops.get("fused_adam", False)) and accelerator_name == get_accelerator()._name


def adam_params(choice: str, on_cuda: bool, prebuilt: bool) -> dict:
    """The DeepSpeed optimizer params that pick the Adam implementation (train.fused_adam).

    DeepSpeed's `torch_adam` builds torch.optim.AdamW (Adam for type Adam) with the remaining params
    as keyword arguments, so `fused: true` selects torch's fused CUDA kernel. auto: DeepSpeed's
    FusedAdam only where it was prebuilt (its JIT build needs nvcc and ninja on every node), else
    torch's fused AdamW on CUDA, torch's foreach Adam on CPU. true: DeepSpeed's FusedAdam (built at
    first use if not prebuilt). false: torch's Adam (fused on CUDA)."""
    if choice not in ("auto", "true", "false"):
        raise UserError(f"train.fused_adam is {choice!r}", "use auto, true or false")
    deepspeed_fused = choice == "true" or (choice == "auto" and on_cuda and prebuilt)
    if deepspeed_fused:
        return {"torch_adam": False}
    return {"torch_adam": True, "fused": True} if on_cuda else {"torch_adam": True}
