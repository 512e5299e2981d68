"""Live mode: one lap in, one prediction out, each driver's recurrent state carried.

    live = LiveRace(load_run("runs/race"), total_laps=57)
    for line in csv_lines:                  # laps in the order they end (session Time)
        pred = live.push_csv_line(line)     # a dict, or raises SkipLap (warn and go on)

    follow_race("runs/race", "laps.csv")    # `lapnet race live`: a feed, a growing or a finished file

A lap costs one recurrent step for its driver: the driver's hidden state and the race's
feature state (reference lap, the stint's Scored laps, gaps on the road) are kept between laps, so the
stream is never replayed. Features come from the same `RaceFeaturizer` as batch mode, the
net is causal, and FastF1's generated rows are kept or dropped as batch cleaning does (a car
that stopped mid-race: kept; after the chequered flag or of a driver without a timed lap:
skipped), so a stream of a race's laps in session-time order, given the race's length, gives
`predict_race`'s numbers on the whole file up to the rounding of the output: seconds and
probabilities are rounded to 4 decimals, so the two differ by at most 5e-5 (tests check this
on real races). Without the length, the stream gives those of `predict_race(...,
race_length="estimate")` (the rows after the flag told by the field's silence,
`LiveRace._dropped_generated`: Monza and Singapore 2023 are tests).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic as _monotonic  # not through `time`, which tests replace to stop a --follow
from typing import IO, Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.io import (FALSE_STRINGS, MISSING_STRINGS, TRUE_STRINGS, CompoundNamesWarning, MissingContextWarning,
                            car_number, missing_context, parse_duration, race_match, value_problem)
from lapnet.race.features import PHASES, RaceFeaturizer, num
from lapnet.race.schema import WET_COMPOUNDS
from lapnet.race.models import INTERVAL90
from lapnet.race.inputs import SLOW_SCORED, SPRINT_SECONDS, sprint_note
from lapnet.race.runs import RaceRun, forecast_source, live_phase, load_run, pit_window_threshold
from lapnet.race.whatif import CHOICES, live_record, rejoin_live, require_fresh_start, tyre_wear, what_if

_TEXT_COLS = {c: str for c in ("TrackStatus", "Driver", "Team", "Compound", "Race", "Phase", "DriverNumber")}


ORDER_SLACK = 5.0  # seconds: a lap ending this much before one already read is out of session order
# a lap ending more than this before one already processed came late (FastF1's Times are whole
# milliseconds): said once (`LiveRace._admit`), as laps out of order by less than ORDER_SLACK
# move the calls of the laps around them too; `race live --reorder SECONDS` puts them in order
TIME_ROUNDING = 0.001
MAX_REORDER = 600.0  # seconds: --reorder holds a lap at most this long (ten minutes: no feed is that late)
# a lap number more than LAP_MARGIN beyond the field's next lap (its highest so far + 1) is taken
# for a corrupted LapNumber (the leader is at most one lap ahead of himself), unless at least
# MIN_LAP_SECONDS a lap have passed since the field reached its highest lap (a feed that lost laps)
LAP_MARGIN = 2
MIN_LAP_SECONDS = 50.0
# a lap ending more than TIME_JUMP seconds of session Time after the latest lap read is taken for a
# corrupted Time (the longest wait between two laps ending on the 15 real races of 2023 is 1491 s,
# Sao Paulo's red flag), unless another driver's lap refused so ends within JUMP_AGREE seconds of it
# (the field resumed after a longer suspension: taken)
TIME_JUMP = 1800.0
JUMP_AGREE = 300.0
# without a race length, an untimed FastF1 row after the flag: no car has completed a timed lap
# for SILENCE_LAPS reference laps, the last one at racing pace (the field has finished)
SILENCE_LAPS = 0.75
SLOW_LAP = SLOW_SCORED  # a Scored lap this many reference laps long is warned (a timing error?), as eval and predict warn
# a feed runs into another race: after the field passed lap SWITCH_AFTER, most drivers seen go
# back to lap 1-2, or their session Time goes back by more than SWITCH_BACK seconds
SWITCH_AFTER = 5
SWITCH_BACK = 300.0


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


_PIT_NOW_NAMES = {"stop_cost": "stop_cost_s", "in_out": "in_out_s"}  # live_record's names -> `race pit-now --json`'s


def _pit_now_names(rec: dict | None) -> dict | None:
    """`whatif.live_record`'s field with the names `race pit-now --json` gives the same numbers
    (stop_cost_s, in_out_s), in the same order."""
    return None if rec is None else {_PIT_NOW_NAMES.get(k, k): v for k, v in rec.items()}


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _same(a: Any, b: Any) -> bool:
    """Two cells of a lap as read are equal (NaN equals NaN, None equals NaN)."""
    if (a is None or isinstance(a, float) and math.isnan(a)) and (b is None or isinstance(b, float) and math.isnan(b)):
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    """Session Time as FastF1's clock reads: 1:50:40.622 (days as hours: 73:15:28.878)."""
    h, rest = divmod(abs(seconds), 3600)
    return f"{'-' if seconds < 0 else ''}{h:.0f}:{rest // 60:02.0f}:{rest % 60:06.3f}"


def _shown(v: Any) -> str:
    if v is None or isinstance(v, float) and math.isnan(v):
        return "missing"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v) if v != "" else "''"


def _count(v: Any) -> int | float | None:
    """A counter of the lap row (Position, TyreLife, Stint) for JSON: a whole number as an int,
    None when missing."""
    if not _finite(v):
        return None
    v = float(v)
    return int(v) if v.is_integer() else round(v, 3)


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


@dataclass
class _DriverLive:
    last_lap: float = 0.0
    state: Any = None  # the recurrent state after this driver's last lap
    tag_state: Any = None  # the live phase tagger's, when the run has one
    restarting: bool = False  # a red flag was shown and the driver has no timed lap since (clean.Restart)
    timed: bool = False  # the driver has a timed lap (batch drops drivers without one)
    last_row: dict = field(default_factory=dict)  # the last lap as read (a re-send is compared with it)
    read: dict = field(default_factory=dict)  # lap number -> the lap as read, each lap stepped (a late re-send is named)


@dataclass
class LiveRace:
    """A race followed lap by lap with a trained run (see the module docstring).

    Args:
        run: a loaded run (`load_run`), or a run directory (loaded here).
        total_laps: the race's scheduled length (for race-fraction features), a whole
            number >= 1, or None to estimate it from the race's reference lap as the laps
            come in (`features.estimate_race_laps`); every prediction says which length it used.
        pit_now: add "pit_now" to every prediction: what if the driver pits at the end of the
            next lap (`lapnet.race.whatif.live_record`, with "rejoin": `whatif.rejoin_live`;
            null where none is made). Needs a run with a FreshStart.

    Raises:
        LapnetError: `total_laps` neither None nor a whole number >= 1; `run` neither a
            RaceRun nor a path (`load_run`'s errors for a path that is not a run); `pit_now`
            with a run without a FreshStart.
    """

    run: RaceRun | str | Path
    total_laps: int | None
    header: list[str] | None = None
    drivers: dict[str, _DriverLive] = field(default_factory=dict)
    first_lap: float | None = None  # the lap number of the first lap pushed (1 unless the feed joined mid-race)
    # the field has crossed the line once (a driver's second lap came): the drivers seen by
    # then are the grid, and a driver first seen later joins the race (with a notice)
    grid_closed: bool = False
    first_pass: dict[str, float] = field(default_factory=dict)  # driver -> Position on the grid's lap (NaN: none)
    number_of: dict[str, str] = field(default_factory=dict)  # driver -> DriverNumber, from the rows that carry one
    # what the stream does wrong without a lap being skipped (the CLI prints and clears the
    # list): laps out of session order and a race longer than `total_laps` (once each), a feed
    # that starts after lap 1 (once), a driver first seen after the grid (once per driver), a
    # gap in a driver's laps (once per gap)
    notices: list[str] = field(default_factory=list)
    latest_end: float = -math.inf
    order_warned: bool = False
    # laps that ended more than TIME_ROUNDING before a lap already processed: how many, by how much at
    # most, and whether it was said (once; `follow_race` gives the count when the stream ends)
    late_laps: int = 0
    late_most: float = 0.0
    late_warned: bool = False
    reorder: float = 0.0  # the window `follow_race` puts laps in Time order within (--reorder; said in that notice)
    length_warned: bool = False
    sprint_warned: bool = False
    last_timed_lap: float = 0.0  # the highest lap number with a time so far
    leader: str = ""  # the first driver to complete that lap with a time
    flag_time: float = math.inf  # session Time the first car finished lap `total_laps` (the chequered flag)
    top_lap: float = 0.0  # the highest lap number of a lap admitted (the field's lap)
    top_time: float = math.nan  # session Time of the first lap admitted with that number
    # driver -> (the lap refused as implausibly far ahead, the field's highest lap then)
    far_ahead: dict[str, tuple[float, float]] = field(default_factory=dict)
    far_later: dict[str, float] = field(default_factory=dict)  # driver -> the Time refused as implausibly far later
    last_timed_end: float = -math.inf  # session Time of the latest timed lap
    last_timed_neutral: bool = False  # that lap was neutralised (SC, VSC, red flag)
    pit_now: bool = False  # add the pit-now what-if to every prediction
    # absolute compound names -> SOFT / MEDIUM / HARD, for a finished file read whole (`_file_relabel`);
    # empty: a stream, whose absolute names are taken as unknown dry compounds (`_live_compound`)
    relabel: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.total_laps is not None:
            if not isinstance(self.total_laps, (int, np.integer)) or isinstance(self.total_laps, (bool, np.bool_)):
                raise LapnetError(f"total_laps must be None or a whole number of laps, got {self.total_laps!r}")
            if self.total_laps < 1:
                raise LapnetError(f"total_laps must be at least 1, got {self.total_laps}")
            self.total_laps = int(self.total_laps)
        if isinstance(self.run, (str, Path)):
            self.run = load_run(self.run)
        elif not isinstance(self.run, RaceRun):
            raise LapnetError(f"run must be a run directory or a loaded run (load_run), got {type(self.run).__name__}")
        self.featurizer = RaceFeaturizer(self.total_laps)
        self.model = self.run.model.eval()
        self.z90 = INTERVAL90[self.model.cfg.head]  # the 90% half-width in units of the head's scale
        # the live phase call: the run's live tagger (phases learnt from calibrated simulated races),
        # else the forecaster's own phase head when it learnt phases, else none
        self.tagger = self.run.live_tagger.eval() if self.run.live_tagger is not None else None
        self.pit_window_threshold = pit_window_threshold(self.run)  # the pit call says pit_window (`live_phase`)
        self.phase_trained = self.tagger is not None or bool(self.run.config.get("phase_trained"))
        if self.pit_now:
            require_fresh_start(self.model)
        self.tyre_wear = tyre_wear(self.run.config)  # pit-now's carry to the flag (None: a run without it)

    # -- input --------------------------------------------------------------------------

    def set_header(self, line: str) -> None:
        """The CSV header (FastF1 column names); a UTF-8 byte-order mark before it is dropped."""
        try:
            cols = next(csv.reader([line.lstrip("\ufeff")]), [])
        except csv.Error as e:  # e.g. a bare carriage return inside the line
            raise LapnetError(f"live: unreadable CSV header ({e})") from None
        named = [c.strip() for c in cols if c.strip()]
        dup = next((c for i, c in enumerate(named) if c in named[:i]), None)
        if dup is not None:  # its cells could not be told apart: every lap would be refused, one by one
            raise LapnetError(f"live: header: column '{dup}' appears twice (line 1 names the columns once each)")
        missing = [c for c in S.REQUIRED_COLUMNS if c not in cols]
        if missing:
            raise LapnetError(f"live: header lacks required column(s) {', '.join(missing)}")
        for remark in missing_context(cols):
            warnings.warn(f"live: {remark}", MissingContextWarning, stacklevel=2)
        self.header = cols

    def parse(self, line: str) -> dict:
        """One CSV line -> one lap in lapnet's schema.

        The usual FastF1 strings take a fast path (pandas costs ~100x more per row than the
        model step); anything unusual goes through `read_laps`, the batch reader, which
        parses it or names the problem. A line with more or fewer fields than the header is
        refused (SkipLap): its cells cannot be matched to the columns.
        """
        if self.header is None:
            raise LapnetError("live: no header line before the first lap")
        try:
            values = next(csv.reader([line]), [])
        except csv.Error as e:  # e.g. a bare carriage return inside the line
            raise SkipLap(f"unreadable CSV line ({e})") from None
        if len(values) != len(self.header):
            raise SkipLap(f"{len(values)} field{'s' if len(values) != 1 else ''}, the header has {len(self.header)}")
        lap = _fast_lap(dict(zip(self.header, values)), self.relabel)
        if lap is not None:
            lap.update(lap_masks(lap))
            return lap
        return self._parse_slow(line)

    def _parse_slow(self, line: str) -> dict:
        from lapnet.race.io import read_laps

        try:
            frame = pd.read_csv(io.StringIO(",".join(self.header) + "\n" + line + "\n"), dtype=_TEXT_COLS)
        except (pd.errors.ParserError, ValueError) as e:
            raise SkipLap(f"unreadable line ({' '.join(str(e).split())[:80]})") from None
        if len(frame) != 1:
            raise SkipLap("not exactly one lap on the line")
        if "Compound" in frame.columns:  # before read_laps, which would relabel an absolute name by this lap alone
            frame["Compound"] = [_live_compound(frame["Compound"].iloc[0], self.relabel)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a single lap looks like anything: no not-a-race warnings here
                df = read_laps(frame, race=str(frame["Race"].iloc[0]) if "Race" in frame.columns else "live")
        except LapnetError as e:  # "row 1" would mean nothing in a stream: the CLI names the input line
            raise SkipLap(re.sub(r",? row 1(?=:)", "", str(e).replace("DataFrame: ", ""))) from None
        lap = df.iloc[0].to_dict()
        lap.update(lap_masks(lap))
        return lap

    # -- one step -----------------------------------------------------------------------

    def push(self, lap: dict) -> dict:
        """Advance the lap's driver by one step and return its prediction (JSON-able).

        Args:
            lap: one lap in lapnet's schema, as a row of `read_laps` (`row.to_dict()`) or
                `parse` gives it: Driver and LapNumber; LapTime and Time in seconds (NaN when
                missing); Stint, TyreLife, Position floats; Compound and TrackStatus strings;
                PitInTime / PitOutTime (seconds, NaN when not a pit lap), IsAccurate, Deleted,
                FreshTyre, FastF1Generated and Team as `read_laps` fills them. The mask columns
                of `lapnet.race.clean` (HasTime, Scored, InLap, ...) may be given; those
                missing are computed with `lap_masks`. Restart is always set here (it needs
                the driver's previous laps). The dict is not changed: push works on a copy.
                Laps must come in the order they end (session Time, `features.session_order`).

        A driver first seen after the grid (after lap 1, or once the field has crossed the
        line after a feed joined mid-race) joins with a fresh state, as batch commands start
        a driver at their first lap in the table; a gap in a driver's laps is stepped over.
        Both are said in `notices`, as is a feed that starts after lap 1, and a Scored lap
        more than SLOW_LAP reference laps long (a timing error FastF1 called accurate: it
        is used, as batch uses it).

        The prediction carries the lap's own facts as read (null when missing): its session
        Time in seconds ("time"), "track_status", "position", "compound", "tyre_life", "stint".
        Its keys are the same on every lap (a number there is none of is None, in its shape:
        "expected_next10" None for a run without an ExpectedGap, ten Nones without a forecast);
        "pit_now" with `pit_now`, named as `race pit-now --json` names the same fields.
        A lap that ended more than TIME_ROUNDING before a lap already pushed is said once in
        `notices` and counted (`late_laps`, `late_most`).

        Raises:
            SkipLap: a duplicate (or a changed re-send, of the driver's last lap or an earlier one
                read) or out-of-order lap, a lap number implausibly far ahead of the field, a
                generated row batch cleaning drops.
        """
        lap = dict(lap)  # the caller's dict stays as it was (Restart and Scored are set below)
        if any(k not in lap for k in _LAP_MASKS):
            lap = {**lap_masks(lap), **lap}  # a read_laps row: the masks clean_laps would add, row by row
        drv, n, st = self._admit(lap)
        t_end = num(lap.get("Time"))
        # the one mask that needs the driver's history (clean._restart_laps): laps after a red flag
        # up to and including the first timed one are a restart, like lap 1
        if S.RED_CODE in str(lap.get("TrackStatus") or ""):
            st.restarting, lap["Restart"] = True, False
        else:
            lap["Restart"] = st.restarting
            if st.restarting:
                lap["Scored"] = False
                st.restarting = not lap.get("HasTime")
        f = self.featurizer.step(lap)
        x = torch.from_numpy(f.x)[None, None, :]  # (1, 1, D)
        with torch.no_grad():
            out, st.state = self.model(x, state=st.state)  # (1, 1, ...)
            pit = float(torch.sigmoid(out["pit"][0, 0]))
            phase = PHASES[int(out["phase"][0, 0].argmax())] if self.phase_trained else None
            if self.tagger is not None:
                tagged, st.tag_state = self.tagger(x, state=st.tag_state)
                probs = torch.softmax(tagged["phase"][0, 0], -1).numpy()  # (3,)
                phase = PHASES[int(live_phase(probs, np.asarray(pit, np.float32), self.pit_window_threshold)[1])]
        st.last_lap = n
        st.last_row = st.read[n] = {k: v for k, v in lap.items() if k not in _LAP_MASKS and k != "Restart"}
        if lap.get("HasTime"):  # what tells a generated row after the flag (`_dropped_generated`)
            st.timed = True
            if n > self.last_timed_lap:
                self.last_timed_lap, self.leader = n, drv
            if self.total_laps is not None and n >= self.total_laps and math.isfinite(t_end):
                self.flag_time = min(self.flag_time, t_end)  # the first car to finish the race: the chequered flag
            if math.isfinite(t_end) and t_end >= self.last_timed_end:
                self.last_timed_end, self.last_timed_neutral = t_end, bool(lap.get("Neutralised"))
        mean = out["mean"][0, 0].numpy().astype(float)  # (K,)
        sigma = np.exp(out["log_sigma"][0, 0].numpy().astype(float))
        start = f.base if math.isfinite(f.base) else f.ref  # as `to_seconds` does
        sec = start + f.ref * mean / 100.0
        sig = f.ref * sigma / 100.0
        lt = lap.get("LapTime")
        if lap.get("Scored") and _finite(lt) and math.isfinite(f.ref) and float(lt) > SLOW_LAP * f.ref:
            self.notices.append(f"{drv} lap {n:g}: lap time {float(lt):.3f} s is {float(lt) / f.ref:.1f} times the race's "
                                f"reference lap ({f.ref:.3f} s), yet IsAccurate (Scored): a timing error? it is used as "
                                "batch commands use it (the stint's forecasts start from it)")
        status = lap.get("TrackStatus")
        comp = lap.get("Compound")
        rec = {
            "driver": drv,
            "lap": int(n),
            "lap_time": round(float(lt), 4) if _finite(lt) else None,
            "scored": bool(lap.get("Scored")),
            "time": round(float(t_end), 3) if math.isfinite(t_end) else None,
            "track_status": (status.strip() or None) if isinstance(status, str) else None,
            "position": _count(lap.get("Position")),
            "compound": comp if isinstance(comp, str) and comp and comp != "UNKNOWN" else None,
            "tyre_life": _count(lap.get("TyreLife")),
            "stint": _count(lap.get("Stint")),
            "forecast": {f"h{h}": round(float(sec[h - 1]), 4) for h in (1, 5, 10)},
            "forecast_next10": [round(float(v), 4) for v in sec],
            "interval90_h1": [round(float(sec[0] - self.z90 * sig[0]), 4), round(float(sec[0] + self.z90 * sig[0]), 4)],
            "forecast_from": forecast_source(math.isfinite(f.base), self.model, float(sec[0]),
                                             str(comp).upper() in WET_COMPOUNDS),
            "pit_within_3": round(pit, 4),
            "phase": phase,
            "race_laps": self.featurizer.total_laps,
            "race_laps_estimated": self.featurizer.estimated,
        }
        rec["expected_next10"] = None  # the key is always there: null when the run did not keep its ExpectedGap
        if "expected" in out:  # the mean lap (a stint's time is a sum of laps: plan with these)
            exp_sec = start + f.ref * out["expected"][0, 0].numpy().astype(float) / 100.0
            rec["expected_next10"] = [round(float(v), 4) for v in exp_sec]
        if self.pit_now:  # what if he pits at the end of the next lap: one more linear model on this lap's vector
            sprint = self._sprint(f.ref)  # no two-compound rule: tyres_used None takes it as met
            what = what_if(self.model, f.x[None, None], np.array([[n]], float), np.array([[f.ref]]),
                           np.array([[f.stop_loss]]), np.array([[f.stop_loss_neutral]]), sec[None, None], np.ones((1, 1), bool),
                           CHOICES, np.array([[f.stop_stops]]), None if sprint else np.array([[f.tyres_used]]),
                           self.tyre_wear)
            rec["pit_now"] = _pit_now_names(live_record(what, int(n)))
            if rec["pit_now"] is not None:
                rec["pit_now"]["sprint"] = sprint
            if rec["pit_now"] is not None:  # where he would rejoin, as the gaps behind stood after lap n-1
                rec["pit_now"]["rejoin"] = rejoin_live(self.featurizer.lap_ends, drv, int(n), t_end,
                                                       float(what.stop_loss[0, 0]), f.x)
        return rec

    def _sprint(self, ref: float) -> bool:
        """The race is sprint-length (`pipeline.sprint_races`: its length times the reference lap
        under SPRINT_SECONDS), judged on a length given or read from a finished file (an estimated
        length is a Grand Prix's by construction); said once, as a notice, the first time."""
        fz = self.featurizer
        if fz.estimated or not (math.isfinite(ref) and ref > 0) or fz.total_laps * ref >= SPRINT_SECONDS:
            return False
        if not self.sprint_warned:
            self.sprint_warned = True
            self.notices.append(sprint_note(None, int(fz.total_laps), fz.total_laps * ref / 60.0)
                                + " (pit-now applies no two-compound rule)")
        return True

    def _admit(self, lap: dict) -> tuple[str, float, _DriverLive]:
        """The lap's driver, lap number and driver state, once the lap is known to be usable.

        Everything a lap says about the race besides its features is settled here, before
        the model step, so that a skipped lap changes nothing but the grid (a non-starter's
        row shows the car was there) and the car numbers: the grid, a feed joining mid-race,
        a driver joining late, a gap, laps out of session order, a race longer than
        `total_laps` (said in `notices`). A lap number implausibly far ahead
        (`_plausible`) changes nothing at all.

        Raises:
            SkipLap: no driver or lap number, a lap number implausibly far ahead, a duplicate
                (or a changed re-send) or out-of-order lap, a generated row batch cleaning
                drops (with its `kind`).
        """
        drv, n = str(lap.get("Driver") or ""), num(lap.get("LapNumber"))
        if not drv or drv == "nan":
            raise SkipLap("lap without a driver")
        if not math.isfinite(n):
            raise SkipLap(f"{drv}: lap without a lap number", driver=drv)
        self._plausible(drv, n, num(lap.get("Time")))
        number = car_number(lap.get("DriverNumber"))
        if number is not None:
            self.number_of[drv] = number
        if not self.grid_closed and drv not in self.first_pass:  # a non-starter's row counts: the grid had the car
            self.first_pass[drv] = num(lap.get("Position"))
        if lap.get("FastF1Generated") and not lap.get("HasTime"):
            dropped = self._dropped_generated(drv, n, num(lap.get("Time")))
            if dropped is not None:
                why, kind = dropped
                raise SkipLap(f"{drv} lap {n:g}: a row FastF1 generated, with no lap time, {why}", kind=kind, driver=drv)
        if self.first_lap is None:
            self.first_lap = n
            if n > 1:
                self.notices.append(
                    f"the feed starts at lap {n:g}, not lap 1 (it joined the race under way): what came before is "
                    "unknown to the model (each driver's earlier laps, stops and tyres used; the race's reference "
                    "pace comes from the laps seen), beyond what each lap's row carries (Stint, TyreLife, Position)")
        st = self.drivers.get(drv)
        if st is None:
            if n > 1 and (self.first_lap == 1 or self.grid_closed):
                before = f" (laps 1-{n - 1:g} missing or skipped)" if n > 2 else " (lap 1 missing or skipped)"
                self.notices.append(
                    f"{drv} first seen at lap {n:g}{before if self.first_lap == 1 else ''}: joins the race from "
                    f"here; its laps, stops and tyres before lap {n:g} are unknown to the model, beyond what the "
                    "lap's row carries (Stint, TyreLife, Position)")
            st = self.drivers[drv] = _DriverLive()
        elif n == st.last_lap:
            changed = self._changes(st.last_row, lap)
            if changed:
                raise SkipLap(f"{drv} lap {n:g}: a changed re-send of lap {n:g}, ignored ({changed}; the lap as first "
                              "read stands: a step cannot be taken back)", driver=drv)
            raise SkipLap(f"{drv} lap {n:g}: duplicate lap", driver=drv)
        elif n < st.last_lap:
            if n in st.read:  # a re-send of an earlier lap (FastF1 fills a missing LapTime later), not a late lap
                changed = self._changes(st.read[n], lap)
                if changed:
                    raise SkipLap(f"{drv} lap {n:g}: a changed re-send of lap {n:g}, ignored ({changed}; the lap as first "
                                  f"read stands: a step cannot be taken back, and {drv}'s lap {st.last_lap:g} has been "
                                  "read since)", driver=drv)
                raise SkipLap(f"{drv} lap {n:g}: duplicate lap (a re-send of lap {n:g}, after lap {st.last_lap:g})",
                              driver=drv)
            raise SkipLap(f"{drv} lap {n:g}: out of order (already at lap {st.last_lap:g})", driver=drv)
        else:
            self.grid_closed = True  # a driver's next lap: every car running has crossed the line since the first
            if n > st.last_lap + 1:
                gap = f"lap {st.last_lap + 1:g}" if n == st.last_lap + 2 else f"laps {st.last_lap + 1:g}-{n - 1:g}"
                self.notices.append(
                    f"{drv} {gap} missing or skipped (lap {n:g} follows lap {st.last_lap:g}): stepped over; a stop or a "
                    "stint's laps in the gap are unknown to the model, beyond what the next row carries "
                    "(Stint, TyreLife)")
        t_end = num(lap.get("Time"))
        if math.isfinite(t_end):
            behind = self.latest_end - t_end
            if behind > TIME_ROUNDING:
                self.late_laps += 1
                self.late_most = max(self.late_most, behind)
                if behind <= ORDER_SLACK and not (self.late_warned or self.order_warned):
                    self.late_warned = True
                    self.notices.append(self._late_notice(drv, n, behind))
            if t_end < self.latest_end - ORDER_SLACK and not self.order_warned:
                self.order_warned = True
                self.notices.append(f"{drv} lap {n:g} ended at {t_end:.0f} s of the session, before a lap already read "
                                      f"({self.latest_end:.0f} s): laps must come in the order they end (session Time), "
                                      "else each lap reads the field at another moment; sort the feed by Time (a "
                                      "finished FILE given as an argument is sorted for you)")
            self.latest_end = max(self.latest_end, t_end)
        if self.total_laps is not None and n > self.total_laps and not self.length_warned:
            self.length_warned = True
            self.notices.append(f"{drv} lap {n:g} is past the race length given ({self.total_laps} laps): "
                                "the race-fraction features now count the laps seen instead")
        if n > self.top_lap or (n == self.top_lap and not math.isfinite(self.top_time)):
            self.top_lap, self.top_time = n, t_end
        return drv, n, st

    def _late_notice(self, drv: str, n: float, behind: float) -> str:
        """What a lap that ended a little before a lap already processed is told (once)."""
        said = (f"{drv} lap {n:g} ended {behind:.3f} s of session Time before a lap already processed: each lap reads "
                "the field (gaps on the road, its pace, who pitted) as the laps before it left it, so laps a little out "
                "of the order they end move the calls of the laps around them (nothing is skipped)")
        if self.reorder > 0:
            return (f"{said}; it came more than --reorder {self.reorder:g} s of the feed's Time late: a larger --reorder "
                    "holds laps longer (said once; a count when the stream ends)")
        return (f"{said}; --reorder SECONDS (a little more than the feed's worst lag) holds each lap until the feed's "
                "Time is SECONDS past its own and processes them in Time order (said once; a count when the stream ends)")

    def _plausible(self, drv: str, n: float, t_end: float) -> None:
        """Refuse (SkipLap, nothing changed) a lap number implausibly far ahead: a corrupted
        LapNumber (a lap 16 sent as 61) would otherwise be taken as a gap, every later lap of
        the driver refused as out of order, and the race's length pushed to it.

        The field's laps first (`_field_plausible`), then the driver's own: a lap number k laps
        after the driver's last one read, ending less than k * MIN_LAP_SECONDS of session Time
        after it, cannot have been run (a lap 16 sent as 18, within the field's margin).
        """
        self._field_plausible(drv, n, t_end)
        self._time_plausible(drv, n, t_end)
        st = self.drivers.get(drv)
        if st is not None and n > st.last_lap + 1 and math.isfinite(t_end):
            prev = num(st.last_row.get("Time"))
            if math.isfinite(prev) and t_end - prev < (n - st.last_lap) * MIN_LAP_SECONDS:
                raise SkipLap(f"{drv} lap {n:g}: implausible ({n - st.last_lap:g} laps after lap {st.last_lap:g} in "
                              f"{t_end - prev:.0f} s of session Time, at least {MIN_LAP_SECONDS:g} s a lap; taken for a "
                              f"corrupted LapNumber): {drv}'s laps go on from the last one read", driver=drv)

    def _field_plausible(self, drv: str, n: float, t_end: float) -> None:
        """`_plausible` against the field's laps:

        The field's next lap is its highest lap so far + 1 (a leader is at most one lap ahead
        of himself); a lap more than LAP_MARGIN beyond it is refused, unless the session Time
        says the field could have run it (MIN_LAP_SECONDS a lap since the field reached its
        highest lap: a feed that lost laps), or another driver's lap refused so is within a
        lap of it (the whole feed jumped ahead: taken). Before any lap (the first laps seen
        set the field's lap, so a feed may join mid-race), only a lap more than LAP_MARGIN
        beyond `total_laps`, when given, is refused.
        """
        if self.top_lap > 0:
            limit, why = self.top_lap + 1 + LAP_MARGIN, f"the field's highest lap so far is {self.top_lap:g}"
        elif self.total_laps is not None:
            limit, why = self.total_laps + LAP_MARGIN, f"the race length given is {self.total_laps} laps"
        else:
            return
        if n <= limit:
            return
        if (self.top_lap > 0 and math.isfinite(t_end) and math.isfinite(self.top_time)
                and t_end - self.top_time >= (n - self.top_lap - 1) * MIN_LAP_SECONDS):
            return  # time enough has passed: laps were lost (a gap, said per driver)
        if any(d != drv and abs(m - n) <= 1 and top >= self.top_lap - 1 for d, (m, top) in self.far_ahead.items()):
            self.far_ahead.clear()
            return  # another car is there too, now: the feed jumped ahead
        self.far_ahead[drv] = (n, self.top_lap)
        raise SkipLap(f"{drv} lap {n:g}: implausibly far ahead ({why}; a lap number more than {LAP_MARGIN} beyond "
                      f"the field's next lap is taken for a corrupted LapNumber): {drv}'s laps go on from the last "
                      "one read", driver=drv)

    def _time_plausible(self, drv: str, n: float, t_end: float) -> None:
        """Refuse (SkipLap, nothing changed) a lap ending more than TIME_JUMP seconds of session
        Time after the latest lap read: a corrupted Time would otherwise become the race's clock
        (every later lap read as out of order, and as a feed gone back to another race), unless
        another driver's lap refused so ends within JUMP_AGREE seconds of it (the field resumed
        after a suspension longer than any seen: taken)."""
        if not (math.isfinite(t_end) and math.isfinite(self.latest_end)) or t_end <= self.latest_end + TIME_JUMP:
            return
        if any(d != drv and abs(t - t_end) <= JUMP_AGREE for d, t in self.far_later.items()):
            self.far_later.clear()
            return
        self.far_later[drv] = t_end
        raise SkipLap(f"{drv} lap {n:g}: implausible session Time ({_clock(t_end)}, {(t_end - self.latest_end) / 60:.0f} "
                      f"minutes after the latest lap read, {_clock(self.latest_end)}; a wait of more than "
                      f"{TIME_JUMP / 60:.0f} minutes between two laps ending is taken for a corrupted Time): "
                      f"{drv}'s laps go on from the last one read", driver=drv)

    def _changes(self, before: dict, now: dict) -> str:
        """What a re-sent lap changed against the lap as first read: 'Deleted: False -> True, ...'
        (the first 3 columns in the header's order, and how many more); '' when nothing did."""
        keys = [c for c in (self.header or []) if c in before and c in now]
        keys += [c for c in before if c in now and c not in keys and c not in _LAP_MASKS and c != "Restart"]
        diff = [c for c in keys if not _same(before[c], now[c])]
        said = ", ".join(f"{c}: {_shown(before[c])} -> {_shown(now[c])}" for c in diff[:3])
        return said + (f" and {len(diff) - 3} more column{'s' if len(diff) > 4 else ''}" if len(diff) > 3 else "")

    def _dropped_generated(self, drv: str, n: float, t_end: float) -> tuple[str, str] | None:
        """Why batch cleaning drops this untimed FastF1Generated row (`clean._after_flag`, the
        non-starter rule), as far as the laps so far tell, and its `SkipLap.kind`; None: batch
        keeps it (a car that stopped mid-race: its last lap is context), so live pushes it too.

        After the flag: with `total_laps`, a lap past it or ending after the first car
        finished lap `total_laps` (batch's rule when `total_laps` is the race's last timed
        lap, as `lapnet race live` takes it from a finished file). Without it the flag cannot
        be placed from the lap numbers, so the field tells: the row ends more than
        SILENCE_LAPS reference laps after the latest timed lap of any car, that lap at racing
        pace (no SC, VSC or red flag): the field has finished (FastF1 writes these rows a
        minute or more after the last car took the flag; mid-race, a car crosses the line
        every few seconds: on the 15 real races of 2023 this tells every row as batch does).
        The leader's row beyond every timed lap so far and beyond the estimated race length is
        taken as after the flag too (the winner's; another car's may be a crash on the last lap,
        which batch keeps: Singapore 2023's RUS on lap 62).
        """
        st = self.drivers.get(drv)
        if st is None or not st.timed:  # batch drops a driver without a single timed lap
            return ("for a driver without a timed lap (did not start, or out on lap 1: batch cleaning drops them)",
                    "non_starter")
        if self.total_laps is not None:
            if n > self.total_laps or (math.isfinite(t_end) and t_end > self.flag_time):
                return "after the chequered flag", "after_flag"
            return None
        if n > self.last_timed_lap and n > self.featurizer.total_laps and drv == self.leader:
            # both: a car that stops on the lap the leader is still running is mid-race
            return "after the chequered flag (beyond every timed lap so far and the estimated race length)", "after_flag"
        ref = self.featurizer.ref
        quiet = t_end - self.last_timed_end
        if math.isfinite(quiet) and math.isfinite(ref) and quiet > SILENCE_LAPS * ref and not self.last_timed_neutral:
            return (f"after the chequered flag (no car has completed a timed lap for {quiet:.0f} s, "
                    f"{quiet / ref:.1f} reference laps, at racing pace: the field has finished)"), "after_flag"
        return None

    def push_csv_line(self, line: str) -> dict:
        """Parse one CSV line and push it."""
        return self.push(self.parse(line))


# ---------------------------------------------------------------------------------------
# the input of `lapnet race live`: a feed, a growing file, or a finished file replayed


def read_header(stream: IO[str], follow: bool = False, poll: float = 0.5) -> str:
    """The header line, without a UTF-8 byte-order mark (a file is opened as utf-8-sig; stdin
    is not); with `follow`, a file still empty (the feed has not started) is waited for."""
    header = stream.readline()
    while follow and not header.endswith("\n"):
        time.sleep(poll)
        header += stream.readline()
    return header.lstrip("\ufeff")


IDLE, END = "idle", "end"  # `stream_lines`' events (line number None): the input idle, a followed file's end reached


def stream_lines(stream: IO[str], follow: bool = False, poll: float = 0.5, idle: float | None = None,
                 events: bool = False) -> Iterator[tuple[int | None, str]]:
    """(line number, line) as they come, after the header (line 1); with `follow`, waits at the
    end of the file (like tail -f) and for the rest of a half-written line (`FollowReader`
    gives only whole lines; a text stream's half line is kept until its end comes).

    With `events` and `follow`: (None, END) the first time the end of the file is reached (the
    lines already there are read), and with `idle`, (None, IDLE) each time no line has come for
    `idle` seconds (`follow_race` then lets the laps it holds for --reorder go)."""
    lineno, part = 1, ""
    ended, quiet = False, None  # the end reached once; when the input went quiet (monotonic seconds)
    while True:
        line = stream.readline()
        if not line:
            if not follow:
                return
            if events and not ended:
                ended = True
                yield None, END
            if events and idle is not None:
                now = _monotonic()
                if quiet is None:
                    quiet = now
                elif now - quiet >= idle:
                    quiet = now
                    yield None, IDLE
            time.sleep(poll)
            continue
        quiet = None
        part += line
        if follow and not part.endswith("\n"):  # a half-written line: wait for the rest
            continue
        lineno += 1
        yield lineno, part
        part = ""


class FollowReader:
    """A growing FILE (`lapnet race live --follow`), read as bytes: `readline` gives whole lines
    only, decoded as UTF-8 (a UTF-8 byte-order mark before the first is dropped), and '' while
    the last line has no line end yet, so a writer that flushed in the middle of a line, or of a
    multi-byte character, is waited for.

    Before each line the header and the last line read are checked to be where they were (a
    file rewritten in place: `cp other.csv FILE`), and when no whole line is there, the file is
    checked too: one rewritten, truncated (smaller than what was read) or replaced (another
    file under its name) is refused (LapnetError): the laps read
    so far were stepped into every driver's state, and what the rewritten file holds against
    them cannot be told (the same race again would be all duplicates; another, a mix).
    """

    def __init__(self, path: str | Path, new: bool = False):
        self.path = str(path)
        self.file = open(path, "rb")
        # the bytes already in the file when live started (`new`: the file was not there yet: none): the
        # lines within them are laps a restarted process catches up on (--catch-up)
        self.start_size = 0 if new else os.fstat(self.file.fileno()).st_size
        self.pos = 0  # bytes read: the end of the last whole line
        self.lines = 0  # whole lines given (the header is line 1)
        self.inode = os.fstat(self.file.fileno()).st_ino
        self.first = b""  # the header line's bytes, and the last whole line's: a file rewritten in place
        self.last = b""  # (same inode, `cp other.csv FILE`) no longer holds them where they were read

    @property
    def catching_up(self) -> bool:
        """The last line given was already in the file when live started."""
        return self.pos <= self.start_size

    def readline(self) -> str:
        self._same_lines()
        raw = self.file.readline()
        if raw.endswith(b"\n"):
            self.pos += len(raw)
            self.lines += 1
            self.last = raw
            if self.lines == 1:
                self.first = raw
            if self.lines == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            return raw.decode("utf-8")
        self.file.seek(self.pos)  # nothing, or a line still being written: read it again once whole
        self._check()
        return ""

    def _same_lines(self) -> None:
        """Refuse (LapnetError) a file rewritten in place since its lines were read: its header
        or its last line read are no longer where they were (another race copied over it, or
        the same race written again: the offset reached would fall mid-line, or mid-race)."""
        if not self.lines:
            return
        fd = self.file.fileno()
        start = self.pos - len(self.last)
        if os.pread(fd, len(self.first), 0) == self.first and os.pread(fd, len(self.last), start) == self.last:
            return
        size = os.fstat(fd).st_size
        if size < self.pos:
            raise self._truncated(size)
        raise LapnetError(f"{self.path} was rewritten in place while followed (its header or line {self.lines}, the last "
                          "read, changed): a file rewritten under --follow cannot be followed on (the laps read so far "
                          "are in every driver's state): start lapnet race live again to read it from its start")

    def _check(self) -> None:
        size = os.fstat(self.file.fileno()).st_size
        if size < self.pos:
            raise self._truncated(size)
        self._same_lines()
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            return  # gone for now (a writer about to rename a new one in): its next name is checked then
        if inode != self.inode:
            raise LapnetError(f"{self.path} was replaced by another file (renamed over it) while followed: the laps "
                              "read so far are in every driver's state: start lapnet race live again to read the new one")

    def _truncated(self, size: int) -> LapnetError:
        return LapnetError(f"{self.path} was truncated (now {size} bytes; {self.pos} had been read): a file rewritten "
                           "under --follow cannot be followed on (the laps read so far are in every driver's state): "
                           "start lapnet race live again to read it from its start")

    def unread(self) -> str | None:
        """What the file holds beyond the lines read, said when the stream is stopped (Ctrl-C)."""
        try:
            size = os.fstat(self.file.fileno()).st_size
            self.file.seek(self.pos)
            tail = self.file.read(max(size - self.pos, 0))
        except (OSError, ValueError):
            return None
        if not tail.strip():
            return None
        first = self.lines + 1
        whole = tail.count(b"\n")
        if whole == 0:
            return f"lapnet: warning: line {first} is incomplete (no line end yet) and was not read"
        last = first + whole - (1 if tail.endswith(b"\n") else 0)
        return f"lapnet: warning: lines {first}-{last} were not read (the stream was stopped first)"

    def close(self) -> None:
        self.file.close()


def _cells(line: str) -> list[str]:
    try:
        return next(csv.reader([line]), [])
    except csv.Error:  # e.g. a bare carriage return: the live reader skips the line with a warning
        return []


def _column(rows: list[list[str]], header: list[str], col: str) -> list[str]:
    """One column's cells of CSV rows ('' where the row is short or the column absent)."""
    i = header.index(col) if col in header else None
    return ["" if i is None or i >= len(v) else v[i].strip() for v in rows]


def _is_header(cells: list[str]) -> bool:
    """A line whose cells name the required columns: a header, not a lap."""
    names = {c.strip().lstrip("\ufeff") for c in cells}
    return all(c in names for c in S.REQUIRED_COLUMNS)


def _header_again(cells: list[str], header: list[str], where: str, lineno: int) -> bool:
    """Whether a line is a header met again (CSV files concatenated: skipped); another header
    (LapnetError): the columns changed, and the laps after it cannot be read by the first."""
    if not _is_header(cells):
        return False
    new, old = [c.strip().lstrip("\ufeff") for c in cells], [c.strip() for c in header]
    if new == old:
        return True
    added, gone = [c for c in new if c not in old], [c for c in old if c not in new]
    what = "; ".join(part for part in (f"new: {', '.join(added[:4])}{' ...' if len(added) > 4 else ''}" if added else "",
                                       f"gone: {', '.join(gone[:4])}{' ...' if len(gone) > 4 else ''}" if gone else "")
                     if part) or "the same columns in another order"
    raise LapnetError(f"{where}, line {lineno}: a header line with other columns than line 1's ({what}): the columns "
                      "changed mid-stream, and the laps after it cannot be read by the first header: give each table "
                      "its own file or feed")


def file_lines(stream: IO[str]) -> tuple[list[tuple[int, str]], list[list[str]]]:
    """A complete file's lap lines after its header, with their line numbers (blank lines left
    out), and each split into its cells (`rows`, for `file_race_laps` and `replay_order`)."""
    lines = [(k + 2, ln) for k, ln in enumerate(stream.read().splitlines()) if ln.strip()]
    return lines, [_cells(ln) for _, ln in lines]


def file_race_laps(rows: list[list[str]], header: list[str]) -> int | None:
    """A finished race's length from its lap lines: `features.last_timed_lap`, the one race-length
    rule of every command, on the raw text of `rows` (cells in `header`'s order); None when they
    have no timed lap or lack LapNumber or LapTime (the live reader then says what is wrong with
    them, line by line)."""
    from lapnet.race.features import last_timed_lap

    if not rows or "LapNumber" not in header or "LapTime" not in header:
        return None
    return last_timed_lap(pd.DataFrame({"LapNumber": _column(rows, header, "LapNumber"),
                                        "LapTime": _column(rows, header, "LapTime")}))


def replay_order(lines: list[tuple[int, str]], rows: list[list[str]],
                 header: list[str]) -> tuple[list[tuple[int, str]], bool]:
    """A complete file's lap lines (`file_lines`: `lines` and their cells, `rows`) in the order
    the laps ended, and whether they had to be reordered.

    FastF1's `Laps.to_csv` lists each driver's laps in turn: fed so, every lap would see the
    field at another moment of the race. Lines whose session Times already rise (within
    ORDER_SLACK) are kept as they are; any others are ordered as batch commands order laps
    (`features.session_order`). A file without a session Time (no column, or not one cell) is
    ordered as batch commands order it too: lap by lap, drivers by name within a lap.
    """
    from lapnet.race.features import session_order

    times = _session_times(rows, header)
    t = times[np.isfinite(times)]
    if len(t) and not (np.diff(t) < -ORDER_SLACK).any():  # already in the order laps ended: keep it as given
        return lines, False
    frame = pd.DataFrame({"Driver": _column(rows, header, "Driver"),
                          "LapNumber": pd.to_numeric(pd.Series(_column(rows, header, "LapNumber"), dtype=object),
                                                     errors="coerce"),
                          "Time": times})
    order = session_order(frame)
    if not len(t) and (order == np.arange(len(order))).all():  # no Time, already in batch's order
        return lines, False
    return [lines[i] for i in order], True


def _session_times(rows: list[list[str]], header: list[str]) -> np.ndarray:
    """The session Time of each row in seconds (NaN where missing or unreadable; all NaN without the column)."""
    times = []
    for v in _column(rows, header, "Time"):  # '' everywhere without the column
        try:
            times.append(parse_duration(v))
        except ValueError:
            times.append(math.nan)
    return np.array(times, float)


def _one_session(lines: list[tuple[int, str]], rows: list[list[str]], header: list[str], where: str) -> None:
    """A finished file (its race picked) must hold one race: in the file's order (by driver or by
    Time), most drivers going back to a lap 1-2 they have run already, after a lap past
    SWITCH_AFTER, is another race's laps after the first's (files concatenated without a Race
    column): LapnetError naming the line where it starts. Replayed by session Time, the two would
    be interleaved. A race listed newest first (each driver's laps counting down) is one race:
    its laps 1-2 come last, but once each (it is replayed by session Time, `replay_order`)."""
    if "Driver" not in header or "LapNumber" not in header:
        return
    drivers = _column(rows, header, "Driver")
    laps = pd.to_numeric(pd.Series(_column(rows, header, "LapNumber"), dtype=object), errors="coerce").to_numpy(float)
    top: dict[str, float] = {}
    seen: set[tuple[str, float]] = set()  # (driver, lap 1 or 2) read so far
    again: dict[str, int] = {}  # driver -> the line where it went back to a lap 1-2 it had run
    for (lineno, _), drv, n in zip(lines, drivers, laps):
        if not drv or not math.isfinite(n):
            continue
        if n <= 2 and top.get(drv, 0) > SWITCH_AFTER and (drv, n) in seen and drv not in again:
            again[drv] = lineno
        elif drv not in again:
            top[drv] = max(top.get(drv, 0), n)
            if n <= 2:
                seen.add((drv, n))
    if len(again) >= 3 and 2 * len(again) > len(top):
        first = min(again.values())
        raise LapnetError(f"{where}, line {first}: another race's laps follow the first's ({len(again)} of the "
                          f"{len(top)} drivers go back to lap 1-2 after lap {SWITCH_AFTER}): live follows one race: "
                          "give each race its own file, or a Race column and --race NAME")


def _pick_race(lines: list[tuple[int, str]], rows: list[list[str]], header: list[str], race: str | None,
               where: str) -> tuple[list[tuple[int, str]], list[list[str]], str | None]:
    """The lines of the one race a complete file is replayed for: every line when it holds
    one race (by its Race column, or without one); `race` picks one of several (a line with
    an empty Race cell goes with any). Several races without `race`: LapnetError naming them."""
    if "Race" not in header:
        return lines, rows, None
    names = _column(rows, header, "Race")
    races = list(dict.fromkeys(n for n in names if n))
    if race is None:
        if len(races) > 1:
            shown = ", ".join(races[:5]) + (f", ... ({len(races)} in all)" if len(races) > 5 else "")
            raise LapnetError(f"{where} holds {len(races)} races (Race column: {shown}): live follows one race: "
                              f"pick one with --race (e.g. --race {races[0]})")
        return lines, rows, races[0] if races else None
    pick = race_match(race, races)
    if pick is None:
        raise LapnetError(f"--race {race}: no such race in {where} (races: {', '.join(races) or 'none named'})")
    keep = [i for i, n in enumerate(names) if n in ("", pick)]
    return [lines[i] for i in keep], [rows[i] for i in keep], pick


def _parquet_error(where: str) -> LapnetError:
    target = "X.csv" if where == "stdin" else Path(where).with_suffix(".csv").name
    source = "X.parquet" if where == "stdin" else where
    return LapnetError(f"{where}: a Parquet file: live reads CSV lines (a feed, header first): convert it first, "
                       f"e.g. lapnet race clean {source} --out {target}")


_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes stdin could not decode (Python's surrogateescape)


def _check_text(line: str, where: str) -> None:
    """Stdin is decoded with surrogateescape in a POSIX locale: bytes that are not UTF-8 come
    as surrogates, refused here as a file's would be (a Parquet file by its name)."""
    if line.startswith("PAR1"):
        raise _parquet_error(where)
    bad = _UNDECODED.search(line)
    if bad is not None:
        byte = bytes([ord(bad.group()) - 0xDC00])
        raise LapnetError(f"{where}: not UTF-8 text (invalid byte: {byte!r})")


def is_pipe(path: str | Path) -> bool:
    """A FIFO (a named pipe, or a process substitution such as <(cat laps.csv)): `race live`
    reads it once, as it comes, like stdin; any other non-regular file is refused."""
    import stat

    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _refuse_parquet(path: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return  # opening it for reading says what is wrong
    if magic == b"PAR1":
        raise _parquet_error(path)


class DriverFilter:
    """`lapnet race live --driver`: which drivers' lines to print.

    Args:
        value: comma-separated three-letter codes in any case (`ver,HAM`) or FastF1 driver
            numbers (`1,44`, matched through the DriverNumber column), or an iterable of them
            (`io.parse_drivers`, as `race predict` reads them).

    Raises:
        LapnetError: nothing in `value`.
    """

    def __init__(self, value: str | Any):
        from lapnet.race.io import parse_drivers

        self.tokens = parse_drivers(value)  # predict's rule: codes upper-case, numbers as `io.car_number` writes them
        self.codes = {t for t in self.tokens if not t.isdigit()}
        self.numbers = {t for t in self.tokens if t.isdigit()}
        self.warned = False  # the drivers still missing have been said

    def shows(self, driver: str, live: LiveRace) -> bool:
        return driver.upper() in self.codes or live.number_of.get(driver) in self.numbers

    def missing(self, live: LiveRace) -> list[str]:
        """The codes and numbers that match no driver with a lap so far."""
        found = {d.upper() for d in live.drivers} | {live.number_of.get(d) for d in live.drivers}
        return [t for t in self.tokens if t not in found]

    def field(self, live: LiveRace) -> str:
        """The drivers with a lap so far (with their numbers when numbers were asked for)."""
        from lapnet.race.io import driver_order

        return ", ".join(f"{d} ({live.number_of[d]})" if self.numbers and live.number_of.get(d, d) != d else d
                         for d in driver_order(live.drivers))

    def non_starters(self, live: LiveRace, missing: list[str]) -> list[str]:
        """Those of `missing` that name a driver whose only rows were skipped (no timed lap)."""
        return sorted(d for d in live.first_pass if d not in live.drivers
                      and (d.upper() in missing or live.number_of.get(d) in missing))

    def not_seen(self, live: LiveRace, missing: list[str]) -> str:
        """What the refusal or warning for `missing` begins with, the same once the grid is known
        (`_grid_check`) and when the stream ends: '--driver XYZ: no lap in the stream', naming
        any that is a non-starter (a driver whose rows were all skipped is no typo)."""
        what = f"--driver {','.join(missing)}: no lap in the stream"
        gone = self.non_starters(live, missing)
        return what + (f" ({', '.join(gone)}: no timed lap: did not start, or out on lap 1)" if gone else "")


def _grid_check(wanted: DriverFilter, live: LiveRace, say: Callable[[str], None]) -> None:
    """Once the field has crossed the line (`LiveRace.grid_closed`): a --driver that is on no
    row is a typo, said now rather than when the stream ends (never, with --follow). When
    the grid's positions show cars without a row yet, or one car alone has crossed the line,
    it may still join: warned, not refused (the stream's end decides)."""
    missing = wanted.missing(live)
    if not missing:
        return
    what, gone = wanted.not_seen(live, missing), wanted.non_starters(live, missing)
    positions = [p for p in live.first_pass.values() if math.isfinite(p)]
    absent = int(max(positions)) - len(live.first_pass) if positions else 0
    if (absent > 0 or len(live.first_pass) < 2) and len(gone) < len(missing):
        why = (f"the grid's positions show {absent} car(s) without a row yet" if absent > 0
               else "one car alone has crossed the line (a feed listed driver by driver?)")
        say(f"lapnet: warning: {what} yet: not on the grid (drivers: {wanted.field(live)}), but {why}: following "
            "the stream in case it joins")
        return
    if len(missing) == len(wanted.tokens):
        raise LapnetError(f"{what}: not on the grid (drivers: {wanted.field(live)})")
    from lapnet.race.io import driver_order

    shown = ", ".join(f"{d} ({live.number_of[d]})" if wanted.numbers and live.number_of.get(d, d) != d else d
                      for d in driver_order(live.drivers) if wanted.shows(d, live))
    say(f"lapnet: warning: {what}: not on the grid (drivers: {wanted.field(live)}); printing {shown} only")
    wanted.warned = True


def _end_check(wanted: DriverFilter | None, live: LiveRace | None, n_out: int, say: Callable[[str], None]) -> list[str]:
    """The --driver items that matched no lap by the stream's end, returned. Those the grid check
    let through (a car may yet have joined) are settled here: all of them missing is an error,
    some of them a warning (unless the grid check already said so)."""
    if wanted is None or live is None or not n_out:
        return []
    missing = wanted.missing(live)
    if missing:
        what = f"{wanted.not_seen(live, missing)} (drivers: {wanted.field(live)})"
        if len(missing) == len(wanted.tokens):
            raise LapnetError(what)
        if not wanted.warned:
            say(f"lapnet: warning: {what}")
    return missing


ROUTINE_SKIPS = ("after_flag", "non_starter")  # `SkipLap.kind`s a finished race has: counted, said once each


class _Skips:
    """The laps `follow_race` skips, said on stderr. Most are said at once, naming the input line:
    each may be a problem of the feed. The routine ones (`ROUTINE_SKIPS`) are counted instead and
    said once per kind when the stream ends: every finished FastF1 race has them (a replay of
    Monza: 18 rows after the flag, a non-starter's row), and a line each would bury the others."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.routine: dict[str, list] = {}  # SkipLap.kind -> [count, first line, drivers]

    def add(self, e: SkipLap, lineno: int) -> None:
        if e.kind not in ROUTINE_SKIPS:
            self.say(f"lapnet: warning: line {lineno}: skipped lap: {' '.join(str(e).split())}")
            return
        seen = self.routine.setdefault(e.kind, [0, lineno, []])
        seen[0] += 1
        seen[2].append(e.driver)

    def summarise(self) -> None:
        """One line per routine kind met, in `ROUTINE_SKIPS`' order."""
        for kind in ROUTINE_SKIPS:
            if kind in self.routine:
                self.say(_routine_line(kind, *self.routine[kind]))


def _routine_line(kind: str, count: int, first: int, drivers: list[str]) -> str:
    s = "s" if count > 1 else ""
    if kind == "after_flag":
        return (f"lapnet: {count} lap{s} after the chequered flag skipped (rows FastF1 generates without a lap time; "
                f"batch cleaning drops them too; first: line {first})")
    who = list(dict.fromkeys(drivers))
    return (f"lapnet: {count} row{s} of {', '.join(who)} skipped: no timed lap (did not start, or out on lap 1: "
            f"FastF1 generates such rows without a lap time; batch cleaning drops them too; first: line {first})")


class _RaceSwitch:
    """A feed without a Race column that runs into another race (a second race's lines appended,
    `cat` of two feeds): after the field passed lap SWITCH_AFTER, a lap 1-2, or a lap whose
    session Time is more than SWITCH_BACK seconds before the latest read, is held back instead
    of pushed. When most of the drivers seen (at least 3) have sent such a lap in one run of held
    lines, going back (`switched`: LapnetError, the stream stops); the first line that is not
    held releases the run, pushed in its order as if never held (a lapped car's late lap, a
    corrupted Time, a driver-by-driver feed: what each was before)."""

    def __init__(self, where: str):
        self.where = where
        self.held: list[tuple] = []  # (line number, lap, catching up) not pushed yet
        self.back: set[str] = set()  # drivers seen who went back in the held run

    def hold(self, live: LiveRace, lineno: int, lap: dict, catch: bool = False) -> bool:
        """Whether the lap is held back (LapnetError: the feed switched races)."""
        if live.top_lap <= SWITCH_AFTER:
            return False
        drv, n, t = str(lap.get("Driver") or ""), num(lap.get("LapNumber")), num(lap.get("Time"))
        early = math.isfinite(n) and n <= 2
        earlier = math.isfinite(t) and t < live.latest_end - SWITCH_BACK
        if not (early or earlier):
            return False
        self.held.append((lineno, lap, catch))
        st = live.drivers.get(drv)
        if st is not None and (earlier or n < st.last_lap):
            self.back.add(drv)
        if len(self.back) >= 3 and 2 * len(self.back) > len(live.drivers):
            raise LapnetError(
                f"{self.where}, line {lineno}: the feed switched races: {len(self.back)} of the {len(live.drivers)} "
                f"drivers went back to lap 1-2, or their session Time by over {SWITCH_BACK / 60:.0f} minutes, after the "
                f"field had reached lap {live.top_lap:g} (from line {self.held[0][0]}): live follows one race: give each "
                "race its own file or feed, or a Race column and --race NAME")
        return True

    def release(self) -> list[tuple]:
        out, self.held, self.back = self.held, [], set()
        return out


class _Reorder:
    """`race live --reorder SECONDS`: laps held until the feed's session Time (the latest `Time`
    read) is SECONDS past their own, then processed in the order they ended, batch's
    (`features.session_order`: by Time, then lap number, then driver; a lap without a Time right
    after the driver's previous lap). `flush` lets every lap held go, in that order: at the end
    of the input, and when it has been idle for SECONDS of wall time (`follow_race`). A feed whose
    laps come at most SECONDS late so gives exactly the lines of the same feed in order.

    A re-send of a lap still held (same driver and lap number) is a duplicate when nothing
    changed (SkipLap), else it takes the held lap's place, said in `notes`: FastF1 sends a lap
    again once it has filled a cell, a missing LapTime mostly, and the lap is then read as the
    finished race's table has it. A lap more than TIME_JUMP seconds after the feed's Time (a
    corrupted Time, or the end of a long suspension) is not held: the laps held go first and it
    is pushed at once, where `LiveRace` takes or refuses it (`sync` moves the clock once taken)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.heap: list[list] = []  # [Time key, lap number, driver, arrival, line number, lap, catching up, alive]
        self.held: dict[tuple[str, float], list] = {}  # (driver, lap number) -> its live entry in the heap
        self.clock = -math.inf  # the latest session Time read
        self.last_key: dict[str, float] = {}  # driver -> the Time key of his latest lap read
        self.arrivals = 0
        self.notes: list[str] = []  # what the caller says, naming the input line

    def add(self, live: LiveRace, lineno: int, lap: dict, catch: bool = False) -> list[tuple]:
        """Hold one lap read; returns the laps now due, (line number, lap, catching up) in the order
        they ended. Raises SkipLap for an unchanged re-send of a lap still held."""
        import heapq

        drv, n, t = str(lap.get("Driver") or ""), num(lap.get("LapNumber")), num(lap.get("Time"))
        if not drv or drv == "nan" or not math.isfinite(n):
            return [(lineno, lap, catch)]  # `LiveRace` refuses it, naming what it lacks
        if math.isfinite(t) and math.isfinite(self.clock) and t > self.clock + TIME_JUMP:
            return self.flush() + [(lineno, lap, catch)]
        old = self.held.get((drv, n))
        if old is not None:
            changed = live._changes(old[5], lap)
            if not changed:
                raise SkipLap(f"{drv} lap {n:g}: duplicate lap", driver=drv)
            old[7] = False
            self.notes.append(f"{drv} lap {n:g}: a changed re-send of lap {n:g} (line {old[4]}) while --reorder held it: "
                              f"this one is used ({changed})")
        key = t if math.isfinite(t) else self.last_key.get(drv, -1.0)  # batch's rule for a lap without a Time
        self.last_key[drv] = key
        if math.isfinite(t):
            self.clock = max(self.clock, t)
        entry = [key, n, drv, self.arrivals, lineno, lap, catch, True]
        self.arrivals += 1
        self.held[(drv, n)] = entry
        heapq.heappush(self.heap, entry)
        return self._due()

    def sync(self, live: LiveRace) -> None:
        """The feed's Time is at least the latest lap `LiveRace` took (a lap far later, taken)."""
        self.clock = max(self.clock, live.latest_end)

    def _due(self, everything: bool = False) -> list[tuple]:
        import heapq

        out = []
        while self.heap:
            top = self.heap[0]
            if top[7] and not everything and math.isfinite(self.clock) and top[0] > self.clock - self.seconds:
                break
            heapq.heappop(self.heap)
            if top[7]:
                del self.held[(top[2], top[1])]
                out.append((top[4], top[5], top[6]))
        return out

    def flush(self) -> list[tuple]:
        """Every lap held, in the order they ended."""
        return self._due(everything=True)

    def waiting(self) -> list[int]:
        """The input lines of the laps held, in the order they came."""
        return sorted(e[4] for e in self.held.values())


class _FeedRace:
    """A feed's Race column, checked line by line (a finished file's race is picked before it is
    replayed, `_pick_race`): a feed cannot be split up front. With `race`, other races' lines are
    passed over (and named if no line matched); without it, the first race named is followed and
    a lap of another stops the stream: it would step the same drivers' states in another race.
    A feed without a Race column, or a line with an empty Race cell, is the race followed."""

    def __init__(self, cols: list[str], race: str | None, where: str):
        self.col = cols.index("Race") if "Race" in cols else None
        self.race, self.where = race, where
        self.current: str | None = None  # the race followed, once a line names it
        self.others: set[str] = set()  # other races' names passed over (with `race`)

    def keep(self, line: str, lineno: int) -> bool:
        """Whether the lap on `line` is of the race followed (LapnetError: another, without `race`)."""
        if self.col is None:
            return True
        cells = _cells(line)
        name = cells[self.col].strip() if self.col < len(cells) else ""
        if not name:
            return True
        if self.race is not None:
            if race_match(self.race, [name]) is None:
                self.others.add(name)
                return False
            self.current = self.current or name
        elif self.current is None:
            self.current = name
        elif name != self.current:
            raise LapnetError(f"{self.where}, line {lineno}: a lap of race '{name}' after laps of race "
                              f"'{self.current}': live follows one race: feed one, or pick it with --race NAME")
        return True


def _checked_header(stream: IO[str], follow: bool, poll: float, where: str, wanted: DriverFilter | None,
                    race: str | None) -> tuple[str, list[str]]:
    """The header line (without its line end) and its columns, refused when it cannot serve: an
    empty input, --driver by car number without a DriverNumber column, --race without a Race
    column. Said here, before a lap is read, each is one line with nothing printed before it;
    later, it would come after laps were printed, or never (a filter matching no line)."""
    header = read_header(stream, follow, poll)
    if not header.strip():
        raise LapnetError(f"{where}: empty input (no CSV header)")
    header = header.strip("\r\n")
    _check_text(header, where)
    cols = _cells(header)
    if wanted is not None and wanted.numbers and "DriverNumber" not in cols:
        raise LapnetError(f"--driver {','.join(sorted(wanted.numbers, key=int))}: a car number, but {where} has "
                          "no DriverNumber column: give the driver's code (e.g. VER)")
    if race is not None and "Race" not in cols:
        raise LapnetError(f"--race {race}: {where} has no Race column (it holds one race): drop --race")
    return header, cols


def _replay(stream: IO[str], cols: list[str], race: str | None, race_laps: int | None,
            file: str) -> tuple[list[tuple[int, str]], str | None, int | None, list[str], dict[str, str]]:
    """A finished FILE, read whole because it can be: the lines of its one race (`race` picks
    it), that race's length (`file_race_laps`) unless `race_laps` is given, the lines in the order
    the laps ended (`replay_order`: FastF1's files list them driver by driver, a feed by Time),
    the notes saying what was read from the file, and the relabelling of its absolute compound
    names (`_file_relabel`); (lines, race, race_laps, notes, relabel)."""
    lines, rows = file_lines(stream)
    keep = [i for i, (n, _) in enumerate(lines) if not _header_again(rows[i], cols, file, n)]  # files concatenated
    lines, rows = [lines[i] for i in keep], [rows[i] for i in keep]
    lines, rows, current = _pick_race(lines, rows, cols, race, file)
    _one_session(lines, rows, cols, file)
    notes = []
    relabel = _file_relabel(rows, cols, file, current or Path(file).stem, notes)
    if race_laps is None:
        race_laps = file_race_laps(rows, cols)  # a finished race: its length is in the file
        if race_laps is not None:
            of = f"the last lap of race {current}" if race is not None else "the file's last lap"
            notes.append(f"lapnet: race length {race_laps} laps, {of} (--race-laps overrides)")
    timed = bool(np.isfinite(_session_times(rows, cols)).any())
    lines, moved = replay_order(lines, rows, cols)
    if moved and timed:
        notes.append(f"lapnet: {file} lists laps in another order than they ended: replayed by session Time, "
                     "as a live feed gives them")
    elif moved:
        notes.append(f"lapnet: {file} has no session Time: replayed lap by lap (drivers by name within a lap), "
                     "as batch commands order its laps")
    return lines, current, race_laps, notes, relabel


def _file_relabel(rows: list[list[str]], header: list[str], file: str, race: str, notes: list[str]) -> dict[str, str]:
    """A finished file's race named with Pirelli's absolute compounds (2018's ULTRASOFT, C1-C5):
    relabelled by the whole race's compounds, as batch commands do (`io.relabel_absolute`, with
    its warning added to `notes`); {} when it names none (a stream cannot: `_live_compound`).

    Raises:
        LapnetError: names of two scales, or more than three dry compounds, as batch refuses them.
    """
    from lapnet.race.io import relabel_absolute, relabel_note

    names = {S.COMPOUND_ALIASES.get(c.upper(), c.upper()) for c in _column(rows, header, "Compound")
             if c.lower() not in MISSING_STRINGS}
    if not names & S.ABSOLUTE_ONLY:
        return {}
    try:
        mapping = relabel_absolute(n for n in names if n in S.COMPOUNDS or n in S.ABSOLUTE_ONLY)
    except LapnetError as e:
        raise LapnetError(f"{file}: race '{race}': {e}") from None
    notes.append(f"lapnet: warning: {relabel_note(file, race, mapping)}")
    return mapping


def _print_json(pred: dict) -> None:
    from lapnet.checkpoint import json_text

    sys.stdout.write(json_text(pred) + "\n")
    sys.stdout.flush()


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


MAX_POLL = 3600.0  # seconds: --poll above it would overflow the wait's deadline for nothing
CATCH_UP = ("print", "mark", "skip")  # --catch-up: the laps already in a followed FILE when live started


def check_poll(poll: Any) -> None:
    """--poll: a finite number of seconds from 0.01 to MAX_POLL, else one LapnetError."""
    if not (isinstance(poll, (int, float)) and math.isfinite(poll) and 0.01 <= poll <= MAX_POLL):
        shown = f"{poll:g}" if isinstance(poll, (int, float)) else repr(poll)
        raise LapnetError(f"--poll: seconds between reads of a growing file, a finite number of at least 0.01, "
                          f"at most {MAX_POLL:g}, got {shown}")


def check_reorder(reorder: Any) -> None:
    """--reorder: 0 (off), or a finite number of seconds from 0.01 (a pipe waits for input that
    long: less would spin a core while the feed is quiet, as --poll's floor) to MAX_REORDER, else
    one LapnetError."""
    if not (isinstance(reorder, (int, float)) and not isinstance(reorder, bool) and math.isfinite(reorder)
            and (reorder == 0 or 0.01 <= reorder <= MAX_REORDER)):
        shown = f"{reorder:g}" if isinstance(reorder, (int, float)) else repr(reorder)
        raise LapnetError(f"--reorder: seconds of session Time a lap is held to be put in the order laps ended, 0 "
                          f"(off) or a finite number from 0.01 to {MAX_REORDER:g}, got {shown}")


def check_catch_up(catch_up: Any, follow: bool) -> None:
    """--catch-up: one of CATCH_UP, and anything but "print" only with --follow; else one LapnetError."""
    if catch_up not in CATCH_UP:
        raise LapnetError(f"--catch-up: one of {', '.join(CATCH_UP)}, got {catch_up!r}")
    if catch_up != "print" and not follow:
        raise LapnetError(f"--catch-up {catch_up}: for --follow (the laps already in the followed FILE when live "
                          "started); stdin and a finished FILE have no such laps to tell apart")


def _wait_for(path: str, poll: float, say: Callable[[str], None]) -> None:
    """--follow on a FILE not there yet (live started before the feed): say so once and wait for it
    (Ctrl-C ends the wait as it ends a stream); then refuse what cannot be followed."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise LapnetError(f"{path}: no such file, and no folder {folder} for it to appear in")
    say(f"lapnet: {path} does not exist yet: waiting for it to appear (--follow; Ctrl-C to stop)")
    while not os.path.lexists(path):
        time.sleep(poll)
    if Path(path).is_dir():
        raise LapnetError(f"{path}: is a directory, not a lap table (live reads a CSV file)")
    if is_pipe(path):
        raise LapnetError(f"{path}: a pipe is read as it comes, like stdin (--follow is for a growing regular file)")
    while not os.path.exists(path):  # a symbolic link whose target is still to come
        time.sleep(poll)


def _idle_lines(lines: Iterator[tuple[int, str]], idle: float) -> Iterator[tuple[int | None, str]]:
    """The lines of a stream read as they come (stdin, a pipe) with (None, IDLE) each time none has
    come for `idle` seconds: a reader thread takes the blocking reads, so that --reorder lets the
    laps it holds go while the feed is quiet (a race's last laps, a pause), as with --follow."""
    import queue
    import threading

    box: queue.Queue = queue.Queue()
    done = object()

    def pump() -> None:
        try:
            for item in lines:
                box.put(item)
            box.put(done)
        except BaseException as e:  # noqa: BLE001  (said in the main thread, as if read there)
            box.put(e)

    threading.Thread(target=pump, name="lapnet-live-reader", daemon=True).start()
    while True:
        try:
            item = box.get(timeout=idle)
        except queue.Empty:
            yield None, IDLE
            continue
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def follow_race(run: RaceRun | str | Path, file: str | Path = "-", *, follow: bool = False, race_laps: int | None = None,
                poll: float = 0.5, drivers: str | Any | None = None, race: str | None = None, pit_now: bool = False,
                reorder: float = 0.0, catch_up: str = "print",
                emit: Callable[[dict], None] | None = None, say: Callable[[str], None] | None = None) -> dict:
    """`lapnet race live`: follow a race lap by lap from a CSV feed, one prediction per lap.

    The input is CSV lines, header first (UTF-8, a byte-order mark allowed): stdin ("-",
    read as it comes), a growing FILE with `follow` (like tail -f; a file still empty, or not
    there yet, is waited for), or a finished FILE, replayed in the order the laps ended
    (`replay_order`) with its length read from it (`file_race_laps`) unless `race_laps` is
    given. Stdin or `follow` without `race_laps`: the length is estimated from the race's pace
    (`features.estimate_race_laps`), with one warning naming the estimate once a lap has set
    the race's pace. Ctrl-C ends the stream quietly (a followed file's last line still without
    its line end is said to be unread, as are laps held for `reorder`). A followed file is read
    as bytes, whole lines only (`FollowReader`), and refused once truncated or replaced.

    One race at a time: a table with several (its Race column) needs `race`; a feed whose
    Race changes stops with an error, as does one without a Race column that runs into
    another race (`_RaceSwitch`; a finished file: `_one_session`). A header line again
    (files concatenated) is skipped; one with other columns stops the stream. A driver first
    seen after the grid joins, a feed that starts after lap 1 and a gap in a driver's laps are
    warned (`LiveRace.push`), as are laps that ended before a lap already processed (once, and
    a count when the stream ends). Skipped laps are warned line by line, except the routine ones
    of a finished race (FastF1's rows after the flag, a non-starter's rows): one line each
    kind, when the stream ends.

    Args:
        run: a loaded run or its directory. file: "-" (stdin) or a CSV path.
        follow: keep reading a growing FILE. race_laps: the scheduled length, or None.
        poll: seconds between reads of a growing file.
        drivers: emit only these drivers' laps (`DriverFilter`: codes in any case, or
            FastF1 driver numbers through the DriverNumber column; every lap is still read: a
            lap's features depend on the whole field); None: all. A driver on no row once the
            field has crossed the line is refused then (a warning if others were found).
        race: the race to follow in a table or feed of several (Race column, any case).
        pit_now: add the pit-now what-if to every prediction (`LiveRace`).
        reorder: seconds; above 0, each lap is held until the feed's latest Time is that far past
            its own (or the input ends, or has been idle that many seconds) and processed in the
            order laps ended (`_Reorder`): a feed up to that late gives the ordered feed's lines.
            0 (the default): each lap is processed as it comes.
        catch_up: with `follow`, the laps already in FILE when live started (a process restarted
            on a feed): "print" them as any lap (the default), "mark" every line with "catch_up"
            (true on those), or "skip" printing them (they are still read: the state is the same).
        emit: called with each prediction (default: one JSON line on stdout).
        say: called with each line for the user, notes and warnings naming the input line
            (default: stderr).

    Returns:
        {"laps": laps read and predicted, "drivers": drivers seen, "missing": asked-for
        drivers never seen, "race": the Race followed (None without a Race column)}.

    Raises:
        LapnetError: an empty input, no usable lap, text that is not UTF-8 (a Parquet file:
            said so), several races, a header with other columns mid-stream, a followed file
            truncated or replaced, `drivers` matching nobody, a bad `poll`, `reorder` or
            `catch_up` (one line each); `LiveRace`'s errors for the run and the header.
    """
    emit, say, file = emit or _print_json, say or _print_err, str(file)
    where = "stdin" if file == "-" else file
    wanted = drivers if drivers is None or isinstance(drivers, DriverFilter) else DriverFilter(drivers)
    if follow:
        check_poll(poll)
    check_reorder(reorder)
    check_catch_up(catch_up, follow)
    if isinstance(run, (str, Path)):
        run = load_run(run)  # the run's errors come first, before the feed is waited for
    if pit_now:
        require_fresh_start(run.model)  # as the run's
    piped = file != "-" and is_pipe(file)  # a FIFO or process substitution <(...): read once, as it comes, like stdin
    if piped and follow:
        raise LapnetError(f"{file}: a pipe is read as it comes, like stdin (--follow is for a growing regular file)")
    absent = follow and file != "-" and not os.path.lexists(file)  # live started before the feed: waited for
    if file != "-" and not piped and not absent:
        _refuse_parquet(file)
    stream: Any = (None if absent else sys.stdin if file == "-" else open(file, encoding="utf-8-sig") if piped
                   else FollowReader(file) if follow else open(file, encoding="utf-8-sig"))
    live: LiveRace | None = None
    n_out = 0  # laps read and predicted (emitted or filtered out by `drivers`)
    skips = _Skips(say)
    feed: _FeedRace | None = None  # a feed's race, checked line by line (a finished file's is picked up front)
    switch: _RaceSwitch | None = None  # a feed running into another race (a finished file: `_one_session`)
    order = _Reorder(reorder) if reorder > 0 else None
    current = None  # a finished file's race
    grid_checked = False
    length_said = race_laps is not None  # an estimated length is said once, naming it
    caught = {"laps": 0, "last": 0, "said": False}  # lines already in a followed FILE when live started

    def take(lineno: int, lap: dict, catch: bool = False) -> None:  # push one lap read, say what came of it
        nonlocal n_out, grid_checked, length_said
        try:
            pred = live.push(lap)
        except SkipLap as e:
            pred = None
            skips.add(e, lineno)
        for notice in live.notices:
            say(f"lapnet: warning: line {lineno}: {notice}")
        live.notices.clear()
        if order is not None:
            order.sync(live)
        if pred is None:
            return
        n_out += 1
        if not length_said and live.featurizer.ref_source == "scored":
            length_said = True
            say(_length_line(pred["race_laps"], lineno))
        if wanted is not None and live.grid_closed and not grid_checked:
            grid_checked = True
            _grid_check(wanted, live, say)
        if catch_up == "mark":
            pred["catch_up"] = catch
        if (wanted is None or wanted.shows(pred["driver"], live)) and not (catch and catch_up == "skip"):
            emit(pred)

    def push(lineno: int, lap: dict, catch: bool) -> None:  # past the race-switch check, then `take`
        if switch is not None:
            if switch.hold(live, lineno, lap, catch):
                return
            for held in switch.release():
                take(*held)
        take(lineno, lap, catch)

    try:
        if absent:
            _wait_for(file, poll, say)
            stream = FollowReader(file, new=True)
        header, cols = _checked_header(stream, follow, poll, where, wanted, race)
        if file != "-" and not follow and not piped:  # a finished race
            lines, current, race_laps, notes, relabel = _replay(stream, cols, race, race_laps, file)
        else:
            lines = stream_lines(stream, follow, poll, idle=reorder if order is not None else None,
                                 events=order is not None or catch_up != "print")
            if order is not None and not follow:  # stdin, a pipe: read in a thread, so that a quiet feed is seen
                lines = _idle_lines(lines, reorder)
            notes, feed, relabel = [], _FeedRace(cols, race, where), {}
            switch = _RaceSwitch(where)
        live = LiveRace(run, total_laps=race_laps, pit_now=pit_now, relabel=relabel,  # None: estimated from the race's pace
                        reorder=reorder)
        with warnings.catch_warnings(record=True) as remarks:  # said with the notes, once a lap has come
            warnings.simplefilter("always")
            live.set_header(header)
        length_said = race_laps is not None
        if order is not None and "Time" not in cols:
            notes.append(f"lapnet: warning: --reorder {reorder:g}: {where} has no Time column: laps are taken in the "
                         "order they come")
        said = False
        for lineno, line in lines:
            if lineno is None:  # an event of the input: idle for --reorder's seconds, or a followed file's end reached
                if line == IDLE and order is not None:
                    for held in order.flush():
                        push(*held)
                elif line == END and catch_up != "print" and caught["laps"] and not caught["said"]:
                    caught["said"] = True
                    say(f"lapnet: caught up with {file}: the {caught['laps']} lap lines already in it when live "
                        f"started (lines 2-{caught['last']}) were read"
                        + (", not printed (--catch-up skip)" if catch_up == "skip" else
                           ' (their JSON lines say "catch_up": true)') + "; from here on, laps as they come")
                continue
            line = line.strip("\r\n")
            if not line.strip():
                continue
            _check_text(line, where)
            if switch is not None and _header_again(_cells(line), cols, where, lineno):
                continue  # the same header again: feeds concatenated (a finished file drops them before)
            if feed is not None and not feed.keep(line, lineno):
                continue
            if not said:  # so that an error before the first lap stays one line
                said = True
                _say_notes(notes, remarks, say)
            catch = isinstance(stream, FollowReader) and stream.catching_up
            if catch:
                caught["laps"], caught["last"] = caught["laps"] + 1, lineno
            try:
                lap = live.parse(line)
            except SkipLap as e:
                skips.add(e, lineno)
                continue
            if order is None:
                push(lineno, lap, catch)
                continue
            try:
                due = order.add(live, lineno, lap, catch)
            except SkipLap as e:
                skips.add(e, lineno)
                continue
            for note in order.notes:
                say(f"lapnet: warning: line {lineno}: {note}")
            order.notes.clear()
            for held in due:
                push(*held)
        if order is not None:
            for held in order.flush():
                push(*held)
        if switch is not None:
            for held in switch.release():
                take(*held)
        if n_out == 0:
            if feed is not None and feed.others:
                others = ", ".join(sorted(feed.others))
                raise LapnetError(f"--race {race}: no lap of this race in {where} (races: {others})")
            raise LapnetError(f"{where}: no usable laps in the stream")
    except KeyboardInterrupt:
        if order is not None and order.held:
            waiting = order.waiting()
            k = len(waiting)
            say(f"lapnet: warning: {k} lap{'s' if k > 1 else ''} from line {waiting[0]} on not processed: held by "
                f"--reorder {reorder:g} until the feed's Time passed theirs (the stream was stopped first)")
        if switch is not None and switch.held:
            first, k = switch.held[0][0], len(switch.held)
            say(f"lapnet: warning: {k} lap{'s' if k > 1 else ''} from line {first} on not read: held back while the feed "
                "was checked for a switch to another race (a lap 1-2, or a session Time minutes back, after the field "
                f"passed lap {SWITCH_AFTER})")
        if isinstance(stream, FollowReader):
            unread = stream.unread()
            if unread:
                say(unread)
    except UnicodeDecodeError as e:
        if bytes(e.object[:4]) == b"PAR1":
            raise _parquet_error(where) from None
        raise LapnetError(f"{where}: not UTF-8 text ({e.reason}: {e.object[e.start:e.start + 1]!r})") from None
    finally:
        if stream is not None and stream is not sys.stdin:
            stream.close()
    skips.summarise()
    if live is not None and n_out and not length_said:  # no lap set the race's pace: the default length was used
        say(_length_line(live.featurizer.total_laps, None))
    if live is not None and live.late_laps > 1:
        hint = (f"a larger --reorder than {reorder:g} s puts them in order" if reorder > 0
                else "--reorder SECONDS puts laps up to that late in order")
        say(f"lapnet: warning: {live.late_laps} laps in all ended before a lap already processed (by up to "
            f"{live.late_most:.3f} s of session Time): their calls, and those of the laps around them, read the field "
            f"out of order; {hint}")
    missing = _end_check(wanted, live, n_out, say)
    return {"laps": n_out, "drivers": sorted(live.drivers) if live is not None else [], "missing": missing,
            "race": feed.current if feed is not None else current}


def _length_line(laps: int, lineno: int | None) -> str:
    """The one warning of a race length left to estimate (no --race-laps on a feed), naming the
    estimate: at the first lap that set the race's pace (`lineno`), or when the stream ends
    without one (None: the default length was used throughout)."""
    from lapnet.race.features import DEFAULT_RACE_LAPS

    where = f"line {lineno}: " if lineno is not None else ""
    what = (f"{laps} laps (from the race's first Scored lap: within a lap or two of where it settles, as the reference "
            "lap does over the first laps)" if lineno is not None else
            f"{laps} laps (no lap was Scored: the default {DEFAULT_RACE_LAPS}, or the laps seen)")
    return (f"lapnet: warning: {where}--race-laps not given: estimating the race length from its green-flag pace: {what}; "
            "7.7% off on average over the 15 real races, 19.6% at worst; the race fraction, the pit call, pit-now "
            "(none with fewer than 3 laps to go) and its laps_to_flag depend on it: give --race-laps N (each JSON line "
            "says race_laps)")


def _say_notes(notes: list[str], remarks: list[warnings.WarningMessage], say: Callable[[str], None]) -> None:
    """What was read from the input (a finished file's length and order, the header's missing
    columns): said when the first lap comes, not before, so that an input refused before its
    first lap (bytes that are not UTF-8, a Parquet file on stdin) gets one line, the error."""
    for note in notes:
        say(note)
    for w in remarks:  # the header's (columns missing): through the CLI's one-line warnings
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
