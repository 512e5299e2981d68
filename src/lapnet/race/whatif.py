"""What if the driver pits now: the laps on new tyres against staying out, or stopping later.

A pit wall's question at every lap: box now (the next lap is the in-lap, the one after it the
out-lap) onto a new set (whichever compound, ANY, by default; or SOFT, MEDIUM or HARD), stay
out, or box a lap or two later? The
pieces:

- the stay-out laps: the nets' forecast of laps t+1 .. t+K from the stint's last Scored lap;
- the new-tyre laps t+3 .. t+K+2: the run's `FreshStart` (the model that forecasts from real
  out-laps) read on the out-lap the stop would make (`stop_vector`): lap t's features moved two
  laps on, a new stint on a new set of the chosen compound, everything the pit wall knows now
  (the field's pace, the driver's pace against it, the track status) kept as it is; a stop j
  laps later is the same read j laps further on;
- the stop itself: the in-lap plus the out-lap take the two stay-out laps they replace plus the
  race's stop loss so far (`PitContext`): under green flags the median, over the green stops
  seen, of in-lap plus out-lap minus twice the stopping driver's racing pace before his stop;
  called under a safety car or VSC, the stops made under one against what the cars nearest on
  the road ran staying out (the cheap stop). Both are shrunk to a prior before there are many.

Every forecast here, as every other in lapnet, is of laps run at racing pace, and ends at the
chequered flag (the race length the features use). From these, per compound (`PitNow.summary`):
`stop_cost` (the stop loss), `gain_per_lap` (the stay-out lap minus the new-tyre lap, averaged
over laps t+3 .. t+K), `delta` (stopping minus staying out over laps t+1 .. t+K: negative when
the stop has paid for itself within the forecast), `payback_laps` (laps on new tyres to make
back the stop cost at the forecast's mean gain: an extrapolation, NaN when the new tyres are not
faster), `now_vs_later` (boxing now minus boxing j = 1 .. LATER laps later, over laps t+1 ..
t+K: the stop costs the same either way; negative when the early stop's new tyres gain more by
lap t+K than the later stop's) and `now_vs_later_to_flag` (the same carried to the flag at the
two sets' mean gap per lap while both are new, if neither stops again: the later set is then j
laps fresher, which can turn the sign). No rival is modelled: this is not the undercut on a given car.

Every lap's numbers use only laps that ended before it. Checked on the real stops of real races
by `stop_check` (`benchmarks/race_real.py`, out of fold): the new-tyre laps forecast two laps
before the stop against the laps the driver then ran, and the stop's cost against what his stop
cost. What the laps would have been had he stayed out, or fitted another compound, cannot be
checked on real data: nobody runs both.

No what-if (NaN) where it cannot be made: a run without a FreshStart refuses (`LapnetError`);
on intermediate or wet tyres, on an in-lap (the stop is already under way), under a red flag
(tyres are changed in the pit lane), before another car has run a Scored lap (the first laps:
the FreshStart's start weights are for the standing start), or fewer than 3 laps from the flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES, FEW_LAPS_SCALE, LAPS_SCALE, PREV, STOPS_SCALE, Sequences
from lapnet.race.schema import COMPOUNDS, DRY_COMPOUNDS, WET_COMPOUNDS

STOP_LAPS = 2  # a stop called now: the next lap is the in-lap, the one after it the out-lap
FRESH_TYRES = 3  # pit-now notes that on tyres this many laps old or younger its two models may disagree
LATER = 3  # `now_vs_later`: boxing now against boxing 1 .. LATER laps later
# "a new set", whichever dry compound: the mean of the three compounds' forecasts (of the two that meet the
# two-compound rule while it binds: `rule_sets`). On the real stops of the 15 races it forecasts the laps after a
# stop as well as the compound actually fitted does (benchmarks/race_real.py): the compound terms, learnt from the
# stops teams chose, add nothing measurable, so this is what the commands show first
ANY = "ANY"
CHOICES = (ANY, *DRY_COMPOUNDS)
_IX = {name: j for j, name in enumerate(FEATURES)}
_NEUTRAL = ("safety_car", "vsc")  # a stop called under these is priced as a neutralised stop
_DRY_BITS = [1 << COMPOUNDS.index(c) for c in DRY_COMPOUNDS]
_WET_BITS = sum(1 << COMPOUNDS.index(c) for c in WET_COMPOUNDS)


def rule_sets(tyres_used: np.ndarray, dry_now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two-compound rule at each lap: whether it still binds, and the dry compounds a stop
    must fit to meet it.

    A driver who has not run intermediate or wet tyres must use two different dry compounds in
    the race (FIA Sporting Regulations 2023, article 30.5 e). While he has run one only, a stop
    onto that one leaves the rule to a later stop, which a what-if of one stop does not price:
    "a new set" (ANY) then means one of the others.

    Args:
        tyres_used: (*S,) int, bit k set when COMPOUNDS[k] has been run (`Sequences.tyres_used`).
        dry_now: (*S,) bool, the car is on a dry compound.

    Returns:
        open_: (*S,) bool, the rule still binds (one dry compound run, no wet tyre, on a dry one now);
        allowed: (3, *S) bool per DRY_COMPOUNDS, a stop onto it meets the rule (all True where
        the rule does not bind).
    """
    used = np.asarray(tyres_used, np.int64)
    ran = np.stack([(used & b) > 0 for b in _DRY_BITS])  # (3, *S)
    open_ = np.asarray(dry_now, bool) & ((used & _WET_BITS) == 0) & (ran.sum(0) == 1)
    return open_, ~(open_[None] & ran)


def stop_vector(x: np.ndarray, lap_number: np.ndarray, compound: str, laps_on: int = STOP_LAPS) -> np.ndarray:
    """The out-lap vector of a stop whose out-lap is `laps_on` laps after lap t: lap t's features
    (..., D) moved that many laps on, into a new stint on a new set of `compound`.

    What the pit wall knows now stays as it is: the field's pace and tyre age, the driver's own
    pace against the field, the track status (a stop called under a safety car comes out under
    it), the race's pit loss. What the stop changes is set as on a real out-lap: out_lap,
    tyre life 1 (FastF1 counts the out-lap of a new set as lap 1), a fresh set, the next stint,
    one more stop, no Scored lap in the stint yet, the race fraction and laps left moved on.

    Args:
        x: (..., D) lap vectors (FEATURES).
        lap_number: (...,) the laps' numbers.
        compound: a dry compound (DRY_COMPOUNDS).
        laps_on: laps from lap t to the out-lap (STOP_LAPS for a stop called now).

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
    new = n + laps_on
    put("out_lap", 1.0)
    put("tyre_life", 1.0 / LAPS_SCALE)
    put("fresh_tyre", 1.0)
    put("stint", get("stint") + 1.0 / STOPS_SCALE)
    put("laps_in_stint", 1.0 / LAPS_SCALE)
    put("lap_frac", np.where(n > 0, get("lap_frac") * new / np.maximum(n, 1.0), get("lap_frac")))
    put("laps_left", np.maximum(get("laps_left") - laps_on / LAPS_SCALE, 0.0))
    put("pits_done", np.minimum(get("pits_done") + 1.0 / STOPS_SCALE, 1.0))
    dry_now = sum(get(f"compound_{c.lower()}") for c in DRY_COMPOUNDS) > 0
    other = 1.0 - get(f"compound_{compound.lower()}")  # the new set is another dry compound than lap t's
    put("two_compounds", np.maximum(get("two_compounds"), dry_now * other))
    neutral = sum(get(k) for k in _NEUTRAL) > 0  # the status stays: so does the count of laps since a neutral one
    put("since_neutral", np.where(neutral, get("since_neutral"), np.minimum(get("since_neutral") + laps_on / FEW_LAPS_SCALE, 1.0)))
    for k in (2, 3, 4, 5):
        put(f"opening_lap_{k}", (new == k).astype(np.float32))
    return v


def require_fresh_start(model: torch.nn.Module):
    """The run's FreshStart, which forecasts the laps after a stop; LapnetError when it has none."""
    fresh = getattr(model, "fresh", None)
    if fresh is None:
        raise LapnetError("this run has no FreshStart, which forecasts the laps after a stop (its config.json "
                          "'fresh_start' says why: its check on the training races did not keep it, or too few out-laps "
                          "to learn from): train a run on more races")
    return fresh


@dataclass
class PitNow:
    """The what-if at every lap of some sequences, in seconds. Shapes: S the laps' leading shape
    ((N, T) for a race's sequences), K horizons, C = len(compounds); laps past the flag are NaN."""

    compounds: tuple[str, ...]
    stay: np.ndarray  # (*S, K) laps t+1 .. t+K staying out (the nets' forecast)
    new: np.ndarray  # (C, *S, K) laps t+3 .. t+K+2 after a stop called now, onto each compound (FreshStart)
    new_half90: np.ndarray  # (C, *S, K) their 90% half-width
    later: np.ndarray  # (C, LATER, *S, K) laps t+j+3 .. t+j+K+2 after a stop called j = 1 .. LATER laps later
    stop_loss: np.ndarray  # (*S,) what the stop costs against the two stay-out laps
    stop_stops: np.ndarray  # (*S,) int: the race's stops that cost is measured on so far (0: the prior alone)
    in_out: np.ndarray  # (*S,) the stop's in-lap plus out-lap: the two stay-out laps plus stop_loss
    neutral: np.ndarray  # (*S,) bool: called under a safety car or VSC (priced as such a stop)
    laps_left: np.ndarray  # (*S,) laps to the flag after lap t
    possible: np.ndarray  # (*S,) bool: a what-if is made at this lap
    rule_open: np.ndarray  # (*S,) bool: the two-compound rule still binds (`rule_sets`); ANY is then the others' mean
    allowed: np.ndarray  # (3, *S) bool per DRY_COMPOUNDS: a stop onto it meets the rule
    # (C, *S, 2): per set, the seconds a lap of tyre age costs, linear and quadratic in the age (`tyre_wear`: the run's
    # calibration on its training races; ANY, the mean over the compounds it averages); None: the run has none
    wear: np.ndarray | None = None

    def summary(self) -> dict[str, np.ndarray]:
        """Per compound (C, *S): stop_cost, gain_per_lap (stay-out minus new-tyre lap over laps
        t+3 .. t+E, E = min(K, laps to the flag)), delta (stopping minus staying out over laps
        t+1 .. t+E; < 0: the stop has paid off within the forecast), payback_laps (stop_cost /
        gain_per_lap; NaN unless the gain is > 0); now_vs_later (C, LATER, *S): boxing now minus
        boxing j laps later over laps t+1 .. t+E (NaN where E < j + 3: no lap on the later set);
        now_vs_later_to_flag (C, LATER, *S): that plus, over the laps from t+E+1 to the flag,
        what the early set's j more laps of age cost on each (an extrapolation, if neither stops
        again), by the run's tyre wear curve (`wear`: w(a) = linear a + quad a^2 seconds at age a,
        the out-lap being age 1, so lap t+E+q costs w(E+q-1) - w(E+q-1-j) more); a run without
        one carries the two sets' mean gap per lap while both are new (laps t+j+3 .. t+E) instead,
        which runs high early in a race (the first laps on a new set have a shape of their own)."""
        K = self.stay.shape[-1]
        C = len(self.compounds)
        with np.errstate(invalid="ignore", divide="ignore"):
            cost = np.broadcast_to(self.stop_loss, (C, *self.stop_loss.shape))
            gain = self.stay[None, ..., STOP_LAPS:] - self.new[..., : K - STOP_LAPS]  # (C, *S, K-2) laps t+3 .. t+K
            counted = np.isfinite(gain).sum(-1)
            per_lap = np.where(counted > 0, np.nansum(gain, -1) / np.maximum(counted, 1), np.nan)
            delta = cost - np.nansum(gain, -1)
            delta = np.where(np.isfinite(per_lap), delta, np.nan)
            payback = np.where(per_lap > 0, cost / per_lap, np.nan)
            # boxing j laps later: the same stop cost, stay-out laps t+3 .. t+j+2 instead of new ones, then the later set
            vs = np.full((C, LATER, *self.stop_loss.shape), np.nan)
            to_flag = np.full_like(vs, np.nan)
            beyond = np.maximum(self.laps_left - K, 0.0)  # laps after t+K to the flag
            for j in range(1, LATER + 1):
                a = self.new[..., : K - STOP_LAPS]  # (C, *S, K-2) laps t+3 .. t+K, boxing now
                b = np.concatenate([np.broadcast_to(self.stay[None, ..., STOP_LAPS: STOP_LAPS + j], (C, *self.stay.shape[:-1], j)),
                                    self.later[:, j - 1, ..., : K - STOP_LAPS - j]], -1)  # boxing j laps later
                ok = np.isfinite(b[..., j]) if K - STOP_LAPS > j else np.zeros(b.shape[:-1], bool)  # a lap on the later set
                both = np.isfinite(a) & np.isfinite(b)
                d = np.nansum(np.where(both, a - b, 0.0), -1)
                vs[:, j - 1] = np.where(ok & np.isfinite(per_lap), d, np.nan)
                # both on new sets (laps t+j+3 .. t+E): the early set, j laps older, against the later one, per lap
                fresh_both = both & (np.arange(K - STOP_LAPS) >= j)
                n_both = fresh_both.sum(-1)
                gap = np.where(n_both > 0, np.nansum(np.where(fresh_both, a - b, 0.0), -1) / np.maximum(n_both, 1), np.nan)
                carry = gap * beyond
                if self.wear is not None:  # sum over ages a = K .. K+n-1 of w(a) - w(a-j), n the laps after t+K
                    n = beyond
                    ages = n * (2 * K + n - 1) / 2  # the sum of those ages
                    carry = self.wear[..., 0] * j * n + self.wear[..., 1] * (2 * j * ages - j * j * n)
                    carry = np.where(np.isfinite(gap), carry, np.nan)
                to_flag[:, j - 1] = vs[:, j - 1] + carry
        return {"stop_cost": cost, "gain_per_lap": per_lap, "delta": delta, "payback_laps": payback, "now_vs_later": vs,
                "now_vs_later_to_flag": to_flag}


def pit_now(model: torch.nn.Module, seq: Sequences, stay: np.ndarray,
            compounds: tuple[str, ...] = DRY_COMPOUNDS, wear: dict | None = None, rule: bool = True) -> PitNow:
    """The what-if at every lap of `seq`.

    Args:
        model: a loaded run's model (`load_run(...).model`) with a FreshStart.
        seq: the sequences (`build_sequences`).
        stay: (N, T, K) seconds, the run's forecast of laps t+1 .. t+K at every lap
            (`to_seconds(seq, run_net(model, seq)["mean"])`).
        compounds: the sets to stop onto: dry compounds, or ANY (a new set, whichever: the mean
            of the three dry compounds' forecasts, or of those the two-compound rule allows).
        wear: the run's tyre wear per dry compound (`tyre_wear`), for `now_vs_later_to_flag`;
            None: the two sets' mean gap is carried instead.
        rule: apply the two-compound rule (`rule_sets`); False for a sprint, which has none.

    Raises:
        LapnetError: the run has no FreshStart, or a compound is not one of CHOICES.
    """
    valid = np.arange(seq.x.shape[1])[None, :] < seq.lengths[:, None]
    return what_if(model, seq.x, seq.lap_number, seq.ref, seq.stop_loss, seq.stop_loss_neutral, stay, valid, compounds,
                   seq.stop_stops, seq.tyres_used if rule else None, wear)


def what_if(model: torch.nn.Module, x: np.ndarray, lap_number: np.ndarray, ref: np.ndarray, stop_loss: np.ndarray,
            stop_loss_neutral: np.ndarray, stay: np.ndarray, valid: np.ndarray,
            compounds: tuple[str, ...] = DRY_COMPOUNDS, stop_stops: np.ndarray | None = None,
            tyres_used: np.ndarray | None = None, wear: dict | None = None) -> PitNow:
    """`pit_now` on bare arrays of any leading shape S (a race's sequences (N, T), one live lap
    (1, 1)): x (*S, D) lap vectors, lap_number (*S,), ref (*S,) the race's reference lap,
    stop_loss and stop_loss_neutral (*S,) its stop losses so far (`Sequences`), stay (*S, K) the
    stay-out forecast, all in seconds; valid (*S,) bool (not padding); stop_stops (*S, 2) the
    stops those two losses are measured on (None: not known, reported as -1); tyres_used (*S,)
    the compounds run so far (`Sequences.tyres_used`; None: not known, the rule taken as met);
    wear as `pit_now` takes it."""
    fresh = require_fresh_start(model)
    compounds = tuple(compounds)
    bad = [c for c in compounds if c not in CHOICES]
    if bad or not compounds:
        raise LapnetError(f"pit-now compounds: {', '.join(bad) or 'none given'}: choose from {', '.join(CHOICES)}")
    ref = np.asarray(ref, np.float64)
    K = stay.shape[-1]
    wet = x[..., [_IX[f"compound_{c.lower()}"] for c in WET_COMPOUNDS]].max(-1) > 0
    left = np.round(x[..., _IX["laps_left"]].astype(np.float64) * LAPS_SCALE)  # laps to the flag after lap t (capped at 90)
    neutral = sum(x[..., _IX[k]] for k in _NEUTRAL) > 0
    dry_now = x[..., [_IX[f"compound_{c.lower()}"] for c in DRY_COMPOUNDS]].max(-1) > 0
    if tyres_used is None:
        rule_open, allowed = np.zeros(neutral.shape, bool), np.ones((len(DRY_COMPOUNDS), *neutral.shape), bool)
    else:
        rule_open, allowed = rule_sets(tyres_used, dry_now)
    possible = (valid & ~wet & (x[..., _IX["in_lap"]] == 0) & (x[..., _IX["red"]] == 0) & (left >= STOP_LAPS + 1)
                & (x[..., _IX["has_field_pace_any"]] > 0) & np.isfinite(stay[..., 0]))
    ahead = np.arange(1, K + 1)  # laps after lap t of the forecasts' horizons
    before_flag = ahead <= left[..., None]  # (*S, K)

    # every (dry compound, laps to the out-lap) read once, in one batch: ANY is their mean (`read`)
    needed = sorted({(one, STOP_LAPS + j) for name in compounds for one in (DRY_COMPOUNDS if name == ANY else (name,))
                     for j in range(LATER + 1)})
    v = torch.from_numpy(np.stack([stop_vector(x, lap_number, one, on) for one, on in needed]))  # (M, *S, D)
    with torch.no_grad():
        pct_all, hw_all = fresh(v).double().numpy(), fresh.interval(v).double().numpy()  # (M, *S, K) % of ref; NaN: none
    at = {key: m for m, key in enumerate(needed)}

    def read(name: str, laps_on: int) -> tuple[np.ndarray, np.ndarray]:
        """(*S, K) seconds of laps t+laps_on+1 .. t+laps_on+K on a new set of `name`, and their 90% half-width."""
        if name == ANY:  # the mean over the compounds the two-compound rule allows (all three once it is met)
            w = allowed[..., None].astype(np.float64)  # (3, *S, 1)
            rows = [at[(one, laps_on)] for one in DRY_COMPOUNDS]
            pct = np.where(w > 0, pct_all[rows], 0.0).sum(0) / w.sum(0)
            hw = np.where(w > 0, hw_all[rows], 0.0).sum(0) / w.sum(0)
        else:
            pct, hw = pct_all[at[(name, laps_on)]], hw_all[at[(name, laps_on)]]
        ok = possible[..., None] & np.isfinite(pct) & (ahead + laps_on <= left[..., None])
        return (np.where(ok, ref[..., None] * (1.0 + pct / 100.0), np.nan), np.where(ok, ref[..., None] * hw / 100.0, np.nan))

    new = np.full((len(compounds), *stay.shape), np.nan)
    half = np.full_like(new, np.nan)
    later = np.full((len(compounds), LATER, *stay.shape), np.nan)
    for c, name in enumerate(compounds):
        new[c], half[c] = read(name, STOP_LAPS)
        for j in range(1, LATER + 1):
            later[c, j - 1] = read(name, STOP_LAPS + j)[0]
    possible = possible & np.isfinite(new[..., 0]).any(0)
    loss = np.where(neutral, np.asarray(stop_loss_neutral, np.float64), np.asarray(stop_loss, np.float64))
    counts = (np.full(neutral.shape, -1, np.int64) if stop_stops is None
              else np.where(neutral, np.asarray(stop_stops)[..., 1], np.asarray(stop_stops)[..., 0]))
    stay = np.where(possible[..., None] & before_flag, stay, np.nan)
    curves = None
    if wear is not None:  # (C, *S, 2): each set's curve; ANY's the mean over the compounds it averages
        per = np.array([wear[c] for c in DRY_COMPOUNDS], np.float64)  # (3, 2)
        w = allowed.astype(np.float64)  # (3, *S)
        curves = np.stack([np.tensordot(w, per, (0, 0)) / w.sum(0)[..., None] if name == ANY
                           else np.broadcast_to(per[DRY_COMPOUNDS.index(name)], (*neutral.shape, 2)) for name in compounds])
    return PitNow(compounds, stay, new, half, later, np.where(possible, loss, np.nan), counts,
                  np.where(possible, stay[..., 0] + stay[..., 1] + loss, np.nan), neutral, left, possible, rule_open, allowed,
                  curves)


def tyre_wear(config: dict) -> dict | None:
    """A run's tyre wear per dry compound, {compound: (linear, quad)} seconds per lap of age and
    per age squared (`config.json` "tyre_wear", the simulator's calibration fitted on the
    training races: `train_race`), or None for a run without it."""
    kept = config.get("tyre_wear")
    try:
        wear = {c: (float(kept[c]["linear_s"]), float(kept[c]["quad_s"])) for c in DRY_COMPOUNDS}
    except (TypeError, KeyError, ValueError):  # none, or not what train_race writes: carry the mean gap
        return None
    return wear if all(math.isfinite(v) for pair in wear.values() for v in pair) else None


def live_record(what: PitNow, lap: int) -> dict | None:
    """`race live --pit-now`'s field for lap `lap` (`what` of shape (1, 1)): the stop's cost and
    its two laps, and per compound the new-tyre laps (from lap+3 on, to the flag) and the
    summary's numbers, seconds rounded to the millisecond; "rule_needs": the dry compounds a stop
    must fit while the two-compound rule binds (ANY is then their mean), else None; None when no
    what-if is made."""
    if not what.possible[0, 0]:
        return None
    s = what.summary()
    r = lambda v: round(float(v), 3) if math.isfinite(float(v)) else None  # noqa: E731
    return {"in_lap": lap + 1, "stop_cost": r(what.stop_loss[0, 0]), "stop_cost_stops": int(what.stop_stops[0, 0]),
            "in_out": r(what.in_out[0, 0]), "under_safety_car": bool(what.neutral[0, 0]), "laps_to_flag": int(what.laps_left[0, 0]),
            "rule_needs": rule_needs(what, (0, 0)), "to_flag_by": "tyre_wear" if what.wear is not None else "mean_gap",
            **{name: {"first_lap_number": lap + STOP_LAPS + 1, "laps": [r(v) for v in what.new[c, 0, 0] if math.isfinite(v)],
                      "gain_per_lap": r(s["gain_per_lap"][c, 0, 0]), "delta": r(s["delta"][c, 0, 0]),
                      "payback_laps": r(s["payback_laps"][c, 0, 0]),
                      "now_vs_later": [r(v) for v in s["now_vs_later"][c, :, 0, 0]],
                      "now_vs_later_to_flag": [r(v) for v in s["now_vs_later_to_flag"][c, :, 0, 0]]}
               for c, name in enumerate(what.compounds)}}


CHECK_NAMES = ("what_if_at_lap_t", "what_if_any_compound", "at_the_out_lap", "field_pace_at_t", "old_tyres_at_t")


def stop_errors(seq: Sequences, what: PitNow, at_out_lap: np.ndarray) -> dict:
    """The what-if against the stops drivers made (`stop_check` scores them; kept apart so that
    folds of races can be pooled first): every stop whose in-lap is lap t+1 and out-lap t+2
    (consecutive laps), onto a dry compound the what-if covers (with ANY: `pit_now(...,
    CHOICES)`), with a what-if made at lap t.

    - "laps": per forecaster (CHECK_NAMES) and horizon k (lap t+2+k), forecast minus the lap run,
      on the pairs where the new stint's lap is Scored (as every forecast is scored) and all
      forecast it: the what-if at lap t for the compound fitted; for ANY, a new set whichever
      (what knowing the compound adds); the forecast made at the out-lap itself (`at_out_lap`,
      (N, T, K) seconds: the run's own, which knows two laps more); the field's pace at lap t
      (the FreshStart's anchor); the stint's last Scored lap at lap t (the old tyres' pace: what
      ignoring the stop would say);
    - "compound" and "neutral": the compound fitted and whether the call was under a safety car
      or VSC, of each "laps" pair, per horizon;
    - "earlier": per j = 1 .. LATER, the same new-tyre laps forecast j laps before that call, as
      boxing j laps later (`PitNow.later`, the compound fitted) forecast them, minus the laps run
      (where lap t-j has a what-if and no stop since: what `now_vs_later` adds up);
    - "stop": the stop cost forecast at lap t minus the cost of the stop made: for a green call,
      in-lap plus out-lap minus the two stay-out laps forecast (both laps green); for a call under
      a safety car or VSC, in-lap plus out-lap minus what the cars nearest on the road at lap t
      ran on those two laps staying out (`pit.neighbours_laps`, in hindsight; both laps under
      one, no red flag); an out-lap without a LapTime is timed from the in-lap's end;
      "stop_neutral" says which.
    """
    from lapnet.race.baselines import field_pace_seconds
    from lapnet.race.pit import neighbours_laps

    x = seq.x
    K = seq.future.shape[2]
    inl, outl, green = x[..., _IX["in_lap"]] > 0, x[..., _IX["out_lap"]] > 0, x[..., _IX["green"]] > 0
    slow, red = sum(x[..., _IX[k]] for k in _NEUTRAL) > 0, x[..., _IX["red"]] > 0
    field = field_pace_seconds(seq)  # the FreshStart's anchor at lap t

    ends: dict = {}  # race -> lap number -> (session time, lap time, driver, in- or out-lap), as `RaceFeaturizer.lap_ends`
    for i, (race, drv) in enumerate(seq.keys):
        for t in range(int(seq.lengths[i])):
            if np.isfinite(seq.lap_number[i, t]) and np.isfinite(seq.time[i, t]):
                ends.setdefault(race, {}).setdefault(int(seq.lap_number[i, t]), []).append(
                    (seq.time[i, t], seq.lap_time[i, t], drv, bool(inl[i, t] or outl[i, t])))

    out: dict = {"stops": 0, "laps": {n: [[] for _ in range(K)] for n in CHECK_NAMES},
                 "compound": [[] for _ in range(K)], "neutral": [[] for _ in range(K)], "stop": [], "stop_neutral": [],
                 "earlier": [[[] for _ in range(K)] for _ in range(LATER)]}
    for i in range(len(seq.lengths)):
        for t in range(int(seq.lengths[i]) - STOP_LAPS):
            if not (inl[i, t + 1] and outl[i, t + 2] and what.possible[i, t]):
                continue
            n = seq.lap_number[i, t]
            if seq.lap_number[i, t + 1] != n + 1 or seq.lap_number[i, t + 2] != n + 2:
                continue
            name = COMPOUNDS[seq.compound[i, t + 2]]
            if name not in what.compounds or ANY not in what.compounds:
                continue
            c, a = what.compounds.index(name), what.compounds.index(ANY)
            out["stops"] += 1
            for k in range(K):
                f = (what.new[c, i, t, k], what.new[a, i, t, k], at_out_lap[i, t + 2, k], field[i, t], seq.base[i, t])
                if not (seq.target_mask[i, t + 2, k] and all(np.isfinite(f))):
                    continue
                for m, v in zip(CHECK_NAMES, f):
                    out["laps"][m][k].append(float(v - seq.future[i, t + 2, k]))
                out["compound"][k].append(name)
                out["neutral"][k].append(bool(what.neutral[i, t]))
            for j in range(1, LATER + 1):  # the same stop, as a stop j laps later seen from lap t-j
                u = t - j
                if u < 0 or not what.possible[i, u] or seq.lap_number[i, u] != n - j or inl[i, u + 1 : t + 1].any():
                    continue
                for k in range(K):
                    f = what.later[c, j - 1, i, u, k]
                    if seq.target_mask[i, t + 2, k] and np.isfinite(f):
                        out["earlier"][j - 1][k].append(float(f - seq.future[i, t + 2, k]))
            out_time = seq.lap_time[i, t + 2] if np.isfinite(seq.lap_time[i, t + 2]) else seq.time[i, t + 2] - seq.time[i, t + 1]
            run = seq.lap_time[i, t + 1] + out_time  # an out-lap without a LapTime timed from the in-lap's end
            if what.neutral[i, t]:  # the stop made under it (both laps, no red flag), as `PitContext` measures one
                under = all(slow[i, t + k] and not red[i, t + k] for k in (1, 2))
                cost = (run - neighbours_laps(ends[seq.keys[i][0]], int(n) + 1, seq.time[i, t], seq.keys[i][1])
                        if under else math.nan)
            else:
                cost = run - what.stay[i, t, 0] - what.stay[i, t, 1] if green[i, t + 1] and green[i, t + 2] else math.nan
            if np.isfinite(cost):
                out["stop"].append(float(what.stop_loss[i, t] - cost))
                out["stop_neutral"].append(bool(what.neutral[i, t]))
    return out


def pool_stop_errors(parts: list[dict]) -> dict:
    """`stop_errors` of several folds as one."""
    K = len(parts[0]["compound"])
    return {"stops": sum(p["stops"] for p in parts),
            "earlier": [[[e for p in parts for e in p["earlier"][j][k]] for k in range(K)] for j in range(LATER)],
            "laps": {m: [[e for p in parts for e in p["laps"][m][k]] for k in range(K)] for m in CHECK_NAMES},
            **{key: [[c for p in parts for c in p[key][k]] for k in range(K)] for key in ("compound", "neutral")},
            **{key: [e for p in parts for e in p[key]] for key in ("stop", "stop_neutral")}}


def stop_check(errors: dict, horizons=(1, 5, 10)) -> dict:
    """Score `stop_errors`: MAE, bias and n per forecaster and horizon; the what-if's by compound
    fitted and by the call's track status (green, or a safety car / VSC); the stop's cost by the
    same. Seconds."""
    def block(e) -> dict:
        e = np.asarray(e, float)
        return {"mae": float(np.abs(e).mean()) if len(e) else None, "bias": float(e.mean()) if len(e) else None,
                "n": int(len(e))}

    K = len(errors["compound"])
    hs = [h for h in horizons if h <= K]
    first = CHECK_NAMES[0]

    def split(key: str, value) -> dict:
        res = {}
        for h in hs:
            e = np.asarray(errors["laps"][first][h - 1])
            tag = np.asarray(errors[key][h - 1])
            res[f"h{h}"] = block(e[tag == value] if len(e) else e)
        return res

    stop, tag = np.asarray(errors["stop"], float), np.asarray(errors["stop_neutral"], bool)
    return {"stops": errors["stops"],
            "laps": {m: {f"h{h}": block(errors["laps"][m][h - 1]) for h in hs} for m in CHECK_NAMES},
            "what_if_by_compound": {name: split("compound", name) for name in DRY_COMPOUNDS},
            "what_if_by_call": {"green": split("neutral", False), "safety_car_or_vsc": split("neutral", True)},
            "called_earlier": {f"by_{j}": {f"h{h}": block(errors["earlier"][j - 1][h - 1]) for h in hs}
                               for j in range(1, LATER + 1)},
            "stop_cost": {"green": block(stop[~tag] if len(stop) else stop),
                          "safety_car_or_vsc": block(stop[tag] if len(stop) else stop)}}


def pit_now_rows(seq: Sequences, what: PitNow, i: int, t: int) -> tuple[list[dict], list[dict]]:
    """The what-if at lap t of sequence i as tables: per lap ahead to the flag (lap, the stay-out
    forecast, the new-tyre forecast per compound, "in-lap" / "out-lap" on the stop's two laps)
    and per compound (the summary's numbers, the new set's first lap and its 90% half-width)."""
    K = what.stay.shape[-1]
    n0 = int(seq.lap_number[i, t])
    s = what.summary()
    laps = []
    for j in range(1, min(K + STOP_LAPS, int(what.laps_left[i, t])) + 1):
        row: dict = {"LapNumber": n0 + j, "stay_out": float(what.stay[i, t, j - 1]) if j <= K else math.nan}
        for c, name in enumerate(what.compounds):
            row[name] = ("in-lap" if j == 1 else "out-lap") if j <= STOP_LAPS else float(what.new[c, i, t, j - STOP_LAPS - 1])
        laps.append(row)
    per = [{"compound": name, "meets_rule": name == ANY or bool(what.allowed[DRY_COMPOUNDS.index(name), i, t]),
            "first_lap": float(what.new[c, i, t, 0]), "first_lap_half90": float(what.new_half90[c, i, t, 0]),
            **{k: float(v[c, i, t]) for k, v in s.items() if not k.startswith("now_vs_later")},
            **{k: [float(v) for v in s[k][c, :, i, t]] for k in ("now_vs_later", "now_vs_later_to_flag")}}
           for c, name in enumerate(what.compounds)]
    return laps, per


def _ran(needs: list[str]) -> str:
    """The dry compound(s) run so far, given those the rule still needs: 'medium'."""
    return " and ".join(c.lower() for c in DRY_COMPOUNDS if c not in needs) or "no dry set"


def rule_needs(what: PitNow, at: tuple) -> list[str] | None:
    """The dry compounds a stop at index `at` must fit to meet the two-compound rule, or None
    when the rule does not bind there (met, or void after intermediate or wet tyres)."""
    if not what.rule_open[at]:
        return None
    return [c for k, c in enumerate(DRY_COMPOUNDS) if what.allowed[(k, *at)]]


def _why_not(x: np.ndarray, stay0: float, laps_left: float, no_field: str | None = None) -> str:
    """Why no what-if is made at a lap with features `x` (D,). `no_field`: why the table can give
    no field's pace at all (no session Time, or one car alone), said instead of "no car has run a
    Scored lap yet"."""
    if x[_IX["red"]] > 0:
        return "a red flag: tyres are changed in the pit lane, at no cost"
    if any(x[_IX[f"compound_{c.lower()}"]] > 0 for c in WET_COMPOUNDS):
        return "the car is on intermediate or wet tyres (the laps after a stop are learnt from dry stops)"
    if x[_IX["in_lap"]] > 0:
        return "this lap is an in-lap: the stop is already under way"
    if laps_left < STOP_LAPS + 1:
        return (f"{laps_left:.0f} lap{'' if laps_left == 1 else 's'} to the flag after it: no lap on new tyres to "
                "forecast (for a race still "
                "running, give its length with --race-laps)")
    if x[_IX["has_field_pace_any"]] == 0 and no_field is not None:
        return no_field
    if x[_IX["has_field_pace_any"]] == 0:
        return "no car has run a Scored lap yet (the laps after a stop are forecast from the field's racing pace)"
    if not math.isfinite(stay0):
        return "no forecast of the laps ahead at this lap (no lap of the race has been run at racing pace yet)"
    return "no lap of the race has shown its green pace yet"


def pit_now_race(run, sources, *, driver: str, lap: int | None = None, compounds: tuple[str, ...] = (ANY,),
                 race_length: int | str = "file", race: str | None = None) -> dict:
    """`lapnet race pit-now`: the what-if for one driver at one lap of one race.

    Args:
        run: a run directory (`lapnet race train`) with a FreshStart.
        sources: one race's laps (a file, a DataFrame: what `load_laps` reads).
        driver: one driver (a code in any case or a car number).
        lap: the lap at whose end the stop is called (the next lap is the in-lap); None: the
            driver's last lap in the table (the race now, for a race still running).
        compounds: the sets to stop onto (CHOICES: ANY, a new set whichever, is the validated one).
        race_length: as `eval_race` takes it (give it for a race still running).
        race: the race to ask about in a table of several (its Race column, any case; in a table
            of one race, its label must match).

    A sprint-length race (`inputs.sprint_races`) has no two-compound rule: none is applied,
    and a note says the pit call was learnt on Grands Prix.

    Returns:
        {"race", "driver", "lap", "compound", "tyre_life", "laps_to_flag", "under_safety_car"
        (the call is priced as a stop under a safety car or VSC), "stop_cost_s" (the race's stop
        loss so far, green or under a safety car: `PitContext`), "stop_cost_stops" (the stops it
        is measured on: 0, the prior alone), "in_out_s", "to_flag_by" ("tyre_wear": the run's, or
        "mean_gap": `PitNow.summary`), "rule_needs" (the dry compounds a stop must
        fit while the two-compound rule binds, else None: `rule_sets`), "rejoin" (`rejoin`), "laps":
        [{LapNumber, stay_out, one column per set}], "compounds": [{compound (ANY: a new set, of
        the compounds the rule allows), meets_rule, first_lap (lap N+3's time),
        first_lap_half90, stop_cost, gain_per_lap, delta, payback_laps, now_vs_later,
        now_vs_later_to_flag}], "race_laps", "sprint" (bool), "cleaning", "notes"}: seconds.

    Raises:
        LapnetError: not one race (without `race`) or not one driver, a `race` the table does not
            hold, a lap the driver did not run, a run without a FreshStart, or a lap where no
            what-if can be made (saying why).
    """
    from lapnet.race.clean import CleanReport
    from lapnet.race.io import parse_drivers
    from lapnet.race.inputs import load_laps, race_sequences, sprint_note, sprint_races, subset_sequences
    from lapnet.race.runs import load_run, run_net, to_seconds

    r = load_run(run)
    require_fresh_start(r.model)  # before the laps are read
    laps, report = load_laps(sources)
    names = sorted(laps["Race"].astype(str).unique())
    if race is not None:
        from lapnet.race.io import race_match

        pick = race_match(race, names)
        if pick is None:
            raise LapnetError(f"--race {race}: no such race in the table (races: {', '.join(names)})")
        laps = laps[laps["Race"] == pick].reset_index(drop=True)
        report = CleanReport([rr for rr in report.races if rr.race == pick])
        if not laps["Scored"].any():
            raise LapnetError(f"--race {race}: no usable green laps in race '{pick}': every lap is missing a time, "
                              "inaccurate, neutralised, wet, or an in/out-lap")
    elif len(names) > 1:
        raise LapnetError(f"the table holds {len(names)} races ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): "
                          f"pick one with --race (e.g. --race {names[0]})")
    drivers = parse_drivers(driver, laps, no_timed_lap=[d for rr in report.races for d in rr.drivers_dropped])
    if len(drivers) != 1:
        raise LapnetError(f"--driver {driver!r}: give one driver, not {len(drivers)}")
    seq, used = race_sequences(laps, race_length)
    i = next(k for k, key in enumerate(seq.keys) if key[1] == drivers[0])
    sub = subset_sequences(seq, np.array([i]))
    L = int(sub.lengths[0])
    numbers = sub.lap_number[0, :L]
    run_laps = numbers[np.isfinite(numbers)].astype(int)
    if lap is None:
        t = L - 1
    else:
        hit = np.flatnonzero(numbers == lap)
        if not len(hit):
            raise LapnetError(f"--lap {lap}: {drivers[0]} has no lap {lap} in the table (laps {_ranges(run_laps)})")
        t = int(hit[0])
    stay = to_seconds(sub, run_net(r.model, sub)["mean"])
    sprint = sprint_races(seq, used)
    what = pit_now(r.model, sub, stay, compounds, tyre_wear(r.config), rule=not sprint)
    n = int(numbers[t])
    if not what.possible[0, t]:
        hint = "" if lap is not None else " (the driver's last lap in the table; another with --lap N)"
        needs = rule_needs(what, (0, t))
        late = float(what.laps_left[0, t]) < STOP_LAPS + 1 and not sub.x[0, t, _IX["in_lap"]] and not sub.x[0, t, _IX["red"]]
        needs = needs if late else None  # an in-lap may be that stop; a red flag's tyre change in the pit lane meets it
        rule = (f"; the two-compound rule still binds: he has run {_ran(needs)} only and must box for "
                f"{' or '.join(c.lower() for c in needs)} before the flag" if needs is not None else "")
        no_field = None
        if not np.isfinite(laps["Time"].to_numpy(float)).any():
            no_field = ("the table has no session Time, so the field's pace cannot be placed in time: the laps after a "
                        "stop are forecast from it (and the gaps on the road cannot be measured)")
        elif laps["Driver"].nunique() == 1:
            no_field = ("the table holds one car alone: the laps after a stop are forecast from the other cars' racing "
                        "pace")
        raise LapnetError(f"no pit-now forecast for {drivers[0]} at lap {n}{hint}: "
                          f"{_why_not(sub.x[0, t], stay[0, t, 0], float(what.laps_left[0, t]), no_field)}{rule}")
    rows, per = pit_now_rows(sub, what, 0, t)
    race = str(seq.keys[i][0])
    notes = [sprint_note(race, *sprint[race])] if race in sprint else []
    last_race_lap = int(np.nanmax(seq.lap_number))
    if lap is None and n < last_race_lap:
        notes.append(f"{drivers[0]}'s last lap in the table is lap {n}, the field's is lap {last_race_lap}: "
                     "retired? (--lap N asks about another lap)")
    if what.neutral[0, t]:
        notes.append("called under a safety car or VSC: the stop is priced as the race's stops under one (against what "
                     "the cars nearest on the road ran staying out); the lap times are at racing pace, as after the restart")
    needs = rule_needs(what, (0, t))
    if needs is not None:
        notes.append(f"the two-compound rule: {drivers[0]} has run {_ran(needs)} only, so 'new set' means "
                     f"{' or '.join(c.lower() for c in needs)}; a stop onto {_ran(needs)} would leave the rule to another "
                     "stop, not priced here; staying out to the flag breaks it (the stay-out laps are no plan to the flag)")
    life = float(sub.x[0, t, _IX["tyre_life"]] * LAPS_SCALE)
    if life <= FRESH_TYRES:
        notes.append(f"his tyres are {life:.0f} lap{'' if round(life) == 1 else 's'} old: the stay-out laps come from the "
                     "nets, which know his pace on them, the new set's from the FreshStart, which reads the field's pace "
                     "and his against it before; on tyres this young the two can disagree by a second a lap or more, "
                     "either way (a new set is no slower than these): no real stop this early checks them")
    back = rejoin(seq, i, t, float(what.stop_loss[0, t]))
    return {"race": race, "driver": drivers[0], "lap": n, "compound": COMPOUNDS[sub.compound[0, t]],
            "tyre_life": float(sub.x[0, t, _IX["tyre_life"]] * LAPS_SCALE), "laps_to_flag": int(what.laps_left[0, t]),
            "under_safety_car": bool(what.neutral[0, t]),
            "stop_cost_s": float(what.stop_loss[0, t]), "stop_cost_stops": int(what.stop_stops[0, t]),
            "in_out_s": float(what.in_out[0, t]), "rule_needs": needs,
            "to_flag_by": "tyre_wear" if what.wear is not None else "mean_gap",
            "rejoin": back, "laps": rows, "compounds": per, "race_laps": used, "sprint": race in sprint,
            "cleaning": report.summary(), "notes": notes}


def rejoin(seq: Sequences, i: int, t: int, cost: float) -> dict | None:
    """Where a stop called at lap t of sequence i puts the driver on the road, as the gaps stood
    after the lap before (lap t-1: the cars behind him had ended it by the end of lap t; lap t
    itself they had not): the cars behind him then by less than the stop's cost, which the stop
    puts ahead of him, and the first car behind by more, with the margin left. Only cars on the
    same lap whose lap t-1 ended before his lap t did count (nothing later is read). None when
    lap t-1, or its Time or lap t's, is missing. `rejoin_live` gives the same from a live
    featuriser's state.

    Returns:
        {"gaps_after_lap": lap t-1's number, "passed_by": [{"driver", "gap_s", "stops"}] (nearest
        first; "stops": the stops each had made by then, counted as in-laps, none that or whose
        out-lap ran under a red flag (a tyre change in a stoppage): a car with fewer than the driver
        will have after this one is still to stop),
        "ahead_of": {"driver", "gap_s", "margin_s", "stops"} or None (no car close enough behind),
        "neutralised": lap t-1 or lap t ran under a safety car, VSC or red flag (the gaps are
        then those of a field that bunches up or has just restarted: the order holds, the gaps
        do not)}.
    """
    if t < 1 or seq.lap_number[i, t - 1] != seq.lap_number[i, t] - 1:
        return None
    race, me = seq.keys[i]
    n = seq.lap_number[i, t - 1]
    others = []
    for j, (r, drv) in enumerate(seq.keys):
        if r != race or j == i:
            continue
        at = np.flatnonzero(seq.lap_number[j, : int(seq.lengths[j])] == n)
        if len(at):
            others.append((float(seq.time[j, at[0]]), str(drv), int(seq.stops[j, at[0]])))  # as `lap_ends` has them
    return _rejoin(int(n), float(seq.time[i, t - 1]), float(seq.time[i, t]), others, cost, _neutral_lately(seq.x[i, t]))


def _neutral_lately(x: np.ndarray) -> bool:
    """Lap t or lap t-1 ran under a safety car, VSC or red flag (the lap vector's since_neutral)."""
    return round(float(x[_IX["since_neutral"]]) * FEW_LAPS_SCALE) <= 1


def rejoin_live(lap_ends: dict, driver: str, n: int, now: float, cost: float, x: np.ndarray) -> dict | None:
    """`rejoin` for a driver whose lap n has just ended at session time `now`, with lap vector `x`,
    from a live featuriser's `lap_ends` (lap number -> (session time, lap time, driver, in- or
    out-lap, stops by then) of the cars that have ended it so far)."""
    prev = lap_ends.get(int(n) - 1, [])
    mine = [e[0] for e in prev if e[2] == driver]
    if not mine:
        return None
    return _rejoin(int(n) - 1, mine[0], now, [(e[0], str(e[2]), int(e[4])) for e in prev if e[2] != driver], cost,
                   _neutral_lately(x))


def _rejoin(n: int, t0: float, now: float, others: list[tuple[float, str, int]], cost: float,
            neutral: bool) -> dict | None:
    """`rejoin`'s answer: the driver ended lap n at t0 and lap n+1 at `now`; `others` the other
    cars' (session time they ended lap n, driver, stops by then)."""
    if not (math.isfinite(t0) and math.isfinite(now) and math.isfinite(cost)):
        return None
    behind = sorted((tm - t0, d, k) for tm, d, k in others if math.isfinite(tm) and t0 < tm <= now)
    passed = [{"driver": d, "gap_s": round(g, 3), "stops": k} for g, d, k in behind if g < cost]
    rest = [(g, d, k) for g, d, k in behind if g >= cost]
    ahead = ({"driver": rest[0][1], "gap_s": round(rest[0][0], 3), "margin_s": round(rest[0][0] - cost, 3),
              "stops": rest[0][2]} if rest else None)
    return {"gaps_after_lap": n, "passed_by": passed, "ahead_of": ahead, "neutralised": bool(neutral)}


def _ranges(laps: np.ndarray) -> str:
    """[1, 2, 3, 7, 8] -> '1-3, 7-8'."""
    out, start = [], None
    for k, v in enumerate(laps):
        if start is None:
            start = v
        if k == len(laps) - 1 or laps[k + 1] != v + 1:
            out.append(f"{start}-{v}" if v != start else f"{v}")
            start = None
    return ", ".join(out)
