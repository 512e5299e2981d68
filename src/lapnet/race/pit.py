"""Extra causal pit-call features: what a pit wall weighs beyond tyre age.

`PitContext.step(fz, lap)` is called right after `RaceFeaturizer.step(lap)` on the same
featuriser `fz` and reads its state (the race's reference lap, the laps that ended earlier,
the drivers' stints), so it sees exactly what the base features see: the driver's own laps so
far and the other cars' laps that ended earlier in session time. Nothing from the future.

Features (PIT_EXTRA, in this order):
    pit_loss        the race's pit loss so far / ref: median over green stops seen of in-lap +
                    out-lap - 2 ref (shrunk to a prior of 0.25 ref before there are many)
    places_lost     cars that crossed the line within one pit loss behind us on the previous
                    lap: the places a stop now would cost, / 5 (capped at 2)
    gap_behind      gap to the car behind on the previous lap, in pit losses (capped at 2)
    free_stop       gap_behind >= 1: the driver can stop without losing a place
    pace_loss       the stint's last 3 Scored laps (median) minus its best 3-lap median,
                    % of ref (a tyre that has dropped off), 0 before 4 Scored laps
    tyre_over_typ   tyre life / the compound's typical stint in this race (the stints the field
                    ended on this compound so far, shrunk to a per-compound prior share of the race)
    short_of_finish (tyre life + laps left - typical stint) / 30: laps the tyre would have to
                    do beyond its typical life to reach the flag (> 0: another stop is due)
    stop_needed     the two-compound rule still forces a stop, or short_of_finish > 0
    left_0..left_6  laps left one-hot (0, 1, ..., 5, 6 or more): nobody stops at the flag
    stint_1..stint_6 laps in the stint one-hot (1, ..., 5, 6 or more): nobody stops right after a stop
    sc_new          a safety car / VSC shows on this lap and did not on the driver's previous lap
    sc_new_need     sc_new x stop_needed (the cheap stop everyone takes)
    neutral_need    any SC / VSC now x stop_needed

Chosen by the inner folds of benchmarks/pit_explore.py (mean inner AUC of the PitModel, 0.7962 with
all of them): without the road group (pit_loss .. free_stop) 0.7951, without pace_loss 0.7954,
without the one-hots 0.7947, without the SC group 0.7919, without the typical-stint group 0.7961
(kept: the single strongest new feature on its own, AUC 0.71); "rivals_fresher" (the share of the
3 cars ahead and behind that stopped more often) was dropped: 0.7969 without it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from lapnet.errors import LapnetError
from lapnet.race.schema import DRY_COMPOUNDS, NEUTRALISED_CODES, RED_CODE, SLOW_RUNNING_CODES
from lapnet.race.features import LAPS_SCALE, PIT_EXTRA, RaceFeaturizer, flag, num, race_laps, session_order
from lapnet.race.features import PIT_LEFT as LEFT
from lapnet.race.features import PIT_STINT as STINT
from lapnet.race.models import TYRE_LAPS, one_hot_buckets

PIT_LOSS_PRIOR = 0.25  # share of the reference lap a stop costs (about 22 s at a 90 s lap) until stops are seen
TYPICAL_PRIOR = {"SOFT": 0.30, "MEDIUM": 0.45, "HARD": 0.60}  # share of the race a stint lasts on each compound
PRIOR_WEIGHT = 3.0  # the priors count as this many observed stops / stints
# what a stop costs against two racing laps (green: `stop_loss`), and under a safety car or VSC against what the cars
# nearest on the road ran staying out (`stop_loss_neutral`), in shares of the reference lap, until the race's own stops
# are seen: the medians over the 15 real races of 2023 (`python benchmarks/stop_loss.py`: 0.242 of it, 21.0 s, over 339
# green stops, IQR 19.4-24.1 s; 0.192, 15.6 s, over 71 stops under a safety car or VSC, IQR 11.7-25.0 s)
STOP_LOSS_PRIOR = 0.25  # the pit call's PIT_LOSS_PRIOR, within 0.01 of the measured median
NEUTRAL_LOSS_PRIOR = 0.19
# a stop that took more than this share of the reference lap beyond the laps it replaced was no tyre stop but a
# repair or a long penalty (on the 15 races: 1 of 339 green stops, 0.81 of the lap at Montreal, and 1 of 71 under a
# safety car, 1.14 at Singapore, SAR's stop after his crash): it is left out of the what-if's stop costs, which are
# medians that one such stop would otherwise make when it is the race's first (the pit call's pit_loss keeps it)
REPAIR_LOSS = 0.6
NEIGHBOURS = 2  # a stop under a safety car is measured against the cars nearest on the road before it that stayed out
PENDING_LAPS = 3  # ... once they have ended its out-lap's lap, which it waits for this many laps at most


@dataclass
class _Own:
    in_time: float = math.nan  # the last in-lap's lap time (until its out-lap is seen)
    in_green: bool = False
    neutral: bool = False  # the previous lap showed SC / VSC
    in_pace: float = math.nan  # the stint's racing pace before that in-lap: the median of its last 3 Scored laps
    in_lap: tuple[float, float, str] = (math.nan, math.nan, "")  # (lap number, lap time, TrackStatus) of the last in-lap
    in_end: float = math.nan  # session time at which the last in-lap ended (an out-lap without a LapTime is timed from it)
    end: dict = field(default_factory=dict)  # lap number -> session time it ended


def _shrunk(losses: list[float], prior: float = PIT_LOSS_PRIOR) -> float:
    """The median of the stops' losses (shares of ref), shrunk to `prior` as if it had been seen
    PRIOR_WEIGHT times, and kept within 0.1 to 0.6."""
    k = len(losses)
    loss = (prior * PRIOR_WEIGHT + (statistics.median(losses) * k if k else 0.0)) / (PRIOR_WEIGHT + k)
    return min(max(loss, 0.1), 0.6)


def neighbours_laps(ends: Mapping[int, list], n: int, t_before: float, drv: str, k: int = NEIGHBOURS) -> float:
    """What staying out gave the cars nearest on the road to `drv` before his stop: the median,
    over the `k` other cars whose lap n-1 ended nearest in session time to his (`t_before`) and
    that ran laps n and n+1 without stopping (both timed and ended), of those two laps' sum; NaN
    with fewer than `k`. `ends`: lap number -> (session time, lap time, driver, in- or out-lap,
    ...) of the cars that have ended it (`RaceFeaturizer.lap_ends`, whose entries also carry the
    stops made by then: so far, in live use); the first four fields are read."""
    if not math.isfinite(t_before):
        return math.nan
    ran = [{e[2]: e[1] for e in ends.get(m, []) if not e[3] and math.isfinite(e[1])} for m in (n, n + 1)]
    near = sorted((abs(e[0] - t_before), e[2]) for e in ends.get(n - 1, [])
                  if e[2] != drv and e[2] in ran[0] and e[2] in ran[1])
    sums = [ran[0][d] + ran[1][d] for _, d in near[:k]]
    return statistics.median(sums) if len(sums) >= k else math.nan


class PitContext:
    """The extra pit features of one race, one lap at a time (after `RaceFeaturizer.step`)."""

    def __init__(self):
        self.own: dict[str, _Own] = {}
        self.losses: list[float] = []  # green stops' pit losses, in shares of ref
        # the same stops against the stopping driver's own racing pace before the stop (in shares of ref):
        # what a stop costs against two racing laps, for the pit-now what-if (`stop_loss`, no feature)
        self.pace_losses: list[float] = []
        self.stop_loss = math.nan  # seconds, after each step: the race's stop cost so far (`_shrunk` of pace_losses)
        # stops whose in- and out-lap ran under a safety car or VSC, against what the cars nearest on the road
        # before the stop ran on those two laps staying out (`neighbours_laps`): the cheap stop
        self.neutral_losses: list[float] = []
        self.stop_loss_neutral = math.nan  # seconds, after each step (`_shrunk` of neutral_losses to NEUTRAL_LOSS_PRIOR)
        self.pending: list[tuple[str, int, float, float, float]] = []  # (driver, in-lap, lap before's end, in + out, ref)

    @property
    def stop_stops(self) -> tuple[int, int]:
        """The stops `stop_loss` and `stop_loss_neutral` are measured on so far (0: the prior alone)."""
        return len(self.pace_losses), len(self.neutral_losses)

    def _measure_pending(self, fz: RaceFeaturizer) -> None:
        """Measure the stops under a safety car whose neighbours have now ended both laps; forget
        those still unmeasured once the field is PENDING_LAPS laps past their out-lap."""
        keep = []
        for drv, n_in, t_before, both, ref in self.pending:
            stayed = neighbours_laps(fz.lap_ends, n_in, t_before, drv)
            if math.isfinite(stayed):
                if (both - stayed) / ref <= REPAIR_LOSS:  # a repair is no stop to price a tyre stop by
                    self.neutral_losses.append((both - stayed) / ref)
            elif fz.max_lap <= n_in + 1 + PENDING_LAPS:
                keep.append((drv, n_in, t_before, both, ref))
        self.pending = keep

    def step(self, fz: RaceFeaturizer, lap: Mapping[str, Any]) -> np.ndarray:
        """Features (len(PIT_EXTRA),) of `lap`, which `fz.step` has just ingested."""
        drv = str(lap["Driver"])
        me, st = self.own.setdefault(drv, _Own()), fz.drivers[drv]
        ref = fz.ref if math.isfinite(fz.ref) and fz.ref > 0 else 90.0
        n = num(lap["LapNumber"])
        t_end = num(lap.get("Time"))
        lap_time = num(lap.get("LapTime"))
        status = str(lap.get("TrackStatus") or "")
        neutral = bool(NEUTRALISED_CODES.intersection(status))  # no green-flag pit loss to measure
        in_lap, out_lap = flag(lap.get("InLap")), flag(lap.get("OutLap"))

        # the race's pit loss: measured on green stops once their out-lap has ended
        if out_lap and math.isfinite(me.in_time) and me.in_green and not neutral and math.isfinite(lap_time):
            self.losses.append((me.in_time + lap_time - 2 * ref) / ref)
        # an out-lap without a LapTime (FastF1 has none for some under a safety car) is timed from the in-lap's end
        out_time = lap_time if math.isfinite(lap_time) else t_end - me.in_end if out_lap else math.nan
        if out_lap and math.isfinite(me.in_time) and me.in_green and not neutral and math.isfinite(out_time):
            if math.isfinite(me.in_pace) and (me.in_time + out_time - 2 * me.in_pace) / ref <= REPAIR_LOSS:
                self.pace_losses.append((me.in_time + out_time - 2 * me.in_pace) / ref)
        n_in, t_in, status_in = me.in_lap
        both = status_in + status  # a safety car or VSC on both laps, a red flag on neither
        if (out_lap and math.isfinite(t_in) and math.isfinite(out_time) and n_in == n - 1 and RED_CODE not in both
                and SLOW_RUNNING_CODES.intersection(status_in) and SLOW_RUNNING_CODES.intersection(status)):
            # measured once the cars nearest on the road have ended the out-lap's lap too (often after this one)
            self.pending.append((drv, int(n_in), me.end.get(int(n_in) - 1, math.nan), t_in + out_time, ref))
        self._measure_pending(fz)
        me.in_lap = (n, lap_time, status) if in_lap else (math.nan, math.nan, "")
        me.in_end = t_end if in_lap else math.nan
        me.in_time = lap_time if in_lap else math.nan
        me.in_green = in_lap and not neutral
        if in_lap:  # the stint's Scored laps (`RaceFeaturizer` has not reset them yet: that happens on the out-lap)
            last = [b for _, b in st.scored[-3:]]
            me.in_pace = statistics.median(last) if last else math.nan
        loss = _shrunk(self.losses)
        loss_s = loss * ref
        self.stop_loss = _shrunk(self.pace_losses, STOP_LOSS_PRIOR) * ref
        self.stop_loss_neutral = _shrunk(self.neutral_losses, NEUTRAL_LOSS_PRIOR) * ref

        # who is behind on the road: the previous lap (the cars behind have ended it by now)
        places, gap_b = 0, 2.0
        prev_end = me.end.get(int(n) - 1) if math.isfinite(n) else None
        if prev_end is not None:
            later = sorted(e[0] - prev_end for e in fz.lap_ends.get(int(n) - 1, []) if e[0] > prev_end and e[2] != drv)
            places = sum(g <= loss_s for g in later)
            if later:
                gap_b = min(later[0] / loss_s, 2.0)
        if math.isfinite(n) and math.isfinite(t_end):
            me.end[int(n)] = t_end

        # the stint's pace against its best
        pace_loss = 0.0
        laps = [b for _, b in st.scored]
        if len(laps) >= 4:
            meds = [statistics.median(laps[i : i + 3]) for i in range(len(laps) - 2)]
            pace_loss = min(max((meds[-1] - min(meds)) / ref * 100, -1.0), 5.0)

        # the compound's typical stint in this race, and what the tyre must still do
        compound = str(lap.get("Compound") or "UNKNOWN").upper()
        prior = TYPICAL_PRIOR.get(compound, 0.45) * fz.total_laps
        ended = fz.stint_ends.get(compound, [])
        typ = (prior * PRIOR_WEIGHT + sum(ended)) / (PRIOR_WEIGHT + len(ended))
        tyre = num(lap.get("TyreLife"))
        tyre = tyre if math.isfinite(tyre) else float(st.stint_laps)
        lap_n = n if math.isfinite(n) else 0.0
        left = max(fz.total_laps - lap_n, 0.0)
        short = tyre + left - typ
        must = compound in DRY_COMPOUNDS and len(st.compounds) < 2
        need = float(must or short > 0)

        slow = bool(SLOW_RUNNING_CODES.intersection(status))  # SC / VSC: the cheap stop (a red flag is none)
        sc_new = float(slow and not me.neutral)
        me.neutral = slow

        left_hot = [0.0] * LEFT
        left_hot[min(int(left), LEFT - 1)] = 1.0
        stint_hot = [0.0] * STINT
        stint_hot[min(max(st.stint_laps, 1), STINT) - 1] = 1.0
        return np.asarray([
            loss, min(places, 10) / 5, gap_b, float(gap_b >= 1.0), pace_loss,
            min(tyre / max(typ, 1.0), 2.0), min(max(short, -30.0), 60.0) / LAPS_SCALE, need,
            *left_hot, *stint_hot,
            sc_new, sc_new * need, float(me.neutral) * need,
        ], dtype=np.float32)


def pit_extra_features(laps: pd.DataFrame, total_laps: int | None = None) -> np.ndarray:
    """PIT_EXTRA for every row of cleaned laps (one or more races) -> (len(laps), E), row-aligned
    (positionally: row i of the result is laps.iloc[i]). `total_laps`: the scheduled length
    (default: each race's last lap number)."""
    laps = laps.reset_index(drop=True)
    out = np.zeros((len(laps), len(PIT_EXTRA)), np.float32)
    race_col = laps["Race"] if "Race" in laps.columns else pd.Series("race", index=laps.index)
    for _, g in laps.groupby(race_col, sort=False):
        fz = RaceFeaturizer(total_laps or race_laps(g))  # its step runs a PitContext: the last E columns
        records = g.to_dict("index")
        for i in session_order(g):
            out[i] = fz.step(records[i]).x[-len(PIT_EXTRA):]
    return out


# ---------------------------------------------------------------------------------------
# the pit model: a logistic regression on the pit-relevant features, a fixed basis (pit_basis) and PIT_EXTRA

PIT_LEAN: tuple[str, ...] = (  # the base features a pit wall looks at (the lap-time detail only adds noise here)
    "compound_soft", "compound_medium", "compound_hard", "compound_intermediate", "compound_wet", "compound_unknown",
    "tyre_life", "fresh_tyre", "stint", "laps_in_stint", "lap_frac", "laps_left", "position", "gap_ahead", "leader",
    "green", "yellow", "safety_car", "vsc", "red", "in_lap", "out_lap", "pits_done", "two_compounds", "field_pitting",
    "field_more_stops", "tyre_vs_field", "has_field_stints", "since_neutral", "tyre_race_frac", "must_stop_late",
    "neutral_tyre", "field_pitted_1", "ahead_pitted", "behind_pitted", "teammate_pitted", "base", "stint_slope",
    "gap_change", "position_change",
)
PIT_L2 = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4)  # L2 strengths tried (mean BCE + l2 |w|^2 on standardised inputs)


TENTHS = [0.1 * i for i in range(1, 11)]  # 0-0.1, ..., 0.9-1, > 1
# the bucket edges in float32, the lap vectors' dtype: a float64 fit buckets a lap as float32 inference does
_TENTHS = torch.tensor(TENTHS)
_TYRE_LAPS = torch.tensor(TYRE_LAPS)
N_BASIS = 3 * (len(TENTHS) + 1) + 2 * (len(TENTHS) + 1) + len(TYRE_LAPS) + 1  # pit_basis's width (71)


def pit_basis(x: torch.Tensor, ix: Mapping[str, int]) -> torch.Tensor:
    """The pit model's fixed basis expansion (a generalised additive model's one-hot terms).

    Tyre life as a share of the race per dry compound, the race fraction (alone and for drivers
    the two-compound rule still forces to stop) and tyre life in 3-lap buckets.

    Args:
        x: (..., D) lap features.
        ix: feature name -> column of x (needs tyre_race_frac, lap_frac, two_compounds,
            compound_soft/medium/hard, tyre_life).

    Returns:
        (..., N_BASIS): 3 x 11 compound x tyre-share buckets, 11 race-fraction buckets, the same
        11 times "a stop is still due", 16 tyre-life buckets.
    """
    f = lambda name: x[..., ix[name]]  # noqa: E731
    tenths = _TENTHS.to(device=x.device, dtype=x.dtype)
    must = 1.0 - f("two_compounds")
    fb, lb = one_hot_buckets(f("tyre_race_frac"), tenths), one_hot_buckets(f("lap_frac"), tenths)  # (..., 11) each
    dry = x[..., [ix["compound_soft"], ix["compound_medium"], ix["compound_hard"]]]  # (..., 3)
    per_compound = (dry[..., :, None] * fb[..., None, :]).flatten(-2)  # (..., 33)
    tyre = one_hot_buckets(f("tyre_life") * LAPS_SCALE, _TYRE_LAPS.to(device=x.device, dtype=x.dtype))  # (..., 16)
    return torch.cat([per_compound, lb, lb * must[..., None], tyre], -1)  # (..., N_BASIS)


class PitModel(nn.Module):
    """Logit that the driver pits within the next 3 laps, from the lap's features and PIT_EXTRA.

    A logistic regression (a generalised additive model) on the PIT_LEAN base features, the
    fixed basis of `pit_basis` (tyre life / race length per dry compound, race-fraction buckets,
    tyre life in 3-lap buckets) and the PIT_EXTRA features, standardised on the training laps.
    Per-lap, so live mode needs no state for it; the features already carry the history a pit
    call needs (tyre life, stops made, who pitted lately, neutralisation). Measured on the 15
    real races (benchmarks/race_real.py), it ranks pit laps better than the recurrent net's pit
    head, which shares its trunk with the lap-time forecast.

    Args:
        features: the names of the base lap vectors' columns (`lapnet.race.features.FEATURES`).
    """

    def __init__(self, features: tuple[str, ...] | list[str]):
        super().__init__()
        names = list(features)
        self.ix = {n: i for i, n in enumerate(names)}
        self.register_buffer("keep", torch.tensor([names.index(c) for c in PIT_LEAN]), persistent=False)
        width = len(PIT_LEAN) + N_BASIS + len(PIT_EXTRA)
        self.register_buffer("extra_ix", torch.tensor([names.index(c) if c in names else -1 for c in PIT_EXTRA]), persistent=False)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.linear = nn.Linear(width, 1)
        nn.init.zeros_(self.linear.weight)

    def inputs(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) base features, (..., E) PIT_EXTRA -> (..., W) unstandardised inputs.

        With `extra` None, PIT_EXTRA are read from x by name: `FEATURES` ends with them, so
        the lap vectors of lapnet's own featuriser carry them."""
        if extra is None:
            if bool((self.extra_ix < 0).any()):
                raise LapnetError("PitModel: the lap vectors lack the PIT_EXTRA features; pass them as `extra`")
            extra = x[..., self.extra_ix]  # (..., E)
        return torch.cat([x[..., self.keep], pit_basis(x, self.ix), extra], -1)  # (..., W)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D), (..., E) or None -> (...,) logits."""
        return self.linear((self.inputs(x, extra) - self.mean) / self.std).squeeze(-1)


def fit_logistic(linear: nn.Linear, z: torch.Tensor, y: torch.Tensor, l2: float) -> None:
    """Fit a logistic regression in place: minimise mean BCE + l2 |w|^2 exactly (convex: L-BFGS
    to convergence), from zero weights and the base rate's logit as the bias.

    Args:
        linear: an nn.Linear(W, 1) (its dtype: z's); z: (n, W) inputs, standardised by the
            caller (the penalty is then alike for every input); y: (n,) 0/1 labels; l2: the L2 strength.
    """
    with torch.no_grad():
        linear.weight.zero_()
        p = float(y.mean().clamp(1e-3, 1 - 1e-3))
        linear.bias.fill_(math.log(p / (1 - p)))
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=300, tolerance_grad=1e-7, line_search_fn="strong_wolfe")
    bce = nn.functional.binary_cross_entropy_with_logits

    def closure():
        opt.zero_grad()
        loss = bce(linear(z).squeeze(-1), y) + l2 * (linear.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)


def fit_pit_model(x: np.ndarray, extra: np.ndarray, y: np.ndarray, race: np.ndarray, features=None, *,
                  l2_grid=PIT_L2, inner: int = 4) -> tuple[PitModel, dict]:
    """Fit a PitModel on per-lap rows; the L2 strength is chosen by leave-races-out CV inside them.

    Args:
        x: (n, D) base lap features; extra: (n, E) PIT_EXTRA; y: (n,) pits within 3 laps (0/1);
            race: (n,) race name of each lap (the inner folds hold out whole races: sorted race
            i goes to inner fold i % inner).
        features: the names of x's columns (default `FEATURES`).

    Returns:
        The model refitted on all rows with the chosen L2, and {"l2", "inner_auc_by_l2"}.
    """
    from lapnet.race.features import FEATURES
    from lapnet.race.metrics import roc_auc

    features = list(features or FEATURES)
    if np.ndim(x) != 2 or np.shape(x)[1] != len(features):
        raise LapnetError(f"fit_pit_model: x has {np.shape(x)[-1]} columns but {len(features)} feature names were given "
                          "(pass `features`: the names of x's columns)")
    if np.shape(extra) != (len(x), len(PIT_EXTRA)):
        raise LapnetError(f"fit_pit_model: extra must be (n, {len(PIT_EXTRA)}) PIT_EXTRA rows, got {np.shape(extra)}")
    x64 = torch.from_numpy(np.asarray(x, np.float64))
    e64 = torch.from_numpy(np.asarray(extra, np.float64))
    yt = torch.from_numpy(np.asarray(y, np.float64))
    races = sorted(set(race.tolist()))
    groups = [np.isin(race, [r for i, r in enumerate(races) if i % inner == g]) for g in range(min(inner, len(races)))]
    model = PitModel(features).double()
    raw = model.inputs(x64, e64).detach()  # (n, W)

    def fit_on(mask: np.ndarray, l2: float) -> None:
        m = torch.from_numpy(mask)
        model.mean.copy_(raw[m].mean(0))
        model.std.copy_(raw[m].std(0).clamp_min(1e-3))
        fit_logistic(model.linear, (raw[m] - model.mean) / model.std, yt[m], l2)

    scores = {}
    if len(groups) >= 2:
        for l2 in l2_grid:
            pred = np.zeros(len(y))
            for g in groups:
                fit_on(~g, l2)
                with torch.no_grad():
                    pred[g] = model.linear((raw[torch.from_numpy(g)] - model.mean) / model.std).squeeze(-1).numpy()
            scores[f"{l2:g}"] = roc_auc(np.asarray(y), pred)
        best = max(l2_grid, key=lambda v: scores[f"{v:g}"])
    else:
        best = l2_grid[len(l2_grid) // 2]  # one race: nothing to hold out, a middle strength
    fit_on(np.ones(len(y), bool), best)
    model.eval()
    return model.float(), {"model": "logistic regression on PIT_LEAN + pit_basis + PIT_EXTRA (lapnet.race.pit.PitModel)",
                           "l2": best, "inner_auc_by_l2": scores, "chosen_by": f"pooled AUC over {len(groups)} leave-races-out inner folds"}
