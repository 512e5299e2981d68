"""Clean a lap table: drop rows that are not laps, mask the laps that must not be scored.

Every real lap stays in the table as context (a safety-car lap happened and changes what
follows), but only "scored" laps count for losses and metrics:

    Scored = HasTime & Accurate & Green & ~InLap & ~OutLap & ~Restart & ~Wet

Dropped (rows that cannot be laps), in this order, each row counted once:
    no_lap_number  LapNumber missing.
    after_flag     FastF1Generated rows with no lap time that end after the chequered flag
                   (FastF1 invents a lap 52 in a 51-lap race at Monza 2023).
    non_starter    drivers without a single timed lap (did not start, or out on lap 1:
                   FastF1 generates one empty lap-1 row for them).

Masks added (bool columns):
    InLap        PitInTime present (the lap ends in the pit lane: 2-5 s slow).
    OutLap       PitOutTime present, or lap 1 (standing start): 15-20 s slow.
    Neutralised  TrackStatus contains any of 4, 5, 6, 7 (SC, red, VSC, VSC ending) as a
                 character; never compared as a whole string, FastF1 versions differ.
    Restart      after a red flag (TrackStatus contains 5), the driver's laps up to and
                 including the first timed one: the restart is a standing (or rolling) start
                 like lap 1, and FastF1 times it with the restart procedure (Sao Paulo 2023:
                 lap 4 "accurate" at 123-133 s for the leaders against a 76 s race median).
    Yellow       TrackStatus contains 2 (local yellow; racing pace, informational only).
    HasTime      LapTime finite.
    Accurate     IsAccurate and not Deleted.
    Green        not Neutralised.
    Wet          INTERMEDIATE or WET compound (kept as context, never scored). UNKNOWN
                 compounds count as dry: a lap table without compounds is assumed dry.
    Scored       the laps that count for loss and metrics (above).

Imputed: NaN Stint (from pit stops), UNKNOWN Compound and NaN TyreLife (from the rest of
the driver's stint); the counts are in the report.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.race import schema as S

__all__ = ["clean_laps", "clean_files", "headline", "CleanReport", "RaceCleanReport", "DROP_REASONS", "MASK_REASONS"]

DROP_REASONS: tuple[str, ...] = ("no_lap_number", "after_flag", "non_starter")
# Why a kept lap is not Scored (a lap may have several reasons; each is counted).
MASK_REASONS: tuple[str, ...] = ("no_time", "inaccurate", "neutralised", "in_lap", "out_lap", "restart", "wet")
IMPUTED_FIELDS: tuple[str, ...] = ("Stint", "Compound", "TyreLife")


@dataclass
class RaceCleanReport:
    """What cleaning did to one race."""

    race: str
    rows_in: int
    rows_out: int
    scored: int
    dropped: dict[str, int] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    imputed: dict[str, int] = field(default_factory=dict)
    drivers_dropped: list[str] = field(default_factory=list)


@dataclass
class CleanReport:
    """Per-race account of dropped rows, masked laps and imputed values."""

    races: list[RaceCleanReport]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: {'races': [...], 'total': {...}}."""
        return {"races": [asdict(r) for r in self.races], "total": self.total()}

    def total(self) -> dict[str, Any]:
        """Sums over races."""
        tot: dict[str, Any] = {
            "rows_in": sum(r.rows_in for r in self.races),
            "rows_out": sum(r.rows_out for r in self.races),
            "scored": sum(r.scored for r in self.races),
        }
        for key in ("dropped", "masked", "imputed"):
            names = {k for r in self.races for k in getattr(r, key)}
            tot[key] = {k: sum(getattr(r, key).get(k, 0) for r in self.races) for k in sorted(names)}
        return tot

    def summary(self) -> dict[str, Any]:
        """What metrics.json carries: the totals, and each race's own account under 'by_race'."""
        by_race = {r.race: {k: v for k, v in asdict(r).items() if k != "race"} for r in self.races}
        return {**self.total(), "by_race": by_race}

    def describe(self) -> list[str]:
        """One human line per race: what was dropped, masked and imputed, and why."""
        return [f"{r.race}: {r.rows_in} rows -> {r.rows_out} laps, {r.scored} scored; dropped: {drop}; "
                f"not scored because: {mask}; imputed: {imp}" for r, (drop, mask, imp) in zip(self.races, self._why())]

    def table(self):
        """A rich Table, one row per race (the reasons as text, so it fits a narrow terminal)."""
        from rich.table import Table
        from rich.text import Text

        from lapnet.console import printable

        t = Table(title="lap cleaning: rows dropped, laps not Scored (a lap may have several reasons), values imputed")
        for c in ("race", "rows", "laps", "Scored", "dropped", "not Scored because", "imputed"):
            t.add_column(c, justify="right" if c in ("rows", "laps", "Scored") else "left")
        for r, (drop, mask, imp) in zip(self.races, self._why()):
            # as Text, escaped: a race's or a driver's name is data, not markup ('[/x]' crashed it) nor escapes
            t.add_row(*(Text(printable(str(v))) for v in (r.race, r.rows_in, r.rows_out, r.scored, drop, mask, imp)))
        return t

    def _why(self) -> list[tuple[str, str, str]]:
        """Per race: (dropped, masked, imputed) as 'count reason, ...' ('none' when empty)."""
        out = []
        for r in self.races:
            drop = ", ".join(f"{v} {k}" for k, v in r.dropped.items() if v) or "none"
            if r.drivers_dropped:
                drop += f" (drivers without a timed lap: {', '.join(r.drivers_dropped)})"
            mask = ", ".join(f"{v} {k}" for k, v in r.masked.items() if v) or "none"
            imp = ", ".join(f"{v} {k}" for k, v in r.imputed.items() if v) or "none"
            out.append((drop, mask, imp))
        return out


def headline(summary: dict[str, Any]) -> str:
    """One line from `CleanReport.summary()`: races, rows in, laps kept, Scored laps."""
    n = len(summary["by_race"])
    return (f"{n} race{'s' if n != 1 else ''}: {summary['rows_in']:,} rows -> {summary['rows_out']:,} laps, "
            f"{summary['scored']:,} Scored")


def clean_files(sources: Any, out: str | Path | None = None, *, force: bool = False) -> tuple[pd.DataFrame, CleanReport]:
    """`lapnet race clean`: read, check and clean lap tables; write the cleaned table if asked.

    Args:
        sources: a path, a DataFrame / `fastf1.core.Laps`, or a list of them (see `io.read_many`).
        out: write the cleaned table (every kept lap, the mask columns added, durations in
            seconds) here, .csv or .parquet, atomically; checked before anything is read.
        force: overwrite an existing `out`.

    Returns:
        (laps, report) as `clean_laps` gives them.

    Raises:
        LapnetError: an unreadable or invalid table, or an `out` that cannot be written.

    Warns:
        UserWarning: a race without a single Scored lap (nothing in it can train or score a model).
    """
    from lapnet.race.io import check_table_out, read_many, write_laps

    if out is not None:
        out = check_table_out(out, force=force)
    many = sources if isinstance(sources, (list, tuple)) else [sources]
    laps, report = clean_laps(read_many(many))
    for r in report.races:
        if r.scored == 0:
            warnings.warn(f"race '{r.race}' has no Scored lap: every lap is missing a time, inaccurate, "
                          "neutralised, wet, or an in/out-lap")
    if out is not None:
        write_laps(laps, out)
    return laps, report


def clean_laps(df: pd.DataFrame | str | os.PathLike) -> tuple[pd.DataFrame, CleanReport]:
    """Drop non-laps, add the mask columns, impute stint fields, and report per race.

    Args:
        df: a table from `lapnet.race.io.read_laps` / `read_many` (schema.SCHEMA dtypes), or
            the path of one lap table, read with `read_laps` (`clean_files` reads several).

    Returns:
        (laps, report): `laps` is a new DataFrame sorted by Race, Driver, LapNumber (index
        0..N-1) with the bool columns of `schema.MASK_COLUMNS` added; `report` says per race
        how many rows were dropped, masked and imputed, and why.

    Raises:
        LapnetError: `df` lacks the schema's columns (it was not read with `read_laps`), or is
            neither a DataFrame nor a path.
    """
    if isinstance(df, (str, os.PathLike)):
        from lapnet.race.io import read_laps

        df = read_laps(df)
    elif not isinstance(df, pd.DataFrame):  # was an AttributeError (no 'columns'): say what to pass
        raise LapnetError(f"clean_laps: got a {type(df).__name__}: give a lap table read with lapnet.race.io.read_laps "
                          "(a DataFrame) or the path of a CSV or Parquet file")
    need = [c for c in S.ALWAYS_PRESENT if c not in df.columns]
    if need:
        raise LapnetError(f"clean_laps: missing column(s) {', '.join(need)}: read the table with lapnet.race.io.read_laps first")
    races = sorted(df["Race"].unique().tolist())
    rows_in = df.groupby("Race").size()
    drop_rows: dict[str, pd.Series] = {}

    no_lap = df["LapNumber"].isna()
    drop_rows["no_lap_number"] = df.loc[no_lap, "Race"]
    g = df[~no_lap]

    after = _after_flag(g)
    drop_rows["after_flag"] = g.loc[after, "Race"]
    g = g[~after]

    keys = [g["Race"], g["Driver"]]
    timed = pd.Series(np.isfinite(g["LapTime"].to_numpy()), index=g.index).groupby(keys).transform("any").astype(bool)
    drop_rows["non_starter"] = g.loc[~timed, "Race"]
    gone = g.loc[~timed, ["Race", "Driver"]].drop_duplicates()
    g = g[timed]

    g = g.sort_values(["Race", "Driver", "LapNumber"], kind="stable").reset_index(drop=True)
    g, imputed_rows = _impute(g)

    status = g["TrackStatus"].astype(str)
    g["InLap"] = np.isfinite(g["PitInTime"].to_numpy())
    g["OutLap"] = np.isfinite(g["PitOutTime"].to_numpy()) | (g["LapNumber"].to_numpy() == 1)
    g["Neutralised"] = status.str.contains("[" + "".join(sorted(S.NEUTRALISED_CODES)) + "]", regex=True).astype(bool)
    g["Yellow"] = status.str.contains(S.YELLOW_CODE, regex=False).astype(bool)
    g["HasTime"] = np.isfinite(g["LapTime"].to_numpy())
    g["Accurate"] = g["IsAccurate"].to_numpy(bool) & ~g["Deleted"].to_numpy(bool)
    g["Green"] = ~g["Neutralised"]
    g["Wet"] = g["Compound"].isin(S.WET_COMPOUNDS).astype(bool)
    g["Restart"] = _restart_laps(g, status)
    g["Scored"] = g["HasTime"] & g["Accurate"] & g["Green"] & ~g["InLap"] & ~g["OutLap"] & ~g["Restart"] & ~g["Wet"]

    reasons = pd.DataFrame(
        {
            "no_time": ~g["HasTime"],
            "inaccurate": ~g["Accurate"],
            "neutralised": g["Neutralised"],
            "in_lap": g["InLap"],
            "out_lap": g["OutLap"],
            "restart": g["Restart"],
            "wet": g["Wet"],
            "Scored": g["Scored"],
            "rows": True,
        }
    )
    masked = reasons.groupby(g["Race"]).sum()
    imputed = imputed_rows.groupby(g["Race"]).sum()
    reports = []
    for race in races:
        reports.append(
            RaceCleanReport(
                race=str(race),
                rows_in=int(rows_in.get(race, 0)),
                rows_out=int(masked["rows"].get(race, 0)),
                scored=int(masked["Scored"].get(race, 0)),
                dropped={k: int((v == race).sum()) for k, v in drop_rows.items()},
                masked={k: int(masked[k].get(race, 0)) for k in MASK_REASONS},
                imputed={k: int(imputed[k].get(race, 0)) for k in IMPUTED_FIELDS},
                drivers_dropped=sorted(gone.loc[gone["Race"] == race, "Driver"].tolist()),
            )
        )
    return g, CleanReport(reports)


def _restart_laps(g: pd.DataFrame, status: pd.Series) -> np.ndarray:
    """Restart mask: after a red-flag lap, each driver's laps up to and including the first
    timed one. `g` is sorted by race, driver and lap number."""
    red = status.str.contains(S.RED_CODE, regex=False).to_numpy(bool)
    timed = np.isfinite(g["LapTime"].to_numpy())
    out = np.zeros(len(g), bool)
    if not red.any():
        return out
    key = (g["Race"].astype(str) + "\0" + g["Driver"].astype(str)).to_numpy()
    pending, prev = False, None
    for i in range(len(g)):  # a few thousand laps: a plain loop reads best
        if key[i] != prev:
            pending, prev = False, key[i]
        if red[i]:
            pending = True
        elif pending:
            out[i] = True
            pending = not timed[i]
    return out


def _after_flag(g: pd.DataFrame) -> np.ndarray:
    """FastF1Generated, untimed rows that end after the winner took the chequered flag (the race
    distance: `features.last_timed_lap`, here vectorised over races)."""
    has_time = np.isfinite(g["LapTime"].to_numpy())
    generated = g["FastF1Generated"].to_numpy(bool) & ~has_time
    if not generated.any():
        return np.zeros(len(g), bool)
    lap = g["LapNumber"].to_numpy()
    t = g["Time"].to_numpy()
    race = g["Race"]
    # The race distance: the last lap anyone completed with a time; the flag: the winner's finish.
    last = pd.Series(np.where(has_time, lap, np.nan), index=g.index).groupby(race).transform("max").to_numpy()
    on_last = has_time & (lap == last) & np.isfinite(t)
    flag = pd.Series(np.where(on_last, t, np.nan), index=g.index).groupby(race).transform("min").to_numpy()
    flag = np.where(np.isnan(flag), np.inf, flag)
    after = (lap > last) | (np.isfinite(t) & (t > flag))
    return generated & after & ~np.isnan(last)


def _impute(g: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill NaN Stint, UNKNOWN Compound and NaN TyreLife from each driver's stint.

    Returns the table and a bool frame (one column per imputed field) of the filled cells.
    """
    flags = pd.DataFrame(False, index=g.index, columns=list(IMPUTED_FIELDS))
    driver = [g["Race"], g["Driver"]]
    # Pit stops split a driver's race into segments: a new one starts after each in-lap.
    in_lap = pd.Series(np.isfinite(g["PitInTime"].to_numpy()).astype(int), index=g.index)
    seg = in_lap.groupby(driver).shift(1, fill_value=0).groupby(driver).cumsum()

    stint = g["Stint"]
    if stint.isna().any():
        by_seg = [g["Race"], g["Driver"], seg]
        filled = stint.groupby(by_seg).ffill().groupby(by_seg).bfill().fillna(seg + 1.0)
        flags["Stint"] = stint.isna()
        g["Stint"] = filled.astype("float64")
    by_stint = [g["Race"], g["Driver"], g["Stint"]]

    # Compounds as float codes (NaN = UNKNOWN) so the fill stays numeric.
    code = g["Compound"].map({c: float(i) for i, c in enumerate(S.COMPOUNDS) if c != "UNKNOWN"})
    if code.isna().any():
        filled = code.groupby(by_stint).ffill().groupby(by_stint).bfill()
        flags["Compound"] = code.isna() & filled.notna()
        names = np.array(S.COMPOUNDS, dtype=object)
        idx = filled.fillna(S.COMPOUNDS.index("UNKNOWN")).to_numpy(int)
        g["Compound"] = pd.Series(names[idx], index=g.index, dtype=object)

    life = g["TyreLife"]
    if life.isna().any():
        lap = g["LapNumber"]
        # TyreLife - LapNumber is constant within a stint; carry it from the known laps.
        offset = (life - lap).groupby(by_stint).ffill().groupby(by_stint).bfill()
        first = lap.groupby(by_stint).transform("min")
        guess = (lap + offset).fillna(lap - first + 1.0)
        flags["TyreLife"] = life.isna()
        g["TyreLife"] = life.fillna(guess).astype("float64")
    return g, flags
