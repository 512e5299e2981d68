"""Live mode's race: `LiveRace`, a race followed lap by lap, each driver's recurrent state and
the race's feature state carried from one lap to the next (`lapnet.race.live` says what it equals
in batch).

Before a lap is stepped, `LiveRace._admit` settles what it says about the race (the grid, a feed
joining mid-race, a gap, laps out of order, a corrupted LapNumber or Time, FastF1's generated
rows) by the thresholds below; `push` then takes one model step and returns the lap's
prediction as a JSON-able dict.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.io import MissingContextWarning, car_number, missing_context
from lapnet.race.features import PHASES, RaceFeaturizer, num
from lapnet.race.schema import WET_COMPOUNDS
from lapnet.race.models import INTERVAL90
from lapnet.race.inputs import SLOW_SCORED, SPRINT_SECONDS, sprint_note
from lapnet.race.runs import RaceRun, forecast_source, live_phase, load_run, pit_window_threshold
from lapnet.race.whatif import CHOICES, live_record, rejoin_live, require_fresh_start, tyre_wear, what_if
from lapnet.race.live.lap import _LAP_MASKS, SkipLap, _fast_lap, _finite, _live_compound, lap_masks

_TEXT_COLS = {c: str for c in ("TrackStatus", "Driver", "Team", "Compound", "Race", "Phase", "DriverNumber")}


ORDER_SLACK = 5.0  # seconds: a lap ending this much before one already read is out of session order
# a lap ending more than this before one already processed came late (FastF1's Times are whole
# milliseconds): said once (`LiveRace._admit`), as laps out of order by less than ORDER_SLACK
# move the calls of the laps around them too; `race live --reorder SECONDS` puts them in order
TIME_ROUNDING = 0.001
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


_PIT_NOW_NAMES = {"stop_cost": "stop_cost_s", "in_out": "in_out_s"}  # live_record's names -> `race pit-now --json`'s


def _pit_now_names(rec: dict | None) -> dict | None:
    """`whatif.live_record`'s field with the names `race pit-now --json` gives the same numbers
    (stop_cost_s, in_out_s), in the same order."""
    return None if rec is None else {_PIT_NOW_NAMES.get(k, k): v for k, v in rec.items()}


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
    """A race followed lap by lap with a trained run (see the package docstring, `lapnet.race.live`).

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
        """The race is sprint-length (`inputs.sprint_races`: its length times the reference lap
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
