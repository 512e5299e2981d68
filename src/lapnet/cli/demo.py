"""`lapnet demo`: the guided tour on bundled data (grown issue by issue).

Issue 2's part: the from-scratch NumPy engine agrees with torch and with finite
differences, and a NumPy LSTM learns the notebook's sine wave. The work is done by
`lapnet.scratch.tour.run_tour`; this command validates its options and presents the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lapnet.cli.common import check_out_dir, console, summary_table


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.5f}"


def register(app: typer.Typer) -> None:
    """Add `demo` to the main app."""

    @app.command()
    def demo(
        quick: bool = typer.Option(False, "--quick", help="Toy sizes: a few seconds."),
        out: Optional[Path] = typer.Option(None, "--out", help="Save metrics.json, sine_loss.png and the sine run here."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random weights and inputs."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --out directory."),
    ) -> None:
        """The main job: a guided tour of lapnet on bundled data.

        Example: lapnet demo --quick --out runs/demo
        """
        from lapnet.scratch.tour import run_tour

        if out is not None:
            out = check_out_dir(out, force=force)
        console.rule("[bold]1. The NumPy engine against torch.nn (float64, same weights, 2 layers, bidirectional)")
        res = run_tour(quick=quick, seed=seed, out=out, progress=False)
        summary_table("max |engine - torch|: outputs, final states and every gradient",
                      [{k: (f"{v:.1e}" if isinstance(v, float) else v) for k, v in r.items()} for r in res["parity"]])
        console.rule("[bold]2. Backward against central differences (float64)")
        summary_table("gradient check: every parameter, the input and the initial state(s)",
                      [{k: (f"{v:.1e}" if isinstance(v, float) else v) for k, v in r.items()} for r in res["gradcheck"]])
        sine = res["sine"]
        cfg = sine.config
        console.rule(f"[bold]3. A NumPy LSTM (H={cfg.hidden}) learns sin(t): {cfg.epochs} full-batch Adam epochs")
        evals = sine.val_epochs
        marks = sorted({1, *evals[:: max(1, len(evals) // 6)], evals[-1]})  # epochs (1-based) to show
        held = dict(zip(sine.val_epochs, sine.val_loss))
        summary_table("loss falling", [{"epoch": e, "training MSE": f"{sine.train_loss[e - 1]:.5f}",
                                        "held-out MSE": _fmt(held.get(e))} for e in marks])
        worst = max(max(r[k] for k in ("output", "final state", "dL/dx", "dL/d state0", "dL/d weights"))
                    for r in res["parity"])
        typer.echo(f"engine vs torch: max |difference| {worst:.1e}; "
                   f"gradcheck: max relative error {max(r['max rel error'] for r in res['gradcheck']):.1e}; "
                   f"sine MSE {sine.train_loss[0]:.4f} -> {sine.train_loss[-1]:.5f} in {sine.seconds:.1f} s")
        if out is not None:
            typer.echo(f"saved {out / 'metrics.json'}, {res['figure']} and the sine run in {out / 'sine'}")
