"""Weighted blends in Megatron's syntax (data.path="0.3 A 0.7 B"): the corpus of every sample is
megatron-core's BlendedDataset index (built by its own BlendedMegatronDatasetBuilder over the same
prefixes), each corpus cycles through its own seeded shuffle, the order depends only on the seed and
the position (exact resume, disjoint ranks), and a malformed blend is one error line."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fast_electra_ds.config.run_config import RunConfig
from fast_electra_ds.config.validate import validate_config
from fast_electra_ds.data.blend import PERIOD, BlendedDataset, parse_blend
from fast_electra_ds.data.dataset import RankBatches, open_dataset, validation_split
from fast_electra_ds.data.prepare import import_indexed_dataset
from fast_electra_ds.data.tokenizer import load_tokenizer
from fast_electra_ds.errors import UserError

SEQ_LEN = 32
RANGES = {"a": (10, 400), "b": (400, 1000)}  # each corpus's token ids: a sample says which corpus it came from


@pytest.fixture(scope="module")
def blend(prepared, tmp_path_factory):
    """Two Megatron prefixes of different sizes (a: 40 documents, b: 120), and the tokenizer."""
    root = tmp_path_factory.mktemp("blend")
    rng = np.random.default_rng(0)
    for name, documents in (("a", 40), ("b", 120)):
        builder = import_indexed_dataset().IndexedDatasetBuilder(str(root / name) + ".bin", dtype=np.int32)
        for _ in range(documents):
            builder.add_item(torch.tensor(rng.integers(*RANGES[name], int(rng.integers(20, 60)))))
            builder.end_document()
        builder.finalize(str(root / name) + ".idx")
    return {"a": root / "a", "b": root / "b", "tokenizer": load_tokenizer(str(prepared["tokenizer"]))}


def corpus_of(item) -> str:
    inner = item["input_ids"][1:int(item["attention_mask"].sum()) - 1]
    inner = inner[inner >= RANGES["a"][0]]  # without the [SEP]s between documents
    (name,) = [n for n, (lo, hi) in RANGES.items() if lo <= int(inner.min()) and int(inner.max()) < hi]
    return name


def training_part(dataset, val_sequences=4):
    train, _ = validation_split(len(dataset), val_sequences)
    return dataset.subset(train)


def megatron_dataset_index(blend, weights, size):
    """megatron-core's own blend over the same prefixes: BlendedMegatronDatasetBuilder with GPTDataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
        from megatron.core.datasets.utils import get_blend_from_list

    class Tokenizer:  # what GPTDataset reads of a tokenizer (the ids only shape its masks; the index does not use them)
        eod, pad, vocab_size = 1, 0, 1000
        unique_identifiers = {"class": "Tokenizer"}

    words = [w for weight, name in zip(weights, "ab") for w in (str(weight), str(blend[name]))]
    config = GPTDatasetConfig(random_seed=1, sequence_length=SEQ_LEN, blend=get_blend_from_list(words), split="1,0,0",
                              tokenizer=Tokenizer(), reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [size, 0, 0], lambda: True, config).build()
    return np.asarray(train.dataset_index), train.weights


def test_blend_draws_each_corpus_where_megatron_core_does(blend):
    dataset = open_dataset(f"3 {blend['a']} 7 {blend['b']}", SEQ_LEN, tokenizer=blend["tokenizer"])
    assert isinstance(dataset, BlendedDataset) and dataset.weights == pytest.approx([0.3, 0.7])
    train = training_part(dataset)
    order = train.sample_order(seed=5)
    size = 1000
    ours = np.array([0 if corpus_of(train[order(p)]) == "a" else 1 for p in range(size)])
    theirs, weights = megatron_dataset_index(blend, [3, 7], size)
    assert weights == pytest.approx(dataset.weights)
    assert np.array_equal(ours, theirs)
    assert abs(np.bincount(ours)[0] - 300) <= 1  # a holds about a quarter of the sequences, and gives 30%
    # The index is built for one period and repeated; a period's counts are within one of the weights.
    assert order.period == PERIOD and abs(int(order.per_period[0]) - 0.3 * PERIOD) <= 1
    assert [order(PERIOD + p) >= train.part_starts[1] for p in range(50)] == list(ours[:50] == 1)


def test_each_corpus_cycles_its_own_shuffle_by_seed(blend):
    train = training_part(open_dataset(f"0.5 {blend['a']} 0.5 {blend['b']}", SEQ_LEN, tokenizer=blend["tokenizer"]))
    sizes = np.diff(train.part_starts)
    order = train.sample_order(seed=1)
    stream = [order(p) for p in range(5 * int(sizes.max()))]
    for k, (start, size) in enumerate(zip(train.part_starts[:-1], sizes)):
        draws = [i for i in stream if start <= i < start + size]
        assert sorted(draws[:size]) == list(range(start, start + size))  # every training sample once per epoch
        assert sorted(draws[size:2 * size]) == list(range(start, start + size))
        assert draws[:size] != draws[size:2 * size]  # a new shuffle each epoch
    assert stream == [train.sample_order(seed=1)(p) for p in range(len(stream))]
    assert stream != [train.sample_order(seed=2)(p) for p in range(len(stream))]
    held_out = set(validation_split(len(train.blend), 4)[1].tolist())
    assert not held_out & {int(train.indices[i]) for i in stream}  # validation samples never train


def test_blend_resumes_exactly_and_ranks_are_disjoint(blend):
    train = training_part(open_dataset(f"0.2 {blend['a']} 0.8 {blend['b']}", SEQ_LEN, tokenizer=blend["tokenizer"]))
    world, micro, steps = 2, 3, 40
    ranks = [RankBatches(train, micro, rank, world, seed=9) for rank in range(world)]
    uninterrupted = []
    for _ in range(steps):
        picks = [r.sample_indices() for r in ranks]
        assert not set(picks[0]) & set(picks[1])
        uninterrupted.append(picks[1])
        for r in ranks:
            r.consumed_samples += micro * world
    resumed = RankBatches(train, micro, 1, world, seed=9, consumed_samples=17 * micro * world)
    tail = []
    for _ in range(steps - 17):
        tail.append(resumed.sample_indices())
        next(resumed)
    assert tail == uninterrupted[17:]
    batch = next(RankBatches(train, 4, 0, 1, seed=9))
    assert batch["input_ids"].shape == (4, SEQ_LEN)


def test_unigram_entropy_is_the_mixture_the_blend_trains_on(blend):
    dataset = open_dataset(f"0.3 {blend['a']} 0.7 {blend['b']}", SEQ_LEN, tokenizer=blend["tokenizer"])
    parts = [open_dataset(str(blend[n]), SEQ_LEN, tokenizer=blend["tokenizer"]) for n in "ab"]
    # Disjoint vocabularies: H(mixture) = sum of w * H(part) + H(weights).
    expected = sum(w * p.unigram_entropy() for w, p in zip([0.3, 0.7], parts)) - (0.3 * np.log(0.3) + 0.7 * np.log(0.7))
    assert dataset.unigram_entropy() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("path, message", [
    ("0.3 {a} 0.7", r"has 3 words, not weight-prefix pairs"),
    ("0.3 {a} heavy {b}", r"weight 'heavy' \(before .*b\) is not a number"),
    ("0.3 {a} -0.7 {b}", r"weight -0.7 of .*b is not a positive number"),
    ("0 {a} 1 {b}", r"weight 0 of .*a is not a positive number"),
    ("0.3 0.7 {a} {b}", r"the number 0.7 where a prefix should follow weight 0.3"),
])
def test_a_malformed_blend_is_one_line_in_the_config_layer(blend, path, message):
    path = path.format(**blend)
    with pytest.raises(UserError, match=message + r".*weight-prefix pairs, e.g. data.path="):
        parse_blend(path)
    config = RunConfig()
    config.data.path, config.data.tokenizer = path, "tok"
    with pytest.raises(UserError, match=message):
        validate_config(config, [config.method])


def test_a_blend_with_a_missing_prefix_names_it(blend, tmp_path):
    with pytest.raises(UserError, match=r"data.path entry .*nowhere does not exist"):
        open_dataset(f"0.5 {blend['a']} 0.5 {tmp_path / 'nowhere'}", SEQ_LEN, tokenizer=blend["tokenizer"])


def test_plain_paths_are_not_blends(blend, tmp_path):
    assert parse_blend(str(blend["a"])) is None and parse_blend(f"{blend['a']},{blend['b']}") is None
    spaced = tmp_path / "2 corpora"
    spaced.mkdir()
    assert parse_blend(str(spaced)) is None  # an existing path with spaces is a path
    with pytest.raises(UserError, match=r"space-separated prefixes.*commas.*or weigh them"):
        open_dataset(f"{blend['a']} {blend['b']}", SEQ_LEN, tokenizer=blend["tokenizer"])
