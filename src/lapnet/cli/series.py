"""`lapnet series train|forecast`: the notebook's sine forecaster on your own column of numbers.

Each command validates its options and calls one function of `lapnet.series`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

series_app = typer.Typer(help="Forecast your own series: train the notebook's window forecaster on a column of "
                              "numbers, score it on the held-out end against persistence (and the seasonal naive "
                              "forecast), forecast past the end.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `series` group to the main app."""
    app.add_typer(series_app, name="series")


# SeriesConfig's fields as `series train` spells them (its errors name the flags)
SERIES_FLAGS = {"arch": "--arch", "hidden_size": "--hidden", "num_layers": "--layers", "window": "--window",
                "epochs": "--epochs", "batch_size": "--batch", "horizon": "--horizon", "holdout": "--holdout",
                "minutes": "--minutes", "lr": "--lr", "season": "--season", "patience": "--patience"}


@series_app.command("train")
def train_cmd(
    file: Path = typer.Argument(..., help="CSV with a header row (or headerless columns of numbers, named 1, 2, ...), "
                                          "in time order, oldest first; .csv.gz too; - reads standard input."),
    column: Optional[str] = typer.Option(None, "--column", help="The column to forecast (needed when the file has "
                                                                 "several numeric columns)."),
    arch: str = typer.Option("lstm", "--arch", help="rnn, lstm or gru."),
    hidden: int = typer.Option(32, "--hidden", help="Hidden units per layer (H)."),
    layers: int = typer.Option(1, "--layers", help="Stacked recurrent layers."),
    window: int = typer.Option(20, "--window", help="Values the model reads to predict the next one (the notebook's 20)."),
    season: Optional[int] = typer.Option(None, "--season", help="Seasonal period (12 for monthly data, 7 for daily): "
                                                                 "adds the seasonal naive baseline (the value one season earlier)."),
    difference: bool = typer.Option(True, "--difference/--levels", help="Model the changes between values (the "
                                                                        "default: follows trends) or the values themselves "
                                                                        "(--levels, as the notebook's sine)."),
    epochs: int = typer.Option(200, "--epochs", help="Epochs at most (early stopping may end sooner)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Wall-clock budget (a finite positive number)."),
    lr: float = typer.Option(0.01, "--lr", help="Adam's peak learning rate (the notebook's 0.01)."),
    batch: int = typer.Option(64, "--batch", help="Windows per step."),
    holdout: float = typer.Option(0.3, "--holdout", help="The last part of the windows, held out in time order: its "
                                                          "first half early-stops training, its second half (seen by "
                                                          "neither) is scored. 0: train on all, as the notebook; the "
                                                          "scores are then the fit's own."),
    patience: int = typer.Option(20, "--patience", help="Epochs without a better early-stopping MSE before stopping."),
    horizon: int = typer.Option(20, "--horizon", help="Values forecast past the end for the figure and metrics.json."),
    seed: int = typer.Option(42, "--seed", min=0, help="Seeds the weights and the batch order."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(1, "--threads", help="CPU threads (these models are small: one is fastest). Another count moves the last digits of the results."),
    out: Path = typer.Option(Path("runs/series"), "--out", help="Run directory."),
    force: bool = typer.Option(False, "--force", help="Overwrite a run already in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or summary table."),
) -> None:
    """Train a forecaster on one column of FILE: windows of --window values predict the next one.

    Values are standardised with the training part's mean and sd; the last --holdout of the
    windows is held out in time order: its first half early-stops training, its second half is
    scored, beside persistence (the last value) and, with --season, the seasonal naive forecast.
    Writes model.safetensors, config.json, metrics.json and forecast.png into --out.

    Example: lapnet series train sales.csv --column units --season 12 --out runs/sales
    """
    from lapnet.cli.common import check_out_dir, emit_metrics, resolve_device, set_threads, summary_table
    from lapnet.series import SeriesConfig, check_series, plural, read_series, train_series

    set_threads(threads)
    cfg = SeriesConfig(arch=arch.lower(), hidden_size=hidden, num_layers=layers, window=window, epochs=epochs,
                       minutes=minutes, lr=lr, batch_size=batch, holdout=holdout, patience=patience, season=season,
                       difference=difference, horizon=horizon, seed=seed, device=resolve_device(device), progress=not quiet)
    cfg.validate(flags=SERIES_FLAGS)
    values, name = read_series(file, column)
    check_series(values, cfg)  # too short, or nothing to learn: refused before --out is touched
    from lapnet.series import KIND

    from lapnet.run_dir import refuse_input_as_output

    writes = ("metrics.json", "config.json", "forecast.png", "model.safetensors")
    refuse_input_as_output([file], [Path(out) / n for n in writes])  # even with --force: the series would be lost
    out = check_out_dir(out, force=force, writes=writes, holds="a run", kind=KIND)
    metrics = train_series(values, cfg, out, column=name, source=str(file))
    if not quiet:
        rows = [{"forecast": k, "MAE": v["mae"], "RMSE": v["rmse"]} for k, v in metrics["scores"].items()]
        held = metrics["stop_windows"] > 0
        what = "scored held-out value" if held else "training value"
        summary_table(f"{name}: one step ahead on the {plural(metrics['scored_windows'], what, bare=True)}", rows)
    emit_metrics(None, metrics, as_json=json_out)
    if metrics["train"]["stopped"] == "interrupted":  # the run is saved and scored; the exit says it was cut short
        raise KeyboardInterrupt


@series_app.command("forecast")
def forecast_cmd(
    run: Path = typer.Argument(..., help="A run directory written by lapnet series train."),
    file: Path = typer.Argument(..., help="The series so far (CSV, as for train; - reads standard input); the forecast "
                                          "starts after its last value."),
    column: Optional[str] = typer.Option(None, "--column", help="The column to read (default: the run's own column "
                                                                 "when the file has it)."),
    steps: int = typer.Option(20, "--steps", max=100_000,
                              help="Values to forecast, each fed back in as the next input (at most 100,000)."),
    json_out: bool = typer.Option(False, "--json", help="Print {\"column\", \"forecast\": [...]} as JSON instead of CSV."),
) -> None:
    """Forecast the next --steps values after the end of FILE; prints CSV (step,forecast) on stdout.

    Example: lapnet series forecast runs/sales sales.csv --steps 24
    """
    from lapnet.series import forecast_series, load_series_run, read_series

    _, config = load_series_run(run)
    values, name = read_series(file, column, prefer=config.get("column"))  # the run's column, if the file has it
    ahead = forecast_series(run, values, steps)
    if json_out:
        sys.stdout.write(json.dumps({"column": name, "forecast": [float(v) for v in ahead]}) + "\n")
    else:
        sys.stdout.write("step,forecast\n" + "".join(f"{i},{float(v)!r}\n" for i, v in enumerate(ahead, 1)))
