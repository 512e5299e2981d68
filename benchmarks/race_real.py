"""Real races: leave-races-out cross-validation of the lap-time forecaster and the pit call.

    python benchmarks/race_real.py                      # 5 folds of 3 races, the issue's targets
    python benchmarks/race_real.py --folds 15           # leave one race out
    python benchmarks/race_real.py --pretrain-sim 30    # adds an arm pretrained on 30 calibrated simulated races
    python benchmarks/race_real.py --jobs 5             # the same, 5 folds trained at once (same numbers, less wall clock)
    python benchmarks/race_real.py --members 1          # one net per fold instead of the default ensemble of 3 seeds
    python benchmarks/race_real.py --head gaussian      # the Gaussian head (the default is Laplace, chosen by inner validation)
    python benchmarks/race_real.py --fresh-weight 1     # also train on origins whose stint has no Scored lap yet (default 0)
    python benchmarks/race_real.py --no-fresh-start     # those origins forecast by the nets from the reference lap (before the FreshStart)

    python benchmarks/race_real.py --members 1 --skip-train-all --hidden 32   # a cheap screening arm

Every fold trains `train_race` on the other races and predicts the held-out ones; the
predictions of all folds are pooled and scored once, beside the baselines on exactly the same
laps (origin and target lap Scored, same stint). The pit call is compared with tyre life alone
and with a logistic regression on tyre life, compound and race fraction (fitted per fold on
its training races). Each fold also reports its own validation race's score ("inner
validation": inside its training races, first ensemble member): settings are chosen on that,
never on the held-out folds. The runs' phase calls (push / conserve / pit window, learnt on
races simulated with the simulator calibrated to each fold's training races: --phase-sim) are
checked on the held-out real laps against real stops and the laps' pace (no labels exist
there; see `lapnet.race.metrics.phase_checks`). Finally the model is trained on all 15 races
and timed. Prints one table (with the stint trend: s per lap the next 10 laps slow, by compound,
forecast against the laps) and writes the JSON to --out (default runs/bench/race_real.json).
Timings on a shared machine are noisy: the CPU seconds are printed beside the wall clock.

Targets (issue 10): next-lap MAE on green laps >= 10% below persistence; beats every baseline
at horizons 1, 5, 10; pit-within-3 AUC >= 0.85 (tyre life alone ~0.73 there); training on all
15 races takes a few minutes at most on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _folds import outer_folds  # benchmarks/_folds.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LAPNET_F1_DATA", REPO.parent / "shared" / "data" / "f1"))


def _train_fold(job) -> tuple[float, float]:
    """Train one fold (run in a worker process with --jobs > 1); returns (wall, CPU) seconds."""
    import torch

    from lapnet.race.training import train_race

    train_paths, out, cfg, threads = job
    torch.set_num_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    train_race(train_paths, out, cfg)
    return time.perf_counter() - t0, time.process_time() - c0


SIMPLE_PIT = ("tyre_life", "compound_soft", "compound_medium", "compound_hard", "lap_frac")


def simple_logistic_pit(seq, train_idx, test_idx) -> np.ndarray:
    """Pit probabilities (len(test_idx), T) of the pit baseline: a logistic regression on tyre
    life, compound and race fraction (standardised), fitted exactly (`lapnet.race.pit.fit_logistic`,
    L2 1e-4) on the laps of `train_idx`."""
    import torch

    from lapnet.race.features import FEATURES
    from lapnet.race.pit import fit_logistic

    cols = [FEATURES.index(c) for c in SIMPLE_PIT]
    m = seq.pit_mask[train_idx]
    x = torch.from_numpy(seq.x[train_idx][m][:, cols].astype(np.float64))  # (n, 5)
    y = torch.from_numpy(seq.pit[train_idx][m].astype(np.float64))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    linear = torch.nn.Linear(len(cols), 1).double()
    fit_logistic(linear, (x - mean) / std, y, 1e-4)
    xt = torch.from_numpy(seq.x[test_idx][..., cols].astype(np.float64))  # (n_test, T, 5)
    with torch.no_grad():
        return torch.sigmoid(linear((xt - mean) / std).squeeze(-1)).numpy()


def phase_reference(run, train_paths: list[Path], seed: int, races: int = 4) -> dict:
    """The phase checks of `lapnet.race.metrics.phase_checks` on simulated races calibrated to the
    fold's training races, where each lap's phase is known: the checks of the true phases (what
    a perfect tagger would score there), of the run's taggers, and the taggers' macro-F1. Real
    laps have no labels; this says what the real-lap numbers would look like for calls of known
    quality."""
    from lapnet.race.features import PHASES, build_sequences
    from lapnet.race.metrics import macro_f1, phase_checks
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import phase_calls, run_outputs
    from lapnet.race.training import simulate_calibrated

    real, _ = load_laps(train_paths)
    sim, _ = load_laps(simulate_calibrated(real, races, seed=seed))
    seq = build_sequences(sim)
    o, post = run_outputs(run, seq)
    probs, calls = phase_calls(o, post)
    probs["truth"] = np.eye(len(PHASES))[seq.phase]  # (N, T, 3) one-hot: a perfect tagger's calls
    calls["truth"] = seq.phase
    qm = seq.phase_mask
    checks = phase_checks(seq, probs, calls)
    for name, c in calls.items():
        checks[name]["macro_f1"] = macro_f1(seq.phase[qm], c[qm], len(PHASES))
    return checks


def _mean_checks(rows: list[dict]) -> dict:
    """Element-wise mean of nested dicts of numbers (the folds' phase references)."""
    out = {}
    for k, v in rows[0].items():
        if isinstance(v, dict):
            out[k] = _mean_checks([r[k] for r in rows])
        elif isinstance(v, (int, float)):
            out[k] = float(np.nanmean([r[k] for r in rows]))
    return out


def cross_validate(paths: list[Path], cfg, folds: int, workdir: Path, *, pretrain_sim: int = 0, jobs: int = 1, threads: int = 1,
                   save: Path | None = None) -> dict:
    """Pooled out-of-fold metrics of `train_race` with `cfg` over `folds` folds of races
    (`jobs` folds trained at once in worker processes); `save`: an .npz of the out-of-fold outputs."""
    from lapnet.race.features import build_sequences
    from lapnet.race.metrics import roc_auc
    from lapnet.race.evaluation import score_predictions
    from lapnet.race.inputs import load_laps, subset_sequences
    from lapnet.race.runs import load_run, run_net, run_outputs, to_seconds
    from lapnet.race.training import train_race
    from lapnet.race.whatif import CHOICES, pit_now, pool_stop_errors, stop_check, stop_errors

    laps, _ = load_laps(paths)
    seq = build_sequences(laps)
    races = sorted({k[0] for k in seq.keys})
    race_of = np.array([races.index(k[0]) for k in seq.keys])
    N, T, K = seq.target.shape
    o = {"mean": np.zeros((N, T, K)), "sigma": np.ones((N, T, K)), "half90": np.ones((N, T, K)), "pit": np.zeros((N, T))}
    tagged = {"phase": np.zeros((N, T, 3))}  # the post-race tagger's calls, when every fold's run has one
    saved_only = {"fold_of": np.full(N, -1)}  # written by --save-predictions only, never scored here (race_analysis.py reads them)
    has_phase = {"live": True, "post_race": True}
    per_fold, references, stop_parts = [], [], []
    simple = np.zeros((N, T))
    tests = outer_folds(races, folds)
    todo = [([p for p in paths if p.stem not in tests[f]], workdir / f"fold{f}", replace(cfg, pretrain_sim=pretrain_sim), threads)
            for f in range(folds)]
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork on Linux (no re-import of torch per worker); spawn where fork is missing (Windows) or unsafe (macOS)
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context(method)) as pool:
            timings = list(pool.map(_train_fold, todo))
    else:
        timings = [_train_fold(job) for job in todo]
    for f in range(folds):
        test, out = tests[f], workdir / f"fold{f}"
        secs, cpu = timings[f]
        run = load_run(out)
        te = np.flatnonzero(np.isin(race_of, [races.index(r) for r in test]))
        pred, post = run_outputs(run, subset_sequences(seq, te))
        if getattr(run.model, "fresh", None) is not None:  # the pit-now what-if on the held-out races' real stops
            sub = subset_sequences(seq, te)
            stay = to_seconds(sub, pred["mean"])
            stop_parts.append(stop_errors(sub, pit_now(run.model, sub, stay, CHOICES), stay))
        # the nets alone on the same laps: what the FreshStart replaces (a run without one: its forecast)
        nets = getattr(run.model, "forecaster", None) if getattr(run.model, "fresh", None) is not None else None
        o.setdefault("nets_mean", np.full((N, T, K), np.nan))[te] = (
            run_net(nets, subset_sequences(seq, te))["mean"] if nets is not None else pred["mean"])
        o.setdefault("expected", np.zeros((N, T, K)))
        # a run whose ExpectedGap failed its validation check has no expected lap: its median stands in
        pred.setdefault("expected", pred["mean"])
        o.setdefault("phase", np.zeros((N, T, 3)))
        o.setdefault("phase_call", np.zeros((N, T), np.int64))
        has_phase["live"] &= "phase" in pred
        has_phase["post_race"] &= post is not None
        for k in o:
            if k in pred:
                o[k][te] = pred[k]
        if post is not None:
            tagged["phase"][te] = post["phase"]
        if save is not None:  # the fold of each sequence, and the live tagger's own probabilities (before `live_phase`)
            saved_only["fold_of"][te] = f
            if run.live_tagger is not None:
                saved_only.setdefault("live_tagger_phase", np.full((N, T, 3), np.nan))[te] = run_net(
                    run.live_tagger, subset_sequences(seq, te))["phase"]
        tr_all = np.setdiff1d(np.arange(N), te)
        simple[te] = simple_logistic_pit(seq, tr_all, te)
        fold_metrics = score_predictions(subset_sequences(seq, te), pred, post)
        if "phase" in pred or post is not None:
            references.append(phase_reference(run, todo[f][0], seed=cfg.seed + 5000 + f))
        # what the fold's own validation race (inside its training races) says: the only score used to choose settings
        inner = json.loads((out / "metrics.json").read_text()).get("validation") or {}
        inner_rows = {r["forecaster"]: r for r in inner.get("summary", [])}
        row = {r["forecaster"]: round(r["mae_h1"], 4) for r in fold_metrics["summary"]}
        fp = fold_metrics["pit_within_3"]
        pm = seq.pit_mask[te]
        per_fold.append({"test": test, "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1), "mae_h1": row,
                         "mae_h5": {r["forecaster"]: round(r["mae_h5"], 4) for r in fold_metrics["summary"]},
                         "mae_h10": {r["forecaster"]: round(r["mae_h10"], 4) for r in fold_metrics["summary"]},
                         "pit_auc": fp["auc"], "pit_auc_tyre_life": fp["tyre_life_auc"],
                         "pit_auc_simple_logistic": roc_auc(seq.pit[te][pm], simple[te][pm]),
                         "pit_auc_without_in_laps": fp["auc_without_in_laps"],
                         "expected_gap_kept": bool((run.config.get("expected_gap") or {}).get("kept", False)),
                         "fresh_start_kept": bool((run.config.get("fresh_start") or {}).get("kept", False)),
                         "inner_validation": {"races": json.loads((out / "metrics.json").read_text()).get("validation_races"),
                                              "mae_h1": inner_rows.get("forecaster", {}).get("mae_h1"),
                                              "persistence_mae_h1": inner_rows.get("persistence", {}).get("mae_h1"),
                                              "pit_auc": (inner.get("pit_within_3") or {}).get("auc")}})
        print(f"  fold {f + 1}/{folds} {','.join(t.replace('2023_', '').replace('_R', '') for t in test)}: "
              f"h1 MAE {row['forecaster']:.3f} vs persistence {row['persistence']:.3f}, "
              f"pit AUC {fp['auc']:.3f}  ({secs:.0f} s, {cpu:.0f} s CPU)", file=sys.stderr, flush=True)
    if save is not None:  # the out-of-fold outputs, for analysis beside the lap table (seq.row indexes load_laps(paths))
        np.savez_compressed(save, races=np.array(races), race_of=race_of, row=seq.row, **o, **saved_only,
                            **({"post_race_phase": tagged["phase"]} if has_phase["post_race"] else {}))
    if not has_phase["live"]:
        del o["phase"], o["phase_call"]
    nets = o.pop("nets_mean", None)
    pooled = score_predictions(seq, o, tagged if has_phase["post_race"] else None)
    pooled["fresh_by_origin"] = fresh_by_origin(seq, o)
    if nets is not None:  # the fresh block again, with the nets from the reference lap beside the FreshStart
        from lapnet.race.baselines import fresh_baselines
        from lapnet.race.metrics import forecast_report
        from lapnet.race.runs import to_seconds

        fresh = ~np.isfinite(seq.base)[:, :, None]
        pooled["fresh_vs_nets"] = forecast_report(
            {"forecaster": to_seconds(seq, o["mean"])}, seq,
            fresh_only={"nets_from_reference_lap": np.where(fresh, to_seconds(seq, nets), np.nan),  # NaN: pair left out
                        **fresh_baselines(seq)})["fresh"]
    if stop_parts:
        pooled["pit_now"] = {**stop_check(pool_stop_errors(stop_parts)), "folds": len(stop_parts)}
    pm = seq.pit_mask
    pooled["pit_within_3"]["simple_logistic_auc"] = roc_auc(seq.pit[pm], simple[pm])
    res = {"pooled": pooled, "folds": per_fold}
    if references:
        res["phase_reference_sim"] = _mean_checks(references)
    return res


def phase_lines(checks: dict | None, reference: dict | None = None) -> list[str]:
    """The phase calls on real laps (no labels): against real stops and against the laps' pace;
    then the same checks on calibrated simulated races, where the true phases are known."""
    if not checks:
        return []
    lines = ["phase calls on real laps (learnt on calibrated simulated races; checked against stops and pace):"]
    lines += _check_lines(checks)
    if reference:
        lines.append("the same checks on simulated races calibrated to each fold's training races, phases known "
                     "(mean of the folds): the true phases, then the taggers (macro-F1 against the truth)")
        lines += _check_lines(reference, ("truth", "live", "post_race"))
    return lines


def _check_lines(checks: dict, names=("live", "post_race")) -> list[str]:
    lines = []
    for name in names:
        c = checks.get(name)
        if c is None:
            continue
        if "macro_f1" in c:
            lines.append(f"  {name:<9} macro-F1 {c['macro_f1']:.3f}")
        share = " / ".join(f"{v:.2f}" for v in c["share"].values())
        lines.append(f"  {name:<9} share push/conserve/pit_window {share}; pit_window vs a stop within 3 laps: AUC "
                     f"{c['pit_window_auc']:.3f}, precision {c['pit_window_precision']:.3f} (base rate {c['base_rate']:.3f}), "
                     f"recall {c['pit_window_recall']:.3f}")
        lines.append(f"  {'':<9} pace vs the stint around the lap, median s push/conserve: this lap "
                     f"{c['pace_s']['push']:+.3f}/{c['pace_s']['conserve']:+.3f} (AUC {c['push_vs_conserve_auc']:.3f}), "
                     f"next lap {c['next_lap_pace_s']['push']:+.3f}/{c['next_lap_pace_s']['conserve']:+.3f} "
                     f"(AUC {c['next_lap_push_vs_conserve_auc']:.3f})")
    return lines


def fresh_by_origin(seq, o: dict) -> dict:
    """The forecast's next-lap MAE (s) from laps whose stint has no Scored lap yet, by what the
    lap was: an out-lap after a stop (lap 1 is FastF1's out-lap of every car: apart), lap 1, a
    lap under a safety car, VSC or red flag; on the fresh block's pairs."""
    from lapnet.race.features import FEATURES
    from lapnet.race.metrics import eval_mask
    from lapnet.race.runs import to_seconds

    sec = to_seconds(seq, o["mean"])[:, :, 0]
    m = eval_mask(seq, "fresh")[:, :, 0] & np.isfinite(sec)
    f = {n: seq.x[:, :, FEATURES.index(n)] > 0 for n in ("out_lap", "opening_lap_1", "safety_car", "vsc", "red")}
    groups = {"out-lap after a stop": f["out_lap"] & ~f["opening_lap_1"], "lap 1": f["opening_lap_1"],
              "under SC / VSC / red flag": f["safety_car"] | f["vsc"] | f["red"]}
    err = np.abs(sec - seq.future[:, :, 0])
    return {name: {"n": int((m & g).sum()), "mae": float(err[m & g].mean()) if (m & g).any() else None,
                   "median": float(np.median(err[m & g])) if (m & g).any() else None} for name, g in groups.items()}


def _fresh_line(pooled: dict) -> list[str]:
    """The forecast from origins whose stint has no Scored lap yet (out-laps, the start, restarts:
    the run's FreshStart), beside the baselines that need no Scored lap (the race's reference
    lap, the field's pace)."""
    block = (pooled.get("forecast") or {}).get("fresh", {})
    if not block.get("forecaster"):
        return []
    lines = [f"forecasts from a stint without a Scored lap yet (out-laps, the start, restarts; n = "
             f"{block['forecaster']['h1']['n']} next-lap pairs), MAE / RMSE (s):"]
    for name, rows in block.items():
        lines.append(f"  {name:14s} " + ", ".join(f"{h} {rows[h]['mae']:.2f} / {rows[h]['rmse']:.2f}"
                                                   for h in ("h1", "h5", "h10") if rows[h]["n"]))
    info = pooled.get("fresh_start") or {}
    if info:
        cov = info["interval90_coverage"]
        lines.append(f"  from {info['origins']} such laps: {info['no_forecast']} without a forecast (no lap of the race had "
                     f"shown its pace, or wet tyres); of {info['forecasts']} forecasts, {info['faster_than_fastest_lap']} "
                     f"faster than the race's fastest lap and {info['slower_than_1_3x_fastest']} slower than 1.3 times it; "
                     f"90% coverage h1 {cov['h1']:.3f}, h5 {cov['h5']:.3f}, h10 {cov['h10']:.3f}")
    vs = pooled.get("fresh_vs_nets") or {}
    if vs.get("nets_from_reference_lap"):
        lines.append("  the nets alone (from the reference lap, what the FreshStart replaces) on the same pairs, MAE (s): "
                     + ", ".join(f"{h} {vs['nets_from_reference_lap'][h]['mae']:.2f}" for h in ("h1", "h5", "h10")
                                 if vs["nets_from_reference_lap"][h]["n"]))
    by = pooled.get("fresh_by_origin") or {}
    if by:
        lines.append("  next lap by origin, MAE / median (s): " + ", ".join(
            f"{k} {v['mae']:.2f} / {v['median']:.2f} (n {v['n']})" for k, v in by.items() if v["n"]))
    return lines


def _pit_now_lines(pooled: dict) -> list[str]:
    """The pit-now what-if on the real stops of the held-out races (`lapnet.race.whatif.stop_check`)."""
    pn = pooled.get("pit_now")
    if not pn:
        return []

    def cells(rows: dict) -> str:
        return ", ".join(f"{h} {r['mae']:.2f} / {r['bias']:+.2f} (n {r['n']})" for h, r in rows.items() if r["n"])

    lines = [f"pit now, on the {pn['stops']} real stops of the held-out races ({pn['folds']} folds with a FreshStart): "
             "the new-tyre laps forecast at the lap before the in-lap, against the laps run, MAE / bias (s):"]
    for name, rows in pn["laps"].items():
        lines.append(f"  {name:26s} " + cells(rows))
    lines.append("  what-if by compound fitted: " + "; ".join(f"{c} {cells(rows)}" for c, rows in pn["what_if_by_compound"].items()
                                                              if rows["h1"]["n"]))
    lines.append("  what-if by the call's track status: " + "; ".join(f"{c} {cells(rows)}" for c, rows in pn["what_if_by_call"].items()
                                                                      if rows["h1"]["n"]))
    lines.append("  the same laps forecast 1 / 2 / 3 laps before the call, as 'box j laps later' (the compound fitted): " + "; ".join(
        f"{j.replace('by_', '')} earlier: {cells(rows)}" for j, rows in pn["called_earlier"].items() if rows["h1"]["n"]))
    for kind, st in pn["stop_cost"].items():
        if st["n"]:
            lines.append(f"  the stop's cost, called {'under green flags' if kind == 'green' else 'under a safety car or VSC'} "
                         f"(n {st['n']}): MAE {st['mae']:.2f} s, bias {st['bias']:+.2f} s")
    return lines


def table(name: str, res: dict) -> list[str]:
    pooled = res["pooled"]
    rows = {r["forecaster"]: r for r in pooled["summary"]}
    pers = rows["persistence"]
    lines = [f"\n{name}: MAE (s) on Scored laps, out-of-fold, all folds pooled (n = {pers['n_h1']} next-lap pairs)",
             f"{'forecaster':<18}{'h1':>8}{'h5':>8}{'h10':>8}{'h1 vs persistence':>20}"]
    for n, r in rows.items():
        lines.append(f"{n:<18}{r['mae_h1']:>8.3f}{r['mae_h5']:>8.3f}{r['mae_h10']:>8.3f}{(r['mae_h1'] / pers['mae_h1'] - 1) * 100:>19.1f}%")
    fc = rows["forecaster"]
    beats = {h: all(fc[f"mae_h{h}"] < r[f"mae_h{h}"] for n, r in rows.items() if n != "forecaster") for h in (1, 5, 10)}
    pit = pooled["pit_within_3"]
    cov = pooled["interval90_coverage"]
    lines += [
        f"target: h1 >= 10% below persistence -> {(fc['mae_h1'] / pers['mae_h1'] - 1) * 100:+.1f}% "
        f"({'met' if fc['mae_h1'] <= 0.9 * pers['mae_h1'] else 'NOT met'})",
        f"target: beats every baseline at h1/h5/h10 -> {beats}",
        f"pit within 3 laps: AUC {pit['auc']:.3f} (target >= 0.85: {'met' if pit['auc'] >= 0.85 else 'NOT met'}), "
        f"tyre life alone {pit['tyre_life_auc']:.3f}, top-decile precision {pit['top_decile_precision']:.3f} "
        f"(base rate {pit['base_rate']:.3f}); without in-laps: AUC {pit['auc_without_in_laps']:.3f}, "
        f"tyre life {pit['tyre_life_auc_without_in_laps']:.3f}",
        f"pit baselines on the same laps: tyre life alone {pit['tyre_life_auc']:.3f}, logistic on tyre life + compound + "
        f"race fraction {pit['simple_logistic_auc']:.3f}",
        f"90% interval coverage: h1 {cov['h1']:.3f}, h5 {cov['h5']:.3f}, h10 {cov['h10']:.3f}",
        *_fresh_line(pooled),
        *_pit_now_lines(pooled),
        "expected gap kept by its validation check in folds: " + " ".join(str(int(f.get("expected_gap_kept", 0))) for f in res["folds"])
        + " (a dropped gap's fold uses the median as its expected lap)",
        "fresh start kept by its check in folds: " + " ".join(str(int(f.get("fresh_start_kept", 0))) for f in res["folds"])
        + " (a dropped one's fold forecasts those laps with the nets, from the reference lap)",
        "next 10 laps' total (s), bias / MAE / RMSE: " + ", ".join(
            f"{n} {v['bias']:+.2f} / {v['mae']:.2f} / {v['rmse']:.2f}" for n, v in pooled.get("next10_total", {}).items()
            if n in ("forecaster", "expected", "persistence", "mean_last3")) + f" (n = {pooled.get('next10_total', {}).get('forecaster', {}).get('n')})",
        "per fold (held-out races): h1 MAE model / persistence (change), h5, h10 model / persistence; pit AUC model / tyre life / simple logistic",
    ]
    trend = pooled.get("stint_trend") or {}
    if trend.get("by_compound"):  # degradation: how much each lap of the next 10 slows, actual against forecast
        lines.insert(-1, "stint trend (s per lap over the next 10 laps; actual / median forecast / expected; "
                     "actual - median forecast, 95% over resampled stints): " + ", ".join(
            f"{c} {r['actual']:+.3f} / {r['forecaster']:+.3f}" + (f" / {r['expected']:+.3f}" if "expected" in r else "")
            + (" [{:+.3f}, {:+.3f}]".format(*r["gap_ci95"]["forecaster"]) if (r.get("gap_ci95") or {}).get("forecaster") else " [-]")
            + f" (n {r['n']}, {r['stints']} stints)" for c, r in [*trend["by_compound"].items(), ("all", trend["all"])]))
        by_race = trend.get("by_race") or {}
        if by_race:  # what varies most: each race's own trend, which the forecast follows only in part
            act = [r["actual"] for r in by_race.values()]
            fc = [r["forecaster"] for r in by_race.values()]
            lines.insert(-1, f"stint trend by race (all compounds): actual {min(act):+.3f} to {max(act):+.3f} "
                         f"(sd {np.std(act):.3f}), median forecast {min(fc):+.3f} to {max(fc):+.3f} (sd {np.std(fc):.3f}), "
                         f"correlation {np.corrcoef(act, fc)[0, 1]:.2f} over {len(act)} races")
    lines += phase_lines(pooled.get("phase_checks"), res.get("phase_reference_sim"))
    inner = [f["inner_validation"] for f in res["folds"]]
    if all(v["mae_h1"] for v in inner):
        lines.append("inner validation (each fold's own validation race, first member; used to choose settings): h1 "
                     + " ".join(f"{v['mae_h1']:.3f}/{v['persistence_mae_h1']:.3f}" for v in inner)
                     + f", mean {np.mean([v['mae_h1'] for v in inner]):.4f}")
    for f in res["folds"]:
        a, b = f["mae_h1"], f["mae_h5"]
        c = f["mae_h10"]
        lines.append(f"  {','.join(t.replace('2023_', '').replace('_R', '') for t in f['test']):<36}"
                     f"h1 {a['forecaster']:.3f}/{a['persistence']:.3f} ({(a['forecaster'] / a['persistence'] - 1) * 100:+.1f}%)  "
                     f"h5 {b['forecaster']:.3f}/{b['persistence']:.3f}  h10 {c['forecaster']:.3f}/{c['persistence']:.3f}  "
                     f"pit {f['pit_auc']:.3f}/{f['pit_auc_tyre_life']:.3f}/{f['pit_auc_simple_logistic']:.3f}")
    return lines


def main(argv=None) -> int:
    from lapnet.race.training_config import RaceTrainConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--members", type=int, default=3, help="ensemble members (seeds) per trained model")
    ap.add_argument("--seed", type=int, default=0, help="training seed (members use seed, seed+1, ...)")
    ap.add_argument("--pit-weight", type=float, default=1.0, help="weight of the pit call's loss")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--no-linear-skip", action="store_true", help="no linear map of the lap's features into the forecast")
    ap.add_argument("--no-pit-caller", action="store_true", help="the pit call from the net's pit head (the previous design)")
    ap.add_argument("--head", choices=("gaussian", "laplace"), default=RaceTrainConfig.head,
                    help="the forecast's distribution (sets the 90%% interval's shape)")
    ap.add_argument("--mean-loss", choices=("l1", "nll"), default=RaceTrainConfig.mean_loss,
                    help="the location's loss: L1, or the joint Laplace NLL (with --head laplace)")
    ap.add_argument("--scale-weight", type=float, default=RaceTrainConfig.scale_weight,
                    help="weight of the scale's NLL in the loss (with --mean-loss l1)")
    ap.add_argument("--fresh-weight", type=float, default=RaceTrainConfig.fresh_weight,
                    help="weight in the forecast loss of origins whose stint has no Scored lap yet (out-laps, the start, "
                         "restarts; RaceTrainConfig.fresh_weight): 0 leaves them out")
    ap.add_argument("--no-fresh-start", action="store_true",
                    help="no FreshStart: out-laps, the start and restarts forecast by the nets from the reference lap")
    ap.add_argument("--phase-sim", type=int, default=RaceTrainConfig.phase_sim,
                    help="calibrated simulated races the phase taggers learn from (0: no phase calls, faster)")
    ap.add_argument("--pretrain-sim", type=int, default=0, help="also run an arm pretrained on N calibrated simulated races")
    ap.add_argument("--skip-real-arm", action="store_true", help="with --pretrain-sim: run only the pretrained arm")
    ap.add_argument("--skip-train-all", action="store_true", help="do not time the training on all races")
    ap.add_argument("--jobs", type=int, default=1, help="folds trained at once in worker processes (wall clock only; results identical)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine more threads only contend)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "race_real.json")
    ap.add_argument("--save-predictions", type=Path, default=None, help="write the out-of-fold outputs (.npz) for analysis")
    args = ap.parse_args(argv)
    if args.mean_loss == "nll" and args.head != "laplace":
        ap.error("--mean-loss nll needs --head laplace")
    if not (np.isfinite(args.fresh_weight) and args.fresh_weight >= 0):
        ap.error(f"--fresh-weight must be a number >= 0, got {args.fresh_weight}")
    if not DATA.is_dir() or not list(DATA.glob("*.csv")):
        print(f"skipped: real F1 data not found at {DATA} (set LAPNET_F1_DATA)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from lapnet.race.training import train_race

    paths = sorted(DATA.glob("*.csv"))
    cfg = RaceTrainConfig(epochs=args.epochs, hidden_size=args.hidden, pit_weight=args.pit_weight, dropout=args.dropout,
                           members=args.members, seed=args.seed, progress=False, linear_skip=not args.no_linear_skip,
                           pit_caller=not args.no_pit_caller, head=args.head, mean_loss=args.mean_loss,
                           scale_weight=args.scale_weight, phase_sim=args.phase_sim, fresh_weight=args.fresh_weight,
                           fresh_start=not args.no_fresh_start)
    results: dict = {"config": {"folds": args.folds, "epochs": args.epochs, "hidden": args.hidden, "pit_weight": args.pit_weight,
                                "members": args.members, "seed": args.seed, "linear_skip": not args.no_linear_skip, "dropout": args.dropout,
                                "pit_caller": not args.no_pit_caller, "head": args.head, "mean_loss": args.mean_loss, "scale_weight": args.scale_weight,
                                "phase_sim": args.phase_sim, "fresh_weight": args.fresh_weight,
                                "fresh_start": not args.no_fresh_start, "races": len(paths)}}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"cross-validating over {len(paths)} races, {args.folds} folds", file=sys.stderr)
        if not (args.skip_real_arm and args.pretrain_sim):
            results["real_only"] = cross_validate(paths, cfg, args.folds, tmp / "real", jobs=args.jobs, threads=args.threads,
                                                  save=args.save_predictions)
            lines += table("trained on real races", results["real_only"])
        if args.pretrain_sim:
            print(f"cross-validating with --pretrain-sim {args.pretrain_sim}", file=sys.stderr)
            results["pretrain_sim"] = cross_validate(paths, cfg, args.folds, tmp / "sim", pretrain_sim=args.pretrain_sim,
                                                     jobs=args.jobs, threads=args.threads)
            lines += table(f"pretrained on {args.pretrain_sim} calibrated simulated races, then real", results["pretrain_sim"])
            a = results["real_only"]["pooled"]["summary"][0] if "real_only" in results else None
            b = results["pretrain_sim"]["pooled"]["summary"][0]
            if a is not None:
                lines.append(f"pretraining on simulated races: h1 MAE {a['mae_h1']:.3f} -> {b['mae_h1']:.3f}, "
                             f"h10 {a['mae_h10']:.3f} -> {b['mae_h10']:.3f} ({'helps' if b['mae_h1'] < a['mae_h1'] else 'does not help'} at h1)")
        if not args.skip_train_all:
            t0, c0 = time.perf_counter(), time.process_time()
            train_race(paths, tmp / "all", cfg)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            results["train_all"] = {"seconds": secs, "cpu_seconds": cpu, "threads": args.threads}
            lines.append(f"training on all {len(paths)} races: {secs:.0f} s wall, {cpu:.0f} s CPU ({args.threads} threads; "
                         f"target: a few minutes on 2 cores)")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
