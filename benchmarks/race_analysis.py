"""The race guide's out-of-fold analyses, recomputed from a saved predictions file.

    python benchmarks/race_real.py --jobs 2 --skip-train-all --save-predictions /tmp/pred.npz   # 5 folds, with the taggers
    python benchmarks/race_analysis.py /tmp/pred.npz                  # every analysis below
    python benchmarks/race_analysis.py /tmp/pred.npz --only c d       # some of them

docs/guide/race.md quotes these numbers "measured on the 5-fold out-of-fold outputs
(`race_real.py --save-predictions`)" or on the real laps; each block printed here names the
guide's section it reproduces. The laps are read from $LAPNET_F1_DATA (default ../shared/data/f1)
with lapnet's own loader and featuriser (`load_laps`, `build_sequences`), exactly as
race_real.py read them: the saved `row` must match, or the file is refused. Without the data
the script prints why and exits 0, as the other real-race benchmarks do.

  a  Results                       correcting the forecasts online by the errors already seen in the race (tried, dropped)
  b  Results                       speed trap / IsPersonalBest: partial correlations with the next lap's change
  c  The pit call: what was tried  the pit call's AUC on the Scored, green and no-in/out-lap masks against every lap
  d  The pit call: what was tried  the pit call and tyre life on laps with a stop still ahead
  e  Phase calls on real races     the live tagger's pit window added to the pit call's logit (and alone: its 0.711)
  f  Degradation: the stint trend  the field's stint slopes so far against the trend still to come, per race

Not here: in "The pit call: what was tried", the positives before an unforeseeable safety-car
stop (275 of 1,502, AUC 0.812 without them), the timing inside the window (0.633 / 0.766 /
0.901) and the per-race mean AUC (0.814) are printed by `python benchmarks/pit_explore.py --only tyre
pitmodel`, on its own out-of-fold refit of the pit model.

Definitions (the guide's words; where they leave a choice, the reading that reproduces the
guide's number, named as such):

a. A forecast (origin lap t, horizon k) is "resolved" once its target lap has ended (session
   Time): at origin t, the correction for horizon k is the sum of the errors (forecast minus
   lap, s) of the same horizon's pairs resolved by the time lap t ended, in the same race (or
   of the same driver), over (their count + n0); the corrected forecast is the forecast minus
   that. Pairs, learnt from and scored: the guide's Scored pairs (origin and target Scored, same
   stint) where every baseline forecasts too, i.e. race_real.py's table (the "without" numbers
   are its forecaster row). "n0 chosen on the other folds' races": per fold and horizon, the n0
   of the grid (N0_GRID) with the lowest MAE on the other 4 folds' races. "A per-race error slope in the
   horizon" (reading): the correction is k * b, b = sum(e k) / (sum(k^2) + n0) over the race's
   resolved pairs of all 10 horizons (a least-squares line through 0 in the horizon, shrunk);
   "worse" is against no correction. "Per driver": the same mean over the driver's own
   resolved pairs. "Race by race": h10 MAE per race at n0 = 300.
b. Laps: Scored laps whose next lap is Scored in the same stint (the forecaster's h1 pairs).
   "The next lap's change": lap t+1 minus lap t, % of the reference lap (the h1 target).
   "The lap's own deviation from its stint": lap t minus the median of the stint's Scored
   laps so far (t included), % of the reference lap (reading). The speed-trap feature: SpeedST
   minus the median SpeedST of the stint's Scored laps so far (t included; the guide's
   `trap_dev` for SpeedST, km/h); the personal-best one: IsPersonalBest of lap t. Partial
   correlation: the correlation of the residuals of both after a least-squares fit on
   [1, deviation], pooled over the 15 races. The features the guide measured (`trap_dev`,
   `personal_best`) were never committed, and no reading tried reproduces its 0.07 and -0.17
   together: this one gives +0.05 and -0.13; the two other deviations printed beside it give
   +0.05 / -0.10 and +0.05 / -0.16; medians over the whole stint, race dummies among the
   controls and per-race means (tried while writing this, not printed) span +0.02 to +0.08
   and -0.03 to -0.19. What holds: a little signal in both, the personal best's the larger.
c. AUC (`lapnet.race.metrics.roc_auc`) of the out-of-fold pit call (`pit`) against "an in-lap
   among the next 3 laps", on race_real.py's pit laps (every lap with a next lap) restricted
   to: the lap Scored; the lap green (`green`: no SC / VSC / red); no in- or out-lap.
d. "A stop still ahead": a later lap of the driver is an in-lap (what the pit label counts).
   Tyre life = the `tyre_life` feature. Per-race mean: the mean of the 15 races' AUCs. "Against
   final-stint laps": the positives against the negatives with no stop ahead. "Known exactly":
   every lap with no stop ahead ranked below every lap with one, ties inside each group broken
   by the score, AUC over all pit laps.
e. score = logit(pit call) + w * logit(P(pit_window)) of the live tagger alone (saved by
   race_real.py as `live_tagger_phase` when its runs have taggers, --phase-sim > 0; the saved
   `phase` is `live_phase`'s, whose pit window *is* the pit call and cannot be used). Reading:
   the guide says the tagger's "probability" is added to the pit call's logit, but its numbers
   (0.797 at w 0.1, 0.748 at 1.0) are those of adding the tagger's logit; adding the
   probability itself moves the AUC by under 0.005 up to w 1 (printed beside it).
f. Origins of `metrics.stint_trend_report` (laps t+1 and t+10 Scored in t's stint, t Scored).
   The trend still to come: (lap t+10 - lap t+1) / 9 (s per lap), the table's "actual". The
   field's stint slopes so far: the `field_slope` feature (the median of the other drivers'
   current stint slopes) in s per lap. Both averaged over each race's origins, then correlated
   over the 15 races (reading; the driver's own `stint_slope` and `race_trend` printed beside).
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from _folds import outer_folds  # benchmarks/_folds.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LAPNET_F1_DATA", REPO.parent / "shared" / "data" / "f1"))
ANALYSES = ("a", "b", "c", "d", "e", "f")
N0_GRID = (0, 10, 30, 100, 300, 1000, 3000, 10000)


def head(key: str, section: str, what: str) -> None:
    print(f"\n[{key}] docs/guide/race.md, {section}: {what}")


def feature(seq, name: str) -> np.ndarray:
    from lapnet.race.features import FEATURES

    return seq.x[:, :, FEATURES.index(name)].astype(np.float64)


def lap_column(laps, seq, name: str, fill=np.nan) -> np.ndarray:
    """(N, T) a column of the lap table on the sequences' grid (`fill` on padding)."""
    import pandas as pd

    v = pd.to_numeric(laps[name], errors="coerce").to_numpy(np.float64) if laps[name].dtype != bool else laps[name].to_numpy(bool)
    out = np.full(seq.row.shape, fill, dtype=v.dtype if v.dtype == bool else np.float64)
    ok = seq.row >= 0
    out[ok] = v[seq.row[ok]]
    return out


# ---------------------------------------------------------------- a: online correction


def _target_index(seq, k: int) -> np.ndarray:
    """(N, T) the index in its sequence of lap t+k (by lap number), -1 where there is none."""
    N, T = seq.row.shape
    q = np.full((N, T), -1)
    for i in range(N):
        L = int(seq.lengths[i])
        ln = seq.lap_number[i, :L]
        j = np.searchsorted(ln, ln + k)
        ok = (j < L) & (ln[np.minimum(j, L - 1)] == ln + k)
        q[i, :L] = np.where(ok, j, -1)
    return q


def _shrunk_mean(tau: np.ndarray, rho: np.ndarray, e: np.ndarray, n0: float) -> np.ndarray:
    """Per pair j: sum of e over the pairs with rho <= tau_j, over (their count + n0)."""
    order = np.argsort(rho, kind="mergesort")
    cs = np.concatenate([[0.0], np.cumsum(e[order])])
    n = np.searchsorted(rho[order], tau, side="right")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n + n0 > 0, cs[n] / (n + n0), 0.0)


def _horizon_slope(tau, rho, e, k, n0: float) -> np.ndarray:
    """Per pair j: k_j * b, b = sum(e k) / (sum(k^2) + n0) over the pairs (any horizon) with rho <= tau_j:
    the least-squares error slope in the horizon through 0, shrunk towards 0 by n0."""
    order = np.argsort(rho, kind="mergesort")
    ek = np.concatenate([[0.0], np.cumsum((e * k)[order])])
    kk = np.concatenate([[0.0], np.cumsum((k * k)[order])])
    n = np.searchsorted(rho[order], tau, side="right")
    with np.errstate(invalid="ignore", divide="ignore"):
        return k * np.where(kk[n] + n0 > 0, ek[n] / (kk[n] + n0), 0.0)


def analysis_a(seq, d, race_of, fold_of, races) -> None:
    from lapnet.race.baselines import baseline_forecasts
    from lapnet.race.metrics import eval_mask
    from lapnet.race.runs import to_seconds

    head("a", "Results (Tried and dropped: correcting the forecasts online)", "correcting the forecasts online by the errors already seen in the race (causal in session time)")
    sec = to_seconds(seq, d["mean"])  # (N, T, K) s
    mask = eval_mask(seq, "scored") & np.isfinite(sec)
    for b in baseline_forecasts(seq).values():  # race_real.py's table: the pairs every forecaster forecasts
        mask &= np.isfinite(b)
    N, T, K = sec.shape
    err = sec - seq.future  # (N, T, K)
    seq_id = np.broadcast_to(np.arange(N)[:, None], (N, T))
    pairs = {}  # k -> flat arrays of the pairs of horizon k
    for k in range(1, K + 1):
        m = mask[:, :, k - 1]
        q = _target_index(seq, k)
        rho = np.take_along_axis(seq.time, np.maximum(q, 0), 1)  # (N, T) session time the target lap ended
        pairs[k] = {"tau": seq.time[m], "rho": rho[m], "e": err[:, :, k - 1][m], "race": race_of[seq_id[m]],
                    "seq": seq_id[m], "fold": fold_of[seq_id[m]]}
        if not (np.isfinite(pairs[k]["tau"]).all() and np.isfinite(pairs[k]["rho"]).all()):
            raise ValueError("a Scored pair without a session Time")

    def corrected_errors(k: int, n0: float, by: str = "race") -> np.ndarray:
        p = pairs[k]
        out = p["e"].copy()
        for g in np.unique(p[by]):
            s = p[by] == g
            out[s] = p["e"][s] - _shrunk_mean(p["tau"][s], p["rho"][s], p["e"][s], n0)
        return out

    mae = lambda v: float(np.mean(np.abs(v)))  # noqa: E731
    hs = (1, 5, 10)
    base = {k: mae(pairs[k]["e"]) for k in hs}
    print(f"  without: h1 {base[1]:.4f}, h5 {base[5]:.4f}, h10 {base[10]:.4f}  "
          f"(n {len(pairs[1]['e'])} / {len(pairs[5]['e'])} / {len(pairs[10]['e'])} pairs)")
    race_level = {n0: {k: corrected_errors(k, n0) for k in hs} for n0 in N0_GRID}
    print("  race level, by n0 (h1 / h5 / h10): " + "; ".join(
        f"{n0} {mae(v[1]):.4f} / {mae(v[5]):.4f} / {mae(v[10]):.4f}" for n0, v in race_level.items()))
    v = race_level[1000]
    print(f"  race level, n0 = 1000: h1 {mae(v[1]):.4f}, h5 {mae(v[5]):.4f}, h10 {mae(v[10]):.4f}")
    # n0 chosen per fold and horizon on the other folds' races
    chosen, picked = {}, {}
    for k in hs:
        f_of = pairs[k]["fold"]
        out = np.empty_like(pairs[k]["e"])
        picked[k] = []
        for f in np.unique(f_of):
            other, this = f_of != f, f_of == f
            best = min(N0_GRID, key=lambda n0: mae(race_level[n0][k][other]))
            picked[k].append(best)
            out[this] = race_level[best][k][this]
        chosen[k] = mae(out)
    print(f"  n0 chosen on the other folds' races: h1 {chosen[1]:.4f}, h5 {chosen[5]:.4f}, h10 {chosen[10]:.4f} "
          f"(n0 per fold: " + "; ".join(f"h{k} {' '.join(str(n) for n in picked[k])}" for k in hs) + ")")
    # a per-race error slope in the horizon
    allk = {key: np.concatenate([pairs[k][key] for k in range(1, K + 1)]) for key in ("tau", "rho", "e", "race")}
    allk["k"] = np.concatenate([np.full(len(pairs[k]["e"]), float(k)) for k in range(1, K + 1)])
    slope_rows, worse_none = [], True
    for n0 in N0_GRID[1:]:  # n0 0 would take the slope of the first error or two at face value
        out = allk["e"].copy()
        for g in np.unique(allk["race"]):
            s = allk["race"] == g
            out[s] = allk["e"][s] - _horizon_slope(allk["tau"][s], allk["rho"][s], allk["e"][s], allk["k"][s], n0)
        row = {k: mae(out[allk["k"] == k]) for k in hs}
        worse_none &= sum(row.values()) > sum(base.values())
        slope_rows.append(f"{n0} {row[1]:.4f} / {row[5]:.4f} / {row[10]:.4f}")
    print("  a per-race error slope in the horizon, by n0 (h1 / h5 / h10): " + "; ".join(slope_rows)
          + f" -> worse than no correction at every n0 (h1 + h5 + h10): {worse_none}")
    drv = {n0: mae(corrected_errors(1, n0, by="seq")) for n0 in N0_GRID}
    best = min(drv, key=drv.get)
    print("  per driver, h1 by n0: " + "; ".join(f"{n0} {v:.4f}" for n0, v in drv.items())
          + f" -> best {drv[best]:.4f} (n0 {best}) against {base[1]:.4f} without and "
          f"{min(mae(v[1]) for v in race_level.values()):.4f} at the race level's best n0")
    # race by race at n0 = 300, h10
    e10, c10, r10 = pairs[10]["e"], race_level[300][10], pairs[10]["race"]
    rows = [(races[r], mae(e10[r10 == r]), mae(c10[r10 == r])) for r in np.unique(r10)]
    worse = [r for r in rows if r[2] > r[1]]
    print("  race by race, n0 = 300, h10 without -> with: " + ", ".join(
        f"{n.replace('2023_', '').replace('_R', '')} {a:.3f} -> {b:.3f}" for n, a, b in rows))
    print(f"  it helps {len(rows) - len(worse)} races and hurts {len(worse)}")


# ---------------------------------------------------------------- b: partial correlations


def _stint_running(seq, value: np.ndarray, summary, include_self: bool) -> np.ndarray:
    """(N, T) `summary` (a function of a list) of `value` over the stint's Scored laps up to lap
    t, t itself included or not; NaN where there are none."""
    out = np.full(value.shape, np.nan)
    for i in range(len(seq.keys)):
        L, hist, stint = int(seq.lengths[i]), [], None
        for t in range(L):
            if seq.stint_id[i, t] != stint:
                stint, hist = seq.stint_id[i, t], []
            here = seq.origin_scored[i, t] and np.isfinite(value[i, t])
            if here and include_self:
                hist.append(value[i, t])
            if hist:
                out[i, t] = float(summary(hist))
            if here and not include_self:
                hist.append(value[i, t])
    return out


def _stint_running_median(seq, value: np.ndarray, include_self: bool = True) -> np.ndarray:
    """(N, T) the median of `value` over the stint's Scored laps up to lap t."""
    return _stint_running(seq, value, np.median, include_self)


def _stint_prev_mean(seq, value: np.ndarray, n: int = 3) -> np.ndarray:
    """(N, T) the mean of `value` over the stint's previous (up to n) Scored laps before t."""
    return _stint_running(seq, value, lambda hist: np.mean(hist[-n:]), include_self=False)


def partial_corr(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Correlation of x and y after a least-squares fit of each on [1, z]."""
    Z = np.column_stack([np.ones_like(z), z])
    rx = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    ry = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    return float(np.corrcoef(rx, ry)[0, 1])


def analysis_b(seq, laps) -> None:
    head("b", "Results (speed traps and IsPersonalBest, tried and dropped)", "speed trap (SpeedST) and IsPersonalBest: partial correlations with the next lap's change, "
         "beyond the lap's own deviation from its stint (Scored laps, 15 races)")
    pct = 100.0 * seq.lap_time / seq.ref  # (N, T) the lap, % of the reference lap
    m = seq.origin_scored & seq.target_mask[:, :, 0]
    y = seq.target[:, :, 0].astype(np.float64)  # lap t+1 minus lap t, % of ref
    st = lap_column(laps, seq, "SpeedST")
    trap = st - _stint_running_median(seq, st)
    pb = lap_column(laps, seq, "IsPersonalBest", fill=False).astype(np.float64)
    devs = {"lap minus the stint's median so far (t included)": pct - _stint_running_median(seq, pct),
            "lap minus the mean of the stint's previous 3 Scored laps": pct - _stint_prev_mean(seq, pct),
            "lap minus the stint's median before it": pct - _stint_running_median(seq, pct, include_self=False)}
    for j, (name, dev) in enumerate(devs.items()):
        ok = m & np.isfinite(dev) & np.isfinite(trap) & np.isfinite(y)
        pc_trap = partial_corr(trap[ok], y[ok], dev[ok])
        pc_pb = partial_corr(pb[ok], y[ok], dev[ok])
        lead = "  " if j == 0 else "  (other reading) "
        print(f"{lead}deviation = {name}: SpeedST {pc_trap:+.3f}, IsPersonalBest {pc_pb:+.3f} "
              f"(n {int(ok.sum())}; plain correlations {np.corrcoef(trap[ok], y[ok])[0, 1]:+.3f} / "
              f"{np.corrcoef(pb[ok], y[ok])[0, 1]:+.3f})")


# ---------------------------------------------------------------- c, d, e: the pit call


def analysis_c(seq, d) -> None:
    from lapnet.race.metrics import roc_auc

    head("c", "The pit call: what was tried", "the pit call's AUC (pits within 3 laps) on the forecasts' mask and others, against every lap")
    pm, y, p, tyre = seq.pit_mask, seq.pit, d["pit"], feature(seq, "tyre_life")
    no_in_out = (feature(seq, "in_lap") == 0) & (feature(seq, "out_lap") == 0)
    for name, m in (("Scored laps (green, accurate, no in- or out-lap)", pm & seq.origin_scored),
                    ("green laps", pm & (feature(seq, "green") > 0)),
                    ("without in- and out-laps", pm & no_in_out),
                    ("every lap", pm)):
        print(f"  {name:<50} pit call {roc_auc(y[m], p[m]):.3f}, tyre life {roc_auc(y[m], tyre[m]):.3f} "
              f"(n {int(m.sum())}, {int(y[m].sum())} positive)")


def _stop_ahead(seq, laps) -> np.ndarray:
    """(N, T) bool: a later lap of the driver is an in-lap."""
    inl = lap_column(laps, seq, "InLap", fill=False).astype(bool)
    later = np.flip(np.cumsum(np.flip(inl, 1), 1), 1) - inl  # in-laps after lap t
    return later > 0


def analysis_d(seq, d, laps, race_of) -> None:
    from lapnet.race.metrics import roc_auc

    head("d", "The pit call: what was tried", "what the pit call knows: whether a stop is still to come, not when")
    pm, y, p, tyre = seq.pit_mask, seq.pit.astype(bool), d["pit"], feature(seq, "tyre_life")
    ahead = _stop_ahead(seq, laps)
    assert not (y & pm & ~ahead).any(), "a positive with no stop ahead"
    s = pm & ahead
    race = np.broadcast_to(race_of[:, None], pm.shape)
    per_race = lambda sc: np.mean([roc_auc(y[s & (race == r)], sc[s & (race == r)]) for r in np.unique(race[s])])  # noqa: E731
    print(f"  laps with a stop still ahead: {int(s.sum())} ({int(y[s].sum())} positive) of {int(pm.sum())} pit laps")
    print(f"  on them: tyre life {roc_auc(y[s], tyre[s]):.3f} pooled, {per_race(tyre):.3f} per-race mean; "
          f"pit call {roc_auc(y[s], p[s]):.3f} pooled, {per_race(p):.3f} per-race mean")
    fin = pm & (y | ~ahead)
    print(f"  positives against the laps with no stop ahead (final stints, {int((fin & ~y).sum())} laps): "
          f"pit call {roc_auc(y[fin], p[fin]):.3f}, tyre life {roc_auc(y[fin], tyre[fin]):.3f}")

    def known(sc):  # no-stop-ahead laps below every stop-ahead lap, the score ordering each group
        r = np.argsort(np.argsort(sc[pm], kind="mergesort"), kind="mergesort") / pm.sum()  # ranks in [0, 1)
        return roc_auc(y[pm], ahead[pm] * 2.0 + r)

    print(f"  with 'a stop is still ahead' known exactly: tyre life {known(tyre):.3f}, pit call {known(p):.3f} "
          f"(every lap: pit call {roc_auc(y[pm], p[pm]):.3f}, tyre life {roc_auc(y[pm], tyre[pm]):.3f})")


def analysis_e(seq, d) -> None:
    from lapnet.race.features import PHASES
    from lapnet.race.metrics import roc_auc

    head("e", "Phase calls on real races", "the live tagger's pit window added to the pit call's logit (out-of-fold AUC)")
    if "live_tagger_phase" not in d:
        print("  skipped: the file has no `live_tagger_phase` (the live tagger's own probabilities): save it with "
              "race_real.py --save-predictions and taggers on (--phase-sim > 0, the default)")
        return
    pm, y = seq.pit_mask, seq.pit
    q = d["live_tagger_phase"][..., PHASES.index("pit_window")]
    if not np.isfinite(q[pm]).all():
        print("  skipped: some folds' runs have no live tagger")
        return
    p = np.clip(d["pit"], 1e-12, 1 - 1e-12)
    logit = np.log(p) - np.log1p(-p)
    lq = np.log(np.clip(q, 1e-12, 1)) - np.log1p(-np.clip(q, 0, 1 - 1e-12))
    print(f"  pit call alone {roc_auc(y[pm], logit[pm]):.3f}; the live tagger's pit window alone {roc_auc(y[pm], q[pm]):.3f}")
    print("  logit + w * the tagger's pit-window logit: " + ", ".join(
        f"w {w:g} {roc_auc(y[pm], (logit + w * lq)[pm]):.3f}" for w in (0.1, 0.3, 1.0)))
    print("  (other reading) logit + w * the tagger's probability: " + ", ".join(
        f"w {w:g} {roc_auc(y[pm], (logit + w * q)[pm]):.3f}" for w in (0.1, 0.3, 1.0, 3.0)))


# ---------------------------------------------------------------- f: race trend


def analysis_f(seq, race_of, races) -> None:
    head("f", "Degradation: the stint trend", "averaged over a race, the field's stint slopes so far against the trend still to come")
    K = seq.future.shape[-1]
    m = seq.target_mask[:, :, 0] & seq.target_mask[:, :, K - 1] & seq.origin_scored  # stint_trend_report's origins
    actual = (seq.future[:, :, K - 1] - seq.future[:, :, 0]) / (K - 1)  # s per lap
    m &= np.isfinite(actual)
    s_per_lap = lambda name: feature(seq, name) / 10.0 * seq.ref / 100.0  # noqa: E731  (% of ref per lap x 10 -> s per lap)
    race = np.broadcast_to(race_of[:, None], m.shape)
    rs = [r for r in np.unique(race[m])]
    act = np.array([actual[m & (race == r)].mean() for r in rs])
    print(f"  {len(rs)} races, {int(m.sum())} origins; the trend still to come per race {act.min():+.3f} to {act.max():+.3f} "
          f"s per lap (sd {act.std():.3f})")
    for j, (name, what) in enumerate((("field_slope", "the field's stint slopes so far (field_slope)"),
                                      ("stint_slope", "the driver's own stint slope so far (stint_slope)"),
                                      ("race_trend", "the pooled race trend so far (race_trend)"))):
        v = s_per_lap(name)
        got = np.array([v[m & (race == r)].mean() for r in rs])
        lead = "  " if j == 0 else "  (beside it) "
        print(f"{lead}{what}: correlation {np.corrcoef(got, act)[0, 1]:.2f} over the races")


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", type=Path, help="the .npz race_real.py --save-predictions wrote")
    ap.add_argument("--only", nargs="+", choices=ANALYSES, default=list(ANALYSES), help="the analyses to run")
    args = ap.parse_args(argv)
    if not args.predictions.is_file():
        print(f"error: {args.predictions}: no such file (write it with race_real.py --save-predictions)", file=sys.stderr)
        return 2
    if not zipfile.is_zipfile(args.predictions):
        print(f"error: {args.predictions}: not an .npz file (write it with race_real.py --save-predictions)", file=sys.stderr)
        return 2
    try:
        with np.load(args.predictions, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001  (a truncated or foreign file: one line, exit 2)
        print(f"error: {args.predictions}: not a readable .npz ({type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
        return 2
    need = {"races", "race_of", "row", "mean", "pit"} - set(d)
    if need:
        print(f"error: {args.predictions}: not race_real.py's predictions (missing {', '.join(sorted(need))})", file=sys.stderr)
        return 2
    if not DATA.is_dir() or not list(DATA.glob("*.csv")):
        print(f"skipped: real F1 data not found at {DATA} (set LAPNET_F1_DATA)")
        return 0
    from lapnet.race.features import build_sequences
    from lapnet.race.inputs import load_laps

    paths = sorted(DATA.glob("*.csv"))
    laps, _ = load_laps(paths)
    seq = build_sequences(laps)
    races = sorted({k[0] for k in seq.keys})
    race_of = np.array([races.index(k[0]) for k in seq.keys])
    if (list(map(str, d["races"])) != races or d["row"].shape != seq.row.shape or not np.array_equal(d["row"], seq.row)
            or not np.array_equal(d["race_of"], race_of)):
        print(f"error: {args.predictions} was saved on other laps than {DATA} gives now (races or rows differ)", file=sys.stderr)
        return 2
    if "fold_of" in d:
        fold_of = d["fold_of"]
    else:  # files saved before race_real.py wrote it: its default 5 folds
        tests = outer_folds(races, 5)
        fold_of = np.array([next(f for f, t in enumerate(tests) if races[r] in t) for r in race_of])
    print(f"{args.predictions}: {len(races)} races, {len(seq.keys)} drivers' sequences, {len(set(fold_of.tolist()))} folds; laps {DATA}")
    for key in args.only:
        if key == "a":
            analysis_a(seq, d, race_of, fold_of, races)
        elif key == "b":
            analysis_b(seq, laps)
        elif key == "c":
            analysis_c(seq, d)
        elif key == "d":
            analysis_d(seq, d, laps, race_of)
        elif key == "e":
            analysis_e(seq, d)
        elif key == "f":
            analysis_f(seq, race_of, races)
    return 0


if __name__ == "__main__":
    sys.exit(main())
