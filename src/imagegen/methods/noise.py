"""The random draws of the objectives. An objective takes `generator`: a torch.Generator, or a `SliceNoise` that
gives a batch the rows of a bigger batch's draws, so that a training step split over processes (or over passes of
gradient accumulation) draws, sample by sample, the same numbers as the step taken whole (EDM's
StackedRandomGenerator has the same aim, one generator per image)."""

from __future__ import annotations

import numpy as np
import torch


class SliceNoise:
    """Rows offset..offset+b-1 of the draws of a step's whole batch of `total` samples. Draw k of the step is the
    `total`-row draw of a generator seeded from (seed, step, stream, k), sliced; every slice of the batch makes the
    same sequence of draws, so sample j receives the same numbers however the batch is split. `stream` keeps apart
    draws made outside the objective (the data's flips) from its own."""

    def __init__(self, seed: int, step: int, total: int, offset: int, device, stream: int = 0):
        self.key, self.total, self.offset, self.device, self.calls = (seed, step, stream), total, offset, device, 0

    def _generator(self) -> torch.Generator:
        mixed = np.random.SeedSequence([*self.key, self.calls]).generate_state(1, np.uint64)[0] >> np.uint64(1)
        self.calls += 1
        return torch.Generator(self.device).manual_seed(int(mixed))

    def draw(self, fn, shape: tuple[int, ...], **kwargs) -> torch.Tensor:
        """fn((total, *shape[1:]), generator=..., device=...) sliced to this batch's shape[0] rows."""
        if self.offset + shape[0] > self.total:
            raise ValueError(f"rows {self.offset}..{self.offset + shape[0] - 1} are outside a batch of {self.total}")
        whole = fn((self.total, *shape[1:]), generator=self._generator(), device=self.device, **kwargs)
        return whole[self.offset:self.offset + shape[0]]


def randn(generator, shape: tuple[int, ...], device) -> torch.Tensor:
    """torch.randn(shape) from a torch.Generator (or None: the global one) or from a SliceNoise."""
    if isinstance(generator, SliceNoise):
        return generator.draw(torch.randn, tuple(shape))
    return torch.randn(shape, generator=generator, device=device)


def rand(generator, shape: tuple[int, ...], device) -> torch.Tensor:
    """torch.rand(shape), as `randn`."""
    if isinstance(generator, SliceNoise):
        return generator.draw(torch.rand, tuple(shape))
    return torch.rand(shape, generator=generator, device=device)


def randint(high: int, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """torch.randint(0, high, shape), as `randn`."""
    if isinstance(generator, SliceNoise):
        return generator.draw(lambda s, **kw: torch.randint(0, high, s, **kw), tuple(shape))
    return torch.randint(0, high, shape, generator=generator, device=device)
