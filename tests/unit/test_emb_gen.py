"""`emb-gen` (Kang et al., Emb-Gen) on CPU without DeepSpeed: the blocked k-nearest-neighbour search
against a brute-force one (ties and duplicate rows included), the replacements prepare_batch draws,
the pull loss's gradient, the [V, k] table refresh and its resume, embeddings_from, bad settings."""
import pytest
import torch

from fast_electra_ds.config.run_config import load_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.models.embedding_generator import embedding_pull_loss, nearest_neighbours
from fast_electra_ds.methods import METHODS, StepContext, TokenInfo
from tests.helpers import ROOT

TOKENS = TokenInfo(vocab_size=120, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4, fingerprint="test")
SPECIALS = TOKENS.special_ids


def config(*overrides):
    return load_config([str(ROOT / "configs/tiny.yaml")], ["method=emb-gen", "model.dropout=0.0", *overrides])


def build(*overrides, tokens=TOKENS, seed=0):
    torch.manual_seed(seed)
    method = METHODS["emb-gen"](config(*overrides), tokens, torch.device("cpu"))
    method.setup()
    return method, method.build_model(None)


def batch(rows=8, length=40, padding=4, seed=0, low=5, high=120):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (rows, length), generator=g)
    ids[:, 0] = TOKENS.cls_id
    ids[:, length - padding - 1] = TOKENS.sep_id
    ids[:, length - padding:] = TOKENS.pad_id
    return {"input_ids": ids, "attention_mask": (ids != TOKENS.pad_id).long()}


def ctx(step=0, seed=0):
    return StepContext(step, 0.0, torch.Generator().manual_seed(1000 * seed + step))


def brute_force_distances(table: torch.Tensor, query: int) -> torch.Tensor:
    """L2 distance from `query` to every row, in float64, with the query and specials excluded (inf)."""
    d = torch.cdist(table.double()[query][None], table.double())[0]
    d[SPECIALS] = float("inf")
    d[query] = float("inf")
    return d


def assert_k_nearest(table, query, neighbours, k):
    """Tie-aware: every returned id is within the brute-force k-th smallest distance, none repeats."""
    d = brute_force_distances(table, query)
    kth = d.sort().values[k - 1]
    ids = neighbours.tolist()
    assert len(set(ids)) == k and query not in ids and not set(ids) & set(SPECIALS)
    assert all(d[i] <= kth + 1e-5 for i in ids), (query, ids, d[ids].tolist(), kth.item())


def table_with_ties_and_duplicates(vocab=120, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, dim, generator=g)
    table[10] = table[11] = table[12]  # exact duplicates: distance 0 to each other
    table[SPECIALS] = table[20].clone()  # specials sit ON a real token: they would be its nearest if allowed
    table[30:60] = torch.randint(-1, 2, (30, dim), generator=g).float()  # a lattice: many equal distances
    return table


# --- the search ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks", [(4096, 8192), (7, 13), (1, 5)])
def test_search_matches_brute_force_with_ties_and_duplicates(blocks):
    table = table_with_ties_and_duplicates()
    k = 6
    found = nearest_neighbours(table, torch.arange(len(table)), k, SPECIALS, query_block=blocks[0], vocab_block=blocks[1])
    assert found.shape == (len(table), k)
    for query in range(len(table)):
        assert_k_nearest(table, query, found[query], k)
    assert set(found[10, :2].tolist()) == {11, 12}  # duplicates are each other's nearest, the token itself is not
    assert not set(found[20].tolist()) & set(SPECIALS)
    # nearest first
    for query in (25, 40, 100):
        d = brute_force_distances(table, query)[found[query]]
        assert torch.all(d[1:] >= d[:-1] - 1e-6)


def test_search_of_a_subset_equals_the_whole_table_rows():
    table = table_with_ties_and_duplicates(seed=3)
    whole = nearest_neighbours(table, torch.arange(len(table)), 5, SPECIALS)
    subset = torch.tensor([99, 7, 31, 7, 64])  # 99's nearest are the duplicates 10, 11, 12, in any order
    found = nearest_neighbours(table, subset, 5, SPECIALS, vocab_block=16)
    assert torch.equal(found.sort(dim=1).values, whole[subset].sort(dim=1).values)
    assert set(found[0, :3].tolist()) == {10, 11, 12}


# --- prepare_batch ------------------------------------------------------------------------------------

def test_every_selected_token_is_replaced_by_one_of_its_k_nearest_never_itself_never_special():
    method, module = build("emb_gen.k=4")
    with torch.no_grad():  # specials placed on real tokens: only exclusion keeps them out
        module.word_embeddings.weight[SPECIALS] = module.word_embeddings.weight[50].clone()
    table = module.word_embeddings.weight.detach().clone()
    data = batch(rows=16)
    original = data["input_ids"]
    inputs, _ = method.prepare_batch(data, ctx())
    changed = inputs["input_ids"] != original
    assert torch.equal(inputs["is_replaced"], changed)
    assert torch.equal(inputs["original_ids"], original)
    real = data["attention_mask"].bool() & (original != TOKENS.cls_id) & (original != TOKENS.sep_id)
    counts = changed.sum(dim=1)
    assert torch.equal(counts, torch.round(real.sum(dim=1) * 0.15).long())  # all 15% selected are replaced
    assert not (changed & ~real).any()  # never a special token or padding
    replaced = inputs["input_ids"][changed]
    assert not torch.isin(replaced, torch.tensor(SPECIALS)).any()
    for o, r in zip(original[changed].tolist(), replaced.tolist()):
        assert r != o
        d = brute_force_distances(table, o)
        assert d[r] <= d.sort().values[3] + 1e-5  # among the 4 nearest


def test_the_choice_is_uniform_over_the_k_neighbours_and_seeded():
    method, module = build("emb_gen.k=5", "masking.mask_prob=0.5")
    data = batch(rows=32, low=7, high=8)  # one token id everywhere: its 5 neighbours are the candidates
    neighbours = nearest_neighbours(module.word_embeddings.weight, torch.tensor([7]), 5, SPECIALS)[0]
    inputs, _ = method.prepare_batch(data, ctx(seed=1))
    replaced = inputs["input_ids"][inputs["is_replaced"]]
    counts = torch.stack([(replaced == n).sum() for n in neighbours]).float()
    assert counts.sum() == len(replaced) > 400
    expected = len(replaced) / 5
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 18.5  # chi-square, 4 degrees of freedom, p = 0.001
    again, _ = method.prepare_batch(data, ctx(seed=1))
    assert torch.equal(again["input_ids"], inputs["input_ids"])  # same generator, same draws
    other, _ = method.prepare_batch(data, ctx(seed=2))
    assert not torch.equal(other["input_ids"], inputs["input_ids"])


def test_the_search_follows_the_current_training_table():
    method, module = build("emb_gen.k=1")
    data = batch(rows=4, low=40, high=41)  # token 40 everywhere
    with torch.no_grad():
        module.word_embeddings.weight[77] = module.word_embeddings.weight[40] + 1e-4
    inputs, _ = method.prepare_batch(data, ctx())
    assert set(inputs["input_ids"][inputs["is_replaced"]].tolist()) == {77}
    with torch.no_grad():
        module.word_embeddings.weight[93] = module.word_embeddings.weight[40]
    inputs, _ = method.prepare_batch(data, ctx(step=1))
    assert set(inputs["input_ids"][inputs["is_replaced"]].tolist()) == {93}


# --- the neighbour table refreshed every N steps, and its resume ------------------------------------------

def test_refresh_table_is_reused_between_refreshes_and_resumes_exactly():
    method, module = build("emb_gen.k=1", "emb_gen.refresh_every=3")
    data = batch(rows=4, low=40, high=41)
    weight = module.word_embeddings.weight

    def replacement(m, step):
        inputs, _ = m.prepare_batch(data, ctx(step=step))
        return set(inputs["input_ids"][inputs["is_replaced"]].tolist())

    with torch.no_grad():
        weight[77] = weight[40] + 1e-4
    assert replacement(method, 0) == {77}
    with torch.no_grad():
        weight[93] = weight[40]  # a new nearest neighbour appears after the refresh at step 0
    saved = method.state_dict()
    assert saved["table_step"] == 0 and len(saved["neighbour_table"]) == TOKENS.vocab_size
    assert replacement(method, 1) == {77} and replacement(method, 2) == {77}  # the table of step 0
    # a run resumed at step 2 uses the saved table, not the current embeddings
    resumed = METHODS["emb-gen"](method.config, TOKENS, torch.device("cpu"))
    resumed.module = module
    resumed.load_state_dict(saved)
    assert replacement(resumed, 2) == {77}
    assert replacement(method, 3) == {93} and replacement(resumed, 3) == {93}  # step 3: refreshed
    assert method.state_dict()["table_step"] == 3


def test_default_search_keeps_no_state():
    method, _ = build()
    method.prepare_batch(batch(), ctx())
    assert method.state_dict() == {}


# --- the pull loss inside the engine module --------------------------------------------------------------

def test_pull_loss_gradient_reaches_exactly_the_original_and_replacement_rows():
    method, module = build("emb_gen.pull_weight=2.0")
    data = batch()
    inputs, _ = method.prepare_batch(data, ctx())

    def embedding_grad(weight):
        module.pull_weight = weight
        module.zero_grad(set_to_none=True)
        loss, metrics = module(**inputs)
        loss.backward()
        return module.word_embeddings.weight.grad.clone(), loss, metrics

    without, rtd_only, _ = embedding_grad(0.0)
    with_pull, total, metrics = embedding_grad(2.0)
    pull_grad = with_pull - without
    pairs = inputs["is_replaced"]
    o, r = inputs["original_ids"][pairs], inputs["input_ids"][pairs]
    e = module.word_embeddings.weight.detach()
    expected = torch.zeros_like(e)  # d/de of 2 * mean ||e_o - e_r||²
    expected.index_add_(0, o, 2.0 * 2 * (e[o] - e[r]) / len(o))
    expected.index_add_(0, r, -2.0 * 2 * (e[o] - e[r]) / len(o))
    assert torch.allclose(pull_grad, expected, atol=1e-6)
    touched = torch.unique(torch.cat([o, r]))
    assert pull_grad[touched].abs().sum(dim=1).gt(0).all()
    mean_pull = (e[o] - e[r]).pow(2).sum(dim=1).mean()
    assert metrics["emb_pull_loss"][0] / metrics["emb_pull_loss"][1] == pytest.approx(mean_pull.item(), rel=1e-5)
    assert total.item() == pytest.approx(rtd_only.item() + 2.0 * mean_pull.item(), rel=1e-5)


def test_pull_loss_helper_on_a_hand_made_table():
    emb = torch.nn.Embedding(3, 2)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]))
    total, pairs = embedding_pull_loss(emb, torch.tensor([0, 0]), torch.tensor([1, 2]))
    assert total.item() == pytest.approx(25.0 + 1.0) and pairs.item() == 2


def test_zero_pull_weight_adds_no_term():
    method, module = build("emb_gen.pull_weight=0")
    loss, metrics = module(**method.prepare_batch(batch(), ctx())[0])
    assert "emb_pull_loss" not in metrics and loss.item() == pytest.approx(metrics["rtd_loss"][0].item())


def test_a_few_steps_lower_the_loss_as_throughput_drives_it():
    method, module = build()
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)
    losses = []
    for step in range(25):
        inputs, _ = method.prepare_batch(batch(seed=step % 3), ctx(step=step))
        loss, _ = module(**inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.end_step(ctx(step=step), {})
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05


def test_flops_count_the_discriminator_and_the_search():
    from fast_electra_ds.accounting.flops import encoder_forward_flops, rtd_head_flops, training_flops

    plain, _ = build("emb_gen.pull_weight=0")

    main = plain.main_config()
    discriminator = training_flops(encoder_forward_flops(main, 64) + rtd_head_flops(main, 64))
    search = 64 * 0.15 * 2 * TOKENS.vocab_size * main.embedding_size
    assert plain.flops_per_sequence(64) == pytest.approx(discriminator + search)
    table, _ = build("emb_gen.refresh_every=10")
    table.rank_sequences_per_step = 4
    assert table.flops_per_sequence(64) == pytest.approx(discriminator + 2 * TOKENS.vocab_size ** 2 * main.embedding_size / 40)


# --- embeddings_from ----------------------------------------------------------------------------------------

def save_pretrained_discriminator(path, vocab_size=120, embedding_size=64, seed=5):
    from transformers import ElectraConfig, ElectraForPreTraining

    torch.manual_seed(seed)
    model = ElectraForPreTraining(ElectraConfig(vocab_size=vocab_size, embedding_size=embedding_size, hidden_size=64,
                                                num_hidden_layers=1, num_attention_heads=2, intermediate_size=128))
    model.save_pretrained(path)
    return model.get_input_embeddings().weight.detach().clone()


def test_embeddings_from_initialises_the_discriminator_table(tmp_path):
    expected = save_pretrained_discriminator(tmp_path / "pre")
    _, module = build(f"emb_gen.embeddings_from={tmp_path / 'pre'}")
    assert torch.equal(module.word_embeddings.weight.detach(), expected)
    _, fresh = build()
    assert not torch.equal(fresh.word_embeddings.weight.detach(), expected)


def test_frozen_search_uses_the_pretrained_table_whatever_training_does(tmp_path):
    pretrained = save_pretrained_discriminator(tmp_path / "pre")
    method, module = build(f"emb_gen.embeddings_from={tmp_path / 'pre'}", "emb_gen.search_table=frozen", "emb_gen.k=1")
    with torch.no_grad():
        module.word_embeddings.weight.normal_()  # training moved the table: the frozen search ignores it
    data = batch(rows=4, low=40, high=41)
    inputs, _ = method.prepare_batch(data, ctx())
    nearest = nearest_neighbours(pretrained, torch.tensor([40]), 1, SPECIALS)[0, 0].item()
    assert set(inputs["input_ids"][inputs["is_replaced"]].tolist()) == {nearest}
    assert method.state_dict() == {}  # rebuilt from embeddings_from on resume


@pytest.mark.parametrize("sizes, what", [(dict(vocab_size=121), "121 x 64"), (dict(embedding_size=32), "120 x 32")])
def test_embeddings_from_with_other_sizes_is_a_one_line_error(tmp_path, sizes, what):
    save_pretrained_discriminator(tmp_path / "pre", **sizes)
    with pytest.raises(UserError) as err:
        build(f"emb_gen.embeddings_from={tmp_path / 'pre'}")
    message = str(err.value)
    assert "\n" not in message and what in message and "120 x 64" in message and "; " in message


def test_embeddings_from_a_directory_without_a_model_is_an_error(tmp_path):
    with pytest.raises(UserError, match="has no config.json"):
        build(f"emb_gen.embeddings_from={tmp_path}")


@pytest.mark.parametrize("overrides, match", [
    (["emb_gen.k=0"], "emb_gen.k is 0"),
    (["emb_gen.k=115"], "between 1 and 114"),
    (["emb_gen.refresh_every=0"], "refresh_every is 0"),
    (["emb_gen.pull_weight=-1"], "pull_weight is -1"),
    (["emb_gen.search_table=cached"], "unknown emb_gen.search_table"),
    (["emb_gen.search_table=frozen"], "needs a pre-trained table"),
])
def test_bad_settings_are_user_errors(overrides, match):
    with pytest.raises(UserError, match=match):
        build(*overrides)


def test_config_section_parses_and_rejects_unknown_keys():
    cfg = config("emb_gen.k=3", "emb_gen.refresh_every=50", "emb_gen.pull_weight=0.5")
    assert (cfg.emb_gen.k, cfg.emb_gen.refresh_every, cfg.emb_gen.pull_weight) == (3, 50, 0.5)
    with pytest.raises(UserError, match="unknown config key 'emb_gen.topk'"):
        config("emb_gen.topk=3")


def test_search_benchmark_script_runs_on_a_small_table():
    from benchmarks.emb_gen_search import run

    rows = run([300], [16], [20, 40], k=5, refresh_every=10, refresh_rows=100, repeats=1, quiet=True)
    (row,) = rows
    assert row["refresh_scaled"] and row["refresh_per_step_ms"] == pytest.approx(row["refresh_ms"] / 10)
    assert row["step_20"] > 0 and row["step_40"] > 0
