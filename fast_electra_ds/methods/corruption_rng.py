"""Where corruption's random draws come from (`data.corruption_rng`).

- `step` (the default, the streams every earlier run used): one torch.Generator per (seed, step,
  micro-batch, rank), made by the trainer (ctx.generator). A batch's masks then depend on how the
  global batch is split over ranks and micro-batches.
- `sample`: one generator per sample, keyed by (seed, the sample's position in the training stream),
  as Megatron's BERT dataset keys `numpy.random.RandomState(seed + idx)` per sample. A sample's masks
  and sampler draws are then the same on any world size, micro batch or accumulation, and can be made
  ahead of time (`fast-electra replacements`). The seed and position are mixed by splitmix64 rather than
  added, so run seed s + 1 never repeats run seed s's draws one sample later.

Both hand out the same four kinds of draws; a StepDraws makes them in the order the masking code and
the sampler always drew them from ctx.generator, so `step` stays bit-identical."""
from __future__ import annotations

from typing import Sequence

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def sample_seed(seed: int, position: int) -> int:
    """The seed of the sample at `position` (0-based, over all steps and ranks) of a run of `seed`."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ (position & _MASK64)) & ((1 << 63) - 1)


class StepDraws:
    """Draws from one generator shared by the micro-batch (`data.corruption_rng=step`)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def selection_noise(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)

    def corruption_draw(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)

    def random_picks(self, high: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return torch.randint(high, shape, generator=self.generator, device=device)

    def sampler_uniforms(self, selected: torch.Tensor, rows: int) -> torch.Tensor:
        """One float64 uniform per selected position, in row-major order (the sampler's rows)."""
        return torch.rand(rows, dtype=torch.float64, generator=self.generator, device=selected.device)


class SampleDraws:
    """Draws per sample (`data.corruption_rng=sample`): each row's from its own CPU generator, in a fixed
    order (selection noise, corruption draw, one sampler uniform per position, then random-token picks),
    so a row's draws never depend on its neighbours, the device or the batch layout."""

    def __init__(self, seed: int, positions: Sequence[int], length: int, device: torch.device):
        self.length, self.device = length, device
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, int(p))) for p in positions]
        noise, draw, uniforms = [], [], []
        for g in self.generators:
            noise.append(torch.rand(length, generator=g))
            draw.append(torch.rand(length, generator=g))
            uniforms.append(torch.rand(length, dtype=torch.float64, generator=g))
        self.noise, self.draw, self.uniforms = (torch.stack(t).to(device) for t in (noise, draw, uniforms))

    def _check(self, shape: torch.Size) -> None:
        if tuple(shape) != (len(self.generators), self.length):
            raise ValueError(f"draws for {len(self.generators)} x {self.length}, asked for {tuple(shape)}")

    def selection_noise(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        self._check(shape)
        return self.noise

    def corruption_draw(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        self._check(shape)
        return self.draw

    def random_picks(self, high: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
        self._check(shape)
        return torch.stack([torch.randint(high, (self.length,), generator=g) for g in self.generators]).to(device)

    def sampler_uniforms(self, selected: torch.Tensor, rows: int) -> torch.Tensor:
        return self.uniforms[selected]


def as_draws(rng) -> StepDraws | SampleDraws:
    """A draws object from a torch.Generator (the callers that keep passing one) or a draws object."""
    return StepDraws(rng) if isinstance(rng, torch.Generator) else rng
