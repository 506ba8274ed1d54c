"""Validation on held-out sequences (data/dataset.py validation_split), through the method's own
prepare_batch and the engine's forward in eval mode: each method reports its own losses and the
learning metrics as `val_<name>`.

Masks and replacements come from a fixed seed (the same every time; with data.corruption_rng=sample
one per held-out sample, keyed by validation_key), so the curves are comparable
across steps and methods; only the model (and for `fast` the temperature of the current step)
changes. Every rank evaluates its own equal share, so under ZeRO-3 all ranks run the same number of
forwards (each gathers the partitioned parameters)."""
from __future__ import annotations

import numpy as np
import torch

from .learning import TokenOnlyDetector
from .tracker import MetricSums, with_learning_metrics

VALIDATION_SEED_OFFSET = 7_919  # validation's corruption never repeats a training step's


def validation_key(k: int) -> int:
    """The key of the k-th held-out sample (in the split's order) for per-sample draws
    (data.corruption_rng=sample): below zero, apart from every training stream position."""
    return -1 - k


def rank_batches(count: int, micro_batch: int, rank: int, world_size: int) -> list[list[int]]:
    """The k's (places in the held-out split) of each of this rank's validation batches: an equal share
    per rank, so under ZeRO-3 every rank runs the same number of forwards."""
    per_rank = count // world_size
    mine = list(range(rank * per_rank, (rank + 1) * per_rank))
    return [mine[i:i + micro_batch] for i in range(0, per_rank, micro_batch)]


class Validator:
    def __init__(self, dataset, indices: np.ndarray, micro_batch: int, rank: int, world_size: int, seed: int,
                 device: torch.device, step_generator) -> None:
        self.places = rank_batches(len(indices), micro_batch, rank, world_size)
        self.batches = [[int(indices[k]) for k in places] for places in self.places]
        self.dataset, self.rank, self.seed, self.device = dataset, rank, seed, device
        self.step_generator = step_generator
        self.sequences = len(indices) // world_size * world_size

    def __bool__(self) -> bool:
        return bool(self.batches)

    @torch.no_grad()
    def evaluate(self, engine, method, make_context, detector: TokenOnlyDetector,
                 unigram_entropy: float | None) -> dict[str, float]:
        """`method`: the run's replace.Method; `make_context(generator, positions)`: its StepContext at the
        current step with that generator and the samples' keys (validation_key)."""
        sums = MetricSums()
        engine.eval()
        try:
            for i, indices in enumerate(self.batches):
                items = [self.dataset[j] for j in indices]
                batch = {key: torch.stack([item[key] for item in items]).to(self.device) for key in items[0]}
                generator = self.step_generator(self.seed + VALIDATION_SEED_OFFSET, 0, i, self.rank, self.device)
                keys = [validation_key(k) for k in self.places[i]]
                inputs, outside = method.prepare_batch(batch, make_context(generator, keys))
                _, metrics = engine(**inputs)
                sums.add({**metrics, **outside})
        finally:
            engine.train()
        scalars, vectors = sums.reduce(self.device)
        values = with_learning_metrics(scalars, vectors, detector, unigram_entropy)
        return {f"val_{name}": value for name, value in values.items()}
