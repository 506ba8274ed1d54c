"""`adaptive-exit` and `early-exit-disc` (Kang et al.) on CPU without DeepSpeed: the P update and the
draws, the exits as MLM heads, which layers run, the section accuracies and threshold, the optimizer
groups that a skipped part gets lr 0 in, state for resume, and list-valued config keys."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fast_electra_ds.config.run_config import load_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.models.early_exit import run_layers
from fast_electra_ds.methods import METHODS, StepContext
from fast_electra_ds.methods.adaptive_exit import draw_exit, exit_generator, update_p
from fast_electra_ds.methods.early_exit_disc import next_active_sections
from fast_electra_ds.models.sampling import gumbel_max_sample
from fast_electra_ds.methods.skipped_groups import SkippedGroups
from tests.method_helpers import TOKENS, batch, chi_square_p_value, config

ADAPTIVE = ["model.num_hidden_layers=4", "early_exit.exits=2,4", "early_exit.initial_p=0.5,0.5", "early_exit.exit_loss_weights=1,3"]
DISC = ["model.num_hidden_layers=4", "early_exit.sections=1,2,3,4"]


def build(name, *overrides, seed=0):
    torch.manual_seed(seed)
    m = METHODS[name](config(*overrides), TOKENS, torch.device("cpu"))
    return m, m.build_model(None)


def ctx(step=0, rank=0):
    return StepContext(step, 0.0, torch.Generator().manual_seed(1000 * rank + step))


def reduced(metrics):
    return {k: (v[0] / v[1]).item() if v[1] > 0 else float("nan") for k, v in metrics.items() if v[0].dim() == 0}  # scalars


def count_calls(modules):
    calls = [0] * len(modules)
    for i, module in enumerate(modules):
        module.register_forward_hook(lambda mod, args, out, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


# --- the P update (the paper's formula) ---------------------------------------------------------------

def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


def test_p_update_is_softmax_of_p_plus_alpha_diff_r():
    p = [0.1, 0.2, 0.3, 0.4]
    new = update_p(p, acc_now=0.75, acc_prev=0.6, alpha=0.7)
    assert np.allclose(new, softmax(np.array(p) + 0.7 * 0.15 * np.arange(4)), rtol=0, atol=1e-12)
    assert sum(new) == pytest.approx(1.0, abs=1e-12)
    # diff is clipped to [-1, 1]
    assert np.allclose(update_p(p, 3.0, 0.5, 0.7), softmax(np.array(p) + 0.7 * np.arange(4)), atol=1e-12)
    assert np.allclose(update_p(p, -2.0, 0.5, 0.7), softmax(np.array(p) - 0.7 * np.arange(4)), atol=1e-12)
    # R generalises to [0, 1, ..., n-1]
    assert np.allclose(update_p([0.5, 0.5], 0.9, 0.8, 2.0), softmax([0.5, 0.5 + 2.0 * 0.1]), atol=1e-12)


def mean_exit(p):
    return float(np.dot(p, np.arange(len(p))))


def test_worked_example_moves_mass_toward_deeper_exits():
    """The paper: P = [0.4, 0.4, 0.1, 0.1], acc 0.7 -> 0.9 gives [0.27, 0.28, 0.21, 0.21]."""
    p = [0.4, 0.4, 0.1, 0.1]
    default_alpha = config().early_exit.alpha
    assert default_alpha == 0.1
    new = update_p(p, 0.9, 0.7, default_alpha)
    assert np.abs(np.array(new) - [0.27, 0.28, 0.21, 0.21]).max() < 0.012  # the garbled example, best-fit alpha
    flattened = softmax(p)  # what the softmax alone does (alpha 0)
    for alpha in (0.1, 1.0, 3.0):
        rising = update_p(p, 0.9, 0.7, alpha)
        falling = update_p(p, 0.7, 0.9, alpha)
        assert mean_exit(rising) > mean_exit(flattened) > mean_exit(falling)
        assert mean_exit(rising) > mean_exit(p)
        assert rising[3] > rising[2] and rising[3] > p[3]


def test_draws_follow_p_and_depend_on_seed_and_step_only():
    p = [0.1, 0.2, 0.3, 0.4]
    draws = torch.tensor([draw_exit(p, exit_generator(1234, step)) for step in range(20_000)])
    counts = torch.bincount(draws, minlength=4).float()
    assert chi_square_p_value(counts, torch.tensor(p)) > 1e-3
    assert [draw_exit(p, exit_generator(7, s)) for s in range(50)] == [draw_exit(p, exit_generator(7, s)) for s in range(50)]
    assert draw_exit([0.0, 0.0, 1.0], exit_generator(0, 3)) == 2


def test_every_rank_and_micro_batch_of_a_step_draws_the_same_exit():
    m, _ = build("adaptive-exit", *ADAPTIVE)
    b = batch()
    for step in range(20):
        exits = {m.prepare_batch(b, StepContext(step, 0.0, torch.Generator().manual_seed(s)))[0]["exit_index"] for s in range(4)}
        assert len(exits) == 1  # per-rank / per-micro-batch generators differ, the exit does not
    assert {m.prepare_batch(b, ctx(step))[0]["exit_index"] for step in range(20)} == {0, 1}


def test_window_update_state_and_resume():
    m, _ = build("adaptive-exit", *ADAPTIVE, "early_exit.window=2", "early_exit.alpha=2.0")
    accs = [0.5, 0.7, 0.8, 0.9, 0.6, 0.6]
    history = []
    for step, acc in enumerate(accs[:3]):
        m.end_step(ctx(step), {"rtd_acc": acc})
        history.append(list(m.p))
    assert history[0] == history[1] == [0.5, 0.5]  # the first window only sets acc_prev
    assert m.acc_prev == pytest.approx(0.6)
    saved = json.loads(json.dumps(m.state_dict()))  # the checkpoint is JSON
    resumed, _ = build("adaptive-exit", *ADAPTIVE, "early_exit.window=2", "early_exit.alpha=0.5")
    resumed.load_state_dict(saved)
    assert resumed.alpha == 2.0  # alpha travels with the checkpoint
    for method in (m, resumed):
        for step, acc in enumerate(accs[3:], start=3):
            method.end_step(ctx(step), {"rtd_acc": acc})
            if step == 3:
                expected = update_p([0.5, 0.5], (0.8 + 0.9) / 2, 0.6, 2.0)
                assert method.p == pytest.approx(expected, abs=1e-12)
                assert method.p[1] > method.p[0]  # accuracy rose: toward the deeper exit
    assert resumed.state_dict() == m.state_dict()
    with pytest.raises(UserError, match="exits"):
        build("adaptive-exit", "model.num_hidden_layers=4", "early_exit.exits=1,2,3,4")[0].load_state_dict(saved)
    assert m.p[1] < update_p([0.5, 0.5], 0.85, 0.6, 2.0)[1]  # 0.85 -> 0.6: back toward the shallower exit
    logged = m.logged_values(ctx())
    assert set(logged) == {"p_exit2", "p_exit4"} and sum(logged.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("overrides, fragment", [
    ([], "early_exit.exits=1,2"),  # tiny: a 2-layer generator, the default exits 3,6,9,12
    (["model.num_hidden_layers=4", "early_exit.exits=2,3"], "last = 4"),
    (["model.num_hidden_layers=4", "early_exit.exits=2,4"], "initial_p"),  # 4 default values for 2 exits
    (["model.num_hidden_layers=4", "early_exit.exits=2,4", "early_exit.initial_p=0.3,0.3", "early_exit.exit_loss_weights=1,2"], "sums to"),
])
def test_exits_are_validated_against_the_generator(overrides, fragment):
    with pytest.raises(UserError) as err:
        METHODS["adaptive-exit"](config(*overrides), TOKENS, torch.device("cpu"))
    assert fragment in str(err.value)


def test_default_exits_fit_the_small_preset():
    m = METHODS["adaptive-exit"](load_config([], ["model.preset=small"]), TOKENS, torch.device("cpu"))
    assert m.generator_config().num_hidden_layers == 12 and m.exits == [3, 6, 9, 12]
    assert m.p == [0.1, 0.2, 0.3, 0.4]


# --- the adaptive-exit model ----------------------------------------------------------------------------

def test_run_layers_is_the_models_own_forward_cut_short():
    _, module = build("adaptive-exit", *ADAPTIVE)
    module.eval()
    electra = module.generator.electra
    b = batch()
    with torch.no_grad():
        full = electra(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        outs = run_layers(electra, b["input_ids"], b["attention_mask"], [2, 4])
    assert len(outs) == 2 and torch.allclose(outs[1], full, atol=1e-5)


def test_lower_exits_skip_the_upper_generator_layers():
    m, module = build("adaptive-exit", *ADAPTIVE)
    gen_calls = count_calls(list(module.generator.electra.encoder.layer))
    disc_calls = count_calls(list(module.main.electra.encoder.layer))
    inputs, _ = m.prepare_batch(batch(), ctx())
    with torch.no_grad():
        module(**{**inputs, "exit_index": 0})
    assert gen_calls == [1, 1, 0, 0] and disc_calls == [1, 1, 1, 1]  # the discriminator always runs in full
    with torch.no_grad():
        module(**{**inputs, "exit_index": 1})
    assert gen_calls == [2, 2, 1, 1]


def test_loss_weights_exits_that_ran_and_replacements_from_the_drawn_exit():
    m, module = build("adaptive-exit", *ADAPTIVE)
    module.eval()
    b = batch()
    inputs, _ = m.prepare_batch(b, ctx())
    seen = []
    module.main.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["input_ids"].clone()), with_kwargs=True)
    for k in (0, 1):
        rng_state = inputs["rng"].get_state()
        with torch.no_grad():
            loss, metrics = module(**{**inputs, "exit_index": k})
            logits = module.exit_logits(inputs["masked_ids"], b["attention_mask"], inputs["selected"], k)
        values = reduced(metrics)
        targets = b["input_ids"][inputs["selected"]]
        losses = [F.cross_entropy(lg, targets).item() for lg in logits]
        assert [values["mlm_loss_exit2"], values["mlm_loss_exit4"]][:k + 1] == pytest.approx(losses, rel=1e-5)
        assert math.isnan(values["mlm_loss_exit4"]) == (k == 0)  # 0/0: not run, same metric names
        weights = [0.25, 0.75][:k + 1]  # 1,3 normalised, over the exits that ran
        assert values["mlm_loss"] == pytest.approx(sum(w * x for w, x in zip(weights, losses)) / sum(weights), rel=1e-5)
        assert loss.item() == pytest.approx(values["mlm_loss"] + 50 * values["rtd_loss"], rel=1e-5)
        assert values["exit_layer"] == [2, 4][k] and values[f"rtd_acc_exit{[2, 4][k]}"] == values["rtd_acc"]
        expected = b["input_ids"].clone()
        expected[inputs["selected"]] = gumbel_max_sample(logits[k], torch.Generator().set_state(rng_state), TOKENS.special_ids)
        assert torch.equal(seen[-1], expected)  # sampled from exit k's logits
    # the upper exit's head reads the concatenation of both exits' hidden states
    assert module.concat_projections[0].in_features == 2 * module.generator.config.hidden_size


def test_each_exit_is_a_working_mlm_head():
    m, module = build("adaptive-exit", *ADAPTIVE)
    optimizer = torch.optim.AdamW(m.param_groups(module), lr=3e-3)
    b = batch()
    history = []
    for step in range(15):
        inputs, _ = m.prepare_batch(b, ctx(step))
        loss, metrics = module(**{**inputs, "exit_index": 1})  # both exits run and train
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values = reduced(metrics)
        history.append((values["mlm_loss_exit2"], values["mlm_loss_exit4"]))
    for i in range(2):
        assert sum(h[i] for h in history[-3:]) / 3 < history[0][i] * 0.9, (i, history)


def test_expected_flops_follow_p():
    m, _ = build("adaptive-exit", *ADAPTIVE)
    m.p = [1.0, 0.0]
    shallow = m.flops_per_sequence(64)
    m.p = [0.0, 1.0]
    deep = m.flops_per_sequence(64)
    m.p = [0.5, 0.5]
    assert shallow < deep and m.flops_per_sequence(64) == pytest.approx((shallow + deep) / 2)
    electra = METHODS["electra"](config("model.num_hidden_layers=4"), TOKENS, torch.device("cpu")).flops_per_sequence(64)
    assert shallow < electra < deep  # deep: electra plus the lower exit's head and the projection


# --- optimizer groups: every parameter once; lr 0 for what did not run ----------------------------------

@pytest.mark.parametrize("name, overrides", [("adaptive-exit", ADAPTIVE), ("early-exit-disc", DISC)])
def test_param_groups_hold_every_trainable_parameter_once(name, overrides):
    m, module = build(name, *overrides)
    groups = m.param_groups(module)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.parameters()))
    assert m.skipped.names == [g["name"] for g in groups] and groups[0]["name"] == "shared"
    word = module.main.electra.embeddings.word_embeddings.weight
    assert any(p is word for p in groups[0]["params"])  # the tied outputs do not pull it into a skippable group


def test_skipped_groups_get_lr_zero_and_it_back_and_no_gradient():
    made = [{"name": "a", "params": [torch.nn.Parameter(torch.ones(3))]}, {"name": "b", "params": [torch.nn.Parameter(torch.ones(3))]}]
    for g in made:
        g["params"][0].grad = torch.ones(3)
    groups = [{"name": "a", "lr": 1.0}, {"name": "b", "lr": 1.0}]
    skipped = SkippedGroups(made)
    skipped.apply(groups, {"b"})
    assert [g["lr"] for g in groups] == [1.0, 0.0]
    assert made[0]["params"][0].grad.sum() == 3 and made[1]["params"][0].grad.sum() == 0
    skipped.apply(groups, {"b"})  # a second micro-batch of the same step
    assert [g["lr"] for g in groups] == [1.0, 0.0]
    skipped.apply(groups, set())  # no scheduler rewrote it: restored
    assert [g["lr"] for g in groups] == [1.0, 1.0]
    skipped.apply(groups, {"b"})
    groups[0]["lr"] = groups[1]["lr"] = 0.5  # a scheduler's step rewrites every group
    skipped.apply(groups, set())
    assert [g["lr"] for g in groups] == [0.5, 0.5]
    with pytest.raises(RuntimeError):
        skipped.apply(list(reversed(groups)), set())


# --- early-exit-disc ---------------------------------------------------------------------------------

def test_threshold_is_the_mean_and_the_lowest_section_above_it_is_the_exit():
    assert next_active_sections([0.80, 0.85, 0.86, 0.87]) == 2  # mean 0.845
    assert next_active_sections([0.90, 0.50, 0.50, 0.50]) == 1
    assert next_active_sections([0.50, 0.50, 0.50, 0.90]) == 4
    assert next_active_sections([0.7, 0.7, 0.7, 0.7]) == 4  # none exceeds: every section runs
    assert next_active_sections([None, None, None, None]) == 4


def test_section_accuracies_over_the_window_and_stale_ones_for_skipped_sections():
    m, _ = build("early-exit-disc", *DISC, "early_exit.window=2")
    nan = float("nan")
    assert m.active == 4  # the first window runs every section
    m.end_step(ctx(0), {"rtd_acc_section1": 0.80, "rtd_acc_section2": 0.84, "rtd_acc_section3": 0.86, "rtd_acc_section4": 0.86})
    m.end_step(ctx(1), {"rtd_acc_section1": 0.82, "rtd_acc_section2": 0.88, "rtd_acc_section3": 0.86, "rtd_acc_section4": 0.90})
    assert m.last_acc == pytest.approx([0.81, 0.86, 0.86, 0.88])
    assert m.active == 2  # mean 0.8525: section 2 (0.86) is the lowest above it
    saved = json.loads(json.dumps(m.state_dict()))
    m.end_step(ctx(2), {"rtd_acc_section1": 0.90, "rtd_acc_section2": 0.70, "rtd_acc_section3": nan, "rtd_acc_section4": nan})
    m.end_step(ctx(3), {"rtd_acc_section1": 0.90, "rtd_acc_section2": 0.74, "rtd_acc_section3": nan, "rtd_acc_section4": nan})
    assert m.last_acc == pytest.approx([0.90, 0.72, 0.86, 0.88])  # sections 3, 4 keep their last measured accuracy
    assert m.active == 1  # mean 0.84
    logged = m.logged_values(ctx(3))
    assert logged["active_sections"] == 1.0 and logged["window_acc_section2"] == pytest.approx(0.72)
    resumed, _ = build("early-exit-disc", *DISC, "early_exit.window=2")
    resumed.load_state_dict(saved)
    assert resumed.active == 2 and resumed.last_acc == pytest.approx([0.81, 0.86, 0.86, 0.88])
    other, _ = build("early-exit-disc", *DISC, "early_exit.sections=2,4")
    with pytest.raises(UserError, match="sections"):
        other.load_state_dict(saved)


def test_both_passes_stop_at_the_active_section():
    m, module = build("early-exit-disc", *DISC)
    layer_calls = count_calls(list(module.main.electra.encoder.layer))
    head_calls = count_calls([module.section_head(s) for s in range(4)])
    m.active = 2
    inputs, _ = m.prepare_batch(batch(), ctx())
    assert inputs["active_sections"] == 2
    loss, metrics = module(**inputs)
    assert layer_calls == [2, 2, 0, 0]  # generator pass and discriminator pass, sections 1-2 only
    assert head_calls == [1, 1, 0, 0]
    values = reduced(metrics)
    assert math.isnan(values["rtd_acc_section3"]) and not math.isnan(values["rtd_acc_section2"])
    assert values["rtd_acc"] == values["rtd_acc_section2"] and values["exit_layer"] == 2
    assert loss.item() == pytest.approx(values["mlm_loss"] + 50 * values["rtd_loss_sections"], rel=1e-5)
    loss.backward()
    for s, (start, end) in enumerate([(0, 1), (1, 2), (2, 3), (3, 4)]):
        params = [p for layer in module.main.electra.encoder.layer[start:end] for p in layer.parameters()]
        params += list(module.section_head(s).parameters())
        got_grad = [p.grad is not None and bool(p.grad.any()) for p in params]
        assert all(got_grad) if s < 2 else not any(got_grad), s


def test_section_losses_are_averaged_and_the_export_is_the_full_discriminator():
    m, module = build("early-exit-disc", *DISC)
    module.eval()
    b = batch()
    inputs, _ = m.prepare_batch(b, ctx())
    seen = []
    module.main.electra.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True)
    with torch.no_grad():
        loss, metrics = module(**inputs)
    assert not seen  # run layer by layer, never through ElectraModel.forward
    values = reduced(metrics)
    exported = m.exports(module)[""]
    assert exported is module.main and exported.config.num_hidden_layers == 4
    assert exported.discriminator_predictions is module.section_head(3)
    section_losses = []
    with torch.no_grad():
        inputs2, _ = m.prepare_batch(b, ctx())
        hidden = run_layers(module.main.electra, inputs2["masked_ids"], b["attention_mask"], [4])[0]
        gen_logits = module.mlm_output(module.mlm_predictions(hidden[inputs2["selected"]]))
        corrupted = b["input_ids"].clone()
        corrupted[inputs2["selected"]] = gumbel_max_sample(gen_logits, inputs2["rng"], TOKENS.special_ids)
        for s, h in enumerate(run_layers(module.main.electra, corrupted, b["attention_mask"], [1, 2, 3, 4])):
            logits = module.section_head(s)(h)
            real = b["attention_mask"].bool()
            section_losses.append(F.binary_cross_entropy_with_logits(logits[real], (corrupted != b["input_ids"]).float()[real]).item())
    assert values["rtd_loss_sections"] == pytest.approx(sum(section_losses) / 4, rel=1e-5)
    assert values["rtd_loss"] == pytest.approx(section_losses[3], rel=1e-5)  # the logged rtd_* are the deepest section's


@pytest.mark.parametrize("name, overrides", [("adaptive-exit", ADAPTIVE), ("early-exit-disc", DISC)])
def test_each_method_trains_with_falling_loss(name, overrides):
    m, module = build(name, *overrides, "early_exit.window=3")
    optimizer = torch.optim.AdamW(m.param_groups(module), lr=2e-3)
    b = batch()
    losses = []
    for step in range(15):
        inputs, _ = m.prepare_batch(b, ctx(step))
        loss, metrics = module(**inputs)
        optimizer.zero_grad()
        loss.backward()
        m.before_optimizer_step(optimizer.param_groups)
        optimizer.step()
        m.end_step(ctx(step), reduced(metrics))
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < losses[0] * 0.9, losses
    assert m.flops_per_sequence(32) > 0


def test_sections_are_validated_against_the_discriminator():
    with pytest.raises(UserError) as err:
        METHODS["early-exit-disc"](config(), TOKENS, torch.device("cpu"))  # tiny: 2 layers
    assert "early_exit.sections=1,2" in str(err.value)


# --- list-valued config keys ----------------------------------------------------------------------------

def test_list_keys_from_yaml_and_from_comma_separated_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("early_exit:\n  exits: [2, 4]\n  initial_p: [0.25, 0.75]\n")
    c = load_config([str(preset)], ["early_exit.exit_loss_weights=1, 3", "early_exit.sections=6,12"])
    assert c.early_exit.exits == [2, 4] and c.early_exit.initial_p == [0.25, 0.75]
    assert c.early_exit.exit_loss_weights == [1.0, 3.0] and c.early_exit.sections == [6, 12]
    assert all(isinstance(x, int) for x in c.early_exit.exits)
    with pytest.raises(UserError, match=r"early_exit.exits\[1\]"):
        load_config([], ["early_exit.exits=3,six"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("early_exit:\n  exits: {a: 1}\n")
    with pytest.raises(UserError, match="not a list"):
        load_config([str(bad)], [])


# --- benchmarks/early_exit_speed.py ------------------------------------------------------------------------

def test_speed_benchmark_times_every_exit_and_the_other_methods(capsys):
    from benchmarks.early_exit_speed import main

    main(["--seq-len", "16", "--micro-batch", "1", "--vocab-size", "300", "--steps", "1", "--warmup", "0", "--all-exits"])
    rows = [line.split(" | ")[0].lstrip("| ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "ms" not in line]
    assert rows == ["electra", "adaptive-exit P=[0.1, 0.2, 0.3, 0.4]", *(f"adaptive-exit exit {n} only" for n in (3, 6, 9, 12)),
                    *(f"early-exit-disc layers 1-{n}" for n in (12, 9, 6, 3)), "emb-gen", "fast"]
    with pytest.raises(SystemExit):
        main(["--also", "no-such-method"])
