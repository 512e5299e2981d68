"""A Formula 1 race simulator that knows the truth real data lacks.

    laps = simulate(n_races=10, seed=7)              # FastF1-style lap table, 20 cars
    laps = simulate(10, seed=7, calibration=cal)     # circuits, tyres, noise fitted to real races

Every race is R x C cars x L laps of arrays; one Python loop runs over the laps (gaps and
traffic depend on the previous lap), everything inside it is NumPy over all races and cars.

Lap time model (seconds), per car and lap (the oracle is all of it except the noise):

    oracle = base_lap + car_pace + compound_offset[c] + deg_c(wear) + fuel_s_per_kg * fuel
             + evolution(lap) + mode_pace + cold_tyre(temp) + dirty_air(gap_ahead)
             + in-lap / out-lap / lap-1 / safety-car terms
    LapTime = oracle + N(0, noise_std)  [+ Exp(slow_mean_s) on a slow_prob share of laps]

so the oracle's MAE is E|N(0, s)| = s * sqrt(2/pi): the noise floor. (Calibrated runs add
the occasional slow lap real data shows, and a slowly drifting pace per car inside the
oracle; both are off by default.)

Truth columns written beside FastF1's:
    FuelLoad        kg on board at the start of the lap.
    TyreTemp        degC, a first-order lag towards the mode's target (cold out-laps).
    GapToLeader     s behind the leader at the end of the lap.
    TrueDegradation s lost to tyre wear on this lap (deg_c(wear), 0 on a fresh tyre).
    Phase           push | conserve | pit_window.
    OracleLapTime   the expected lap time without noise.

Phases and the signature each leaves (what a tagger can learn):
    pit_window  the in-lap and the 3 laps before it (`PIT_WINDOW_LAPS`): neutral pace, but
                the stop that ends the window (slow in-lap, very slow out-lap, TyreLife
                reset, new compound) is at most 3 laps later — a bidirectional tagger sees it.
    push        pace -0.25 s and tyre wear x1.45 (degradation grows faster, hotter tyres).
    conserve    pace +0.25 s and tyre wear x0.6; a safety-car/VSC lap is conserve unless it
                is in a pit window (pit_window takes precedence: in `simulate(10, seed=7)`
                107 of the 1017 SC/VSC car-laps are pit_window, 910 conserve).
    Outside pit windows a driver switches between push and conserve as a Markov chain
    (stays with probability 0.85: stretches of ~7 laps), so a mode is a visible step of
    ~0.5 s in lap time plus a change in the degradation slope, 2-3x the noise (0.15 s).

Constants and their sources (rounded; "typical" = public 2022-2024 strategy previews by
Pirelli and team briefings, checked against the 15 real 2023 races in ../shared/data/f1):
    fuel: 110 kg at the start of every race (FIA F1 Technical Regulations art. 30.5, max race
    fuel), 1.7 kg/lap burnt (110 / (laps + 1) on races over 63 laps, so that it lasts; x0.6 on
    SC/VSC laps), 0.03 s per kg (rule of thumb "10 kg = 0.3 s" per ~5 km lap).
    compound offsets SOFT -0.55 / MEDIUM 0 / HARD +0.45 s (Pirelli's 0.4-0.7 s steps).
    degradation: SOFT quadratic, MEDIUM linear, HARD logarithmic in wear (laps, scaled by
    the mode), each with a cliff (quadratic loss past a wear threshold); ~1.5 s lost over a
    typical stint (15 SOFT / 25 MEDIUM / 35 HARD laps).
    pit loss per circuit 19-29 s (Pirelli/F1 previews; the real files give in-lap +2-5 s and
    out-lap +15-20 s over the median green lap), 25 % on the in-lap and 75 % on the out-lap;
    a stop under SC costs 55 %, under VSC 70 % (the field is slow while you are in the pits).
    safety car: laps ~45 % slower (real files: SC laps 30-60 s slower), ~0.6 SC and ~0.4 VSC
    per race (2023 season: 15 races, 11 with SC or VSC); lap 1 from a standing start +6 s.
    track evolution: -0.5 s over a race, rubbering-in with a 15-lap time constant.
    dirty air: up to +0.4 s when less than 1.2 s behind another car.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError

if TYPE_CHECKING:  # pragma: no cover
    from lapnet.race.calibrate import Calibration

__all__ = ["simulate", "simulate_to_file", "summarize", "simulation_bytes", "check_simulation_size", "SimParams", "Circuit", "CompoundModel", "degradation", "PIT_WINDOW_LAPS", "DRIVERS"]

NEVER = 10_000.0  # a lap number no race reaches (no such stop / event)
FAR = 1e9  # session time of a car no longer running: behind everyone
PIT_WINDOW_LAPS = 3  # laps before the in-lap that are labelled pit_window (plus the in-lap)
# Peak memory of `simulate` per car-lap slot (races x cars x the longest race's laps): the
# (R, C, L) buffers of the lap loop, then the table's columns (built once, copied into the
# DataFrame). Measured with ru_maxrss: 646 bytes at 500 and 643 at 2000 races (71-lap
# races); rounded up. Writing the table (CSV or Parquet) adds nothing to that peak.
SIM_BYTES_PER_CAR_LAP = 700
SIM_MEMORY_SHARE = 0.5  # refuse a simulation whose estimate exceeds this share of the memory available
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")  # a race label prefix: letters, digits, _ . -

DRIVERS: tuple[tuple[str, str, str], ...] = (  # (code, car number, team) of a 2023-like grid
    ("VER", "1", "Red Bull Racing"), ("PER", "11", "Red Bull Racing"), ("HAM", "44", "Mercedes"),
    ("RUS", "63", "Mercedes"), ("LEC", "16", "Ferrari"), ("SAI", "55", "Ferrari"), ("NOR", "4", "McLaren"),
    ("PIA", "81", "McLaren"), ("ALO", "14", "Aston Martin"), ("STR", "18", "Aston Martin"), ("GAS", "10", "Alpine"),
    ("OCO", "31", "Alpine"), ("ALB", "23", "Williams"), ("SAR", "2", "Williams"), ("BOT", "77", "Alfa Romeo"),
    ("ZHO", "24", "Alfa Romeo"), ("MAG", "20", "Haas F1 Team"), ("HUL", "27", "Haas F1 Team"),
    ("TSU", "22", "AlphaTauri"), ("RIC", "3", "AlphaTauri"),
)


@dataclass(frozen=True)
class Circuit:
    """A track: race distance in laps, a typical green race lap, and the pit-stop time loss."""

    name: str
    laps: int
    base_lap_s: float
    pit_loss_s: float
    lap_trend_s: float = 0.0  # s per lap beyond the fuel burn (a calibrated track's own evolution)
    deg_scale: float = 1.0  # tyre wear on this track against the compound curves


# Approximate 2023 figures: race laps (official), median green race lap (from the real files
# where we have them, else typical), pit loss (Pirelli/F1 previews).
DEFAULT_CIRCUITS: tuple[Circuit, ...] = (
    Circuit("bahrain", 57, 97.0, 23.0),
    Circuit("jeddah", 50, 92.0, 20.0),
    Circuit("melbourne", 58, 82.0, 19.0),
    Circuit("baku", 51, 106.0, 20.5),
    Circuit("miami", 57, 92.0, 20.0),
    Circuit("barcelona", 66, 80.0, 22.0),
    Circuit("montreal", 70, 77.0, 19.0),
    Circuit("spielberg", 71, 69.0, 20.0),
    Circuit("silverstone", 52, 92.0, 20.5),
    Circuit("spa", 44, 110.0, 19.5),
    Circuit("monza", 51, 86.0, 24.0),
    Circuit("singapore", 62, 97.0, 28.0),
    Circuit("suzuka", 53, 96.0, 22.5),
    Circuit("austin", 56, 100.0, 20.0),
    Circuit("mexico", 71, 82.0, 22.0),
    Circuit("interlagos", 71, 75.0, 21.0),
)


@dataclass(frozen=True)
class CompoundModel:
    """Degradation of one dry compound as a function of wear w (laps, scaled by mode).

    deg(w) = linear * w + quad * w**2 + log * ln(1 + w) + cliff_rate * max(0, w - cliff)**2
    """

    offset_s: float  # fresh-tyre pace against MEDIUM (negative = faster)
    linear: float = 0.0
    quad: float = 0.0
    log: float = 0.0
    cliff: float = 40.0
    cliff_rate: float = 0.05
    stint_laps: float = 25.0  # typical stint length (sets where the planned stops fall)


DEFAULT_COMPOUNDS: dict[str, CompoundModel] = {
    "SOFT": CompoundModel(offset_s=-0.55, linear=0.05, quad=0.0030, cliff=22.0, cliff_rate=0.06, stint_laps=16.0),
    "MEDIUM": CompoundModel(offset_s=0.0, linear=0.060, cliff=32.0, cliff_rate=0.05, stint_laps=25.0),
    "HARD": CompoundModel(offset_s=0.45, log=0.40, linear=0.01, cliff=45.0, cliff_rate=0.04, stint_laps=34.0),
}

# (compounds in stint order, weight): always two different dry compounds (the sporting rule).
ONE_STOP: tuple[tuple[str, ...], ...] = (("MEDIUM", "HARD"), ("HARD", "MEDIUM"), ("SOFT", "HARD"), ("SOFT", "MEDIUM"))
TWO_STOP: tuple[tuple[str, ...], ...] = (("SOFT", "MEDIUM", "HARD"), ("MEDIUM", "HARD", "MEDIUM"), ("MEDIUM", "HARD", "HARD"), ("SOFT", "HARD", "MEDIUM"))


@dataclass(frozen=True)
class SimParams:
    """The constants of the lap loop and its events (see the module docstring for their sources).

    The race set-up's random draws (grid order noise, the two-stop share's clip, the in-lap
    jitter's limits, when a safety car may start, used sets from qualifying) keep their
    numbers in `simulate`.
    """

    circuits: tuple[Circuit, ...] = DEFAULT_CIRCUITS
    compounds: dict[str, CompoundModel] = field(default_factory=lambda: dict(DEFAULT_COMPOUNDS))
    n_cars: int = 20
    fuel_start_kg: float = 110.0
    fuel_burn_kg: float = 1.7
    fuel_s_per_kg: float = 0.03
    evolution_s: float = 0.5  # total track evolution over a race
    evolution_tau: float = 15.0
    car_pace_sd: float = 0.35  # spread of the field's pace (s per lap)
    noise_std: float = 0.15  # lap-time noise: the oracle's MAE is noise_std * sqrt(2/pi)
    drift_std: float = 0.0  # a car's slowly drifting pace (AR(1), part of the oracle); off by default
    slow_prob: float = 0.0  # share of green laps with an extra exponential slowdown (noise); off by default
    slow_mean_s: float = 1.5
    drift_rho: float = 0.0
    push_pace_s: float = -0.25
    conserve_pace_s: float = 0.25
    push_wear: float = 1.45
    conserve_wear: float = 0.6
    sc_wear: float = 0.3
    mode_stay: float = 0.85
    one_stop_share: float = 0.55
    stop_jitter_laps: float = 2.0
    in_lap_share: float = 0.25  # share of the pit loss on the in-lap; the rest on the out-lap
    sc_stop_discount: float = 0.55
    vsc_stop_discount: float = 0.70
    sc_per_race: float = 0.6
    vsc_per_race: float = 0.4
    sc_laps_mean: float = 4.0
    sc_slow: float = 0.45  # SC laps are 45 % slower
    vsc_slow: float = 0.35
    yellow_prob: float = 0.03  # laps with a local yellow ('2'), no pace effect
    lap1_loss_s: float = 6.0
    lap1_per_grid_s: float = 0.15
    dirty_air_s: float = 0.4
    dirty_air_gap_s: float = 1.2
    cold_s_per_deg: float = 0.02
    dnf_prob: float = 0.05
    deleted_prob: float = 0.004
    inaccurate_prob: float = 0.01
    # Session time and tyre temperature (degC): modelling choices unless a source is given.
    session_start_s: float = 3600.0  # session time (s) when pole starts lap 1: an hour in, as in FastF1 (13 of the 15 real 2023 races: 62-63 min)
    grid_start_gap_s: float = 0.25  # s later per grid slot that a car's lap 1 starts (a standing start): a modelling choice
    start_tyre_temp: float = 85.0  # every car's tyre temperature before lap 1 (warmed by blankets and the formation lap): a modelling choice
    tyre_temp_neutral: float = 80.0  # the temperature tyres tend to on SC/VSC laps: a modelling choice
    tyre_temp_push: float = 105.0  # ... on a push lap: a modelling choice
    tyre_temp_conserve: float = 95.0  # ... on a conserve lap: a modelling choice
    tyre_temp_pit_window: float = 100.0  # ... on a pit-window lap: a modelling choice
    out_lap_tyre_temp: float = 70.0  # the new set's temperature on its out-lap (blankets, then the pit lane): a modelling choice
    tyre_temp_lag: float = 0.6  # share of the gap to the target temperature closed per lap (a first-order lag): a modelling choice
    tyre_temp_optimum: float = 92.0  # below it a lap costs cold_s_per_deg per degree: a modelling choice
    # Neutralised laps (SC/VSC): modelling choices.
    sc_gap_per_place_s: float = 0.8  # behind the SC the gap to the leader closes down to this per place in the running order
    sc_close_share: float = 0.5  # share of a car's gap beyond that closed per SC lap
    sc_close_max: float = 0.25  # the closing on one SC lap is at most this share of the circuit's base lap
    vsc_pace_share: float = 0.3  # a VSC lap keeps this share of the car's green-lap time above the base lap
    neutral_fuel_burn: float = 0.6  # fuel burnt on an SC/VSC lap, as a share of a green lap's
    # Pit-lane times (session time of PitInTime and PitOutTime): modelling choices.
    pit_in_at: float = 0.93  # PitInTime: this share of the in-lap's time after its start
    pit_out_at: float = 0.6  # PitOutTime: this share of the out-lap's pit loss after the out-lap's start

    @classmethod
    def from_calibration(cls, cal: "Calibration") -> "SimParams":
        """Circuits, compounds (quadratic degradation fits), fuel, noise, pit and SC rates from a Calibration."""
        base = cls()
        fuel_s_per_lap = -float(cal.fuel_s_per_kg) * base.fuel_burn_kg  # what the fuel term already gives
        med = cal.compounds.get("MEDIUM") or next(iter(cal.compounds.values()))
        circuits = []
        for c in cal.circuits:
            extra = float(c.lap_trend_s) - fuel_s_per_lap
            # The real base pace is a median over the race: take out what the simulator adds on
            # average (fuel half burnt, half the track trend, a mid-stint tyre).
            mid = (c.laps - 1) / 2
            age = med.stint_laps / 2
            added = (
                cal.fuel_s_per_kg * (base.fuel_start_kg - base.fuel_burn_kg * mid)
                + extra * mid
                + c.deg_scale * (med.deg_linear_s * age + med.deg_quad_s * age**2)
            )
            circuits.append(Circuit(c.name, int(c.laps), float(c.base_lap_s) - added, float(c.pit_loss_s), extra, float(c.deg_scale)))
        circuits = tuple(circuits)
        compounds = dict(base.compounds)
        for name, cc in cal.compounds.items():
            old = compounds.get(name, DEFAULT_COMPOUNDS["MEDIUM"])
            compounds[name] = replace(
                old, offset_s=float(cc.offset_s), linear=float(cc.deg_linear_s), quad=float(cc.deg_quad_s), log=0.0,
                stint_laps=float(cc.stint_laps),
                # real stints show no cliff: put it past the longest, even for a driver pushing all stint
                cliff=1.1 * base.push_wear * float(cc.stint_laps_p95),
            )
        # The push/conserve modes are a slow process of their own (stretches of ~7 laps): they
        # take their share of the real residual's slow part, the AR(1) drift gets the rest.
        mode_var = ((base.conserve_pace_s - base.push_pace_s) / 2) ** 2
        drift = float(np.sqrt(max(cal.pace_drift_s**2 - mode_var, 0.0)))
        noise = float(cal.lap_noise_s)
        return replace(
            base,
            circuits=circuits,
            compounds=compounds,
            fuel_s_per_kg=float(cal.fuel_s_per_kg),
            evolution_s=0.0,  # each calibrated circuit's lap_trend_s holds its track evolution
            noise_std=noise,
            drift_std=drift,
            car_pace_sd=float(cal.car_pace_sd_s),
            slow_prob=float(cal.slow_lap_prob),
            slow_mean_s=float(cal.slow_lap_mean_s),
            drift_rho=float(cal.pace_drift_rho),
            in_lap_share=float(np.clip(cal.pit_in_s / max(cal.pit_loss_s, 1e-6), 0.05, 0.6)),
            sc_per_race=float(cal.sc_per_race),
            vsc_per_race=float(cal.vsc_per_race),
            sc_laps_mean=float(cal.sc_laps_mean),
            one_stop_share=float(cal.one_stop_share),
        )


def degradation(model: CompoundModel, wear: np.ndarray, scale: float | np.ndarray = 1.0) -> np.ndarray:
    """Seconds lost to tyre wear.

    Args:
        model: the compound's curve.
        wear: laps of wear (any shape).
        scale: the track's wear factor on the smooth part (broadcast with `wear`); the cliff
            stays where the compound's life ends.

    Returns:
        Seconds, the shape of `wear` broadcast with `scale`.
    """
    w = np.maximum(wear, 0.0)
    over = np.maximum(w - model.cliff, 0.0)
    return scale * (model.linear * w + model.quad * w**2 + model.log * np.log1p(w)) + model.cliff_rate * over**2


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux's MemAvailable; else the free
    physical pages); None when the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def simulation_bytes(n_races: int, params: SimParams | None = None) -> int:
    """Estimated peak memory of `simulate(n_races, params=params)` in bytes:
    races x cars x the longest circuit's laps x `SIM_BYTES_PER_CAR_LAP` (700)."""
    p = params if params is not None else SimParams()
    longest = max(int(c.laps) for c in p.circuits)
    return int(n_races) * int(p.n_cars) * longest * SIM_BYTES_PER_CAR_LAP


def check_simulation_size(n_races: int, params: SimParams | None = None) -> None:
    """Refuse (LapnetError, one line) `n_races` races whose arrays would need more than half the
    memory available now (`simulation_bytes`); `simulate` calls it first. A caller that
    simulates later (race train's --pretrain-sim and --phase-sim) can call it up front."""
    p = params if params is not None else SimParams()
    need = simulation_bytes(n_races, p)
    avail = _available_memory()
    if avail is None or need <= SIM_MEMORY_SHARE * avail:
        return
    per_race = simulation_bytes(1, p)
    most = int(SIM_MEMORY_SHARE * avail // per_race)
    longest = max(int(c.laps) for c in p.circuits)
    raise LapnetError(
        f"simulate: {int(n_races):,} races of {p.n_cars} cars x up to {longest} laps need about {need / 1e9:,.1f} GB of memory "
        f"({SIM_BYTES_PER_CAR_LAP} bytes per car-lap), more than half the {avail / 1e9:.1f} GB available now: at most "
        f"{most:,} races per call on this machine (simulate more in several calls with other seeds and race labels)"
    )


def _plans(strategies, n_cars: int, n_laps: np.ndarray, comp_names: list[str]):
    """Check `simulate(strategies=)` and turn it into (car index, compound indices (3,), in-laps (2,))."""
    if not strategies:
        return []
    codes = [d[0] for d in DRIVERS[:n_cars]]
    last = int(n_laps.min()) - 2  # the latest in-lap every race can take
    plans = []
    for code, spec in strategies.items():
        what = f"strategy for {code!r}"
        if str(code).upper() not in codes:
            raise LapnetError(f"{what}: no such driver (the simulator's drivers: {', '.join(codes)})")
        try:
            compounds, in_laps = spec
            compounds, in_laps = [str(x).upper() for x in compounds], [int(x) for x in in_laps]
        except (TypeError, ValueError):
            raise LapnetError(f"{what}: give (compounds, in-laps), e.g. (('MEDIUM', 'HARD'), (30,))") from None
        if not 1 <= len(compounds) <= 3 or len(in_laps) != len(compounds) - 1:
            raise LapnetError(f"{what}: 1 to 3 stints and one in-lap fewer than stints, got {compounds} and {in_laps}")
        if bad := [c for c in compounds if c not in comp_names]:
            raise LapnetError(f"{what}: unknown compound(s) {bad} (dry compounds: {', '.join(comp_names)})")
        if any(b <= a for a, b in zip([1, *in_laps], in_laps)) or any(not 2 <= x <= last for x in in_laps):
            raise LapnetError(f"{what}: in-laps must rise, from lap 2 to lap {last} (the shortest race's "
                              f"laps - 2), got {in_laps}")
        plan = [comp_names.index(c) for c in compounds] + [-1] * (3 - len(compounds))
        plans.append((codes.index(str(code).upper()), plan, [float(x) for x in in_laps] + [NEVER] * (2 - len(in_laps))))
    return plans


def _forced_sc(safety_car, n_laps: np.ndarray) -> tuple[int, int] | None:
    """Check `simulate(safety_car=)`: (first lap, laps) -> the same, or None."""
    if safety_car is None:
        return None
    try:
        first, laps = (int(v) for v in safety_car)
        if any(isinstance(v, bool) or float(v) != int(v) for v in safety_car):
            raise ValueError
    except (TypeError, ValueError):
        raise LapnetError(f"safety_car: give (first lap, laps), e.g. (20, 4), got {safety_car!r}") from None
    last = int(n_laps.min()) - 2  # as the random safety cars: over before the last lap of the shortest race
    if not (2 <= first <= last and laps >= 1):
        raise LapnetError(f"safety car (--safety-car FIRST:LAPS): the first lap must be 2 to {last} (the shortest "
                          f"race's laps - 2) and LAPS at least 1, got lap {first} for {laps} lap{'s' if laps != 1 else ''}")
    return first, laps


def simulate(
    n_races: int, seed: int = 0, calibration: "Calibration | None" = None, *, params: SimParams | None = None, label: str = "sim",
    strategies: Mapping[str, tuple[Sequence[str], Sequence[int]]] | None = None,
    safety_car: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Simulate `n_races` races of 20 cars into a FastF1-style lap table with truth columns.

    Args:
        n_races: number of races (>= 1). Refused when the estimated peak memory
            (`simulation_bytes`: 700 bytes per race x car x lap of the longest circuit, about
            1 GB per 1,000 races of 20 cars) exceeds half the memory available now.
        seed: the same seed gives the same table, bit for bit. The random draws are made for
            all races at once, so `simulate(1, s)` is not the first race of `simulate(10, s)`.
        calibration: a `lapnet.race.calibrate.Calibration` fitted to real races; its circuits,
            tyres, fuel effect, noise, pit loss and SC rates replace the defaults.
        params: explicit constants (overrides `calibration`).
        label: the races are named `{label}_0000`, `{label}_0001`, ... (letters, digits,
            `_`, `.` and `-`, at most 40 characters). Give two simulations different labels
            to use them together (race clean/train refuse one race name in two tables).
        strategies: a what-if: driver code -> (compounds, in-laps), e.g. {"VER": (("MEDIUM",
            "HARD"), (30,))}, one to three stints. That car runs this plan in every race, stopping
            on exactly these laps (safety car or not); every random draw stays as without it, so
            the same seed gives the same races (safety cars, pace, noise, the other cars'
            plans) and the difference between two runs is the plan's (common random numbers).
        safety_car: a what-if: (first lap, laps), a safety car on those laps of every race (the
            first lap at most the shortest race's laps - 2; in each race it ends by that race's
            last lap but one), besides the random ones, which stay as drawn;
            the other cars react as to any safety car (a car due to stop within 6 laps stops
            under it), a `strategies` car runs its plan. Two runs, one with a plan stopping
            under it and one without, give the stop's worth under that safety car.

    Returns:
        One row per car and lap, sorted by Race, Driver, LapNumber, in `schema.SCHEMA`
        dtypes: Time, Driver, DriverNumber, LapTime, LapNumber, Stint, PitOutTime, PitInTime,
        Compound, TyreLife, FreshTyre, Team, LapStartTime, TrackStatus, Position, Deleted,
        FastF1Generated, IsAccurate, Race ('sim_0007'), Circuit, and the truth: FuelLoad,
        TyreTemp, GapToLeader, TrueDegradation, Phase, OracleLapTime.

    Raises:
        LapnetError: bad `n_races`, `seed`, `label`, `strategies` or `safety_car`; a simulation too big for
            the memory available; constants that give a lap time that is not finite and positive.
    """
    if isinstance(n_races, bool) or not isinstance(n_races, (int, np.integer)) or n_races < 1:
        raise LapnetError(f"n_races must be a whole number >= 1, got {n_races!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LapnetError(f"seed must be a whole number >= 0, got {seed!r}")
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise LapnetError(
            f"label must be 1 to 40 letters, digits, '_', '.' or '-' (starting with a letter or digit), got {label!r}"
        )
    if params is None:
        params = SimParams.from_calibration(calibration) if calibration is not None else SimParams()
    p = params
    check_simulation_size(int(n_races), p)
    rng = np.random.default_rng(int(seed))
    R, C = int(n_races), int(p.n_cars)
    race_idx = np.arange(R)

    # --- race set-up: circuits, cars, strategies, safety cars -------------------------------
    circ = np.resize(rng.permutation(len(p.circuits)), R)  # (R,) every circuit once before any repeats
    n_laps = np.array([p.circuits[i].laps for i in circ])  # (R,)
    base = np.array([p.circuits[i].base_lap_s for i in circ])[:, None]  # (R, 1)
    pit_loss = np.array([p.circuits[i].pit_loss_s for i in circ])[:, None]  # (R, 1)
    trend = np.array([p.circuits[i].lap_trend_s for i in circ])[:, None]  # (R, 1)
    L = int(n_laps.max())

    car_pace = rng.normal(0.0, p.car_pace_sd, (R, C))  # (R, C)
    grid = np.argsort(np.argsort(car_pace + rng.normal(0.0, 0.15, (R, C)), axis=1), axis=1)  # (R, C) 0 = pole

    comp_names = ["SOFT", "MEDIUM", "HARD"]
    deg_scale = np.array([p.circuits[i].deg_scale for i in circ])[:, None]  # (R, 1)
    # Abrasive tracks (deg_scale > 1) see more two-stoppers.
    p_two = np.clip((1.0 - p.one_stop_share) * deg_scale, 0.05, 0.95)  # (R, 1)
    two = rng.random((R, C)) < p_two  # (R, C) two-stoppers
    s1 = rng.integers(len(ONE_STOP), size=(R, C))
    s2 = rng.integers(len(TWO_STOP), size=(R, C))
    strat = np.full((R, C, 3), -1)  # (R, C, 3) compound index per stint, -1 = no such stint
    one_tab = np.array([[comp_names.index(c) for c in s] + [-1] for s in ONE_STOP])  # (4, 3)
    two_tab = np.array([[comp_names.index(c) for c in s] for s in TWO_STOP])  # (4, 3)
    strat[:] = np.where(two[..., None], two_tab[s2], one_tab[s1])
    life = np.array([p.compounds[c].stint_laps for c in comp_names])  # (3,)
    stint_life = np.where(strat >= 0, life[np.maximum(strat, 0)], 0.0)  # (R, C, 3)
    frac = np.cumsum(stint_life, axis=2) / stint_life.sum(axis=2, keepdims=True)  # (R, C, 3)
    nl = n_laps[:, None, None].astype(float)
    stops = np.round(frac[..., :2] * nl + rng.normal(0.0, p.stop_jitter_laps, (R, C, 2)))  # (R, C, 2) in-lap numbers
    stops[..., 1] = np.where(two, stops[..., 1], NEVER)  # one-stoppers: no second stop
    stops[..., 0] = np.clip(stops[..., 0], 5, nl[..., 0] - 5)

    # Safety cars and VSCs: (R, L) status 0 green, 1 SC, 2 VSC; their first laps.
    status = np.zeros((R, L + 2), dtype=np.int8)
    sc_start = np.full((R, 5), NEVER)  # (R, 5) lap where an SC/VSC period starts (the 5th: `safety_car`'s)
    sc_kind = np.zeros((R, 5), dtype=np.int8)
    for kind, rate, mean_len in ((2, p.vsc_per_race, 1.5), (1, p.sc_per_race, p.sc_laps_mean)):
        n_ev = np.minimum(rng.poisson(rate, R), 2)  # (R,)
        for k in range(2):
            start = 2 + (rng.random(R) * np.maximum(n_laps - 5, 1)).astype(int)  # (R,)
            dur = 1 + rng.poisson(max(mean_len - 1.0, 0.0), R)  # (R,)
            on = n_ev > k
            for r in np.flatnonzero(on):  # a handful of events in total: a loop is clearer
                a, b = start[r], min(start[r] + dur[r], n_laps[r] - 1)
                if b <= a:
                    continue
                if kind == 1 or not status[r, a:b].any():
                    status[r, a:b] = kind
                    slot = 2 * (kind - 1) + k
                    sc_start[r, slot], sc_kind[r, slot] = a, kind
    forced = _forced_sc(safety_car, n_laps)
    if forced is not None:  # after every draw: the random events stay, this one is laid over them
        a = forced[0]
        for r in range(R):
            status[r, a : min(a + forced[1], n_laps[r] - 1)] = 1
        sc_start[:, 4], sc_kind[:, 4] = a, 1
    status = status[:, 1 : L + 1]  # (R, L): index l-1 is lap l

    # Opportunistic stops: a car due to stop within 6 laps pits when the SC/VSC comes out.
    for slot in range(sc_start.shape[1]):
        q = sc_start[:, slot][:, None]  # (R, 1)
        for k in range(2):
            due = (stops[..., k] - q >= -2) & (stops[..., k] - q <= 6) & (q < NEVER)
            prev_ok = (q - (stops[..., 0] if k == 1 else 0)) >= 5
            stops[..., k] = np.where(due & prev_ok, q, stops[..., k])
    stops[..., 1] = np.where(two, np.maximum(stops[..., 1], stops[..., 0] + 4), NEVER)
    stops[..., 1] = np.where(stops[..., 1] > nl[..., 0] - 2, NEVER, stops[..., 1])  # too late: one stop
    for c, plan, in_laps in _plans(strategies, C, n_laps, comp_names):  # what-ifs: after every draw, so none moves
        strat[:, c], stops[:, c] = plan, in_laps
    under = np.zeros((R, C, 2))  # stop discount when pitting under SC/VSC
    for k in range(2):
        sl = np.clip(stops[..., k], 1, L).astype(int) - 1
        st = np.where(stops[..., k] < NEVER, status[race_idx[:, None], sl], 0)
        under[..., k] = np.select([st == 1, st == 2], [p.sc_stop_discount, p.vsc_stop_discount], 1.0)

    retire = np.where(rng.random((R, C)) < p.dnf_prob, rng.integers(2, L + 1, (R, C)), L + 1)  # (R, C) last lap run
    stops = np.where(stops > retire[..., None], NEVER, stops)  # a car that retires makes no later stops
    start_age = np.where(rng.random((R, C)) < 0.5, 1.0, rng.integers(2, 5, (R, C)).astype(float))  # used sets from quali

    # --- lap loop ----------------------------------------------------------------------------
    shape = (R, C, L)
    out = {k: np.full(shape, np.nan) for k in ("LapTime", "Oracle", "Time", "Start", "PitIn", "PitOut", "Tyre", "Fuel", "Temp", "Gap", "Deg", "Pos", "Stint")}
    comp_out = np.zeros(shape, dtype=np.int8)
    phase_out = np.zeros(shape, dtype=np.int8)  # 0 push, 1 conserve, 2 pit_window
    flags = {k: np.zeros(shape, dtype=bool) for k in ("Deleted", "Accurate", "Fresh", "Valid")}

    t_prev = p.session_start_s + p.grid_start_gap_s * grid  # (R, C) session time at the start line
    fuel = np.full((R, C), p.fuel_start_kg)
    # Teams fill up for the distance: long races (70 laps) burn less per lap to make 110 kg last.
    burn = np.minimum(p.fuel_burn_kg, p.fuel_start_kg / (n_laps + 1.0))[:, None]  # (R, 1)
    wear = start_age - 1.0
    age = start_age.copy()
    temp = np.full((R, C), p.start_tyre_temp)
    push = rng.random((R, C)) < 0.5
    stint = np.zeros((R, C), dtype=int)
    drift = rng.normal(0.0, p.drift_std, (R, C)) if p.drift_std > 0 else np.zeros((R, C))
    deg_models = [p.compounds[c] for c in comp_names]
    offsets = np.array([m.offset_s for m in deg_models])  # (3,)

    for lap in range(1, L + 1):
        active = (lap <= n_laps[:, None]) & (lap <= retire)  # (R, C)
        st = status[:, lap - 1][:, None]  # (R, 1)
        sc, vsc = st == 1, st == 2
        in_lap = (stops == lap).any(axis=2)  # (R, C)
        out_lap = (stops == lap - 1).any(axis=2) if lap > 1 else np.zeros((R, C), bool)  # lap after an in-lap
        if lap > 1:
            stint = stint + out_lap
            age = np.where(out_lap, 1.0, age + 1.0)
            wear = np.where(out_lap, 0.0, wear)
        comp = strat[race_idx[:, None], np.arange(C)[None, :], np.minimum(stint, 2)]  # (R, C)
        comp = np.maximum(comp, 0)

        window = ((stops - lap >= 0) & (stops - lap <= PIT_WINDOW_LAPS)).any(axis=2)  # (R, C)
        switch = rng.random((R, C)) > p.mode_stay
        push = np.where(out_lap, rng.random((R, C)) < 0.5, push ^ switch)
        neutral = sc | vsc
        phase = np.where(window, 2, np.where(neutral | ~push, 1, 0))  # (R, C)

        mode_pace = np.select([phase == 0, phase == 1], [p.push_pace_s, p.conserve_pace_s], 0.0)
        mode_pace = np.where(neutral, 0.0, mode_pace)
        wear_mult = np.select([phase == 0, phase == 1], [p.push_wear, p.conserve_wear], 1.0)
        wear = wear + np.where(neutral, p.sc_wear, wear_mult)
        deg = np.zeros((R, C))
        for i, m in enumerate(deg_models):
            deg = np.where(comp == i, degradation(m, wear, deg_scale), deg)

        target = np.where(neutral, p.tyre_temp_neutral, np.where(phase == 0, p.tyre_temp_push, np.where(phase == 1, p.tyre_temp_conserve, p.tyre_temp_pit_window)))
        temp = np.where(out_lap, p.out_lap_tyre_temp, temp + p.tyre_temp_lag * (target - temp))
        cold = p.cold_s_per_deg * np.maximum(p.tyre_temp_optimum - temp, 0.0)

        # Dirty air: the gap to the car ahead at the start of this lap (previous lap's order).
        t_masked = np.where(active, t_prev, FAR)
        order = np.argsort(t_masked, axis=1)  # (R, C)
        t_sorted = np.take_along_axis(t_masked, order, axis=1)
        gap_sorted = np.diff(t_sorted, axis=1, prepend=-FAR)  # (R, C) leader: huge
        gap_ahead = np.empty((R, C))
        np.put_along_axis(gap_ahead, order, gap_sorted, axis=1)
        dirty = p.dirty_air_s * np.clip(1.0 - gap_ahead / p.dirty_air_gap_s, 0.0, 1.0) * (lap > 1)

        evo = -p.evolution_s * (1.0 - np.exp(-lap / p.evolution_tau)) + trend * (lap - 1)
        if p.drift_std > 0:  # AR(1) pace drift: stationary with variance drift_std**2
            drift = p.drift_rho * drift + np.sqrt(1 - p.drift_rho**2) * p.drift_std * rng.normal(0.0, 1.0, (R, C))
        green = (
            base + car_pace + offsets[comp] + deg + p.fuel_s_per_kg * fuel + evo + mode_pace + cold + dirty + drift
        )  # (R, C)
        if lap == 1:
            green = green + p.lap1_loss_s + p.lap1_per_grid_s * grid
        # Neutralised laps: the field follows the SC (gaps close) or keeps a VSC delta.
        leader = np.min(t_masked, axis=1, keepdims=True)
        gap_lead = np.where(active, t_prev - leader, 0.0)
        # Behind the SC each car closes half its excess gap per lap down to ~0.8 s per place (sc_close_share, sc_gap_per_place_s).
        excess = np.maximum(gap_lead - p.sc_gap_per_place_s * _running_order(t_masked), 0.0)
        sc_time = base * (1 + p.sc_slow) - np.minimum(p.sc_close_share * excess, p.sc_close_max * base)
        vsc_time = base * (1 + p.vsc_slow) + p.vsc_pace_share * (green - base)
        oracle = np.where(sc, sc_time, np.where(vsc, vsc_time, green))
        stop_share = np.where(stops == lap, under, 0.0).sum(axis=2)  # discount of the stop ending this lap
        prev_share = np.where(stops == lap - 1, under, 0.0).sum(axis=2)
        oracle = oracle + in_lap * p.in_lap_share * pit_loss * stop_share
        oracle = oracle + out_lap * (1 - p.in_lap_share) * pit_loss * prev_share
        lap_time = oracle + rng.normal(0.0, p.noise_std, (R, C))
        if p.slow_prob > 0:  # a mistake or a backmarker: noise, not in the oracle
            slow = (rng.random((R, C)) < p.slow_prob) & ~neutral
            lap_time = lap_time + slow * rng.exponential(p.slow_mean_s, (R, C))
        t_new = t_prev + lap_time

        # Positions and gaps at the end of the lap, among cars still running.
        t_end = np.where(active, t_new, FAR)
        pos = np.argsort(np.argsort(t_end, axis=1), axis=1) + 1.0
        gap_leader = t_new - np.min(t_end, axis=1, keepdims=True)

        i = lap - 1
        out["LapTime"][..., i] = lap_time
        out["Oracle"][..., i] = oracle
        out["Time"][..., i] = t_new
        out["Start"][..., i] = t_prev
        out["PitIn"][..., i] = np.where(in_lap, t_prev + p.pit_in_at * lap_time, np.nan)
        out["PitOut"][..., i] = np.where(out_lap, t_prev + p.pit_out_at * (1 - p.in_lap_share) * pit_loss, np.nan)
        out["Tyre"][..., i] = age
        out["Fuel"][..., i] = fuel
        out["Temp"][..., i] = temp
        out["Gap"][..., i] = gap_leader
        out["Deg"][..., i] = deg
        out["Pos"][..., i] = pos
        out["Stint"][..., i] = stint + 1.0
        comp_out[..., i] = comp
        phase_out[..., i] = phase
        flags["Fresh"][..., i] = (stint > 0) | (start_age == 1.0)
        flags["Valid"][..., i] = active
        flags["Deleted"][..., i] = (rng.random((R, C)) < p.deleted_prob) & ~neutral & (lap > 1)
        flags["Accurate"][..., i] = ~(in_lap | out_lap | neutral | (lap == 1)) & (rng.random((R, C)) >= p.inaccurate_prob)

        fuel = np.maximum(fuel - burn * np.where(neutral, p.neutral_fuel_burn, 1.0), 0.0)
        t_prev = np.where(active, t_new, t_prev)

    yellow = rng.random((R, L)) < p.yellow_prob  # (R, L) laps with a local yellow somewhere
    _check_lap_times(out, flags["Valid"], circ, p)
    return _to_frame(out, comp_out, phase_out, flags, _status_strings(status, yellow), circ, p, label)


def _check_lap_times(out: dict[str, np.ndarray], valid: np.ndarray, circ: np.ndarray, p: SimParams) -> None:
    """Refuse (LapnetError) constants that gave a lap time lapnet cannot read: not finite, or not
    positive (absurd circuit paces, trends or wear curves). Args: (R, C, L) buffers, valid (R, C, L)."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(out["LapTime"]) & np.isfinite(out["Oracle"]) & np.isfinite(out["Time"])
        ok &= (out["LapTime"] > 0) & (out["Oracle"] > 0)
    bad = valid & ~ok
    if not bad.any():
        return
    r, _, lap = (int(i[0]) for i in np.nonzero(bad))
    raise LapnetError(
        f"simulate: these constants give {int(bad.sum()):,} lap times that are not finite and positive "
        f"(the first: {out['LapTime'][bad][0]:.6g} s on lap {lap + 1} at {p.circuits[int(circ[r])].name}): "
        "check the circuits' base_lap_s and lap_trend_s, the tyre wear and car_pace_sd"
    )


def _running_order(t: np.ndarray) -> np.ndarray:
    """Running order (0 = leader) of cars by session time. Args: t (R, C). Returns: (R, C)."""
    return np.argsort(np.argsort(t, axis=1), axis=1).astype(float)


def _status_strings(status: np.ndarray, yellow: np.ndarray) -> np.ndarray:
    """(R, L) codes -> FastF1-style strings: '24' first SC lap, '4', '6', '67' last VSC lap, '2', '1'."""
    R, L = status.shape
    prev = np.concatenate([np.zeros((R, 1), np.int8), status[:, :-1]], axis=1)
    nxt = np.concatenate([status[:, 1:], np.zeros((R, 1), np.int8)], axis=1)
    s = np.full((R, L), "1", dtype=object)
    s[yellow] = "2"
    s[status == 1] = "4"
    s[(status == 1) & (prev != 1)] = "24"
    s[status == 2] = "6"
    s[(status == 2) & (nxt != 2)] = "67"
    return s


def _to_frame(out, comp_out, phase_out, flags, ts: np.ndarray, circ, p: SimParams, label: str = "sim") -> pd.DataFrame:
    """Flatten the (R, C, L) buffers of running cars into a FastF1-style table; ts: (R, L) status strings."""
    R, C, L = comp_out.shape
    valid = flags["Valid"]
    rr, cc, ll = np.nonzero(valid)  # row order: race, car, lap -> sorted like FastF1
    n = len(rr)
    drivers = np.array([d[0] for d in DRIVERS[:C]] + [f"C{i:02d}" for i in range(len(DRIVERS), C)], dtype=object)
    numbers = np.array([d[1] for d in DRIVERS[:C]] + [str(100 + i) for i in range(len(DRIVERS), C)], dtype=object)
    teams = np.array([d[2] for d in DRIVERS[:C]] + ["Privateer"] * max(0, C - len(DRIVERS)), dtype=object)
    # Sort drivers alphabetically within a race, as FastF1 exports roughly are grouped by driver.
    car_order = np.argsort(drivers[:C], kind="stable")
    rank_of_car = np.empty(C, int)
    rank_of_car[car_order] = np.arange(C)
    key = (rr * C + rank_of_car[cc]) * L + ll
    idx = np.argsort(key, kind="stable")
    rr, cc, ll = rr[idx], cc[idx], ll[idx]
    names = np.array(["SOFT", "MEDIUM", "HARD"], dtype=object)
    phases = np.array(["push", "conserve", "pit_window"], dtype=object)
    circuit_names = np.array([p.circuits[i].name for i in circ], dtype=object)
    race_labels = np.array([f"{label}_{r:04d}" for r in range(R)], dtype=object)

    def g(a):
        return a[rr, cc, ll]

    df = pd.DataFrame(
        {
            "Time": g(out["Time"]),
            "Driver": drivers[cc],
            "DriverNumber": numbers[cc],
            "LapTime": g(out["LapTime"]),
            "LapNumber": (ll + 1).astype(float),
            "Stint": g(out["Stint"]),
            "PitOutTime": g(out["PitOut"]),
            "PitInTime": g(out["PitIn"]),
            "Compound": names[g(comp_out)],
            "TyreLife": g(out["Tyre"]),
            "FreshTyre": g(flags["Fresh"]),
            "Team": teams[cc],
            "LapStartTime": g(out["Start"]),
            "TrackStatus": ts[rr, ll],
            "Position": g(out["Pos"]),
            "Deleted": g(flags["Deleted"]),
            "FastF1Generated": np.zeros(n, dtype=bool),
            "IsAccurate": g(flags["Accurate"]),
            "Race": race_labels[rr],
            "Circuit": circuit_names[rr],
            "FuelLoad": g(out["Fuel"]),
            "TyreTemp": g(out["Temp"]),
            "GapToLeader": g(out["Gap"]),
            "TrueDegradation": g(out["Deg"]),
            "Phase": phases[g(phase_out)],
            "OracleLapTime": g(out["Oracle"]),
        }
    )
    return df


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """A few numbers that describe a simulated table (for the CLI's summary)."""
    noise = (df["LapTime"] - df["OracleLapTime"]).to_numpy()
    return {
        "races": int(df["Race"].nunique()),
        "cars": int(df.groupby("Race")["Driver"].nunique().max()),
        "laps": int(len(df)),
        "pit_stops": int(np.isfinite(df["PitInTime"].to_numpy()).sum()),
        "sc_laps_share": float(df["TrackStatus"].str.contains("4", regex=False).mean()),
        "vsc_laps_share": float(df["TrackStatus"].str.contains("6", regex=False).mean()),
        "oracle_mae_s": float(np.mean(np.abs(noise))),
        "phase_share": {k: float(v) for k, v in df["Phase"].value_counts(normalize=True).sort_index().items()},
    }


def simulate_to_file(
    out: str | Path,
    n_races: int,
    seed: int = 0,
    calibration: "Calibration | str | Path | None" = None,
    *,
    force: bool = False,
    label: str = "sim",
    strategies: Mapping[str, tuple[Sequence[str], Sequence[int]]] | None = None,
    safety_car: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Simulate and write a lap table (.csv or .parquet) atomically; return `summarize` numbers.

    Raises:
        LapnetError: bad extension, an existing file without `force`, a missing output
            folder, an invalid calibration file, bad `n_races`/`seed`/`label`, a simulation
            too big for the memory available, or lap times that are not finite and positive.
    """
    from lapnet.race.io import check_table_out, write_laps

    out = check_table_out(out, force=force)
    if isinstance(calibration, (str, Path)):
        from lapnet.race.calibrate import load_calibration

        calibration = load_calibration(calibration)
    df = simulate(n_races, seed, calibration, label=label, strategies=strategies, safety_car=safety_car)
    write_laps(df, out)
    summary = summarize(df)
    summary.update(out=str(out), seed=int(seed), calibrated=calibration is not None)
    return summary
