"""Training data in phases of sequence length (`data.seq_len_schedule`, config/seq_len.py).

Shards hold documents, not samples, so every length is packed from the same prepared token stream
(dataset.PackedDataset): no second prepare. Each phase reads its own packed samples in its own epoch
order from their first epoch on, from the phase's first step; a phase at 512 re-reads text the phase
at 128 saw, as NVIDIA's phase-2 data set does. The global batch stays the same number of sequences,
so tokens per step scale with the length (BERT: 256 sequences at 128, then at 512).

Validation holds out the same text at every length: the final length's split (validation_split,
unchanged for a run without phases) marks held-out stretches of the stream; a shorter phase trains on
none of its samples that touch them and validates on the samples that lie wholly inside them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import PackedDataset, RankBatches, SampleSubset, open_dataset, validation_split


@dataclass
class LengthPhase:
    start: int  # first step (0-based)
    end: int  # one past the last step
    seq_len: int
    dataset: PackedDataset
    train: SampleSubset
    val_indices: np.ndarray


def held_out_split(dataset: PackedDataset, reference: PackedDataset, reference_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices of `dataset` for the text `reference_val` holds out of `reference`
    (both packings of one stream): training leaves out every sample that overlaps held-out text,
    validation is the samples wholly inside it."""
    everything = np.arange(len(dataset))
    if len(reference_val) == 0:
        return everything, np.zeros(0, dtype=np.int64)
    held = np.sort(np.asarray(reference_val, dtype=np.int64))
    runs = np.split(held, np.nonzero(np.diff(held) != 1)[0] + 1)  # contiguous blocks of held-out samples
    size = reference.tokens_per_sample
    lo = np.array([run[0] * size for run in runs])
    hi = np.array([min((run[-1] + 1) * size, reference.stream_length) for run in runs])
    starts = everything * dataset.tokens_per_sample
    stops = np.minimum(starts + dataset.tokens_per_sample, dataset.stream_length)
    k = np.searchsorted(lo, starts, side="right") - 1  # the last held-out stretch starting at or before the sample
    k_hi = hi[np.maximum(k, 0)]
    inside = (k >= 0) & (stops <= k_hi)
    following = lo[np.minimum(k + 1, len(lo) - 1)]
    touches = ((k >= 0) & (starts < k_hi)) | ((k + 1 < len(lo)) & (following < stops))
    return np.nonzero(~touches)[0], np.nonzero(inside)[0]


class PhasedData:
    """One LengthPhase per phase (config/seq_len.py's Phase list), each packed at its length.
    `final` is the last phase's data set: the run's vocabulary, probe and exported length."""

    def __init__(self, path, phases, val_sequences: int, tokenizer=None):
        packed: dict[int, PackedDataset] = {}
        for phase in reversed(phases):  # the final length first: its split is the reference
            if phase.seq_len not in packed:
                packed[phase.seq_len] = open_dataset(path, phase.seq_len, tokenizer=tokenizer)  # a weighted blend too (one length)
        self.final = packed[phases[-1].seq_len]
        train, val = validation_split(len(self.final), val_sequences)
        splits = {phases[-1].seq_len: (train, val)}
        for length, dataset in packed.items():
            if length not in splits:
                splits[length] = held_out_split(dataset, self.final, val)
        self.phases = [LengthPhase(p.start, p.end, p.seq_len, packed[p.seq_len], packed[p.seq_len].subset(splits[p.seq_len][0]),
                                   splits[p.seq_len][1]) for p in phases]

    def index(self, step: int) -> int:
        """The phase that step `step` (0-based) runs in; past the end, the last."""
        return next((i for i, phase in enumerate(self.phases) if step < phase.end), len(self.phases) - 1)

    def seq_len(self, step: int) -> int:
        return self.phases[self.index(step)].seq_len

    def batches(self, micro_batch_size: int, accumulation: int, rank: int, world_size: int, seed: int,
                step: int, consumed_samples: int) -> PhasedBatches:
        return PhasedBatches(self.phases, micro_batch_size, accumulation, rank, world_size, seed, step, consumed_samples)


class PhasedBatches:
    """This rank's micro-batches across the phases: RankBatches over the current phase's training
    samples, replaced by the next phase's at that phase's first step. `consumed_samples` counts every
    phase's sequences (all ranks); a phase's own position is what was consumed since its first step,
    so building with a checkpoint's (step, consumed_samples) resumes exactly, before or after a switch."""

    def __init__(self, phases: list[LengthPhase], micro_batch_size: int, accumulation: int, rank: int, world_size: int,
                 seed: int, step: int, consumed_samples: int):
        self.phases, self.accumulation = phases, accumulation
        self.args = (micro_batch_size, rank, world_size, seed)
        self.per_step = micro_batch_size * accumulation * world_size
        self.step, self.micro = step, 0  # the step the next micro-batch belongs to, and its index in it
        self.index = next((i for i, phase in enumerate(phases) if step < phase.end), len(phases) - 1)
        local = max(0, consumed_samples - phases[self.index].start * self.per_step)
        self._begin(consumed_samples - local, local)

    def _begin(self, before: int, local: int) -> None:
        self.before = before  # sequences of the earlier phases
        self.current = RankBatches(self.phases[self.index].train, *self.args[:3], seed=self.args[3], consumed_samples=local)

    @property
    def consumed_samples(self) -> int:
        return self.before + self.current.consumed_samples

    @property
    def seq_len(self) -> int:
        return self.phases[self.index].seq_len

    def __iter__(self):
        return self

    def __next__(self):
        if self.micro == self.accumulation:
            self.step, self.micro = self.step + 1, 0
            if self.index + 1 < len(self.phases) and self.step >= self.phases[self.index].end:
                self.index += 1
                self._begin(self.consumed_samples, 0)
        self.micro += 1
        return next(self.current)
