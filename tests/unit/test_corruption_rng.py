"""data.corruption_rng: `step` keeps the (seed, step, micro-batch, rank) stream; `sample` makes every
sample's masks and sampler draws a function of (seed, its position in the training stream) alone."""
import pytest
import torch

from fast_electra_ds.data.dataset import RankBatches, micro_batch_positions
from fast_electra_ds.errors import UserError
from fast_electra_ds.methods import METHODS, StepContext
from fast_electra_ds.methods.corruption_rng import SampleDraws, StepDraws, sample_seed
from fast_electra_ds.methods.masking import corrupt_inputs, maskable_positions, select_positions
from fast_electra_ds.models.sampling import sample_and_argmax
from tests.method_helpers import TOKENS, batch, config, fast_method


def test_the_default_is_the_step_stream():
    method = METHODS["fast"](config("method=fast"), TOKENS, torch.device("cpu"))
    assert method.config.data.corruption_rng == "step"
    draws = method.draws(batch(), StepContext(0, 0.0, torch.Generator().manual_seed(1), positions=[0, 1]))
    assert isinstance(draws, StepDraws)  # positions are ignored: today's stream


def test_step_mode_draws_what_the_generator_drew_before():
    """The masks and replacements of the default equal those of the calls the method made before
    the switch existed: one generator, selection noise, corruption draw, then the sampler's uniforms
    (at the exp curriculum's temperature, which follows from the progress alone)."""
    method = fast_method("curriculum.kind=exp")
    data = batch(rows=16)
    inputs, _ = method.prepare_batch(data, StepContext(2, 0.3, torch.Generator().manual_seed(9), positions=list(range(16))))
    g = torch.Generator().manual_seed(9)
    selected = select_positions(maskable_positions(data["input_ids"], data["attention_mask"], TOKENS.special_ids), 0.15, g)
    masked = corrupt_inputs(data["input_ids"], selected, TOKENS.mask_id, 0.85, 0.0, TOKENS.vocab_size, g, TOKENS.special_ids)
    logits = method.aux.logits(masked, data["attention_mask"], selected)
    sampled = sample_and_argmax(logits, method.curriculum.scheduled(0.3), g, TOKENS.special_ids)[0]
    expected = data["input_ids"].clone()
    expected[selected] = sampled
    assert torch.equal(inputs["input_ids"], expected)


def test_sample_seeds_differ_between_neighbouring_seeds_and_positions():
    seeds = {sample_seed(seed, position) for seed in range(4) for position in range(1000)}
    assert len(seeds) == 4000  # seed + 1 at position p is not seed at position p + 1
    assert all(0 <= s < 2**63 for s in seeds)


def test_a_sample_draws_the_same_whatever_its_batch():
    together = SampleDraws(5, [10, 11, 12, 13], 16, torch.device("cpu"))
    apart = [SampleDraws(5, [p], 16, torch.device("cpu")) for p in (12, 10)]
    assert torch.equal(together.noise[2], apart[0].noise[0]) and torch.equal(together.uniforms[0], apart[1].uniforms[0])
    assert torch.equal(together.random_picks(50, (4, 16), None)[2], apart[0].random_picks(50, (1, 16), None)[0])
    assert not torch.equal(together.noise[0], together.noise[1])
    assert not torch.equal(SampleDraws(6, [10], 16, torch.device("cpu")).noise[0], together.noise[0])  # the run seed counts


@pytest.mark.parametrize("kind", ["exp", "target"])
def test_sample_mode_corrupts_a_sample_the_same_in_any_micro_batch_layout(kind):
    """One micro-batch of 8 samples (one rank) and two of 4 (two ranks, or accumulation 2) give each
    sample the same masks and replacements; the step mode does not."""
    extra = [f"curriculum.kind={kind}"]
    method = fast_method("data.corruption_rng=sample", *extra, unigram_entropy=4.0)
    data = batch(rows=8)
    whole, _ = method.prepare_batch(data, StepContext(1, 0.25, torch.Generator().manual_seed(1), positions=list(range(8, 16))))
    halves = [method.prepare_batch({k: v[i:i + 4] for k, v in data.items()},
                                   StepContext(1, 0.25, torch.Generator().manual_seed(2 + i), positions=list(range(8 + i, 12 + i))))[0]
              for i in (0, 4)]
    for key in ("input_ids", "is_replaced"):
        assert torch.equal(whole[key], torch.cat([half[key] for half in halves]))
    assert whole["is_replaced"].any()
    step = fast_method()
    one = step.prepare_batch(data, StepContext(1, 0.25, torch.Generator().manual_seed(1)))[0]
    two = torch.cat([step.prepare_batch({k: v[i:i + 4] for k, v in data.items()}, StepContext(1, 0.25, torch.Generator().manual_seed(2 + i)))[0]["is_replaced"]
                     for i in (0, 4)])
    assert not torch.equal(one["is_replaced"], two)


def test_sample_mode_masks_follow_the_position_not_the_row():
    method = METHODS["mlm"](config("method=mlm", "data.corruption_rng=sample"), TOKENS, torch.device("cpu"))
    data = batch(rows=2)
    same = {k: v[[0, 0]] for k, v in data.items()}  # one sequence twice, at two positions
    first = method.prepare_batch(same, StepContext(0, 0.0, torch.Generator(), positions=[3, 4]))[0]["selected"]
    assert not torch.equal(first[0], first[1])
    again = method.prepare_batch(same, StepContext(5, 0.5, torch.Generator().manual_seed(7), positions=[4, 3]))[0]["selected"]
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])  # the step and the generator do not count


def test_a_step_covers_the_same_positions_on_any_world_size():
    """The positions the trainer gives each micro-batch are the ones RankBatches reads there, and a
    step's set is the same on 1 rank x 2 micro-batches as on 2 ranks x 1 or 4 ranks x 1 of half size."""
    for world, accumulation, micro in [(1, 2, 4), (2, 1, 4), (4, 1, 2)]:
        covered = sorted(p for rank in range(world) for m in range(accumulation)
                         for p in micro_batch_positions(16, m, micro, rank, world))
        assert covered == list(range(16, 24))
    dataset = list(range(100))
    for rank in range(2):
        batches = RankBatches(_Items(dataset), 3, rank, 2, seed=4, consumed_samples=12)
        for m in range(2):
            positions = micro_batch_positions(12, m, 3, rank, 2)
            assert batches.sample_indices() == [batches._sample_at(p) for p in positions]
            next(batches)


def test_bad_values_are_one_line():
    with pytest.raises(UserError, match="data.corruption_rng"):
        config("data.corruption_rng=rank")
    with pytest.raises(UserError, match="method electra"):
        METHODS["electra"](config("method=electra", "data.corruption_rng=sample"), TOKENS, torch.device("cpu"))


class _Items:
    """A data set of ints as one-element samples."""

    def __init__(self, values):
        self.values = values

    def __len__(self):
        return len(self.values)

    def __getitem__(self, index):
        return {"input_ids": torch.tensor([self.values[index]])}
