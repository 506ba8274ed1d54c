"""The temperature curriculum's kinds: `target` finds the T whose aux cross-entropy meets the path (on
the sampler's distribution), T = 1 past the span, the path is monotone; `exp` draws exactly what the
aux's own propose() draws; bad keys are one-line errors."""
import math

import pytest
import torch

from fast_electra_ds.config.run_config import CurriculumConfig
from fast_electra_ds.errors import UserError
from fast_electra_ds.methods import StepContext
from fast_electra_ds.methods.curriculum import T_MAX, Curriculum, temperature
from fast_electra_ds.models.sampling import sample_and_argmax
from tests.method_helpers import batch, config, fast_method

SPECIAL = [0, 1, 2, 3, 4]
VOCAB = 3000


def model_like_batch(rows=400, vocab=VOCAB, confidence=1.0, seed=0):
    """Logits with a Zipfian prior and a per-row context signal; the original tokens are drawn from
    Softmax(logits * confidence) over the allowed tokens: 1 is a calibrated aux, < 1 an over-confident
    one (its CE dips below CE(1) just above T = 1)."""
    g = torch.Generator().manual_seed(seed)
    prior = -1.1 * torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
    logits = prior + 2.5 * torch.randn(rows, vocab, generator=g)
    allowed = logits.clone()
    allowed[:, SPECIAL] = float("-inf")
    targets = torch.multinomial(torch.softmax(allowed * confidence, -1), 1, generator=g).squeeze(1)
    return logits.bfloat16(), targets


def measured_ce(logits, targets, temperature):
    """The sampler's distribution written out independently: float32 logits / T, specials excluded."""
    scaled = logits.float() / temperature
    scaled[:, SPECIAL] = float("-inf")
    return -torch.log_softmax(scaled, -1).gather(1, targets[:, None]).mean().item()


def choose(logits, targets, progress, entropy, span=0.5):
    curriculum = Curriculum(CurriculumConfig(kind="target", span=span), entropy)
    t, metrics = curriculum.choose(logits, targets, progress, SPECIAL)
    return t, {name: (num / den).item() for name, (num, den) in metrics.items()}


@pytest.mark.parametrize("confidence", [1.0, 0.7])
def test_target_temperature_meets_the_target_on_the_sampled_distribution(confidence):
    logits, targets = model_like_batch(confidence=confidence)
    at_one = measured_ce(logits, targets, 1.0)
    entropy = at_one + 1.0
    for progress in [0.0, 0.1, 0.2, 0.3, 0.4, 0.49]:
        t, logged = choose(logits, targets, progress, entropy)
        target = entropy + (at_one - entropy) * progress / 0.5
        assert logged["aux_target_ce"] == pytest.approx(target, abs=1e-4)
        assert 1.0 < t < T_MAX and logged["temperature"] == pytest.approx(t)
        assert abs(measured_ce(logits, targets, t) - target) < 0.02
        assert logged["aux_ce"] == pytest.approx(measured_ce(logits, targets, t), abs=1e-3)


def test_temperature_is_one_past_the_span_and_when_the_target_is_below_the_aux_loss():
    logits, targets = model_like_batch()
    at_one = measured_ce(logits, targets, 1.0)
    for progress in [0.5, 0.75, 1.0]:
        t, logged = choose(logits, targets, progress, at_one + 1.5)
        assert t == 1.0 and logged["temperature"] == 1.0
        assert logged["aux_ce"] == pytest.approx(at_one, abs=1e-3) and logged["aux_target_ce"] == logged["aux_ce"]
    # an aux worse than the unigram distribution: the target never exceeds its own loss
    for progress in [0.0, 0.25]:
        t, logged = choose(logits, targets, progress, at_one - 0.5)
        assert t == 1.0 and logged["aux_target_ce"] <= logged["aux_ce"]


def test_the_path_and_the_temperature_fall_monotonically_to_one():
    logits, targets = model_like_batch(seed=1)
    at_one = measured_ce(logits, targets, 1.0)
    chosen = [choose(logits, targets, u / 20, at_one + 1.2, span=0.6) for u in range(21)]
    targets_along = [logged["aux_target_ce"] for _, logged in chosen]
    temperatures = [t for t, _ in chosen]
    assert all(a > b for a, b in zip(targets_along[:12], targets_along[1:13]))  # falling until the span (u = 0.6)
    assert all(a > b for a, b in zip(temperatures[:12], temperatures[1:13]))
    assert temperatures[12:] == [1.0] * 9 and len(set(targets_along[12:])) == 1


def test_an_unreachable_target_clamps_at_t_max():
    logits, targets = model_like_batch()
    t, logged = choose(logits, targets, 0.0, math.log(VOCAB))  # above CE(T_MAX) < log(allowed vocabulary)
    assert t == pytest.approx(T_MAX, rel=0.01) and logged["aux_ce"] < logged["aux_target_ce"]


@pytest.mark.parametrize("values, key", [(dict(kind="cosine"), "curriculum.kind"), (dict(span=0.0), "curriculum.span"),
                                         (dict(span=-1.0), "curriculum.span"), (dict(span=float("nan")), "curriculum.span"),
                                         (dict(t0=0.0), "curriculum.t0")])
def test_bad_curriculum_values_are_user_errors_naming_the_key(values, key):
    with pytest.raises(UserError, match=key):
        Curriculum(CurriculumConfig(**values), 6.0)


def test_target_needs_the_unigram_entropy():
    with pytest.raises(UserError, match="unigram entropy"):
        Curriculum(CurriculumConfig(kind="target"), None)


# --- through the method -----------------------------------------------------------------------------

def test_exp_replacements_are_the_ones_propose_draws_at_the_formulas_temperature():
    method = fast_method("curriculum.kind=exp", "curriculum.t0=3", "curriculum.tau=0.2")
    data = batch(rows=16)
    for step, progress in [(0, 0.0), (7, 0.35)]:
        inputs, metrics = method.prepare_batch(data, StepContext(step, progress, torch.Generator().manual_seed(11)))
        g = torch.Generator().manual_seed(11)
        selected, masked = method.select_and_corrupt(data, StepContext(step, progress, g), 0.85, 0.0)
        sampled, _ = method.aux.propose(masked, data["attention_mask"], selected, temperature(progress, 3.0, 0.2), g, SPECIAL)
        expected = data["input_ids"].clone()
        expected[selected] = sampled
        assert torch.equal(inputs["input_ids"], expected)
        assert method.logged_values(StepContext(step, progress, g)) == {"temperature": temperature(progress, 3.0, 0.2)}
        assert "temperature" not in metrics and "aux_target_ce" not in metrics
        logits = method.aux.logits(masked, data["attention_mask"], selected)
        aux_ce = metrics["aux_ce"][0] / metrics["aux_ce"][1]
        assert aux_ce.item() == pytest.approx(measured_ce(logits, data["input_ids"][selected], temperature(progress, 3.0, 0.2)), abs=1e-4)


def test_target_logs_its_temperature_and_both_cross_entropies():
    method = fast_method("curriculum.kind=target", unigram_entropy=4.0)
    data = batch(rows=16)
    inputs, metrics = method.prepare_batch(data, StepContext(0, 0.0, torch.Generator().manual_seed(5)))
    assert method.logged_values(StepContext(0, 0.0, torch.Generator())) == {}
    values = {name: (num / den).item() for name, (num, den) in metrics.items()}
    assert values["aux_target_ce"] == pytest.approx(4.0)  # u = 0: the unigram entropy
    g = torch.Generator().manual_seed(5)
    selected, masked = method.select_and_corrupt(data, StepContext(0, 0.0, g), 0.85, 0.0)
    at_one = measured_ce(method.aux.logits(masked, data["attention_mask"], selected), data["input_ids"][selected], 1.0)
    assert at_one > 4.0  # a random aux is worse than this unigram entropy: T = 1
    assert values["temperature"] == 1.0 and values["aux_ce"] == pytest.approx(at_one, abs=1e-4)


def test_target_through_the_method_samples_at_the_temperature_that_meets_the_target():
    """The batch's ids are 5..39; an aux that favours them has CE(1) near log 35 = 3.56, below a
    corpus entropy of 4.4 (a corpus using more of the vocabulary): T > 1 until the span."""
    method = fast_method("curriculum.kind=target", "curriculum.span=0.5", unigram_entropy=4.4, favoured=slice(5, 40))
    data = batch(rows=32)
    for step, progress in [(0, 0.0), (3, 0.2)]:
        inputs, metrics = method.prepare_batch(data, StepContext(step, progress, torch.Generator().manual_seed(8)))
        values = {name: (num / den).item() for name, (num, den) in metrics.items()}
        g = torch.Generator().manual_seed(8)
        selected, masked = method.select_and_corrupt(data, StepContext(step, progress, g), 0.85, 0.0)
        logits, originals = method.aux.logits(masked, data["attention_mask"], selected), data["input_ids"][selected]
        at_one = measured_ce(logits, originals, 1.0)
        target = 4.4 + (at_one - 4.4) * progress / 0.5
        assert at_one < 4.0 and values["aux_target_ce"] == pytest.approx(target, abs=1e-4)
        assert values["temperature"] > 1.0 and abs(measured_ce(logits, originals, values["temperature"]) - target) < 0.02
        expected = data["input_ids"].clone()
        expected[selected] = sample_and_argmax(logits, values["temperature"], g, SPECIAL)[0]
        assert torch.equal(inputs["input_ids"], expected)  # drawn at that T from the same logits and stream


@pytest.mark.parametrize("override, fragment", [("curriculum.kind=linear", "unknown curriculum.kind"), ("curriculum.span=0", "curriculum.span"),
                                                ("curriculum.t0=-1", "curriculum.t0")])
def test_curriculum_values_fail_when_the_config_loads(override, fragment):
    with pytest.raises(UserError, match=fragment):
        config(override)  # load_config: before any process group or model
