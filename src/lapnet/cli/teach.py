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
    seed: int = typer.Option(0, "--seed", help="Weights and input."),
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


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("shapes")(shapes)
    app.command("params")(params)
