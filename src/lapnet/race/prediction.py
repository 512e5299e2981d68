"""Predict a race lap by lap: the library behind `lapnet race predict`.

    table, metrics = predict_race("runs/race", "2023_italian_R.csv", out="runs/race/monza")

One row per lap of the chosen drivers: the forecasts at 1, 5 and 10 laps, the next lap's 90%
interval, where the forecast comes from, the pit call and the phases, with the metrics `race
eval` gives on those laps. With `out`: predictions.csv and the figures, drawn aside and moved in
once complete. `classification` orders the drivers as the race finished (the default figures).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.race.evaluation import score_predictions
from lapnet.race.features import COMPOUNDS, PHASES
from lapnet.race.inputs import check_race_length, load_laps, race_sequences, sprint_note, sprint_races, subset_sequences
from lapnet.race.outputs import (MAX_FIGURES, PREDICT_COMMAND, PREDICT_PNG_MARK, check_predict_out, earlier_predict_files,
                                 forecast_figure_name, stale_staging)
from lapnet.race.runs import RaceRun, forecast_source, load_run, pit_window_threshold, run_outputs, take, to_seconds
from lapnet.race.schema import WET_COMPOUNDS


def classification(laps: pd.DataFrame) -> list[tuple[str, str]]:
    """(race, driver) in the order of each race's final classification: most laps completed
    first, then the Position on the driver's last lap, then who ended that lap first (session
    Time), then the code. A table without positions falls back on laps and Time alone."""
    last = laps.sort_values("LapNumber").groupby(["Race", "Driver"], sort=False).tail(1)
    key = pd.DataFrame({"race": last["Race"].astype(str), "driver": last["Driver"].astype(str),
                        "laps": -last["LapNumber"].to_numpy(float),
                        "pos": last["Position"].fillna(np.inf).to_numpy(float) if "Position" in last else np.inf,
                        "time": last["Time"].fillna(np.inf).to_numpy(float) if "Time" in last else np.inf})
    key = key.sort_values(["race", "laps", "pos", "time", "driver"], kind="mergesort")
    return list(zip(key["race"], key["driver"]))


def predict_race(run: str | Path, sources: Any, *, driver: str | list[str] | None = None, out: str | Path | None = None,
                 race_length: int | str = "file", device: str = "cpu", force: bool = False) -> tuple[pd.DataFrame, dict]:
    """`lapnet race predict`: per-lap forecasts, intervals, pit calls and phases (+ figures in `out`).

    `driver`: None (every driver), or drivers as `io.parse_drivers` reads them ('VER',
    'ver,ham', '1,44' by FastF1's DriverNumber, or a list). `race_length` as `eval_race` takes
    it: give it (or "estimate") for a race still running, whose table's last lap is not the
    race's last. `device`: where the nets run (`load_run`).

    `out` (created if missing) receives predictions.csv, degradation.png and one
    forecast_RACE_DRIVER.png per driver drawn: every driver given, else the first MAX_FIGURES
    of each race's final classification (`classification`). They are drawn in a staging
    directory and moved in once all are drawn, when an earlier call's files there are removed (a
    previous --driver's figures would otherwise stay beside these): a call killed while drawing
    leaves the earlier call's output as it was; a file
    this call would overwrite that no earlier call wrote (`check_predict_out`: its figures
    carry a mark, its predictions.csv its header, the CLI's metrics.json records them) is
    refused unless `force`, before the nets run. Nothing else in `out` is touched (a
    forecast_*.png of the user's stays): metrics.json is written by `lapnet race predict`.

    Returns:
        (table, metrics): one row per lap of the selected drivers; metrics as `eval_race`
        computes them on those laps, with "drivers" (the codes, None for all), "race_laps"
        (race -> the length featurised), "notes" (lines for the user: figures not drawn;
        `lapnet race predict` adds the rows its summary table leaves out) and, with `out`,
        "figures" and "written" ({"by": "lapnet race predict", "files": the names written}).

    Raises:
        LapnetError: an unknown driver, a bad `race_length`, an `out` that is a file (or inside
            one), or a file in `out` an earlier call did not write.
    """
    from lapnet.race.io import parse_drivers

    check_race_length(race_length)
    if out is not None:
        _check_out_folder(out)
        check_predict_out(out, force=force, metrics_json=False)  # refused before the run is read
    r = load_run(run, device)
    laps, report = load_laps(sources)
    drivers = parse_drivers(driver, laps, no_timed_lap=[d for rr in report.races for d in rr.drivers_dropped])
    chosen = None if drivers is None else set(drivers)
    drawn, per_race = [], {}  # (race, driver) of the figures: those given, else each race's top MAX_FIGURES
    for race, drv in classification(laps):
        if drv in (chosen or ()) or (chosen is None and per_race.get(race, 0) < MAX_FIGURES):
            drawn.append((race, drv))
            per_race[race] = per_race.get(race, 0) + 1
    if out is not None:  # the figures' names are known: refused before the nets run
        check_predict_out(out, force=force, metrics_json=False, figures=[forecast_figure_name(a, b) for a, b in drawn])
    seq, used = race_sequences(laps, race_length)
    o, tagged = run_outputs(r, seq)
    sec, half = to_seconds(seq, o["mean"], o["half90"])
    exp_sec = to_seconds(seq, o["expected"]) if "expected" in o else None
    phase_p = tagged["phase"] if tagged is not None else o.get("phase")  # post-race analysis: the tagger that reads the whole race
    rows = []
    for i, (race, drv) in enumerate(seq.keys):
        if chosen is not None and drv not in chosen:
            continue
        for t in range(int(seq.lengths[i])):
            lap = laps.loc[seq.row[i, t]]
            rows.append({
                "Race": race, "Driver": drv, "LapNumber": int(lap["LapNumber"]), "Stint": lap["Stint"],
                "Compound": lap["Compound"], "TyreLife": lap["TyreLife"], "LapTime": lap["LapTime"],
                "Scored": bool(lap["Scored"]), "InLap": bool(lap["InLap"]),
                **{f"forecast_h{h}": sec[i, t, h - 1] for h in (1, 5, 10)},
                **({f"expected_h{h}": exp_sec[i, t, h - 1] for h in (1, 5, 10)} if exp_sec is not None else {}),
                "lo90_h1": sec[i, t, 0] - half[i, t, 0], "hi90_h1": sec[i, t, 0] + half[i, t, 0],
                "forecast_from": forecast_source(bool(np.isfinite(seq.base[i, t])), r.model, float(sec[i, t, 0]),
                                                 COMPOUNDS[seq.compound[i, t]] in WET_COMPOUNDS),
                "pit_prob": float(o["pit"][i, t]),
                "phase": PHASES[int(phase_p[i, t].argmax())] if phase_p is not None else None,
                # what `race live` called at that lap (it reads only the laps so far)
                **({"phase_live": PHASES[int(o["phase_call"][i, t])]} if "phase_call" in o else {}),
            })
    table = pd.DataFrame(rows)
    sel = np.array([chosen is None or k[1] in chosen for k in seq.keys])
    keep = np.flatnonzero(sel)
    metrics = {"run": str(run), "driver": None if drivers is None else ",".join(drivers), "drivers": drivers,
               "race_length": race_length, "race_laps": used,
               **score_predictions(subset_sequences(seq, keep), take(o, keep), take(tagged, keep)),
               "cleaning": report.summary()}
    metrics["notes"] = [sprint_note(race, *v) for race, v in sprint_races(seq, used).items()]
    if drivers is not None:
        unscored = [d for d in drivers if not table.loc[table["Driver"] == d, "Scored"].any()]
        if unscored:
            metrics["notes"].append(f"{', '.join(unscored)}: no Scored lap (lap 1, in- and out-laps, neutralised, "
                                    "inaccurate and wet laps are not Scored): the figures show the laps, no MAE counts them")
    if out is not None:
        import shutil
        import tempfile

        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # no permission to create it (a file in the way was refused up front)
            raise LapnetError(f"out {out}: cannot be created ({e.strerror or e})") from None
        for stale in stale_staging(out, STAGING, STAGING_STALE):  # an earlier call killed while drawing
            shutil.rmtree(stale, ignore_errors=True)
        # everything is drawn in a staging directory first and moved in once complete, so a call
        # killed while drawing (the slow part) leaves the earlier call's files as they were; its
        # name carries this process's pid, so the next call knows it is a dead call's
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=out))
        try:
            figs = _predict_files(table, metrics, drawn, drivers, per_race, r, stage)
            for old in earlier_predict_files(out):  # this call's output alone (not a previous --driver's figures)
                old.unlink()
            for f in sorted(stage.iterdir()):
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        figs = [str(out / name) for name in figs]
        metrics["figures"] = figs
        metrics["written"] = {"by": PREDICT_COMMAND, "files": ["predictions.csv", *(Path(f).name for f in figs)]}
    return table, metrics


def _check_out_folder(out: str | Path) -> None:
    """Refuse an `out` that is a file, or lies under one, before anything is read (mkdir would
    raise FileExistsError, or NotADirectoryError, after the nets ran)."""
    out = Path(out)
    for p in (out, *out.parents):
        if not (p.exists() or p.is_symlink()):
            continue  # created when the files are written
        if not p.is_dir():
            where = "is a file" if p == out else f"lies in {p}, a file"
            raise LapnetError(f"out {out}: {where}, not a folder: predict_race writes predictions.csv and its "
                              "figures into a folder (created if missing): give a folder's path")
        return


STAGING = ".predict-staging-"  # `predict_race` draws into out/.predict-staging-XXXX, then moves the files in
STAGING_STALE = 600.0  # seconds: an older staging directory whose name has no readable pid is a killed call's, and goes with the next call


def _predict_files(table: pd.DataFrame, metrics: dict, drawn: list, drivers, per_race, r: RaceRun, out: Path) -> list[str]:
    """Write predict's predictions.csv and figures into `out`; the figures' names, in order."""
    table.to_csv(out / "predictions.csv", index=False)
    from lapnet.race.plots import plot_degradation, plot_driver

    figs = []
    groups = {key: g for key, g in table.groupby(["Race", "Driver"], sort=False)}
    if drivers is None and len(drawn) < len(groups):  # a whole grid would be 20 figures per race
        each = "" if len(per_race) == 1 else " of each race"
        metrics["notes"].append(f"figures for the first {MAX_FIGURES} of {len(groups)} drivers in the final "
                                f"classification{each} only ({', '.join(d for _, d in drawn)}): use --driver "
                                "CODE,CODE for others")
    for race, drv in (key for key in drawn if key in groups):
        fig = plot_driver(groups[(race, drv)], pit_threshold=pit_window_threshold(r))
        path = out / forecast_figure_name(race, drv)  # names from the data, made safe for a file name
        fig.savefig(path, dpi=110, metadata=PREDICT_PNG_MARK)
        figs.append(path.name)
    fig = plot_degradation(table, trend=metrics.get("stint_trend"))
    fig.savefig(out / "degradation.png", dpi=110, metadata=PREDICT_PNG_MARK)
    figs.append("degradation.png")
    return figs
