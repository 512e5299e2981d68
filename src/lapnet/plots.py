"""matplotlib figures for the experiments and diagnostics.

Every function takes `ax=None` (or `axes=None` for multi-panel figures): given axes it
draws into them, otherwise it makes its own figure (`new_figure`: outside pyplot, see there).
Each returns the Figure. Titles, axis labels with units, legends; nothing here computes a
result, it only draws numbers the experiments measured.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

ARCH_COLORS = {"RNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}


def save_figure(fig, path, **kwargs) -> None:
    """`fig.savefig(path, **kwargs)`, atomically: drawn in memory, written to a temp file in the
    same folder and renamed over `path` (`lapnet.checkpoint.atomic_write_bytes`), so a command
    killed while drawing leaves the earlier figure whole, never a truncated one. The format
    follows the name's extension (png by default), as savefig's does."""
    import io
    from pathlib import Path

    from lapnet.checkpoint import atomic_write_bytes

    kwargs.setdefault("format", (Path(path).suffix.lstrip(".").lower() or "png"))
    buf = io.BytesIO()
    fig.savefig(buf, **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=None, layout=None, **kwargs):
    """`plt.subplots(nrows, ncols, figsize=, layout=, **kwargs)` without pyplot: (the Figure,
    its axes as plt.subplots returns them), on an Agg canvas of its own.

    pyplot keeps every figure it makes open until plt.close: in a notebook kernel a library
    call's figures piled up (26 after 13 run_sine calls, matplotlib's "More than 20 figures"
    warning, memory that was never freed), and the user's next plt.show() drew them. A Figure
    made here is freed with its last reference; returned, it still shows in Jupyter, and
    `fig.savefig` writes it as before. The library makes every figure of its own here.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)  # what pyplot's Agg (and Jupyter's inline) backend gives: fig.canvas.draw() works
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _axes(ax, figsize=(7, 4.5)):
    if ax is None:
        return new_figure(figsize=figsize, layout="constrained")
    return ax.figure, ax


def _color(label: str):
    return ARCH_COLORS.get(label.split()[0].upper())


def loss_curves(curves: Mapping[str, Sequence[float]], *, ax=None, title: str = "Training loss",
                xlabel: str = "epoch", ylabel: str = "MSE", logy: bool = True, hline: float | None = None,
                hline_label: str | None = None, x: Sequence[float] | None = None,
                vline: float | None = None, vline_label: str | None = None):
    """One line per curve (x = index + 1, or the given `x`), log y by default; an optional
    horizontal reference line and an optional vertical mark (e.g. the saved step)."""
    fig, ax = _axes(ax)
    for label, ys in curves.items():
        ys = np.asarray(ys, dtype=float)
        xs = np.arange(1, len(ys) + 1) if x is None else np.asarray(x, dtype=float)[: len(ys)]
        ax.plot(xs, ys, lw=1.8, label=label, color=_color(label), marker="o" if x is not None and len(ys) <= 30 else None, ms=3)
    if hline is not None:
        ax.axhline(hline, color="gray", ls="--", lw=1.2, label=hline_label)
    if vline is not None:
        ax.axvline(vline, color="tab:purple", ls=":", lw=1.6, label=vline_label)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    return fig


def loss_curves_two_panel(left: Mapping[str, Sequence[float]], right: Mapping[str, Sequence[float]], *,
                          left_title: str, right_title: str, ylabel: str = "MSE", axes=None):
    """The notebook's two-panel loss figure (log scale): left and right curve families."""
    if axes is None:
        fig, axes = new_figure(1, 2, figsize=(12, 4.5), layout="constrained")
    else:
        fig = axes[0].figure
    loss_curves(left, ax=axes[0], title=left_title, ylabel=ylabel)
    loss_curves(right, ax=axes[1], title=right_title, ylabel=ylabel)
    return fig


def forecast_plot(t: np.ndarray, observed: np.ndarray, t_future: np.ndarray, truth: np.ndarray,
                  forecasts: Mapping[str, Sequence[float]], *, title: str = "Multi-step forecast", ax=None):
    """Observed wave, its true continuation (a wide gray band, so that forecasts lying on it
    stay visible), and each model's fed-back forecast."""
    fig, ax = _axes(ax, figsize=(12, 4.5))
    ax.plot(t, observed, color="black", lw=1.5, label="observed (training) wave")
    ax.plot(t_future, truth, color="gray", lw=6, alpha=0.35, label="true continuation")
    extra = iter(["tab:orange", "tab:purple", "tab:brown", "tab:olive"])
    used: set = set()
    for label, ys in forecasts.items():
        color = _color(label)
        if color is None or color in used:
            color = next(extra, None)
        used.add(color)
        ax.plot(t_future, ys, lw=1.6, label=f"{label} forecast", color=color)
    ax.axvline(t[-1], color="gray", lw=1, ls="--")
    ax.set(title=title, xlabel="t (radians)", ylabel="sin(t)")
    ax.set_ylim(-2.4, 1.6)  # room below the wave for the legend
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="lower left", ncol=3)
    return fig


def accuracy_curves(curves: Mapping[str, Sequence[float]], *, ax=None, title: str = "Test accuracy",
                    xlabel: str = "epoch", target: float | None = None):
    """Accuracy against epochs, starting at epoch 0 (before training), with a target line."""
    fig, ax = _axes(ax)
    for label, ys in curves.items():
        ax.plot(np.arange(len(ys)), ys, "o-", ms=3, lw=1.8, label=label)
    if target is not None:
        ax.axhline(target, color="gray", ls="--", lw=1.2, label=f"target {target:.2f}")
    ax.set(title=title, xlabel=xlabel, ylabel="accuracy (fraction correct)")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    return fig


def steps_to_solve(table: Mapping[str, Mapping[int, int | None]], *, budget: int, ax=None,
                   title: str = "Steps to solve (test MSE < 0.01)"):
    """Training steps each architecture needed at each sequence length T; runs that did not
    solve within the budget are drawn as hollow markers at the budget, labelled. The y axis
    is linear from 0 unless the values span more than 30x (then log, with labelled ticks)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = _axes(ax)
    for label, by_T in table.items():
        Ts = sorted(int(T) for T in by_T)
        ys = [by_T[T] if by_T[T] is not None else np.nan for T in Ts]
        color = _color(label)
        if any(by_T[T] is not None for T in Ts):  # a filled entry only for an arch that solved somewhere
            ax.plot(Ts, ys, "o-", lw=1.8, ms=7, label=label, color=color)
        miss = [T for T in Ts if by_T[T] is None]
        if miss:
            ax.plot(miss, [budget] * len(miss), "o", ms=9, mfc="none", color=color,
                    label=f"{label}: not solved within {budget} steps")
    ax.axhline(budget, color="gray", ls=":", lw=1)
    solved = [v for by_T in table.values() for v in by_T.values() if v is not None]
    low = min(solved, default=budget)
    if budget / max(low, 1) > 30:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(0, budget * 1.08)
    Ts_all = sorted({int(T) for by_T in table.values() for T in by_T})
    ax.set_xticks(Ts_all)
    ax.set(title=title, xlabel="sequence length T (steps)", ylabel="training steps (batches)")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def gradient_flow(curves: Mapping[str, Sequence[float]], *, ax=None, title: str = "Gradient flow",
                  analytic: Sequence[float] = (), normalise: bool = True, styles: Mapping[str, str] | None = None,
                  divide_by: Mapping[str, float] | None = None):
    """||dL_T/dh_t|| against distance T - t (log y). With `normalise`, each curve is divided
    by its value at distance 0, so that the notebook's analytic factor^k curves (dashed
    gray) can be drawn beside it on the same scale; a curve named in `divide_by` is divided
    by that value instead (the LSTM's cell path ||dL_T/dc_t||, whose k = 0 point is NaN, by
    the same model's ||dL_T/dh_T||, so the two paths share the scale). NaN points are not drawn."""
    fig, ax = _axes(ax)
    styles = styles or {}
    divide_by = divide_by or {}
    longest = 1
    for label, ys in curves.items():
        ys = np.asarray(ys, dtype=float)
        if normalise and label in divide_by and divide_by[label] > 0:
            ys = ys / divide_by[label]
        elif normalise and ys[0] > 0:
            ys = ys / ys[0]
        longest = max(longest, len(ys))
        ax.plot(np.arange(len(ys)), ys, styles.get(label, "-"), lw=1.8, label=label, color=_color(label))
    k = np.arange(longest)
    for f in analytic:
        ax.plot(k, float(f) ** k, ls="--", lw=1, color="gray", alpha=0.8)
        ax.annotate(f"{f}^k", (k[-1], float(f) ** k[-1]), fontsize=8, color="gray",
                    xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_yscale("log")
    grad = "||dL_T/dh_t||, ||dL_T/dc_t||" if divide_by else "||dL_T/dh_t||"
    ylabel = f"{grad} / ||dL_T/dh_T||" if normalise else grad
    ax.set(title=title, xlabel="distance T - t (steps back in time)", ylabel=ylabel)
    ax.set_xlim(0, longest * 1.08)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def eigenvalues(eigs: Mapping[str, np.ndarray], *, ax=None, title: str = "Eigenvalues of W_hh"):
    """Eigenvalues in the complex plane with the unit circle (|lambda| = 1: neither growth nor decay)."""
    fig, ax = _axes(ax, figsize=(5.5, 5.5))
    th = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(th), np.sin(th), color="gray", lw=1, ls="--", label="unit circle")
    markers = iter("ox^sd")
    for label, ev in eigs.items():
        ev = np.asarray(ev)
        ax.plot(ev.real, ev.imag, next(markers, "o"), ms=5, alpha=0.75, mfc="none",
                label=f"{label} (radius {np.abs(ev).max():.2f})")
    ax.set_aspect("equal")
    ax.set(title=title, xlabel="real part", ylabel="imaginary part")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def heatmap(values: np.ndarray, *, xticklabels: Sequence[str] | None = None, ax=None, title: str = "",
            ylabel: str = "unit", vmin: float | None = None, vmax: float | None = None, cmap: str = "RdBu_r",
            cbar_label: str = "activation"):
    """values (rows, T) as an image; characters (or steps) along x."""
    fig, ax = _axes(ax, figsize=(12, 4))
    im = ax.imshow(values, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if xticklabels is not None:
        _char_ticks(ax, xticklabels)
        ax.set_xlabel("input character")
    else:
        ax.set_xlabel("time step")
    ax.set(title=title, ylabel=ylabel)
    fig.colorbar(im, ax=ax, label=cbar_label, pad=0.01)
    return fig


def _char_ticks(ax, chars: Sequence[str]) -> None:
    """One tick per character; upright, or turned when a U+XXXX label would overlap its neighbours."""
    labels = [_visible(c) for c in chars]
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=9, family="monospace", rotation=90 if any(len(x) > 1 for x in labels) else 0)


def _visible(c: str) -> str:
    """A character as a tick label: whitespace as a visible sign, and a character the label
    font has no glyph for as U+XXXX (drawn, it would be an empty box and cost a warning)."""
    c = {" ": "␣", "\n": "⏎", "\t": "⇥"}.get(c, c)
    return c if has_glyph(c) else f"U+{ord(c):04X}" if len(c) == 1 else c


@functools.lru_cache(maxsize=4)
def _charmap(family: str) -> frozenset[int]:
    """The code points the font matplotlib picks for `family` can draw."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(font_manager.FontProperties(family=[family]))
    return frozenset(FT2Font(path).get_charmap())


def has_glyph(c: str, family: str = "monospace") -> bool:
    """Whether the font used for `family` draws the character `c` (a control character,
    which no font draws, counts as missing)."""
    return len(c) != 1 or (c.isprintable() and ord(c) in _charmap(family))


def safe_text(text: str, family: str = "sans-serif") -> str:
    """`text` with every character the `family` font cannot draw written as U+XXXX (titles)."""
    return "".join(c if c.isspace() or has_glyph(c, family) else f"U+{ord(c):04X}" for c in text)


def bars_per_char(values: np.ndarray, chars: Sequence[str], *, ax=None, title: str = "", ylabel: str = ""):
    """One bar per input character."""
    fig, ax = _axes(ax, figsize=(12, 3))
    ax.bar(range(len(chars)), values, color="steelblue", alpha=0.85)
    _char_ticks(ax, chars)
    ax.set(title=title, xlabel="input character", ylabel=ylabel)
    ax.set_xlim(-0.6, len(chars) - 0.4)
    ax.grid(True, alpha=0.3, axis="y")
    return fig


def temperature_bars(probs: Mapping[float, np.ndarray], labels: Sequence[str], *, axes=None,
                     title: str = "How temperature reshapes the next-character distribution",
                     entropies: Mapping[float, float] | None = None):
    """The notebook's figure: one bar chart of softmax(z / T) per temperature T. The panel
    titles give the entropy: of `probs` itself, or `entropies[T]` when only the top few
    characters of a larger distribution are drawn."""
    n = len(probs)
    if axes is None:
        fig, axes = new_figure(1, n, figsize=(4.6 * n, 3.8), layout="constrained", sharey=True)
        axes = np.atleast_1d(axes)
    else:
        fig = axes[0].figure
    for ax, (temp, p) in zip(axes, probs.items()):
        p = np.asarray(p)
        colors = ["tab:orange" if i == int(np.argmax(p)) else "steelblue" for i in range(len(p))]
        ax.bar(range(len(p)), p, color=colors, edgecolor="black", alpha=0.85)
        ax.set_xticks(range(len(p)))
        ax.set_xticklabels([_visible(c) for c in labels], family="monospace")
        ent = entropies[temp] if entropies else float(-(p[p > 0] * np.log2(p[p > 0])).sum())
        greedy = " greedy" if temp < 1e-6 else ""  # lapnet.sampling.GREEDY_BELOW: the argmax
        ax.set_title(f"T = {temp}{greedy}  (entropy {ent:.2f} bits)")
        ax.set_xlabel("character")
        ax.set_ylim(0, 1.0)
        ax.grid(True, alpha=0.3, axis="y")
    axes[0].set_ylabel("probability")
    fig.suptitle(safe_text(title))
    return fig


def trend_examples(x: np.ndarray, lengths: np.ndarray, labels: np.ndarray, prob_up: np.ndarray, *,
                   n: int = 12, ax=None, title: str = "Test sequences"):
    """A few sequences drawn to their own length: solid when classified right, dashed when
    wrong; colour = true class (red up, blue down); each line's predicted P(up) is written
    at its end."""
    fig, ax = _axes(ax, figsize=(10, 4.5))
    ends = []
    for i in range(min(n, len(x))):
        L = int(lengths[i])
        right = (prob_up[i] > 0.5) == bool(labels[i])
        color = "tab:red" if labels[i] else "tab:blue"
        ax.plot(np.arange(L), x[i, :L], ls="-" if right else "--", lw=1.4, alpha=0.85, color=color)
        ends.append((L - 1, float(x[i, L - 1]), float(prob_up[i]), color))
    span = float(np.ptp([e[1] for e in ends])) if ends else 1.0
    placed: list[tuple[float, float]] = []
    for xe, ye, p, color in sorted(ends, key=lambda e: e[1]):
        y = ye
        for px, py in placed:  # nudge a label up past any neighbour at the same end it would overlap
            if abs(px - xe) < 1.5 and abs(py - y) < 0.06 * span:
                y = py + 0.06 * span
        placed.append((xe, y))
        ax.annotate(f"{p:.2f}", (xe, ye), xytext=(xe + 0.4, y), fontsize=7, color=color, va="center")
    ax.set_xlim(right=max((e[0] for e in ends), default=1) + 2.2)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="tab:red", label="true: up"), Line2D([], [], color="tab:blue", label="true: down"),
               Line2D([], [], color="black", ls="-", label="classified right"),
               Line2D([], [], color="black", ls="--", label="classified wrong")]
    ax.legend(handles=handles, fontsize=9, loc="upper left", ncol=2)
    ax.set(title=title, xlabel="time step (the number at each line's end: predicted P(up))",
           ylabel="value (arbitrary units)")
    ax.grid(True, alpha=0.3)
    return fig


def adding_curves(runs: Mapping[str, Mapping[str, Mapping]], *, baseline: float, solved: float, axes=None):
    """Test MSE against training steps (both log scale), one panel per sequence length T,
    one line per architecture, with the variance baseline and the 'solved' threshold."""
    lengths = sorted({int(T) for by_T in runs.values() for T in by_T})
    if axes is None:
        fig, axes = new_figure(1, len(lengths), figsize=(5 * len(lengths), 4.2), layout="constrained",
                               sharey=True, squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    for ax, T in zip(axes, lengths):
        for arch, by_T in runs.items():
            r = by_T.get(str(T))
            if r is None:
                continue
            ax.plot(r["steps"], r["test_mse"], lw=1.8, label=arch.upper(), color=_color(arch.upper()))
        ax.axhline(baseline, color="gray", ls="--", lw=1.2, label=f"predict 1.0 ({baseline:.3f})")
        ax.axhline(solved, color="black", ls=":", lw=1.2, label=f"solved (< {solved})")
        ax.set_yscale("log")
        ax.set_xscale("log")  # fast learners finish in hundreds of steps, slow ones take thousands
        ax.set(title=f"Adding problem, T = {T}", xlabel="training step (batch, log scale)")
        ax.grid(True, alpha=0.3, which="both")
    axes[0].set_ylabel("test MSE")
    handles, labels = axes[0].get_legend_handles_labels()
    if fig.get_layout_engine() is not None:  # below the panels: never over a curve
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    else:
        axes[0].legend(fontsize=8)
    return fig


def spectral_radii(radii: Mapping[str, Mapping[str, Mapping[str, float]]], *, ax=None,
                   title: str = "Spectral radius of each W_hh gate block"):
    """Grouped bars: for each architecture and gate block, the spectral radius per phase
    (init / trained); the dashed line is radius 1."""
    fig, ax = _axes(ax, figsize=(7, 4.5))
    labels = [f"{a.upper()}:{g}" for a, by_p in radii.items() for g in next(iter(by_p.values()))]
    phases = list(next(iter(radii.values())).keys())
    width = 0.8 / len(phases)
    for j, p in enumerate(phases):
        vals = [by_p[p][g] for a, by_p in radii.items() for g in by_p[p]]
        ax.bar(np.arange(len(labels)) + (j - (len(phases) - 1) / 2) * width, vals, width, label=p, alpha=0.85)
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="radius 1")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set(title=title, ylabel="largest |eigenvalue|")
    ax.grid(True, alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def clipping_figure(clip: Mapping, *, axes=None):
    """Left: each step's raw gradient norm (before clipping) for the three runs, with the
    global-norm threshold. Right: test MSE of each run against steps. A run that diverged
    (its loss became NaN or inf) says at which step in its label and ends with an x there."""
    if axes is None:
        fig, axes = new_figure(1, 2, figsize=(12, 4.5), layout="constrained")
    else:
        fig = axes[0].figure
    colors = {"none": "tab:red", "global norm": "tab:blue", "element-wise": "tab:green"}
    for name, r in clip["runs"].items():
        n = np.asarray(r["raw_grad_norm"], dtype=float)
        lab = name
        if name == "element-wise" and r.get("mean_cosine_value_clip") is not None:
            lab += f" (mean cos to raw {r['mean_cosine_value_clip']:.2f})"
        elif name == "global norm":
            lab += " (cos to raw 1.00)"
        gone = ""
        if r.get("diverged"):
            at = r.get("diverged_at_step")
            gone = f", diverged at step {at}" if at else ", diverged"
        lab += gone
        axes[0].plot(np.arange(1, len(n) + 1), n, lw=1.2, color=colors.get(name), label=lab)
        ev = clip["eval_every"]
        mse = np.asarray(r["test_mse"], dtype=float)
        axes[1].plot(ev * np.arange(1, len(mse) + 1), mse, "o-", ms=3, lw=1.5,
                     color=colors.get(name), label=name + gone)
        if r.get("diverged") and r.get("diverged_at_step"):
            ok = n[np.isfinite(n)]
            if len(ok):  # where the curve stops: the last finite norm, at the step it diverged
                axes[0].plot([r["diverged_at_step"]], [ok[-1]], "x", ms=10, mew=2, color=colors.get(name))
    axes[0].axhline(clip["clip_norm"], color="gray", ls="--", lw=1, label=f"global-norm threshold {clip['clip_norm']}")
    axes[0].set_yscale("log")
    axes[0].set(title=f"Raw gradient norm, RNN with W_hh spectral radius {clip['radius']}",
                xlabel="training step", ylabel="||grad|| before clipping")
    axes[0].legend(fontsize=8)
    axes[0].grid(True, alpha=0.3, which="both")
    axes[1].axhline(2.0 / 12.0, color="gray", ls="--", lw=1, label="predict 1.0 (0.167)")
    axes[1].set_yscale("log")
    opt = {"adam": "Adam", "sgd": "SGD"}.get(clip.get("optimizer", "adam"), clip.get("optimizer"))
    lr = f", lr {clip['lr']:g}" if clip.get("lr") is not None else ""
    axes[1].set(title=f"Test MSE by clipping rule ({opt}{lr})", xlabel="training step", ylabel="test MSE")
    axes[1].legend(fontsize=8)
    axes[1].grid(True, alpha=0.3, which="both")
    return fig
