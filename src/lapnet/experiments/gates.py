"""Notebook Exercise 3, done properly: what a trained character model's gates do, per character.

The text runs through the model once; a forward hook on its recurrent layer captures
the layer's real input (the character embeddings) and output. The gates are then
recomputed from the weights (`lapnet.diagnostics.gates.trace_gates`), which checks that
they reproduce the model's own hidden states, and drawn as heatmaps with the characters
on the x axis, beside the hidden-state heatmap, the mean |activation| per character and
the gates' saturation statistics.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lapnet.checkpoint import atomic_write_bytes
from lapnet.diagnostics.gates import GATE_NAMES, SIGMOID_GATES, saturation, trace_gates
from lapnet.errors import LapnetError
from lapnet.experiments.result import ExperimentResult
from lapnet.host import own_torch_state

MAX_TEXT = 400  # characters; beyond this a per-character heatmap is unreadable
DEFAULT_TEXT = "To be or not to be"  # what `lapnet gates` traces when no --text is given (see default_text)


@dataclass
class GatesConfig:
    """What to show. `layer` None: the top layer; `max_units` rows per heatmap."""

    # None: DEFAULT_TEXT, or for a model lacking some of its characters a text it can read,
    # with a warning (`default_text`); a text given here is traced as it is, or refused
    text: str | None = None
    layer: int | None = None
    max_units: int = 64
    figures: bool = True  # False: only the numbers and the arrays (--export), for a text of any length
    checkpoint: str = "best"  # the run's model.safetensors, or "last": its final step's weights


def _capture(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on ids (1, T); return its recurrent layer's input and output."""
    seen: dict[str, Any] = {}

    def hook(module, args, output):
        seen["x"], seen["out"] = args[0], output[0]

    handle = model.rnn.register_forward_hook(hook)
    try:
        model.eval()
        with torch.no_grad():
            model(ids)
    finally:
        handle.remove()
    return seen["x"], seen["out"]


def gate_report(model: torch.nn.Module, vocab, cfg: GatesConfig) -> ExperimentResult:
    """Trace the gates of `model` (a torch CharLM-like module with `.rnn`) on `cfg.text`.

    Args:
        model: callable on ids (1, T), with a batch-first recurrent layer at `model.rnn`.
        vocab: maps text to ids (`encode(text, what=...)`, raising on unknown characters).
        cfg: the text, the layer, how many units to draw.

    Returns:
        ExperimentResult: metrics {"text", "arch", "layer", "max_abs_diff", "gates":
        {name: saturation stats}, "mean_abs_h_per_char", ...}; figures "gates" (LSTM/GRU),
        "hidden"; arrays for --export (per layer: gates, h, c; ids; chars).
    """
    text = cfg.text if cfg.text is not None else default_text(vocab)
    if not text:
        raise LapnetError("--text is empty: give at least one character")
    if len(text) > MAX_TEXT and cfg.figures:
        raise LapnetError(f"--text has {len(text)} characters; at most {MAX_TEXT} fit on a per-character heatmap "
                          f"(--export alone writes the states of a longer text)")
    ids = torch.from_numpy(vocab.encode(text, what="--text"))[None, :]  # (1, T)
    ids = ids.to(next(model.parameters()).device)
    rnn = model.rnn
    layer = rnn.num_layers - 1 if cfg.layer is None else cfg.layer
    if not 0 <= layer < rnn.num_layers:
        raise LapnetError(f"--layer {cfg.layer}: the model has layers 0..{rnn.num_layers - 1}")
    x, out = _capture(model, ids)  # (1, T, E), (1, T, H)
    trace = trace_gates(rnn, x)
    # the hook saw the model's real pass: the recomputed top layer must equal it too
    diff = max(trace.max_abs_diff, float(np.abs(trace.layers[-1]["h"] - out.double().cpu().numpy()).max()))
    if not diff <= 1e-4:
        raise LapnetError(f"recomputed gates do not reproduce the model's hidden states (max diff {diff:.3g})")
    rec = trace.layers[layer]
    chars = list(text)
    H = rec["h"].shape[-1]
    units = min(H, cfg.max_units)
    kind = trace.kind
    names = GATE_NAMES[kind]
    gate_stats = {g: saturation(rec[g][0], g) for g in names}
    # nan-aware: a padded step (NaN past a sequence's length) is left out, not spread over the row
    mean_abs_h = _nan_stat(np.nanmean, np.abs(rec["h"][0]), axis=1)  # (T,)

    figures = {}
    if names and cfg.figures:
        figures["gates"] = gates_figure({g: rec[g][0] for g in (*names, *(("c",) if kind == "lstm" else ()))},
                                        kind=kind, layer=layer, chars=chars, max_units=units, stats=gate_stats)
    if cfg.figures:
        figures["hidden"] = hidden_figure(rec["h"][0], mean_abs_h, kind=kind, layer=layer, chars=chars,
                                          max_units=units)

    arrays: dict[str, np.ndarray] = {"ids": ids[0].cpu().numpy(), "chars": np.array(chars)}
    for l, r in enumerate(trace.layers):
        for k, v in r.items():
            arrays[f"layer{l}_{k}"] = v[0].astype(np.float32)  # (T, H)
    metrics = {
        "experiment": "gates", "text": text, "arch": kind, "layer": layer, "layers": rnn.num_layers,
        "hidden_size": H, "max_abs_diff": diff, "reproduces_model": True,
        "gates": gate_stats,
        "mean_abs_h_per_char": [[c, float(v)] for c, v in zip(chars, mean_abs_h)],
    }
    return ExperimentResult("gates", metrics, figures, arrays)


def _width(chars: list[str]) -> float:
    return min(max(8.0, 2.5 + 0.42 * len(chars)), 40)  # wide enough for the titles even for one character


def _shown(units: int, H: int) -> str:
    return f"first {units} of {H} units" if units < H else f"{H} units"


def gates_figure(gates: dict[str, np.ndarray], *, kind: str, layer: int, chars: list[str], max_units: int,
                 stats: dict[str, dict]):
    """gates.png: one heatmap per gate (and the LSTM's cell state c), units down, characters across.

    Args:
        gates: name -> (T, H) values of one sequence, in panel order ("i", "f", "g", "o", "c" or
            "r", "z", "n"); NaN (a padded step past the sequence's length) is drawn blank.
        kind, layer: "lstm" | "gru" and the layer index, for the titles.
        chars: the T characters along x.
        max_units: rows drawn per heatmap (the first units).
        stats: name -> `saturation` statistics of the gate (for the subtitles).
    """
    from lapnet import plots

    panels = list(gates)
    H = next(iter(gates.values())).shape[-1]
    units = min(H, max_units)
    fig, axes = plots.new_figure(len(panels), 1, figsize=(_width(chars), 2.3 * len(panels) + 0.6),
                                 layout="constrained", squeeze=False)
    for ax, g in zip(axes[:, 0], panels):
        vals = np.asarray(gates[g])[:, :units].T  # (units, T)
        if g in SIGMOID_GATES:
            kw = dict(vmin=0.0, vmax=1.0, cmap="viridis", cbar_label="gate value")
            st = stats[g]
            sub = f"{st['share_below_0.1']:.0%} < 0.1, {st['share_above_0.9']:.0%} > 0.9"
        elif g == "c":
            top = float(_nan_stat(np.nanmax, np.abs(vals), default=0.0))
            # a few large cells would wash out the rest: the colour scale stops at the 98th percentile
            m = float(_nan_stat(np.nanpercentile, np.abs(vals), 98, default=0.0)) or top or 1.0
            kw = dict(vmin=-m, vmax=m, cmap="RdBu_r", cbar_label="cell value (clipped at 98th pct.)")
            sub = f"|c| up to {top:.2f}, colour scale +-{m:.2f}"
        else:
            kw = dict(vmin=-1.0, vmax=1.0, cmap="RdBu_r", cbar_label="candidate value")
            sub = f"{stats[g]['share_abs_above_0.9']:.0%} with |value| > 0.9"
        plots.heatmap(vals, xticklabels=chars, ax=ax, ylabel="unit", title=f"{_GATE_TITLES.get(g, g)} ({sub})", **kw)
        if g != panels[-1]:
            ax.set_xlabel("")  # one axis label, under the last panel
    fig.suptitle(f"{kind.upper()} layer {layer} gates per character ({_shown(units, H)})")
    return fig


def hidden_figure(h: np.ndarray, mean_abs_h: np.ndarray, *, kind: str, layer: int, chars: list[str],
                  max_units: int):
    """hidden.png: the hidden-state heatmap h (T, H) of one sequence (NaN at a padded step is
    drawn blank) above the bars of `mean_abs_h` (T,), the mean |h_t| per character."""
    from lapnet import plots

    H = h.shape[-1]
    units = min(H, max_units)
    fig, (ax1, ax2) = plots.new_figure(2, 1, figsize=(_width(chars), 6.5), layout="constrained",
                                       gridspec_kw={"height_ratios": [2, 1]})
    plots.heatmap(np.asarray(h)[:, :units].T, xticklabels=chars, ax=ax1, vmin=-1, vmax=1, ylabel="hidden unit",
                  title=f"{kind.upper()} layer {layer} hidden state h_t ({_shown(units, H)})", cbar_label="h value")
    plots.bars_per_char(np.asarray(mean_abs_h), chars, ax=ax2, title="Mean |h_t| over all units, per character",
                        ylabel="mean |activation|")
    return fig


def _nan_stat(fn, values: np.ndarray, *args, default: float = float("nan"), **kwargs):
    """`fn` (np.nanmean, np.nanmax, np.nanpercentile) of `values`, which may hold NaN at padded
    steps, without the RuntimeWarning of an all-NaN slice; an all-NaN result is `default`."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = fn(values, *args, **kwargs)
    return np.where(np.isnan(out), default, out) if np.ndim(out) else (default if np.isnan(out) else out)


# torch's GRU (which lapnet's models and engine follow) computes h' = (1 - z) * n + z * h, so its z
# is the share of h_{t-1} kept: the notebook writes h_t = (1 - z_t) * h_{t-1} + z_t * h~_t, whose z
# is the share replaced. The title says which one the heatmap shows.
_GATE_TITLES = {"i": "input gate i", "f": "forget gate f", "g": "candidate g", "o": "output gate o",
                "c": "cell state c", "r": "reset gate r",
                "z": "update gate z (torch's: 1 = keep h_{t-1}; notebook's z = 1 - this)",
                "n": "candidate n"}


def default_text(vocab, stepper=None) -> str:
    """The text traced when none is given: DEFAULT_TEXT when the model knows all its
    characters. Otherwise, with a warning (as `lapnet temperature` fits its default prime,
    `temperature.known_ending`), its longest ending the model knows when that keeps at least
    half of it; else, with `stepper`, len(DEFAULT_TEXT) characters the model writes itself,
    greedily from a random character of its vocabulary (seed 0), so that a run on another
    script (Japanese, Arabic) traces its own kind of text; without a stepper, that ending
    (or the vocabulary's first character)."""
    from lapnet.experiments.temperature import known_ending, warn_default_replaced

    ending, unknown = known_ending(vocab, DEFAULT_TEXT)
    if not unknown:
        return DEFAULT_TEXT
    if 2 * len(ending) >= len(DEFAULT_TEXT) or stepper is None:
        text = ending or vocab.chars[0]
        warn_default_replaced("--text", DEFAULT_TEXT, unknown, f"tracing {text!r}", "the text")
        return text
    from lapnet.sampling import SampleConfig, generate

    text = generate(stepper, vocab, prime="", length=len(DEFAULT_TEXT) - 1, cfg=SampleConfig(temperature=0.0),
                    seed=0)[0]
    warn_default_replaced("--text", DEFAULT_TEXT, unknown,
                          f"tracing {text!r}, {len(text)} characters the model writes itself (greedy, from a "
                          f"random start)", "the text")
    return text


@own_torch_state()
def run_gates(run: str | Path, cfg: GatesConfig | None = None, *, device: str = "cpu") -> ExperimentResult:
    """Load a text run (`lapnet text train`) onto `device` and trace its gates on `cfg.text`
    (the trace itself is NumPy float64, on the CPU); `cfg.text` None: `default_text`."""
    from dataclasses import replace

    from lapnet.text_runs import load_run

    cfg = cfg or GatesConfig()
    loaded = load_run(run, engine="torch", device=device, checkpoint=cfg.checkpoint)
    if cfg.text is None:
        cfg = replace(cfg, text=default_text(loaded.vocab, loaded.stepper()))
    result = gate_report(loaded.model, loaded.vocab, cfg)
    result.metrics.update({"run": str(run), "checkpoint": cfg.checkpoint, "step": loaded.step})
    return result


def export_states(result: ExperimentResult, path: str | Path) -> Path:
    """Write the traced arrays as an .npz (no pickled objects: plain numeric and text arrays)."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez_compressed(buf, **result.arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path
