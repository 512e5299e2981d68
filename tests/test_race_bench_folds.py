"""The real-race benchmarks share one definition of their outer folds (benchmarks/_folds.py),
and it gives the folds each of them used before (race_real.py, race_length.py, pit_explore.py)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
RACES = ["2023_austrian_R", "2023_azerbaijan_R", "2023_belgian_R", "2023_british_R", "2023_canadian_R", "2023_italian_R",
         "2023_japanese_R", "2023_las_vegas_R", "2023_mexico_city_R", "2023_miami_R", "2023_qatar_R", "2023_sao_paulo_R",
         "2023_saudi_arabian_R", "2023_singapore_R", "2023_united_states_R"]


def _outer_folds():
    sys.path.insert(0, str(BENCH))
    try:
        from _folds import outer_folds
    finally:
        sys.path.remove(str(BENCH))
    return outer_folds


def test_outer_folds_are_the_ones_each_benchmark_wrote_out():
    outer_folds = _outer_folds()
    shuffled = RACES[::-1]
    for folds in (5, 3, 15):  # race_real.py's --folds
        old_race_real = [[r for i, r in enumerate(sorted(shuffled)) if i % folds == f] for f in range(folds)]
        assert outer_folds(shuffled, folds) == old_race_real
    paths = sorted(Path("/data/f1") / f"{r}.csv" for r in RACES)  # race_length.py folded paths of one folder
    assert outer_folds(paths, 5) == [[p for i, p in enumerate(paths) if i % 5 == f] for f in range(5)]
    assert outer_folds(RACES)[0] == ["2023_austrian_R", "2023_italian_R", "2023_qatar_R"]  # fold 1 as the docs name it
    assert sorted(r for fold in outer_folds(RACES) for r in fold) == RACES  # each race held out exactly once
