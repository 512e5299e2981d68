"""What if the driver pits now: the laps on new tyres against staying out.

A pit wall's question at every lap: box this lap (the next lap is the in-lap, the one after it
the out-lap) onto new SOFT, MEDIUM or HARD tyres, or stay out? Three numbers answer it:

- the stay-out laps: the nets' forecast of laps t+1 .. t+K from the stint's last Scored lap;
- the new-tyre laps t+3 .. t+K+2: the run's `FreshStart` (the model that forecasts from real
  out-laps) read on the out-lap the stop would make (`stop_vector`): lap t's features moved two
  laps on, a new stint on new tyres of the chosen compound, everything the pit wall knows now
  about the field's pace and the driver's pace against it kept as it is;
- the stop itself: the in-lap plus the out-lap take the two stay-out laps they replace plus the
  race's stop loss so far (`PitContext.stop_loss`: the median over the green stops seen of in-lap
  plus out-lap minus twice the stopping driver's racing pace before his stop, shrunk to a prior
  of a quarter of the reference lap before there are many).

From these, per compound: `stop_cost` (the in- and out-lap against the two stay-out laps they
replace), `gain_per_lap` (the stay-out lap minus the new-tyre lap, averaged over laps t+3 .. t+K),
`delta` (stopping minus staying out over laps t+1 .. t+K: negative when the stop has paid for
itself within the forecast) and `payback_laps` (laps on new tyres to make back the stop cost at
the forecast's mean gain: an extrapolation, NaN when the new tyres are not faster).

Every lap's numbers use only laps that ended before it, as every other forecast here. Checked on
the real stops of real races by `stop_check` (`benchmarks/race_real.py`, out of fold): the
new-tyre laps forecast two laps before the stop against the laps the driver then ran, and the
stop's two laps against the in- and out-lap he ran. What the laps would have been had he stayed
out cannot be checked on real data: that forecast is the nets', checked on the laps drivers did
run (`race eval`).

No forecast (NaN) where it cannot be made: a run without a FreshStart (`lapnet race train
--no-fresh-start`, or one its check did not keep) refuses (`LapnetError`); on intermediate or wet
tyres, on an in-lap (the stop is already under way), where no lap of the race has shown its
green pace yet, or fewer than 3 laps from the flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES, PREV, Sequences
from lapnet.race.schema import COMPOUNDS, DRY_COMPOUNDS, WET_COMPOUNDS

STOP_LAPS = 2  # a stop called now: the next lap is the in-lap, the one after it the out-lap
_IX = {name: j for j, name in enumerate(FEATURES)}


def stop_vector(x: np.ndarray, lap_number: np.ndarray, compound: str) -> np.ndarray:
    """The out-lap vector of a stop called at lap t: lap t's features (..., D) moved STOP_LAPS
    laps on, into a new stint on new tyres of `compound`.

    What the pit wall knows now stays as it is: the field's pace and tyre age, the driver's own
    pace against the field, the track status (a stop called under a safety car comes out under
    it), the race's pit loss. What the stop changes is set as on a real out-lap: out_lap,
    tyre life 1 (FastF1 counts the out-lap of a new set as lap 1), a fresh set, the next stint,
    one more stop, no Scored lap in the stint yet, the race fraction and laps left two laps on.

    Args:
        x: (..., D) lap vectors (FEATURES).
        lap_number: (...,) the laps' numbers.
        compound: a dry compound (DRY_COMPOUNDS).

    Returns:
        (..., D) float32, a new array.
    """
    if compound not in DRY_COMPOUNDS:
        raise LapnetError(f"a stop onto {compound!r}: choose one of {', '.join(DRY_COMPOUNDS)}")
    v = np.array(x, dtype=np.float32, copy=True)
    n = np.asarray(lap_number, dtype=np.float64)

    def put(name: str, value) -> None:
        v[..., _IX[name]] = value

    def get(name: str) -> np.ndarray:
        return x[..., _IX[name]].astype(np.float64)

    for name in ("lap_time", "has_time", "scored", "base", "stint_slope", "n_scored", "has_base", "in_lap",
                 "gap_change", "position_change", "sector_dev", "field_delta", "own_vs_field", "ahead_delta",
                 "ahead_pace", "drs", "opening_lap_1", *(f"prev_{j}" for j in range(1, PREV + 1)),
                 *(f"restart_{k}" for k in (1, 2, 3))):
        put(name, 0.0)
    for c in (*DRY_COMPOUNDS, *WET_COMPOUNDS, "UNKNOWN"):
        put(f"compound_{c.lower()}", float(c == compound))
    new = (n + STOP_LAPS)
    put("out_lap", 1.0)
    put("tyre_life", 1.0 / 30)
    put("fresh_tyre", 1.0)
    put("stint", get("stint") + 1.0 / 3)
    put("laps_in_stint", 1.0 / 30)
    put("lap_frac", np.where(n > 0, get("lap_frac") * new / np.maximum(n, 1.0), get("lap_frac")))
    put("laps_left", np.maximum(get("laps_left") - STOP_LAPS / 30, 0.0))
    put("pits_done", np.minimum(get("pits_done") + 1.0 / 3, 1.0))
    dry_now = sum(get(f"compound_{c.lower()}") for c in DRY_COMPOUNDS) > 0
    other = 1.0 - get(f"compound_{compound.lower()}")  # the new set is another dry compound than lap t's
    put("two_compounds", np.maximum(get("two_compounds"), dry_now * other))
    put("since_neutral", np.minimum(get("since_neutral") + STOP_LAPS / 10, 1.0))
    for k in (2, 3, 4, 5):
        put(f"opening_lap_{k}", (new == k).astype(np.float32))
    return v


def require_fresh_start(model: torch.nn.Module):
    """The run's FreshStart, which forecasts the laps after a stop; LapnetError when it has none."""
    fresh = getattr(model, "fresh", None)
    if fresh is None:
        raise LapnetError("this run has no FreshStart (trained with --no-fresh-start, or its check did not keep it: "
                          "config.json 'fresh_start'), which forecasts the laps after a stop: retrain it with a FreshStart")
    return fresh


@dataclass
class PitNow:
    """The what-if at every lap of some sequences, in seconds. Shapes: (N, T, K) per lap ahead,
    (N, T) per origin; C = len(compounds)."""

    compounds: tuple[str, ...]
    stay: np.ndarray  # (N, T, K) laps t+1 .. t+K staying out (the nets' forecast)
    new: np.ndarray  # (C, N, T, K) laps t+3 .. t+K+2 after a stop onto each compound (FreshStart), NaN where none
    new_half90: np.ndarray  # (C, N, T, K) their 90% half-width
    in_out: np.ndarray  # (N, T) the stop's in-lap plus out-lap: the two stay-out laps plus the race's stop loss
    possible: np.ndarray  # (N, T) bool: a what-if is made at this lap

    def summary(self) -> dict[str, np.ndarray]:
        """Per compound (C, N, T): stop_cost (in- and out-lap minus the two stay-out laps they
        replace), gain_per_lap (stay-out minus new-tyre lap over laps t+3 .. t+K), delta
        (stopping minus staying out over laps t+1 .. t+K; < 0: the stop has paid off within the
        forecast) and payback_laps (stop_cost / gain_per_lap; NaN unless the gain is > 0)."""
        K = self.stay.shape[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            cost = np.broadcast_to(self.in_out - self.stay[..., 0] - self.stay[..., 1], self.new.shape[:-1])  # (C, N, T)
            gain = self.stay[None, ..., STOP_LAPS:] - self.new[..., : K - STOP_LAPS]  # (C, N, T, K-2) laps t+3 .. t+K
            per_lap = gain.mean(-1)
            delta = cost - gain.sum(-1)
            payback = np.where(per_lap > 0, cost / per_lap, np.nan)
        return {"stop_cost": cost, "gain_per_lap": per_lap, "delta": delta, "payback_laps": payback}


def pit_now(model: torch.nn.Module, seq: Sequences, stay: np.ndarray,
            compounds: tuple[str, ...] = DRY_COMPOUNDS) -> PitNow:
    """The what-if at every lap of `seq`.

    Args:
        model: a loaded run's model (`load_run(...).model`) with a FreshStart.
        seq: the sequences (`build_sequences`).
        stay: (N, T, K) seconds, the run's forecast of laps t+1 .. t+K at every lap
            (`to_seconds(seq, run_net(model, seq)["mean"])`).
        compounds: the dry compounds to stop onto.

    Raises:
        LapnetError: the run has no FreshStart, or a compound is not a dry one.
    """
    valid = np.arange(seq.x.shape[1])[None, :] < seq.lengths[:, None]
    return what_if(model, seq.x, seq.lap_number, seq.ref, seq.stop_loss, stay, valid, compounds)


def what_if(model: torch.nn.Module, x: np.ndarray, lap_number: np.ndarray, ref: np.ndarray, stop_loss: np.ndarray,
            stay: np.ndarray, valid: np.ndarray, compounds: tuple[str, ...] = DRY_COMPOUNDS) -> PitNow:
    """`pit_now` on bare arrays of any leading shape S (a race's sequences (N, T), one live lap
    (1, 1)): x (*S, D) lap vectors, lap_number (*S,), ref (*S,) the race's reference lap and
    stop_loss (*S,) its stop loss so far (`Sequences`), stay (*S, K) the stay-out forecast, all in
    seconds; valid (*S,) bool (not padding)."""
    fresh = require_fresh_start(model)
    compounds = tuple(compounds)
    bad = [c for c in compounds if c not in DRY_COMPOUNDS]
    if bad or not compounds:
        raise LapnetError(f"pit-now compounds: {', '.join(bad) or 'none given'}: choose from {', '.join(DRY_COMPOUNDS)}")
    ref = np.asarray(ref, np.float64)
    wet = x[..., [_IX[f"compound_{c.lower()}"] for c in WET_COMPOUNDS]].max(-1) > 0
    left = x[..., _IX["laps_left"]] * 30  # laps to the flag after lap t (capped at 90)
    possible = valid & ~wet & (x[..., _IX["in_lap"]] == 0) & (left >= STOP_LAPS + 1) & np.isfinite(stay[..., 0])
    new = np.full((len(compounds), *stay.shape), np.nan)
    half = np.full_like(new, np.nan)
    for c, name in enumerate(compounds):
        v = torch.from_numpy(stop_vector(x, lap_number, name))
        with torch.no_grad():
            pct = fresh(v).double().numpy()  # (*S, K) lap t+2+k minus ref, % of ref; NaN where it cannot forecast
            hw = fresh.interval(v).double().numpy()
        ok = possible[..., None] & np.isfinite(pct)
        new[c] = np.where(ok, ref[..., None] * (1.0 + pct / 100.0), np.nan)
        half[c] = np.where(ok, ref[..., None] * hw / 100.0, np.nan)
    possible = possible & np.isfinite(new[..., 0]).any(0)
    in_out = np.where(possible, stay[..., 0] + stay[..., 1] + np.asarray(stop_loss, np.float64), np.nan)
    return PitNow(compounds, np.where(possible[..., None], stay, np.nan), new, half, in_out, possible)


def live_record(what: PitNow) -> dict | None:
    """`race live --pit-now`'s field for one lap (`what` of shape (1, 1)): per compound the new-tyre
    laps t+3 .. t+K+2 and the summary's numbers, seconds rounded to the millisecond; None when no
    what-if is made at this lap."""
    if not what.possible[0, 0]:
        return None
    s = what.summary()
    r = lambda v: round(float(v), 3) if math.isfinite(float(v)) else None  # noqa: E731
    return {"in_out": r(what.in_out[0, 0]),
            **{name: {"laps": [r(v) for v in what.new[c, 0, 0]], "stop_cost": r(s["stop_cost"][c, 0, 0]),
                      "gain_per_lap": r(s["gain_per_lap"][c, 0, 0]), "delta_next10": r(s["delta"][c, 0, 0]),
                      "payback_laps": r(s["payback_laps"][c, 0, 0])} for c, name in enumerate(what.compounds)}}


CHECK_NAMES = ("what_if_at_lap_t", "at_the_out_lap", "field_pace_at_t", "old_tyres_at_t")


def stop_errors(seq: Sequences, what: PitNow, at_out_lap: np.ndarray) -> dict:
    """The what-if against the stops drivers made (`stop_check` scores them; kept apart so that
    folds of races can be pooled first): every stop whose in-lap is lap t+1 and out-lap t+2
    (consecutive laps), onto a dry compound the what-if covers, with a what-if made at lap t.

    - "laps": per forecaster (CHECK_NAMES) and horizon k (lap t+2+k), forecast minus the lap run,
      on the pairs where the new stint's lap is Scored (as every forecast is scored) and all four
      forecast it: the what-if at lap t for the compound fitted; the forecast made at the out-lap
      itself (`at_out_lap`, (N, T, K) seconds: the run's own, which knows two laps more); the
      field's pace at lap t (the FreshStart's anchor); the stint's last Scored lap at lap t (the
      old tyres' pace: what ignoring the stop would say);
    - "compound": the compound fitted of each "laps" pair, per horizon;
    - "stop": the in-lap plus the out-lap forecast at lap t minus the two laps run, on stops where
      both are timed and the track was green on both (a stop under a safety car is cheap in a way
      no pit loss measured at green flags says), and "stop_actual" those laps' sum.
    """
    x = seq.x
    K = seq.future.shape[2]
    inl, outl, green = x[..., _IX["in_lap"]] > 0, x[..., _IX["out_lap"]] > 0, x[..., _IX["green"]] > 0
    pace = x[..., _IX["field_pace_any"]] * 5.0
    field = np.where(x[..., _IX["has_field_pace_any"]] > 0, seq.ref * (1.0 + pace / 100.0), seq.ref)
    out: dict = {"stops": 0, "laps": {n: [[] for _ in range(K)] for n in CHECK_NAMES},
                 "compound": [[] for _ in range(K)], "stop": [], "stop_actual": []}
    for i in range(len(seq.lengths)):
        for t in range(int(seq.lengths[i]) - STOP_LAPS):
            if not (inl[i, t + 1] and outl[i, t + 2] and what.possible[i, t]):
                continue
            n = seq.lap_number[i, t]
            if seq.lap_number[i, t + 1] != n + 1 or seq.lap_number[i, t + 2] != n + 2:
                continue
            name = COMPOUNDS[seq.compound[i, t + 2]]
            if name not in what.compounds:
                continue
            c = what.compounds.index(name)
            out["stops"] += 1
            for k in range(K):
                f = (what.new[c, i, t, k], at_out_lap[i, t + 2, k], field[i, t], seq.base[i, t])
                if not (seq.target_mask[i, t + 2, k] and all(np.isfinite(f))):
                    continue
                for m, v in zip(CHECK_NAMES, f):
                    out["laps"][m][k].append(float(v - seq.future[i, t + 2, k]))
                out["compound"][k].append(name)
            run = seq.lap_time[i, t + 1] + seq.lap_time[i, t + 2]
            if np.isfinite(run) and green[i, t + 1] and green[i, t + 2]:
                out["stop"].append(float(what.in_out[i, t] - run))
                out["stop_actual"].append(float(run))
    return out


def pool_stop_errors(parts: list[dict]) -> dict:
    """`stop_errors` of several folds as one."""
    K = len(parts[0]["compound"])
    return {"stops": sum(p["stops"] for p in parts),
            "laps": {m: [[e for p in parts for e in p["laps"][m][k]] for k in range(K)] for m in CHECK_NAMES},
            "compound": [[c for p in parts for c in p["compound"][k]] for k in range(K)],
            "stop": [e for p in parts for e in p["stop"]], "stop_actual": [a for p in parts for a in p["stop_actual"]]}


def stop_check(errors: dict, horizons=(1, 5, 10)) -> dict:
    """Score `stop_errors`: MAE, bias and n per forecaster and horizon, the what-if's by compound
    fitted, and the stop's two laps. Seconds."""
    def block(e) -> dict:
        e = np.asarray(e, float)
        return {"mae": float(np.abs(e).mean()) if len(e) else None, "bias": float(e.mean()) if len(e) else None,
                "n": int(len(e))}

    K = len(errors["compound"])
    hs = [h for h in horizons if h <= K]
    by = {}
    for name in DRY_COMPOUNDS:
        per = {}
        for h in hs:
            e = np.asarray(errors["laps"][CHECK_NAMES[0]][h - 1])
            per[f"h{h}"] = block(e[np.asarray(errors["compound"][h - 1]) == name] if len(e) else e)
        by[name] = per
    return {"stops": errors["stops"],
            "laps": {m: {f"h{h}": block(errors["laps"][m][h - 1]) for h in hs} for m in CHECK_NAMES},
            "what_if_by_compound": by,
            "stop": {**block(errors["stop"]),
                     "median_actual": float(np.median(errors["stop_actual"])) if errors["stop_actual"] else None}}


def pit_now_rows(seq: Sequences, what: PitNow, i: int, t: int) -> tuple[list[dict], list[dict]]:
    """The what-if at lap t of sequence i as tables: per lap ahead (lap, the stay-out forecast,
    the new-tyre forecast per compound, "in-lap" / "out-lap" on the stop's two laps) and per
    compound (the summary's four numbers, the new tyres' first lap and the in- plus out-lap)."""
    K = what.stay.shape[-1]
    n0 = int(seq.lap_number[i, t])
    s = what.summary()
    laps = []
    for j in range(1, K + STOP_LAPS + 1):
        row: dict = {"LapNumber": n0 + j, "stay_out": float(what.stay[i, t, j - 1]) if j <= K else math.nan}
        for c, name in enumerate(what.compounds):
            row[name] = ("in-lap" if j == 1 else "out-lap") if j <= STOP_LAPS else float(what.new[c, i, t, j - STOP_LAPS - 1])
        laps.append(row)
    per = [{"compound": name, "in_out": float(what.in_out[i, t]), "first_lap": float(what.new[c, i, t, 0]),
            **{k: float(v[c, i, t]) for k, v in s.items()}} for c, name in enumerate(what.compounds)]
    return laps, per


def _why_not(x: np.ndarray, stay0: float, laps_left: float) -> str:
    """Why no what-if is made at a lap with features `x` (D,)."""
    if any(x[_IX[f"compound_{c.lower()}"]] > 0 for c in WET_COMPOUNDS):
        return "the car is on intermediate or wet tyres (the laps after a stop are learnt from dry stops)"
    if x[_IX["in_lap"]] > 0:
        return "this lap is an in-lap: the stop is already under way"
    if laps_left < STOP_LAPS + 1:
        return (f"{laps_left:.0f} laps to the flag after it: no lap on new tyres to forecast (for a race still "
                "running, give its length with --race-laps)")
    if not math.isfinite(stay0):
        return "no forecast of the laps ahead at this lap (no lap of the race has been run at racing pace yet)"
    return "no lap of the race has shown its green pace yet"


def pit_now_race(run, sources, *, driver: str, lap: int | None = None, compounds: tuple[str, ...] = DRY_COMPOUNDS,
                 race_length: int | str = "file") -> dict:
    """`lapnet race pit-now`: the what-if for one driver at one lap of one race.

    Args:
        run: a run directory (`lapnet race train`) with a FreshStart.
        sources: one race's laps (a file, a DataFrame: what `load_laps` reads).
        driver: one driver (a code in any case or a car number).
        lap: the lap at whose end the stop is called (the next lap is the in-lap); None: the
            driver's last lap in the table (the race now, for a race still running).
        compounds: the dry compounds to stop onto.
        race_length: as `eval_race` takes it (give it for a race still running).

    Returns:
        {"race", "driver", "lap", "compound", "tyre_life", "stop_loss_s" (the race's stop loss so
        far: `PitContext.stop_loss`), "in_out_s", "laps": [{LapNumber, stay_out, one column per compound}], "compounds":
        [{compound, first_lap, stop_cost, gain_per_lap, delta, payback_laps, in_out}],
        "race_laps", "cleaning"}: seconds.

    Raises:
        LapnetError: not one race or not one driver, a lap the driver did not run, a run without a
            FreshStart, or a lap where no what-if can be made (saying why).
    """
    from lapnet.race.io import parse_drivers
    from lapnet.race.pipeline import load_laps, load_run, race_sequences, run_net, subset_sequences, to_seconds

    r = load_run(run)
    require_fresh_start(r.model)  # before the laps are read
    laps, report = load_laps(sources)
    if "Race" in laps.columns and laps["Race"].nunique() > 1:
        raise LapnetError(f"the table holds {laps['Race'].nunique()} races: give one race's laps (split it by its "
                          "Race column)")
    drivers = parse_drivers(driver, laps, no_timed_lap=[d for rr in report.races for d in rr.drivers_dropped])
    if len(drivers) != 1:
        raise LapnetError(f"--driver {driver!r}: give one driver, not {len(drivers)}")
    seq, used = race_sequences(laps, race_length)
    i = next(k for k, key in enumerate(seq.keys) if key[1] == drivers[0])
    sub = subset_sequences(seq, np.array([i]))
    L = int(sub.lengths[0])
    numbers = sub.lap_number[0, :L]
    if lap is None:
        t = L - 1
    else:
        hit = np.flatnonzero(numbers == lap)
        if not len(hit):
            run_laps = numbers[np.isfinite(numbers)]
            raise LapnetError(f"--lap {lap}: {drivers[0]} has no lap {lap} in the table (laps "
                              f"{run_laps.min():.0f}-{run_laps.max():.0f})")
        t = int(hit[0])
    stay = to_seconds(sub, run_net(r.model, sub)["mean"])
    what = pit_now(r.model, sub, stay, compounds)
    n = int(numbers[t])
    if not what.possible[0, t]:
        left = float(sub.x[0, t, _IX["laps_left"]] * 30)
        hint = "" if lap is not None else " (the driver's last lap in the table; another with --lap N)"
        raise LapnetError(f"no pit-now forecast for {drivers[0]} at lap {n}{hint}: {_why_not(sub.x[0, t], stay[0, t, 0], left)}")
    rows, per = pit_now_rows(sub, what, 0, t)
    race = str(seq.keys[i][0])
    comp_now = COMPOUNDS[sub.compound[0, t]]
    return {"race": race, "driver": drivers[0], "lap": n, "compound": comp_now,
            "tyre_life": float(sub.x[0, t, _IX["tyre_life"]] * 30),
            "stop_loss_s": float(sub.stop_loss[0, t]), "in_out_s": float(what.in_out[0, t]),
            "half90_first_lap": {name: float(what.new_half90[c, 0, t, 0]) for c, name in enumerate(what.compounds)},
            "laps": rows, "compounds": per, "race_laps": used, "cleaning": report.summary()}
