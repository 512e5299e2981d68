"""What a pit stop costs on the real races: the priors of the pit-now what-if's stop cost.

    python benchmarks/stop_loss.py            # the 15 real 2023 races ($LAPNET_F1_DATA or ../shared/data/f1)

Every stop whose in-lap and out-lap are consecutive laps with a time (an out-lap without a
LapTime, as under Singapore's safety car, is timed by its session Time minus the in-lap's), in
hindsight over whole races:

- green (no safety car, VSC or red flag on either lap): in-lap + out-lap minus twice the
  driver's racing pace before the stop (the median of his stint's last 3 Scored laps), as
  `lapnet.race.pit.PitContext.stop_loss` measures it lap by lap;
- under a safety car or VSC (on both laps, no red flag: the stop the what-if prices when it is
  called under one): in-lap + out-lap minus what the cars nearest on the road before the stop
  ran on those two laps staying out (`pit.neighbours_laps`: the 2 whose previous lap ended
  nearest in time), as `PitContext.stop_loss_neutral` does lap by lap.

Prints the medians in seconds and in shares of each race's reference lap (the median of its
first 60 Scored laps, `features.REF_LAPS`): the shares are `pit.STOP_LOSS_PRIOR` and
`pit.NEUTRAL_LOSS_PRIOR`, the values the race's own stops are shrunk to before there are many.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def stop_costs(laps) -> dict[str, list[tuple[float, float]]]:
    """{"green": [(seconds, share of ref)], "neutral": [...]} over the stops of cleaned laps (one or more races)."""
    from lapnet.race.features import REF_LAPS
    from lapnet.race.pit import neighbours_laps
    from lapnet.race.schema import RED_CODE, SLOW_RUNNING_CODES

    out: dict[str, list[tuple[float, float]]] = {"green": [], "neutral": []}
    for _, race in laps.groupby("Race", sort=False):
        race = race.sort_values("Time")
        ref = float(race.loc[race["Scored"], "LapTime"].iloc[:REF_LAPS].median())
        ends: dict[int, list] = {}  # lap -> (Time, LapTime, Driver, in- or out-lap), as RaceFeaturizer.lap_ends
        for r in race.itertuples(index=False):
            if np.isfinite(r.LapNumber) and np.isfinite(r.Time):
                ends.setdefault(int(r.LapNumber), []).append((r.Time, r.LapTime, r.Driver, bool(r.InLap or r.OutLap)))
        for drv, d in race.groupby("Driver"):
            d = d.sort_values("LapNumber").reset_index(drop=True)
            for k in range(len(d) - 1):
                a, b = d.iloc[k], d.iloc[k + 1]
                if not (a["InLap"] and b["OutLap"] and b["LapNumber"] == a["LapNumber"] + 1):
                    continue
                out_time = b["LapTime"] if np.isfinite(b["LapTime"]) else b["Time"] - a["Time"]
                both = a["LapTime"] + out_time
                if not np.isfinite(both):
                    continue
                status = str(a["TrackStatus"]) + str(b["TrackStatus"])
                if RED_CODE in status:
                    continue
                if SLOW_RUNNING_CODES.intersection(str(a["TrackStatus"])) and SLOW_RUNNING_CODES.intersection(
                        str(b["TrackStatus"])):
                    before = d.loc[d["LapNumber"] == a["LapNumber"] - 1, "Time"]
                    stayed = neighbours_laps(ends, int(a["LapNumber"]), float(before.iloc[0]) if len(before) else np.nan, drv)
                    cost = both - stayed
                    if np.isfinite(cost):
                        out["neutral"].append((cost, cost / ref))
                elif not (set(status) - {"1", "2"}):  # green (yellows allowed, as the pit features do)
                    before = d.iloc[:k]
                    stint = before[(before["Stint"] == a["Stint"]) & before["Scored"]]["LapTime"].iloc[-3:]
                    if len(stint):
                        cost = both - 2 * float(stint.median())
                        out["green"].append((cost, cost / ref))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LAPNET_F1_DATA", REPO.parent / "shared" / "data" / "f1")))
    args = ap.parse_args(argv)
    from lapnet.race.inputs import load_laps

    files = sorted(args.data.glob("*.csv"))
    if not files:
        print(f"skipped: no race files in {args.data} (set LAPNET_F1_DATA or --data)")
        return 0
    laps, _ = load_laps(files)
    res = stop_costs(laps)
    for kind, v in res.items():
        secs, shares = [c for c, _ in v], [s for _, s in v]
        q = np.percentile(secs, [25, 75]) if v else (np.nan, np.nan)
        print(f"{kind:8s} stops {len(v):4d}: median {statistics.median(secs):.1f} s (IQR {q[0]:.1f} to {q[1]:.1f}), "
              f"{statistics.median(shares):.3f} of the reference lap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
