"""Live mode: one lap in, one prediction out, each driver's recurrent state carried.

    live = LiveRace(load_run("runs/race"), total_laps=57)
    for line in csv_lines:                  # laps in the order they end (session Time)
        pred = live.push_csv_line(line)     # a dict, or raises SkipLap (warn and go on)

    follow_race("runs/race", "laps.csv")    # `lapnet race live`: a feed, a growing or a finished file

A lap costs one recurrent step for its driver: the driver's hidden state and the race's
feature state (reference lap, the stint's Scored laps, gaps on the road) are kept between laps, so the
stream is never replayed. Features come from the same `RaceFeaturizer` as batch mode, the
net is causal, and FastF1's generated rows are kept or dropped as batch cleaning does (a car
that stopped mid-race: kept; after the chequered flag or of a non-starter: skipped), so a
stream of a race's laps in session-time order, given the race's length, gives
`predict_race`'s numbers on the whole file up to the rounding of the output: seconds and
probabilities are rounded to 4 decimals, so the two differ by at most 5e-5 (tests check this
on real races).
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.io import (FALSE_STRINGS, MISSING_STRINGS, TRUE_STRINGS, CompoundNamesWarning, MissingContextWarning,
                            missing_context, parse_duration)
from lapnet.race.features import PHASES, RaceFeaturizer, _num
from lapnet.race.models import INTERVAL90
from lapnet.race.pipeline import RaceRun, live_phase, load_run, pit_window_threshold

_TEXT_COLS = {c: str for c in ("TrackStatus", "Driver", "Team", "Compound", "Race", "Phase", "DriverNumber")}


ORDER_SLACK = 5.0  # seconds: a lap ending this much before one already read is out of session order


class SkipLap(LapnetError):
    """This lap cannot be used (unknown driver, out of order, duplicate, unreadable): warn and go on."""


def lap_masks(lap: dict) -> dict:
    """The mask columns of `lapnet.race.clean` for ONE lap, all but Restart, which needs the
    driver's previous laps (`LiveRace.push` sets it).

    Mirrors `clean._clean_race` row by row; the live-equals-batch test keeps the two equal.
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


def _live_compound(raw: Any) -> str:
    """The compound as `read_laps` names it, except Pirelli's absolute names (2018's ULTRASOFT,
    C1-C5): where they stand among the race's three cannot be known from a stream, so they
    are taken as an unknown dry compound (batch commands relabel them by the whole race)."""
    comp = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw).strip().upper()
    comp = S.COMPOUND_ALIASES.get(comp, comp)
    if comp in S.ABSOLUTE_ONLY:
        warnings.warn(f"live: compound {comp} is one of Pirelli's absolute names, whose place among the race's three "
                      "a stream cannot know: taken as an unknown dry compound", CompoundNamesWarning, stacklevel=2)
        return "UNKNOWN"
    return comp


def _fast_lap(row: dict[str, str]) -> dict | None:
    """The columns live mode uses, parsed as `read_laps` would; None when anything is unusual."""
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
    comp = _live_compound(row.get("Compound", ""))
    status = row.get("TrackStatus", "").strip()
    status = "" if status.lower() in MISSING_STRINGS else status
    driver = row.get("Driver", "").strip()
    if (comp not in S.COMPOUNDS or not set(status) <= S.TRACK_STATUS_CODES or not driver
            or not (math.isfinite(lap["LapNumber"]) and lap["LapNumber"] >= 1 and lap["LapNumber"].is_integer())
            or any(lap[c] < 0 for c in _FAST_TIMES if math.isfinite(lap[c]))
            or any(math.isinf(lap[c]) for c in (*_FAST_TIMES, *S.FLOAT_COLUMNS))):
        return None  # let read_laps name the problem
    team = row.get("Team", "").strip()
    lap.update(Driver=driver, Compound=comp, TrackStatus=status, Race=row.get("Race", "live").strip() or "live",
               Team=None if team.lower() in MISSING_STRINGS else team)  # teammates' stops are a pit-call feature
    return lap


@dataclass
class _DriverLive:
    last_lap: float = 0.0
    state: Any = None  # the recurrent state after this driver's last lap
    tag_state: Any = None  # the live phase tagger's, when the run has one
    restarting: bool = False  # a red flag was shown and the driver has no timed lap since (clean.Restart)
    timed: bool = False  # the driver has a timed lap (batch drops drivers without one)


@dataclass
class LiveRace:
    """A race followed lap by lap with a trained run (see the module docstring).

    Args:
        run: a loaded run (`load_run`), or a run directory (loaded here).
        total_laps: the race's scheduled length (for race-fraction features), a whole
            number >= 1, or None to estimate it from the race's reference lap as the laps
            come in (`features.estimate_race_laps`); every prediction says which length it used.

    Raises:
        LapnetError: `total_laps` neither None nor a whole number >= 1; `run` neither a
            RaceRun nor a path (`load_run`'s errors for a path that is not a run).
    """

    run: RaceRun | str | Path
    total_laps: int | None
    header: list[str] | None = None
    drivers: dict[str, _DriverLive] = field(default_factory=dict)
    started_at_lap1: bool | None = None
    # what the stream does wrong without a lap being skipped, each said once (the CLI prints
    # and clears the list): laps out of session order, a race longer than `total_laps`
    notices: list[str] = field(default_factory=list)
    latest_end: float = -math.inf
    order_warned: bool = False
    length_warned: bool = False
    last_timed_lap: float = 0.0  # the highest lap number with a time so far
    flag_time: float = math.inf  # session Time the first car finished lap `total_laps` (the chequered flag)

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

    # -- input --------------------------------------------------------------------------

    def set_header(self, line: str) -> None:
        """The CSV header (FastF1 column names)."""
        cols = next(csv.reader([line]))
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
        parses it or names the problem.
        """
        if self.header is None:
            raise LapnetError("live: no header line before the first lap")
        try:
            values = next(csv.reader([line]), [])
        except csv.Error as e:  # e.g. a bare carriage return inside the line
            raise SkipLap(f"unreadable CSV line ({e})") from None
        if len(values) == len(self.header):
            lap = _fast_lap(dict(zip(self.header, values)))
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
            frame["Compound"] = [_live_compound(frame["Compound"].iloc[0])]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a single lap looks like anything: no not-a-race warnings here
                df = read_laps(frame, race=str(frame["Race"].iloc[0]) if "Race" in frame.columns else "live")
        except LapnetError as e:
            raise SkipLap(str(e).replace("DataFrame: ", "")) from None
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

        Raises:
            SkipLap: unknown driver, a duplicate or out-of-order lap, a generated row.
        """
        lap = dict(lap)  # the caller's dict stays as it was (Restart and Scored are set below)
        if any(k not in lap for k in _LAP_MASKS):
            lap = {**lap_masks(lap), **lap}  # a read_laps row: the masks clean_laps would add, row by row
        drv, n = str(lap.get("Driver") or ""), _num(lap.get("LapNumber"))
        if not drv or drv == "nan":
            raise SkipLap("lap without a driver")
        if not math.isfinite(n):
            raise SkipLap(f"{drv}: lap without a lap number")
        if lap.get("FastF1Generated") and not lap.get("HasTime"):
            why = self._dropped_generated(drv, n, _num(lap.get("Time")))
            if why is not None:
                raise SkipLap(f"{drv} lap {n:g}: a row FastF1 generated, with no lap time, {why}")
        if self.started_at_lap1 is None:
            self.started_at_lap1 = n == 1
        st = self.drivers.get(drv)
        if st is None:
            if self.started_at_lap1 and n != 1:
                raise SkipLap(f"{drv} lap {n:g}: unknown driver (not on the grid at lap 1)")
            st = self.drivers[drv] = _DriverLive()
        elif n == st.last_lap:
            raise SkipLap(f"{drv} lap {n:g}: duplicate lap")
        elif n < st.last_lap:
            raise SkipLap(f"{drv} lap {n:g}: out of order (already at lap {st.last_lap:g})")
        t_end = _num(lap.get("Time"))
        if math.isfinite(t_end):
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
        if lap.get("HasTime"):  # what tells a generated row after the flag (`_dropped_generated`)
            st.timed = True
            self.last_timed_lap = max(self.last_timed_lap, n)
            if self.total_laps is not None and n >= self.total_laps and math.isfinite(t_end):
                self.flag_time = min(self.flag_time, t_end)  # the first car to finish the race: the chequered flag
        mean = out["mean"][0, 0].numpy().astype(float)  # (K,)
        sigma = np.exp(out["log_sigma"][0, 0].numpy().astype(float))
        start = f.base if math.isfinite(f.base) else f.ref  # as `to_seconds` does
        sec = start + f.ref * mean / 100.0
        sig = f.ref * sigma / 100.0
        lt = lap.get("LapTime")
        rec = {
            "driver": drv,
            "lap": int(n),
            "lap_time": round(float(lt), 4) if _finite(lt) else None,
            "scored": bool(lap.get("Scored")),
            "forecast": {f"h{h}": round(float(sec[h - 1]), 4) for h in (1, 5, 10)},
            "forecast_next10": [round(float(v), 4) for v in sec],
            "interval90_h1": [round(float(sec[0] - self.z90 * sig[0]), 4), round(float(sec[0] + self.z90 * sig[0]), 4)],
            "pit_within_3": round(pit, 4),
            "phase": phase,
            "race_laps": self.featurizer.total_laps,
            "race_laps_estimated": self.featurizer.estimated,
        }
        if "expected" in out:  # the mean lap (a stint's time is a sum of laps: plan with these)
            exp_sec = start + f.ref * out["expected"][0, 0].numpy().astype(float) / 100.0
            rec["expected_next10"] = [round(float(v), 4) for v in exp_sec]
        return rec

    def _dropped_generated(self, drv: str, n: float, t_end: float) -> str | None:
        """Why batch cleaning drops this untimed FastF1Generated row (`clean._after_flag`, the
        non-starter rule), as far as the laps so far tell; None: batch keeps it (a car that
        stopped mid-race: its last lap is context), so live pushes it too.

        After the flag: with `total_laps`, a lap past it or ending after the first car
        finished lap `total_laps` (batch's rule when `total_laps` is the race's last timed
        lap, as `lapnet race live` takes it from a finished file). Without it the flag cannot
        be placed: a lap beyond every timed lap so far and beyond the estimated race length
        is taken as after the flag (the leaders' rows; a lapped car's row after the flag is
        pushed, and gets a prediction batch has not).
        """
        st = self.drivers.get(drv)
        if st is None or not st.timed:  # batch drops a driver without a single timed lap
            return "for a driver without a timed lap (a non-starter, as batch cleaning drops them)"
        if self.total_laps is not None:
            if n > self.total_laps or (math.isfinite(t_end) and t_end > self.flag_time):
                return "after the chequered flag"
        elif n > self.last_timed_lap and n > self.featurizer.total_laps:
            # both: a car that stops on the lap the leader is still running is mid-race
            return "after the chequered flag (beyond every timed lap so far and the estimated race length)"
        return None

    def push_csv_line(self, line: str) -> dict:
        """Parse one CSV line and push it."""
        return self.push(self.parse(line))


# ---------------------------------------------------------------------------------------
# the input of `lapnet race live`: a feed, a growing file, or a finished file replayed


def file_race_laps(path: str | Path) -> int | None:
    """A finished race's length from its CSV (`features.last_timed_lap` on the raw text), or
    None when the file has no timed lap or cannot be read here (the live reader then reports
    what is wrong with it, line by line)."""
    from lapnet.race.features import last_timed_lap

    try:
        laps = pd.read_csv(path, usecols=["LapNumber", "LapTime"], dtype=str)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    return last_timed_lap(laps)


def read_header(stream: IO[str], follow: bool = False, poll: float = 0.5) -> str:
    """The header line; with `follow`, a file still empty (the feed has not started) is waited for."""
    header = stream.readline()
    while follow and not header.endswith("\n"):
        time.sleep(poll)
        header += stream.readline()
    return header


def stream_lines(stream: IO[str], follow: bool = False, poll: float = 0.5) -> Iterator[tuple[int, str]]:
    """(line number, line) as they come, after the header (line 1); with `follow`, waits at the
    end of the file (like tail -f) and for the rest of a half-written line."""
    lineno = 1
    while True:
        line = stream.readline()
        if not line:
            if not follow:
                return
            time.sleep(poll)
            continue
        if not line.endswith("\n") and follow:  # a half-written line: wait for the rest
            pos = stream.tell() - len(line.encode())
            time.sleep(poll)
            stream.seek(pos)
            continue
        lineno += 1
        yield lineno, line


def replay_order(stream: IO[str], header: list[str]) -> tuple[list[tuple[int, str]], bool]:
    """A complete file's lap lines with their line numbers, in the order the laps ended, and
    whether they had to be reordered.

    FastF1's `Laps.to_csv` lists each driver's laps in turn: fed so, every lap would see the
    field at another moment of the race. A file whose session Times already rise (within
    ORDER_SLACK) is kept as it is; any other is ordered as batch commands order laps
    (`features.session_order`).
    """
    from lapnet.race.features import session_order

    lines = [(k + 2, ln) for k, ln in enumerate(stream.read().splitlines()) if ln.strip()]
    col = {c: header.index(c) for c in ("Time", "Driver", "LapNumber") if c in header}
    if "Time" not in col:
        return lines, False
    rows = []
    for _, ln in lines:
        try:
            v = next(csv.reader([ln]), [])
        except csv.Error:
            v = []
        get = lambda c: v[col[c]] if c in col and col[c] < len(v) else ""  # noqa: E731
        try:
            t = parse_duration(get("Time"))
        except ValueError:
            t = math.nan
        rows.append({"Driver": get("Driver").strip(), "LapNumber": pd.to_numeric(get("LapNumber"), errors="coerce"), "Time": t})
    times = np.array([r["Time"] for r in rows], float)
    times = times[np.isfinite(times)]
    if not (np.diff(times) < -ORDER_SLACK).any():  # already in the order laps ended: keep it as given
        return lines, False
    order = session_order(pd.DataFrame(rows))
    return [lines[i] for i in order], True


def _print_json(pred: dict) -> None:
    from lapnet.checkpoint import json_text

    sys.stdout.write(json_text(pred) + "\n")
    sys.stdout.flush()


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def follow_race(run: RaceRun | str | Path, file: str | Path = "-", *, follow: bool = False, race_laps: int | None = None,
                poll: float = 0.5, drivers: set[str] | None = None, emit: Callable[[dict], None] | None = None,
                say: Callable[[str], None] | None = None) -> dict:
    """`lapnet race live`: follow a race lap by lap from a CSV feed, one prediction per lap.

    The input is CSV lines, header first: stdin ("-", read as it comes), a growing FILE with
    `follow` (like tail -f; a file still empty is waited for), or a finished FILE, replayed in
    the order the laps ended (`replay_order`) with its length read from it (`file_race_laps`)
    unless `race_laps` is given. Stdin or `follow` without `race_laps`: the length is estimated
    from the race's pace (`features.estimate_race_laps`), with a warning. Ctrl-C ends the
    stream quietly.

    Args:
        run: a loaded run or its directory. file: "-" (stdin) or a CSV path.
        follow: keep reading a growing FILE. race_laps: the scheduled length, or None.
        poll: seconds between reads of a growing file. drivers: emit only these drivers' laps
            (every lap is still read: a lap's features depend on the whole field); None: all.
        emit: called with each prediction (default: one JSON line on stdout).
        say: called with each line for the user, notes and warnings naming the input line
            (default: stderr).

    Returns:
        {"laps": laps read and predicted, "drivers": drivers seen, "missing": asked-for drivers never seen}.

    Raises:
        LapnetError: an empty input, no usable lap, text that is not UTF-8, none of `drivers`
            in the stream (one line each); `LiveRace`'s errors for the run and the header.
    """
    emit, say, file = emit or _print_json, say or _print_err, str(file)
    note = None  # said once the run and the header are read, so that an error stays one line
    if race_laps is None and file != "-" and not follow:
        race_laps = file_race_laps(Path(file))  # a finished race replayed: its length is in the file
        if race_laps is not None:
            note = f"lapnet: race length {race_laps} laps, the file's last lap (--race-laps overrides)"
    live = LiveRace(run, total_laps=race_laps)  # None: estimated from the race's pace
    stream = sys.stdin if file == "-" else open(file, encoding="utf-8")
    n_out = 0  # laps read and predicted (emitted or filtered out by `drivers`)
    try:
        header = read_header(stream, follow, poll)
        if not header.strip():
            raise LapnetError(f"{file}: empty input (no CSV header)")
        live.set_header(header.strip("\r\n"))
        if file != "-" and not follow:  # a finished race replayed: laps in the order they ended, as a feed gives them
            lines, moved = replay_order(stream, live.header)
            if moved:
                note = (note + "\n" if note else "") + (f"lapnet: {file} lists laps in another order than they ended: "
                                                      "replayed by session Time, as a live feed gives them")
        else:
            lines = stream_lines(stream, follow, poll)
        warned_length = False
        for lineno, line in lines:
            line = line.strip("\r\n")
            if not line.strip():
                continue
            if not warned_length:  # said once a lap has come, so that an error before stays one line
                warned_length = True
                if note is not None:
                    say(note)
                if race_laps is None:
                    say("lapnet: warning: --race-laps not given: estimating the race length from its green-flag "
                        "pace (7.7% off on average over the 15 real races; each JSON line says race_laps)")
            try:
                pred = live.push_csv_line(line)
            except SkipLap as e:
                say(f"lapnet: warning: line {lineno}: skipped lap: {' '.join(str(e).split())}")
                continue
            for notice in live.notices:  # each kind said once
                say(f"lapnet: warning: line {lineno}: {notice}")
            live.notices.clear()
            n_out += 1
            if drivers is None or pred["driver"] in drivers:
                emit(pred)
        if n_out == 0:
            raise LapnetError(f"{file}: no usable laps in the stream")
    except KeyboardInterrupt:
        pass
    except UnicodeDecodeError as e:
        raise LapnetError(f"{'stdin' if file == '-' else file}: not UTF-8 text ({e.reason}: "
                          f"{e.object[e.start:e.start + 1]!r})") from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    missing = sorted(drivers - set(live.drivers)) if drivers is not None and n_out else []
    if missing:
        seen = ", ".join(sorted(live.drivers))
        if len(missing) == len(drivers):
            raise LapnetError(f"--driver {','.join(missing)}: no lap in the stream (drivers: {seen})")
        say(f"lapnet: warning: --driver {','.join(missing)}: no lap in the stream (drivers: {seen})")
    return {"laps": n_out, "drivers": sorted(live.drivers), "missing": missing}
