"""The learning metrics on hand-made detectors whose answers are known: chance, base rate, token
identity only, and context."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fast_electra_ds.data.dataset import validation_split
from fast_electra_ds.metrics.learning import TokenOnlyDetector, auc_from_histogram, binary_entropy, rtd_statistics
from fast_electra_ds.metrics.tracker import MetricSums, TrainingMetrics
from fast_electra_ds.models.objectives import rtd_loss
from fast_electra_ds.methods.base import NO_DECAY, weight_decay_groups

VOCAB = 50


def token_world(seed: int, batch: int = 16, seq: int = 64):
    """Tokens with their own replacement rates (0.02..0.4), plus a context flag that makes a
    replacement 4x likelier: labels depend on token identity AND on context."""
    g = torch.Generator().manual_seed(seed)
    rates = torch.linspace(0.02, 0.4, VOCAB)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    context = torch.rand(batch, seq, generator=g) < 0.5
    p = torch.where(context, (rates[ids] * 1.6).clamp(max=0.95), rates[ids] * 0.4)
    labels = torch.rand(batch, seq, generator=g) < p
    return ids, context, labels, p, rates[ids]


def run_windows(detector_logits, windows: int = 60) -> dict:
    metrics = TrainingMetrics(torch.device("cpu"), per_step=False, unigram_entropy=None)
    for w in range(windows):
        ids, context, labels, p, token_rate = token_world(w)
        logits = detector_logits(p, token_rate)
        mask = torch.ones_like(ids)
        _, m = rtd_loss(logits, labels, mask, input_ids=ids, vocab_size=VOCAB)
        metrics.add(m)
        values = metrics.window_values()
    return values


def logit(p):
    return torch.log(p) - torch.log1p(-p)


def test_token_only_detector_has_no_context_gain_and_a_context_detector_has():
    token_only = run_windows(lambda p, token_rate: logit(token_rate))  # the true per-token rate, no context
    with_context = run_windows(lambda p, token_rate: logit(p))  # the true rate given token and context
    assert abs(token_only["rtd_context_gain"]) < 0.01
    assert with_context["rtd_context_gain"] > 0.05
    assert with_context["rtd_auc"] > token_only["rtd_auc"] > 0.6
    assert token_only["rtd_prior_gap"] > 0.02  # token identity alone beats the base rate here


def test_constant_detector_is_at_chance_and_base_rate():
    values = run_windows(lambda p, token_rate: torch.full_like(p, math.log(0.2 / 0.8)), windows=5)
    assert values["rtd_auc"] == pytest.approx(0.5)
    assert values["rtd_prior_gap"] == pytest.approx(binary_entropy(0.2) - binary_entropy(0.2), abs=0.02)
    assert values["rtd_context_gain"] < 0.0  # tokens alone do better than a constant
    assert math.isnan(values["rtd_precision"])  # it never says "replaced"
    assert values["rtd_recall"] == 0.0


def test_auc_matches_sklearn_and_ties_count_half():
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(4000, generator=g) < 0.15
    logits = torch.randn(4000, generator=g) * 0.7 - 1.8 + labels.float() * 0.3
    stats = rtd_statistics(logits[None], labels[None], torch.ones(1, 4000, dtype=torch.bool))
    assert auc_from_histogram(stats["rtd_logit_hist"][0]) == pytest.approx(roc_auc_score(labels, logits), abs=2e-3)
    tied = rtd_statistics(torch.zeros(1, 100), labels[None, :100], torch.ones(1, 100, dtype=torch.bool))
    assert auc_from_histogram(tied["rtd_logit_hist"][0]) == pytest.approx(0.5)


def test_padding_and_unselected_positions_are_not_counted():
    ids = torch.tensor([[3, 4, 0, 0]])
    labels = torch.tensor([[True, False, True, True]])
    logits = torch.tensor([[2.0, -2.0, 5.0, 5.0]])
    _, m = rtd_loss(logits, labels, torch.tensor([[1, 1, 0, 0]]), input_ids=ids, vocab_size=8)
    counts = m["rtd_token_counts"][0].reshape(-1, 2)
    assert counts.sum() == 2 and counts[3, 1] == 1 and counts[4, 0] == 1
    assert m["rtd_logit_hist"][0].sum() == 2
    assert m["rtd_precision"][0] == 1 and m["rtd_precision"][1] == 1


def test_metric_sums_add_vectors_and_scalars_exactly():
    sums = MetricSums()
    sums.add({"a": (torch.tensor(3.0), torch.tensor(4.0)), "v": (torch.tensor([1.0, 2.0, 3.0]), torch.tensor(1.0))})
    sums.add({"a": (torch.tensor(1.0), torch.tensor(4.0)), "v": (torch.tensor([1.0, 0.0, 1.0]), torch.tensor(1.0))})
    scalars, vectors = sums.reduce(torch.device("cpu"))
    assert scalars == {"a": 0.5}
    assert vectors["v"].tolist() == [2.0, 2.0, 4.0]


def test_token_only_detector_state_round_trips():
    detector = TokenOnlyDetector()
    detector.update(torch.tensor([0.0, 0.0, 5.0, 1.0, 0.0, 0.0, 2.0, 7.0]))
    copy = TokenOnlyDetector()
    copy.load_state_dict(detector.state_dict())
    window = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    assert copy.loss(window) == detector.loss(window)
    assert torch.equal(copy.counts, detector.counts)


def test_mlm_losses_are_shown_against_the_unigram_entropy():
    metrics = TrainingMetrics(torch.device("cpu"), per_step=False, unigram_entropy=6.9)
    metrics.add({"mlm_loss": (torch.tensor(6.4), torch.tensor(1.0))})
    assert metrics.window_values()["mlm_prior_gap"] == pytest.approx(0.5)


def test_validation_split_is_deterministic_disjoint_and_spread():
    train, val = validation_split(10_000, 256)
    assert len(val) == 256 and len(train) == 10_000 - 256
    assert not set(train) & set(val)
    assert np.array_equal(val, validation_split(10_000, 256)[1])
    assert val.min() < 2000 and val.max() > 9000  # spread over the corpus, not one end
    assert len(validation_split(1000, 256)[1]) == 50  # at most 5%
    assert len(validation_split(10, 256)[1]) == 0 and len(validation_split(10_000, 0)[1]) == 0


def test_biases_and_layer_norms_get_no_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Embedding(10, 4))
    groups = weight_decay_groups([{"name": "all", "params": list(model.parameters())}])
    by_name = {g["name"]: g for g in groups}
    assert [p.shape for p in by_name["all"]["params"]] == [torch.Size([4, 4]), torch.Size([10, 4])]
    assert by_name["all" + NO_DECAY]["weight_decay"] == 0.0 and len(by_name["all" + NO_DECAY]["params"]) == 3
    assert "weight_decay" not in by_name["all"]  # the optimizer's own value


def test_prepare_records_the_unigram_entropy_the_dataset_recounts(prepared):
    import json

    from fast_electra_ds.data.dataset import PackedDataset

    meta = json.loads((prepared["data"] / "meta.json").read_text())
    dataset = PackedDataset(prepared["data"], 64)
    assert 3.0 < meta["unigram_entropy"] < math.log(meta["vocab_size"])
    dataset.meta.pop("unigram_entropy")  # a corpus prepared before prepare recorded it: counted from the shards
    assert dataset.unigram_entropy() == pytest.approx(meta["unigram_entropy"], rel=1e-9)


def test_context_gain_never_exceeds_the_prior_gap():
    """A token-only detector whose counts are stale or sparse can score worse than the base rate;
    the base rate is itself a context-free detector, so the gain is capped by the prior gap."""
    metrics = TrainingMetrics(torch.device("cpu"), per_step=False, unigram_entropy=None)
    for w in range(6):
        ids, context, labels, p, token_rate = token_world(w)
        if w < 3:
            labels = ids % 2 == 0  # early windows: rates that the later ones contradict
        _, m = rtd_loss(logit(p) * 0.05 - 1.4, labels, torch.ones_like(ids), input_ids=ids, vocab_size=VOCAB)
        metrics.add(m)
        values = metrics.window_values()
    assert values["rtd_context_gain"] <= values["rtd_prior_gap"] + 1e-12


def test_token_only_counts_fade_so_a_changed_distribution_is_learned_again():
    from fast_electra_ds.metrics.learning import COUNT_MEMORY_TOKENS

    detector = TokenOnlyDetector()
    detector.update(torch.tensor([0.0, 1000.0]))  # token 0: always replaced...
    detector.update(torch.tensor([COUNT_MEMORY_TOKENS * 3.0, 0.0]))  # ...then never, for much longer
    assert detector.counts[0, 1] < 1000.0 * math.exp(-2.9)
