"""Background prefetch keeps RankBatches' order and exact resume; a batch without padding reaches
attention with no mask."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import ElectraConfig, ElectraForPreTraining

from fast_electra_ds.data.dataset import RankBatches
from fast_electra_ds.data.prefetch import Prefetcher
from fast_electra_ds.data.unpadded import is_unpadded_mask
from fast_electra_ds.models.encoder import build_model

SEQ = 8


class NumberedSamples:
    """Sample i: input_ids all i; every 5th sample is padded after 3 tokens."""

    def __init__(self, n: int, broken_at: int | None = None):
        self.n, self.broken_at = n, broken_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.broken_at:
            raise ValueError(f"shard for sample {i} is unreadable")
        mask = torch.ones(SEQ, dtype=torch.long)
        if i % 5 == 0:
            mask[3:] = 0
        return {"input_ids": torch.full((SEQ,), i), "attention_mask": mask}


def take(iterator, k):
    return [next(iterator) for _ in range(k)]


def test_prefetch_keeps_order_and_counts_only_what_was_consumed():
    data = NumberedSamples(23)
    direct = RankBatches(data, 2, rank=1, world_size=2, seed=7)
    prefetched = Prefetcher(RankBatches(data, 2, rank=1, world_size=2, seed=7), torch.device("cpu"), depth=3)
    for expected, got in zip(take(direct, 30), take(prefetched, 30)):  # past two epochs
        assert torch.equal(expected["input_ids"], got["input_ids"])
        assert torch.equal(expected["attention_mask"], got["attention_mask"])
    assert prefetched.consumed_samples == direct.consumed_samples == 30 * 2 * 2  # not counting the 3 read ahead
    prefetched.close()


def test_resume_from_the_prefetchers_count_continues_exactly():
    data = NumberedSamples(23)
    uninterrupted = [b["input_ids"] for b in take(Prefetcher(RankBatches(data, 3, 0, 1, seed=1), torch.device("cpu")), 12)]
    first = Prefetcher(RankBatches(data, 3, 0, 1, seed=1), torch.device("cpu"), depth=4)
    before = [b["input_ids"] for b in take(first, 5)]
    first.close()
    resumed = Prefetcher(RankBatches(data, 3, 0, 1, seed=1, consumed_samples=first.consumed_samples), torch.device("cpu"))
    after = [b["input_ids"] for b in take(resumed, 7)]
    assert all(torch.equal(a, b) for a, b in zip(before + after, uninterrupted))


def test_a_batch_without_padding_carries_the_unpadded_mask():
    data = NumberedSamples(10)
    batches = Prefetcher(RankBatches(data, 1, 0, 1, seed=3), torch.device("cpu"))
    for batch in take(batches, 10):
        padded = bool(batch["input_ids"][0, 0] % 5 == 0)
        assert is_unpadded_mask(batch["attention_mask"]) is not padded
        assert batch["attention_mask"].sum().item() == (3 if padded else SEQ)  # reads as the ones it is


def test_a_failing_read_is_raised_in_the_training_thread():
    data = NumberedSamples(6, broken_at=4)
    batches = Prefetcher(RankBatches(data, 6, 0, 1, seed=0), torch.device("cpu"))
    with pytest.raises(ValueError, match="sample 4 is unreadable"):
        next(batches)


def test_attention_gets_no_mask_for_a_batch_without_padding():
    config = ElectraConfig(vocab_size=64, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    model = build_model(ElectraForPreTraining, config, None).eval()

    def mask_args(mask):
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            out = model(input_ids=torch.arange(16).reshape(2, 8) % 50 + 5, attention_mask=mask).logits
        kernels = [e for e in prof.events() if e.name.startswith("aten::_scaled_dot_product_") and "attention" in e.name]
        assert kernels, "no SDPA kernel ran"
        # the kernel's inputs: query, key, value, dropout/causal scalars, then the mask when there is one
        return [any(len(shape) == 4 and shape[-1] == shape[-2] == 8 and shape[1] == 1 for shape in e.input_shapes) for e in kernels], out

    seen = []  # what the encoder's forward receives (transformers would drop an all-ones mask itself, but only
    # by reading it on the device, a sync per forward, and never under torch.compile)
    model.base_model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["attention_mask"]), with_kwargs=True)
    unpadded = torch.ones((), dtype=torch.long).expand(2, 8)
    masked, out_unpadded = mask_args(unpadded)
    assert seen[-1] is None
    assert not any(masked)  # no mask: on CUDA, SDPA may choose its flash kernel
    padded = torch.ones(2, 8, dtype=torch.long)
    padded[1, 5:] = 0
    masked, _ = mask_args(padded)
    assert all(masked) and seen[-1] is padded
    _, out_ones = mask_args(torch.ones(2, 8, dtype=torch.long))
    assert torch.allclose(out_unpadded, out_ones, atol=1e-6)


def test_close_ends_the_thread_even_with_a_full_queue_or_a_failure():
    """A rank exits only after its reader thread has ended (a daemon thread killed inside a torch op at
    interpreter exit aborts the process)."""
    full = Prefetcher(RankBatches(NumberedSamples(23), 2, 0, 1, seed=3), torch.device("cpu"), depth=1)
    next(full)
    full.close()
    assert not full.alive
    failed = Prefetcher(RankBatches(NumberedSamples(23, broken_at=4), 2, 0, 1, seed=3), torch.device("cpu"), depth=1)
    with pytest.raises(ValueError, match="unreadable"):
        for _ in range(30):
            next(failed)
    assert not failed.alive
