"""The benchmarks' accounting: analytic FLOPs (hand-checked), FlopCounterMode with the CPU SDPA
formula against the analytic count, and one tiny run of each benchmark script."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fast_electra_ds.accounting.flop_counter import count_flops, count_forward_backward  # noqa: E402
from fast_electra_ds.accounting.flops import (encoder_flops, layer_forward_flops_per_token, paper_flops,  # noqa: E402
                                              vocab_head_flops)
from fast_electra_ds.accounting.memory import TrackedStep, deepspeed_peak  # noqa: E402
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
    from fast_electra_ds.models.pretraining import share_embeddings

    setting = get_setting("tiny")
    main, aux = PaperMain(setting), PaperAux(setting)
    assert main.clm.decoder.weight is main.discriminator.electra.embeddings.word_embeddings.weight  # the real, tied head
    assert sum(p.numel() for p in main.parameters()) == paper_params(setting)["main"]
    assert sum(p.numel() for p in aux.parameters()) == paper_params(setting)["aux"]
    share_embeddings(aux.mlm, main.discriminator)
    own = {id(p) for p in main.parameters()}
    assert sum(p.numel() for p in aux.parameters() if id(p) not in own) == paper_params(setting)["generator_shared"]


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


def test_deepspeed_accounting_by_hand():
    step = TrackedStep(peak=1000 + 300 + 50, trained_param_bytes=2 * 500, trained_numel=500, persistent_numel=100,
                       frozen_param_bytes=50)
    assert step.dynamic == 300
    # ZeRO-0, bf16: 16-bit params 2Ψ + fp32 master and Adam moments 12Ψ
    assert deepspeed_peak(step, 0, 1, "bf16")["total"] == 14 * 500 + 300 + 50
    assert deepspeed_peak(step, 1, 4, "bf16")["total"] == 2 * 500 + 12 * 500 / 4 + 300 + 50
    # ZeRO-3: (2 + 12 + 2 gradient buffer)Ψ/N + persistent parameters whole + the contiguous-gradient bucket
    parts = deepspeed_peak(step, 3, 4, "bf16", reduce_bucket_size=1000)
    assert parts["model_states"] == int(16 * 500 / 4 + 2 * 100) and parts["buffers"] == 2000  # persistent: whole, beside the partition
    assert deepspeed_peak(step, 3, 1, "bf16", contiguous_gradients=False)["buffers"] == 0
    assert deepspeed_peak(step, 0, 1, "fp32")["model_states"] == 12 * 500  # fp32: the parameters are the master copy


def test_flops_script_tiny():
    from benchmarks import flops
    result = flops.main(["--settings", "tiny", "--out", ""])["tiny"]
    assert result["counted"]["original_total"] == pytest.approx(result["analytic"]["original_total"], rel=0.1)


def test_memory_script_tiny_agrees_with_the_real_engine_step():
    from benchmarks import memory
    result = memory.main(["--settings", "tiny", "--validate", "tiny", "--validate-stages", "0", "--out", ""])
    (v,) = result["validation"]
    assert v["setting"]["zero_stage"] == 0 and v["setting"]["world_size"] == 1
    for key in ("main", "original_aux", "original_total", "fast_aux", "fast_total"):
        assert v["simulated"][key] == pytest.approx(v["measured"][key], rel=0.1), (key, v["simulated"], v["measured"])
    ours = result["simulated"]["tiny"]["ours"]
    assert ours["fast_total"] < ours["original_total"]


def test_posters_original_generator_adds_its_embedding_states_and_all_position_logits():
    from benchmarks import memory
    shared = memory.simulate(get_setting("tiny", vocab_size=4000))
    poster = memory.simulate(get_setting("tiny", vocab_size=4000, original_generator="poster"))
    assert get_setting("paper-base").original_generator == "poster" and get_setting("small").original_generator == "electra"
    assert poster["main"] == shared["main"] and poster["fast_total"] == shared["fast_total"]  # only Original changes
    s = get_setting("tiny")
    embedding_states = 4000 * s.aux_hidden * 14  # own word embeddings: 16-bit weight, fp32 master + 2 Adam moments (ZeRO-0)
    assert poster["detail"]["original"]["model_states"] - shared["detail"]["original"]["model_states"] >= embedding_states
    assert poster["original_aux"] - shared["original_aux"] > embedding_states  # plus the logits over all positions


def test_throughput_script_tiny():
    from benchmarks import throughput
    result = throughput.main(["--preset", "tiny", "--steps", "1", "--warmup", "0", "--seq-len", "32", "--micro-batch", "2",
                              "--vocab-size", "500", "--out", ""])
    assert set(result["methods"]) == {"mlm", "electra", "fast"}
    assert all(m["tokens_per_s"] > 0 for m in result["methods"].values())
    fast = result["methods"]["fast"]
    assert fast["predicted_speedup"] == pytest.approx(result["methods"]["electra"]["gflops_per_sequence"] / fast["gflops_per_sequence"])
    assert fast["target_met"] == (fast["measured_speedup"] >= fast["predicted_speedup"])
    assert result["methods"]["electra"]["target_met"] is None


def test_throughput_drives_any_method_with_the_trainers_hooks():
    from benchmarks import throughput
    from fast_electra_ds.methods import METHODS
    from fast_electra_ds.methods.mlm import MaskedLM

    calls = {"end_step": [], "before_optimizer_step": 0}

    class HookProbe(MaskedLM):  # a method relying on the per-step hooks, as adaptive schedules do
        name = "hook-probe"
        reads_step_metrics = True  # end_step gets every step's metrics

        def before_optimizer_step(self, param_groups):
            calls["before_optimizer_step"] += 1
            assert param_groups and all(g["params"] for g in param_groups)

        def end_step(self, ctx, metrics):
            calls["end_step"].append((ctx.step, metrics["mlm_loss"]))

    METHODS[HookProbe.name] = HookProbe
    try:
        result = throughput.main(["--methods", "hook-probe", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--seq-len", "32",
                                  "--micro-batch", "2", "--vocab-size", "500", "--out", ""])
    finally:
        del METHODS[HookProbe.name]
    assert set(result["methods"]) == {"hook-probe"}
    assert calls["before_optimizer_step"] == 3 and [s for s, _ in calls["end_step"]] == [0, 1, 2]
    assert all(loss > 0 for _, loss in calls["end_step"])


def test_report_script_tiny(tmp_path):
    from benchmarks import report
    report.main(["--quick", "--settings", "tiny", "--steps", "1", "--validate", "tiny", "--validate-stages", "3", "--throughput-preset", "tiny",
                 "--engine-shapes", "tiny", "--out", str(tmp_path), "--no-readme"])
    for name in ("flops.csv", "memory.csv", "memory_validation.csv", "throughput.csv", "report.md", "flops.json", "engine_throughput.json"):
        assert (tmp_path / name).is_file()
    targets = json.loads((tmp_path / "targets.json").read_text())
    assert targets["engine"] == "deepspeed" and set(targets["fast_over_original_step_time"]) == {"tiny"}
    assert set(targets["fast_over_original_memory"]) == set(targets["fast_over_electra_memory"]) == {"tiny"}
    # what bounds the targets: the main model's step alone, timed in the same engine run, and the memory
    # ratio per ZeRO set-up beside main/Original (no aux can do better)
    assert set(targets["main_only_over_original_step_time"]) == {"tiny"}
    assert set(targets["step_time_flops_predicted"]["main_only_over_original"]) == {"tiny"}
    assert targets["step_time_flops_predicted"]["main_only_over_original"]["tiny"] < targets["step_time_flops_predicted"]["fast_over_original"]["tiny"]
    assert set(targets["fast_over_original_memory_zero3"]) == {"zero3-8ranks", "zero3-16ranks"}
    assert set(targets["memory_bound_zero_cost_aux"]) == {"zero0-1ranks", "zero3-8ranks", "zero3-16ranks"}
    for setup, ratios in targets["fast_over_original_memory_zero3"].items():
        assert targets["memory_bound_zero_cost_aux"][setup]["tiny"] < ratios["tiny"] < 1
    # replacements made ahead of time: timed in the same engine run, and at the free-aux bound in memory
    assert set(targets["fast_offline_over_original_step_time"]) == {"tiny"}
    offline_memory = targets["fast_offline_over_original_memory"]["tiny"]
    assert targets["memory_bound_zero_cost_aux"]["zero0-1ranks"]["tiny"] <= offline_memory < targets["fast_over_original_memory"]["tiny"]
    # a stored engine run is reported as it is, not timed again
    stored = tmp_path / "stored_engine.json"
    stored.write_text((tmp_path / "engine_throughput.json").read_text())
    report.main(["--quick", "--settings", "tiny", "--steps", "1", "--validate", "", "--throughput-preset", "tiny",
                 "--engine-results", str(stored), "--out", str(tmp_path / "again"), "--no-readme"])
    again = json.loads((tmp_path / "again" / "targets.json").read_text())
    assert again["fast_over_original_step_time"] == targets["fast_over_original_step_time"]
    assert again["main_only_over_original_step_time"] == targets["main_only_over_original_step_time"]
    assert "stored_engine.json" in again["step_time_setup"]


def test_zero3_simulation_frees_each_gradient_as_deepspeeds_hook_does():
    """Two 1000 x 1000 layers: holding every gradient, the backward peak carries both weights'
    gradients; ZeRO-3 moves each into the reduce bucket (counted apart) as it is accumulated."""
    from fast_electra_ds.accounting.memory import track_forward_backward

    def build():
        model = torch.nn.Sequential(torch.nn.Linear(1000, 1000, bias=False), torch.nn.Linear(1000, 1000, bias=False))
        x = torch.randn(1, 1000)
        return [model], [], lambda: model(x).sum()

    weight = 1000 * 1000 * 4
    held = track_forward_backward(build)
    freed = track_forward_backward(build, gradients_leave=True)
    assert held.trained_numel == freed.trained_numel == 2 * 1000 * 1000
    assert held.peak >= 4 * weight  # both weights and both gradients
    assert freed.peak < 3 * weight + 100_000  # both weights, at most one gradient at a time (+ 1000-float activations)


def test_memory_by_setup_shards_the_generator_not_the_frozen_aux():
    from benchmarks import memory
    s = get_setting("tiny")
    r = memory.ratios_by_setup([s], ((0, 1), (3, 1), (3, 8)))["tiny"]
    aux_bytes = paper_params(s)["aux"] * 2
    for setup in r.values():
        assert setup["fast"] - setup["main"] >= aux_bytes  # a whole 16-bit aux on every rank
        assert setup["bound_zero_cost_aux"] == setup["main"] / setup["original"] < setup["fast_over_original"]
        # replacements read from shards: no aux on the rank, so the main step plus the replaced ids (a few KB)
        assert 0 <= setup["fast_offline"] - setup["main"] < aux_bytes / 10
    # Original's generator trains under ZeRO-3: its states are divided by the ranks, the frozen aux's bytes are not
    assert r["zero3-8ranks"]["original"] - r["zero3-8ranks"]["main"] < r["zero3-1ranks"]["original"] - r["zero3-1ranks"]["main"]
    assert r["zero3-8ranks"]["fast"] - r["zero3-8ranks"]["main"] == r["zero3-1ranks"]["fast"] - r["zero3-1ranks"]["main"]


def test_the_peak_matmul_shrinks_where_the_dtype_is_emulated():
    """bf16 on a CPU without native support: a 256-cube took 22 ms here (fp32: 0.7 ms); the 2048-cube
    peak measure then took minutes per matmul. The size is chosen from the probe."""
    from benchmarks.throughput import matmul_size

    assert matmul_size(0.0007, 256, 2048, 0.5) == 2048  # fp32 here: the full size
    assert matmul_size(0.022, 256, 2048, 0.5) == 512  # emulated bf16: 0.022 * 8 = 0.18 s at 512
    assert matmul_size(10.0, 256, 2048, 0.5) == 256  # never below the probe


def test_mfu_is_shown_only_where_its_peak_means_something():
    from benchmarks.engine_throughput import mfu_cell

    assert mfu_cell({"bf16_emulated": False}, {"mfu": 0.42}) == "42.0%"
    assert mfu_cell({"bf16_emulated": True}, {"mfu": 0.42}).startswith("– (bf16 emulated")
    assert mfu_cell({}, {"mfu": 1.922}) == "– (peak mis-timed: 192%)"  # a stored run without the flag
