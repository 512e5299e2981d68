"""Figures of the race commands; each takes `ax=None` (or `axes`) and returns the figure.

`lapnet race predict`, from a predictions table (`predict_race`'s first return value):
`plot_driver` (a driver's race with forecasts and the pit call) and `plot_degradation`
(degradation per compound, laps against forecasts).

`lapnet race calibrate --figure`, from cleaned real and simulated laps: `plot_real_vs_sim`
(three panels: `plot_real_vs_sim_laptimes`, `plot_real_vs_sim_degradation`, `plot_real_vs_sim_stints`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.plots import new_figure

COMPOUND_COLOURS = {"SOFT": "#e10600", "MEDIUM": "#f5c400", "HARD": "#7f7f7f", "INTERMEDIATE": "#2ca02c",
                    "WET": "#1f77b4", "UNKNOWN": "#9467bd"}
PHASE_COLOURS = {"push": "#d62728", "conserve": "#1f77b4", "pit_window": "#ff7f0e"}

# the columns of `predict_race`'s table each figure draws (checked first: a table without them
# failed with a bare KeyError from inside pandas, after a figure was already made)
COLUMNS = {
    "plot_driver": ("LapNumber", "LapTime", "forecast_h1", "lo90_h1", "hi90_h1", "Compound", "Scored", "pit_prob",
                    "InLap", "Race", "Driver"),
    "plot_degradation": ("Scored", "Race", "Driver", "Stint", "Compound", "TyreLife", "LapTime", "forecast_h1"),
}


def _check_table(fn: str, table: object) -> None:
    """`table` is a DataFrame with every column `fn` draws; else one LapnetError naming the missing ones."""
    if not isinstance(table, pd.DataFrame):
        raise LapnetError(f"{fn}: expected a pandas DataFrame (the predictions table predict_race returns first), "
                          f"got a {type(table).__name__}")
    missing = [c for c in COLUMNS[fn] if c not in table.columns]
    if missing:
        raise LapnetError(f"{fn}: the table lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
                          "give the predictions table predict_race returns first (or predictions.csv it writes)")


def plot_driver(table: pd.DataFrame, ax=None, pit_threshold: float | None = None):
    """Actual lap times against the next-lap forecast for one driver, and the pit call below.

    Stints are coloured by compound; the 90% interval is a band; forecasts made from a lap
    whose stint has no Scored lap yet (the FreshStart's: an out-lap, the start, a restart) are
    hollow diamonds, and before any lap of the race showed its pace there is none (a gap in the
    line); real pit stops are dashed lines; when the table has phase calls, a strip along the bottom shows each lap's
    post-race call. The pit call (the probability, at the end of each lap, of a stop within
    the next 3 laps) is drawn in its own panel with the threshold from which it is called;
    laps where it is called are shaded in both panels.

    Args:
        table: the rows of one driver (one race) from `predict_race`.
        ax: the lap-time axes, the pit call then on a twin axis; None makes a figure with
            the pit panel under the lap times.
        pit_threshold: the probability from which the pit call fires, for a real-race run
            the one its live pit-window call uses (`runs.pit_window_threshold`); None: 0.5.

    Raises:
        LapnetError: `table` is not a DataFrame, lacks a column drawn (`COLUMNS`), or has no rows.
    """
    _check_table("plot_driver", table)
    if table.empty:  # the title names the table's race and driver
        raise LapnetError("plot_driver: the table has no rows: give one driver's rows of predict_race's table")
    twin = ax is not None
    if twin:
        pit_ax = ax.twinx()
    else:
        fig, (ax, pit_ax) = new_figure(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1), layout="constrained")
    fig = ax.figure
    threshold = 0.5 if pit_threshold is None else float(pit_threshold)
    g = table.sort_values("LapNumber")
    lap = g["LapNumber"].to_numpy()
    # the forecast made at lap t is for lap t+1: draw it there
    ax.plot(lap + 1, g["forecast_h1"], color="black", lw=1.2, label="forecast (next lap)")
    ax.fill_between(lap + 1, g["lo90_h1"], g["hi90_h1"], color="black", alpha=0.12, lw=0, label="90% interval")
    if "forecast_from" in g:  # out-laps, the start, restarts: the FreshStart's forecasts, marked
        fresh = g[g["forecast_from"] == "fresh_start"]
        if len(fresh):
            ax.scatter(fresh["LapNumber"] + 1, fresh["forecast_h1"], marker="D", s=22, facecolor="white",
                       edgecolor="black", zorder=4, label="forecast from an out-lap / start / restart")
    for comp, s in g.groupby("Compound"):
        sc = s[s["Scored"]]
        ax.scatter(sc["LapNumber"], sc["LapTime"], s=14, color=COMPOUND_COLOURS.get(comp, "C0"), label=f"{comp} (scored)", zorder=3)
        other = s[~s["Scored"]]
        ax.scatter(other["LapNumber"], other["LapTime"], s=14, facecolor="none", edgecolor=COMPOUND_COLOURS.get(comp, "C0"), zorder=3)
    spans = _called_spans(g.loc[g["pit_prob"] >= threshold, "LapNumber"].to_numpy())
    for a in (ax, pit_ax):
        for x0, x1 in spans:
            a.axvspan(x0, x1, color="tab:blue", alpha=0.08, lw=0)
        for t in g.loc[g["InLap"], "LapNumber"]:
            a.axvline(t, color="tab:blue", ls="--", lw=1)
    if "phase" in g and g["phase"].notna().any():  # x in laps, y in axes fractions: the strip stays at the bottom
        for phase, s in g.groupby("phase"):
            ax.scatter(s["LapNumber"], np.full(len(s), 0.03), transform=ax.get_xaxis_transform(), marker="s", s=18,
                       color=PHASE_COLOURS.get(phase, "C7"), label=f"call: {phase}", zorder=4)
    scored = g.loc[g["Scored"], "LapTime"]
    if len(scored):  # keep the y-range on racing laps (safety-car laps are 30-60 s slower) and the forecasts
        lo, hi = np.nanpercentile(scored, [1, 99])
        fc = g["forecast_h1"].to_numpy(float)
        fc = fc[np.isfinite(fc) & (fc < hi * 1.3)]  # a forecast from the safety car's pace (a run without a FreshStart) stays out
        if len(fc):
            lo, hi = min(lo, fc.min()), max(hi, fc.max())
        ax.set_ylim(lo - 1.0, hi + 2.0)
    ax.set_ylabel("lap time (s)")
    race, drv = g["Race"].iloc[0], g["Driver"].iloc[0]
    strip = "; squares = phase call" if "phase" in g and g["phase"].notna().any() else ""
    ax.set_title(f"{drv}, {race}: next-lap forecast; dashed = pit stop{strip}; shaded = pit call", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    pit_ax.step(lap, g["pit_prob"], where="mid", color="tab:blue", lw=1.2, label="P(stop within 3 laps)")
    pit_ax.axhline(threshold, color="tab:blue", ls=":", lw=1, label=f"called from {threshold:.0%}")
    pit_ax.set_ylim(0.0, 1.0)
    pit_ax.set_ylabel("pit call", fontsize=9)
    pit_ax.legend(fontsize=7, loc="upper left")
    (ax if twin else pit_ax).set_xlabel("lap")
    return fig


def _called_spans(laps: np.ndarray) -> list[tuple[float, float]]:
    """The lap ranges the pit calls made at the end of `laps` are about (laps t+1 .. t+3 each),
    overlapping ones merged so that each lap is shaded once."""
    spans: list[tuple[float, float]] = []
    for t in np.sort(laps):
        x0, x1 = t + 0.5, t + 3.5
        if spans and x0 <= spans[-1][1]:
            spans[-1] = (spans[-1][0], x1)
        else:
            spans.append((x0, x1))
    return spans


def _trend_label(comp: str, trend: dict | None) -> str:
    row = ((trend or {}).get("by_compound") or {}).get(comp)
    if not row:
        return comp
    return f"{comp}: next 10 laps {row['actual']:+.3f} s/lap, forecast {row['forecaster']:+.3f} (n {row['n']})"


def plot_degradation(table: pd.DataFrame, ax=None, trend: dict | None = None):
    """Degradation per compound: lap time against tyre life, relative to each stint's median.

    Points are real Scored laps; lines are the model's next-lap forecast averaged by tyre life.

    Args:
        table: `predict_race`'s table.
        trend: its metrics' `stint_trend` (`metrics.stint_trend_report`): when given, each
            compound's legend entry says how much slower each of the next 10 laps got and was
            forecast to get (s per lap).

    Raises:
        LapnetError: `table` is not a DataFrame, or lacks a column drawn (`COLUMNS`).
    """
    _check_table("plot_degradation", table)
    if ax is None:
        fig, ax = new_figure(figsize=(7, 4.5))
    fig = ax.figure
    t = table[table["Scored"]].copy()
    if len(t):
        key = [t["Race"], t["Driver"], t["Stint"]]
        med = t.groupby(key)["LapTime"].transform("median")
        t["rel"] = t["LapTime"] - med
        t["rel_fc"] = t["forecast_h1"] - med
        curves: list[float] = []
        for comp, s in t.groupby("Compound"):
            colour = COMPOUND_COLOURS.get(comp, "C0")
            ax.scatter(s["TyreLife"], s["rel"], s=4, alpha=0.25, color=colour)
            # the forecast made at tyre life a is for tyre life a + 1
            curve = s.groupby(s["TyreLife"] + 1)["rel_fc"].median()
            min_n = 5 if t["Driver"].nunique() > 3 else 1  # a whole field: drop tyre ages only a few drivers reached
            curve = curve[s.groupby(s["TyreLife"] + 1).size() >= min_n]
            ax.plot(curve.index, curve.values, color=colour, lw=2, label=_trend_label(comp, trend))
            curves.extend(curve.values)
        # the dots' 1-99% range (a pit-lane crawl would squash the rest), widened to every line
        lo, hi = np.nanpercentile(t["rel"].to_numpy(float), [1, 99])
        if curves:
            lo, hi = min(lo, np.nanmin(curves)), max(hi, np.nanmax(curves))
        if hi > lo:  # a stint or two of identical laps leaves matplotlib's own limits
            pad = 0.05 * (hi - lo)
            ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("tyre life (laps)")
    ax.set_ylabel("lap time - stint median (s)")
    ax.set_title("degradation per compound: laps (dots) and forecast (lines)")
    if ax.get_legend_handles_labels()[0]:  # no Scored lap (a driver out early, a race behind the safety car): no legend
        ax.legend(fontsize=8)
    elif not len(t):
        ax.text(0.5, 0.5, "no Scored laps: nothing to compare", transform=ax.transAxes, ha="center", va="center",
                color="0.4")
    return fig


# ---------------------------------------------------------------------------------------
# real against calibrated simulated races (`lapnet race calibrate --figure`)


def plot_real_vs_sim_laptimes(real: pd.DataFrame, sim: pd.DataFrame, ax=None):
    """Histogram of Scored lap times divided by their race's median green lap. Returns the figure."""
    from lapnet.race.calibrate import norm_green_laps

    fig, ax = (ax.figure, ax) if ax is not None else new_figure(figsize=(5, 4))
    bins = np.linspace(0.97, 1.05, 61)
    for df, label, color in ((real, "real", "k"), (sim, "simulated", "tab:orange")):
        x = norm_green_laps(df)
        inside = (x >= bins[0]) & (x <= bins[-1])  # laps outside are left out (clipped, they would pile up at the edges)
        ax.hist(x[inside], bins=bins, density=True, histtype="step", lw=1.5, color=color,
                label=f"{label} ({len(x)} laps, {np.mean(~inside):.1%} outside)")
    ax.set_xlabel("lap time / race median green lap")
    ax.set_ylabel("density")
    ax.set_title("Green-lap times")
    ax.legend(fontsize=8)
    return fig


def _stint_curve(df: pd.DataFrame, compound: str, max_age: int = 35) -> tuple[np.ndarray, np.ndarray]:
    """Mean lap-time change from laps 2-4 of the stint (after the tyres warm up), by laps into the stint."""
    s = df[df["Scored"] & (df["Compound"] == compound)].copy()
    if s.empty:
        return np.array([]), np.array([])
    keys = ["Race", "Driver", "Stint"]
    s["into"] = s["LapNumber"] - s.groupby(keys)["LapNumber"].transform("min")
    first = s[s["into"].between(2, 4)].groupby(keys)["LapTime"].mean()
    s["d"] = s["LapTime"] - s.set_index(keys).index.map(first).to_numpy()
    s = s[s["d"].abs() < 4]
    g = s.groupby("into")["d"].agg(["mean", "size"])
    g = g[(g["size"] >= 15) & (g.index <= max_age)]
    return g.index.to_numpy(float), g["mean"].to_numpy()


def plot_real_vs_sim_degradation(real: pd.DataFrame, sim: pd.DataFrame, ax=None):
    """Mean lap-time change over a stint per compound (solid real, dashed simulated). Returns the figure."""
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(figsize=(5, 4))
    colors = {"SOFT": "tab:red", "MEDIUM": "goldenrod", "HARD": "0.4"}
    for c, color in colors.items():
        for df, style, label in ((real, "-", "real"), (sim, "--", "sim")):
            x, y = _stint_curve(df, c)
            if len(x):
                ax.plot(x, y, style, color=color, label=f"{c.lower()} {label}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("laps into the stint")
    ax.set_ylabel("lap time - laps 2-4 of the stint (s)")
    ax.set_title("Lap-time change over a stint (fuel burn included)")
    if ax.get_legend_handles_labels()[0]:  # no compound with enough stints: no empty legend (matplotlib warns)
        ax.legend(fontsize=7, ncol=2)
    return fig


def plot_real_vs_sim_stints(real: pd.DataFrame, sim: pd.DataFrame, ax=None):
    """Stint lengths (stints ending in a pit stop) per compound, real against simulated. Returns the figure."""
    from lapnet.race.calibrate import stints

    fig, ax = (ax.figure, ax) if ax is not None else new_figure(figsize=(5, 4))
    data, labels, colors = [], [], []
    for c, color in (("SOFT", "tab:red"), ("MEDIUM", "goldenrod"), ("HARD", "0.4")):
        for df, tag in ((real, "real"), (sim, "sim")):
            st = stints(df)  # the stints calibrate measures
            st = st[(st["Compound"] == c) & st["ended_in_pit"]]
            data.append(st["laps"].to_numpy() if len(st) else np.array([np.nan]))
            labels.append(f"{c[0]} {tag}")
            colors.append(color)
    parts = ax.boxplot(data, patch_artist=True, widths=0.6)
    for i, (patch, color) in enumerate(zip(parts["boxes"], colors)):
        patch.set_facecolor(color)
        patch.set_alpha(0.9 if i % 2 == 0 else 0.35)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_ylabel("laps")
    ax.set_title("Stint lengths (stints ending in a stop)")
    return fig


def plot_real_vs_sim(real: pd.DataFrame, sim: pd.DataFrame, axes=None):
    """Three panels: lap-time distributions, degradation per compound, stint lengths.

    Args:
        real, sim: cleaned lap tables (`clean_laps` output) of the real and simulated races.
        axes: three matplotlib Axes to draw on, or None for a new 1x3 figure.

    Returns:
        The matplotlib Figure.
    """
    if axes is None:
        fig, axes = new_figure(1, 3, figsize=(15, 4.5))
    else:
        fig = axes[0].figure
    plot_real_vs_sim_laptimes(real, sim, ax=axes[0])
    plot_real_vs_sim_degradation(real, sim, ax=axes[1])
    plot_real_vs_sim_stints(real, sim, ax=axes[2])
    fig.suptitle(f"Real ({real['Race'].nunique()} races) vs calibrated simulator ({sim['Race'].nunique()} races)")
    fig.tight_layout()
    return fig
