"""Read lap tables (CSV, Parquet, a DataFrame or a FastF1 `Laps`) into lapnet's schema.

    laps = read_laps("2023_italian_R.csv")           # Race = '2023_italian_R'
    laps = read_laps(session.laps, race="monza23")   # a fastf1.core.Laps, no conversion needed
    laps = read_many(["a.csv", "b.parquet"])         # several races, one table

The output follows `lapnet.race.schema.SCHEMA`: FastF1 column names, durations as float
seconds, counters as float (NaN allowed), booleans as bool, TrackStatus/Compound/Driver/
Team/Race as str. Validation happens here, once, with one-line `LapnetError`s naming the
column and row; cleaning (what counts as a lap, masks, imputation) is `lapnet.race.clean`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.race import schema as S

__all__ = ["read_laps", "read_many", "missing_context", "write_laps", "check_table_out", "parse_drivers", "car_number",
           "lap_keys", "NotARaceWarning", "MissingContextWarning", "CompoundNamesWarning", "SharedLapsWarning",
           "relabel_absolute", "driver_order", "race_match"]


class NotARaceWarning(UserWarning):
    """The lap table looks like a practice or qualifying session, not a race."""


class CompoundNamesWarning(UserWarning):
    """A race's tyres carry Pirelli's absolute names (2018's ULTRASOFT, or C1-C5): relabelled."""


class MissingContextWarning(UserWarning):
    """The lap table lacks a column the masks or the pit call need (not a FastF1 export)."""


# Columns FastF1 always exports that a table may still lack, and what is lost without them.
_CONTEXT = (
    (("PitInTime", "PitOutTime"), "pit stops cannot be seen (in- and out-laps count as racing laps, and the pit "
                                  "call has no stops to learn from or to score)"),
    (("TrackStatus",), "safety-car, VSC and red-flag laps cannot be told from green laps"),
    (("Compound",), "every lap counts as dry, on an unknown compound"),
    (("Time",), "the gaps between cars cannot be measured (every car is read as running alone: no gap to the car "
                "ahead, no traffic, no stops of the field), out-laps, the start and restarts get no forecast "
                "(forecast_from no_green_pace_yet) and pit-now none at all (both read the field's pace at the moment "
                "a lap ends), and laps are taken in lap order (drivers by name within a lap; a live feed as it "
                "comes), not in the order they ended"),
    (("IsAccurate",), "every timed lap counts as accurate (FastF1 flags laps whose timing it cannot vouch for: "
                      "they would not be Scored)"),
    (("Deleted",), "no lap counts as deleted (laps deleted for track limits would not be Scored)"),
)


# Columns FastF1 always exports that the model reads as inputs (`features.RaceFeaturizer`), beyond those of
# `_CONTEXT`, and what stands in for each when a table lacks it. Sector times are read too (one clipped input,
# the lap's worst sector against the stint's), but left out here: the simulator writes none, and without them
# forecasts move by hundredths of a second.
_INPUTS = (
    ("Stint", "stints are counted from the pit stops"),
    ("TyreLife", "tyre age is counted from each stint's first lap in the table"),
    ("FreshTyre", "every set is taken as used"),
    ("Position", "every car is taken as 10th, with no car known ahead or behind"),
    ("Team", "no teammate's stop is seen"),
)


def missing_context(columns: Iterable[str]) -> list[str]:
    """One remark per group of context columns the table lacks entirely (see `_CONTEXT`), and one
    for all the model's other inputs it lacks (`_INPUTS`)."""
    have = set(columns)
    out = [f"no {' / '.join(cols)} column{'s' if len(cols) > 1 else ''}, so {lost}"
           for cols, lost in _CONTEXT if not have.intersection(cols)]
    lacking = [(c, how) for c, how in _INPUTS if c not in have]
    if lacking:
        s = "s" if len(lacking) > 1 else ""
        out.append(f"no {', '.join(c for c, _ in lacking)} column{s}, which the model reads ("
                   f"{'; '.join(how for _, how in lacking)}): forecasts and pit calls may shift from what a full "
                   "FastF1 export gives")
    return out


# 'M:SS.sss' as people type lap times; pandas only parses 'H:MM:SS'.
_MIN_SEC = re.compile(r"^(\d+):(\d{1,2}(?:\.\d*)?)$")
# pandas' own text, FastF1's `to_csv`: '0 days 00:01:37.167000' (read here without pandas: live mode reads it per lap)
# (a leading '-' makes the whole duration negative: '-0 days 00:01:30' is -90 s, where pandas reads +90 s; pandas'
# own text of a negative one, '-1 days +23:58:30', is left to pandas)
_DAYS_HMS = re.compile(r"^(-)?(?:(\d+) days )?(\d+):(\d{2}):(\d{2}(?:\.\d*)?)$")
# the spellings of a missing cell, and of a boolean, in a lap table's text (lower case, stripped); live mode reads them too
MISSING_STRINGS = frozenset({"", "nan", "nat", "none", "null", "<na>"})
TRUE_STRINGS = frozenset({"true", "1", "1.0", "yes", "t", "y"})
FALSE_STRINGS = frozenset({"false", "0", "0.0", "no", "f", "n"})


def parse_duration(text: str) -> float:
    """Seconds of one duration as a lap table writes it (the one parser of `read_laps` and live mode).

    Args:
        text: a missing spelling ('', 'NaT', 'nan', ...: NaN), seconds ('97.167'), 'M:SS.sss'
            ('1:37.167'), pandas' '0 days 00:01:37.167000', or anything else `pd.Timedelta` reads.

    Raises:
        ValueError: not a duration.
    """
    t = text.strip()
    if t.lower() in MISSING_STRINGS:
        return math.nan
    try:
        return float(t)
    except ValueError:
        pass
    m = _DAYS_HMS.match(t)
    if m:
        sec = int(m.group(2) or 0) * 86400 + int(m.group(3)) * 3600 + int(m.group(4)) * 60 + float(m.group(5))
        return -sec if m.group(1) else sec
    m = _MIN_SEC.match(t)
    if m:
        return 60.0 * int(m.group(1)) + float(m.group(2))
    try:
        td = pd.Timedelta(t)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"not a duration: {text!r}") from None
    return math.nan if pd.isna(td) else td.total_seconds()


def read_laps(source: Any, *, race: str | None = None) -> pd.DataFrame:
    """Load one lap table and normalise it to lapnet's schema.

    Args:
        source: a CSV or Parquet path (str or Path), a pandas DataFrame, or a
            `fastf1.core.Laps` (a DataFrame subclass; fastf1 itself is never imported).
        race: the race label written into the `Race` column. Default: an existing `Race`
            column, else FastF1's `EventName` when the table holds several sessions
            (`_event_races`: '2023_miami_grand_prix'), else the file stem ('2023_italian_R'),
            else 'race'.

    Returns:
        A new DataFrame (index 0..N-1, rows in input order) with the columns of
        `schema.ALWAYS_PRESENT` plus any other known or unknown columns of the source:
        durations (LapTime, Time, PitInTime, PitOutTime, LapStartTime, sector times) as float
        seconds, LapNumber/Stint/TyreLife/Position float (NaN allowed), Compound upper-case
        str (UNKNOWN when missing; a race named with Pirelli's absolute compounds, 2018's
        ULTRASOFT or C1-C5, relabelled SOFT/MEDIUM/HARD by `relabel_absolute`),
        FreshTyre/Deleted/FastF1Generated/IsAccurate bool (defaults in
        `schema.BOOL_DEFAULTS` when absent), TrackStatus str ('' when missing),
        Driver/Team/Race str; simulator truth columns (FuelLoad, TyreTemp, GapToLeader,
        TrueDegradation, OracleLapTime float; Phase str) pass through.

    Raises:
        LapnetError: unreadable or empty source, missing required columns (Driver,
            LapNumber, LapTime), unparseable times, values outside `VALUE_RULES` (negative
            times, a zero lap time, lap numbers, stints and positions not whole or out of range...), unknown compounds or track-status codes, missing drivers, duplicate
            (Race, Driver, LapNumber) rows, or several races mixed under one label.

    Warns:
        NotARaceWarning: the table looks like practice or qualifying (no positions, or
            pit stops on a large share of laps).
        MissingContextWarning: no pit-time, TrackStatus, Compound, Time, IsAccurate or Deleted
            column (one warning per group, saying what is lost), and one for all of the model's
            other inputs it lacks (Stint, TyreLife, FreshTyre, Position, Team: `missing_context`).
        CompoundNamesWarning: a race's absolute compound names were relabelled (how).
    """
    frame, stem = _load(source)
    if race is not None:
        label = str(race)
    elif "Race" in frame.columns:
        label = None  # keep the column
    elif _event_races(frame, _where(source)):
        label = None  # several FastF1 sessions concatenated: told apart by EventName (a Race column made from it)
    else:
        label = stem or "race"
    return _normalise(frame, race=label, where=_where(source))


def _event_races(frame: pd.DataFrame, where: str) -> bool:
    """Without a Race column, a table holding several FastF1 sessions (several `EventName`s, or
    one event in several years) gets a Race column made from them, in place:
    '2023_miami_grand_prix' (the year from a Year / EventYear / Season column, else the date of
    LapStartDate or EventDate; RoundNumber when there is no year). A table of one session keeps
    its file name as the race label (returns False).

    Raises:
        LapnetError: an EventName cell is missing while others are not.
    """
    if "EventName" not in frame.columns:
        return False
    names = frame["EventName"]
    blank = names.isna() | names.astype(str).str.strip().str.lower().isin(MISSING_STRINGS)
    if blank.all():
        return False
    if blank.any():
        raise _bad(where, "EventName", int(np.flatnonzero(blank.to_numpy())[0]), names[blank].iloc[0],
                   "missing EventName (it tells the table's races apart)")
    slug = names.astype(str).str.strip().str.lower().str.replace(r"[^0-9a-z]+", "_", regex=True).str.strip("_")
    prefix = pd.Series("", index=frame.index)
    year_col = next((c for c in ("Year", "EventYear", "Season") if c in frame.columns), None)
    if year_col is not None:
        year = pd.to_numeric(frame[year_col], errors="coerce")
    else:
        date_col = next((c for c in ("LapStartDate", "EventDate") if c in frame.columns), None)
        year = (pd.to_datetime(frame[date_col], errors="coerce").dt.year if date_col is not None
                else pd.Series(np.nan, index=frame.index))
    if year.notna().any():
        prefix = year.map(lambda y: "" if pd.isna(y) else f"{int(y)}_")
        # a lap without a date takes its event's year (FastF1 leaves LapStartDate empty on a few generated rows)
        known = pd.Series(np.where(year.notna(), prefix, None), index=frame.index)
        prefix = known.groupby(slug).transform(lambda s: s.ffill().bfill()).fillna("")
    elif "RoundNumber" in frame.columns:
        rnd = pd.to_numeric(frame["RoundNumber"], errors="coerce")
        prefix = rnd.map(lambda r: "" if pd.isna(r) else f"round{int(r)}_")
    labels = prefix.astype(str) + slug
    if labels.nunique() < 2:
        return False
    frame["Race"] = labels
    return True


def as_sources(sources: Any) -> list:
    """Lap-table sources as a list: one path (str or Path) or one DataFrame / `fastf1.core.Laps`
    is one source, a list, tuple or other iterable of them is several.

    Raises:
        LapnetError: a dict, bytes or another type that is none of these (a dict would
            otherwise be read as its keys, a string as its characters).
    """
    if isinstance(sources, (str, Path, pd.DataFrame)):
        return [sources]
    if isinstance(sources, (Mapping, bytes, bytearray, pd.Series)) or not isinstance(sources, Iterable):
        raise LapnetError(f"cannot read lap tables from a {type(sources).__name__}: give a CSV/Parquet path, "
                          "a DataFrame or fastf1 Laps, or a list of them")
    return list(sources)


def read_many(paths: Any) -> pd.DataFrame:
    """Read several lap tables (one race each, or each with a Race column) into one.

    Args:
        paths: CSV/Parquet paths, DataFrames or Laps objects (a list of them, or one: see
            `as_sources`); files are labelled by stem.

    Returns:
        The concatenated table (same schema as `read_laps`), index 0..N-1.

    Raises:
        LapnetError: no sources, a dict or other unsupported type, any source invalid, the
            same race label in two sources, or the same race's laps in two sources under two
            labels (a copy, or a part of it: `same_laps`), naming both.

    Warns:
        SharedLapsWarning: two sources share SHARED_LAPS_WARN laps or more, too few to be the
            same race (two parts of one race), naming both.
    """
    frames = []
    seen: dict[str, str] = {}
    for p in as_sources(paths):
        df = read_laps(p)
        for r in df["Race"].unique():
            if r in seen:
                raise LapnetError(f"race '{r}' appears in both {seen[r]} and {_where(p)}: give each race its own label")
            seen[r] = _where(p)
        frames.append(df)
    if not frames:
        raise LapnetError("no lap tables given")
    _refuse_repeated_laps(frames, seen)
    return pd.concat(frames, ignore_index=True)


# Two races share "the same laps" when at least this share of the smaller one's timed laps (and
# at least SAME_LAPS_MIN of them) have the same lap key (`lap_keys`: lap number, lap time to the
# millisecond and the driver's lap before it) in the other: two different races never come near
# (the 15 real races of 2023 share no key, pairwise), a copy or a cut of one race always does.
SAME_LAPS_SHARE, SAME_LAPS_MIN = 0.5, 3
# Two inputs sharing at least this many laps, yet under SAME_LAPS_SHARE of the smaller one (a part
# of a race beside another part of it: its first 20 laps and ten of its drivers), are warned: the
# 15 real races of 2023 share none pairwise, 12 simulated races none either
SHARED_LAPS_WARN = 20
LAP_KEY = ("the first 32 bits of SHA-1 of 'lap number|lap time in ms|the driver's lap before it in ms' "
           "('-' when that lap is missing or untimed), each timed lap once")
LAP_KEY_BY_DRIVER = "the first 32 bits of SHA-1 of 'DRIVER|lap number|lap time in ms', each timed lap once"


class SharedLapsWarning(UserWarning):
    """Two inputs share laps, too few to be one race (SAME_LAPS_SHARE) but more than chance gives."""


def lap_keys(laps: pd.DataFrame, *, by_driver: bool = False) -> dict[str, np.ndarray]:
    """Race -> the sorted, distinct keys of its timed laps: a 32-bit hash of (lap number, lap
    time in milliseconds, the same driver's previous lap time in milliseconds, '-' when that lap
    is not in the table or has no time), `LAP_KEY`. The driver's name is not in it: the same lap
    in another file, under another race name, with its drivers named by code or by car number,
    has the same key; two lap times in a row to the millisecond never repeat in another race.
    `race train` keeps them (training_laps.json) so that `race eval` knows a training race, or
    any part of one, by its laps.

    `by_driver`: the keys of runs trained before (`LAP_KEY_BY_DRIVER`: driver code, lap number,
    lap time), to compare with their training_laps.json.
    """
    import hashlib

    out: dict[str, np.ndarray] = {}
    rows = laps[laps["LapNumber"].notna()]
    lap = rows["LapNumber"].to_numpy(float)
    ms = np.round(rows["LapTime"].to_numpy(float) * 1000.0)
    timed = np.isfinite(ms)
    k = pd.DataFrame({"r": rows["Race"].astype(str).to_numpy(), "d": rows["Driver"].astype(str).to_numpy(),
                      "n": lap, "ms": ms})
    if by_driver:
        text = k["d"].str.upper() + "|" + k["n"].astype(int).astype(str) + "|" + k["ms"].fillna(0).astype(np.int64).astype(str)
    else:
        before = k.assign(n=k["n"] + 1).rename(columns={"ms": "prev"}).drop_duplicates(["r", "d", "n"])
        prev = k[["r", "d", "n"]].merge(before, on=["r", "d", "n"], how="left")["prev"].to_numpy(float)
        shown = np.where(np.isfinite(prev), np.nan_to_num(prev).astype(np.int64).astype(str), "-")
        text = (k["n"].astype(int).astype(str) + "|" + k["ms"].fillna(0).astype(np.int64).astype(str) + "|"
                + pd.Series(shown, index=k.index))
    text = text[timed]
    keys = np.fromiter((int.from_bytes(hashlib.sha1(t.encode()).digest()[:4], "big") for t in text), np.uint32, len(text))
    for race, idx in pd.Series(np.arange(len(text))).groupby(k["r"][timed].to_numpy(), sort=True):
        out[str(race)] = np.unique(keys[idx.to_numpy()])
    return out


def shared_laps(a: np.ndarray, b: np.ndarray) -> int:
    """How many lap keys (`lap_keys`) two races have in common."""
    return int(np.intersect1d(a, b, assume_unique=True).size)


def same_laps(shared: int, n: int) -> bool:
    """Whether `shared` laps in common with another race make a race of `n` timed laps that
    race, or a part of it (see SAME_LAPS_SHARE)."""
    return shared >= SAME_LAPS_MIN and shared >= SAME_LAPS_SHARE * n


def lap_overlap(a: np.ndarray, b: np.ndarray) -> tuple[int, int, bool]:
    """How two races' lap keys (`lap_keys`) overlap: (laps in common, the smaller race's timed
    laps, whether that makes them the same race or a part of it). A share of the smaller race,
    so a part is caught either way round: two inputs here, and a run's training races against
    an evaluated race (`evaluation.race_overlaps`: trained on laps 1-20, evaluated on all of it)."""
    common, n = shared_laps(a, b), min(len(a), len(b))
    return common, n, same_laps(common, n)


def _refuse_repeated_laps(frames: list[pd.DataFrame], where: dict[str, str]) -> None:
    """Refuse two sources holding the same race's laps (a copy under another name, or a part of
    it): a training race would count twice, or sit in both training and validation, and an
    evaluated race would be scored twice. Two that share SHARED_LAPS_WARN laps or more, under
    that share (two parts of one race), are warned, one line per pair (SharedLapsWarning)."""
    if len(frames) < 2:
        return
    keys = [lap_keys(df) for df in frames]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            for ra, ka in keys[i].items():
                for rb, kb in keys[j].items():
                    common, n, same = lap_overlap(ka, kb)
                    small = ra if len(ka) <= len(kb) else rb
                    if same:
                        raise LapnetError(
                            f"{where[ra]} (race '{ra}') and {where[rb]} (race '{rb}') hold the same race's laps "
                            f"({common} of the {n} timed laps of '{small}' are in both): give each race once")
                    if common >= SHARED_LAPS_WARN:
                        warnings.warn(
                            f"{where[ra]} (race '{ra}') and {where[rb]} (race '{rb}') share {common} identical laps "
                            f"({common / n:.0%} of the {n} timed laps of '{small}'; different races share none): parts "
                            f"of one race? both are used, those laps twice (at least {SAME_LAPS_SHARE:.0%} shared is "
                            "refused as the same race)", SharedLapsWarning, stacklevel=3)


def car_number(value: Any) -> str | None:
    """A car number (FastF1's DriverNumber, or a `--driver` item) as text, the one form both are
    matched in: '1', ' 1', '01', 1 and 1.0 are all '1'; other text comes back stripped ('A1');
    None when missing (NaN, '', 'nan', ...)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = str(value).strip()
    if s.lower() in MISSING_STRINGS:
        return None
    if s.isdigit():  # exact, however long
        return str(int(s))
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f.is_integer() else s  # a column pandas read as float: 1.0


def race_match(race: str, names: Iterable[str]) -> str | None:
    """The race `race` names among `names`: the same name, else the one equal to it in any case."""
    names = list(names)
    if race in names:
        return race
    folded = [n for n in names if n.casefold() == race.strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def driver_order(names: Iterable[str]) -> list[str]:
    """Drivers as error messages list them: codes in alphabetical order, car numbers (a table that
    names its drivers by number) in numeric order, after the codes."""
    return sorted((str(n) for n in names), key=lambda n: (1, int(n), n) if n.isdigit() else (0, 0, n))


def parse_drivers(value: str | Iterable[str] | None, laps: pd.DataFrame | None = None, *,
                  no_timed_lap: Iterable[str] = ()) -> list[str] | None:
    """`--driver` of `race predict` and `race live`: 'VER,HAM', 'ver', '1,44' -> driver codes.

    Args:
        value: a comma-separated string or a list of items, each a three-letter code in any
            case or a car number (FastF1's DriverNumber); None: every driver (returns None).
        laps: the lap table to resolve them against (its Driver and, when present,
            DriverNumber columns). None: no table yet (a live feed): the items come back
            normalised (codes upper-case, numbers without leading zeros) for the caller to
            match each lap's Driver or DriverNumber against.
        no_timed_lap: codes of drivers the table holds but cleaning dropped (no timed lap:
            `RaceCleanReport.drivers_dropped`), named as such rather than as unknown.

    Returns:
        The codes in the order given, each once (None when `value` is None).

    Raises:
        LapnetError: nothing given (`--driver ""`), or an item the table does not hold, in one
            line naming the drivers it does hold.
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [x for v in value for x in str(v).split(",")]
    tokens = [t.strip() for t in items if t.strip()]
    if not tokens:
        raise LapnetError(f"--driver {value!r}: give driver codes such as VER or VER,HAM, or car numbers such as 1,44")
    tokens = [car_number(t) if t.isdigit() else t.upper() for t in tokens]
    if laps is None:
        return list(dict.fromkeys(tokens))
    codes = driver_order(laps["Driver"].astype(str).unique())
    by_code = {c.upper(): c for c in codes}
    numbers: dict[str, str] = {}
    if "DriverNumber" in laps.columns:
        for num, drv in laps[["DriverNumber", "Driver"]].drop_duplicates().itertuples(index=False):
            n = car_number(num)
            if n is not None and n.isdigit():
                numbers.setdefault(n, str(drv))
    gone = driver_order({str(d).upper() for d in no_timed_lap} - set(by_code))
    listed = f"drivers: {', '.join(codes)}" + (f"; without a timed lap: {', '.join(gone)}" if gone else "")
    out = []
    for t in tokens:
        if t in by_code:
            out.append(by_code[t])
        elif t.isdigit() and t in numbers:
            out.append(numbers[t])
        elif t in gone:
            raise LapnetError(f"--driver {t}: {t} has no laps after cleaning: not one timed lap (retired on lap 1, "
                              f"or did not start), nothing to forecast ({listed})")
        elif t.isdigit() and not numbers:
            raise LapnetError(f"--driver {t}: a car number, but the lap table has no DriverNumber column: give "
                              f"the driver's code ({listed})")
        elif t.isdigit():
            known = ", ".join(n if d == n else f"{n} {d}" for n, d in sorted(numbers.items(), key=lambda kv: int(kv[0])))
            raise LapnetError(f"--driver {t}: no car with that number in the lap table (numbers: {known})")
        else:
            raise LapnetError(f"--driver {t}: not in the lap table ({listed})")
    return list(dict.fromkeys(out))


def check_table_out(out: str | Path, *, force: bool = False) -> Path:
    """Refuse, before any work, a lap table that cannot be written to `out` (.csv or .parquet).

    Raises:
        LapnetError: another extension, an existing file without `force`, something other
            than a file in the way, or a missing folder.
    """
    from lapnet.run_dir import check_file_out, check_out_path

    out = check_out_path(out)  # empty, a dangling symlink, a device: refused in their own words
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise LapnetError(f"--out {out}: write a .csv or .parquet lap table")
    if out.exists() and not out.is_file():
        raise LapnetError(f"--out {out}: exists and is not a file")
    if out.exists() and not force:
        raise LapnetError(f"--out {out}: already exists (use --force to overwrite it)")
    return check_file_out(out)  # its folder exists and is writable: said now, not after the work


def write_laps(df: pd.DataFrame, out: str | Path) -> None:
    """Write a lap table as CSV or Parquet (by the extension), atomically: a reader never
    sees half a file, and a failure leaves any previous file as it was."""
    import io as _io

    from lapnet.checkpoint import atomic_write_bytes

    if Path(out).suffix.lower() == ".csv":
        data = df.to_csv(index=False).encode()
    else:
        buf = _io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    atomic_write_bytes(out, data)


# --- loading -----------------------------------------------------------------------------


def _where(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__


def _load(source: Any) -> tuple[pd.DataFrame, str | None]:
    if isinstance(source, pd.DataFrame):  # includes fastf1.core.Laps
        return pd.DataFrame(source).reset_index(drop=True).copy(), None
    if not isinstance(source, (str, Path)):
        raise LapnetError(f"cannot read laps from a {type(source).__name__}: give a CSV/Parquet path or a DataFrame")
    path = Path(source)
    if not path.exists():
        raise LapnetError(f"{path}: no such file")
    if path.is_dir():
        raise LapnetError(f"{path}: is a directory, not a lap table (give its CSV or Parquet files)")
    if not path.is_file():
        raise LapnetError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise LapnetError(f"{path}: empty file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt"):
            # TrackStatus must stay a string: '24' is two codes, not the number 24.
            text_cols = {c: str for c in ("TrackStatus", "Driver", "Team", "Compound", "Race", "Phase", "DriverNumber")}
            frame = pd.read_csv(path, dtype=text_cols, keep_default_na=True)
        else:
            raise LapnetError(f"{path}: unknown lap-table format '{suffix}' (use .csv or .parquet)")
    except LapnetError:
        raise
    except pd.errors.EmptyDataError:
        raise LapnetError(f"{path}: empty file (no header, no laps)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        msg = " ".join(str(e).split())[:120]
        raise LapnetError(f"{path}: not a readable {suffix[1:]} lap table ({msg})") from None
    except Exception as e:  # pyarrow raises its own error types for corrupt Parquet
        raise LapnetError(f"{path}: not a readable {suffix[1:]} lap table ({e.__class__.__name__})") from None
    return frame, path.stem


# --- normalisation -----------------------------------------------------------------------


def _normalise(df: pd.DataFrame, *, race: str | None, where: str) -> pd.DataFrame:
    df.columns = [str(c) for c in df.columns]
    # `laps.to_csv()` without index=False leaves pandas' index as an unnamed first column.
    df = df.drop(columns=[c for c in df.columns if re.fullmatch(r"Unnamed: \d+", c)])
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise LapnetError(f"{where}: column '{dup}' appears twice")
    for c in df.columns:  # pandas' CSV reader renames a second 'LapTime' to 'LapTime.1'
        m = re.fullmatch(r"(.+)\.\d+", c)
        if m and m.group(1) in df.columns:
            raise LapnetError(f"{where}: column '{m.group(1)}' appears twice (the second read as '{c}')")
    missing = [c for c in S.REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and any(sep in df.columns[0] for sep in ";\t|"):  # one column holding every name
            sep = next(sep for sep in ";\t|" if sep in df.columns[0])
            hint = f"; its header is one column split by {sep!r}: lapnet reads comma-separated CSV"
        raise LapnetError(f"{where}: missing required column(s) {', '.join(missing)} (a lap table needs "
                          f"{', '.join(S.REQUIRED_COLUMNS)}){hint}")
    if len(df) == 0:
        raise LapnetError(f"{where}: no laps (the table has a header but no rows)")
    had_position = "Position" in df.columns  # FastF1 leaves Position empty outside races
    for remark in missing_context(df.columns):
        warnings.warn(f"{where}: {remark}", MissingContextWarning, stacklevel=3)

    for c in S.TIME_COLUMNS:
        if c in df.columns:
            df[c] = _to_seconds(df[c], c, where)
        elif c in ("Time", "PitOutTime", "PitInTime", "LapStartTime"):
            df[c] = np.nan
    for c in S.FLOAT_COLUMNS + S.TRUTH_FLOAT_COLUMNS:
        if c in df.columns:
            df[c] = _to_float(df[c], c, where)
        elif c in S.FLOAT_COLUMNS:
            df[c] = np.nan
    for c, default in S.BOOL_DEFAULTS.items():
        df[c] = _to_bool(df[c], c, S.BOOL_MISSING_CELL[c], where) if c in df.columns else default

    _check_values(df, where)

    df["Driver"] = _to_str(df["Driver"], "Driver", where, required=True)
    df["Team"] = _to_str(df["Team"], "Team", where) if "Team" in df.columns else ""
    df["Compound"] = _to_compound(df["Compound"], where) if "Compound" in df.columns else "UNKNOWN"
    df["TrackStatus"] = _to_status(df["TrackStatus"], where) if "TrackStatus" in df.columns else ""
    for c in S.TRUTH_STR_COLUMNS + S.OPTIONAL_STR_COLUMNS:
        if c in df.columns:
            df[c] = _to_str(df[c], c, where)
    if race is not None:
        df["Race"] = race
    else:
        df["Race"] = _to_str(df["Race"], "Race", where, required=True)

    _relabel_races(df, where)
    _check_duplicates(df, where, race_from_column=race is None)
    _warn_if_not_race(df, where, had_position=had_position)
    return df.reset_index(drop=True)


def _bad(where: str, col: str, pos: int, value: Any, why: str) -> LapnetError:
    shown = repr(value.item() if isinstance(value, np.generic) else value)  # 1e+300, not np.float64(1e+300)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return LapnetError(f"{where}: column {col}, {_row(where, pos)}: {why} ({shown})")


def _row(where: str, pos: int) -> str:
    """Where the table's row `pos` (0-based) is: a CSV's line (its header is line 1), else the row (1-based)."""
    return f"line {pos + 2}" if where.lower().endswith((".csv", ".txt")) else f"row {pos + 1}"


def _is_missing_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower() in MISSING_STRINGS


def _to_seconds(s: pd.Series, col: str, where: str) -> pd.Series:
    """timedelta, numbers (seconds) or strings ('0 days 00:01:37.167000', '1:37.167', '97.1') -> float seconds."""
    if pd.api.types.is_timedelta64_dtype(s):
        return s.dt.total_seconds().astype("float64")
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        raise LapnetError(f"{where}: column {col} holds {s.dtype} values, expected durations (seconds or timedelta)")
    if pd.api.types.is_numeric_dtype(s):
        out = s.astype("float64")
    else:
        values = s.to_numpy(dtype=object)
        out_arr = np.full(len(values), np.nan)
        # Fast path for the usual FastF1 strings; anything it cannot parse goes one by one.
        is_str = np.fromiter((isinstance(v, str) for v in values), bool, len(values))
        if is_str.any():
            strs = pd.Series(values[is_str], dtype=object)
            num = pd.to_numeric(strs, errors="coerce").to_numpy(dtype=float)  # '96' is seconds, not 96 ns
            with warnings.catch_warnings():  # pandas' deprecated units ('5l' = 5 ms) are its remark, not the user's problem
                warnings.simplefilter("ignore", FutureWarning)
                td = pd.to_timedelta(strs.where(np.isnan(num)), errors="coerce").dt.total_seconds().to_numpy()
            out_arr[is_str] = np.where(np.isnan(num), td, num)
            # pandas reads '-0 days 00:01:30' as +90 s: a leading '-' is read by `parse_duration`
            minus = np.flatnonzero(is_str)[strs.str.lstrip().str.startswith("-").to_numpy(bool) & np.isnan(num)]
            out_arr[minus] = np.nan
        for i in np.flatnonzero(np.isnan(out_arr)):
            out_arr[i] = _one_duration(values[i], col, int(i), where)
        out = pd.Series(out_arr, index=s.index)
    bad = np.isinf(out.to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad(where, col, i, s.iloc[i], "infinite duration")
    return out


def _one_duration(v: Any, col: str, i: int, where: str) -> float:
    if v is None or v is pd.NaT or v is pd.NA:
        return np.nan
    if isinstance(v, (bool, np.bool_)):
        raise _bad(where, col, i, v, "not a duration")
    if isinstance(v, (pd.Timedelta, np.timedelta64)):
        t = pd.Timedelta(v)
        return np.nan if pd.isna(t) else t.total_seconds()
    if hasattr(v, "total_seconds"):  # datetime.timedelta
        return float(v.total_seconds())
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        try:
            return parse_duration(v)
        except ValueError:
            raise _bad(where, col, i, v, "unparseable time") from None
    raise _bad(where, col, i, v, "unparseable time")


def _to_float(s: pd.Series, col: str, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return s.astype("float64")
    if pd.api.types.is_numeric_dtype(s):
        out = s.astype("float64")
    else:
        values = s.to_numpy(dtype=object)
        out_arr = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            if v is None or v is pd.NA or v is pd.NaT or _is_missing_str(v):
                continue
            if isinstance(v, (bool, np.bool_)):
                out_arr[i] = float(v)
                continue
            try:
                out_arr[i] = float(v)
            except (TypeError, ValueError):
                raise _bad(where, col, i, v, "not a number") from None
        out = pd.Series(out_arr, index=s.index)
    bad = np.isinf(out.to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad(where, col, i, s.iloc[i], "infinite value")
    return out


def _map_unique(s: pd.Series, fn) -> pd.Series:
    """Apply `fn(value, first_row)` once per distinct value (None for missing) and spread the
    results back: text columns have a handful of distinct values over thousands of rows."""
    values = s.to_numpy(dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)  # missing -> -1
    out_u = np.empty(len(uniques) + 1, dtype=object)
    present, first = np.unique(codes, return_index=True)
    for code, row in zip(present, first):
        out_u[code] = fn(None if code == -1 else uniques[code], int(row))  # code -1 fills the last slot
    return pd.Series(out_u[codes], index=s.index, dtype=object)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)) or _is_missing_str(v)


def _to_bool(s: pd.Series, col: str, missing: bool, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(s) and not s.isna().any():
        return s.astype(bool)

    def one(v: Any, i: int) -> bool:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if _missing(v):
            return missing
        t = str(v).strip().lower()
        if t in TRUE_STRINGS:
            return True
        if t in FALSE_STRINGS:
            return False
        raise _bad(where, col, i, v, "not a boolean (True/False)")

    return _map_unique(s, one).astype(bool)


def _to_str(s: pd.Series, col: str, where: str, *, required: bool = False) -> pd.Series:
    def one(v: Any, i: int) -> str:
        if _missing(v):
            if required:
                raise _bad(where, col, i, v, f"missing {col}")
            return ""
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))  # a driver number read as 44.0
        return str(v).strip()

    return _map_unique(s, one)


def _to_compound(s: pd.Series, where: str) -> pd.Series:
    def one(v: Any, i: int) -> str:
        c = "" if _missing(v) else str(v).strip().upper()
        c = S.COMPOUND_ALIASES.get(c, c)
        if c not in S.COMPOUNDS and c not in S.ABSOLUTE_ONLY:
            raise _bad(where, "Compound", i, v, f"unknown compound, expected one of {', '.join(S.COMPOUNDS)} "
                       "(or Pirelli's absolute names: HYPERSOFT ... SUPERHARD, C6 ... C0)")
        return c

    return _map_unique(s, one)


def relabel_absolute(names: Iterable[str]) -> dict[str, str]:
    """SOFT / MEDIUM / HARD for the absolute dry compounds one race used (see schema).

    The softest used is SOFT and the hardest HARD. Two with one name between them on
    Pirelli's scale are SOFT and HARD; two neighbours are the scale's usual pair
    (`schema.ABSOLUTE_PAIR`: SOFT and MEDIUM for 2018's names, MEDIUM and HARD for C-numbers);
    a single one is MEDIUM. Names of two scales in one race, or more than three, are refused.
    """
    used = sorted({str(n) for n in names if n not in S.WET_COMPOUNDS and n != "UNKNOWN"})
    fits = [k for k, sc in enumerate(S.ABSOLUTE_DRY_COMPOUNDS) if set(used) <= set(sc)]
    if not fits:
        raise LapnetError(f"compounds {', '.join(used)} mix Pirelli's naming schemes in one race")
    scale = S.ABSOLUTE_DRY_COMPOUNDS[fits[0]]
    order = sorted(used, key=scale.index)
    if len(order) > 3:
        raise LapnetError(f"{len(order)} dry compounds in one race ({', '.join(order)}): a race is given three")
    if len(order) == 1:
        return {order[0]: "MEDIUM"}
    if len(order) == 2:
        pair = S.ABSOLUTE_PAIR[fits[0]] if scale.index(order[1]) - scale.index(order[0]) == 1 else ("SOFT", "HARD")
        return dict(zip(order, pair))
    return {c: "SOFT" if i == 0 else "HARD" if i == len(order) - 1 else "MEDIUM" for i, c in enumerate(order)}


def _relabel_races(df: pd.DataFrame, where: str) -> None:
    """Relabel, race by race, the races named with absolute compounds (in place), and say so."""
    absolute = df["Compound"].isin(S.ABSOLUTE_ONLY)
    if not absolute.any():
        return
    for race in df.loc[absolute, "Race"].unique():
        rows = df["Race"] == race
        try:
            mapping = relabel_absolute(df.loc[rows, "Compound"].unique())
        except LapnetError as e:
            raise LapnetError(f"{where}: race '{race}': {e}") from None
        df.loc[rows, "Compound"] = df.loc[rows, "Compound"].map(lambda c: mapping.get(c, c))  # at once, not chained
        warnings.warn(relabel_note(where, str(race), mapping), CompoundNamesWarning, stacklevel=4)


def relabel_note(where: str, race: str, mapping: Mapping[str, str]) -> str:
    """The warning for a race relabelled by `relabel_absolute` (batch commands and `race live` on a
    finished file): the mapping, and with fewer than three dry compounds used, that it is a guess
    and how to give another."""
    said = ", ".join(f"{k} -> {v}" for k, v in mapping.items())
    text = (f"{where}: race '{race}' names its tyres by Pirelli's absolute compounds: relabelled by their order in the "
            f"race ({said}), as they have been named since 2019")
    if len(mapping) < 3:
        text += (f"; with {len(mapping)} of the race's three compounds used, which of the three they were is a guess "
                 "(the one its era mostly left aside taken as the unused one): if it is wrong, rename the Compound "
                 "values in the table to SOFT / MEDIUM / HARD (or write them with `lapnet race clean FILE --out X.csv` "
                 "and edit its Compound column)")
    return text


def _to_status(s: pd.Series, where: str) -> pd.Series:
    """Track status as a string of codes. Numbers (24, 24.0) are turned back into '24'."""

    def one(v: Any, i: int) -> str:
        if _missing(v):
            return ""
        if isinstance(v, (bool, np.bool_)):
            raise _bad(where, "TrackStatus", i, v, "not a track-status code")
        if isinstance(v, (float, np.floating)):
            if not float(v).is_integer():
                raise _bad(where, "TrackStatus", i, v, "not a track-status code")
            v = int(v)
        t = str(v).strip()
        if t.endswith(".0"):
            t = t[:-2]
        if not t or not set(t) <= S.TRACK_STATUS_CODES:
            raise _bad(where, "TrackStatus", i, v, "track status must be FastF1 codes 1-7, e.g. '1' or '24'")
        return t

    return _map_unique(s, one)


def _whole(lo: float, hi: float):
    return lambda v: (v < lo) | (v > hi) | (np.floor(v) != v)


_DURATIONS = ("LapTime", "Sector1Time", "Sector2Time", "Sector3Time")  # the rest of TIME_COLUMNS are session times
# (column, bad(values) -> bool array, why): the sanity bounds of a lap table (schema's MAX_*), applied to
# every row by `read_laps` and to each lap by live mode (`value_problem`), so that both refuse the same
# laps for the same reason; a missing value (NaN) is never refused here (missing cells are the cleaner's)
VALUE_RULES: tuple[tuple[str, Any, str], ...] = (
    ("LapNumber", _whole(1, S.MAX_LAP_NUMBER), f"lap numbers are whole numbers from 1 to {S.MAX_LAP_NUMBER}"),
    ("LapTime", lambda v: v <= 0, "negative or zero lap time"),
    ("LapTime", lambda v: v > S.MAX_LAP_SECONDS, f"a lap time over {S.MAX_LAP_SECONDS / 3600:.0f} hours"),
    *((c, lambda v: v < 0, "negative time") for c in S.TIME_COLUMNS if c != "LapTime"),
    *((c, lambda v: v > S.MAX_LAP_SECONDS, f"a sector time over {S.MAX_LAP_SECONDS / 3600:.0f} hours")
      for c in _DURATIONS if c != "LapTime"),
    *((c, lambda v: v > S.MAX_SESSION_SECONDS, f"a session time over {S.MAX_SESSION_SECONDS / 3600:.0f} hours "
       "(FastF1's session clock starts at the session's start)") for c in S.TIME_COLUMNS if c not in _DURATIONS),
    ("Stint", _whole(1, S.MAX_STINT), f"stints are whole numbers from 1 to {S.MAX_STINT}"),
    ("Position", _whole(1, S.MAX_POSITION), f"positions are whole numbers from 1 to {S.MAX_POSITION}"),
    ("TyreLife", lambda v: (v < 0) | (v > S.MAX_TYRE_LIFE), f"tyre life is 0 to {S.MAX_TYRE_LIFE} laps"),
)


def value_problem(lap: Mapping[str, Any]) -> tuple[str, float, str] | None:
    """The first of `VALUE_RULES` one lap (column -> float, NaN when missing) breaks, as
    (column, value, why); None when it breaks none. Live mode skips such a lap; `read_laps`
    refuses a table holding one (`_check_values`, with the same words)."""
    for col, bad, why in VALUE_RULES:
        v = lap.get(col)
        if isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_)):
            v = float(v)
            if not math.isnan(v) and bool(bad(np.float64(v))):
                return col, v, why
    return None


def _check_values(df: pd.DataFrame, where: str) -> None:
    for col, bad, why in VALUE_RULES:
        if col not in df.columns:
            continue
        v = df[col].to_numpy(dtype=float)
        hit = bad(v) & ~np.isnan(v)
        if hit.any():
            i = int(np.flatnonzero(hit)[0])
            raise _bad(where, col, i, v[i], why)


def _check_duplicates(df: pd.DataFrame, where: str, *, race_from_column: bool) -> None:
    keyed = df[df["LapNumber"].notna()]
    dup = keyed.duplicated(["Race", "Driver", "LapNumber"], keep=False)
    if not dup.any():
        return
    d = keyed[dup]
    # Several races concatenated: the lap counter restarts, so laps 1 and 2 repeat for a driver.
    counts = d.groupby(["Race", "Driver", "LapNumber"]).size()
    restarts = counts.reset_index(name="n").query("LapNumber <= 2 and n > 1").groupby(["Race", "Driver"]).size()
    if (restarts >= 2).any():
        race, driver = restarts[restarts >= 2].index[0]
        how = (
            f"race label '{race}' holds several races"
            if race_from_column
            else "several races are mixed in one table without a Race column"
        )
        raise LapnetError(
            f"{where}: {how} (driver {driver} has lap 1 more than once); "
            "add a Race column that tells them apart (or FastF1's EventName, with a Year column for several "
            "seasons) or split the file into one file per race"
        )
    first = d.iloc[0]
    same = d[(d["Race"] == first["Race"]) & (d["Driver"] == first["Driver"]) & (d["LapNumber"] == first["LapNumber"])]
    at = [_row(where, int(p)) for p in same.index[:2]]  # df's index is the input position here
    raise LapnetError(
        f"{where}: duplicate lap: driver {first['Driver']} lap {int(first['LapNumber'])} of race '{first['Race']}' "
        f"appears more than once ({at[0].split()[0]}s {at[0].split()[1]} and {at[1].split()[1]})"
    )


def _warn_if_not_race(df: pd.DataFrame, where: str, *, had_position: bool) -> None:
    for race, g in df.groupby("Race", sort=False):
        if len(g) < 20:  # a few laps (a live stream, a test) look like anything
            continue
        reasons = []
        if had_position and g["Position"].isna().all():
            reasons.append("no positions")
        pit_share = float(np.isfinite(g["PitInTime"].to_numpy()).mean())
        # A race has 1-3 stops in 50-70 laps (< 6 % of laps); practice and qualifying
        # runs end in the pit lane every few laps.
        if pit_share > 0.12:
            reasons.append(f"{pit_share:.0%} of laps end in the pits")
        if reasons:
            warnings.warn(
                f"{where}: race '{race}' looks like a practice or qualifying session, not a race ({'; '.join(reasons)})",
                NotARaceWarning,
                stacklevel=3,
            )
