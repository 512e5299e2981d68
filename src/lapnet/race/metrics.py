"""Race metrics: lap-time errors by horizon and compound, phase F1, interval coverage, pit-call quality.

All functions are plain NumPy on flat arrays or on the (N, T, K) forecast grids of
`Sequences`, so the forecaster and every baseline are scored on the same laps.
"""

from __future__ import annotations

import numpy as np

from lapnet.race.features import COMPOUNDS, Sequences

REPORT_HORIZONS = (1, 5, 10)
MASKS = {
    "scored": "origin lap t and target lap t+k both Scored (timed, IsAccurate, not deleted, no SC/VSC/red flag "
    "(TrackStatus 4-7; a yellow counts), not an in-lap, out-lap or lap 1, not a restart after a red flag (laps up to "
    "the first timed one), dry compound) and in the same stint",
    "all": "target lap t+k timed and in the same stint as t; the stint has a Scored lap at or before t "
    "(includes safety-car, yellow, in- and out-laps)",
    "fresh": "the stint has no Scored lap at or before t (an out-lap, the start, a restart: the forecast is the "
    "run's FreshStart when it has one, none before any lap of the race was run under green flags); target lap t+k "
    "Scored and in the same stint; every forecaster on the pairs the forecaster forecasts (beside the baselines "
    "that need no Scored lap to start from: the race's reference lap and the field's pace)",
}


def error_stats(pred: np.ndarray, actual: np.ndarray) -> dict:
    """MAE, RMSE and count of `pred - actual` (seconds), ignoring NaN pairs."""
    ok = np.isfinite(pred) & np.isfinite(actual)
    e = pred[ok] - actual[ok]
    if e.size == 0:
        return {"mae": None, "rmse": None, "n": 0}
    return {"mae": float(np.mean(np.abs(e))), "rmse": float(np.sqrt(np.mean(e**2))), "n": int(e.size)}


def eval_mask(seq: Sequences, which: str = "scored") -> np.ndarray:
    """(N, T, K) bool: the (origin, horizon) pairs that count, see `MASKS`."""
    if which == "scored":
        return seq.target_mask & seq.origin_scored[:, :, None]
    if which == "all":
        return seq.future_timed
    if which == "fresh":
        return seq.target_mask & ~np.isfinite(seq.base)[:, :, None]
    raise ValueError(f"unknown mask {which!r}")


def forecast_report(forecasts: dict[str, np.ndarray], seq: Sequences, horizons=REPORT_HORIZONS,
                    fresh_only: dict[str, np.ndarray] | None = None) -> dict:
    """Errors of every forecaster on the same pairs, by horizon, overall and by compound.

    Args:
        forecasts: name -> (N, T, K) seconds.
        seq: the sequences the forecasts were made on (targets and masks).
        fresh_only: name -> (N, T, K) seconds, forecasters scored in the "fresh" block only
            (`baselines.fresh_baselines`: NaN wherever the stint has a Scored lap).

    Returns:
        {mask: {name: {"h1": {"mae", "rmse", "n", "by_compound": {...}}, ...}}}. A pair
        counts for every forecaster only where all of them have a forecast. Every forecaster is
        in every block, with n 0 and mae None where no pair counts (a race run behind the
        safety car), except "fresh": a forecaster with no forecast from any origin whose stint
        has no Scored lap yet (the baselines, by construction) is left out of it.
    """
    valid = np.arange(seq.base.shape[1])[None, :] < seq.lengths[:, None]  # (N, T) real laps, not padding
    no_base = valid & ~np.isfinite(seq.base)  # (N, T) the origins "fresh" pairs start from
    report: dict = {}
    for which in MASKS:
        mask = eval_mask(seq, which)
        present = forecasts
        if which == "fresh":  # told by the origins, not the pairs: a race without fresh pairs keeps the same names
            present = {name: f for name, f in {**forecasts, **(fresh_only or {})}.items() if np.isfinite(f[no_base]).any()}
            if "forecaster" in forecasts:  # the pairs the forecaster forecasts, even where it forecasts none of them
                mask = mask & np.isfinite(forecasts["forecaster"])
        for f in present.values():
            mask = mask & np.isfinite(f)
        per: dict = {}
        for name, f in present.items():
            rows = {}
            for h in horizons:
                m = mask[:, :, h - 1]
                entry = error_stats(f[:, :, h - 1][m], seq.future[:, :, h - 1][m])
                comp = seq.compound[m]
                entry["by_compound"] = {
                    c: error_stats(f[:, :, h - 1][m][comp == ci], seq.future[:, :, h - 1][m][comp == ci])
                    for ci, c in enumerate(COMPOUNDS)
                    if np.any(comp == ci)
                }
                rows[f"h{h}"] = entry
            per[name] = rows
        report[which] = per
    return report


def totals_report(forecasts: dict[str, np.ndarray], seq: Sequences) -> dict:
    """The next K laps' total time: what a stint plan adds up. On origins whose next K laps are
    all Scored and in the same stint, per forecaster: n, the mean error of the total ("bias":
    predicted minus actual, s), its mean absolute error and its root mean square error (s).

    Args:
        forecasts: name -> (N, T, K) lap times in seconds (NaN where there is no forecast).
        seq: the sequences (targets and masks).
    """
    m = seq.target_mask.all(-1) & seq.origin_scored  # (N, T)
    actual = seq.future.sum(-1)  # (N, T) NaN where a lap is missing
    out = {}
    for name, f in forecasts.items():
        total = f.sum(-1)  # (N, T)
        ok = m & np.isfinite(total) & np.isfinite(actual)
        err = total[ok] - actual[ok]
        out[name] = {"n": int(ok.sum()), "bias": float(err.mean()) if len(err) else float("nan"),
                     "mae": float(np.abs(err).mean()) if len(err) else float("nan"),
                     "rmse": float(np.sqrt((err**2).mean())) if len(err) else float("nan")}
    return out


TREND_BOOT = 1000  # bootstrap resamples of the stints for `stint_trend_report`'s intervals


def stint_trend_report(forecasts: dict[str, np.ndarray], seq: Sequences) -> dict:
    """Degradation as forecast and as it happened: how much slower (s per lap) each lap of the
    next K laps gets, per compound, on real laps where tyre wear and fuel burn both act.

    Over origins t whose laps t+1 and t+K are both Scored and in t's stint, the trend is
    (lap t+K - lap t+1) / (K - 1): for each forecaster from its forecasts, and "actual" from the
    laps themselves on the same origins (positive: the stint slows, tyre wear beating fuel burn).

    Args:
        forecasts: name -> (N, T, K) lap times in seconds.
        seq: the sequences (targets and masks).

    Whether a forecaster's trend differs from the laps' more than chance would make it: the
    origins of one stint overlap (their windows share laps), so the unit of resampling is the
    stint. `gap_ci95` is the 95% interval of actual minus forecast over TREND_BOOT bootstrap
    resamples of the stints (fixed seed: the same laps give the same interval).

    Returns:
        {"laps": [1, K], "all": {...}, "by_compound": {compound: {...}}, "by_race": {race: {...}}},
        each {"n", "stints", "actual", <forecaster>: mean trend in s per lap,
        "gap_ci95": {<forecaster>: [lo, hi], or None below 2 stints}} ("by_race" only with several races).
    """
    K = seq.future.shape[-1]
    m = seq.target_mask[:, :, 0] & seq.target_mask[:, :, K - 1] & seq.origin_scored  # (N, T)

    def trend(a: np.ndarray) -> np.ndarray:  # (N, T, K) -> (N, T) s per lap
        return (a[:, :, K - 1] - a[:, :, 0]) / (K - 1)

    actual = trend(seq.future)
    trends = {name: trend(f) for name, f in forecasts.items()}
    ok = m & np.isfinite(actual)
    for t in trends.values():
        ok &= np.isfinite(t)

    stint = np.arange(len(seq.keys))[:, None] * (seq.stint_id.max() + 2) + seq.stint_id + 1  # (N, T) one id per stint

    def row(sel: np.ndarray) -> dict:
        _, c = np.unique(stint[sel], return_inverse=True)  # (n,) the stint of each origin, 0..C-1
        n_c = np.bincount(c).astype(float)  # (C,)
        w = np.random.default_rng(0).multinomial(len(n_c), np.full(len(n_c), 1 / len(n_c)), size=TREND_BOOT)  # (R, C)
        ci = {}
        for name, t in trends.items():
            if len(n_c) < 2:  # one stint resampled is itself every time: no interval, not a zero-width one
                ci[name] = None
                continue
            gap = (w @ np.bincount(c, actual[sel] - t[sel], len(n_c))) / (w @ n_c)  # (R,) resampled mean gaps
            ci[name] = [float(v) for v in np.percentile(gap, [2.5, 97.5])]
        return {"n": int(sel.sum()), "stints": len(n_c), "actual": float(actual[sel].mean()),
                **{name: float(t[sel].mean()) for name, t in trends.items()}, "gap_ci95": ci}

    out = {"laps": [1, K], "all": row(ok) if ok.any() else {"n": 0},
           "by_compound": {c: row(ok & (seq.compound == ci)) for ci, c in enumerate(COMPOUNDS)
                           if np.any(ok & (seq.compound == ci))}}
    races = np.array([k[0] for k in seq.keys])
    if len(set(races)) > 1:
        out["by_race"] = {r: row(ok & (races == r)[:, None]) for r in sorted(set(races)) if np.any(ok & (races == r)[:, None])}
    return out


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in y_true or y_pred."""
    f1s = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue  # class absent from both: it says nothing
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def coverage(actual: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of finite `actual` inside [lo, hi]."""
    ok = np.isfinite(actual) & np.isfinite(lo) & np.isfinite(hi)
    return float(np.mean((actual[ok] >= lo[ok]) & (actual[ok] <= hi[ok]))) if ok.any() else float("nan")


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties half.

    Computed from average ranks (Mann-Whitney U), O(n log n).
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average rank over each run of ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    u = r[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def top_decile_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Share of positives among the 10% highest scores (at least one item)."""
    y = np.asarray(y).astype(bool)
    n = max(1, int(np.ceil(0.1 * len(y))))
    top = np.argsort(-np.asarray(score, float), kind="mergesort")[:n]
    return float(np.mean(y[top])) if len(y) else float("nan")


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """Predicted probability against observed frequency in equal-width bins (empty bins omitted)."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        if m.any():
            rows.append(
                {"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": int(m.sum()), "predicted": float(p[m].mean()), "observed": float(y[m].mean())}
            )
    return rows


def pit_report(y: np.ndarray, p: np.ndarray) -> dict:
    """AUC, top-decile precision, base rate and calibration of a pit-within-3-laps call."""
    return {
        "auc": roc_auc(y, p),
        "top_decile_precision": top_decile_precision(y, p),
        "base_rate": float(np.mean(y)) if len(y) else float("nan"),
        "n": int(len(y)),
        "calibration": calibration_table(y, p),
    }


PHASE_CHECKS_NOTE = (
    "real laps carry no phase labels (a driver's intent is not in the timing data), so the calls are checked "
    "against what can be observed: a pit-window call should precede a real stop (the pit label: an in-lap among "
    "the next 3 laps), and push / conserve calls should mark laps faster / slower than the driver's other "
    "Scored laps of the stint within 3 laps (pace_s: median of that residual in seconds, per call); the "
    "next-lap columns ask whether a call made at lap t still holds at lap t+1, which lap t's own time cannot tell"
)


def stint_residuals(seq: Sequences, window: int = 3, *, ahead: int = 0) -> np.ndarray:
    """(N, T) seconds: Scored lap t+ahead minus the median of the driver's other Scored laps of
    the same stint within `window` laps of it (laps t..t+ahead left out), NaN where that lap is
    not Scored, is in another stint than lap t, or has fewer than 2 such neighbours.

    With ahead=0 this is how much faster (negative) or slower a lap was than its stint around
    it; ahead=1 asks the same of the next lap, leaving out the lap a call was made on.
    """
    res = np.full(seq.lap_time.shape, np.nan)
    for i in range(len(seq.keys)):
        L = int(seq.lengths[i])
        lt, ln, sid = seq.lap_time[i, :L], seq.lap_number[i, :L], seq.stint_id[i, :L]
        scored = np.flatnonzero(seq.origin_scored[i, :L])
        for j in range(L - ahead):
            q = j + ahead
            if not seq.origin_scored[i, q] or sid[q] != sid[j] or ln[q] != ln[j] + ahead:
                continue
            nb = scored[(sid[scored] == sid[q]) & (np.abs(ln[scored] - ln[q]) <= window)
                        & ((ln[scored] < ln[j]) | (ln[scored] > ln[q]))]
            if len(nb) >= 2:
                res[i, j] = lt[q] - np.median(lt[nb])
    return res


def phase_checks(seq: Sequences, probs: dict[str, np.ndarray], calls: dict[str, np.ndarray] | None = None) -> dict:
    """How phase calls made on real laps (no labels) agree with what the timing data shows.

    Args:
        seq: the sequences (their pit label, lap times, stints).
        probs: name ("live", "post_race") -> (N, T, 3) probabilities of push | conserve | pit_window.
        calls: name -> (N, T) the call made (index into PHASES); default: the likeliest phase.

    Returns:
        per name: the share of each call, the pit-window call against real stops (AUC of its
        probability, precision and recall of the call), and the pace residual (`stint_residuals`)
        per call on the lap itself and on the next lap, with the AUC of push against conserve.
    """
    from lapnet.race.features import PHASES

    same, nxt = stint_residuals(seq), stint_residuals(seq, ahead=1)
    valid = np.arange(seq.lap_time.shape[1])[None, :] < seq.lengths[:, None]  # (N, T) real laps, not padding
    pm, y = seq.pit_mask, seq.pit.astype(bool)
    out = {"note": PHASE_CHECKS_NOTE}
    for name, p in probs.items():
        call = calls[name] if calls and name in calls else p.argmax(-1)  # (N, T)
        pw = call == PHASES.index("pit_window")
        row = {"share": {ph: float(np.mean(call[valid] == k)) for k, ph in enumerate(PHASES)},
               "pit_window_auc": roc_auc(y[pm], p[..., PHASES.index("pit_window")][pm]),
               "pit_window_precision": float(y[pm & pw].mean()) if (pm & pw).any() else float("nan"),
               "pit_window_recall": float(pw[pm & y].mean()) if (pm & y).any() else float("nan"),
               "base_rate": float(y[pm].mean()) if pm.any() else float("nan")}
        for key, res in (("pace_s", same), ("next_lap_pace_s", nxt)):
            ok = np.isfinite(res)
            row[key] = {ph: (float(np.median(res[ok & (call == k)])) if (ok & (call == k)).any() else float("nan"))
                        for k, ph in enumerate(PHASES)}
            pc = ok & np.isin(call, [PHASES.index("push"), PHASES.index("conserve")])
            # AUC of "faster" for push against conserve: 0.5 = the calls say nothing about pace
            row[key.replace("pace_s", "push_vs_conserve_auc")] = roc_auc(call[pc] == PHASES.index("push"), -res[pc])
            row[key.replace("pace_s", "n")] = int(pc.sum())
        out[name] = row
    return out
