"""Lap-time baselines the forecaster must beat, computed on exactly the laps it is scored on.

Every baseline forecasts lap t+k (k = 1..K, same stint) at the end of lap t from the
driver's Scored laps of the current stint up to lap t:

    persistence        the last Scored lap of the stint
    mean_last3         the mean of the last 3 Scored laps of the stint
    stint_linear       a least-squares line through the stint's Scored laps (lap time on lap
                       number), extrapolated to lap t+k; persistence until the stint has 3
    fuel_persistence   persistence minus FUEL_S_PER_LAP per lap ahead (the car gets lighter)

Correcting the linear fit for fuel changes nothing (the correction is itself linear in lap
number), so fuel correction is applied to persistence only.

Where the stint has no Scored lap yet (an out-lap, the start, a restart) none of those has a
start; `fresh_baselines` forecast every lap ahead there, scored in eval's "fresh" block only:

    reference_lap      the race's reference lap (where lapnet's forecast started there before
                       the FreshStart)
    field_pace         the median of the other drivers' latest Scored laps, however old (the
                       feature `field_pace_any`); the reference lap while nobody has one
"""

from __future__ import annotations

import numpy as np

from lapnet.race.features import FEATURES, PCT_SCALE, Sequences

# s per lap a car gets quicker as the race goes on: about the lap-number slope `lapnet race calibrate` fits on the
# 15 real 2023 races (fuel_s_per_lap -0.056: fuel burn plus track evolution; docs/guide/race_data.md). Fuel alone,
# 1.7 kg burnt per lap x 0.03 s per kg (the simulator's SimParams), would be 0.051.
FUEL_S_PER_LAP = 0.055
BASELINES = ("persistence", "mean_last3", "stint_linear", "fuel_persistence")
FRESH_BASELINES = ("reference_lap", "field_pace")
MIN_FIT_LAPS = 3


def baseline_forecasts(seq: Sequences) -> dict[str, np.ndarray]:
    """Forecasts of every baseline in seconds.

    Args:
        seq: sequences from `build_sequences`.

    Returns:
        name -> (N, T, K) seconds; NaN where the stint has no Scored lap yet at t.
    """
    N, T, K = seq.target.shape
    out = {name: np.full((N, T, K), np.nan) for name in BASELINES}
    ks = np.arange(1, K + 1, dtype=float)  # (K,)
    for i in range(N):
        L = int(seq.lengths[i])
        laps: list[tuple[float, float]] = []  # (lap number, seconds) Scored laps of the current stint
        stint = None
        for t in range(L):
            if seq.stint_id[i, t] != stint:
                stint, laps = seq.stint_id[i, t], []
            if seq.origin_scored[i, t] and np.isfinite(seq.lap_time[i, t]):
                laps.append((seq.lap_number[i, t], seq.lap_time[i, t]))
            if not laps:
                continue
            n_last, last = laps[-1]
            target_laps = seq.lap_number[i, t] + ks  # (K,)
            out["persistence"][i, t] = last
            out["mean_last3"][i, t] = np.mean([s for _, s in laps[-3:]])
            out["fuel_persistence"][i, t] = last - FUEL_S_PER_LAP * (target_laps - n_last)
            if len(laps) >= MIN_FIT_LAPS:
                x = np.array([a for a, _ in laps])
                y = np.array([b for _, b in laps])
                slope, icpt = np.polyfit(x, y, 1)
                out["stint_linear"][i, t] = icpt + slope * target_laps
            else:
                out["stint_linear"][i, t] = last
    return out


def fresh_baselines(seq: Sequences) -> dict[str, np.ndarray]:
    """Forecasts in seconds from origins whose stint has no Scored lap yet (see the module
    docstring): name -> (N, T, K), NaN at every other origin."""
    K = seq.target.shape[2]
    fresh = ~np.isfinite(seq.base)  # (N, T)
    return {name: np.where(fresh[:, :, None], v[:, :, None], np.nan).repeat(K, 2)
            for name, v in (("reference_lap", seq.ref), ("field_pace", field_pace_seconds(seq)))}


def field_pace_seconds(seq: Sequences) -> np.ndarray:
    """(N, T) seconds: the field's last green pace at every lap (`field_pace_any`: the FreshStart's
    anchor), the race's reference lap where no other car has had a Scored lap yet."""
    pace = seq.x[:, :, FEATURES.index("field_pace_any")] * PCT_SCALE  # % of ref (the feature is / PCT_SCALE, clipped at 40%)
    known = seq.x[:, :, FEATURES.index("has_field_pace_any")] > 0
    return np.where(known, seq.ref * (1.0 + pace / 100.0), seq.ref)
