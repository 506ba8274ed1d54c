"""benchmarks/engine_throughput.py's main-only floor: its inputs (already corrupted, no aux) and the
ratios it reports beside fast/original, fast-offline's among them."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.engine_throughput import MAIN_ONLY, OFFLINE, add_ratios, main_only_inputs  # noqa: E402
from fast_electra_ds.config.run_config import RunConfig  # noqa: E402


@pytest.mark.parametrize("corrective_lm", [False, True])
def test_main_only_inputs_are_a_random_replacement_without_an_aux(corrective_lm):
    config = RunConfig(method="fast")
    config.model.corrective_lm = corrective_lm
    method = SimpleNamespace(config=config, tokens=SimpleNamespace(vocab_size=30522))
    ids = torch.randint(5, 30522, (8, 128), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs = main_only_inputs(method, batch, torch.Generator().manual_seed(1))
    changed = inputs["input_ids"] != ids
    assert torch.equal(inputs["is_replaced"], changed)
    assert 0.10 < changed.float().mean().item() < 0.20  # mask_prob 0.15 of 1024 positions, random tokens
    assert ("original_ids" in inputs) == corrective_lm
    again = main_only_inputs(method, batch, torch.Generator().manual_seed(1))
    assert torch.equal(again["input_ids"], inputs["input_ids"])  # seeded: the same replacement


def test_main_only_over_original_is_paired_per_step_beside_its_flops_prediction():
    def timed(times, gflops):
        return {"step_times": times, "gflops_per_sequence": gflops}
    result = {"methods": {"fast": timed([0.8, 0.9, 1.2], 8.0), "original": timed([1.0, 1.0, 1.5], 10.0),
                          MAIN_ONLY: timed([0.6, 0.7, 0.9], 6.0)}}
    add_ratios(result)
    floor = result["main_only_over_original"]
    assert floor["measured"] == pytest.approx(0.6) and floor["range"] == pytest.approx([0.6, 0.7])
    assert floor["predicted"] == pytest.approx(0.6)
    assert result["fast_over_original"]["measured"] == pytest.approx(0.8)
    assert "fast_over_electra" not in result  # electra not timed


def test_fast_offline_is_reported_against_original_and_online_fast():
    def timed(times, gflops):
        return {"step_times": times, "gflops_per_sequence": gflops}
    result = {"methods": {"fast": timed([1.0, 2.0], 8.0), "original": timed([2.0, 2.0], 10.0), OFFLINE: timed([0.5, 1.5], 6.0)}}
    add_ratios(result)
    assert result["fast_offline_over_fast"]["measured"] == pytest.approx(0.625)  # median of 0.5 and 0.75
    assert result["fast_offline_over_original"]["predicted"] == pytest.approx(0.6)
