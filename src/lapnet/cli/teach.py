"""`lapnet shapes | diagrams | params | hidden`: the notebook's teaching pieces, computed.

Each command validates its arguments and calls one library function: `lapnet.shapes`,
`lapnet.diagrams`, `lapnet.diagnostics.param_count`, `lapnet.diagnostics.hidden_evolution`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from lapnet.errors import LapnetError


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise LapnetError(f"{name} must be at least 1, got {value}")
    return value


def shapes(
    arch: str = typer.Option("lstm", "--arch", help="rnn, lstm or gru."),
    input_size: int = typer.Option(10, "--input-size", help="D, features per step."),
    hidden: int = typer.Option(20, "--hidden", help="H, hidden units per direction."),
    layers: int = typer.Option(1, "--layers", help="L, stacked layers."),
    bidirectional: bool = typer.Option(False, "--bidirectional", help="Two directions per layer."),
    batch_first: bool = typer.Option(False, "--batch-first", help="(batch, seq_len, .) instead of torch's default (seq_len, batch, .)."),
    batch: int = typer.Option(3, "--batch", help="B, sequences in the batch."),
    seq_len: int = typer.Option(5, "--seq-len", help="T, time steps."),
    lengths: str = typer.Option(None, "--lengths", help="True lengths, comma-separated (one per sequence): runs a packed batch."),
    seed: int = typer.Option(0, "--seed", min=0, help="Weights and input."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Every tensor's shape and what each axis means, computed by running torch and the NumPy engine.

    Example: lapnet shapes --arch lstm --layers 2 --bidirectional --batch-first --lengths 5,3,2
    """
    from lapnet.shapes import ShapeConfig, explore_shapes, format_shapes, parse_lengths

    for name, v in (("--input-size", input_size), ("--hidden", hidden), ("--layers", layers), ("--batch", batch), ("--seq-len", seq_len)):
        _positive(name, v)
    cfg = ShapeConfig(
        arch=arch, input_size=input_size, hidden_size=hidden, num_layers=layers, bidirectional=bidirectional,
        batch_first=batch_first, batch=batch, seq_len=seq_len, lengths=parse_lengths(lengths), seed=seed,
    ).validate()
    report = explore_shapes(cfg)
    text = json.dumps(report, indent=2) if as_json else format_shapes(report)
    sys.stdout.write(text + "\n")


def params(
    input_size: int = typer.Option(100, "--input-size", help="D, features per step."),
    hidden: int = typer.Option(256, "--hidden", help="H, hidden units."),
    layers: int = typer.Option(1, "--layers", help="L, stacked layers."),
    bidirectional: bool = typer.Option(False, "--bidirectional", help="Two directions per layer."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON on stdout."),
) -> None:
    """The notebook's parameter table: its one-bias formula beside PyTorch's real counts (two biases).

    Example: lapnet params --input-size 100 --hidden 256
    """
    from lapnet.diagnostics.param_count import format_param_table, param_table

    for name, v in (("--input-size", input_size), ("--hidden", hidden), ("--layers", layers)):
        _positive(name, v)
    table = param_table(input_size, hidden, layers, bidirectional)
    sys.stdout.write((json.dumps(table, indent=2) if as_json else format_param_table(table)) + "\n")


def diagrams(
    out: Path = typer.Option(Path("runs/diagrams"), "--out", help="Directory for the PNGs (created)."),
    dpi: int = typer.Option(150, "--dpi", help="Resolution; the figures are 12 to 13.5 inches wide."),
    force: bool = typer.Option(False, "--force", help="Overwrite the figures already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print {name: {path, label_overlaps, arrow_overlaps}} as JSON on stdout."),
) -> None:
    """The notebook's four teaching diagrams as PNGs, checked for overlapping labels.

    Feedforward vs sequential, the RNN unrolled through time, the LSTM cell's data flow, and RNN vs LSTM vs GRU side by side.

    Example: lapnet diagrams --out runs/diagrams
    """
    from lapnet.cli.common import check_out_dir
    from lapnet.diagrams import FIGURES, draw_all

    _positive("--dpi", dpi)
    # a used --out is refused unless --force, as every command that writes a directory does
    written = draw_all(check_out_dir(out, force=force, writes=tuple(f"{n}.png" for n in FIGURES)), dpi=dpi)
    if as_json:
        sys.stdout.write(json.dumps(written, indent=2) + "\n")
    else:
        for w in written.values():
            clash = f"   ({len(w['label_overlaps'])} overlapping labels!)" if w["label_overlaps"] else ""
            clash += f"   ({len(w['arrow_overlaps'])} arrows through labels!)" if w["arrow_overlaps"] else ""
            sys.stdout.write(f"{w['path']}{clash}\n")


def hidden(
    out: Path = typer.Option(Path("runs/hidden"), "--out", help="Directory for hidden_states.png and metrics.json."),
    hidden_size: int = typer.Option(8, "--hidden", help="H, hidden units."),
    points: int = typer.Option(50, "--points", help="T, samples of the sine wave."),
    periods: float = typer.Option(2.0, "--periods", help="Periods of the sine wave."),
    seed: int = typer.Option(42, "--seed", min=0, help="The RNN's weights."),
    dpi: int = typer.Option(120, "--dpi", help="Resolution of hidden_states.png (11 inches wide)."),
    engine: str = typer.Option("auto", "--engine", help="numpy (lapnet.scratch), torch, or auto (numpy when present)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the figure and metrics already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json on stdout too."),
) -> None:
    """A sine wave through an untrained RNN: hidden-unit traces and heatmap (notebook section 2).

    Each unit's correlation with the input and with its derivative is measured too.

    metrics.json: engine, max_abs_diff_vs_torch (null with the torch engine: nothing compared), mean_abs_activation, saturated_share, w_hh_spectral_radius, units_following_input, units_following_derivative, units (min, max, std, corr_with_input, corr_with_derivative, saturated_share per unit).

    Example: lapnet hidden --out runs/hidden
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lapnet.cli.common import check_out_dir, emit_metrics, summary_table
    from lapnet.diagnostics.hidden_evolution import ENGINES, hidden_evolution, plot_hidden_evolution

    _positive("--hidden", hidden_size)
    _positive("--points", points)
    _positive("--dpi", dpi)
    if engine not in ENGINES:  # here, in the flag's words: hidden_evolution names its argument
        raise LapnetError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    result = hidden_evolution(hidden_size, points, periods, seed, engine)  # validates before --out is touched
    out = check_out_dir(out, force=force, writes=("hidden_states.png", "metrics.json"))
    fig = plot_hidden_evolution(result)
    fig.savefig(out / "hidden_states.png", dpi=dpi, facecolor="white")
    plt.close(fig)
    m = result["metrics"]
    emit_metrics(out, m, as_json=as_json)
    shown = {k: m[k] for k in ("engine", "max_abs_diff_vs_torch", "mean_abs_activation", "saturated_share",
                               "w_hh_spectral_radius", "units_following_input", "units_following_derivative")}
    if shown["max_abs_diff_vs_torch"] is None:  # --engine torch: nothing was compared (metrics.json: null)
        del shown["max_abs_diff_vs_torch"]
    summary_table("hidden states of an untrained RNN", shown | {"figure": str(out / "hidden_states.png")})


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("shapes")(shapes)
    app.command("params")(params)
    app.command("diagrams")(diagrams)
    app.command("hidden")(hidden)
