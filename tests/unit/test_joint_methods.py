"""ELECTRA and the seed-paper baselines as methods, on CPU without DeepSpeed: shared embeddings,
Gumbel-max sampling, the positions and targets each loss claims, a few falling-loss steps, and
that switching `method` changes nothing but the strategy."""
import math

import pytest
import torch
import torch.nn.functional as F

from fast_electra_ds.errors import UserError
from fast_electra_ds.models.pretraining import copy_mechanism_log_probs, copy_mechanism_predictions
from fast_electra_ds.methods import METHODS, StepContext, TokenInfo
from fast_electra_ds.models.sampling import gumbel_max_sample
from tests.method_helpers import TOKENS, batch, chi_square_p_value, config

JOINT = ["electra", "electra-15", "replace-mlm", "all-tokens-mlm"]


def method(name, *overrides):
    return METHODS[name](config(*overrides), TOKENS, torch.device("cpu"))


def build(name, *overrides, seed=0):
    torch.manual_seed(seed)
    m = method(name, *overrides)
    return m, m.build_model(None)


def ctx(step=0, seed=0):
    return StepContext(step, 0.0, torch.Generator().manual_seed(1000 * seed + step))


# --- one set of embeddings --------------------------------------------------------------------------

@pytest.mark.parametrize("name", JOINT)
def test_generator_uses_the_main_models_embeddings_as_one_tensor(name):
    _, module = build(name)
    gen, main = module.generator, module.main
    assert gen.electra.embeddings is main.electra.embeddings
    word = main.electra.embeddings.word_embeddings.weight
    assert gen.electra.embeddings.word_embeddings.weight is word
    assert gen.generator_lm_head.weight is word  # output layer tied to the shared word embeddings
    for a, b in zip(gen.electra.embeddings.parameters(), main.electra.embeddings.parameters()):
        assert a is b  # position, token-type embeddings and LayerNorm too
    with torch.no_grad():
        gen.electra.embeddings.word_embeddings.weight[7].fill_(3.25)
    assert torch.all(main.electra.embeddings.word_embeddings.weight[7] == 3.25)
    assert torch.all(gen.generator_lm_head.weight[7] == 3.25)
    # the narrower generator reaches its width through its own projection of the shared embeddings
    assert gen.config.hidden_size == 16 and gen.config.embedding_size == main.config.embedding_size == 64
    assert gen.electra.embeddings_project.in_features == 64
    names = [n for n, _ in module.named_parameters()]
    assert not any(n.startswith("generator.electra.embeddings.") for n in names)  # counted once


@pytest.mark.parametrize("name", ["electra", "electra-15"])
def test_unshared_generator_has_embeddings_and_an_output_layer_of_its_own(name):
    m, module = build(name, "generator.share_embeddings=false")
    m.setup()
    gen, main = module.generator, module.main
    assert gen.electra.embeddings is not main.electra.embeddings
    assert gen.generator_lm_head.weight is gen.electra.embeddings.word_embeddings.weight  # tied inside the generator
    own = {id(p) for p in gen.parameters()}
    assert not own & {id(p) for p in main.parameters()}
    # the generator's MLM loss no longer reaches the main model's embeddings
    inputs, _ = m.prepare_batch(batch(), ctx())
    module.main_weight = 0.0
    loss, _ = module(**inputs)
    loss.backward()
    assert main.electra.embeddings.word_embeddings.weight.grad is None or not main.electra.embeddings.word_embeddings.weight.grad.any()
    assert gen.electra.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["replace-mlm", "all-tokens-mlm"])
def test_unshared_embeddings_are_refused_where_the_method_always_shares(name):
    with pytest.raises(UserError, match="share_embeddings"):
        method(name, "generator.share_embeddings=false").setup()


def test_generator_sizes_follow_the_config_fractions():
    m = method("electra", "generator.hidden_fraction=0.5", "generator.depth_fraction=0.5")
    gen = m.generator_config()
    assert (gen.hidden_size, gen.num_hidden_layers, gen.embedding_size) == (32, 1, 64)
    shallow = method("electra", "generator.hidden_fraction=1.0", "generator.depth_fraction=0.5").generator_config()
    assert (shallow.hidden_size, shallow.num_hidden_layers) == (64, 1)  # COCO-LM style: full width, shallower
    assert config().generator.gen_weight == 1.0 and config().generator.disc_weight == 50.0


def test_a_saved_generator_loads_stand_alone_with_the_shared_embeddings(tmp_path):
    from transformers import ElectraForMaskedLM

    m, module = build("electra")
    exports = m.exports(module)
    assert set(exports) == {"", "generator"} and exports[""] is module.main
    exports["generator"].save_pretrained(tmp_path)
    loaded, info = ElectraForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, a), b in zip(module.main.electra.embeddings.named_parameters(), loaded.electra.embeddings.parameters()):
        assert torch.equal(a, b), name


# --- sampling ---------------------------------------------------------------------------------------

def test_gumbel_max_with_disallowed_ids_follows_the_renormalised_softmax():
    logits = torch.tensor([[0.5, 2.0, -1.0, 1.0, 0.0]])
    n = 40_000
    draws = gumbel_max_sample(logits.expand(n, -1), torch.Generator().manual_seed(11), disallowed_ids=[1])
    counts = torch.bincount(draws, minlength=5).float()
    assert counts[1] == 0
    allowed = [0, 2, 3, 4]
    assert chi_square_p_value(counts[allowed], torch.softmax(logits[0, allowed], -1)) > 1e-3


def test_samples_come_from_the_rng_input_and_are_never_special():
    m, module = build("electra")
    b = batch()
    inputs, _ = m.prepare_batch(b, ctx())
    seen = []
    def record(mod, args, kwargs):
        seen.append((args[0] if args else kwargs["input_ids"]).clone())

    module.main.register_forward_pre_hook(record, with_kwargs=True)
    with torch.no_grad():
        module(**inputs)
        again, _ = m.prepare_batch(b, ctx())
        module(**again)
        other, _ = m.prepare_batch(b, ctx(step=1))
        module(**other)
    selected = inputs["selected"]
    assert torch.equal(seen[0], seen[1])  # same rng seed: the same replacements
    assert not torch.equal(seen[0], seen[2])
    assert torch.equal(seen[0][~selected], b["input_ids"][~selected])
    assert not torch.isin(seen[0][selected], torch.tensor(TOKENS.special_ids)).any()


# --- the positions and targets of each loss ---------------------------------------------------------

def run_and_capture(name, *overrides):
    """One forward; returns the method's inputs, the main model's input (the corrupted sequence), and the metrics."""
    m, module = build(name, *overrides)
    module.eval()
    b = batch()
    inputs, _ = m.prepare_batch(b, ctx())
    seen = {}
    def record(mod, args, kwargs):
        seen.setdefault("ids", (args[0] if args else kwargs["input_ids"]).clone())

    module.main.electra.register_forward_pre_hook(record, with_kwargs=True)
    with torch.no_grad():
        loss, metrics = module(**inputs)
    counts = {k: v[1].item() for k, v in metrics.items()}
    return m, module, b, inputs, seen["ids"], loss, {k: (v[0] / v[1]).item() for k, v in metrics.items() if v[0].dim() == 0}, counts


def test_electra_loss_is_mlm_plus_50_bce_over_every_real_token():
    m, module, b, inputs, corrupted, loss, metrics, counts = run_and_capture("electra")
    real = b["attention_mask"].bool()
    with torch.no_grad():
        logits = module.main(input_ids=corrupted, attention_mask=b["attention_mask"]).logits
    labels = (corrupted != b["input_ids"]).float()
    assert metrics["rtd_loss"] == pytest.approx(F.binary_cross_entropy_with_logits(logits[real], labels[real]).item(), rel=1e-5)
    assert loss.item() == pytest.approx(metrics["mlm_loss"] + 50 * metrics["rtd_loss"], rel=1e-5)
    assert metrics["replaced_frac"] == pytest.approx(labels[real].mean().item())
    assert counts["rtd_acc"] == real.sum().item()  # every real token, no padding


def test_electra_15_loss_is_bce_over_the_selected_positions_only():
    m, module, b, inputs, corrupted, loss, metrics, counts = run_and_capture("electra-15")
    selected = inputs["selected"]
    with torch.no_grad():
        logits = module.main(input_ids=corrupted, attention_mask=b["attention_mask"]).logits
    labels = (corrupted != b["input_ids"]).float()
    expected = F.binary_cross_entropy_with_logits(logits[selected], labels[selected]).item()
    assert metrics["rtd_loss"] == pytest.approx(expected, rel=1e-5)
    assert counts["rtd_acc"] == selected.sum().item() < b["attention_mask"].sum().item()  # counted: the selected only
    assert metrics["replaced_frac"] == pytest.approx(labels[selected].mean().item())  # a fraction of the selected only
    assert loss.item() == pytest.approx(metrics["mlm_loss"] + 50 * metrics["rtd_loss"], rel=1e-5)


def test_generator_mlm_loss_is_on_the_masked_input_at_the_selected_positions():
    m, module, b, inputs, corrupted, loss, metrics, counts = run_and_capture("electra")
    selected = inputs["selected"]
    assert (inputs["masked_ids"][selected] == TOKENS.mask_id).float().mean() > 0.6  # 85% [MASK] by default
    with torch.no_grad():
        logits = module.generator(input_ids=inputs["masked_ids"], attention_mask=b["attention_mask"]).logits
    expected = F.cross_entropy(logits[selected], b["input_ids"][selected]).item()
    assert metrics["mlm_loss"] == pytest.approx(expected, rel=1e-4)


def test_replace_mlm_predicts_originals_at_selected_positions_from_generator_samples():
    m, module, b, inputs, corrupted, loss, metrics, counts = run_and_capture("replace-mlm")
    selected = inputs["selected"]
    assert not (corrupted == TOKENS.mask_id).any()  # samples instead of [MASK]
    assert torch.equal(corrupted[~selected], b["input_ids"][~selected])
    with torch.no_grad():
        logits = module.main(input_ids=corrupted, attention_mask=b["attention_mask"]).logits
    expected = F.cross_entropy(logits[selected], b["input_ids"][selected]).item()
    assert metrics["main_mlm_loss"] == pytest.approx(expected, rel=1e-4)
    assert loss.item() == pytest.approx(metrics["mlm_loss"] + metrics["main_mlm_loss"], rel=1e-5)


def test_copy_mechanism_by_hand_on_a_three_token_vocabulary():
    p_mlm = torch.tensor([0.5, 0.3, 0.2])
    logits = torch.log(p_mlm).expand(3, -1)
    gate = torch.logit(torch.tensor([0.25, 0.25, 0.1]))
    inputs = torch.tensor([1, 1, 1])
    targets = torch.tensor([1, 2, 1])
    log_p = copy_mechanism_log_probs(logits, gate, inputs, targets)
    # target = input: D + (1 - D) p(1); target != input: (1 - D) p(target)
    expected = torch.tensor([0.25 + 0.75 * 0.3, 0.75 * 0.2, 0.1 + 0.9 * 0.3])
    assert torch.allclose(log_p.exp(), expected, atol=1e-6)
    # mixtures: [0.375, 0.475, 0.15] -> 1 (copied); [0.45, 0.37, 0.18] -> 0 (the MLM's choice)
    assert copy_mechanism_predictions(logits, gate, inputs).tolist() == [1, 1, 0]


def test_all_tokens_mlm_loss_is_over_every_real_token_with_the_copy_mechanism():
    m, module, b, inputs, corrupted, loss, metrics, counts = run_and_capture("all-tokens-mlm")
    real = b["attention_mask"].bool()
    with torch.no_grad():
        hidden = module.main.electra(input_ids=corrupted, attention_mask=b["attention_mask"]).last_hidden_state
        logits = module.main.generator_lm_head(module.main.generator_predictions(hidden))
        gate = torch.sigmoid(module.copy_gate(hidden).squeeze(-1))
    probs = torch.softmax(logits, -1).gather(-1, b["input_ids"][..., None]).squeeze(-1)
    p = gate * (corrupted == b["input_ids"]).float() + (1 - gate) * probs
    expected = -p.log()[real].mean().item()  # every real token, never padding
    assert metrics["main_mlm_loss"] == pytest.approx(expected, rel=1e-4)
    assert loss.item() == pytest.approx(metrics["mlm_loss"] + metrics["main_mlm_loss"], rel=1e-5)
    assert m.exports(module)[""] is module.main  # the copy gate is not part of the export


def test_mlm_uses_bert_rates_on_the_main_model_size():
    m, module = build("mlm")
    assert module.mlm.config.hidden_size == 64 and module.mlm.config.num_hidden_layers == 2
    b = batch(rows=400, length=64, padding=0)
    inputs, _ = m.prepare_batch(b, ctx())
    selected, masked, original = inputs["selected"], inputs["input_ids"], b["input_ids"]
    n = selected.sum().item()
    mask = (masked[selected] == TOKENS.mask_id).sum().item() / n
    kept = (masked[selected] == original[selected]).sum().item() / n
    assert abs(mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 + 1 / 35  # random tokens may equal the original
    assert torch.equal(inputs["targets"], original[selected])


# --- each trains ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", JOINT + ["mlm"])
def test_each_method_trains_with_falling_loss(name):
    m, module = build(name)
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)
    b = batch()
    losses = []
    for step in range(15):
        inputs, _ = m.prepare_batch(b, ctx(step))
        loss, metrics = module(**inputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < losses[0] * 0.9, losses
    assert m.flops_per_sequence(32) > 0


def test_generator_receives_no_gradient_through_the_samples():
    m, module = build("electra", "generator.gen_weight=0.0")
    inputs, _ = m.prepare_batch(batch(), ctx())
    loss, _ = module(**inputs)
    loss.backward()
    # with no MLM loss, the generator's own layers get no gradient: the discriminator's loss does not
    # reach them through the (detached) sampling; the shared embeddings do get gradients
    assert all(p.grad is None or not p.grad.any() for p in module.generator.electra.encoder.parameters())
    assert module.main.electra.embeddings.word_embeddings.weight.grad.any()


# --- switching method changes only the strategy -------------------------------------------------------

def test_same_data_and_same_selection_whatever_the_method(prepared):
    """The trainer's data order comes from RankBatches(dataset, micro, rank, world, seed, consumed), which
    takes no method; the corruption draws come from the same per-micro-batch generator, and every
    method selects its positions first, so the same seed selects the same positions."""
    from fast_electra_ds.data.dataset import PackedDataset, RankBatches
    from fast_electra_ds.data.tokenizer import load_tokenizer

    dataset = PackedDataset(str(prepared["data"]), 64, tokenizer=load_tokenizer(str(prepared["tokenizer"])))
    ids = dataset.special_ids
    tokens = TokenInfo(dataset.vocab_size, ids["pad"], ids["unk"], ids["cls"], ids["sep"], ids["mask"], dataset.fingerprint)
    seen = {}
    for name in ["electra", "mlm", "aux-mlm", "all-tokens-mlm"]:
        m = METHODS[name](config(), tokens, torch.device("cpu"))
        batches = RankBatches(dataset, 8, 0, 2, 1234, 0)
        first = next(batches)
        inputs, _ = m.prepare_batch(first, ctx())
        seen[name] = (first["input_ids"], inputs["selected"])
    reference_ids, reference_selected = seen["electra"]
    for name, (input_ids, selected) in seen.items():
        assert torch.equal(input_ids, reference_ids), name
        assert torch.equal(selected, reference_selected), name
