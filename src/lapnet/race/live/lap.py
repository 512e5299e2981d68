"""Live mode's laps: one CSV line of a feed read into one lap, with its clean masks.

`LiveRace.parse` reads the usual FastF1 strings through `_fast_lap` (the columns live mode uses,
parsed as `read_laps` would, no pandas) and leaves anything unusual to `read_laps`; `lap_masks`
gives one lap the mask columns of `lapnet.race.clean`. A lap that cannot be used raises
`SkipLap`: warned, and the stream goes on.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.io import (FALSE_STRINGS, MISSING_STRINGS, TRUE_STRINGS, CompoundNamesWarning, car_number,
                            parse_duration, value_problem)


class SkipLap(LapnetError):
    """This lap cannot be used (out of order, duplicate, unreadable, a generated row batch drops): warn and go on.

    `kind` names the routine skips of a finished race replayed, which `follow_race` counts
    instead of printing one line each: "after_flag" (FastF1's generated rows after the
    chequered flag) and "non_starter" (those of a driver without a timed lap); None otherwise.
    `driver` is the lap's driver when it was read (the count names them), else None.
    """

    def __init__(self, message: str, kind: str | None = None, driver: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.driver = driver


def lap_masks(lap: dict) -> dict:
    """The mask columns of `lapnet.race.clean` for ONE lap, all but Restart, which needs the
    driver's previous laps (`LiveRace.push` sets it).

    Mirrors `clean.clean_laps` row by row; the live-equals-batch test keeps the two equal.
    """
    status = str(lap.get("TrackStatus") or "")
    lap_time = lap.get("LapTime")
    has_time = lap_time is not None and math.isfinite(float(lap_time))
    in_lap = _finite(lap.get("PitInTime"))
    out_lap = _finite(lap.get("PitOutTime")) or lap.get("LapNumber") == 1
    neutralised = bool(S.NEUTRALISED_CODES.intersection(status))
    accurate = bool(lap.get("IsAccurate")) and not bool(lap.get("Deleted"))
    wet = lap.get("Compound") in S.WET_COMPOUNDS
    return {
        "InLap": in_lap, "OutLap": out_lap, "Neutralised": neutralised, "Yellow": S.YELLOW_CODE in status,
        "HasTime": has_time, "Accurate": accurate, "Green": not neutralised, "Wet": wet,
        "Scored": has_time and accurate and not neutralised and not in_lap and not out_lap and not wet,
    }


_LAP_MASKS = ("InLap", "OutLap", "Neutralised", "Yellow", "HasTime", "Accurate", "Green", "Wet", "Scored")  # lap_masks' keys


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


_FAST_TIMES = ("Time", "LapTime", "PitOutTime", "PitInTime", "Sector1Time", "Sector2Time", "Sector3Time")
_OTHER_TIMES = tuple(c for c in S.TIME_COLUMNS if c not in _FAST_TIMES)  # checked, not used


def _live_compound(raw: Any, relabel: dict[str, str] | None = None) -> str:
    """The compound as `read_laps` names it, except Pirelli's absolute names (2018's ULTRASOFT,
    C1-C5): where they stand among the race's three cannot be known from a stream, so they
    are taken as an unknown dry compound (batch commands relabel them by the whole race).
    `relabel`: the race's own relabelling (`io.relabel_absolute`), known when a finished file is
    replayed (`_file_relabel`): applied as batch commands apply it."""
    comp = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw).strip().upper()
    comp = S.COMPOUND_ALIASES.get(comp, comp)
    if relabel and comp in relabel:
        return relabel[comp]
    if comp in S.ABSOLUTE_ONLY:
        warnings.warn(f"live: compound {comp} is one of Pirelli's absolute names, whose place among the race's three "
                      "a stream cannot know: taken as an unknown dry compound", CompoundNamesWarning, stacklevel=2)
        return "UNKNOWN"
    return comp


def _fast_lap(row: dict[str, str], relabel: dict[str, str] | None = None) -> dict | None:
    """The columns live mode uses, parsed as `read_laps` would; None when anything is unusual.
    `relabel`: absolute compound names -> SOFT / MEDIUM / HARD (`_live_compound`)."""
    try:
        lap: dict[str, Any] = {c: parse_duration(row.get(c, "")) for c in _FAST_TIMES}
        for c in S.FLOAT_COLUMNS:
            v = row.get(c, "").strip()
            lap[c] = math.nan if v.lower() in MISSING_STRINGS else float(v)
        for c, default in S.BOOL_DEFAULTS.items():
            if c not in row:
                lap[c] = default
                continue
            v = row[c].strip().lower()
            lap[c] = (S.BOOL_MISSING_CELL[c] if v in MISSING_STRINGS else True if v in TRUE_STRINGS
                      else False if v in FALSE_STRINGS else None)
            if lap[c] is None:
                return None
    except ValueError:
        return None
    comp = _live_compound(row.get("Compound", ""), relabel)
    status = row.get("TrackStatus", "").strip()
    status = "" if status.lower() in MISSING_STRINGS else status
    driver = row.get("Driver", "").strip()
    if (comp not in S.COMPOUNDS or not set(status) <= S.TRACK_STATUS_CODES or not driver
            or not (math.isfinite(lap["LapNumber"]) and lap["LapNumber"] >= 1 and lap["LapNumber"].is_integer())
            or any(lap[c] < 0 for c in _FAST_TIMES if math.isfinite(lap[c]))
            or any(math.isinf(lap[c]) for c in (*_FAST_TIMES, *S.FLOAT_COLUMNS))):
        return None  # let read_laps name the problem
    try:  # the sanity bounds batch validation applies (`io.VALUE_RULES`), on every time column the row has
        checked = {**lap, **{c: parse_duration(row[c]) for c in _OTHER_TIMES if c in row}}
    except ValueError:
        return None
    if value_problem(checked) is not None:
        return None  # read_laps names it, in batch's words
    team = row.get("Team", "").strip()
    lap.update(Driver=driver, Compound=comp, TrackStatus=status, Race=row.get("Race", "live").strip() or "live",
               Team=None if team.lower() in MISSING_STRINGS else team,  # teammates' stops are a pit-call feature
               DriverNumber=car_number(row.get("DriverNumber")))
    return lap
