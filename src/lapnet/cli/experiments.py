"""`lapnet sine | trend | adding | gradflow | gates | temperature`: the notebook's
experiments, measured on real models.

Each command validates its options, calls one `lapnet.experiments` function, and writes
the PNG figures plus metrics.json into --out (default runs/<command>). Lists are given
comma-separated: `--lengths 50,100`; architectures as the design writes them,
`--arch rnn lstm gru`, or repeated (`--arch rnn --arch gru`), or comma-separated
(`--arch rnn,gru`, and the older `--archs rnn,gru`); trend trains one model and takes one.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from lapnet.cli.common import engine_device
from lapnet.errors import LapnetError

JSON_HELP = "Also print metrics.json on stdout."
FORCE_HELP = "Overwrite the figures and metrics already in --out."
QUIET_HELP = "No progress bars or summary table."
THREADS_HELP = ("CPU threads for torch, NumPy's OpenBLAS and the NumPy engine. These models are tiny: one thread is "
                "fastest, and far faster on a busy machine.")
# the commands that train: a thread count splits the sums of a matrix product differently
TRAIN_THREADS_HELP = (THREADS_HELP + " The thread count changes the trained numbers in their last digits (1 and 2 "
                      "threads differed in the 7th or 8th significant digit in sine, trend and adding): a seeded run "
                      "repeats exactly with the same --threads.")
DEVICE_HELP = "auto, cpu or cuda (torch engine; auto: cuda when available)."
CHECKPOINT_HELP = ("RUN's weights: best, its model.safetensors (the step with the lowest validation loss; with "
                   "--val-frac 0 the last step), or last, its final step (last.safetensors).")
RUN_DEVICE_HELP = "auto, cpu or cuda: where RUN's model runs (auto: cuda when available)."
ENGINE_HELP = "torch or numpy (lapnet.scratch, the same training loop)."
LR_HELP = "Adam learning rate, within float32's range (1.18e-38 to 3.4e38), as every command that trains."


def _threads(n: int) -> None:
    """Set torch's, OpenBLAS's and the NumPy engine's threads (`common.set_threads`). On small
    recurrent models extra threads only spin: measured on a shared 2-core machine, an
    LSTM-128 sine fit took 6x the wall time and 10x the CPU time with 2 threads instead of 1."""
    from lapnet.cli.common import set_threads

    set_threads(n)


def _list(option: str, text: str, cast=str) -> tuple:
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise LapnetError(f"{option}: give at least one value (comma-separated)")
    if not all(items):  # "50,,100" or "50,": a typo, not a request for fewer values
        raise LapnetError(f"{option} {text!r}: empty item (two commas in a row, or a comma at an end)")
    try:
        values = tuple(cast(s) for s in items)
    except ValueError:
        raise LapnetError(f"{option} {text!r}: expected comma-separated {cast.__name__} values") from None
    if cast is int:  # the bounds every integer option has (`common.INT_BOUNDS`): 2**64 crashed NumPy
        from lapnet.cli.common import INT_BOUNDS, INT_MAX

        high = INT_BOUNDS.get(option, (None, INT_MAX))[1]
        big = next((v for v in values if v > high), None)
        if big is not None:
            raise LapnetError(f"{option} {text!r}: {big} is too large (at most {high})")
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:  # each value is one model or one panel: a repeat would be dropped or run twice
        raise LapnetError(f"{option} {text!r}: {twice} is given twice")
    return values


def _archs(option: str, text: str) -> tuple[str, ...]:
    from lapnet.models.recurrent import ARCHS

    archs = tuple(a.lower() for a in _list(option, text))
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise LapnetError(f"{option}: unknown architecture {bad[0]!r}: expected one of {', '.join(ARCHS)}")
    return archs


ARCH_HELP = "Architectures: --arch rnn lstm gru, --arch rnn --arch gru or --arch rnn,gru."
ARCHS_HELP = "The same as a comma-separated list (--archs rnn,gru)."


def _arch_list(arch: list[str] | None, more: list[str] | None, archs: str | None, default: str) -> tuple[str, ...]:
    """The architectures of --arch (repeatable, or comma-separated) with the words after it
    (`--arch rnn lstm gru`: Click gives an option one value per occurrence, so the others
    arrive as the command's extra arguments, ARCH...), or of the older --archs; `default`
    when none is given."""
    if (arch or more) and archs is not None:
        raise LapnetError("give --arch or --archs, not both")
    if arch or more:
        return _archs("--arch", ",".join([*(arch or []), *(more or [])]))
    return _archs("--archs", default if archs is None else archs)


def _arch_options(default: str):
    """--arch (repeatable), its trailing words and --archs, for a command comparing architectures."""
    return (typer.Option(None, "--arch", help=f"{ARCH_HELP} Default: {default.replace(',', ' ')}."),
            typer.Argument(None, metavar="ARCH", show_default=False, help="More architectures, as after --arch."),
            typer.Option(None, "--archs", help=ARCHS_HELP))


_SINE_ARCH, _SINE_MORE, _SINE_ARCHS = _arch_options("rnn,lstm,gru")
_ADD_ARCH, _ADD_MORE, _ADD_ARCHS = _arch_options("rnn,lstm,gru")
_FLOW_ARCH, _FLOW_MORE, _FLOW_ARCHS = _arch_options("rnn,lstm,gru")


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` (its parameter name) was given on the command line."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"


def _positive(option: str, *values: int | float) -> None:
    for v in values:
        if not v > 0:
            raise LapnetError(f"{option} must be positive, got {v}")


def _checkpoint(name: str) -> None:
    if name not in ("best", "last"):
        raise LapnetError(f"--checkpoint {name}: expected best or last")


def _finish(result, out: Path, json_out: bool, quiet: bool, table: list | dict | None, title: str,
            also: tuple = (), wide: bool = False) -> None:
    from lapnet.cli.common import console, emit_metrics, summary_table

    paths = result.save(out)
    result.close()
    if not quiet:
        if table:
            summary_table(title, table, wide=wide)
        console.print("wrote " + ", ".join(str(p) for p in (*paths, *also)))
    emit_metrics(None, result.metrics, as_json=json_out)


def sine_cmd(
    hidden: str = typer.Option("2,8,32,128", "--hidden", help="LSTM hidden sizes for the left panel."),
    arch: Optional[List[str]] = _SINE_ARCH,
    arch_more: Optional[List[str]] = _SINE_MORE,
    archs: Optional[str] = _SINE_ARCHS,
    arch_hidden: int = typer.Option(32, "--arch-hidden", help="Hidden size of the architecture comparison."),
    epochs: int = typer.Option(200, "--epochs", help="Full-batch epochs (Adam)."),
    lr: float = typer.Option(0.01, "--lr", help=LR_HELP),
    horizon: int = typer.Option(100, "--horizon", help="Forecast steps past the wave, each prediction fed back in."),
    seed: int = typer.Option(42, "--seed", min=0, help="Seeds every model alike (the notebook uses 42)."),
    engine: str = typer.Option("torch", "--engine", help=ENGINE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    out: Path = typer.Option(Path("runs/sine"), "--out", help="Directory for the PNGs and metrics.json."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    threads: int = typer.Option(1, "--threads", help=TRAIN_THREADS_HELP),
) -> None:
    """The notebook's sine forecaster: hidden sizes and RNN vs LSTM vs GRU.

    sin(t) on 200 points over [0, 8*pi], windows of 20 -> next value, Adam, full
    batch. Writes loss_curves.png (two panels, log scale), forecast.png
    (multi-step, fed back) and metrics.json: {"hidden_size": {H: {final_mse,
    min_mse, forecast_mse, loss_curve, forecast}}, "architecture": {arch:
    {...}}, "table": [{model, final_mse, forecast_mse}]}.

    --arch picks the architectures compared in the right panel.

    Example: lapnet sine --hidden 8,32 --arch rnn lstm --epochs 100 --engine numpy
    """
    from lapnet.cli.common import check_out_dir
    from lapnet.experiments.sine import SineConfig, run_sine

    cfg = SineConfig(hidden_sizes=_list("--hidden", hidden, int), archs=_arch_list(arch, arch_more, archs, "rnn,lstm,gru"),
                     arch_hidden=arch_hidden, epochs=epochs, lr=lr, horizon=horizon, seed=seed, engine=engine)
    cfg.validate()
    cfg.device = engine_device(device, engine)
    _threads(threads)
    out = check_out_dir(out, force=force)
    result = run_sine(cfg, progress=not quiet)
    _finish(result, out, json_out, quiet, result.metrics["table"], "sine: final training MSE and forecast MSE")


def _one_arch(command: str, arch: list[str] | None, default: str) -> str:
    """The single architecture of a command that trains one model: a list (--arch rnn,gru) or
    a repeated --arch is refused (Click would keep the last; [0] would keep the first)."""
    archs = _archs("--arch", ",".join(arch)) if arch else (default,)
    if len(archs) > 1:
        raise LapnetError(f"{command} takes one --arch (rnn, lstm or gru), got {', '.join(archs)}: it trains one "
                          f"model; run it once per architecture")
    return archs[0]


def trend_cmd(
    ctx: typer.Context,
    arch: Optional[List[str]] = typer.Option(None, "--arch", show_default=False, metavar="<str>",
                                             help="One architecture: rnn, lstm or gru (default lstm). trend trains "
                                                  "one model: a list (--arch rnn,gru) or a second --arch is refused."),
    hidden: int = typer.Option(32, "--hidden", help="Hidden units (H)."),
    epochs: int = typer.Option(50, "--epochs", help="Full-batch epochs (Adam)."),
    lr: float = typer.Option(0.01, "--lr", help=LR_HELP),
    n_train: int = typer.Option(500, "--train", help="Training sequences."),
    n_test: int = typer.Option(100, "--test", help="Held-out test sequences."),
    length: int = typer.Option(20, "--length", help="Sequence length (the maximum with --variable-length)."),
    bidirectional: bool = typer.Option(False, "--bidirectional", help="Read each sequence both ways."),
    variable_length: bool = typer.Option(False, "--variable-length",
                                         help="Random lengths in [--min-length, --length], packed sequences."),
    min_length: int = typer.Option(5, "--min-length",
                                   help="Shortest sequence with --variable-length (without it: no effect, a warning)."),
    seed: int = typer.Option(42, "--seed", min=0, help="Seeds the data and the model."),
    engine: str = typer.Option("torch", "--engine", help=ENGINE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    out: Path = typer.Option(Path("runs/trend"), "--out", help="Directory for the PNGs and metrics.json."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    threads: int = typer.Option(1, "--threads", help=TRAIN_THREADS_HELP),
) -> None:
    """Exercise 2 solved: classify sequences as trending up or down.

    Writes trend_training.png (accuracy per epoch), trend_examples.png and
    metrics.json: {"test_accuracy", "train_accuracy", "test_loss", "target",
    "reached_target", "epochs_to_target", "curves": {train_loss, test_loss,
    test_accuracy, train_accuracy}}.

    --engine numpy trains the same model on lapnet.scratch (variable lengths
    through the engine's lengths=, the packed-sequence semantics).

    --arch takes one architecture: trend trains one model (a list is refused;
    run the command once per architecture). --min-length applies only with
    --variable-length.

    Example: lapnet trend --bidirectional --variable-length --engine numpy
    """
    from lapnet.cli.common import check_out_dir
    from lapnet.experiments.trend import TrendConfig, run_trend

    one = _one_arch("trend", arch, "lstm")
    if not variable_length and _typed(ctx, "min_length"):  # as `text train` does for --dropout with --layers 1
        import warnings

        warnings.warn(f"--min-length {min_length} does nothing without --variable-length: every sequence has "
                      f"--length {length} steps; give --variable-length to use it")
    cfg = TrendConfig(arch=one, hidden=hidden, n_train=n_train, n_test=n_test, seq_len=length,
                      min_len=min_length if variable_length else None, bidirectional=bidirectional, epochs=epochs,
                      lr=lr, seed=seed, engine=engine)
    cfg.validate()
    cfg.device = engine_device(device, engine)
    _threads(threads)
    out = check_out_dir(out, force=force)
    result = run_trend(cfg, progress=not quiet)
    m = result.metrics
    _finish(result, out, json_out, quiet, {k: m[k] for k in ("test_accuracy", "train_accuracy", "test_loss",
                                                            "epochs_to_target", "reached_target")}, "trend")


def adding_cmd(
    arch: Optional[List[str]] = _ADD_ARCH,
    arch_more: Optional[List[str]] = _ADD_MORE,
    archs: Optional[str] = _ADD_ARCHS,
    lengths: str = typer.Option("50,100,200", "--lengths", help="Sequence lengths T."),
    hidden: int = typer.Option(32, "--hidden", help="Hidden units (H)."),
    batch: int = typer.Option(64, "--batch", help="Fresh random sequences per step."),
    max_steps: int = typer.Option(1200, "--max-steps", help="Step budget per (architecture, T)."),
    eval_every: int = typer.Option(50, "--eval-every", help="Steps between test-MSE measurements."),
    lr: float = typer.Option(0.01, "--lr", help=LR_HELP),
    clip: float = typer.Option(1.0, "--clip", help="Global gradient-norm clip (0: off), as in `text train`."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Train the full budget even once solved."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds the data and the models."),
    engine: str = typer.Option("torch", "--engine", help=ENGINE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    out: Path = typer.Option(Path("runs/adding"), "--out", help="Directory for the PNGs and metrics.json."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    threads: int = typer.Option(1, "--threads", help=TRAIN_THREADS_HELP),
) -> None:
    """The adding problem: steps to reach test MSE < 0.01, per architecture and T.

    The baseline (always predicting 1) scores 0.167.

    Writes adding_mse.png (test MSE against steps, one panel per T),
    adding_steps.png (steps to solve against T) and metrics.json:
    {"baseline_mse", "solved_mse", "runs": {arch: {T: {steps_to_solve (null:
    not within --max-steps), final_test_mse, steps, test_mse, seconds}}},
    "table": [{arch, T, steps_to_solve, final_test_mse, seconds}]}. Within
    the default budget a tanh RNN does not reach 0.01; it does, several times
    slower than an LSTM, with --lr 0.001 and about 10000 (T=50) or 18000
    (T=100) steps (3.2x and 4.3x the LSTM's): python benchmarks/adding.py.

    Example: lapnet adding --lengths 50,100 --max-steps 2000 (--engine numpy:
    the same on lapnet.scratch)
    """
    from lapnet.cli.common import check_out_dir
    from lapnet.experiments.adding import AddingConfig, run_adding

    cfg = AddingConfig(archs=_arch_list(arch, arch_more, archs, "rnn,lstm,gru"), lengths=_list("--lengths", lengths, int), hidden=hidden,
                       batch_size=batch, max_steps=max_steps, eval_every=eval_every, lr=lr, clip=clip or None,
                       stop_when_solved=not keep_going, seed=seed, engine=engine)
    cfg.validate()
    cfg.device = engine_device(device, engine)
    _threads(threads)
    out = check_out_dir(out, force=force)
    result = run_adding(cfg, progress=not quiet)
    # metrics.json keeps null for "not solved"; the table says it in words
    rows = [{**r, "steps_to_solve": f"not within {max_steps}" if r["steps_to_solve"] is None else r["steps_to_solve"]}
            for r in result.metrics["table"]]
    _finish(result, out, json_out, quiet, rows, "adding problem: steps to test MSE < 0.01")


def gradflow_cmd(
    arch: Optional[List[str]] = _FLOW_ARCH,
    arch_more: Optional[List[str]] = _FLOW_MORE,
    archs: Optional[str] = _FLOW_ARCHS,
    hidden: int = typer.Option(32, "--hidden", help="Hidden units (H)."),
    length: int = typer.Option(50, "--length", help="Sequence length T (adding problem)."),
    steps: int = typer.Option(600, "--steps", help="Training steps before the 'trained' measurement (0: init only)."),
    lr: float = typer.Option(0.01, "--lr", help=LR_HELP),
    engine: str = typer.Option("both", "--engine", help="torch (autograd), numpy (lapnet.scratch) or both (compared)."),
    clip_steps: int = typer.Option(200, "--clip-steps", help="Steps of the clipping comparison (0: skip)."),
    radius: float = typer.Option(3.0, "--radius", help="W_hh spectral radius of the exploding RNN."),
    clip_norm: float = typer.Option(1.0, "--clip-norm", help="Global-norm threshold of the clipping comparison's "
                                                             "'global norm' run (positive: its 'none' run is the "
                                                             "unclipped one)."),
    clip_value: float = typer.Option(0.05, "--clip-value", help="Element-wise threshold of its 'element-wise' run "
                                                                "(positive, as --clip-norm)."),
    clip_optimizer: str = typer.Option("adam", "--clip-optimizer",
                                       help="Optimizer of the clipping comparison: adam, or sgd (plain SGD, where an "
                                            "unclipped exploding gradient sends the loss to NaN/inf)."),
    clip_lr: Optional[float] = typer.Option(None, "--clip-lr",
                                            help="Learning rate of the clipping comparison (default: --lr)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds the data and the models."),
    out: Path = typer.Option(Path("runs/gradflow"), "--out", help="Directory for the PNGs and metrics.json."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    threads: int = typer.Option(1, "--threads", help=TRAIN_THREADS_HELP),
) -> None:
    """Measured gradient flow ||dL_T/dh_t|| (LSTM: also ||dL_T/dc_t||) against T - t, W_hh spectra, clipping.

    Writes gradflow.png (init and trained, beside the notebook's 0.95^k, 0.9^k,
    0.7^k; the LSTM's cell path dash-dotted), spectrum.png, clipping.png and
    metrics.json: {"archs": {arch: {"init"|"trained": {norms, norms_numpy,
    max_abs_diff, max_rel_diff, ratio_first_to_last, decay_per_step (the ratio **
    (1 / (T - 1))), first_step_factor, decay_fit_beyond_first, spectrum; LSTM:
    norms_cell, norms_cell_numpy, cell_ratio_first_to_last (|dL/dc_1| divided
    by |dL/dc_T-1|), cell_decay_per_step, cell_over_hidden_at_1}, train_test_mse}},
    "engines_max_rel_diff", "clipping": {optimizer, lr, runs: {none | global norm |
    element-wise: {raw_grad_norm, test_mse, diverged, diverged_at_step,
    mean_cosine_value_clip, ...}}}}.

    Example: lapnet gradflow --arch rnn lstm gru --steps 100

    Example (the notebook's "loss becomes NaN; clipping fixes it"): lapnet
    gradflow --arch rnn --steps 0 --clip-optimizer sgd --clip-lr 0.1
    """
    from lapnet.cli.common import check_out_dir
    from lapnet.experiments.gradflow import GradflowConfig, run_gradflow

    cfg = GradflowConfig(archs=_arch_list(arch, arch_more, archs, "rnn,lstm,gru"), hidden=hidden, length=length, steps=steps, lr=lr,
                         engine=engine, clip_steps=clip_steps, clip_radius=radius, clip_norm=clip_norm,
                         clip_value=clip_value, clip_optimizer=clip_optimizer.lower(), clip_lr=clip_lr, seed=seed)
    cfg.validate()
    _positive("--radius", radius)
    if radius > 100:  # tanh saturates long before: past this the float64 products overflow into NaN
        raise LapnetError(f"--radius must be at most 100, got {radius}")
    _positive("--clip-norm", clip_norm)
    _positive("--clip-value", clip_value)
    _threads(threads)
    out = check_out_dir(out, force=force)
    result = run_gradflow(cfg, progress=not quiet)
    rows = []
    for a, e in result.metrics["archs"].items():
        for phase in ("init", "trained"):
            if phase in e:
                rows.append({"arch": a.upper(), "phase": phase,
                             "|dL/dh_1|/|dL/dh_T|": e[phase]["ratio_first_to_last"],
                             "per step": e[phase]["decay_per_step"],
                             "first step": e[phase]["first_step_factor"],
                             "after (fit)": e[phase]["decay_fit_beyond_first"],
                             # the LSTM's cell path, k = 1..T-1 (dL/dc_T is 0: the loss reads h_T)
                             "|dL/dc_1|/|dL/dc_T-1|": e[phase].get("cell_ratio_first_to_last", "-"),
                             "c per step": e[phase].get("cell_decay_per_step", "-"),
                             "|dL/dc_1|/|dL/dh_1|": e[phase].get("cell_over_hidden_at_1", "-"),
                             "engines diff": e[phase].get("max_rel_diff", "-")})
    clip = result.metrics.get("clipping")
    if clip and not quiet:  # each clipping run's end, in words: a divergence is a result here, not a failure
        from lapnet.cli.common import console

        for name, r in clip["runs"].items():
            if r["diverged"]:
                when = ("at step" if r["diverged_in"] == "training loss" else "after step")
                end = f"diverged, {r['diverged_in']} not finite {when} {r['diverged_at_step']}"
            else:
                end = f"finite for {cfg.clip_steps} steps, test MSE {r['final_test_mse']:.4g}"
            console.print(f"clipping ({clip['optimizer']}, lr {clip['lr']:g}) {name}: {end}")
    _finish(result, out, json_out, quiet, rows, "gradient flow (measured)", wide=True)


def gates_cmd(
    run: Path = typer.Argument(..., help="A run directory written by `lapnet text train`."),
    text: Optional[str] = typer.Option(None, "--text", show_default=False,
                                       help="Characters to feed, all in the run's vocabulary (refused otherwise). "
                                            "Default 'To be or not to be', or, for a model lacking some of its "
                                            "characters, its longest ending the model knows when that is at least "
                                            "half of it, else 18 characters the model writes itself (greedy, from "
                                            "a random start), with a warning."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Layer to draw, counted from 0 as torch's weight_ih_l0 (default: the top one)."),
    max_units: int = typer.Option(64, "--max-units", help="Units drawn per heatmap."),
    export: Optional[Path] = typer.Option(None, "--export", help="Also write every layer's gates and states to this .npz."),
    out: Path = typer.Option(Path("runs/gates"), "--out", help="Directory for the PNGs and metrics.json."),
    force: bool = typer.Option(False, "--force",
                               help="Overwrite the figures and metrics already in --out, and an existing --export file."),
    device: str = typer.Option("auto", "--device", help=RUN_DEVICE_HELP),
    checkpoint: str = typer.Option("best", "--checkpoint", help=CHECKPOINT_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    threads: int = typer.Option(1, "--threads", help=THREADS_HELP),
) -> None:
    """Exercise 3: the true LSTM/GRU gates per character of a trained model.

    The gates are recomputed from the weights and checked against the model's own hidden states.

    Writes gates.png (LSTM: i, f, g, o and the cell c; GRU: r, z, n; a vanilla RNN has
    no gates, so no gates.png, and a line on stderr says so), hidden.png (h heatmap and
    mean |h| per character) and metrics.json: {"text",
    "arch", "layer", "max_abs_diff", "reproduces_model", "gates": {name:
    {mean, share_below_0.1, share_above_0.9, ...}}, "mean_abs_h_per_char"}.
    --export states.npz: layer<k>_<gate|h|c> arrays (T, H), ids, chars.

    Example: lapnet gates runs/text --text "To be or not to be" --export
    states.npz
    """
    from lapnet.cli.common import check_out_dir
    from lapnet.experiments.gates import MAX_TEXT, GatesConfig, export_states, run_gates
    from lapnet.text_runs import check_run

    _positive("--max-units", max_units)
    _checkpoint(checkpoint)
    from lapnet.run_dir import check_file_out, refuse_run_files

    if export is not None:
        check_file_out(export, "--export")  # a file in a writable folder: said before any work
        if export.suffix != ".npz":
            raise LapnetError(f"--export {export}: expected an .npz file path (the states are written as NumPy's npz)")
        refuse_run_files(run, [export], "--export")  # never over the run's own weights or config, even with --force
    if export is not None and export.exists() and not force:  # it may be anyone's file: never replace it unasked
        raise LapnetError(f"--export {export}: already exists (use --force to overwrite it)")
    check_run(run)  # a wrong RUN (missing, a race run) is named before --out is looked at
    dev = engine_device(device)
    _threads(threads)
    refuse_run_files(run, [out / "metrics.json"])  # --out RUN --force would replace the run's own metrics.json
    out = check_out_dir(out, force=force)
    figures = export is None or text is None or len(text) <= MAX_TEXT  # a longer text: its states only, no heatmaps
    if not figures:
        import warnings

        warnings.warn(f"--text has {len(text)} characters, more than the {MAX_TEXT} a per-character heatmap holds: "
                      f"writing {export} and metrics.json, no figures")
    result = run_gates(run, GatesConfig(text=text, layer=layer, max_units=max_units, figures=figures,
                                        checkpoint=checkpoint), device=dev)
    if result.metrics.get("arch") == "rnn":  # the help promises gates.png: say why there is none
        import warnings

        made = "hidden.png (its hidden state h_t per character) and metrics.json" if figures else "metrics.json"
        warnings.warn(f"{run} is a vanilla RNN, which has no gates: no gates.png; wrote {made} instead")
    also = ()
    if export is not None:
        also = (export_states(result, export),)
        result.metrics["export"] = str(also[0])
    rows = [{"gate": g, "mean": s["mean"], "< 0.1": s.get("share_below_0.1", "-"), "> 0.9": s.get("share_above_0.9", "-"),
             "|v| > 0.9": s.get("share_abs_above_0.9", "-"), "saturated": s["share_saturated"]}
            for g, s in result.metrics["gates"].items()]
    _finish(result, out, json_out, quiet, rows, f"gate saturation, layer {result.metrics['layer']}", also)


def temperature_cmd(
    run: Optional[Path] = typer.Argument(None, help="Optional run directory (`lapnet text train`) to sample from."),
    temperatures: str = typer.Option("0.2,0.5,0.8,1.0,1.5", "--temperatures",
                                     help="Sampling temperatures (0 or below 1e-6: greedy, the argmax, as in "
                                          "`text sample`; otherwise positive and finite)."),
    prime: Optional[str] = typer.Option(None, "--prime", show_default=False,
                                        help="Text the samples continue. Default 'To be or not to b', or, for a "
                                             "model lacking one of its characters, its longest ending the model "
                                             "knows (with a warning); empty: one random character chosen by "
                                             "--seed, as `text sample`."),
    length: int = typer.Option(120, "--length", help="Characters per sample."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds the sampling."),
    device: str = typer.Option("auto", "--device", help=RUN_DEVICE_HELP),
    checkpoint: str = typer.Option("best", "--checkpoint", help=CHECKPOINT_HELP),
    out: Path = typer.Option(Path("runs/temperature"), "--out", help="Directory for the PNGs and metrics.json."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    threads: int = typer.Option(1, "--threads", help=THREADS_HELP),
) -> None:
    """Softmax at temperatures 0.2, 1.0, 2.0, and a trained model's at several.

    The notebook's figure; given RUN, also the model's real next-character distribution and
    samples at several temperatures.

    Writes temperature.png, with RUN also temperature_model.png, and
    metrics.json: {"notebook": {T: {probs, entropy_bits, top_prob}}, with
    RUN also "model": {T: {entropy_bits, top}}, "samples": {T: text}}.

    Example: lapnet temperature runs/text --temperatures 0.2,1.0,1.5
    """
    from lapnet.cli.common import check_out_dir
    from lapnet.experiments.temperature import TemperatureConfig, run_temperature

    temps = _list("--temperatures", temperatures, float)
    _checkpoint(checkpoint)
    cfg = TemperatureConfig(sample_temperatures=temps, prime=prime, length=length, seed=seed, checkpoint=checkpoint)
    cfg.validate()
    if run is not None:
        from lapnet.text_runs import check_run

        check_run(run)  # a wrong RUN (missing, a race run) is named before --out is looked at
        from lapnet.run_dir import refuse_run_files

        refuse_run_files(run, [out / "metrics.json"])  # --out RUN --force would replace the run's own metrics.json
    dev = engine_device(device)
    _threads(threads)
    out = check_out_dir(out, force=force)
    result = run_temperature(run, cfg, device=dev)
    m = result.metrics
    rows = [{"T": t, "entropy_bits": v["entropy_bits"], "top_prob": v["top_prob"]} for t, v in m["notebook"].items()]
    if "samples" in m and not quiet:
        from lapnet.cli.common import console

        for t, s in m["samples"].items():
            console.print(f"[bold]T = {t}[/bold]: {escape(repr(s))}")
    _finish(result, out, json_out, quiet, rows, "softmax of the notebook's logits")


def register(app: typer.Typer) -> None:
    """Add the experiment commands to the main app."""
    app.command("sine")(sine_cmd)
    app.command("trend")(trend_cmd)
    app.command("adding")(adding_cmd)
    app.command("gradflow")(gradflow_cmd)
    app.command("gates")(gates_cmd)
    app.command("temperature")(temperature_cmd)
