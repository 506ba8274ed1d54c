"""GLUE metrics on hand-computed cases; ELECTRA's recipe, layer-wise LR decay and schedule."""
import numpy as np
import pytest
import torch

from fast_electra_ds.errors import UserError
from fast_electra_ds.finetune import metrics
from fast_electra_ds.finetune.recipes import make_recipe
from fast_electra_ds.finetune.trainer import layer_depth, parameter_groups, warmup_linear_decay


def test_matthews_hand_case():
    # TP=3 TN=4 FP=1 FN=2: (12 - 2) / sqrt(4 * 5 * 5 * 6) = 10 / sqrt(600)
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    predictions = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    assert metrics.mcc(predictions, labels) == pytest.approx(10 / np.sqrt(600))
    assert metrics.accuracy(predictions, labels) == pytest.approx(0.7)


def test_f1_is_of_the_positive_class_for_any_number_of_classes():
    # class 1: TP=1 FP=1 FN=1 -> 0.5; class 0: TP=1 FP=1 FN=1 -> 0.5; class 2 (3 classes): TP=1 FP=0 FN=1 -> 2/3
    assert metrics.f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert metrics.f1([1, 1, 0, 0], [1, 0, 1, 0], positive=0) == pytest.approx(0.5)
    assert metrics.f1([2, 0, 1, 1], [2, 2, 1, 0], positive=2) == pytest.approx(2 / 3)
    assert metrics.f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positive anywhere: 0, no warning


def test_correlations_with_ties_by_hand():
    # Spearman with ties: average ranks [3.5, 1, 3.5, 2] against [4, 1, 3, 2]
    predictions, labels = [3.0, 1.0, 3.0, 2.0], [4.0, 1.0, 3.0, 2.0]
    ranks, targets = np.array([3.5, 1, 3.5, 2]), np.array([4.0, 1, 3, 2])
    expected = np.corrcoef(ranks, targets)[0, 1]
    assert metrics.spearman(predictions, labels) == pytest.approx(expected)
    assert metrics.pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 6.5])[0, 1])


def test_constant_predictions_score_zero_correlation(recwarn):
    assert metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert metrics.spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert metrics.mcc([0, 0, 0], [0, 1, 1]) == 0.0
    assert not [w for w in recwarn if "constant" in str(w.message).lower()]


# ----------------------------------------------------------------------------------------------
# Recipe


def test_recipe_sizes_and_task_epochs():
    small, base, large = (make_recipe("auto", h, "sst2") for h in (256, 768, 1024))
    assert (small.lr, small.layer_decay) == (3e-4, 0.8)
    assert (base.lr, base.layer_decay) == (1e-4, 0.8)
    assert (large.lr, large.layer_decay) == (5e-5, 0.9)
    assert small.batch_size == 32 and small.epochs == 3 and small.warmup_fraction == 0.1 and small.adam_eps == 1e-6
    assert make_recipe("base", 64, "rte").epochs == 10 and make_recipe("base", 64, "stsb").epochs == 10


def test_recipe_overrides_and_errors():
    recipe = make_recipe("small", 256, "rte", ["lr=1e-3", "epochs=2", "batch_size=8", "layer_decay=1"])
    assert (recipe.lr, recipe.epochs, recipe.batch_size, recipe.layer_decay) == (1e-3, 2.0, 8, 1.0)
    with pytest.raises(UserError, match="unknown recipe key 'learning_rate'; valid keys: lr, epochs"):
        make_recipe("auto", 256, "sst2", {"learning_rate": "1"})
    with pytest.raises(UserError, match="batch_size='many' is not an integer"):
        make_recipe("auto", 256, "sst2", ["batch_size=many"])
    with pytest.raises(UserError, match="is not key=value"):
        make_recipe("auto", 256, "sst2", ["lr"])
    with pytest.raises(UserError, match="layer_decay must be in"):
        make_recipe("auto", 256, "sst2", ["layer_decay=1.5"])


def test_layerwise_learning_rates_follow_electra():
    """ELECTRA's _get_layer_lrs: embeddings lr·d^(n+2), layer i lr·d^(n+1-i), the head lr; no weight
    decay on LayerNorm or biases."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    config = ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    model = ElectraForSequenceClassification(config)
    recipe = make_recipe("small", 32, "sst2", ["lr=1.0", "layer_decay=0.5"])
    groups = parameter_groups(model, recipe, num_layers=3)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["electra.embeddings.word_embeddings.weight"])] == 0.5 ** 5
    assert lr_of[id(named["electra.embeddings_project.weight"])] == 0.5 ** 5
    assert lr_of[id(named["electra.encoder.layer.0.attention.self.query.weight"])] == 0.5 ** 4
    assert lr_of[id(named["electra.encoder.layer.2.output.dense.weight"])] == 0.5 ** 2
    assert lr_of[id(named["classifier.out_proj.weight"])] == 1.0
    assert decay_of[id(named["electra.encoder.layer.1.output.LayerNorm.weight"])] == 0.0
    assert decay_of[id(named["classifier.dense.bias"])] == 0.0
    assert decay_of[id(named["classifier.dense.weight"])] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(named)
    assert layer_depth("bert.encoder.layer.11.output.dense.weight", 12) == 12
    assert layer_depth("bert.pooler.dense.weight", 12) == 14


def test_warmup_then_linear_decay():
    """ELECTRA: lr · (1 - step/T) · min(1, step/W), the warmup counting the update being made."""
    multiplier = warmup_linear_decay(total_steps=100, warmup_fraction=0.1)
    assert [multiplier(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5 * 0.96, 0.91])
    assert [multiplier(s) for s in (10, 55, 99, 100)] == pytest.approx([0.9, 0.45, 0.01, 0.0])
    assert warmup_linear_decay(10, 0.0)(0) == 1.0
    # As the optimizer sees it through LambdaLR: rises for 10 updates, then falls to lr/100.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen.index(max(seen)) == 9 and max(seen) == pytest.approx(2 * 0.91) and seen[-1] == pytest.approx(0.02)
    assert all(later < earlier for earlier, later in zip(seen[9:], seen[10:]))


def test_summaries_are_strict_json():
    """A diverged seed's loss (NaN) or an infinite value is `null` in summary.json and seed_<s>.json."""
    import json

    from fast_electra_ds.finetune.runner import json_text

    def refuse(constant):
        raise ValueError(f"bare {constant}")

    text = json_text({"metrics": {"accuracy": 0.5}, "train_loss": float("nan"), "curve": [1.0, float("inf")]})
    assert json.loads(text, parse_constant=refuse) == {"metrics": {"accuracy": 0.5}, "train_loss": None, "curve": [1.0, None]}
