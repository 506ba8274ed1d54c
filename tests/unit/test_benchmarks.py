"""The benchmarks' accounting: analytic FLOPs (hand-checked), FlopCounterMode with the CPU SDPA
formula against the analytic count, and one tiny run of each benchmark script."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fast_electra_ds.accounting.flop_counter import count_flops, count_forward_backward  # noqa: E402
from fast_electra_ds.accounting.flops import (encoder_flops, layer_forward_flops_per_token, paper_flops,  # noqa: E402
                                              vocab_head_flops)
from fast_electra_ds.accounting.memory import TrackedPeak  # noqa: E402
from fast_electra_ds.accounting.paper import PAPER_TABLES, PaperAux, PaperMain, get_setting, paper_params  # noqa: E402


def test_analytic_small_cases_by_hand():
    # h=2, ff=8, s=3: 8·4 + 4·2·8 + 4·3·2 = 32 + 64 + 24
    assert layer_forward_flops_per_token(2, 8, 3) == 120
    assert encoder_flops(layers=2, hidden=2, intermediate=8, seq_len=3) == 3 * 2 * 120
    assert vocab_head_flops(hidden=2, vocab_size=10, positions=3) == 3 * 2 * 10 * 2
    # Base: 24h² + 4sh per token and layer
    assert layer_forward_flops_per_token(768, 3072, 512) == 24 * 768 ** 2 + 4 * 512 * 768 == 15_728_640


@pytest.mark.parametrize("name", ["paper-base", "paper-large"])
def test_paper_formula_reproduces_the_poster(name):
    ours, paper = paper_flops(get_setting(name)), PAPER_TABLES[name]
    for key in ["main", "original_aux", "original_total", "fast_aux", "fast_total"]:
        assert ours[key] / 1e9 == pytest.approx(paper[key], abs=0.06), key
    assert ours["fast_aux"] / ours["original_aux"] == pytest.approx(1 / 3)


def test_fast_aux_memory_is_its_16bit_params():
    for name, gb in [("paper-base", 0.25), ("paper-large", 0.42)]:
        assert paper_params(get_setting(name))["aux"] * 2 / 1e9 == pytest.approx(gb, abs=0.01)


def test_param_count_matches_real_models():
    setting = get_setting("tiny")
    main, aux = PaperMain(setting), PaperAux(setting)
    assert sum(p.numel() for p in main.parameters()) == paper_params(setting)["main"]
    assert sum(p.numel() for p in aux.parameters()) == paper_params(setting)["aux"]


def test_flop_counter_with_cpu_sdpa_formula_matches_analytic():
    setting = get_setting("tiny", seq_len=128, corrective_lm=False)
    main = PaperMain(setting).eval()  # dropout 0: CPU SDPA runs its fused kernel
    ids = torch.zeros(2, setting.seq_len, dtype=torch.long)
    with torch.no_grad():
        total, per_op = count_flops(lambda: main.discriminator.electra(input_ids=ids))
    assert per_op.get("aten._scaled_dot_product_flash_attention_for_cpu", 0) > 0  # counted, not 0
    analytic = 2 * encoder_flops(setting.main_layers, setting.main_hidden, setting.main_intermediate, setting.seq_len)
    assert total == pytest.approx(analytic, rel=0.02)
    counts = count_forward_backward(lambda: main(ids, ids))
    assert counts["backward_ops"].get("aten._scaled_dot_product_flash_attention_for_cpu_backward", 0) > 0
    # matmuls: backward = 2 × forward; torch's SDPA backward formula counts 2.5 × (it includes the recompute)
    assert 2.0 <= counts["backward"] / counts["forward"] <= 2.5


def test_zero_division_of_model_states():
    peak = TrackedPeak(total=100, by_category={"param": 20, "grad": 20, "optimizer": 40, "activation": 20, "buffer": 0,
                                               "temp": 0, "other": 0}, frozen_param_bytes=4)
    assert peak.per_rank(0, 4) == 100
    assert peak.per_rank(1, 4) == 100 - 30
    assert peak.per_rank(2, 4) == 100 - 45
    assert peak.per_rank(3, 4) == 100 - 45 - 12


def test_flops_script_tiny():
    from benchmarks import flops
    result = flops.main(["--settings", "tiny", "--out", ""])["tiny"]
    assert result["counted"]["original_total"] == pytest.approx(result["analytic"]["original_total"], rel=0.1)


def test_memory_script_tiny():
    from benchmarks import memory
    result = memory.main(["--settings", "tiny", "--validate", "tiny", "--out", ""])
    v = result["validation"]
    for key in ("main", "original_total", "fast_total"):
        assert v["simulated"][key] == pytest.approx(v["measured"][key], rel=0.1)
    ours = result["simulated"]["tiny"]["ours"]
    assert ours["fast_total"] < ours["original_total"]


def test_throughput_script_tiny():
    from benchmarks import throughput
    result = throughput.main(["--preset", "tiny", "--steps", "1", "--warmup", "0", "--seq-len", "32", "--micro-batch", "2",
                              "--vocab-size", "500", "--out", ""])
    assert set(result["methods"]) == {"mlm", "electra", "fast"}
    assert all(m["tokens_per_s"] > 0 for m in result["methods"].values())


def test_report_script_tiny(tmp_path):
    from benchmarks import report
    report.main(["--quick", "--settings", "tiny", "--steps", "1", "--out", str(tmp_path), "--no-readme"])
    for name in ("flops.csv", "memory.csv", "throughput.csv", "report.md", "flops.json"):
        assert (tmp_path / name).is_file()
