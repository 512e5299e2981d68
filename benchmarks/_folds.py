"""The outer folds every real-race benchmark uses (race_real.py, race_length.py, pit_explore.py).

Races sorted by name, race i held out in fold i % folds: with the 15 races of 2023 and 5 folds,
fold 1 holds out Austria, Italy and Qatar. One definition, so that the benchmarks' folds
(and the numbers the docs quote per fold) stay the same ones.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def outer_folds(races: Sequence[T], folds: int = 5) -> list[list[T]]:
    """The held-out races of each fold: `races` (names or paths of one folder) sorted, race i in fold i % folds."""
    ordered = sorted(races)
    return [[r for i, r in enumerate(ordered) if i % folds == f] for f in range(folds)]
