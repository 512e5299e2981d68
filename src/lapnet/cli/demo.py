"""`lapnet demo`: the guided tour on bundled data (the library: `lapnet.demo.run_demo`).

This command validates its options, runs the tour, and shows each part's tables as soon
as the part is done (progress and tables on stderr; the engine's one-line verdict and the
report's path on stdout, or with --json the demo's metrics.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from lapnet.cli.common import console, emit_metrics, summary_table


def _sci(v):
    return f"{v:.1e}" if isinstance(v, float) else v


def show_part(row, *, verdict_to_stderr: bool = False) -> None:
    """The tables of one finished part (a `lapnet.demo.PartResult`); the engine's verdict line
    goes to stdout, or to stderr when stdout carries JSON."""
    d = row.details
    if not row.ok or not d:
        return
    if row.part == "engine":
        summary_table("max |engine - torch|, every output and gradient (ref: readable cells, 1 layer)",
                      [{k: _sci(v) for k, v in r.items()} for r in d["parity"]])
        summary_table("gradient check: every parameter, the input and the initial state(s)",
                      [{k: _sci(v) for k, v in r.items()} for r in d["gradcheck"]])
        sine = d["sine"]
        evals = sine["val_epochs"]
        marks = sorted({1, *evals[:: max(1, len(evals) // 6)], evals[-1]})  # epochs (1-based) to show
        held = dict(zip(evals, sine["val_loss"]))
        summary_table("NumPy LSTM on sin(t): loss falling",
                      [{"epoch": e, "training MSE": f"{sine['train_loss'][e - 1]:.5f}",
                        "held-out MSE": f"{held[e]:.5f}" if e in held else ""} for e in marks])
        typer.echo(f"engine vs torch: max |difference| {d['max_abs_diff']:.1e}; "
                   f"gradcheck: max relative error {d['max_rel_error']:.1e}; "
                   f"sine MSE {sine['train_loss'][0]:.4f} -> {sine['train_loss'][-1]:.5f} in {sine['seconds']:.1f} s",
                   err=verdict_to_stderr)
    elif row.part == "text":
        summary_table("samples after 'To be' (the same seed, three temperatures)",
                      [{"T": t, "sample": " ".join(text.split())} for t, text in d["samples"].items()])
    elif row.part == "sine":
        summary_table("sine: training MSE and the 50-step fed-back forecast MSE",
                      [{"arch": a.upper(), "training MSE": _sci(v["final_mse"]),
                        "forecast MSE": _sci(v["forecast_mse"])} for a, v in d.items()])
    elif row.part == "gradflow":
        summary_table(f"gradient flow over T={d['length']}: ||dL/dh_1|| / ||dL/dh_T|| and the per-step factor",
                      [{"arch": a.upper(), **{f"{p} ratio": _sci(v["ratio_first_to_last"]) for p, v in e.items()},
                        **{f"{p} factor": f"{v['decay_per_step']:.3f}" for p, v in e.items()}}
                       for a, e in d["archs"].items()])
    elif row.part == "race":
        for where in ("sim", "real"):
            if where in d:
                summary_table(f"race ({'simulated' if where == 'sim' else 'real 2023'}): lap-time MAE (s) "
                              "1, 5 and 10 laps ahead",
                              [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()
                                if k in ("forecaster", "mae_h1", "mae_h5", "mae_h10", "n_h1")}
                               for r in d[where]["summary"]])


def register(app: typer.Typer) -> None:
    """Add `demo` to the main app."""

    @app.command()
    def demo(
        quick: bool = typer.Option(False, "--quick", help="Toy sizes: about 10 s of CPU (what the tests run)."),
        out: Path = typer.Option(Path("runs/demo"), "--out", help="The demo's directory (refused if not empty)."),
        force: bool = typer.Option(False, "--force", help="Overwrite a previous demo in --out."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of every part."),
        f1_data: Optional[Path] = typer.Option(None, "--f1-data",
                                               help="Folder of real race CSVs (default $LAPNET_F1_DATA)."),
        as_json: bool = typer.Option(False, "--json", help="Print the demo's metrics.json on stdout (the report's "
                                                           "path then goes to stderr)."),
    ) -> None:
        """The main job: a guided tour of lapnet on bundled data (about 30 s of CPU).

        Engine vs torch, a character LSTM on Hamlet, sine and trend experiments,
        gradient flow, a race forecaster and tagger vs the baselines; then a summary
        table and the path of an HTML report (every figure, every table).

        Example: lapnet demo --quick --out runs/demo-quick
        """
        from lapnet.demo import run_demo

        if f1_data is not None and not f1_data.is_dir():
            raise typer.BadParameter(f"{f1_data} is not a directory", param_hint="--f1-data")
        summary = run_demo(out, quick=quick, force=force, seed=seed, f1_data=f1_data,
                           on_part=lambda row: show_part(row, verdict_to_stderr=as_json))
        console.rule("[bold]summary")
        summary_table(f"lapnet demo{' --quick' if quick else ''}: every part, in {summary['seconds']:.0f} s",
                      [{"part": r["part"], "result": r["result"], "seconds": f"{r['seconds']:.0f}"}
                       for r in summary["parts"]])
        console.print(f"[dim]every figure and table is in the report below: open it in a browser "
                      f"(`lapnet report {escape(str(out))}` rebuilds it)[/dim]")
        if as_json:
            print(f"report: {summary['report']}", file=sys.stderr)
            emit_metrics(None, json.loads((out / "metrics.json").read_text()), as_json=True)
        else:
            typer.echo(f"report: {summary['report']}")
        if not summary["ok"]:
            failed = ", ".join(r["part"] for r in summary["parts"] if not r["ok"])
            console.print(f"[red]failed parts: {failed}[/red] (their error is in the summary and the report)")
            raise typer.Exit(1)
