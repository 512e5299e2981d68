"""Fit the simulator's constants to real races, and compare real with simulated laps.

    laps, _ = clean_laps(read_many(paths))
    cal = calibrate(laps)                     # a Calibration (JSON round-trip: save/load)
    sim = simulate(15, seed=0, calibration=cal)
    fig = plot_real_vs_sim(laps, clean_laps(read_laps(sim))[0])  # lapnet.race.plots

What is fitted, and from which laps (all durations in seconds):
    base pace per circuit  the race's median Scored lap (green, accurate, not in/out-laps).
    fuel effect            the lap-number slope of a least-squares fit on Scored dry laps,
                           y = LapTime - race median, with one offset per (race, driver),
                           one lap slope per race, compound offsets and per-compound
                           quadratic wear in TyreLife: pit stops reset TyreLife but not
                           LapNumber, which separates the fuel burn (and track evolution)
                           from tyre wear. The race slopes are kept per circuit
                           (lap_trend_s); their lap-weighted mean is the fuel effect, in
                           s/kg through the simulator's 1.7 kg/lap.
    compound offsets       the same fit (fresh-tyre pace against MEDIUM).
    degradation            per compound, y minus the race's lap trend, with one offset per
                           (race, driver, stint): deg(t) = linear * t + quad * t**2 in TyreLife;
                           then one scale per circuit on those curves (deg_scale: abrasive
                           tracks wear tyres faster).
    lap-time noise         that fit's residuals split by their variogram into white noise
                           (lap_noise_s) and a slowly drifting pace (pace_drift_s, an AR(1)
                           with pace_drift_rho per lap: battles, traffic, management).
    pit loss               median in-lap excess + median out-lap excess over the race's median
                           green lap (green laps only, lap 1 excluded), per circuit and overall.
    stint lengths          median (and 95th percentile) laps of the stints of 4+ laps that
                           end in a pit stop, per compound; the simulator puts the tyre
                           cliff beyond the 95th percentile (in wear: x1.1 x push wear),
                           where real data shows none.
    slow laps              the excess of the residuals' right tail over the left (mistakes,
                           traffic) as an occasional exponential slowdown (its slope and
                           mass at 3 and 5 robust sd).
    field spread           robust spread of the (race, driver) offsets of the fuel fit.
    safety cars            runs of laps with code 4 (SC) and 6 (VSC, not SC) per race, and
                           the mean SC length; one-stop share among drivers who stopped.

When the laps cannot measure a constant (too few drivers, no safety car, no pit stop, a
compound never used, ...) it falls back on a default or on the pooled value: each fallback
is a UserWarning naming the constant and why, and is kept in the file under `defaulted`
(constant -> reason). `load_calibration` refuses values outside physical bounds (`BOUNDS`,
`CIRCUIT_BOUNDS`, `COMPOUND_BOUNDS`).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.features import race_laps
from lapnet.race.simulate import DEFAULT_COMPOUNDS, SimParams

__all__ = [
    "Calibration",
    "CircuitCalibration",
    "CompoundCalibration",
    "calibrate",
    "load_calibration",
    "calibrate_files",
]

CALIBRATION_VERSION = 1
MIN_SCORED_LAPS = 30  # a race with fewer usable green laps says nothing about its pace
MIN_LAPS_OWN_TREND = 200  # dry scored laps a race needs for its own lap-number slope


@dataclass
class CircuitCalibration:
    """One real race as a simulator circuit."""

    name: str
    laps: int
    base_lap_s: float
    pit_loss_s: float
    lap_trend_s: float  # s per lap over the race at equal tyre age: fuel burn + track evolution
    deg_scale: float  # this track's tyre wear against the compounds' average curves
    scored_laps: int


@dataclass
class CompoundCalibration:
    """One dry compound: pace offset vs MEDIUM, quadratic wear in TyreLife, stint length."""

    offset_s: float
    deg_linear_s: float
    deg_quad_s: float
    stint_laps: float
    stint_laps_p95: float
    scored_laps: int
    stints: int


@dataclass
class Calibration:
    """The simulator's constants fitted to real laps (see the module docstring)."""

    circuits: list[CircuitCalibration]
    compounds: dict[str, CompoundCalibration]
    fuel_s_per_lap: float
    fuel_s_per_kg: float
    lap_noise_s: float
    pace_drift_s: float
    pace_drift_rho: float
    car_pace_sd_s: float
    slow_lap_prob: float
    slow_lap_mean_s: float
    pit_in_s: float
    pit_out_s: float
    pit_loss_s: float
    sc_per_race: float
    vsc_per_race: float
    sc_laps_mean: float
    one_stop_share: float
    races: list[str] = field(default_factory=list)
    # constant -> why it was not measured from these laps (a default or a pooled value stands in)
    defaulted: dict[str, str] = field(default_factory=dict)
    version: int = CALIBRATION_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the calibration file's content)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "calibration") -> "Calibration":
        """Validate against the schema and build; any mismatch is a one-line LapnetError."""
        return _from_dict(d, where)

    def save(self, path: str | Path) -> None:
        """Write the calibration as JSON, atomically."""
        from lapnet.checkpoint import write_json

        write_json(path, self.to_dict())

    def deg(self, compound: str, tyre_life: np.ndarray) -> np.ndarray:
        """Fitted seconds lost to wear at `tyre_life` laps (any shape), 0 at TyreLife 0."""
        c = self.compounds[compound]
        t = np.asarray(tyre_life, dtype=float)
        return c.deg_linear_s * t + c.deg_quad_s * t**2


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration JSON file (LapnetError when it does not match)."""
    path = Path(path)
    if path.is_dir():
        raise LapnetError(f"{path}: is a directory, not a calibration file (give the .json that lapnet race calibrate wrote)")
    if not path.is_file():
        raise LapnetError(f"{path}: no such calibration file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LapnetError(f"{path}: not a calibration file (invalid JSON: {e.__class__.__name__})") from None
    return _from_dict(d, str(path))


# --- schema validation -------------------------------------------------------------------

_FLOAT_FIELDS = ("fuel_s_per_lap", "fuel_s_per_kg", "lap_noise_s", "pace_drift_s", "pace_drift_rho", "car_pace_sd_s", "slow_lap_prob", "slow_lap_mean_s", "pit_in_s", "pit_out_s", "pit_loss_s", "sc_per_race", "vsc_per_race", "sc_laps_mean", "one_stop_share")
_OPTIONAL = ("defaulted",)  # fields a file written before they existed may lack

# Physical bounds (inclusive; pace_drift_rho's upper one excluded): wide enough for any real
# race (the 15 real 2023 races calibrate well inside them, see docs/guide/race_data.md),
# narrow enough that the simulator's lap times stay finite and plausible.
BOUNDS: dict[str, tuple[float, float]] = {
    "fuel_s_per_lap": (-2.0, 2.0),  # s per lap (not read by the simulator)
    "fuel_s_per_kg": (0.0, 0.2),  # s per kg: the rule of thumb is 0.03; 0.2 x 110 kg = 22 s
    "lap_noise_s": (0.0, 5.0),  # s
    "pace_drift_s": (0.0, 5.0),  # s
    "pace_drift_rho": (0.0, 1.0),  # per lap, < 1
    "car_pace_sd_s": (0.0, 5.0),  # s per lap: a whole 2023 field spans about 2 s
    "slow_lap_prob": (0.0, 1.0),  # share of green laps
    "slow_lap_mean_s": (0.0, 30.0),  # s
    "pit_in_s": (-60.0, 120.0),  # s over the median green lap (not read, but its share of pit_loss_s is)
    "pit_out_s": (-60.0, 120.0),  # s (not read)
    "pit_loss_s": (0.0, 120.0),  # s (not read; each circuit's own is)
    "sc_per_race": (0.0, 10.0),  # safety-car periods per race (the simulator draws at most 2)
    "vsc_per_race": (0.0, 10.0),  # VSC periods per race (at most 2 drawn)
    "sc_laps_mean": (1.0, 30.0),  # laps: a safety-car period lasts at least one lap
    "one_stop_share": (0.0, 1.0),
}
CIRCUIT_BOUNDS: dict[str, tuple[float, float]] = {
    "base_lap_s": (30.0, 300.0),  # s: 2023's shortest green race lap is ~69 s (Austria), the longest ~113 s (Spa)
    "pit_loss_s": (0.0, 120.0),  # s: 2023's are 19-30 s
    "lap_trend_s": (-1.0, 1.0),  # s per lap: 2023's are -0.09 to -0.03
    "deg_scale": (0.0, 4.0),  # calibrate clips it to [0, 4]
}
COMPOUND_BOUNDS: dict[str, tuple[float, float]] = {
    "offset_s": (-5.0, 5.0),  # s against MEDIUM
    "deg_linear_s": (-1.0, 1.0),  # s per lap of tyre life
    "deg_quad_s": (-0.05, 0.05),  # s per (lap of tyre life) squared
    "stint_laps": (1.0, float(S.MAX_LAP_NUMBER)),  # laps
    "stint_laps_p95": (1.0, float(S.MAX_LAP_NUMBER)),  # laps, >= stint_laps
}


def _bounded(v: float, name: str, where: str, bounds: dict[str, tuple[float, float]]) -> float:
    lo, hi = bounds[name]
    if not lo <= v <= hi or (name == "pace_drift_rho" and v >= hi):
        shown = f"[{lo:g}, {hi:g})" if name == "pace_drift_rho" else f"[{lo:g}, {hi:g}]"
        raise LapnetError(f"{where}: {v:g} is outside its physical bounds {shown}")
    return v


def _num(v: Any, where: str, *, integer: bool = False, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise LapnetError(f"{where}: expected a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise LapnetError(f"{where}: not a finite number ({v})")
    if integer and float(v) != int(v):
        raise LapnetError(f"{where}: expected a whole number, got {v}")
    if positive and v <= 0:
        raise LapnetError(f"{where}: must be > 0, got {v}")
    if nonneg and v < 0:
        raise LapnetError(f"{where}: must be >= 0, got {v}")
    return int(v) if integer else float(v)


def _laps(v: Any, where: str) -> int:
    n = _num(v, where, integer=True, positive=True)
    if n > S.MAX_LAP_NUMBER:
        raise LapnetError(f"{where}: at most {S.MAX_LAP_NUMBER} laps, got {n}")
    return n


def _keys(d: Any, names: Sequence[str], where: str, optional: Sequence[str] = ()) -> None:
    if not isinstance(d, dict):
        raise LapnetError(f"{where}: expected an object, got {type(d).__name__}")
    missing = [k for k in names if k not in d and k not in optional]
    if missing:
        raise LapnetError(f"{where}: missing field(s) {', '.join(missing)}")
    extra = [k for k in d if k not in names]
    if extra:
        raise LapnetError(f"{where}: unknown field(s) {', '.join(map(str, extra))}")


def _from_dict(d: Any, where: str) -> Calibration:
    names = [f.name for f in fields(Calibration)]
    if not isinstance(d, dict):
        raise LapnetError(f"{where}: is not a lapnet calibration file: expected an object, got {type(d).__name__}")
    if "circuits" not in d:  # another file altogether (a run's config.json, a metrics.json, ...)
        raise LapnetError(
            f"{where}: is not a lapnet calibration file (no 'circuits' key; missing field(s) circuits): "
            "write one with lapnet race calibrate"
        )
    _keys(d, names, f"{where}", _OPTIONAL)
    if d["version"] != CALIBRATION_VERSION:
        raise LapnetError(f"{where}: calibration version {d['version']!r}, this lapnet reads version {CALIBRATION_VERSION}")
    if not isinstance(d["circuits"], list) or not d["circuits"]:
        raise LapnetError(f"{where}: circuits must be a non-empty list")
    circuits = []
    cnames = [f.name for f in fields(CircuitCalibration)]
    for i, c in enumerate(d["circuits"]):
        w = f"{where}: circuits[{i}]"
        _keys(c, cnames, w)
        if not isinstance(c["name"], str) or not c["name"]:
            raise LapnetError(f"{w}.name: expected a non-empty string")
        circuits.append(
            CircuitCalibration(
                name=c["name"],
                laps=_laps(c["laps"], f"{w}.laps"),
                base_lap_s=_bounded(_num(c["base_lap_s"], f"{w}.base_lap_s", positive=True), "base_lap_s", f"{w}.base_lap_s", CIRCUIT_BOUNDS),
                pit_loss_s=_bounded(_num(c["pit_loss_s"], f"{w}.pit_loss_s", nonneg=True), "pit_loss_s", f"{w}.pit_loss_s", CIRCUIT_BOUNDS),
                lap_trend_s=_bounded(_num(c["lap_trend_s"], f"{w}.lap_trend_s"), "lap_trend_s", f"{w}.lap_trend_s", CIRCUIT_BOUNDS),
                deg_scale=_bounded(_num(c["deg_scale"], f"{w}.deg_scale", nonneg=True), "deg_scale", f"{w}.deg_scale", CIRCUIT_BOUNDS),
                scored_laps=_num(c["scored_laps"], f"{w}.scored_laps", integer=True, nonneg=True),
            )
        )
    comps = d["compounds"]
    if not isinstance(comps, dict) or not comps:
        raise LapnetError(f"{where}: compounds must be a non-empty object keyed by compound")
    bad = [k for k in comps if k not in S.DRY_COMPOUNDS]
    if bad:
        raise LapnetError(f"{where}: compounds: unknown compound(s) {', '.join(map(str, bad))} (expected {', '.join(S.DRY_COMPOUNDS)})")
    compounds = {}
    knames = [f.name for f in fields(CompoundCalibration)]
    for k, c in comps.items():
        w = f"{where}: compounds.{k}"
        _keys(c, knames, w)
        vals = {
            n: _bounded(_num(c[n], f"{w}.{n}", positive=n.startswith("stint")), n, f"{w}.{n}", COMPOUND_BOUNDS)
            for n in COMPOUND_BOUNDS
        }
        if vals["stint_laps_p95"] < vals["stint_laps"]:
            raise LapnetError(f"{w}.stint_laps_p95: {vals['stint_laps_p95']:g} is below the median stint_laps {vals['stint_laps']:g}")
        compounds[k] = CompoundCalibration(
            **vals,
            scored_laps=_num(c["scored_laps"], f"{w}.scored_laps", integer=True, nonneg=True),
            stints=_num(c["stints"], f"{w}.stints", integer=True, nonneg=True),
        )
    scalars = {}
    for k in _FLOAT_FIELDS:
        v = _num(d[k], f"{where}: {k}", nonneg=BOUNDS[k][0] >= 0)
        if k in ("slow_lap_prob", "one_stop_share") and v > 1:
            raise LapnetError(f"{where}: {k} must be in [0, 1], got {v}")
        if k == "pace_drift_rho" and v >= 1:
            raise LapnetError(f"{where}: pace_drift_rho must be in [0, 1), got {v}")
        scalars[k] = _bounded(v, k, f"{where}: {k}", BOUNDS)
    races = d["races"]
    if not isinstance(races, list) or not all(isinstance(r, str) for r in races):
        raise LapnetError(f"{where}: races must be a list of strings")
    defaulted = d.get("defaulted", {})
    if not isinstance(defaulted, dict) or not all(isinstance(v, str) for v in defaulted.values()):
        raise LapnetError(f"{where}: defaulted must be an object of reasons (strings)")
    return Calibration(
        circuits=circuits, compounds=compounds, races=list(races), defaulted=dict(defaulted), version=CALIBRATION_VERSION, **scalars
    )


# --- fitting -----------------------------------------------------------------------------


def _demean(frame: pd.DataFrame, cols: list[str], keys: list[str]) -> pd.DataFrame:
    """Subtract the group mean of each column (fixed effects without dummy columns)."""
    return frame[cols] - frame.groupby(keys)[cols].transform("mean")


def _runs(flags: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    out, n = [], 0
    for f in flags:
        if f:
            n += 1
        elif n:
            out.append(n)
            n = 0
    if n:
        out.append(n)
    return out


def calibrate(laps: pd.DataFrame) -> Calibration:
    """Fit the simulator's constants to cleaned real laps.

    Args:
        laps: the output of `lapnet.race.clean.clean_laps` (one or more races).

    Returns:
        A `Calibration`; `simulate(..., calibration=cal)` uses it.

    Raises:
        LapnetError: the table was not cleaned, or no race has enough usable green laps
            (at least 30 Scored laps, dry compounds on both sides of a pit stop).
    """
    need = [c for c in ("Scored", "InLap", "OutLap", "Green", "HasTime") if c not in laps.columns]
    if need:
        raise LapnetError(f"calibrate: missing column(s) {', '.join(need)}: clean the laps with lapnet.race.clean.clean_laps first")
    df = laps.copy()
    med = df[df["Scored"]].groupby("Race")["LapTime"].agg(["median", "size"])
    usable = med.index[med["size"] >= MIN_SCORED_LAPS]
    if len(usable) == 0:
        raise LapnetError(
            f"calibrate: no usable green laps (every race has fewer than {MIN_SCORED_LAPS} accurate green laps that are not in- or out-laps)"
        )
    df = df[df["Race"].isin(usable)].copy()
    df["y"] = df["LapTime"] - df["Race"].map(med["median"])  # (N,) seconds over the race's median green lap

    # Pit loss: in-lap and out-lap excess on green laps (lap 1's standing start is not a pit stop).
    racing = df["HasTime"] & df["Green"] & (df["LapNumber"] > 1)
    in_ex = df.loc[racing & df["InLap"] & ~df["OutLap"]].groupby("Race")["y"].median()
    out_ex = df.loc[racing & df["OutLap"] & ~df["InLap"]].groupby("Race")["y"].median()
    pit_in = float(in_ex.median()) if len(in_ex) else 3.0
    pit_out = float(out_ex.median()) if len(out_ex) else 18.0
    defaulted: dict[str, str] = {}  # constant -> why these laps could not measure it
    if not len(in_ex):
        defaulted["pit_in_s"] = "the default 3.0 s (no green-flag in-lap after lap 1 in these races)"
    if not len(out_ex):
        defaulted["pit_out_s"] = "the default 18.0 s (no green-flag out-lap after lap 1 in these races)"

    # Fuel + compound offsets: one fit with (race, driver) offsets; pit stops separate lap from tyre age.
    dry = df[df["Scored"] & df["Compound"].isin(S.DRY_COMPOUNDS) & df["TyreLife"].notna()].copy()
    if not len(dry) and (df.loc[df["Scored"], "Compound"] == "UNKNOWN").all():
        raise LapnetError("calibrate needs a Compound column: it fits each dry compound's wear, and no Scored lap "
                          "names its compound (a table without one is cleaned as dry, on an unknown compound)")
    dev = dry["y"] - dry.groupby(["Race", "Driver"])["y"].transform("median")
    dry = dry[dev.abs() < 3.0]  # a spin or a traffic jam is not the tyre's doing
    if len(dry) < MIN_SCORED_LAPS:
        raise LapnetError("calibrate: no usable green laps on dry compounds")
    comps = [c for c in S.DRY_COMPOUNDS if (dry["Compound"] == c).sum() >= 20]
    # One lap-number slope per race (fuel burn + that track's evolution); races with few dry
    # laps share one pooled slope.
    n_dry = dry["Race"].value_counts()
    own = [r for r in usable if n_dry.get(r, 0) >= MIN_LAPS_OWN_TREND]
    X = pd.DataFrame(index=dry.index)
    for r in own:
        X[f"lap_{r}"] = dry["LapNumber"] * (dry["Race"] == r)
    pooled = ~dry["Race"].isin(own)
    if pooled.any():
        X["lap_pooled"] = dry["LapNumber"] * pooled
    for c in comps:
        is_c = (dry["Compound"] == c).astype(float)
        if c != "MEDIUM" and "MEDIUM" in comps:
            X[f"off_{c}"] = is_c
        X[f"t_{c}"] = is_c * dry["TyreLife"]
        X[f"t2_{c}"] = is_c * dry["TyreLife"] ** 2
    Xd = _demean(pd.concat([X, dry[["y", "Race", "Driver"]]], axis=1), list(X.columns) + ["y"], ["Race", "Driver"])
    beta, *_ = np.linalg.lstsq(Xd[list(X.columns)].to_numpy(), Xd["y"].to_numpy(), rcond=None)
    coef = dict(zip(X.columns, beta))
    # The field's spread: each (race, driver)'s mean pace once fuel, tyres and compounds are out.
    fitted = X.to_numpy() @ beta
    offsets = (dry["y"] - fitted).groupby([dry["Race"], dry["Driver"]]).agg(["mean", "size"])
    offsets = offsets[offsets["size"] >= 10]["mean"]
    centred = (offsets - offsets.groupby(level=0).transform("median")).to_numpy()
    car_sd = float(1.4826 * np.median(np.abs(centred))) if len(centred) >= 5 else SimParams.car_pace_sd
    if len(centred) < 5:
        defaulted["car_pace_sd_s"] = (
            f"the simulator's default {SimParams.car_pace_sd:g} s (only {len(centred)} driver(s) with 10+ dry scored laps in a "
            "race; 5 needed to measure the field's spread)"
        )
    trend = {r: float(coef.get(f"lap_{r}", coef.get("lap_pooled", 0.0))) for r in usable}
    weights = np.array([n_dry.get(r, 0) for r in usable], dtype=float)
    fuel_slope = float(np.average([trend[r] for r in usable], weights=weights))

    # Degradation per compound with (race, driver, stint) offsets, after removing each race's lap trend.
    dry["r"] = dry["y"] - dry["Race"].map(trend) * dry["LapNumber"]
    dry["t"] = dry["TyreLife"]
    dry["t2"] = dry["TyreLife"] ** 2
    keys = ["Race", "Driver", "Stint"]
    resid = pd.Series(np.nan, index=dry.index)
    compounds: dict[str, CompoundCalibration] = {}
    all_stints = stints(df)
    for c in comps:
        sub = dry[dry["Compound"] == c]
        d = _demean(sub, ["r", "t", "t2"], keys)
        A = d[["t", "t2"]].to_numpy()
        b = d["r"].to_numpy()
        (lin, quad), *_ = np.linalg.lstsq(A, b, rcond=None)
        resid.loc[sub.index] = b - A @ np.array([lin, quad])
        st = all_stints[all_stints["Compound"] == c]
        done = st[st["ended_in_pit"]]
        pool = (done if len(done) >= 3 else st)["laps"]
        length = float(pool.median()) if len(pool) else 25.0
        longest = float(pool.quantile(0.95)) if len(pool) else 40.0
        if not len(pool):
            defaulted[f"compounds.{c}.stint_laps"] = "the defaults, 25 laps and 40 for the 95th percentile (no stint of 4+ laps on it)"
        elif len(done) < 3:
            defaulted[f"compounds.{c}.stint_laps"] = (
                f"measured on all its {len(st)} stint(s) of 4+ laps (only {len(done)} ended in a pit stop; 3 needed to use those alone)"
            )
        if c != "MEDIUM" and "MEDIUM" not in comps:
            defaulted[f"compounds.{c}.offset_s"] = "0 (no MEDIUM laps to measure the offset against)"
        compounds[c] = CompoundCalibration(
            offset_s=round(float(coef.get(f"off_{c}", 0.0)), 5),
            deg_linear_s=round(float(lin), 6),
            deg_quad_s=round(float(quad), 7),
            stint_laps=round(length, 2),
            stint_laps_p95=round(longest, 2),
            scored_laps=int(len(sub)),
            stints=int(len(st)),
        )
    # Tracks differ in how hard they are on tyres: one scale per race on the compound curves.
    zc = pd.Series(0.0, index=dry.index)
    for c in comps:
        m = dry["Compound"] == c
        zc[m] = compounds[c].deg_linear_s * dry.loc[m, "t"] + compounds[c].deg_quad_s * dry.loc[m, "t2"]
    dry["z"] = zc
    d = _demean(dry[dry["Compound"].isin(comps)], ["r", "z"], keys)
    num = (d["z"] * d["r"]).groupby(dry["Race"]).sum()
    den = (d["z"] ** 2).groupby(dry["Race"]).sum()
    scale = {r: float(np.clip(num.get(r, 0.0) / den[r], 0.0, 4.0)) if den.get(r, 0.0) > 0 and n_dry.get(r, 0) >= MIN_LAPS_OWN_TREND else 1.0 for r in usable}
    for r in usable:
        if n_dry.get(r, 0) < MIN_LAPS_OWN_TREND:
            defaulted[f"circuits.{r}.deg_scale"] = (
                f"the default 1.0, and its lap_trend_s is the slope pooled over such races (only {int(n_dry.get(r, 0))} dry scored "
                f"laps; {MIN_LAPS_OWN_TREND} needed for its own)"
            )
        elif not den.get(r, 0.0) > 0:
            defaulted[f"circuits.{r}.deg_scale"] = "the default 1.0 (no tyre-age spread on its laps to measure its wear)"
    resid = d["r"] - dry.loc[d.index, "Race"].map(scale) * d["z"]
    noise, drift, rho, lags = _split_noise(resid, dry.loc[d.index], with_lags=True)
    if lags < 3:
        defaulted["pace_drift_s"] = (
            "0, all the residual spread is lap_noise_s (fewer than 30 pairs of same-stint laps 5 laps apart "
            "to split it into noise and a drifting pace)"
        )
    slow_prob, slow_mean = _slow_laps(resid.to_numpy())
    if np.isfinite(resid.to_numpy()).sum() < 200:
        defaulted["slow_lap_prob"] = "0 (fewer than 200 scored dry laps to measure the slow-lap tail)"
    for c in S.DRY_COMPOUNDS:
        if c not in comps:
            m = DEFAULT_COMPOUNDS[c]
            pace = "the reference pace" if c == "MEDIUM" else f"{m.offset_s:+g} s against MEDIUM"
            defaulted[f"compounds.{c}"] = (
                f"not calibrated (only {int((dry['Compound'] == c).sum())} dry scored laps on it; 20 needed): the simulator "
                f"uses its own {c} model ({pace}, its default wear curve, {m.stint_laps:g}-lap stints) "
                "on the stints its strategies give that compound"
            )

    circuits = []
    last_lap = {race: race_laps(g) for race, g in df.groupby("Race")}  # the race's length (features.last_timed_lap)
    for race in usable:
        loss = in_ex.get(race, pit_in) + out_ex.get(race, pit_out)
        # (no such lap in any race: pit_in_s / pit_out_s say so)
        lacking = [k for k, ex in (("in-lap", in_ex), ("out-lap", out_ex)) if len(ex) and race not in ex.index]
        if lacking:
            defaulted[f"circuits.{race}.pit_loss_s"] = (
                f"uses the median over the races for its {' and '.join(lacking)} excess (no green-flag {' or '.join(lacking)} after lap 1 in it)"
            )
        circuits.append(
            CircuitCalibration(
                name=str(race),
                laps=int(last_lap[race]),
                base_lap_s=round(float(med.loc[race, "median"]), 4),
                pit_loss_s=round(float(max(loss, 0.0)), 4),
                lap_trend_s=round(trend[race], 6),
                deg_scale=round(scale[race], 4),
                scored_laps=int(med.loc[race, "size"]),
            )
        )


    # A lap of the race is under SC (VSC) when any car's status holds a 4 (a 6; '7', VSC ending, is the same period).
    status = df["TrackStatus"].astype(str)
    flags = pd.DataFrame({"sc": status.str.contains(S.SC_CODE, regex=False), "vsc": status.str.contains(S.VSC_CODE, regex=False)})
    per_lap = flags.groupby([df["Race"], df["LapNumber"]]).any()
    sc_runs, vsc_runs = [], []
    for _, g in per_lap.groupby(level=0):
        sc = g["sc"].to_numpy()
        sc_runs.append(_runs(sc))
        vsc_runs.append(_runs(g["vsc"].to_numpy() & ~sc))
    all_sc = [n for runs in sc_runs for n in runs]

    stops = df.groupby(["Race", "Driver"])["Stint"].nunique() - 1
    stopped = stops[stops >= 1]
    one_stop = float((stopped == 1).mean()) if len(stopped) else 0.5
    if not len(stopped):
        defaulted["one_stop_share"] = "the default 0.5 (no driver changed tyres in these races)"
    if not all_sc:
        defaulted["sc_laps_mean"] = "the default 4.0 laps (no safety-car period in these races; unused while sc_per_race is 0)"
    for k, why in defaulted.items():
        warnings.warn(f"calibration: {k} is {why}", UserWarning, stacklevel=2)

    return Calibration(
        circuits=circuits,
        compounds=compounds,
        fuel_s_per_lap=round(fuel_slope, 6),
        fuel_s_per_kg=round(max(-fuel_slope / SimParams.fuel_burn_kg, 0.0), 6),  # the simulator's burn rate: s/lap -> s/kg
        lap_noise_s=round(noise, 5),
        pace_drift_s=round(drift, 5),
        pace_drift_rho=round(rho, 4),
        car_pace_sd_s=round(car_sd, 4),
        slow_lap_prob=round(slow_prob, 5),
        slow_lap_mean_s=round(slow_mean, 4),
        pit_in_s=round(pit_in, 4),
        pit_out_s=round(pit_out, 4),
        pit_loss_s=round(max(pit_in + pit_out, 0.0), 4),
        sc_per_race=round(float(np.mean([len(x) for x in sc_runs])), 4),
        vsc_per_race=round(float(np.mean([len(x) for x in vsc_runs])), 4),
        sc_laps_mean=round(float(np.mean(all_sc)) if all_sc else 4.0, 4),
        one_stop_share=round(one_stop, 4),
        races=[str(r) for r in usable],
        defaulted=defaulted,
    )


def _split_noise(resid: pd.Series, laps: pd.DataFrame, *, with_lags: bool = False) -> tuple[float, ...]:
    """Split residual spread into white noise and a slowly drifting pace (an AR(1) process).

    Half the squared spread of residual differences k laps apart (robust: from the MAD) is
    gamma(k) = noise**2 + drift**2 * (1 - rho**k) for an AR(1) drift; fitted on k = 1, 2, 5,
    10 (same stint), by least squares over a grid of rho. Returns (noise, drift, rho) in s
    (and, `with_lags`, how many lags had 30+ pairs: fewer than 3 and drift is 0 by default).
    """
    e = pd.Series(resid.to_numpy(), index=laps.index)
    key = laps["Race"].astype(str) + "|" + laps["Driver"].astype(str) + "|" + laps["Stint"].astype(str)
    frame = pd.DataFrame({"k": key, "lap": laps["LapNumber"], "e": e}).sort_values(["k", "lap"])
    lags, gam = [1, 2, 5, 10], []
    for k in lags:
        prev_e = frame.groupby("k")["e"].shift(k)
        prev_lap = frame.groupby("k")["lap"].shift(k)
        diff = (frame["e"] - prev_e)[(frame["lap"] - prev_lap) == k].dropna().to_numpy()
        if len(diff) < 30:
            break
        gam.append((1.4826 * np.median(np.abs(diff - np.median(diff)))) ** 2 / 2)
    r = e.to_numpy()
    total = float(1.4826 * np.median(np.abs(r - np.median(r))))
    if len(gam) < 3:
        return (total, 0.0, 0.0, len(gam)) if with_lags else (total, 0.0, 0.0)
    ks, g = np.array(lags[: len(gam)], float), np.array(gam)
    best = (np.inf, total**2, 0.0, 0.0)
    for rho in np.linspace(0.5, 0.98, 49):
        A = np.stack([np.ones_like(ks), 1 - rho**ks], axis=1)
        (n2, v), *_ = np.linalg.lstsq(A, g, rcond=None)
        n2, v = max(n2, 0.0), max(v, 0.0)
        err = float(np.sum((A @ np.array([n2, v]) - g) ** 2))
        if err < best[0]:
            best = (err, n2, v, rho)
    _, n2, v, rho = best
    out = (float(np.sqrt(n2)), float(np.sqrt(v)), float(rho) if v > 0 else 0.0)
    return (*out, len(gam)) if with_lags else out


def _slow_laps(resid: np.ndarray) -> tuple[float, float]:
    """Occasional slow laps (a mistake, a backmarker, a lift): real residuals have a heavy right
    tail and a near-Gaussian left one. Far out, Gaussian noise plus an exponential slowdown
    (probability p, mean m) has P(X > x) ~ p * exp(s**2 / (2 m**2) - x / m): the right-minus-left
    tail mass at 3 and 5 robust sd gives m (the slope) and p. Returns (p, m); (0, 1) when the
    right tail is not significantly heavier than the left."""
    r = resid[np.isfinite(resid)]
    n = len(r)
    if n < 200:
        return 0.0, 1.0
    sd = 1.4826 * np.median(np.abs(r - np.median(r)))
    x1, x2 = 3.0 * sd, 5.0 * sd
    e1 = float(np.mean(r > x1) - np.mean(r < -x1))
    e2 = float(np.mean(r > x2) - np.mean(r < -x2))
    significant = e1 > 3.0 * np.sqrt(np.mean(np.abs(r) > x1) / n) and (r > x2).sum() >= 10 and e2 > 0 and e1 > e2
    if not significant:
        return 0.0, 1.0
    m = float(np.clip((x2 - x1) / np.log(e1 / e2), 0.1, 5.0))
    p = e1 * np.exp(x1 / m - sd**2 / (2 * m**2))
    return float(np.clip(p, 0.0, 0.5)), m


def stints(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (race, driver, stint): compound, laps, whether it ended in a pit stop."""
    g = df.groupby(["Race", "Driver", "Stint"])
    st = pd.DataFrame({"Compound": g["Compound"].first(), "laps": g.size(), "ended_in_pit": g["InLap"].any()}).reset_index()
    return st[st["laps"] >= 4]  # 1-3 lap "stints" are red-flag or SC tyre changes, not strategy


def norm_green_laps(df: pd.DataFrame) -> np.ndarray:
    """Scored lap times divided by their race's median Scored lap (the spread real and simulated races are compared on)."""
    s = df[df["Scored"]]
    return (s["LapTime"] / s.groupby("Race")["LapTime"].transform("median")).to_numpy()


def calibrate_files(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    figure: str | Path | None = None,
    sim_races: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> tuple[Calibration, dict[str, Any]]:
    """Read, clean and calibrate real lap tables; write calib.json (and the real-vs-sim figure).

    Args:
        paths: lap tables (CSV/Parquet), one race each or with a Race column.
        out: the calibration JSON to write (refused if it exists, unless `force`).
        figure: a PNG path for `lapnet.race.plots.plot_real_vs_sim` (simulates `sim_races` calibrated races,
            default as many as the real ones, with `seed`).

    Returns:
        (calibration, summary) where summary holds the fitted scalars and, with a figure,
        how far the simulated races are from the real ones.

    Raises:
        LapnetError: bad paths or tables (see `read_laps`), outputs that exist, no usable laps.
    """
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import read_laps, read_many

    out = Path(out)
    # what the paths must be first: a directory given as --figure is not "already there" but the wrong thing
    if out.suffix.lower() != ".json":
        raise LapnetError(f"--out {out}: the calibration is a .json file")
    if figure is not None and Path(figure).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise LapnetError(f"--figure {figure}: write a .png, .pdf or .svg")
    for flag, t in [("--out", out)] + ([("--figure", Path(figure))] if figure is not None else []):
        if t.is_dir():
            raise LapnetError(f"{flag} {t}: is a directory; give a file name")
        if t.exists() and not force:
            raise LapnetError(f"{t}: already exists (use --force to overwrite it)")
        if not t.parent.is_dir():
            raise LapnetError(f"{t}: folder {t.parent} does not exist")
    if sim_races is not None and sim_races < 1:
        raise LapnetError(f"--sim-races must be >= 1, got {sim_races}")
    if not paths:
        raise LapnetError("give at least one lap table to calibrate on")
    real, report = clean_laps(read_many(paths))
    cal = calibrate(real)
    # what load_calibration would refuse is not written (a fit outside the physical bounds)
    _from_dict(json.loads(json.dumps(cal.to_dict())), f"the calibration fitted to {len(cal.races)} race(s)")
    summary: dict[str, Any] = {k: v for k, v in cal.to_dict().items() if k not in ("circuits", "races", "compounds", "version", "defaulted")}
    summary["races"] = len(cal.races)
    for c, cc in cal.compounds.items():
        summary[f"{c.lower()}_deg_s_per_lap_at_10"] = round(cc.deg_linear_s + 2 * cc.deg_quad_s * 10, 4)
        summary[f"{c.lower()}_stint_laps"] = cc.stint_laps
    summary["scored_laps"] = report.total()["scored"]
    summary["defaulted"] = list(cal.defaulted)  # the constants these laps could not measure (see the file's "defaulted")
    if figure is not None:
        from lapnet.race.simulate import simulate

        sim, _ = clean_laps(read_laps(simulate(sim_races or len(cal.races), seed, cal)))
        from lapnet.race.plots import plot_real_vs_sim

        fig = plot_real_vs_sim(real, sim)
        from lapnet.plots import save_figure

        save_figure(fig, figure, dpi=110)  # atomic: an earlier figure stays whole if this is cut short
        r, s = norm_green_laps(real), norm_green_laps(sim)
        summary["real_green_lap_iqr"] = round(float(np.subtract(*np.percentile(r, [75, 25]))), 5)
        summary["sim_green_lap_iqr"] = round(float(np.subtract(*np.percentile(s, [75, 25]))), 5)
        summary["figure"] = str(figure)
    cal.save(out)
    summary["out"] = str(out)
    return cal, summary
