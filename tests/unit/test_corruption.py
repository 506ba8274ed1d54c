"""Masking rates, the temperature schedule, the samplers and the replaced/original labels."""
import math

import pytest
import torch

from fast_electra_ds.methods.curriculum import temperature
from fast_electra_ds.methods.fast import replacement_labels
from fast_electra_ds.methods.masking import corrupt_inputs, maskable_positions, select_positions
from fast_electra_ds.models.sampling import gumbel_max_sample, sample_with_temperature
from tests.method_helpers import chi_square_p_value

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
VOCAB = 1000


def batch(rows=64, length=128, padding=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (rows, length), generator=g)
    ids[:, 0] = CLS
    ids[:, length - padding - 1] = SEP
    ids[:, length - padding:] = PAD
    attention = (ids != PAD).long()
    return ids, attention


def test_selection_rate_is_fifteen_percent_and_never_special_or_padding():
    ids, attention = batch()
    maskable = maskable_positions(ids, attention, SPECIAL)
    selected = select_positions(maskable, 0.15, torch.Generator().manual_seed(1))
    assert not selected[~maskable].any()
    per_row = selected.sum(1).float()
    expected = round(0.15 * maskable[0].sum().item())
    assert torch.all(per_row == expected)  # a fixed count per sequence, as in ELECTRA


def test_electra_rates_85_mask_15_kept_no_random():
    ids, attention = batch(rows=400)
    maskable = maskable_positions(ids, attention, SPECIAL)
    g = torch.Generator().manual_seed(2)
    selected = select_positions(maskable, 0.15, g)
    corrupted = corrupt_inputs(ids, selected, MASK, 0.85, 0.0, VOCAB, g, SPECIAL)
    assert torch.equal(corrupted[~selected], ids[~selected])
    n = selected.sum().item()
    masked = (corrupted[selected] == MASK).sum().item()
    kept = (corrupted[selected] == ids[selected]).sum().item()
    assert masked + kept == n  # no random tokens
    assert abs(masked / n - 0.85) < 4 * math.sqrt(0.85 * 0.15 / n)


def test_bert_rates_80_10_10_random_tokens_never_special():
    ids, attention = batch(rows=400)
    g = torch.Generator().manual_seed(3)
    selected = select_positions(maskable_positions(ids, attention, SPECIAL), 0.15, g)
    corrupted = corrupt_inputs(ids, selected, MASK, 0.8, 0.1, VOCAB, g, SPECIAL)
    n = selected.sum().item()
    masked = (corrupted[selected] == MASK).sum().item() / n
    kept = (corrupted[selected] == ids[selected]).sum().item() / n
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.1 * 1 / VOCAB) < 0.02
    random_positions = selected & (corrupted != MASK) & (corrupted != ids)
    assert random_positions.any() and not torch.isin(corrupted[random_positions], torch.tensor(SPECIAL)).any()


def test_temperature_schedule_values():
    assert temperature(0.0, 2.0, 0.1) == pytest.approx(2.0)
    assert temperature(0.1, 2.0, 0.1) == pytest.approx(1 + math.exp(-1))
    assert temperature(1.0, 3.0, 0.5) == pytest.approx(1 + 2 * math.exp(-2))
    values = [temperature(u / 10, 2.0, 0.1) for u in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))  # annealing: strictly decreasing towards 1
    assert values[-1] == pytest.approx(1.0, abs=1e-4)


def test_sampler_at_temperature_one_follows_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, 1.5]])
    n = 40_000
    draws = sample_with_temperature(logits.expand(n, -1), 1.0, torch.Generator().manual_seed(4))
    counts = torch.bincount(draws, minlength=6).float()
    assert chi_square_p_value(counts, torch.softmax(logits[0], -1)) > 1e-3


def test_sampler_flattens_at_high_temperature_and_respects_disallowed_ids():
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0, 0.0]]).expand(20_000, -1)
    cold = sample_with_temperature(logits, 1.0, torch.Generator().manual_seed(5))
    hot = sample_with_temperature(logits, 100.0, torch.Generator().manual_seed(5))
    assert (cold == 0).float().mean() > 0.9
    assert abs((hot == 0).float().mean().item() - math.exp(0.04) / (math.exp(0.04) + 4)) < 0.02
    never = sample_with_temperature(logits, 1.0, torch.Generator().manual_seed(6), disallowed_ids=[0])
    assert not (never == 0).any()


def test_gumbel_max_follows_the_softmax():
    logits = torch.tensor([[1.0, -0.5, 0.3, 2.0]])
    n = 40_000
    draws = gumbel_max_sample(logits.expand(n, -1), torch.Generator().manual_seed(7))
    counts = torch.bincount(draws, minlength=4).float()
    assert chi_square_p_value(counts, torch.softmax(logits[0], -1)) > 1e-3


def test_sampled_token_equal_to_original_is_labelled_original():
    original = torch.tensor([[2, 10, 11, 12, 3]])
    corrupted = torch.tensor([[2, 10, 99, 12, 3]])  # position 1 and 3 were sampled back to the original
    assert replacement_labels(original, corrupted).tolist() == [[False, False, True, False, False]]
