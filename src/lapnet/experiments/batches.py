"""Batch sources for `lapnet.train.fit` used by the experiments.

fit asks for `steps_per_epoch()` and `epoch(e)`, which must give the same batches for
the same seed and e (so a resumed run sees the same data).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch


class FullBatch:
    """The whole data set as one batch per epoch (the notebook's full-batch training)."""

    def __init__(self, *tensors):  # torch tensors or NumPy arrays
        self.tensors = tensors

    def steps_per_epoch(self) -> int:
        return 1

    def epoch(self, e: int) -> Iterator[tuple[torch.Tensor, ...]]:
        yield self.tensors


class Shuffled:
    """Mini-batches of a fixed data set, reshuffled each epoch with seed (seed, e)."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0):
        self.tensors, self.batch_size, self.seed = tensors, int(batch_size), seed
        self.n = len(tensors[0])

    def steps_per_epoch(self) -> int:
        return max(1, -(-self.n // self.batch_size))

    def epoch(self, e: int) -> Iterator[tuple[torch.Tensor, ...]]:
        perm = torch.from_numpy(np.random.default_rng([self.seed, e]).permutation(self.n))
        for s in range(0, self.n, self.batch_size):
            idx = perm[s : s + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


class Fresh:
    """A new random batch every step from `make(n, rng)`: an endless task like the adding
    problem never shows the same example twice, so there is nothing to overfit."""

    def __init__(self, make: Callable[[int, np.random.Generator], tuple[np.ndarray, ...]], batch_size: int,
                 steps: int, seed: int = 0):
        self.make, self.batch_size, self.steps, self.seed = make, int(batch_size), int(steps), seed

    def steps_per_epoch(self) -> int:
        return self.steps

    def epoch(self, e: int) -> Iterator[tuple[torch.Tensor, ...]]:
        rng = np.random.default_rng([self.seed, 1_000_003, e])
        for _ in range(self.steps):
            yield tuple(torch.from_numpy(a) for a in self.make(self.batch_size, rng))
