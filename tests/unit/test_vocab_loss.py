"""Chunked vocabulary losses (models/vocab_loss.py): losses, metrics and gradients equal to the
unchunked ones (float32, and bf16 autocast), the copy mechanism of the corrective LM, the draw taken
in the forward pass, and no [rows x V] tensor kept for backward."""
import pytest
import torch
import torch.nn.functional as F

from fast_electra_ds.models.pretraining import copy_mechanism_log_probs, copy_mechanism_predictions
from fast_electra_ds.models.vocab_loss import chunked_mlm_loss, copy_mechanism_scores, vocab_log_probs
from fast_electra_ds.models.objectives import mlm_loss
from fast_electra_ds.models.sampling import sample_and_argmax

ROWS, EMBED, VOCAB = 37, 16, 301


def head_and_data(seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(EMBED, VOCAB)
    features = torch.randn(ROWS, EMBED, requires_grad=True)
    targets = torch.randint(0, VOCAB, (ROWS,))
    return layer, features, targets


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk_rows", [1, 8, 37, 100])
def test_mlm_loss_metrics_and_gradients_match_the_unchunked_loss(chunk_rows):
    layer, features, targets = head_and_data()
    expected, expected_metrics = mlm_loss(layer(features), targets)
    expected_grads = grads(expected, features, layer.weight, layer.bias)
    scores = vocab_log_probs(features, layer, targets, chunk_rows=chunk_rows)
    loss = -scores.target.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for got, want in zip(grads(loss, features, layer.weight, layer.bias), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert torch.equal(scores.argmax, layer(features).argmax(-1))
    loss2, metrics, sampled = chunked_mlm_loss(features, layer, targets)
    assert sampled is None
    for key in ("mlm_loss", "mlm_acc"):
        assert metrics[key][0].item() == pytest.approx(expected_metrics[key][0].item(), rel=1e-6)
        assert metrics[key][1].item() == expected_metrics[key][1].item()


def test_under_bf16_autocast_the_recomputed_backward_matches_autograd():
    layer, features, targets = head_and_data(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(layer(features).float(), targets)
        expected_grads = grads(expected, features, layer.weight, layer.bias)
        loss = -vocab_log_probs(features, layer, targets, chunk_rows=5).target.mean()
        got = grads(loss, features, layer.weight, layer.bias)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for g, w in zip(got, expected_grads):
        torch.testing.assert_close(g, w, rtol=2e-2, atol=1e-4)  # bf16 GEMMs in both


def test_copy_mechanism_matches_the_logits_version():
    layer, features, targets = head_and_data(2)
    gate = torch.randn(ROWS, requires_grad=True)
    inputs = targets.clone()
    inputs[::3] = torch.randint(0, VOCAB, (len(inputs[::3]),))  # some replaced, most copied
    logits = layer(features)
    expected = -copy_mechanism_log_probs(logits, gate, inputs, targets).mean()
    expected_grads = grads(expected, features, layer.weight, layer.bias, gate)
    scores = vocab_log_probs(features, layer, targets, inputs=inputs, chunk_rows=6)
    log_probs, predictions = copy_mechanism_scores(scores, gate, inputs, targets)
    loss = -log_probs.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for g, w in zip(grads(loss, features, layer.weight, layer.bias, gate), expected_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert torch.equal(predictions, copy_mechanism_predictions(logits.detach(), gate.detach(), inputs))
    # a confident copy gate predicts the input, a zero one the MLM's argmax
    sure = vocab_log_probs(features.detach(), layer, targets, inputs=inputs)
    assert torch.equal(copy_mechanism_scores(sure, torch.full((ROWS,), 30.0), inputs, targets)[1], inputs)
    assert torch.equal(copy_mechanism_scores(sure, torch.full((ROWS,), -30.0), inputs, targets)[1], logits.argmax(-1))


def test_the_draw_is_taken_from_the_forward_logits_and_never_redrawn():
    layer, features, targets = head_and_data(3)
    expected = sample_and_argmax(layer(features).detach(), 1.0, torch.Generator().manual_seed(4), [0, 1])[0]
    generator = torch.Generator().manual_seed(4)
    loss, _, sampled = chunked_mlm_loss(features, layer, targets, sample=(1.0, generator, [0, 1]))
    assert torch.equal(sampled, expected)
    state = generator.get_state()
    loss.backward()
    assert torch.equal(generator.get_state(), state)  # backward recomputes logits, not draws
    chunked = vocab_log_probs(features, layer, targets, sample=(1.0, torch.Generator().manual_seed(4), [0, 1]), chunk_rows=4)
    again = vocab_log_probs(features, layer, targets, sample=(1.0, torch.Generator().manual_seed(4), [0, 1]), chunk_rows=4)
    assert torch.equal(chunked.sampled, again.sampled) and not torch.isin(chunked.sampled, torch.tensor([0, 1])).any()


def test_no_rows_x_vocabulary_tensor_is_kept_for_backward():
    layer, features, targets = head_and_data(5)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        loss = -vocab_log_probs(features, layer, targets, chunk_rows=8).target.mean()
    assert sorted(saved)[-2:] == [ROWS * EMBED, VOCAB * EMBED]  # the head's input and the weight (a reference) only
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        F.cross_entropy(layer(features), targets)
    assert max(saved) == ROWS * VOCAB > VOCAB * EMBED  # what the unchunked loss keeps (the test can tell)
    loss.backward()


def test_a_tied_weight_gets_one_gradient_summed_in_the_main_graph():
    """As the corrective LM's decoder is tied to the word embeddings: one accumulation per backward
    (ZeRO-3 reduces a parameter once per accumulation), the sum of both uses' gradients."""
    layer, _, targets = head_and_data(6)
    embedding = torch.nn.Embedding(VOCAB, EMBED)
    layer.weight = embedding.weight
    accumulations = []
    layer.weight.register_post_accumulate_grad_hook(lambda p: accumulations.append(1))
    ids = torch.randint(0, VOCAB, (ROWS,))
    loss = -vocab_log_probs(torch.tanh(embedding(ids)), layer, targets, chunk_rows=10).target.mean()
    loss.backward()
    assert len(accumulations) == 1
    got = layer.weight.grad.clone()
    layer.weight.grad = None
    F.cross_entropy(layer(torch.tanh(embedding(ids))), targets).backward()
    torch.testing.assert_close(got, layer.weight.grad, rtol=1e-5, atol=1e-7)


def test_no_rows():
    layer, _, _ = head_and_data()
    scores = vocab_log_probs(torch.zeros(0, EMBED, requires_grad=True), layer, torch.zeros(0, dtype=torch.long))
    assert scores.target.shape == scores.argmax.shape == (0,)


def test_a_16_bit_layer_as_deepspeed_runs_it():
    """bf16 parameters and inputs, no autocast (DeepSpeed's bf16 engine): gradients within bf16 rounding
    of autograd's, the weight's accumulated over the chunks in its own dtype."""
    layer, features, targets = head_and_data(7)
    layer = layer.bfloat16()
    features = features.detach().bfloat16().requires_grad_()
    expected = F.cross_entropy(layer(features).float(), targets)
    expected_grads = grads(expected, features, layer.weight, layer.bias)
    loss = -vocab_log_probs(features, layer, targets, chunk_rows=9).target.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for g, w in zip(grads(loss, features, layer.weight, layer.bias), expected_grads):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g, w, rtol=3e-2, atol=2e-4)
