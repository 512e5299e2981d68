"""What `train_race` fits beside the nets once they are trained (with `pit_caller`): the pit call
(a `PitModel`, `lapnet.race.pit`), the `ExpectedGap` (the mean lap above the median forecast) and
the `FreshStart` (the forecast from laps whose stint has no Scored lap yet). Each is chosen, and
the last two kept or dropped, on the training races' own validation race or leave-races-out
folds; `models.WithPitCaller` carries all three in the run's model.safetensors, and config.json
records what was measured.
"""

from __future__ import annotations

import numpy as np
import torch

from lapnet.race.evaluation import PIT_EVAL_RULE
from lapnet.race.features import FEATURES, PIT_EXTRA, Sequences
from lapnet.race.inputs import subset_sequences
from lapnet.race.models import ExpectedGap, FreshStart
from lapnet.race.pit import PitModel
from lapnet.race.runs import run_net
from lapnet.race.training_config import RaceTrainConfig


def fit_pit_caller(seq: Sequences, train_idx, val_idx, cfg: RaceTrainConfig) -> tuple[PitModel, dict]:
    """Fit the pit call (a PitModel, `lapnet.race.pit`) on every race given to training (the
    nets' validation race too: the L2 strength is chosen by its own leave-races-out folds inside
    them, so the held-out races of a benchmark are never seen)."""
    from lapnet.race.pit import fit_pit_model

    idx = np.concatenate([train_idx, val_idx])
    m = seq.pit_mask[idx]  # (n_seq, T)
    x = seq.x[idx][m]  # (n, D)
    race = np.broadcast_to(np.array([seq.keys[i][0] for i in idx])[:, None], m.shape)[m]  # (n,)
    model, info = fit_pit_model(x, x[:, -len(PIT_EXTRA):], seq.pit[idx][m], race, FEATURES, l2_grid=cfg.pit_l2)
    return model, {**info, "eval_laps": PIT_EVAL_RULE}


def fit_expected_gap(forecaster: torch.nn.Module, seq: Sequences, train_idx, val_idx,
                     cfg: RaceTrainConfig) -> tuple[ExpectedGap | None, dict]:
    """Fit an ExpectedGap on the forecaster's residuals over the training races, for each ridge
    strength in cfg.expected_ridge; keep the one with the lowest squared error of the expected
    lap on the validation race(s). With cfg.expected_gap_check, the gap is then kept only if the
    next 10 laps' total it gives beats the median forecast's there in squared error (the loss a
    mean minimises; an absolute error would favour the median by construction): its residuals
    are in-sample, and on real races that can make it worse, not better.

    Returns:
        (the gap, or None when the check drops it; what was measured, for config.json)
    """

    def rows(idx):
        if len(idx) == 0:
            return None
        sub = subset_sequences(seq, idx)
        med = run_net(forecaster, sub)["mean"]  # (n, T, K)
        m = sub.target_mask.any(-1) & np.isfinite(sub.base)  # (n, T) laps with a target, starting from a Scored lap
        full = sub.target_mask[m].all(-1) & sub.origin_scored[m]  # (r,) origins whose next K laps all count
        return (torch.from_numpy(sub.x[m]), torch.from_numpy((sub.target - med)[m]),  # (r, D), (r, K)
                torch.from_numpy(sub.target_mask[m]), torch.from_numpy(full))  # (r, K), (r,)

    train, val = rows(train_idx), rows(val_idx)
    best, scores = None, {}
    for ridge in cfg.expected_ridge:
        gap = ExpectedGap(FEATURES)
        gap.fit(*train[:3], ridge=ridge)
        if val is None:
            best = (0.0, ridge, gap)
            break
        with torch.no_grad():
            err = (val[1] - gap(val[0]).to(val[1].dtype))[val[2]]
        scores[f"{ridge:g}"] = mse = float((err**2).mean()) if len(err) else 0.0
        if best is None or mse < best[0]:
            best = (mse, ridge, gap)
    info = {"model": "ridge regression of the forecast's residuals on the lap features + tyre life buckets per compound",
            "ridge": best[1], "val_mse_by_ridge": scores, "chosen_by": "lowest squared error on the validation race(s)",
            "kept": True}
    if cfg.expected_gap_check and val is not None and bool(val[3].any()):
        with torch.no_grad():
            r, full = val[1][val[3]], val[3]  # (f, K) residuals of the median on full origins
            g = best[2](val[0][full]).to(r.dtype)  # (f, K)
        med_mse, exp_mse = float((r.sum(-1) ** 2).mean()), float(((r - g).sum(-1) ** 2).mean())
        info["val_next10_total_sq_pct"] = {"median": med_mse, "expected": exp_mse, "origins": int(full.sum())}
        info["kept"] = exp_mse < med_mse
    return (best[2] if info["kept"] else None), info


FRESH_FOLDS = 5  # leave-races-out folds inside the training races that choose and check the FreshStart


def fit_fresh_start(forecaster: torch.nn.Module, seq: Sequences, idx: np.ndarray,
                    cfg: RaceTrainConfig) -> tuple[FreshStart | None, dict]:
    """Fit a FreshStart on the origins of the sequences `idx` whose stint has no Scored lap yet.

    Its L2 strength (cfg.fresh_ridge) is chosen by the mean absolute error over horizons on
    leave-races-out folds of those races (FRESH_FOLDS, or one per race when fewer); the folds'
    absolute errors give its 90% half-width per horizon. It is kept only if those folds beat
    the nets' own forecast on the same laps (the nets' is in-sample there, which favours them).

    Returns:
        (the model, or None when it is not kept or there are too few such laps; what was
        measured, for config.json)
    """
    sub = subset_sequences(seq, idx)
    m = sub.target_mask.any(-1) & ~np.isfinite(sub.base)  # (n, T) fresh origins with a target
    info: dict = {"model": "L1 regression of the laps ahead on the field's pace, the driver's pace against it, the "
                  "tyres and the start or restart (models.FreshStart.INPUTS), from laps whose stint has no Scored lap",
                  "origins": int(m.sum()), "kept": False}
    race = np.array([sub.keys[i][0] for i in range(len(sub.keys))])[:, None].repeat(m.shape[1], 1)[m]  # (n,)
    races = sorted(set(race))
    width = len(FreshStart.INPUTS) + 1
    if len(races) < 2 or m.sum() < 4 * width:
        info["why_not"] = f"too few laps to learn it from ({int(m.sum())} origins in {len(races)} race(s))"
        return None, info
    x, y, mask = (torch.from_numpy(sub.x[m]), torch.from_numpy(sub.target[m]).double(),
                  torch.from_numpy(sub.target_mask[m]))
    possible = FreshStart(FEATURES).possible(x)  # (n,) where it forecasts at all: some lap shows the race's pace
    info["no_forecast_origins"] = int((~possible).sum())
    mask = mask & possible[:, None]
    net = torch.from_numpy(run_net(forecaster, sub)["mean"][m]).double()  # (n, K) the nets' forecast there
    folds = np.array([races.index(r) % min(FRESH_FOLDS, len(races)) for r in race])
    scores, best = {}, None
    for ridge in cfg.fresh_ridge:
        pred = torch.zeros_like(y)
        for f in np.unique(folds):
            fs = FreshStart(FEATURES)
            tr, te = torch.from_numpy(folds != f), torch.from_numpy(folds == f)
            fs.fit(x[tr], y[tr], mask[tr], ridge)
            with torch.no_grad():
                pred[te] = fs(x[te]).double()
        err = (pred - y).abs()
        mae = float(err[mask].mean())
        scores[f"{ridge:g}"] = round(mae, 4)
        if best is None or mae < best[0]:
            best = (mae, ridge, err)
    mae, ridge, err = best
    net_mae = float((net - y).abs()[mask].mean())
    fs = FreshStart(FEATURES)
    fs.fit(x, y, mask, ridge)
    group = fs.group(x)  # (n,) FreshStart.GROUPS
    half = [[float(torch.quantile(err[mask[:, k] & (group == g), k], 0.9)) if (mask[:, k] & (group == g)).any()
             else 100.0 for k in range(y.shape[1])] for g in range(len(FreshStart.GROUPS))]  # a group never seen: wide
    fs.half90.copy_(torch.tensor(half))
    info.update({"ridge": ridge, "folds_mae_pct_by_ridge": scores, "folds_mae_pct": round(mae, 4),
                 "nets_mae_pct": round(net_mae, 4),
                 "half90_pct": {name: [round(v, 3) for v in h] for name, h in zip(FreshStart.GROUPS, half)},
                 "chosen_by": f"mean absolute error over horizons on {len(np.unique(folds))} leave-races-out folds",
                 "kept": mae < net_mae or not cfg.fresh_start_check})
    return (fs if info["kept"] else None), info
