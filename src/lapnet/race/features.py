"""Per-lap features any FastF1 export has, computed causally so live and batch agree exactly.

A lap's features use only what was known when that lap ended: the driver's own laps so far,
and the other cars' laps that ended earlier (by session `Time`). `RaceFeaturizer.step`
turns one lap into one feature vector; batch featurisation feeds a race's laps through the
same code in `Time` order, so `lapnet race live` (one lap at a time) reproduces batch
predictions to the last bit.

Lap times are normalised per race, so one model serves every circuit: a lap is expressed in
percent of the race's reference lap (`ref`), the median Scored lap among the first
`REF_LAPS` Scored laps of the race (a running median before that). A whole-race median would
peek at the future, which live mode cannot do.

Forecast targets (what the model learns, all in percent of `ref`): at lap t, horizon k,
`100 * (LapTime[t+k] - base[t]) / ref[t]`, where `base[t]` is the driver's last Scored lap of
the stint (persistence): the net starts from persistence and learns the residual. (Starting
horizons >= 2 from the 3-lap mean was tried: it fails badly on races whose pace drifts within a
stint, Baku, Suzuka, Interlagos.) When the stint has no Scored lap yet (an out-lap, the start,
a restart), targets count from `ref` instead (the net reads `has_base`); the nets' loss leaves
those origins out by default (`models.race_loss`'s fresh_weight 0, `RaceTrainConfig.fresh_weight`:
trained on, they cost the Scored laps' forecast), and a separate linear model forecasts there
(`models.FreshStart`, from FRESH_EXTRA: the field's pace now and the driver's against it). eval
scores them apart (the "fresh" block of `metrics.MASKS`). A target exists only when lap t+k
exists, is in the same stint, and is Scored.

Before the race's first Scored lap, `ref` is the median of its green timed laps that are no
in-, out- or restart lap (after a safety-car start, the first green lap is timed but not yet
"accurate"), and only when there is none, of any timed lap (`RaceFeaturizer.ref_source`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.race.schema import COMPOUNDS, NEUTRALISED_CODES, PHASES, RED_CODE, SLOW_RUNNING_CODES
from lapnet.race.schema import DRY_COMPOUNDS as DRY

HORIZONS = 10  # the forecaster predicts laps t+1 .. t+10 of the stint
PIT_AHEAD = 3  # pit call: does the driver pit within the next 3 laps
REF_LAPS = 60  # reference lap = median of the race's first 60 Scored laps (about 3 laps of the field)
# A Grand Prix is about 305 km, which takes about this long at green-flag pace: the race's
# length in laps times its reference lap (below), median over the 15 real 2023 races in
# ../shared/data/f1 (74 min at Monza to 105 min at Singapore). With the length not given,
# `RaceFeaturizer` estimates it as RACE_SECONDS / ref: off by 7.7% (4.5 laps) on average, 20%
# at worst, leaving each race out of the constant, against 14.8% for a fixed 60 laps.
RACE_SECONDS = 5283.0
DEFAULT_RACE_LAPS = 60  # until the first Scored lap gives a reference lap
PREV = 4  # the stint's 4 Scored laps before its last are inputs, each relative to the last
# The features' scales (ints, so that a decoded value is bit-identical whichever side does it): whatif, models, pit
# and baselines decode or re-encode features with these.
LAPS_SCALE = 30  # laps: tyre_life, laps_in_stint, laps_left (capped at 3), field_tyre are laps / 30
PCT_SCALE = 5  # % of the reference lap: lap_time, base, field_pace, field_pace_any, own_pace are / 5
STOPS_SCALE = 3  # stops: stint is (Stint - 1) / 3, pits_done the stops (capped at 3) / 3
FEW_LAPS_SCALE = 10  # a few laps: n_scored, since_neutral (laps) and field_pace_age (reference laps) are capped at 10, / 10

NET_FEATURES: tuple[str, ...] = (  # what the recurrent forecaster reads (the first columns of FEATURES)
    "lap_time",  # this lap, % of ref, clipped to [-10, 10], / 5
    "has_time",
    "scored",
    "base",  # the stint's last Scored lap (where the forecast starts), % of ref, / 5
    "stint_slope",  # slope of the stint's Scored laps, % of ref per lap, x 10
    "n_scored",  # Scored laps in the stint so far / 10 (capped at 1)
    "has_base",
    *(f"compound_{c.lower()}" for c in COMPOUNDS),
    "tyre_life",  # / 30
    "fresh_tyre",
    "stint",  # (Stint - 1) / 3
    "laps_in_stint",  # / 30
    "lap_frac",  # LapNumber / race laps
    "laps_left",  # / 30, capped at 3
    "position",  # / 20
    "gap_ahead",  # seconds to the car ahead on the same lap / 5, capped at 2
    "leader",
    "green",  # TrackStatus all '1' (or empty): no SC, VSC, red flag NOR yellow; not clean's Green column (not Neutralised: a '2' lap is Green but green 0)
    "yellow",
    "safety_car",
    "vsc",
    "red",
    "in_lap",
    "out_lap",
    "pits_done",  # / 3
    "two_compounds",  # has used two dry compounds (the rule that forces a stop)
    "field_pitting",  # share of the field that pitted in the last 3 reference laps
    *(f"prev_{j}" for j in range(1, PREV + 1)),  # the stint's j-th Scored lap before its last, minus the last, % of ref
    "gap_change",  # gap to the car ahead now minus one lap ago, seconds / 2
    "position_change",  # places gained since the previous lap / 3
    "field_more_stops",  # share of the field that has stopped more often than this driver
    "tyre_vs_field",  # tyre life minus the mean tyre life at which others pitted off this compound, / 10
    "has_field_stints",
    "sector_dev",  # this lap's worst sector against the stint's median sectors, % of ref
    "since_neutral",  # laps since the last safety car / VSC / red flag lap / 10 (1 = none in 10 laps)
    "field_slope",  # the median of the other drivers' current stint slopes, % of ref per lap, x 10
    # pit-call context (a stop answers the race around the car, not only its tyres)
    "tyre_race_frac",  # tyre life / race laps: stint length on the race's own scale
    "must_stop_late",  # no second dry compound yet (the rule forces a stop) x lap_frac
    "neutral_tyre",  # safety car / VSC now x tyre_race_frac: a cheap stop for worn tyres
    "field_pitted_1",  # share of the field that pitted within the last reference lap
    "ahead_pitted",  # the car one place ahead pitted within the last 2 reference laps (undercut cover)
    "behind_pitted",  # the car one place behind pitted within the last 2 reference laps
    "teammate_pitted",  # the teammate pitted within the last 2 reference laps
    # the field's latest laps: a common change (wind, rubber, a drying line) persists, one driver's slip does not
    "field_delta",  # median over the other drivers' latest Scored laps (ended within one reference lap) of lap minus their previous 3-lap mean, % of ref
    "own_vs_field",  # this driver's same quantity minus field_delta (0 when either is unknown)
    "ahead_delta",  # within 3 s of the car ahead: its lap minus ours, % of ref (held up by a slower car, or not)
    "ahead_pace",  # within 3 s of the car ahead: the median of its last 3 Scored laps minus ours, % of ref
    "drs",  # within 1 s of the car ahead (DRS range, and dirty air)
    *(f"opening_lap_{k}" for k in (2, 3, 4, 5)),  # lap 2..5: DRS opens on lap 3, the field spreads, fuel is heaviest
    *(f"restart_{k}" for k in (1, 2, 3)),  # k laps after a safety car / VSC / red flag lap (DRS closed, tyres cold)
    "race_trend",  # the race's pace trend so far: one slope over every Scored lap of every stint (offset per stint), % of ref per lap, x 10
)
# what a pit wall weighs beyond tyre age, for the pit call only (lapnet.race.pit.PitContext computes
# them; the definitions are in its docstring): the road behind against the race's pit loss, the
# stint's pace loss, the compound's typical stint in this race, laps left / laps into the stint,
# a safety car that has just come out
PIT_LEFT, PIT_STINT = 7, 6
PIT_EXTRA: tuple[str, ...] = (
    "pit_loss", "places_lost", "gap_behind", "free_stop", "pace_loss", "tyre_over_typ", "short_of_finish",
    "stop_needed", *(f"left_{k}" for k in range(PIT_LEFT)), *(f"stint_{k}" for k in range(1, PIT_STINT + 1)),
    "sc_new", "sc_new_need", "neutral_need",
)
# what the fresh-stint forecast reads beyond the lap vector (`models.FreshStart`): where the
# field's pace is now, how this driver ran against it, and the start itself. The nets learn
# from the stint's last Scored lap; an out-lap, the start or a restart has none, and the race's
# reference lap (the first laps' pace, on full tanks) is seconds off later in the race.
FRESH_EXTRA: tuple[str, ...] = (
    "field_pace",  # median of the other drivers' latest Scored laps (ended within FIELD_WINDOW reference laps), % of ref (clipped at 40), / 5
    "has_field_pace",
    "field_tyre",  # median tyre life of those laps / 30
    "field_pace_any",  # the same median over the other drivers' latest Scored laps however old (before a safety car), % of ref, / 5
    "has_field_pace_any",
    "field_pace_age",  # how long ago those laps ended: the median, in reference laps / 10, capped at 1
    "own_pace",  # median over the driver's last OWN_LAPS Scored laps (any stint) of lap minus the field's pace then, % of ref, / 5
    "has_own_pace",
    "opening_lap_1",  # the standing start's lap
    "green_seen",  # some car has finished a timed dry green-flag lap: lap 1 or a racing lap, no in-, out-, restart or wet lap (else no lap so far shows the race's pace)
)
FIELD_WINDOW = 2.0  # reference laps: a Scored lap older than this no longer tells the field's pace
OWN_LAPS = 5
FEATURES: tuple[str, ...] = NET_FEATURES + FRESH_EXTRA + PIT_EXTRA  # every lap vector: the forecaster reads NET_FEATURES, the pit model and FreshStart all (PIT_EXTRA last)


def num(v: Any) -> float:
    """A float, NaN for None/NaN/unparseable."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _clip(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else float(v)


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x (plain Python: this runs once per lap in live mode)."""
    n = len(points)
    mx = sum(a for a, _ in points) / n
    my = sum(b for _, b in points) / n
    sxx = sum((a - mx) ** 2 for a, _ in points)
    return sum((a - mx) * (b - my) for a, b in points) / sxx if sxx > 0 else 0.0


def flag(v: Any) -> bool:
    """A lap table's bool column read from one lap's dict: False for None/NaN, else bool(v)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return False
    return bool(v)


def estimate_race_laps(ref: float) -> int:
    """A race's length in laps from its reference lap (seconds): RACE_SECONDS / ref, rounded."""
    if not math.isfinite(ref) or ref <= 0:
        return DEFAULT_RACE_LAPS
    return max(1, round(RACE_SECONDS / ref))


def last_timed_lap(laps: pd.DataFrame) -> int | None:
    """A finished race's length as its table says it: the last lap anyone completed with a time.

    The one rule of every command that needs the length (`race_laps` for eval / predict / train,
    `race live` on a finished file, `calibrate`'s circuits, and batch cleaning's chequered flag,
    `clean._after_flag`): FastF1's generated rows after the flag carry the next lap number but
    no time, so they never count.

    Args:
        laps: one race's laps, parsed (LapTime in seconds, NaN when missing) or raw text
            (LapTime as written; an empty or 'NaT'-like cell is untimed).

    Returns:
        The lap number, or None when no lap has a time.
    """
    from lapnet.race.io import MISSING_STRINGS

    lt = laps["LapTime"]
    if pd.api.types.is_numeric_dtype(lt):
        timed = np.isfinite(lt.to_numpy(float))
    else:
        timed = lt.map(lambda v: isinstance(v, str) and v.strip().lower() not in MISSING_STRINGS
                       or isinstance(v, (int, float)) and math.isfinite(v)).to_numpy(bool)
    n = pd.to_numeric(laps["LapNumber"][timed], errors="coerce").max()
    return int(n) if np.isfinite(n) and n >= 1 else None


def race_laps(df: pd.DataFrame) -> int:
    """A finished race's scheduled length (`last_timed_lap`); without a timed lap, the highest lap number (at least 1)."""
    n = last_timed_lap(df)
    if n is None:
        top = pd.to_numeric(df["LapNumber"], errors="coerce").max()
        n = int(top) if np.isfinite(top) and top >= 1 else 1
    return n


@dataclass
class _Driver:
    stint_value: float = math.nan
    stint_id: int = 0  # counts stints as seen (a new one after every out-lap or Stint change)
    stint_laps: int = 0
    scored: list = field(default_factory=list)  # (LapNumber, LapTime) Scored laps of this stint
    pits: int = 0
    compounds: set = field(default_factory=set)
    tyres: int = 0  # bit k: COMPOUNDS[k] fitted on some lap so far (UNKNOWN never set)
    stops: int = 0  # stops so far: in-laps, none under a red flag or before an out-lap under one (`lap_ends`)
    counted_in: bool = False  # the previous lap was an in-lap counted in `stops`
    position: float = math.nan
    timed: bool = False  # has a timed lap (non-starters never count in the field)
    gap: float = math.nan
    since_neutral: int = 99
    slope: float = math.nan  # the current stint's slope (% of ref per lap), NaN before 3 Scored laps
    sectors: list = field(default_factory=list)  # (s1, s2, s3) of the stint's Scored laps
    last_in: float = -math.inf  # session time at which the driver's last in-lap ended
    team: str = ""
    dev: float = math.nan  # the latest Scored lap minus the mean of the stint's previous up to 3, % of ref
    dev_t: float = -math.inf  # session time at which that lap ended
    last_scored: tuple[float, float, float] = (-math.inf, math.nan, math.nan)  # (session time, lap time, tyre life) of the latest Scored lap
    vs_field: list = field(default_factory=list)  # Scored laps (any stint) minus the field's pace then, % of ref


@dataclass
class LapFeatures:
    """One lap's features plus the quantities that turn a prediction back into seconds."""

    x: np.ndarray  # (D,)
    base: float  # seconds: the stint's last Scored lap (NaN when the stint has none yet): forecasts start here
    ref: float  # seconds: the race's reference lap at this moment
    stint_id: int
    stop_loss: float = math.nan  # seconds: what a stop costs against two racing laps in this race so far (`PitContext`)
    stop_loss_neutral: float = math.nan  # seconds: what a stop under a safety car or VSC costs against staying out
    stop_stops: tuple[int, int] = (0, 0)  # the stops each of those is measured on so far (green, neutralised)
    tyres_used: int = 0  # bit k: the driver has run COMPOUNDS[k] by this lap (the two-compound rule, `whatif.rule_sets`)
    stops: int = 0  # the driver's stops by the end of this lap (`_Driver.stops`: what `whatif.rejoin` counts)


class RaceFeaturizer:
    """Turns the laps of ONE race, fed in session-time order, into feature vectors.

    Args:
        total_laps: the race's scheduled length (for `lap_frac` and `laps_left`), or None to
            estimate it as the laps go by (`estimate_race_laps`: RACE_SECONDS over the
            reference lap, from the race's first Scored lap on; DEFAULT_RACE_LAPS before).
    """

    def __init__(self, total_laps: int | None):
        from lapnet.race.pit import PitContext  # it reads this class's state: imported here, not at the top

        self.scheduled = None if total_laps is None else max(int(total_laps), 1)
        self.max_lap = 0  # the highest lap number seen: an estimated race is at least this long
        self.pit_context = PitContext()
        self.drivers: dict[str, _Driver] = {}
        self.ref_pool: list[float] = []  # the first REF_LAPS Scored lap times
        # until a Scored lap exists: green timed laps that are no in-, out- or restart lap (Scored
        # but for FastF1's accuracy flag: the first green lap after a safety-car start), else any
        # timed lap (laps behind a safety car: a poor reference, see `ref_source`)
        self.green_pool: list[float] = []
        self.fallback_pool: list[float] = []
        # lap number -> (session time, lap time, driver, an in- or out-lap, stops made by then) of the cars that ended it
        self.lap_ends: dict[int, list[tuple[float, float, str, bool, int]]] = {}
        self.pit_times: list[tuple[float, str]] = []  # (session time, driver) of in-laps
        self.n_timed = 0
        self.stint_ends: dict[str, list[float]] = {}  # compound -> tyre life at which stints ended in the pits
        self.trend = _PooledTrend()
        self.green_seen = False  # some car has finished a timed lap under green flags (FRESH_EXTRA)
        self.now = -math.inf  # the latest session Time seen (a lap without a Time is taken to end then)
        self._ref_cache: tuple[int, int, int, float] = (-1, -1, -1, math.nan)

    @property
    def total_laps(self) -> int:
        """The race's length in laps: as given, else estimated (`estimate_race_laps`); never
        fewer than the laps seen (a length given too short would push the race fraction past 1)."""
        if self.scheduled is not None:
            return max(self.scheduled, self.max_lap)
        est = estimate_race_laps(self.ref) if self.ref_pool else DEFAULT_RACE_LAPS  # ref: the pool's cached median
        return max(est, self.max_lap)

    @property
    def estimated(self) -> bool:
        """True when `total_laps` is an estimate."""
        return self.scheduled is None

    @property
    def ref(self) -> float:
        key = (len(self.ref_pool), len(self.green_pool), len(self.fallback_pool))
        if key != self._ref_cache[:3]:  # the pools only grow, and stop at REF_LAPS: cache the median
            pool = self.ref_pool or self.green_pool or self.fallback_pool
            self._ref_cache = (*key, statistics.median(pool) if pool else math.nan)
        return self._ref_cache[3]

    @property
    def ref_source(self) -> str:
        """Where `ref` comes from: "scored" laps, "green" laps (no Scored lap in the race yet), or
        "any" timed laps (no green lap yet either: a start or restart behind the safety car or
        under a red flag, where no lap so far says what green pace is), or "none"."""
        return "scored" if self.ref_pool else "green" if self.green_pool else "any" if self.fallback_pool else "none"

    def step(self, lap: Mapping[str, Any]) -> LapFeatures:
        """Ingest one cleaned lap (a row of `clean_laps`) and return its features (FEATURES)."""
        f = self._step_net(lap)
        fresh = self._step_fresh(lap, f.ref)
        extra = self.pit_context.step(self, lap)  # reads the state the lap has just updated
        f.x = np.concatenate([f.x, fresh, extra])  # (D,)
        f.stop_loss, f.stop_loss_neutral = self.pit_context.stop_loss, self.pit_context.stop_loss_neutral
        f.stop_stops = self.pit_context.stop_stops
        return f

    def field_pace(self, drv: str, t_end: float, ref: float, window: float = FIELD_WINDOW) -> tuple[float, float, float]:
        """The median lap time, tyre life and age (seconds before `t_end`) of the other drivers'
        latest Scored laps that ended within `window` reference laps before `t_end` (NaN, NaN,
        NaN when there is none)."""
        if not math.isfinite(t_end):
            return math.nan, math.nan, math.nan
        recent = [d.last_scored for k, d in self.drivers.items()
                  if k != drv and t_end - window * ref < d.last_scored[0] <= t_end]
        if not recent:
            return math.nan, math.nan, math.nan
        tyres = [v[2] for v in recent if math.isfinite(v[2])]
        return (statistics.median(v[1] for v in recent), statistics.median(tyres) if tyres else math.nan,
                statistics.median(t_end - v[0] for v in recent))

    def _step_fresh(self, lap: Mapping[str, Any], ref: float) -> np.ndarray:
        """The FRESH_EXTRA part of `step` (after `_step_net` has ingested the lap)."""
        drv = str(lap["Driver"])
        st = self.drivers[drv]
        t_end = num(lap.get("Time"))
        if math.isfinite(t_end):
            self.now = max(self.now, t_end)
        else:  # no Time: the lap ended after every lap read before it (session order), at the latest Time seen
            t_end = self.now
        pace, tyre, _ = self.field_pace(drv, t_end, ref)
        pace_any, _, age = self.field_pace(drv, t_end, ref, window=math.inf)
        lap_time = num(lap.get("LapTime"))
        timed = flag(lap.get("HasTime")) and math.isfinite(lap_time)
        n = num(lap.get("LapNumber"))
        has_end = math.isfinite(num(lap.get("Time")))  # a lap without Time may be read before it ended
        if (timed and has_end and not NEUTRALISED_CODES.intersection(str(lap.get("TrackStatus") or ""))
                and not flag(lap.get("InLap")) and not flag(lap.get("Restart")) and not flag(lap.get("Wet"))
                and (n == 1 or not flag(lap.get("OutLap")))):
            # a dry lap at the race's pace, or a standing start's lap 1 (FastF1's out-lap of every car); not a
            # restart lap after a red flag (timed through the stoppage), an out-lap (the pit lane) or a wet lap
            self.green_seen = True
        if flag(lap.get("Scored")) and timed and has_end:  # as `_step_net` counts it; the field's when it ended
            # a Scored lap joins the field's pace for the others, and the driver's own pace against the field
            if math.isfinite(pace):
                st.vs_field = (st.vs_field + [(lap_time - pace) / ref * 100])[-OWN_LAPS:]
            tyre_life = num(lap.get("TyreLife"))
            st.last_scored = (t_end, lap_time,
                              tyre_life if math.isfinite(tyre_life) else float(st.stint_laps))  # `_step_net`'s fallback
        own = statistics.median(st.vs_field) if st.vs_field else math.nan
        return np.asarray([
            _clip((pace / ref - 1) * 100, -40, 40) / PCT_SCALE if math.isfinite(pace) else 0.0,
            float(math.isfinite(pace)),
            tyre / LAPS_SCALE if math.isfinite(tyre) else 0.0,
            _clip((pace_any / ref - 1) * 100, -40, 40) / PCT_SCALE if math.isfinite(pace_any) else 0.0,
            float(math.isfinite(pace_any)),
            min(age / ref / FEW_LAPS_SCALE, 1.0) if math.isfinite(age) else 0.0,
            _clip(own, -5, 5) / PCT_SCALE if math.isfinite(own) else 0.0,
            float(math.isfinite(own)),
            float(n == 1),
            float(self.green_seen),
        ], dtype=np.float32)

    def _step_net(self, lap: Mapping[str, Any]) -> LapFeatures:
        """The NET_FEATURES part of `step`."""
        drv = str(lap["Driver"])
        st = self.drivers.setdefault(drv, _Driver())
        n = num(lap["LapNumber"])
        if math.isfinite(n) and n > self.max_lap:
            self.max_lap = int(n)
        t_end = num(lap.get("Time"))
        lap_time = num(lap.get("LapTime"))
        has_time = flag(lap.get("HasTime")) and math.isfinite(lap_time)
        scored = flag(lap.get("Scored")) and has_time
        in_lap, out_lap = flag(lap.get("InLap")), flag(lap.get("OutLap"))
        stint_value = num(lap.get("Stint"))
        compound = str(lap.get("Compound") or "UNKNOWN").upper()
        compound = compound if compound in COMPOUNDS else "UNKNOWN"

        # a new stint starts on an out-lap or when FastF1's Stint number changes
        new_stint = out_lap or (math.isfinite(stint_value) and stint_value != st.stint_value and st.stint_laps > 0)
        if new_stint or st.stint_laps == 0:
            if st.stint_laps > 0:
                st.stint_id += 1
            st.stint_laps, st.scored, st.sectors = 0, [], []
        if math.isfinite(stint_value):
            st.stint_value = stint_value
        st.stint_laps += 1
        if compound in DRY:
            st.compounds.add(compound)
        if compound != "UNKNOWN":
            st.tyres |= 1 << COMPOUNDS.index(compound)

        # the reference lap: updated before use, so this lap's own time counts once it is Scored
        if scored and len(self.ref_pool) < REF_LAPS:
            self.ref_pool.append(lap_time)
        if has_time and not self.ref_pool:
            green = (not flag(lap.get("Neutralised")) and not in_lap and not out_lap and not flag(lap.get("Restart"))
                     and not flag(lap.get("Wet")))
            if green and len(self.green_pool) < REF_LAPS:
                self.green_pool.append(lap_time)
            if not self.green_pool and len(self.fallback_pool) < REF_LAPS:
                self.fallback_pool.append(lap_time)
        ref = self.ref
        if not math.isfinite(ref) or ref <= 0:
            ref = lap_time if has_time and lap_time > 0 else 90.0  # nothing timed yet: any positive scale works

        if scored:
            prev = st.scored[-3:]
            st.dev = (lap_time - sum(b for _, b in prev) / len(prev)) / ref * 100 if prev else math.nan
            st.dev_t = t_end if math.isfinite(t_end) else -math.inf
            st.scored.append((n, lap_time))
            if math.isfinite(n):  # a lap without a number cannot place itself on the trend
                self.trend.add((drv, st.stint_id), n, lap_time)
        elif st.stint_laps == 1:
            st.dev = math.nan
        base = st.scored[-1][1] if st.scored else math.nan  # the stint's last Scored lap: the forecasts' start
        slope = _slope(st.scored[-8:]) / ref * 100.0 if len(st.scored) >= 3 else 0.0
        st.slope = slope if len(st.scored) >= 3 else math.nan
        # the field's pace trend (track evolution, fuel, wear) is shared: it tells one driver's trend better than his own noisy laps
        slopes = [d.slope for k, d in self.drivers.items() if k != drv and math.isfinite(d.slope)]
        field_slope = statistics.median(slopes) if slopes else 0.0

        # gap to the car that ended the same lap just before us (causal: it ended earlier)
        gap, leader, ahead_time, ahead_drv = 10.0, 1.0, math.nan, None
        # stops so far, what `lap_ends` carries for `whatif.rejoin`: a stop is an in-lap, unless it or its out-lap ran
        # under a red flag (tyres changed in the pit lane during a stoppage: no stop paid for; it is taken back when
        # the out-lap shows the red flag)
        red_now = RED_CODE in str(lap.get("TrackStatus") or "")
        if out_lap and red_now and st.counted_in:
            st.stops -= 1
        st.counted_in = in_lap and not red_now
        st.stops += int(st.counted_in)
        if math.isfinite(n) and math.isfinite(t_end):
            ends = self.lap_ends.setdefault(int(n), [])
            earlier = max((e for e in ends if e[0] <= t_end), default=None)
            if earlier is not None:
                (gap, ahead_time, ahead_drv), leader = (t_end - earlier[0], earlier[1], earlier[2]), 0.0
            ends.append((t_end, lap_time if has_time else math.nan, drv, in_lap or out_lap, st.stops))

        if has_time and not st.timed:
            st.timed = True
            self.n_timed += 1
        tyre_life = num(lap.get("TyreLife"))
        if not math.isfinite(tyre_life):
            tyre_life = float(st.stint_laps)
        team = lap.get("Team")
        if isinstance(team, str) and team:
            st.team = team
        if in_lap:
            st.pits += 1
            if math.isfinite(t_end):
                st.last_in = t_end
            self.stint_ends.setdefault(compound, []).append(tyre_life)
            if math.isfinite(t_end):
                self.pit_times.append((t_end, drv))
        field_pitting = 0.0
        if math.isfinite(t_end) and self.n_timed > 1:
            window = PIT_AHEAD * ref
            self.pit_times = [(tp, d) for (tp, d) in self.pit_times if tp > t_end - 2 * window]  # forget old stops
            recent_pitters = {d for (tp, d) in self.pit_times if t_end - window < tp <= t_end and d != drv}
            field_pitting = len(recent_pitters) / (self.n_timed - 1)

        status = str(lap.get("TrackStatus") or "")
        st.since_neutral = 0 if NEUTRALISED_CODES.intersection(status) else st.since_neutral + 1
        lap_pct = (lap_time / ref - 1.0) * 100.0 if has_time else 0.0

        prev = [(b - base) / ref * 100 for _, b in st.scored[-PREV - 1 : -1]][::-1]  # newest first, relative to the last
        prev += [0.0] * (PREV - len(prev))
        gap_change = 0.0 if leader or not math.isfinite(st.gap) else _clip(min(gap, 10.0) - st.gap, -4, 4) / 2
        st.gap = math.nan if leader else min(gap, 10.0)
        prev_pos = st.position
        pos_now = num(lap.get("Position"))
        pos_change = _clip(prev_pos - pos_now, -3, 3) / 3 if math.isfinite(prev_pos) and math.isfinite(pos_now) else 0.0
        others = [d for k, d in self.drivers.items() if k != drv and d.timed]
        more_stops = sum(d.pits > st.pits for d in others) / len(others) if others else 0.0
        ended = self.stint_ends.get(compound, [])
        tyre_vs_field = _clip((tyre_life - sum(ended) / len(ended)) / 10, -3, 3) if ended else 0.0
        secs = tuple(num(lap.get(f"Sector{j}Time")) for j in (1, 2, 3))
        sector_dev = 0.0
        if all(math.isfinite(v) for v in secs):
            if st.sectors:
                meds = [statistics.median(s[j] for s in st.sectors[-8:]) for j in range(3)]
                sector_dev = _clip(max(v - m for v, m in zip(secs, meds)) / ref * 100, -2, 5)
            if scored:
                st.sectors.append(secs)
        if math.isfinite(pos_now):
            st.position = pos_now
        pos = st.position if math.isfinite(st.position) else 10.0
        # who pitted lately, seen from the end of this lap (their in-laps ended earlier: causal)
        pitted_1 = ahead_p = behind_p = mate_p = 0.0
        if math.isfinite(t_end):
            def pitted_within(d: _Driver, laps: float) -> float:
                return float(t_end - laps * ref < d.last_in <= t_end)

            if others:
                pitted_1 = sum(pitted_within(d, 1) for d in others) / len(others)
            if math.isfinite(st.position):
                for k, d in self.drivers.items():
                    if k == drv:
                        continue
                    if d.position == st.position - 1:
                        ahead_p = pitted_within(d, 2)
                    elif d.position == st.position + 1:
                        behind_p = pitted_within(d, 2)
                    if st.team and d.team == st.team:
                        mate_p = pitted_within(d, 2)
        field_delta, own_vs_field = 0.0, 0.0
        if math.isfinite(t_end):
            devs = [d.dev for k, d in self.drivers.items()
                    if k != drv and math.isfinite(d.dev) and t_end - ref < d.dev_t <= t_end]
            if devs:
                field_delta = _clip(statistics.median(devs), -3, 3)
                own = st.dev if scored and math.isfinite(st.dev) else math.nan
                own_vs_field = _clip(own - field_delta, -3, 3) if math.isfinite(own) else 0.0
        ahead_pace = 0.0
        ahead_st = self.drivers.get(ahead_drv) if ahead_drv is not None else None
        if gap < 3.0 and ahead_st is not None and ahead_st.scored and st.scored:
            mine = statistics.median(b for _, b in st.scored[-3:])
            ahead_pace = _clip((statistics.median(b for _, b in ahead_st.scored[-3:]) - mine) / ref * 100, -3, 3)
        must_stop = compound in DRY and len(st.compounds) < 2
        tyre_frac = min(tyre_life / self.total_laps, 1.5)
        neutral = bool(SLOW_RUNNING_CODES.intersection(status))  # a red flag is no cheap stop (schema.SLOW_RUNNING_CODES)
        lap_n = n if math.isfinite(n) else 0.0
        x = [
            _clip(lap_pct, -10, 10) / PCT_SCALE,
            float(has_time),
            float(scored),
            _clip((base / ref - 1) * 100, -10, 10) / PCT_SCALE if st.scored else 0.0,
            _clip(slope, -1, 1) * 10,
            min(len(st.scored), FEW_LAPS_SCALE) / FEW_LAPS_SCALE,
            float(bool(st.scored)),
            *(float(compound == c) for c in COMPOUNDS),
            tyre_life / LAPS_SCALE,
            float(flag(lap.get("FreshTyre"))),
            ((stint_value if math.isfinite(stint_value) else st.stint_id + 1) - 1) / STOPS_SCALE,
            st.stint_laps / LAPS_SCALE,
            lap_n / self.total_laps,
            _clip(self.total_laps - lap_n, 0, 3 * LAPS_SCALE) / LAPS_SCALE,
            pos / 20,
            min(gap, 10.0) / 5,
            leader,
            float(status == "" or set(status) <= {"1"}),  # green: all clear, a yellow ('2') too excluded (clean's Green is not)
            float("2" in status),
            float("4" in status),
            float("6" in status or "7" in status),
            float("5" in status),
            float(in_lap),
            float(out_lap),
            min(st.pits, STOPS_SCALE) / STOPS_SCALE,
            float(len(st.compounds) >= 2),
            field_pitting,
            *(_clip(v, -5, 5) for v in prev),
            gap_change,
            pos_change,
            more_stops,
            tyre_vs_field,
            float(bool(ended)),
            sector_dev,
            min(st.since_neutral, FEW_LAPS_SCALE) / FEW_LAPS_SCALE,
            _clip(field_slope, -1, 1) * 10,
            tyre_frac,
            float(must_stop) * min(lap_n / self.total_laps, 1.0),
            float(neutral) * tyre_frac,
            pitted_1,
            ahead_p,
            behind_p,
            mate_p,
            field_delta,
            own_vs_field,
            _clip((ahead_time - lap_time) / ref * 100, -3, 3) if has_time and gap < 3.0 and math.isfinite(ahead_time) else 0.0,
            ahead_pace,
            float(gap < 1.0 and not leader),
            *(float(lap_n == k) for k in (2, 3, 4, 5)),
            *(float(st.since_neutral == k) for k in (1, 2, 3)),
            _clip(self.trend.slope() / ref * 100, -1, 1) * 10,
        ]
        return LapFeatures(np.asarray(x, dtype=np.float32), base, float(ref), st.stint_id, tyres_used=st.tyres,
                           stops=st.stops)


class _PooledTrend:
    """The race's lap-time trend so far: the least-squares slope of lap time on lap number over
    every Scored lap of every stint, each stint with its own offset (so stops, drivers and
    compounds do not look like a trend). Kept as running sums: O(1) per lap.

    With per-stint sums n, Sx, Sy, the pooled slope is
    (sum xy - sum_s Sx Sy / n) / (sum x^2 - sum_s Sx^2 / n).
    """

    MIN_SXX = 20.0  # lap^2 of within-stint spread before the slope counts (about 10 stints of 3 laps)

    def __init__(self):
        self.stints: dict[tuple, list[float]] = {}  # stint -> [n, Sx, Sy]
        self.sxy = self.sxx = self.between_xy = self.between_xx = 0.0

    def add(self, stint: tuple, x: float, y: float) -> None:
        acc = self.stints.setdefault(stint, [0.0, 0.0, 0.0])
        n, sx, sy = acc
        if n:
            self.between_xy -= sx * sy / n
            self.between_xx -= sx * sx / n
        acc[:] = n + 1, sx + x, sy + y
        self.between_xy += acc[1] * acc[2] / acc[0]
        self.between_xx += acc[1] * acc[1] / acc[0]
        self.sxy += x * y
        self.sxx += x * x

    def slope(self) -> float:
        """Seconds per lap (0 until the stints spread over MIN_SXX)."""
        den = self.sxx - self.between_xx
        return (self.sxy - self.between_xy) / den if den >= self.MIN_SXX else 0.0


def check_features(names: list[str] | tuple[str, ...]) -> None:
    """Refuse a run trained on another feature list (its weights would read the wrong inputs).

    Raises:
        LapnetError: one line naming up to 4 features the run lacks and 4 it has that lapnet
            no longer computes (runs saved before a feature change: retrain them).
    """
    if not isinstance(names, (list, tuple)) or not all(isinstance(f, str) for f in names):
        shown = repr(names) if len(repr(names)) <= 40 else repr(names)[:37] + "..."
        raise LapnetError(f"the run's 'features' is {shown}, not a list of names: retrain it with `lapnet race train`")
    if tuple(names) != FEATURES:
        missing = [f for f in FEATURES if f not in names]
        extra = [f for f in names if f not in FEATURES]

        def some(xs: list[str]) -> str:  # a name from a run's config.json may be anything: cut short
            xs = [x if len(x) <= 40 else x[:37] + "..." for x in xs]
            return ", ".join(xs[:4]) + (f" and {len(xs) - 4} more" if len(xs) > 4 else "") if xs else "none"

        what = f"missing {some(missing)}; extra {some(extra)}" if missing or extra else "the same ones in another order"
        raise LapnetError(
            f"run was trained on other features than this lapnet computes ({what}): retrain it with `lapnet race train`"
        )


def session_order(df: pd.DataFrame) -> np.ndarray:
    """Row order in which laps ended: by session `Time`, a lap without one right after the
    driver's previous lap (ties broken by lap number, then driver)."""
    t = pd.to_numeric(df["Time"], errors="coerce") if "Time" in df.columns else pd.Series(np.nan, index=df.index)
    key = df[["Driver", "LapNumber"]].copy()
    key["_t"] = t.to_numpy()
    key = key.sort_values(["Driver", "LapNumber"])
    key["_t"] = key.groupby("Driver")["_t"].ffill().fillna(-1.0)  # a missing Time inherits the previous lap's
    key = key.sort_values(["_t", "LapNumber", "Driver"], kind="mergesort")
    return key.index.to_numpy()


def featurize_race(df: pd.DataFrame, total_laps: int | str | None = None) -> pd.DataFrame:
    """Features of one race's cleaned laps.

    Args:
        df: one race's laps from `clean_laps`.
        total_laps: the scheduled race length; None or "file": the last lap number in `df`
            (right for a finished race); "estimate": estimated lap by lap from the race's pace,
            as `race live` does without --race-laps (`RaceFeaturizer`).

    Returns:
        A frame aligned with `df` (same index) holding the feature columns `FEATURES` and
        `_base`, `_ref`, `_stop_loss`, `_stop_loss_neutral` (seconds), `_stop_stops`,
        `_stop_stops_neutral` (the stops those are measured on), `_stint_id`, `_tyres_used`
        (bit k: the driver has run COMPOUNDS[k] by this lap) and `_stops` (his stops by then).
    """
    if total_laps is None or total_laps == "file":
        total_laps = race_laps(df)
    elif total_laps == "estimate":
        total_laps = None
    elif not isinstance(total_laps, (int, np.integer)):
        raise LapnetError(f"race length: a number of laps, 'file' or 'estimate', got {total_laps!r}")
    fz = RaceFeaturizer(total_laps)
    records = df.to_dict("index")
    xs, bases, refs, stints, idx, losses, neutral, counts, tyres, stops = [], [], [], [], [], [], [], [], [], []
    for i in session_order(df):
        f = fz.step(records[i])
        xs.append(f.x)
        bases.append(f.base)
        refs.append(f.ref)
        losses.append(f.stop_loss)
        neutral.append(f.stop_loss_neutral)
        counts.append(f.stop_stops)
        stints.append(f.stint_id)
        tyres.append(f.tyres_used)
        stops.append(f.stops)
        idx.append(i)
    out = pd.DataFrame(np.stack(xs) if xs else np.zeros((0, len(FEATURES))), index=idx, columns=list(FEATURES))
    out["_base"], out["_ref"], out["_stint_id"], out["_stop_loss"], out["_stop_loss_neutral"] = bases, refs, stints, losses, neutral
    out["_stop_stops"] = [c[0] for c in counts]
    out["_stop_stops_neutral"] = [c[1] for c in counts]
    out["_tyres_used"] = np.asarray(tyres, np.int64)
    out["_stops"] = np.asarray(stops, np.int64)
    return out.loc[df.index]


@dataclass
class Sequences:
    """Per-driver sequences of one or more races, padded to the longest.

    Shapes: N sequences (one per race and driver), T laps, D features, K horizons.
    """

    x: np.ndarray  # (N, T, D) float32 features
    lengths: np.ndarray  # (N,) laps per sequence
    target: np.ndarray  # (N, T, K) % of ref: lap t+k minus the forecast's start at t (0 where masked): see the module docstring
    # (N, T, K) bool: lap t+k exists, same stint, Scored; the loss counts these where the stint has a Scored
    # lap at t (`base` finite, the batch's has_base) unless fresh_weight > 0 (`models.race_loss`)
    target_mask: np.ndarray
    future: np.ndarray  # (N, T, K) seconds of lap t+k when it is in the same stint and timed, else NaN
    future_timed: np.ndarray  # (N, T, K) bool: lap t+k in the same stint has a time (the "all laps" mask)
    origin_scored: np.ndarray  # (N, T) bool: lap t itself is Scored (metrics count only these origins)
    pit: np.ndarray  # (N, T) float: pits within the next PIT_AHEAD laps
    pit_mask: np.ndarray  # (N, T) bool: the driver has a lap after t
    phase: np.ndarray  # (N, T) int64 index into PHASES (0 where unknown)
    phase_mask: np.ndarray  # (N, T) bool: a Phase label exists (simulated laps only)
    base: np.ndarray  # (N, T) seconds: last Scored lap of the stint, NaN when none yet
    ref: np.ndarray  # (N, T) seconds
    lap_time: np.ndarray  # (N, T) seconds, NaN when missing
    lap_number: np.ndarray  # (N, T) float
    stint_id: np.ndarray  # (N, T) int, -1 for padding
    compound: np.ndarray  # (N, T) int index into COMPOUNDS
    row: np.ndarray  # (N, T) int: position of the lap in the input frame, -1 for padding
    keys: list  # (race, driver) for each sequence
    stop_loss: np.ndarray  # (N, T) seconds: what a stop costs against two racing laps in the race so far (`PitContext`)
    stop_loss_neutral: np.ndarray  # (N, T) seconds: the same for a stop under a safety car or VSC, against staying out
    stop_stops: np.ndarray  # (N, T, 2) int: the race's stops those two are measured on so far (0: the prior alone)
    time: np.ndarray  # (N, T) seconds: the session Time the lap ended (NaN when missing)
    tyres_used: np.ndarray  # (N, T) int: bit k set when the driver has run COMPOUNDS[k] by lap t (0 for padding)
    stops: np.ndarray  # (N, T) int: the driver's stops by the end of lap t (no tyre change under a red flag counted)


def build_sequences(df: pd.DataFrame, race_length: int | str | Mapping[str, int | str] = "file") -> Sequences:
    """Featurise cleaned laps (one or more races) into padded per-driver sequences.

    Args:
        df: the output of `clean_laps` (needs Race, Driver, LapNumber, LapTime, Time, Stint,
            Compound, TyreLife, Position, TrackStatus and the mask columns InLap, OutLap,
            HasTime, Scored).
        race_length: each race's length as `featurize_race` takes it ("file", "estimate" or laps),
            or a mapping race -> that, one per race (a race it leaves out: "file").
    """
    if len(df) == 0:
        raise LapnetError("no laps to featurise")
    df = df.reset_index(drop=True)
    race_col = df["Race"] if "Race" in df.columns else pd.Series("race", index=df.index)
    def length(race: Any) -> int | str:
        return race_length.get(str(race), "file") if isinstance(race_length, Mapping) else race_length

    feats = pd.concat([featurize_race(g, length(r)) for r, g in df.groupby(race_col, sort=False)]).loc[df.index]
    groups = [(k, g.sort_values("LapNumber").index.to_numpy()) for k, g in df.groupby([race_col, df["Driver"]], sort=False)]
    N, T, D, K = len(groups), max(len(ix) for _, ix in groups), len(FEATURES), HORIZONS
    s = Sequences(
        x=np.zeros((N, T, D), np.float32),
        lengths=np.zeros(N, np.int64),
        target=np.zeros((N, T, K), np.float32),
        target_mask=np.zeros((N, T, K), bool),
        future=np.full((N, T, K), np.nan),
        future_timed=np.zeros((N, T, K), bool),
        origin_scored=np.zeros((N, T), bool),
        pit=np.zeros((N, T), np.float32),
        pit_mask=np.zeros((N, T), bool),
        phase=np.zeros((N, T), np.int64),
        phase_mask=np.zeros((N, T), bool),
        base=np.full((N, T), np.nan),
        ref=np.ones((N, T)),
        lap_time=np.full((N, T), np.nan),
        lap_number=np.full((N, T), np.nan),
        stint_id=np.full((N, T), -1, np.int64),
        compound=np.zeros((N, T), np.int64),
        row=np.full((N, T), -1, np.int64),
        keys=[k for k, _ in groups],
        stop_loss=np.full((N, T), np.nan),
        stop_loss_neutral=np.full((N, T), np.nan),
        stop_stops=np.zeros((N, T, 2), np.int64),
        time=np.full((N, T), np.nan),
        tyres_used=np.zeros((N, T), np.int64),
        stops=np.zeros((N, T), np.int64),
    )
    fx = feats[list(FEATURES)].to_numpy(np.float32)
    scored_all = df["Scored"].fillna(False).astype(bool).to_numpy()
    inlap_all = df["InLap"].fillna(False).astype(bool).to_numpy()
    lt_all = pd.to_numeric(df["LapTime"], errors="coerce").to_numpy(float)
    ln_all = pd.to_numeric(df["LapNumber"], errors="coerce").to_numpy(float)
    time_all = (pd.to_numeric(df["Time"], errors="coerce").to_numpy(float) if "Time" in df.columns
                else np.full(len(df), np.nan))
    comp = df["Compound"].astype(str).str.upper() if "Compound" in df.columns else pd.Series("UNKNOWN", index=df.index)
    comp_all = np.array([COMPOUNDS.index(c) if c in COMPOUNDS else COMPOUNDS.index("UNKNOWN") for c in comp])
    phase_all = df["Phase"].astype(str).to_numpy() if "Phase" in df.columns else None
    for i, (_, ix) in enumerate(groups):
        L = len(ix)
        s.lengths[i] = L
        s.row[i, :L] = ix
        s.x[i, :L] = fx[ix]
        base = feats["_base"].to_numpy(float)[ix]
        ref = feats["_ref"].to_numpy(float)[ix]
        sid = feats["_stint_id"].to_numpy()[ix]
        lt, ln, sc, pin = lt_all[ix], ln_all[ix], scored_all[ix], inlap_all[ix]
        s.base[i, :L], s.ref[i, :L], s.lap_time[i, :L] = base, ref, lt
        s.stop_loss[i, :L] = feats["_stop_loss"].to_numpy(float)[ix]
        s.stop_loss_neutral[i, :L] = feats["_stop_loss_neutral"].to_numpy(float)[ix]
        s.stop_stops[i, :L] = feats[["_stop_stops", "_stop_stops_neutral"]].to_numpy(np.int64)[ix]
        s.time[i, :L] = time_all[ix]
        s.tyres_used[i, :L] = feats["_tyres_used"].to_numpy(np.int64)[ix]
        s.stops[i, :L] = feats["_stops"].to_numpy(np.int64)[ix]
        s.origin_scored[i, :L] = sc
        s.lap_number[i, :L], s.stint_id[i, :L] = ln, sid
        s.compound[i, :L] = comp_all[ix]
        pos = {int(v): j for j, v in enumerate(ln) if np.isfinite(v)}
        for j in range(L):
            if not np.isfinite(ln[j]):
                continue
            for k in range(1, K + 1):
                q = pos.get(int(ln[j]) + k)
                if q is None or sid[q] != sid[j] or not np.isfinite(lt[q]):
                    continue
                s.future[i, j, k - 1] = lt[q]
                s.future_timed[i, j, k - 1] = np.isfinite(base[j])
                if not sc[q]:
                    continue
                start = base[j] if np.isfinite(base[j]) else ref[j]  # no Scored lap in the stint yet: the race's reference
                s.target[i, j, k - 1] = (lt[q] - start) / ref[j] * 100.0
                s.target_mask[i, j, k - 1] = True
            ahead = [pos.get(int(ln[j]) + k) for k in range(1, PIT_AHEAD + 1)]
            s.pit[i, j] = float(any(q is not None and pin[q] for q in ahead))
            s.pit_mask[i, j] = j < L - 1
        if phase_all is not None:
            ph = phase_all[ix]
            for j, p in enumerate(ph):
                if p in PHASES:
                    s.phase[i, j], s.phase_mask[i, j] = PHASES.index(p), True
    return s
