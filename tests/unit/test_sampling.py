"""The blocked inverse-CDF sampler (models/sampling.py): chi-square goodness of fit against
Softmax(logits / T) at T = 1 and a high T over a vocabulary spanning several CDF blocks, the draw equal
to the float64 inverse CDF at the same uniform over a real vocabulary size, the full-vocabulary argmax,
disallowed tokens, determinism from the generator."""
import pytest
import torch
from scipy.stats import chisquare

from fast_electra_ds.models.sampling import BLOCK, gumbel_max_sample, reference_sample, sample_and_argmax

SPECIAL = [0, 1, 2, 3, 4]


def skewed_logits(vocab: int, seed: int) -> torch.Tensor:
    """A few likely tokens in different CDF blocks and a long tail, like an MLM's output."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, generator=g) * 2
    logits[[7, BLOCK + 3, 2 * BLOCK + 50, vocab - 1]] += 6  # the last id sits in the padded last block
    return logits


def draw(logits: torch.Tensor, temperature: float, n: int, seed: int, disallowed=SPECIAL) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    chunks = [sample_and_argmax(logits.expand(10_000, -1), temperature, g, disallowed)[0] for _ in range(n // 10_000)]
    return torch.cat(chunks)


def chi_square(draws: torch.Tensor, logits: torch.Tensor, temperature: float, disallowed=SPECIAL) -> float:
    """Pearson's test against the float64 softmax over the allowed tokens; tokens expected fewer
    than 5 times are pooled into one category."""
    scaled = logits.double() / temperature
    scaled[disallowed] = float("-inf")
    probs = torch.softmax(scaled, -1)
    counts = torch.bincount(draws, minlength=len(logits)).double()
    expected = probs * len(draws)
    big = expected >= 5
    observed, wanted = counts[big], expected[big]
    if expected[~big].sum() > 0:
        observed = torch.cat([observed, counts[~big].sum()[None]])
        wanted = torch.cat([wanted, expected[~big].sum()[None]])
    return chisquare(observed.numpy(), wanted.numpy()).pvalue


@pytest.mark.parametrize("temperature", [1.0, 8.0])
def test_draws_follow_the_tempered_softmax(temperature):
    logits = skewed_logits(3 * BLOCK + 100, seed=1)  # 4 blocks, the last one partly padding
    draws = draw(logits, temperature, 200_000, seed=2)
    assert chi_square(draws, logits, temperature) > 1e-3
    assert not torch.isin(draws, torch.tensor(SPECIAL)).any()


def test_the_chi_square_test_can_tell_the_temperatures_apart():
    logits = skewed_logits(3 * BLOCK + 100, seed=1)
    draws = draw(logits, 1.0, 200_000, seed=3)
    assert chi_square(draws, logits, 1.5) < 1e-6


def test_each_draw_is_the_float64_inverse_cdf_at_its_uniform():
    """At a real vocabulary size the draw is exactly the token a float64 CDF over the whole row gives
    for the same uniform (no float32 cumsum error), barring uniforms within 1e-9 of a CDF step."""
    vocab, rows, temperature = 30522, 64, 2.0
    logits = (torch.randn(rows, vocab, generator=torch.Generator().manual_seed(4)) * 4).bfloat16()
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    sampled, _ = sample_and_argmax(logits, temperature, g, SPECIAL)
    uniform = torch.rand(rows, dtype=torch.float64, generator=torch.Generator().set_state(state))
    scaled = logits.double() / temperature
    scaled[:, SPECIAL] = float("-inf")
    cdf = torch.softmax(scaled, -1).cumsum(-1)
    expected = torch.searchsorted(cdf, uniform[:, None], right=True).squeeze(1)
    near_a_step = ((cdf - uniform[:, None]).abs() < 1e-9).any(-1)
    assert (near_a_step | (sampled == expected)).all()
    assert (~near_a_step).sum() >= rows - 1


def test_argmax_is_over_the_whole_vocabulary_including_disallowed_tokens():
    logits = torch.randn(6, 700, generator=torch.Generator().manual_seed(6))
    logits[0, 4] = 50.0  # a special token on top: reported by argmax, never drawn
    logits[1, 2] = logits[1].max()  # a tie with a special token: the first maximum, as argmax
    sampled, argmax = sample_and_argmax(logits.bfloat16(), 1.0, torch.Generator().manual_seed(7), SPECIAL)
    assert torch.equal(argmax, logits.bfloat16().argmax(-1))
    assert argmax[0] == 4 and argmax[1] == 2
    assert not torch.isin(sampled, torch.tensor(SPECIAL)).any()


def test_the_generator_fixes_the_draw():
    logits = torch.randn(32, 1000, generator=torch.Generator().manual_seed(8))
    a = sample_and_argmax(logits, 1.3, torch.Generator().manual_seed(9), SPECIAL)[0]
    b = sample_and_argmax(logits, 1.3, torch.Generator().manual_seed(9), SPECIAL)[0]
    c = sample_and_argmax(logits, 1.3, torch.Generator().manual_seed(10), SPECIAL)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(gumbel_max_sample(logits, torch.Generator().manual_seed(9), SPECIAL),
                       sample_and_argmax(logits, 1.0, torch.Generator().manual_seed(9), SPECIAL)[0])


def test_agrees_with_the_multinomial_sampler_it_replaced():
    """Two samplers of one distribution: the per-token frequencies match (two-sample chi-square)."""
    logits = skewed_logits(3 * BLOCK + 100, seed=11)
    g = torch.Generator().manual_seed(12)
    new = torch.bincount(draw(logits, 2.0, 100_000, seed=13), minlength=len(logits)).double()
    old = torch.bincount(torch.cat([reference_sample(logits.expand(10_000, -1), 2.0, g, SPECIAL) for _ in range(10)]),
                         minlength=len(logits)).double()
    keep = (new + old) >= 10
    statistic = ((new[keep] - old[keep]) ** 2 / (new[keep] + old[keep])).sum().item()
    from scipy.stats import chi2
    assert chi2.sf(statistic, int(keep.sum()) - 1) > 1e-3


def test_no_rows_and_bad_temperature():
    sampled, argmax = sample_and_argmax(torch.zeros(0, 300), 1.0, torch.Generator(), SPECIAL)
    assert sampled.shape == argmax.shape == (0,)
    with pytest.raises(ValueError, match="temperature"):
        sample_and_argmax(torch.zeros(2, 300), 0.0, torch.Generator(), SPECIAL)


def test_a_row_of_non_finite_logits_draws_an_allowed_id_and_the_others_are_unchanged():
    """A diverged model's logits must not crash the sampler (an IndexError), so the divergence guard
    can stop the run with its one line; finite rows draw exactly as before."""
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
    broken = logits.clone()
    broken[1] = float("nan")
    broken[2, 17] = float("inf")
    before, _ = sample_and_argmax(logits, 1.0, torch.Generator().manual_seed(3), disallowed_ids=[0, 1])
    after, _ = sample_and_argmax(broken, 1.0, torch.Generator().manual_seed(3), disallowed_ids=[0, 1])
    assert ((after >= 2) & (after < 1000)).all()
    assert after[0] == before[0] and after[3] == before[3]
