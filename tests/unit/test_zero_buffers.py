"""ZeRO-3 buffers: the shipped DeepSpeed configs set them (accounting/memory.py zero3_buffer_sizes at
ELECTRA-Large's hidden size), and the memory model counts them."""
import json
from pathlib import Path

import pytest

from fast_electra_ds.accounting.memory import TrackedStep, ZeroBuffers, deepspeed_peak, zero3_buffer_sizes

DS_CONFIGS = Path(__file__).resolve().parents[2] / "ds_configs"


@pytest.mark.parametrize("name", ["zero3.json", "zero3_fp16.json", "zero3_offload.json"])
def test_shipped_zero3_configs_set_every_buffer_from_the_formula(name):
    zero = json.loads((DS_CONFIGS / name).read_text())["zero_optimization"]
    assert {k: zero[k] for k in zero3_buffer_sizes(1024)} == zero3_buffer_sizes(1024)
    assert zero3_buffer_sizes(768)["reduce_bucket_size"] == 12 * 768 ** 2  # one base layer's parameters


def test_shipped_zero2_config_sets_its_bucket():
    zero = json.loads((DS_CONFIGS / "zero2.json").read_text())["zero_optimization"]
    assert zero["reduce_bucket_size"] == zero3_buffer_sizes(1024)["reduce_bucket_size"]


def test_buffers_are_read_from_the_config_with_deepspeeds_defaults():
    assert ZeroBuffers.from_ds_config({}) == ZeroBuffers()
    shipped = ZeroBuffers.from_ds_config(json.loads((DS_CONFIGS / "zero3.json").read_text()))
    assert shipped.reduce_bucket_size == 12 * 1024 ** 2 and shipped.param_persistence_threshold == 10240
    assert shipped.max_reuse_distance == 12 * 1024 ** 2 and ZeroBuffers().max_reuse_distance == 10 ** 9


def test_zero3_gathered_parameters_by_hand():
    step = TrackedStep(peak=2 * 10_000 + 300, trained_param_bytes=2 * 10_000, trained_numel=10_000, persistent_numel=100,
                       frozen_param_bytes=0, largest_numel=1_000)
    # DeepSpeed's defaults: the reuse distance (1e9) keeps every partitioned parameter gathered, whole
    # (the all-gather fills a fresh full-size buffer; this rank's partition stays beside it)
    default = deepspeed_peak(step, 3, 4, "bf16")
    assert default["gathered"] == 2 * (10_000 - 100)
    assert default["buffers"] == 2 * 500_000_000
    # bounded: the largest parameter + the reuse distance + the prefetch bucket (capped by max live)
    zero = ZeroBuffers(reduce_bucket_size=2_000, prefetch_bucket_size=500, max_live_parameters=300, max_reuse_distance=1_200)
    parts = deepspeed_peak(step, 3, 4, "bf16", zero=zero)
    assert parts["gathered"] == 2 * (1_000 + 1_200 + 300) and parts["buffers"] == 4_000
    assert parts["total"] == parts["model_states"] + 4_000 + parts["gathered"] + step.dynamic
    assert deepspeed_peak(step, 3, 1, "bf16", zero=zero)["gathered"] == 0  # one rank: the partition is the parameter
    assert deepspeed_peak(step, 0, 4, "bf16", zero=zero)["gathered"] == 0
