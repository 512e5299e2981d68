"""Figures of `lapnet race predict`: a driver's race with forecasts, and degradation per compound.

Both take a predictions table (`predict_race`'s first return value) and `ax=None`, and
return the figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COMPOUND_COLOURS = {"SOFT": "#e10600", "MEDIUM": "#f5c400", "HARD": "#7f7f7f", "INTERMEDIATE": "#2ca02c",
                    "WET": "#1f77b4", "UNKNOWN": "#9467bd"}
PHASE_COLOURS = {"push": "#d62728", "conserve": "#1f77b4", "pit_window": "#ff7f0e"}


def plot_driver(table: pd.DataFrame, ax=None, pit_threshold: float = 0.5):
    """Actual lap times against the next-lap forecast for one driver.

    Stints are coloured by compound; the 90% interval is a band; laps where the pit call's
    probability is at least `pit_threshold` are shaded; real pit stops are dashed lines; when
    the table has phase calls, a strip along the bottom shows each lap's post-race call.

    Args:
        table: the rows of one driver (one race) from `predict_race`.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 4.5))
    fig = ax.figure
    g = table.sort_values("LapNumber")
    lap = g["LapNumber"].to_numpy()
    # the forecast made at lap t is for lap t+1: draw it there
    ax.plot(lap + 1, g["forecast_h1"], color="black", lw=1.2, label="forecast (next lap)")
    ax.fill_between(lap + 1, g["lo90_h1"], g["hi90_h1"], color="black", alpha=0.12, lw=0, label="90% interval")
    for comp, s in g.groupby("Compound"):
        sc = s[s["Scored"]]
        ax.scatter(sc["LapNumber"], sc["LapTime"], s=14, color=COMPOUND_COLOURS.get(comp, "C0"), label=f"{comp} (scored)", zorder=3)
        other = s[~s["Scored"]]
        ax.scatter(other["LapNumber"], other["LapTime"], s=14, facecolor="none", edgecolor=COMPOUND_COLOURS.get(comp, "C0"), zorder=3)
    for t in g.loc[g["pit_prob"] >= pit_threshold, "LapNumber"]:
        ax.axvspan(t + 0.5, t + 3.5, color="tab:blue", alpha=0.06, lw=0)
    for t in g.loc[g["InLap"], "LapNumber"]:
        ax.axvline(t, color="tab:blue", ls="--", lw=1)
    if "phase" in g and g["phase"].notna().any():  # x in laps, y in axes fractions: the strip stays at the bottom
        for phase, s in g.groupby("phase"):
            ax.scatter(s["LapNumber"], np.full(len(s), 0.03), transform=ax.get_xaxis_transform(), marker="s", s=18,
                       color=PHASE_COLOURS.get(phase, "C7"), label=f"call: {phase}", zorder=4)
    scored = g.loc[g["Scored"], "LapTime"]
    if len(scored):  # keep the y-range on racing laps: safety-car laps are 30-60 s slower
        lo, hi = np.nanpercentile(scored, [1, 99])
        ax.set_ylim(lo - 1.0, hi + 2.0)
    ax.set_xlabel("lap")
    ax.set_ylabel("lap time (s)")
    race, drv = g["Race"].iloc[0], g["Driver"].iloc[0]
    strip = "; squares = phase call" if "phase" in g and g["phase"].notna().any() else ""
    ax.set_title(f"{drv}, {race}: next-lap forecast; shaded = pit call >= {pit_threshold:.0%}, dashed = pit stop{strip}",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    return fig


def plot_degradation(table: pd.DataFrame, ax=None):
    """Degradation per compound: lap time against tyre life, relative to each stint's median.

    Points are real Scored laps; lines are the model's next-lap forecast averaged by tyre life.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    fig = ax.figure
    t = table[table["Scored"]].copy()
    if len(t):
        key = [t["Race"], t["Driver"], t["Stint"]]
        med = t.groupby(key)["LapTime"].transform("median")
        t["rel"] = t["LapTime"] - med
        t["rel_fc"] = t["forecast_h1"] - med
        for comp, s in t.groupby("Compound"):
            colour = COMPOUND_COLOURS.get(comp, "C0")
            ax.scatter(s["TyreLife"], s["rel"], s=4, alpha=0.25, color=colour)
            # the forecast made at tyre life a is for tyre life a + 1
            curve = s.groupby(s["TyreLife"] + 1)["rel_fc"].median()
            min_n = 5 if t["Driver"].nunique() > 3 else 1  # a whole field: drop tyre ages only a few drivers reached
            curve = curve[s.groupby(s["TyreLife"] + 1).size() >= min_n]
            ax.plot(curve.index, curve.values, color=colour, lw=2, label=f"{comp}")
        lo, hi = np.nanpercentile(t["rel"], [1, 99])
        if hi > lo:  # a stint or two of identical laps leaves matplotlib's own limits
            ax.set_ylim(lo, hi)
    ax.set_xlabel("tyre life (laps)")
    ax.set_ylabel("lap time - stint median (s)")
    ax.set_title("degradation per compound: laps (dots) and forecast (lines)")
    ax.legend(fontsize=8)
    return fig
