"""`lapnet race ...`: Formula 1 lap tables, simulator, forecasts and pit calls.

`train`, `predict`, `eval` and `live` validate their arguments and call one function of
`lapnet.race.training` / `.prediction` / `.evaluation` / `lapnet.race.live`; the data commands
(`simulate`, `calibrate`) come from cli/race_data.py.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from lapnet.errors import LapnetError
from lapnet.race.outputs import MAX_FIGURES

race_app = typer.Typer(help="Formula 1: lap tables, simulator, lap-time forecasts, pit calls.", no_args_is_help=True)

MASKS_HELP = (
    "Every lap is context for the model, but the loss and the metrics count only Scored laps: timed, "
    "IsAccurate, not deleted, no safety car / VSC / red flag (TrackStatus 4-7), not an in-lap, out-lap "
    "or lap 1, not a restart after a red flag (each driver's laps up to the first timed one), dry compound. A forecast for lap t+k counts when lap t and lap t+k are both Scored and in "
    "the same stint ('all' metrics: lap t+k timed, any status). The pit call ('pits within 3 laps': an "
    "in-lap among the next 3 laps) is scored on every lap after which the driver has another lap, "
    "neutralised, in- and out-laps included; its AUC without in-laps is also reported."
)

RACE_LAPS_HELP = (
    "Race length in laps for the race-fraction features, or 'estimate' (from the race's pace, as "
    "`race live` does on a feed). Default: the table's last lap, right for a finished race; give it "
    "for a race still running."
)


DEVICE_HELP = ("auto, cpu or cuda: where the nets run (auto: cuda when available). They are small: the CPU is "
               "usually as fast. (`race live` has no --device: one step per lap is too small for a GPU to pay.)")


def register(app: typer.Typer) -> None:
    """Add the `race` group (its data commands come from cli/race_data.py)."""
    from lapnet.cli import race_data

    race_data.register(race_app)
    app.add_typer(race_app, name="race")


def _check_files(paths: List[Path]) -> None:
    if not paths:
        raise LapnetError("give at least one lap table (CSV or Parquet)")
    for p in paths:
        _check_file(p)


STDIN_READERS = "race live, text train, text eval, series train and series forecast"


def refuse_stdin(p: Path | str) -> None:
    """A lap table given as `-`: this command reads files only (a table is read more than once), say so
    in one line (it was "-: no such file")."""
    if str(p) == "-":
        raise LapnetError(f"-: this command does not read standard input: give the lap table as a CSV or Parquet "
                          f"file (- reads standard input in {STDIN_READERS} only)")


def _check_file(p: Path | str) -> None:
    refuse_stdin(p)
    if Path(p).is_dir():
        raise LapnetError(f"{p}: is a directory, not a lap table (give CSV or Parquet files)")
    if not Path(p).exists():
        raise LapnetError(f"{p}: no such file")
    if not Path(p).is_file():  # a pipe, a process substitution <(...), a device: a lap table is read more than once
        raise LapnetError(f"{p}: not a regular file (a pipe or a device): give a CSV or Parquet file; "
                          "lapnet race live reads a stream on stdin or from a pipe: ... | lapnet race live RUN")


def _cleaning_line(metrics: dict) -> None:
    """One stderr line: what the cleaning kept (each race's account is in metrics.json)."""
    from lapnet.distributed import rank
    from lapnet.race.clean import headline

    if rank() != 0:  # under torchrun every rank cleans the same laps: one line for the job, as the tables
        return
    print(f"cleaning: {headline(metrics['cleaning'])} (each race: 'cleaning' in metrics.json, or "
          "lapnet race clean LAPS)", file=sys.stderr)


def _forecast_rows(metrics: dict) -> list[dict]:
    """The MAE table's rows ('-' where a horizon has no Scored pair: a driver without Scored laps)."""
    return [{k: (round(v, 3) if isinstance(v, float) else "-" if v is None else v) for k, v in row.items()
             if not k.startswith("rmse")} for row in metrics.get("summary", [])]


def _refuse_own_inputs(run: Path, laps: List[Path], outputs: List[Path]) -> None:
    """Refuse, even with --force, outputs that are the run's own files (RUN/metrics.json when
    --out is RUN) or one of the lap tables read: either would be lost for good."""
    from lapnet.run_dir import refuse_input_as_output, refuse_run_files

    refuse_run_files(run, outputs)
    refuse_input_as_output(laps, outputs)


def _out_is_a_directory(out: Optional[Path], writes: str) -> None:
    """Refuse an --out named like the file the command writes into it (`--out evq.json` would
    become a directory called evq.json), unless such a directory exists already."""
    if out is not None and out.suffix.lower() in (".json", ".csv", ".png") and not out.is_dir():
        raise LapnetError(f"--out {out}: a directory, which receives {writes}: give a folder "
                          f"(e.g. --out {out.with_suffix('')})")


@race_app.command("train", help=f"Train the lap-time forecaster and pit caller on real (or simulated) races.\n\n{MASKS_HELP}\n\n"
                  "Example: lapnet race train ../shared/data/f1/*.csv --out runs/race")
def train_cmd(
    laps: List[Path] = typer.Argument(..., help="Lap tables: FastF1 exports (CSV/Parquet), one race each or with a Race column."),
    out: Path = typer.Option(Path("runs/race"), "--out", help="Run directory."),
    hidden: int = typer.Option(64, "--hidden", help="Hidden units (H)."),
    arch: str = typer.Option("gru", "--arch", help="gru or lstm."),
    epochs: int = typer.Option(80, "--epochs", help="Maximum epochs (early stopping on held-out races)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help=(
        "Wall-clock budget for the whole command: split between the nets still to train (the members, then "
        "the phase taggers); loading and the taggers' simulated races count against it; each net takes at "
        "least one step.")),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate."),
    batch: int = typer.Option(32, "--batch", help="Driver sequences per step."),
    patience: int = typer.Option(20, "--patience", help="Stop after this many epochs without a better validation loss."),
    pretrain_sim: int = typer.Option(0, "--pretrain-sim", help="Pretrain on N simulated races calibrated to LAPS first (for 20 epochs, "
                                      "RaceTrainConfig.pretrain_epochs; --epochs is the real races' budget)."),
    phase_sim: int = typer.Option(20, "--phase-sim", help=(
        "Laps without Phase labels (real races): learn the push / conserve / pit-window calls from N simulated "
        "races calibrated to LAPS (about 3 s each); 0: no phase calls.")),
    horizon_power: float = typer.Option(2.0, "--horizon-power",
                                        help="The forecast loss weighs horizon k by 1/k^P: 2 favours the next lap, 0 weighs all 10 alike."),
    seed: int = typer.Option(0, "--seed", min=0),
    threads: int = typer.Option(1, "--threads", help="torch threads; the net is small, 1 is as fast and never contends. Another count moves the last digits of the results."),
    device: str = typer.Option("cpu", "--device", help=(
        "auto, cpu or cuda: where the nets train (auto: cuda when available). These nets are small "
        "and step lap by lap, so the CPU is usually as fast; eval and predict take their own --device, "
        "live runs on the CPU.")),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    from lapnet.cli.common import check_out_dir, emit_metrics, resolve_device, summary_table
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    _check_files(laps)
    if arch not in ("gru", "lstm"):
        raise LapnetError(f"--arch {arch}: expected gru or lstm")
    for name, v in (("--hidden", hidden), ("--epochs", epochs), ("--batch", batch), ("--patience", patience)):
        if v < 1:
            raise LapnetError(f"{name} must be at least 1, got {v}")
    for name, v in (("--pretrain-sim", pretrain_sim), ("--phase-sim", phase_sim)):
        if v < 0:
            raise LapnetError(f"{name} must be >= 0, got {v}")
        from lapnet.race.simulate import check_simulation_size  # here: the CLI's start stays light

        try:  # refused before any work, not after training the forecaster
            check_simulation_size(v)
        except LapnetError as e:
            raise LapnetError(f"{name} {v}: {e}") from None
    if threads < 1:
        raise LapnetError(f"--threads must be at least 1, got {threads}")
    from lapnet.train import check_lr

    check_lr(lr, "--lr")  # float32's normal range, as every command: 1e300 left the run marked unfinished
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise LapnetError(f"--minutes must be a positive number, got {minutes}")
    if not 0 <= horizon_power <= 4:
        raise LapnetError(f"--horizon-power must be between 0 and 4, got {horizon_power}")
    dev = resolve_device(device)
    cfg = RaceTrainConfig(hidden_size=hidden, arch=arch, epochs=epochs, minutes=minutes, lr=lr, batch_size=batch,
                          patience=patience, pretrain_sim=pretrain_sim, phase_sim=phase_sim, horizon_power=horizon_power, seed=seed,
                          progress=not quiet, device=dev)
    cfg.validate()  # what the checks above miss is refused before --out is touched
    check_out_dir(out, force=force, kind="lapnet-race")
    import torch

    torch.set_num_threads(threads)
    metrics = train_race(laps, out, cfg)
    emit_metrics(out, metrics, as_json=json_out)
    if not quiet:
        _cleaning_line(metrics)
    if not quiet and metrics.get("validation"):
        summary_table(f"{metrics['validation_label']}: MAE (s), Scored laps", _forecast_rows(metrics["validation"]), wide=True)


@race_app.command("eval", help=f"Forecaster vs baselines (MAE/RMSE at 1, 5, 10 laps, by compound), the pit call's AUC and the "
                  "phase calls (macro-F1 on simulated laps; on real laps, which have no labels, checked against real "
                  f"stops and each lap's pace against its stint).\n\n{MASKS_HELP}\n\n"
                  "Example: lapnet race eval runs/race ../shared/data/f1/2023_italian_R.csv --json")
def eval_cmd(
    run: Path = typer.Argument(..., help="Run directory from `lapnet race train`."),
    laps: List[Path] = typer.Argument(..., help="Lap tables to evaluate on (races the run did not train on)."),
    out: Optional[Path] = typer.Option(None, "--out", help=(
        "Directory to write metrics.json into (created if missing; default: RUN/eval). A metrics.json there "
        "that an earlier eval did not write is refused without --force.")),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No table."),
    race_laps: Optional[str] = typer.Option(None, "--race-laps", help=RACE_LAPS_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace a metrics.json in --out that an earlier eval did not write."),
) -> None:
    from lapnet.cli.common import check_out_dir, emit_metrics, resolve_device, summary_table
    from lapnet.race.outputs import EVAL_COMMAND, check_eval_out
    from lapnet.race.evaluation import eval_race

    length = _race_length(race_laps)
    dev = resolve_device(device)
    _check_files(laps)
    _out_is_a_directory(out, "metrics.json")
    dest = out or Path(run) / "eval"
    check_eval_out(dest, force=force)  # refused now, not after the evaluation
    _refuse_own_inputs(run, laps, [dest / "metrics.json"])  # even with --force
    if out is not None:
        check_out_dir(out, must_be_new=False)
    metrics = eval_race(run, laps, race_length=length, device=dev)
    dest = check_out_dir(dest, must_be_new=False)
    metrics["written"] = {"by": EVAL_COMMAND, "files": ["metrics.json"]}
    emit_metrics(dest, metrics, as_json=json_out)
    if not quiet:
        _cleaning_line(metrics)
        _length_line(metrics, length)
        summary_table("lap-time MAE (s) on Scored laps, same laps for every forecaster", _forecast_rows(metrics), wide=True)
        p = metrics["pit_within_3"]
        summary_table("pit within 3 laps", {k: "-" if v is None else v for k, v in {
            "AUC": p["auc"], "tyre-life-only AUC": p["tyre_life_auc"], "top-decile precision": p["top_decile_precision"],
            "base rate": p["base_rate"]}.items()})
        _fresh_table(metrics)
        _trend_table(metrics)
        _phase_table(metrics)
        if "by_race" in metrics:
            summary_table("by race: MAE (s) forecaster / persistence, pit AUC",
                          [{"race": race + (" (in-sample)" if row.get("in_sample") else ""), "n_h1": row["n_h1"],
                            **{f"h{h}": _pair(row[f"mae_h{h}"], row[f"persistence_h{h}"]) for h in (1, 5, 10)},
                            "pit_auc": row["pit_auc"]} for race, row in metrics["by_race"].items()], wide=True)
        held = metrics.get("held_out")
        if held:
            summary_table(f"held-out races only ({len(held['races'])} of {len(metrics['races'])}; the tables above mix in "
                          "the in-sample ones): MAE (s) forecaster / persistence, pit AUC",
                          [{"races": ", ".join(held["races"]), "n_h1": held["n_h1"],
                            **{f"h{h}": _pair(held[f"mae_h{h}"], held[f"persistence_h{h}"]) for h in (1, 5, 10)},
                            "pit_auc": held["pit_auc"]}], wide=True)


@race_app.command("gates", short_help="The forecaster's gates at pit stops: the notebook's F1 analogy, measured.", help=(
    "Trace the run's GRU (LSTM) gates over each driver's laps and measure the notebook's analogy: is the update gate z "
    "low (the state overwritten: h' = (1-z)*n + z*h) on out-laps, the first lap of a new stint, against other laps, "
    "and the reset gate r; does the hidden state carry tyre life (a ridge probe, leave-races-out, beside the net's "
    "inputs). Every member of the ensemble is measured; the tables, gates.csv and the figures (mean z and r per lap, "
    "stints coloured by compound, stops dashed) are the first member's. Figures: one per driver given with --driver, "
    f"else each race's first {MAX_FIGURES} of the classification. In --out, an earlier gates call's files are replaced; a file of "
    "the names it writes that none wrote is refused without --force.\n\n"
    "Example: lapnet race gates runs/race ../shared/data/f1/2023_italian_R.csv --driver VER"))
def gates_cmd(
    run: Path = typer.Argument(..., help="Run directory from `lapnet race train`."),
    laps: List[Path] = typer.Argument(..., help="Lap tables (CSV/Parquet), one race each or with a Race column."),
    driver: Optional[str] = typer.Option(None, "--driver", help=(
        "Only these drivers (numbers and figures): codes in any case or car numbers, comma-separated: VER,HAM or 1,44.")),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for metrics.json, gates.csv and the figures (default: RUN/gates)."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No tables."),
    force: bool = typer.Option(False, "--force", help="Replace files of the names gates writes that no earlier gates call wrote."),
) -> None:
    from lapnet.cli.common import check_out_dir, console, emit_metrics, summary_table
    from lapnet.race.gates import check_gates_out, race_gates_report, report_tables
    from lapnet.race.io import parse_drivers

    parse_drivers(driver)  # an empty --driver is refused before anything is read
    _check_files(laps)
    _out_is_a_directory(out, "metrics.json, gates.csv and figures")
    dest = out or Path(run) / "gates"
    check_gates_out(dest, force=force)
    _refuse_own_inputs(run, laps, [dest / "metrics.json", dest / "gates.csv"])  # even with --force
    if out is not None or Path(run).is_dir():  # a missing RUN is refused by race_gates_report, naming it
        check_out_dir(dest, must_be_new=False, writes=("metrics.json", "gates.csv"), create=False)
    _, metrics = race_gates_report(run, laps, driver=driver, out=dest, force=force)
    emit_metrics(dest, metrics, as_json=json_out)
    if not quiet:
        _cleaning_line(metrics)
        for title, rows in report_tables(metrics):
            summary_table(title, rows, wide=True)
        figs = metrics.get("figures", [])
        console.print(f"figures: {', '.join(figs)}" if len(figs) <= 6 else f"figures: {len(figs)} gates_RACE_DRIVER.png in {dest}",
                      soft_wrap=True, markup=False)
        for note in metrics["notes"]:
            console.print(f"note: {note}", soft_wrap=True, markup=False)


def _fresh_table(metrics: dict) -> None:
    """Forecasts from out-laps, the start and restarts (the stint has no Scored lap yet): MAE
    beside the two baselines that need no Scored lap, coverage, laps without a forecast."""
    from lapnet.cli.common import summary_table

    block, info = (metrics.get("forecast") or {}).get("fresh") or {}, metrics.get("fresh_start") or {}
    if not block or not info.get("origins"):
        return
    cov = info.get("interval90_coverage") or {}
    rows = [{"forecaster": name, **{h: "-" if r[h]["mae"] is None else round(r[h]["mae"], 3) for h in ("h1", "h5", "h10")},
             "n_h1": r["h1"]["n"]} for name, r in block.items()]
    rows.append({"forecaster": "90% coverage", **{h: "-" if cov.get(h) is None or cov[h] != cov[h] else round(cov[h], 3)
                                                  for h in ("h1", "h5", "h10")}, "n_h1": ""})
    summary_table("out-laps, the start and restarts: MAE (s)", rows, wide=True)
    print(f"out-laps, the start and restarts: {info['origins']} laps whose stint has no Scored lap yet, "
          f"{info['no_forecast']} without a forecast (no lap of the race had shown its pace, or wet tyres); of "
          f"{info['forecasts']} forecasts, {info['faster_than_fastest_lap']} faster than the race's fastest lap and "
          f"{info['slower_than_1_3x_fastest']} slower than 1.3 times it", file=sys.stderr)


def _pair(a: float | None, b: float | None) -> str:
    """'0.412/0.455' ('-' for a horizon without Scored pairs)."""
    return "/".join("-" if v is None else f"{v:.3f}" for v in (a, b))


def _phase_table(metrics: dict) -> None:
    """The phase calls' scores: macro-F1 on simulated laps, the real-lap checks otherwise."""
    from lapnet.cli.common import summary_table

    if "phase_macro_f1" in metrics:
        summary_table("phase calls, macro-F1 against the simulator's truth", metrics["phase_macro_f1"])
    checks = metrics.get("phase_checks")
    if checks:
        summary_table("phase calls on real laps: against real stops and the laps' pace (no labels exist)",
                      [{"call": name, "pit_window AUC": c["pit_window_auc"], "pit_window precision": c["pit_window_precision"],
                        "push s": c["pace_s"]["push"], "conserve s": c["pace_s"]["conserve"],
                        "push/conserve AUC": c["push_vs_conserve_auc"],
                        "next lap AUC": c["next_lap_push_vs_conserve_auc"]}
                       for name, c in checks.items() if name != "note"], wide=True)


def _trend_table(metrics: dict) -> None:
    """Degradation forecast against the laps: s per lap over the next 10 laps, by compound."""
    from lapnet.cli.common import summary_table

    trend = metrics.get("stint_trend") or {}
    if not trend.get("by_compound"):
        return
    def ci(r: dict) -> str:
        iv = (r.get("gap_ci95") or {}).get("forecaster")
        return "-" if iv is None else f"[{iv[0]:+.3f}, {iv[1]:+.3f}]"  # none below 2 stints

    rows = [{"compound": c, "n": r["n"], "stints": r["stints"], "actual": r["actual"], "forecast": r["forecaster"],
             **({"expected": r["expected"]} if "expected" in r else {}), "actual - forecast, 95%": ci(r)}
            for c, r in [*trend["by_compound"].items(), ("all", trend["all"])]]
    summary_table("stint trend: s per lap over the next 10 laps (+ slower: wear beats fuel); "
                  "the interval resamples stints", rows, wide=True)


@race_app.command("predict", help=f"Per-lap forecasts, 90% intervals, pit calls and phases; a table and figures.\n\n{MASKS_HELP}\n\n"
                  f"Figures: one per driver given with --driver, else for the first {MAX_FIGURES} of the final classification "
                  "(most laps, then the Position on the last lap), and degradation.png. In --out, an earlier "
                  "predict's files are replaced; a file predict would overwrite (predictions.csv, metrics.json, "
                  "degradation.png, a forecast figure) that no earlier predict wrote is refused without --force; "
                  "files of other names are never touched.\n\n"
                  "Example: lapnet race predict runs/race ../shared/data/f1/2023_italian_R.csv --driver VER,HAM")
def predict_cmd(
    run: Path = typer.Argument(..., help="Run directory from `lapnet race train`."),
    laps: Path = typer.Argument(..., help="One lap table (CSV/Parquet)."),
    driver: Optional[str] = typer.Option(None, "--driver", help=(
        "Only these drivers: codes in any case or car numbers (FastF1's DriverNumber), comma-separated: "
        f"VER,HAM or 1,44. Default: every driver in the table, figures for the top {MAX_FIGURES} of the classification.")),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for predictions.csv, figures and metrics.json (default: RUN/predict)."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No table."),
    race_laps: Optional[str] = typer.Option(None, "--race-laps", help=RACE_LAPS_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help=(
        "Overwrite files in --out of the names predict writes even when no earlier predict wrote them "
        "(files of other names are never touched).")),
) -> None:
    from lapnet.cli.common import check_out_dir, console, emit_metrics, resolve_device, summary_table
    from lapnet.race.io import parse_drivers
    from lapnet.race.outputs import PREDICT_COMMAND, check_predict_out
    from lapnet.race.prediction import predict_race

    length = _race_length(race_laps)
    dev = resolve_device(device)
    parse_drivers(driver)  # an empty --driver is refused before anything is read
    _check_files([laps])
    _out_is_a_directory(out, "predictions.csv, figures and metrics.json")
    dest = out or Path(run) / "predict"
    check_predict_out(dest, force=force)
    _refuse_own_inputs(run, [laps], [dest / "metrics.json", dest / "predictions.csv"])  # even with --force
    if out is not None or Path(run).is_dir():  # a missing RUN is refused by predict_race, before anything is made
        check_out_dir(dest, must_be_new=False, writes=("predictions.csv", "metrics.json"))
    table, metrics = predict_race(run, laps, driver=driver, out=dest, race_length=length, device=dev, force=force)
    show, note = predict_rows(table, metrics.get("drivers"))
    if note:
        metrics["notes"].insert(0, note)
    metrics["written"] = {"by": PREDICT_COMMAND, "files": [*metrics["written"]["files"], "metrics.json"]}
    emit_metrics(dest, metrics, as_json=json_out)
    if not quiet:
        _cleaning_line(metrics)
        _length_line(metrics, length)
        several = show["Race"].nunique() > 1 if len(show) else False
        rows = [{**({"race": r.Race} if several else {}), "driver": r.Driver, "lap": r.LapNumber,
                 "tyre": f"{r.Compound[:1]}{r.TyreLife:.0f}", "time": r.LapTime, "next": _cell(r.forecast_h1),
                 "+5": _cell(r.forecast_h5), "+10": _cell(r.forecast_h10), "pit<=3": f"{r.pit_prob:.2f}", "phase": r.phase or "-",
                 **({"live": r.phase_live} if "phase_live" in table.columns else {})} for r in show.itertuples()]
        summary_table(f"forecasts (s) -> {dest}/predictions.csv; pit<=3: P(stop within 3 laps)", rows, wide=True)
        # no table for a driver without Scored pairs (a note says so): every cell would be '-'
        if any(v is not None for row in metrics.get("summary", []) for k, v in row.items() if k.startswith("mae")):
            summary_table("lap-time MAE (s) on Scored laps ('-': no Scored pair at that horizon)", _forecast_rows(metrics),
                          wide=True)
        _trend_table(metrics)
        console.print(f"figures: {', '.join(metrics.get('figures', []))}", soft_wrap=True, markup=False)
        for note in metrics.get("notes", []):
            console.print(f"note: {note}", soft_wrap=True, markup=False)


PIT_NOW_HELP = (
    "What if the driver pits now: a stop called as lap N ends (lap N+1 is the in-lap, N+2 the out-lap) onto a new "
    "set, against staying out and against stopping 1-3 laps later. Staying out: the run's forecast of laps N+1 to "
    "N+10. New tyres: laps N+3 to N+12 from the run's FreshStart, the model of the laps after real stops, read on "
    "the out-lap the stop would make. The stop: in-lap plus out-lap, the two stay-out laps plus what the race's "
    "stops so far cost (green: against the stopping drivers' racing pace; called under a safety car or VSC: the "
    "stops under one, against the cars nearest on the road, a rough guide: see the guide). Per set: that stop cost, the "
    "new tyres' first lap (N+3) with its 90% band, the gain per lap, stopping minus staying out over laps N+1 to "
    "N+10 (< 0: the stop has paid for itself), the laps to pay the stop back at that gain (an extrapolation), and "
    "boxing now minus boxing 1, 2 or 3 laps later over the same laps (< 0: boxing now is ahead; the later set is "
    "then fresher for what follows). Everything stops at the chequered flag, is at racing pace and uses only laps "
    "that ended before lap N's end. By default one new set, whichever compound (the three dry compounds' mean; "
    "while the two-compound rule binds, the mean of the compounds that meet it): "
    "--compound soft,hard adds a compound's own column, what drivers ran after the stops teams chose onto it in the "
    "training races (not a tyre model; on real stops no better than the mean: docs/guide/race.md). A race of "
    "sprint length (its laps times its reference lap under half a Grand Prix's 88 minutes) gets no two-compound "
    "rule, and a note. Needs a run with a FreshStart.\n\n"
    "Example: lapnet race pit-now runs/race race.csv --driver VER --lap 20 --compound all")


@race_app.command("pit-now", short_help="What if the driver pits now: new-tyre laps against staying out.", help=PIT_NOW_HELP)
def pit_now_cmd(
    run: Path = typer.Argument(..., help="Run directory from `lapnet race train`."),
    laps: Path = typer.Argument(..., help="One race's lap table (CSV/Parquet)."),
    driver: str = typer.Option(..., "--driver", help="One driver: a code in any case or a car number."),
    lap: Optional[int] = typer.Option(None, "--lap", help=(
        "The lap at whose end the stop is called (default: the driver's last lap in the table: now, in a race "
        "still running).")),
    compound: Optional[str] = typer.Option(None, "--compound", help=(
        "The sets to stop onto, comma-separated: any (a new set, whichever compound: the default), soft, medium, hard, "
        "or all (any and the three).")),
    race_laps: Optional[str] = typer.Option(None, "--race-laps", help=RACE_LAPS_HELP),
    race: Optional[str] = typer.Option(None, "--race", help=(
        "The race to ask about when the table holds several (its Race column, any case); a table without a Race "
        "column holds one race, named by its file's stem.")),
    json_out: bool = typer.Option(False, "--json", help="Print the what-if as JSON on stdout (no tables)."),
) -> None:
    from lapnet.checkpoint import json_text
    from lapnet.cli.common import console, summary_table
    from lapnet.race.io import parse_drivers
    from lapnet.race.whatif import pit_now_race

    length = _race_length(race_laps)
    parse_drivers(driver)  # an empty --driver is refused before anything is read
    compounds = _dry_compounds(compound)
    if lap is not None and lap < 1:
        raise LapnetError(f"--lap must be at least 1, got {lap}")
    _check_files([laps])
    res = pit_now_race(run, laps, driver=driver, lap=lap, compounds=compounds, race_length=length, race=race)
    if json_out:
        sys.stdout.write(json_text(res, indent=2) + "\n")
        return
    _cleaning_line({"cleaning": res["cleaning"]})
    _length_line(res, length)
    n = res["stop_cost_stops"]
    basis = f"{n} such stop{'' if n == 1 else 's'} so far" if n > 0 else "no such stop yet: the prior from the 15 real races"
    how = (f"what the race's stops under a safety car or VSC cost against the cars nearest on the road ({basis}; a rough "
           "guide: on the real races such stops cost 12 to 25 s, quartiles)" if res["under_safety_car"]
           else f"what the race's green stops cost against racing laps ({basis})")
    console.print(f"{res['driver']} boxes on lap {res['lap'] + 1}, called after lap {res['lap']} on {res['compound'].lower()} "
                  f"tyres {res['tyre_life']:.0f} laps old, {res['laps_to_flag']} laps to the flag; in-lap + out-lap "
                  f"{res['in_out_s']:.1f} s: the stay-out laps plus {res['stop_cost_s']:.1f} s, {how}", soft_wrap=True, markup=False)
    back = res.get("rejoin")
    if back is not None:
        stops = lambda c: f"{c['stops']} stop{'' if c['stops'] == 1 else 's'}"  # noqa: E731
        passed = ", ".join(f"{c['driver']} ({c['gap_s']:.1f} s, {stops(c)})" for c in back["passed_by"]) or "nobody"
        ahead = back["ahead_of"]
        after = (f"; he stays ahead of {ahead['driver']} ({ahead['gap_s']:.1f} s behind, {stops(ahead)}: "
                 f"{ahead['margin_s']:.1f} s to spare)" if ahead else "")
        console.print(f"on the road, as the gaps behind him stood after lap {back['gaps_after_lap']} (stops so far in "
                      f"brackets): he rejoins behind {passed}{after}", soft_wrap=True, markup=False)
        if back["neutralised"]:
            console.print(f"note: lap {back['gaps_after_lap']} or {back['gaps_after_lap'] + 1} ran under a safety car, VSC "
                          "or red flag: the field bunches up behind it (or has just restarted), so the order behind him "
                          "holds, the gaps do not", soft_wrap=True, markup=False)
    # ANY: whichever compound, the three's mean (the rule's allowed ones while it binds); '*': a stop that leaves the rule unmet
    name = lambda c, ok=True: ("new set" if c == "ANY" else c) + ("" if ok else " *")  # noqa: E731
    summary_table("lap times (s)", [{name(k): (_cell(round(v, 3)) if isinstance(v, float) else v) for k, v in row.items()}
                                    for row in res["laps"]], wide=True)
    r2 = lambda v: f"{v:.2f}" if isinstance(v, float) and math.isfinite(v) else "-"  # noqa: E731
    end = res["lap"] + min(10, res["laps_to_flag"])

    def payback(v: float) -> str:
        return r2(v) if not math.isfinite(v) or v <= res["laps_to_flag"] - 2 else "after the flag"

    summary_table(f"per set (s): lap {res['lap'] + 3} is the first on the new set; delta: stopping minus staying out by "
                  f"lap {end}; later: boxing now minus boxing 1 / 2 / 3 laps later, by lap {end} and carried to the flag",
                  [{"set": name(p["compound"], p["meets_rule"]), f"lap {res['lap'] + 3}": f"{r2(p['first_lap'])} ±{r2(p['first_lap_half90'])}",
                    "stop cost": r2(p["stop_cost"]), "gain/lap": r2(p["gain_per_lap"]), "delta": r2(p["delta"]),
                    "payback laps": payback(p["payback_laps"]),
                    f"later, by lap {end}": " / ".join(r2(v) for v in p["now_vs_later"]),
                    "later, to the flag": " / ".join(r2(v) for v in p["now_vs_later_to_flag"])}
                   for p in res["compounds"]], wide=True)
    if any(p["compound"] != "ANY" for p in res["compounds"]):
        console.print("note: a compound's column is what drivers ran after the stops teams chose onto it (not a tyre "
                      "model): on real stops it forecasts the laps no better than 'new set', the compounds' mean",
                      soft_wrap=True, markup=False)
    if not all(p["meets_rule"] for p in res["compounds"]):
        console.print("note: * a stop onto a compound he has already run leaves the two-compound rule to another stop, "
                      "which these numbers do not price", soft_wrap=True, markup=False)
    carry = ("what the earlier set's extra laps of age cost on every lap to the flag, by the run's tyre wear (its "
             "calibration on the training races)" if res["to_flag_by"] == "tyre_wear" else
             "the two new sets' mean gap per lap to the flag (a run trained before runs kept their tyre wear)")
    console.print(f"note: payback extrapolates the mean gain; 'to the flag' carries {carry}, if neither stops again; no "
                  "rival is modelled", soft_wrap=True, markup=False)
    for note in res["notes"]:
        console.print(f"note: {note}", soft_wrap=True, markup=False)


def _dry_compounds(value: str | None) -> tuple[str, ...]:
    """--compound of pit-now: 'soft,hard' -> ('SOFT', 'HARD'), 'any' -> ('ANY',) (a new set,
    whichever: the default), 'all' -> ANY and the three dry compounds."""
    from lapnet.race.whatif import ANY, CHOICES

    if value is None:
        return (ANY,)
    items = [v.strip().upper() for v in value.split(",") if v.strip()]
    items = [c for v in items for c in (CHOICES if v == "ALL" else (v,))]
    bad = [v for v in items if v not in CHOICES]
    if bad or not items:
        raise LapnetError(f"--compound {value!r}: choose from any, soft, medium, hard or all (comma-separated)")
    return tuple(dict.fromkeys(items))


SHOW_LAPS, SHOW_ROWS = 3, 40  # the summary table `lapnet race predict` prints: each driver's last laps, at most this many rows


def _cell(v: float) -> float | str:
    """A forecast for the on-screen table: '-' where there is none (no lap of the race showed its pace yet)."""
    return v if math.isfinite(v) else "-"


def predict_rows(table: pd.DataFrame, driver: str | list[str] | None) -> tuple[pd.DataFrame, str | None]:
    """The rows of `predict_race`'s table the summary shows (every lap of one driver; of several,
    each one's last SHOW_ROWS / n laps; else each driver's last SHOW_LAPS laps; at most the last
    SHOW_ROWS), and a note saying what it leaves out (None when nothing is left out)."""
    drivers = [driver] if isinstance(driver, str) else driver
    if drivers and len(drivers) > 1:
        each = max(SHOW_LAPS, SHOW_ROWS // len(drivers))
        shown = table.groupby("Driver", sort=False).tail(each)
    else:
        shown = table if drivers else table.groupby("Driver").tail(SHOW_LAPS)
    shown = shown.iloc[-SHOW_ROWS:]
    if len(shown) == len(table):
        return shown, None
    if drivers and len(drivers) > 1:
        what = f"each driver's last {each} laps" + (f" (the last {len(shown)} rows)" if len(shown) < len(
            table.groupby("Driver").tail(each)) else "")
    else:
        what = f"the last {len(shown)} rows" if drivers else f"each driver's last {SHOW_LAPS} laps" + (
            f" (the last {len(shown)} rows)" if len(shown) < len(table.groupby("Driver").tail(SHOW_LAPS)) else "")
    return shown, f"{len(table) - len(shown)} more rows in predictions.csv (shown: {what})"


def _length_line(metrics: dict, length: int | str) -> None:
    """One stderr line: the race length each race's race-fraction features used."""
    from lapnet.cli import one_line  # race names come from the data

    used = metrics.get("race_laps") or {}
    if used:
        how = {"file": "the table's last lap", "estimate": "estimated from the race's pace"}.get(str(length), "as given")
        print(one_line("race length: " + ", ".join(f"{r} {n} laps" for r, n in used.items()) + f" ({how})"),
              file=sys.stderr)


def _race_length(value: str | None) -> int | str:
    """--race-laps of eval and predict: a number of laps, 'estimate', or None (the file's last lap)."""
    if value is None:
        return "file"
    if value.strip().lower() == "estimate":
        return "estimate"
    try:
        n = int(value)
    except ValueError:
        raise LapnetError(f"--race-laps: a number of laps or 'estimate', got {value!r}") from None
    if n < 1:
        raise LapnetError(f"--race-laps must be at least 1, got {n}")
    return n


@race_app.command("live", short_help="Follow a race lap by lap: one JSON line per lap (forecast, interval, pit call, phase).", help=(
    "Follow a race lap by lap: reads CSV lines (header first) from FILE or stdin, prints one JSON line per lap "
    "(forecast, 90% interval, pit-within-3 probability, phase). Each driver's state is carried: one step per lap. "
    "The phase is the run's live call; for a run trained on real races, push and conserve come from a tagger "
    "learnt on calibrated simulated races and the pit window from the pit call. "
    "Laps must come in the order they end (session Time): a finished FILE is replayed in that order (FastF1's "
    "Laps.to_csv lists them driver by driver; a file without Time lap by lap, as predict orders it); on stdin or "
    "with --follow, a feed out of that order is warned once (a count when the stream ends), and --reorder SECONDS "
    "puts a feed whose laps come up to that late in order. One race at a time: a table holding several (a Race column) needs --race; a feed without one that "
    "runs into another race stops with an error. A duplicate, a changed re-send (of the driver's last lap or an earlier one), an out-of-order lap, a lap "
    "number implausibly far ahead of the field or a line whose field count differs from the header's is "
    "skipped with a warning on stderr naming its input line; a header line again (files concatenated) is "
    "skipped, one with other columns stops the stream. A driver first seen after the grid joins, with a "
    "warning, as do a feed that starts after lap 1 and a gap in a driver's laps. FastF1's rows after the "
    "chequered flag and of drivers without a timed lap (batch cleaning drops them too) are counted in one "
    "line each. With --follow a truncated or replaced FILE stops the stream (start again to read it anew). "
    "With --follow a FILE not there yet is waited for (live may start before the feed), and --catch-up says what "
    "to do with the laps already in it (a restarted process). "
    "The input is CSV text (UTF-8; convert a Parquet table with `lapnet race clean X.parquet --out X.csv`).\n\n"
    "Example: lapnet race live runs/race race7.csv (a finished race; a race in progress, its laps in the "
    "order they end: tail -n +1 -f feed.csv | lapnet race live runs/race --race-laps 51)"))
def live_cmd(
    run: Path = typer.Argument(..., help="Run directory from `lapnet race train`."),
    file: str = typer.Argument("-", help="A CSV file, or - for stdin."),
    follow: bool = typer.Option(False, "--follow", help=(
        "Keep reading a growing file (like tail -f); a file not there yet is waited for; stop with Ctrl-C.")),
    race_laps: Optional[int] = typer.Option(None, "--race-laps", help=(
        "Scheduled race length. Default: for a complete FILE (no --follow), its last lap number; "
        "for stdin or --follow, estimated from the race's reference lap (a Grand Prix lasts about "
        "88 min at green-flag pace), with a warning naming the estimate: pit-now and its laps_to_flag "
        "depend on it (Singapore 2023: 52 laps for 62).")),
    poll: float = typer.Option(0.5, "--poll", help=(
        "Seconds between reads of a growing file (--follow), 0.01 to 3600. It sets most of the time from a lap "
        "written to its line: half of it on average (a step takes a few ms).")),
    reorder: float = typer.Option(0.0, "--reorder", metavar="SECONDS", help=(
        "Put a feed whose laps come a little out of order back in the order they ended: each lap is held until "
        "the feed's latest Time is SECONDS past its own (or the input ends, or has been idle SECONDS), then "
        "processed in Time order; a re-send of a lap still held replaces it. Every line then waits about SECONDS "
        "more. 0 (the default): each lap as it comes, with a warning when one came late.")),
    catch_up: str = typer.Option("print", "--catch-up", metavar="print|mark|skip", help=(
        "With --follow, the laps already in FILE when live started (a restarted process reads them again, with "
        "the same calls): print them as any lap (default), mark every line with \"catch_up\" (true on those), or "
        "skip printing them (still read: the state is the same).")),
    driver: Optional[str] = typer.Option(None, "--driver", help=(
        "Print only these drivers' laps: three-letter codes in any case or FastF1 driver numbers (the "
        "DriverNumber column), comma-separated: VER,HAM or 1,44. Every lap is still read: a lap's features "
        "depend on the whole field. A driver on no row once the field has crossed the line is refused then.")),
    race: Optional[str] = typer.Option(None, "--race", help=(
        "The race to follow when the table or feed holds several (its Race column, e.g. from "
        "`lapnet race clean a.csv b.csv --out both.csv`); live follows one race.")),
    pit_now: bool = typer.Option(False, "--pit-now", help=(
        "Add 'pit_now' to every lap: what if the driver boxes on the next lap, for a new set (ANY) and each dry "
        "compound: the stop's cost, the new set's laps to the flag, the gain per lap, stopping minus staying out "
        "over the next 10 laps, the laps to pay the stop back, boxing now minus boxing 1-3 laps later (by lap N+10 "
        "and carried to the flag), the compounds the two-compound rule still needs, and the cars he would rejoin "
        "behind; as `lapnet race pit-now` (docs/guide/race.md). Needs a run with a FreshStart.")),
) -> None:
    import os

    from lapnet.race.live import DriverFilter, check_catch_up, check_poll, check_reorder, follow_race, is_pipe

    if follow:
        check_poll(poll)  # before the files are looked at
    check_reorder(reorder)
    check_catch_up(catch_up, follow)
    only = None if driver is None else DriverFilter(driver)
    if race_laps is not None and race_laps < 1:
        raise LapnetError(f"--race-laps must be at least 1, got {race_laps}")
    waited = follow and file != "-" and not os.path.lexists(file)  # live started before the feed: waited for
    if file != "-" and not is_pipe(file) and not waited:  # a pipe (<(...), a FIFO) is read as it comes, like stdin
        _check_file(file)
    if follow and file == "-":
        raise LapnetError("--follow needs a FILE (stdin is followed anyway)")
    import torch

    torch.set_num_threads(1)  # one lap is one tiny step: a thread pool only adds latency
    with _stopped_by_signal() as stopped:
        follow_race(run, file, follow=follow, race_laps=race_laps, poll=poll, drivers=only, race=race,
                    pit_now=pit_now, reorder=reorder, catch_up=catch_up)
    if stopped:
        # follow_race ends the stream at Ctrl-C (what it held back said, the JSON lines printed
        # kept) and returns: exit as every other command does when interrupted, 130 and one line
        raise KeyboardInterrupt


@contextlib.contextmanager
def _stopped_by_signal() -> Iterator[list[int]]:
    """Around `follow_race`: SIGINT and SIGTERM both end the stream as Ctrl-C does (a
    KeyboardInterrupt where it reads), and the list yielded records that one came. Without it
    SIGTERM killed the process silently (exit 143) and an interrupted stream exited 0, so a
    script could not tell a stream stopped by a signal from one that ended."""
    import signal

    came: list[int] = []

    def stop(signum, frame):  # noqa: ANN001  (signal's own signature)
        came.append(signum)
        raise KeyboardInterrupt

    try:  # a signal ignored from the start (a shell's background job: SIGINT) stays ignored
        old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)
               if signal.getsignal(sig) is not signal.SIG_IGN}
    except ValueError:  # not the main thread (a library caller's worker): signals are not ours to catch
        yield came
        return
    try:
        yield came
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@race_app.command("fetch")
def fetch_cmd(
    year: int = typer.Argument(..., help="Championship year (2018 on: FastF1's lap timing)."),
    event: str = typer.Argument(..., help="Grand Prix name, matched loosely ('Monza', 'Italian Grand Prix'), or round number."),
    session: str = typer.Option("R", "--session", help="R (Race) or S (Sprint); practice and qualifying are refused."),
    out: Path = typer.Option(..., "--out", help="Lap table to write: .csv or .parquet."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="FastF1's cache folder (created if missing; default: FastF1's own)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
    json_out: bool = typer.Option(False, "--json", help="Print what was fetched as JSON on stdout."),
) -> None:
    r"""Download one race's laps with FastF1 (pip install 'lapnet\[f1]') into a lap table every race command reads.

    The file is FastF1's `session.laps` as CSV (`to_csv(index=False)`: 31 columns, durations
    like 0 days 00:01:37.167000) or Parquet, like the races in ../shared/data/f1. Only lap
    timing, track status and race-control messages are loaded (no telemetry, no weather).
    A sprint is fetched too, but it has no mandatory stop: the pit call is not meant for it.

    Example: lapnet race fetch 2023 Monza --out monza.csv --cache ~/.cache/fastf1
    """
    from lapnet.cli import one_line  # what FastF1 returned (names, messages) is data, shown escaped
    from lapnet.cli.common import emit_metrics, summary_table
    from lapnet.race.fetch import fetch_race

    where: str | int = int(event) if event.strip().isdigit() else event  # '14' is round 14
    info = fetch_race(year, where, session, out=out, cache=cache, force=force)
    for w in info["warnings"]:
        print(f"lapnet: warning: {one_line(w)}", file=sys.stderr)
    shown = {k: v for k, v in info.items() if k not in ("hint", "note", "warnings") and v is not None}
    summary_table(f"fetched -> {info['out']}", shown)
    print(one_line(info["hint"]), file=sys.stderr)
    if info["note"]:
        print(f"note: {one_line(info['note'])}", file=sys.stderr)
    emit_metrics(None, info, as_json=json_out)
