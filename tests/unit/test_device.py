"""Device binding and the Adam choice: the decisions made on a GPU cluster, checked on CPU; a CPU
that only emulates bf16 told from its flags."""
import json
from pathlib import Path

import pytest

from fast_electra_ds.runtime import device
from fast_electra_ds.config.run_config import RunConfig
from fast_electra_ds.runtime.device import adam_params, cpu_bf16_is_emulated, cuda_ordinal, visible_gpu_count
from fast_electra_ds.config.ds_config import resolve_ds_config
from fast_electra_ds.errors import UserError


def test_one_gpu_per_task_is_cuda0_whatever_the_local_rank():
    # srun --gpus-per-task=1: task 3 of a node sees only its own GPU
    assert cuda_ordinal(local_rank=3, visible=visible_gpu_count("5", device_count=1)) == 0
    assert cuda_ordinal(local_rank=0, visible=1) == 0


def test_all_gpus_visible_uses_the_local_rank():
    assert cuda_ordinal(local_rank=5, visible=visible_gpu_count(None, device_count=8)) == 5
    assert cuda_ordinal(local_rank=1, visible=visible_gpu_count("2,3", device_count=2)) == 1


def test_a_rank_without_a_gpu_is_a_one_line_error():
    with pytest.raises(UserError, match="local rank 4 has no GPU of its own.*one GPU per task"):
        cuda_ordinal(local_rank=4, visible=visible_gpu_count("0,1", device_count=2))
    with pytest.raises(UserError, match="no GPU is visible"):
        cuda_ordinal(local_rank=0, visible=visible_gpu_count("", device_count=0))


def test_adam_never_jit_builds_unless_asked():
    assert adam_params("auto", on_cuda=True, prebuilt=False) == {"torch_adam": True, "fused": True}
    assert adam_params("auto", on_cuda=True, prebuilt=True) == {"torch_adam": False}  # DeepSpeed's op, already compiled
    assert adam_params("auto", on_cuda=False, prebuilt=True) == {"torch_adam": True}  # foreach on CPU
    assert adam_params("true", on_cuda=True, prebuilt=False) == {"torch_adam": False}
    assert adam_params("false", on_cuda=True, prebuilt=True) == {"torch_adam": True, "fused": True}
    with pytest.raises(UserError, match="train.fused_adam is 'yes'"):
        adam_params("yes", on_cuda=True, prebuilt=False)


def test_resolved_config_on_cuda_builds_torch_fused_adamw(monkeypatch):
    """What DeepSpeed's _configure_basic_optimizer builds from the resolved params: torch_adam pops
    into torch.optim.AdamW, every other param is a keyword of it."""
    import torch

    monkeypatch.setattr("fast_electra_ds.config.ds_config.prebuilt_fused_adam", lambda: False)
    ds = {"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
    params = dict(resolve_ds_config(ds, 1, RunConfig(), on_cuda=True)["optimizer"]["params"])
    assert params.pop("torch_adam") is True and params["fused"] is True
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([weight], **params, foreach=None)  # as DeepSpeed calls it
    assert optimizer.defaults["fused"] is True
    # the user's own torch variant is kept: foreach and fused together would be an error in torch
    ds["optimizer"]["params"]["foreach"] = True
    assert "fused" not in resolve_ds_config(ds, 1, RunConfig(), on_cuda=True)["optimizer"]["params"]


def test_prebuilt_fused_adam_reads_deepspeeds_install_record(monkeypatch):
    import deepspeed.git_version_info as info
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(info, "installed_ops", {**info.installed_ops, "fused_adam": True})
    monkeypatch.setattr(info, "accelerator_name", get_accelerator()._name)
    assert device.prebuilt_fused_adam() is True
    monkeypatch.setattr(info, "accelerator_name", "some-other-accelerator")  # built for another device
    assert device.prebuilt_fused_adam() is False


@pytest.mark.parametrize("visible, local_rank", [(None, "3"), ("3", "0"), ("0,1,2,3", "3")])
def test_slurm_task_env_names_the_gpu_the_task_sees(visible, local_rank):
    import os
    import subprocess

    from tests.helpers import ROOT

    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(SLURM_PROCID="3", SLURM_NTASKS="4", SLURM_LOCALID="3", SLURM_NTASKS_PER_NODE="4(x1)", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    out = subprocess.run(["bash", str(ROOT / "launcher/slurm/task_env.sh"), "sh", "-c", "echo $LOCAL_RANK $RANK"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == [local_rank, "3"]


def test_emulated_bf16_is_told_from_the_cpu_flags():
    assert cpu_bf16_is_emulated("processor : 0\nflags : fpu sse2 avx2 fma\n")  # AVX2 only: emulated
    assert not cpu_bf16_is_emulated("flags : fpu sse2 avx2 avx512f avx512_bf16\n")  # Cooper Lake and later
    assert not cpu_bf16_is_emulated("flags : fpu sse2 avx2 amx_bf16 amx_tile\n")  # Sapphire Rapids
    assert not cpu_bf16_is_emulated("Features : fp asimd bf16\n")  # not x86: no claim


def test_the_shipped_fp32_config_is_zero3_without_bf16():
    """ds_configs/zero3_fp32.json (for CPUs that emulate bf16) must not drift from zero3.json."""
    root = Path(__file__).resolve().parents[2] / "ds_configs"
    bf16, fp32 = (json.loads((root / name).read_text()) for name in ("zero3.json", "zero3_fp32.json"))
    assert bf16.pop("bf16") == {"enabled": True} and fp32 == bf16
