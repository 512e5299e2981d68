"""Speed of the race simulator: races, and car-laps, per second (target: 50 races x 20 cars x 60 laps / s).

Times `simulate(n, seed)` (the lap loop plus building the DataFrame) for a few batch
sizes, alternating them so that all see the same machine load, and prints medians.
The issue's target is 50 races of 20 cars over 60 laps per second = 60,000 car-laps/s;
circuits here have 44-71 laps (mean ~60), so car-laps/s is the fair unit.

    .venv/bin/python benchmarks/simulate.py                 # default sizes, 7 repeats
    .venv/bin/python benchmarks/simulate.py --repeats 15 --races 50 200
"""

from __future__ import annotations

import argparse
import os
import time

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

from lapnet.race.simulate import SimParams, simulate  # noqa: E402

TARGET_CAR_LAPS_PER_S = 50 * 20 * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--races", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    simulate(2, seed=0)  # warm-up: imports, first allocations
    times: dict[int, list[float]] = {n: [] for n in args.races}
    laps: dict[int, int] = {}
    for rep in range(args.repeats):
        for n in args.races:  # alternate sizes: each sees the same load
            t0 = time.perf_counter()
            df = simulate(n, seed=rep)
            times[n].append(time.perf_counter() - t0)
            laps[n] = len(df)

    print(f"{'races':>6} {'car-laps':>9} {'median s':>9} {'races/s':>8} {'car-laps/s':>11} {'vs target':>9}")
    for n in args.races:
        med = float(np.median(times[n]))
        rate = laps[n] / med
        print(f"{n:>6} {laps[n]:>9} {med:>9.3f} {n / med:>8.1f} {rate:>11.0f} {rate / TARGET_CAR_LAPS_PER_S:>8.2f}x")

    df = simulate(50, seed=123)
    noise = (df["LapTime"] - df["OracleLapTime"]).abs().mean()
    p = SimParams()
    print(f"\noracle MAE on 50 races: {noise:.4f} s (noise_std {p.noise_std} s -> expected {p.noise_std * np.sqrt(2 / np.pi):.4f} s)")
    print("(timings are medians of alternating runs; the machine may be shared, so compare ratios, not absolutes)")


if __name__ == "__main__":
    main()
