"""`lapnet shapes | diagrams | params | hidden | gru-forms | feedforward`: the notebook's
teaching pieces, computed.

Each command validates its arguments and calls one library function: `lapnet.shapes`,
`lapnet.diagrams`, `lapnet.diagnostics.param_count`, `lapnet.diagnostics.hidden_evolution`,
`lapnet.exercise1` (Exercise 1's GRU against nn.GRU) and `lapnet.experiments.feedforward`
(section 1's feedforward network beside an RNN).
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
    from lapnet.plots import save_figure

    save_figure(fig, out / "hidden_states.png", dpi=dpi, facecolor="white")  # atomic
    m = result["metrics"]
    emit_metrics(out, m, as_json=as_json)
    shown = {k: m[k] for k in ("engine", "max_abs_diff_vs_torch", "mean_abs_activation", "saturated_share",
                               "w_hh_spectral_radius", "units_following_input", "units_following_derivative")}
    if shown["max_abs_diff_vs_torch"] is None:  # --engine torch: nothing was compared (metrics.json: null)
        del shown["max_abs_diff_vs_torch"]
    summary_table("hidden states of an untrained RNN", shown | {"figure": str(out / "hidden_states.png")})


def gru_forms(
    input_size: int = typer.Option(3, "--input-size", help="D, features per step (the notebook: 3)."),
    hidden: int = typer.Option(4, "--hidden", help="H, hidden units (the notebook: 4)."),
    steps: int = typer.Option(5, "--steps", help="T, inputs in the notebook's test_seq (the notebook: 5)."),
    seed: int = typer.Option(42, "--seed", min=0, max=2**32 - 1,
                             help="np.random.seed for the notebook's weights and input, torch.manual_seed for nn.GRU."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Exercise 1: the NumPy GRU in PyTorch's form and in the notebook's textbook form against nn.GRU.

    nn.GRU's weights (torch's init, non-zero biases) are copied into lapnet.scratch.GRU in both
    forms and run in float64 on the notebook's test_seq; per step, the max |difference| of the
    hidden states from nn.GRU's. PyTorch's form agrees to rounding, the textbook form does not.
    Also prints the notebook's own cell (its init, zero biases): h_0 .. h_T.

    JSON: input_size, hidden_size, steps, seed, per_step [{t, pytorch_form, textbook_form}],
    max_abs_diff, textbook_layout_roundtrip, torch_h, notebook {hidden_states, torch_final_hidden_float32}.

    Example: lapnet gru-forms
    """
    from lapnet.exercise1 import format_gru_forms, gru_forms as run

    for name, v in (("--input-size", input_size), ("--hidden", hidden), ("--steps", steps)):
        _positive(name, v)
    report = run(input_size, hidden, steps, seed)
    sys.stdout.write((json.dumps(report, indent=2) if as_json else format_gru_forms(report)) + "\n")


def _ints(option: str, text: str) -> tuple[int, ...]:
    """"3,10,20" -> (3, 10, 20); one line naming the option for anything else."""
    try:
        values = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise LapnetError(f"{option} {text!r}: expected whole numbers, comma-separated (e.g. 3,10,40)") from None
    if min(values) < 1:
        raise LapnetError(f"{option} {text!r}: every length must be at least 1")
    return values


def feedforward(
    task: str = typer.Option("trend,spike", "--task", help="trend (Exercise 2's data), spike (a jump at one random "
                                                             "step), or both, comma-separated."),
    arch: str = typer.Option("lstm", "--arch", help="The recurrent model: rnn, lstm or gru."),
    hidden: int = typer.Option(32, "--hidden", help="The RNN's hidden units (H)."),
    mlp_hidden: int = typer.Option(32, "--mlp-hidden", help="The MLP's hidden units."),
    min_length: int = typer.Option(5, "--min-length", help="Shortest training sequence."),
    length: int = typer.Option(20, "--length", help="N: the longest training sequence and the MLP's window."),
    test_lengths: str = typer.Option("3,10,20,40,80,160", "--test-lengths", help="Lengths to test, comma-separated."),
    n_train: int = typer.Option(500, "--train", help="Training sequences (random lengths in [--min-length, --length])."),
    n_test: int = typer.Option(500, "--test", help="Fresh test sequences per test length."),
    epochs: int = typer.Option(50, "--epochs", help="The RNN's full-batch epochs (Exercise 2's 50)."),
    mlp_epochs: int = typer.Option(500, "--mlp-epochs", help="The MLP's full-batch epochs (enough to fit its training set)."),
    lr: float = typer.Option(0.01, "--lr", help="Adam learning rate, both models."),
    seed: int = typer.Option(42, "--seed", min=0, help="Seeds the data and both models."),
    threads: int = typer.Option(1, "--threads", help="CPU threads for torch and NumPy (one is fastest for these tiny models)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Section 1 measured: a fixed-window MLP beside an RNN, tested on lengths neither saw in training.

    Both learn from sequences of lengths --min-length..--length. The RNN reads any length; the
    MLP sees --length steps (values and a mask): a shorter sequence is padded, a longer one cut
    to its first or its last --length steps, and both cuts are measured. Prints the accuracy
    of each at every test length, where the RNN wins, ties (within 0.02) or loses, and the two
    models' parameter counts.

    JSON: config, tie_within, tasks {task: {train_accuracy, rows [{length, in_training, rnn,
    mlp_first, mlp_last, rnn_minus_best_mlp, winner}], rnn_params, mlp_params}}, params, seconds.

    Example: lapnet feedforward --task spike --arch gru
    """
    from lapnet.cli.common import set_threads
    from lapnet.experiments.feedforward import FeedforwardConfig, format_feedforward, run_feedforward

    tasks = tuple(t.strip() for t in task.split(","))
    for name, v in (("--hidden", hidden), ("--mlp-hidden", mlp_hidden), ("--min-length", min_length),
                    ("--length", length), ("--train", n_train), ("--test", n_test), ("--epochs", epochs),
                    ("--mlp-epochs", mlp_epochs)):
        _positive(name, v)
    if min_length > length:
        raise LapnetError(f"--min-length {min_length} is longer than --length {length}")
    if not 0 < lr < float("inf"):
        raise LapnetError(f"--lr must be a positive number, got {lr}")
    bad = [t for t in tasks if t not in ("trend", "spike")]
    if bad:
        raise LapnetError(f"--task {task!r}: expected trend, spike or both (comma-separated), got {bad[0]!r}")
    cfg = FeedforwardConfig(tasks=tasks, arch=arch, hidden=hidden, mlp_hidden=mlp_hidden, n_train=n_train, n_test=n_test,
                            min_len=min_length, max_len=length, test_lengths=_ints("--test-lengths", test_lengths),
                            epochs=epochs, mlp_epochs=mlp_epochs, lr=lr, seed=seed).validate()
    set_threads(threads)
    m = run_feedforward(cfg).metrics
    sys.stdout.write((json.dumps(m, indent=2) if as_json else format_feedforward(m)) + "\n")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("shapes")(shapes)
    app.command("params")(params)
    app.command("diagrams")(diagrams)
    app.command("hidden")(hidden)
    app.command("gru-forms")(gru_forms)
    app.command("feedforward")(feedforward)
