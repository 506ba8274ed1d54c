"""Phases of sequence length (data.seq_len_schedule): the schedule from the config, the data at each
phase (packing, held-out text, the micro-batch stream across the switch) and exact resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fast_electra_ds.config.run_config import load_config
from fast_electra_ds.config.seq_len import Phase, seq_len_phases
from fast_electra_ds.config.validate import validate_config
from fast_electra_ds.data.dataset import RankBatches, validation_split
from fast_electra_ds.data.phases import PhasedData, held_out_split
from fast_electra_ds.errors import UserError

BASE = ["data.path=shards", "data.tokenizer=tokenizer", "method=electra"]


# ---------------------------------------------------------------- the schedule


def test_schedule_phases_by_fraction_of_steps():
    assert seq_len_phases([], 128, 100) == [Phase(0, 100, 128)]
    assert seq_len_phases(["128:0.9"], 512, 1000) == [Phase(0, 900, 128), Phase(900, 1000, 512)]
    assert seq_len_phases(["64:0.25", "128:0.75"], 512, 8) == [Phase(0, 2, 64), Phase(2, 6, 128), Phase(6, 8, 512)]
    assert seq_len_phases(["128:0.29"], 512, 100)[0].end == 29  # rounded, not floored (0.29 * 100 = 28.999...)


def test_schedule_from_command_line_and_yaml(tmp_path):
    config = load_config(["tiny"], BASE + ["data.seq_len=128", "data.seq_len_schedule=32:0.5,64:0.75", "train.steps=8"])
    assert config.data.seq_len_schedule == ["32:0.5", "64:0.75"]
    assert [p.seq_len for p in config.seq_len_phases()] == [32, 64, 128]
    (tmp_path / "two.yaml").write_text("data:\n  seq_len: 128\n  seq_len_schedule: ['32:0.9']\ntrain:\n  steps: 10\n")
    assert load_config(["tiny", str(tmp_path / "two.yaml")], BASE).seq_len_phases() == [Phase(0, 9, 32), Phase(9, 10, 128)]
    assert load_config(["tiny"], BASE + ["data.seq_len_schedule="]).seq_len_phases() == [Phase(0, 20, 64)]


@pytest.mark.parametrize("schedule, message", [
    ("0.9:128", "is not SEQ_LEN:UNTIL"),
    ("128", "is not SEQ_LEN:UNTIL"),
    ("2:0.5", "too short"),
    ("32:1.0", "outside \\(0, 1\\)"),
    ("32:0.6,48:0.5", "out of order"),
    ("32:nan", "out of order"),
    ("32:0.01", "has no steps of its own"),
    ("32:0.99", "leaves none to data.seq_len"),
])
def test_bad_schedules_are_one_line_errors_at_load(schedule, message):
    with pytest.raises(UserError, match=message):
        load_config(["tiny"], BASE + [f"data.seq_len_schedule={schedule}", "train.steps=20"])


def test_positions_must_cover_the_longest_phase():
    config = load_config(["tiny"], BASE + ["data.seq_len_schedule=256:0.5"])  # tiny: 128 positions, seq_len 64
    with pytest.raises(UserError, match="data.seq_len_schedule length 256 exceeds model.max_position_embeddings 128"):
        validate_config(config, ["electra"])
    validate_config(load_config(["tiny"], BASE + ["data.seq_len_schedule=32:0.5"]), ["electra"])


# ---------------------------------------------------------------- the data at each phase


PHASES = [Phase(0, 3, 16), Phase(3, 6, 64)]


@pytest.fixture(scope="module")
def phased(prepared):
    return PhasedData(prepared["data"], PHASES, val_sequences=8)


def stream_ranges(dataset, indices) -> np.ndarray:
    starts = np.asarray(indices, dtype=np.int64) * dataset.tokens_per_sample
    return np.stack([starts, np.minimum(starts + dataset.tokens_per_sample, dataset.stream_length)], axis=1)


def test_each_phase_packs_the_same_stream_at_its_length(phased):
    short, final = phased.phases[0].dataset, phased.phases[1].dataset
    assert (short.seq_len, final.seq_len) == (16, 64) and phased.final is final
    assert short.stream_length == final.stream_length and len(short) > 4 * len(final) - 4
    # sample 1 of the 64-token packing holds the text of samples 4..7 of the 16-token one (62 = 4 x 14 + 6 tokens)
    inner = final[1]["input_ids"][1:63]
    assert torch.equal(inner, torch.from_numpy(final.stream_slice(62, 124)))
    assert torch.equal(short[5]["input_ids"][1:15], torch.from_numpy(final.stream_slice(70, 84)))
    assert [phased.seq_len(s) for s in range(7)] == [16, 16, 16, 64, 64, 64, 64]


def test_validation_holds_out_the_same_text_at_every_length(phased):
    final, short = phased.phases[1], phased.phases[0]
    train, val = validation_split(len(final.dataset), 8)  # the final length's split is the one a run without phases has
    assert np.array_equal(final.val_indices, val) and np.array_equal(final.train.indices, train)
    held = np.zeros(final.dataset.stream_length, dtype=bool)
    for lo, hi in stream_ranges(final.dataset, val):
        held[lo:hi] = True
    for lo, hi in stream_ranges(short.dataset, short.train.indices):
        assert not held[lo:hi].any()  # no training text of the short phase is validation text of the long one
    for lo, hi in stream_ranges(short.dataset, short.val_indices):
        assert held[lo:hi].all()
    covered = np.zeros_like(held)
    for lo, hi in stream_ranges(short.dataset, short.val_indices):
        covered[lo:hi] = True
    blocks = int((np.diff(np.sort(val)) != 1).sum()) + 1
    # the short phase validates on all the held-out text but less than a sample at each end of a block
    assert covered.sum() > held.sum() - 2 * short.dataset.tokens_per_sample * blocks
    assert len(short.train.indices) + len(short.val_indices) >= len(short.dataset) - 2 * 8  # at most the 2 edges of each block lost


def test_held_out_split_without_validation_keeps_everything(phased):
    short, final = phased.phases[0].dataset, phased.phases[1].dataset
    train, val = held_out_split(short, final, np.zeros(0, dtype=np.int64))
    assert np.array_equal(train, np.arange(len(short))) and len(val) == 0


def take(batches, count):
    out = []
    for _ in range(count):
        batch = next(batches)
        out.append((batch["input_ids"], batches.consumed_samples))
    return out


def test_batches_switch_length_at_the_phase_step(phased):
    micro, accumulation, world = 2, 2, 2  # 8 sequences per step, on every phase
    batches = phased.batches(micro, accumulation, rank=1, world_size=world, seed=5, step=0, consumed_samples=0)
    stream = take(batches, 12)  # 6 steps x 2 micro-batches
    assert [ids.shape for ids, _ in stream] == [(2, 16)] * 6 + [(2, 64)] * 6
    assert [consumed for _, consumed in stream] == [4 * (i + 1) for i in range(12)]
    # each phase reads its own samples from their first epoch on, from its first step
    for phase, part in zip(phased.phases, (stream[:6], stream[6:])):
        direct = RankBatches(phase.train, micro, 1, world, seed=5)
        assert all(torch.equal(ids, next(direct)["input_ids"]) for ids, _ in part)


@pytest.mark.parametrize("stop_step", [1, 3, 4])  # inside the first phase, at the switch, after it
def test_resume_continues_the_stream_exactly(phased, stop_step):
    uninterrupted = take(phased.batches(2, 2, 0, 2, seed=5, step=0, consumed_samples=0), 12)
    consumed = uninterrupted[2 * stop_step - 1][1]
    assert consumed == 8 * stop_step
    resumed = take(phased.batches(2, 2, 0, 2, seed=5, step=stop_step, consumed_samples=consumed), 12 - 2 * stop_step)
    for (a, ca), (b, cb) in zip(uninterrupted[2 * stop_step:], resumed):
        assert torch.equal(a, b) and ca == cb


def test_one_phase_is_the_plain_rank_stream(prepared):
    """Without a schedule the data order is what RankBatches over the training split gives."""
    data = PhasedData(prepared["data"], [Phase(0, 10, 32)], val_sequences=8)
    train, _ = validation_split(len(data.final), 8)
    direct = RankBatches(data.phases[0].train, 3, 1, 2, seed=9, consumed_samples=12)
    assert np.array_equal(data.phases[0].train.indices, train)
    phased = data.batches(3, 2, 1, 2, seed=9, step=2, consumed_samples=12)
    for _ in range(5):
        assert torch.equal(next(phased)["input_ids"], next(direct)["input_ids"])
    assert phased.consumed_samples == direct.consumed_samples
