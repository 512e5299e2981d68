"""The notebook's four teaching diagrams, drawn cleanly with matplotlib.

Each function takes `ax=None` (or `axes=None` for a multi-panel figure) and returns the figure:

    feedforward_vs_sequential   all inputs at once vs one step at a time with a memory
    rnn_unrolled                the RNN unrolled through time, the same weights at every step
    lstm_cell                   the LSTM cell's data flow: forget, input, candidate, output gates,
                                the cell state as the conveyor belt
    architecture_comparison     RNN vs LSTM vs GRU side by side, with parameter counts taken
                                from real torch modules; equations in PyTorch's form and names
                                (two biases, the GRU's z weighing h_{t-1}), to match the counts

`draw_all(out)` writes the four PNGs. `text_overlaps(fig)` lists pairs of labels whose boxes
intersect (and labels that spill outside the figure), and `arrow_overlaps(fig)` the labels an
arrow runs through, so tests can keep the drawings clean.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from lapnet.plots import new_figure, save_figure

# one palette for every diagram: each concept keeps its colour across figures
INPUT, HIDDEN, OUTPUT, WEIGHT = "#1f5fa8", "#6a3d9a", "#2e7d32", "#b23a48"
FORGET, GATE_IN, CANDIDATE, GATE_OUT, CELL = "#c62828", "#2e7d32", "#e08a00", "#1565c0", "#00796b"
LIGHT = {INPUT: "#dbe8f7", HIDDEN: "#eadff3", OUTPUT: "#dcefdc", FORGET: "#fbd5d5", GATE_IN: "#d4ecd5",
         CANDIDATE: "#fde7c2", GATE_OUT: "#d3e4f8", CELL: "#d0ece8", WEIGHT: "#f7dfe3"}
DPI = 150


# ---------------------------------------------------------------------------------------------
# drawing primitives (data coordinates; every axis uses an equal aspect so circles stay round)


def _canvas(ax, figsize, xlim, ylim):
    if ax is None:
        fig, ax = new_figure(figsize=figsize)
    else:
        fig = ax.figure
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _box(ax, cx, cy, w, h, text, color, *, fontsize=12, weight="normal", fill=None, lw=1.8):
    """A rounded box centred at (cx, cy) with its label; returns the box's edges."""
    ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.12",
                                facecolor=fill or LIGHT.get(color, "white"), edgecolor=color, lw=lw, zorder=3))
    if text:
        ax.text(cx, cy, text, ha="center", va="center", fontsize=fontsize, fontweight=weight, zorder=4, color="black")
    return {"left": cx - w / 2, "right": cx + w / 2, "bottom": cy - h / 2, "top": cy + h / 2}


def _op(ax, cx, cy, r, symbol, color, fontsize=14):
    """A pointwise operation on a circle: \u00d7 (multiply), + (add), tanh."""
    ax.add_patch(Circle((cx, cy), r, facecolor=LIGHT.get(color, "white"), edgecolor=color, lw=1.8, zorder=5))
    ax.text(cx, cy, symbol, ha="center", va="center", fontsize=fontsize, fontweight="bold", color=color, zorder=6)


def _arrow(ax, start, end, color, *, lw=1.8, head=True, ls="-"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>,head_length=6,head_width=3.5" if head else "-",
                                 color=color, lw=lw, linestyle=ls, shrinkA=0, shrinkB=0, zorder=2,
                                 mutation_scale=1.6))


def _line(ax, xs, ys, color, lw=1.8):
    ax.plot(xs, ys, color=color, lw=lw, solid_capstyle="butt", zorder=2)


# ---------------------------------------------------------------------------------------------
# 1. feedforward vs sequential


WORDS = ("The", "cat", "sat", "on", "the mat")


def feedforward_vs_sequential(axes=None) -> Figure:
    """Left: a feedforward net sees the whole (fixed-size) input at once. Right: an RNN reads one
    word per step and carries a hidden state forward.

    The feedforward net on concatenated inputs does keep word order: each position is its own
    slot with its own weights (only averaging the inputs would lose it). What it lacks is any
    other length and weights shared across positions (`lapnet feedforward` measures both).

    Args:
        axes: two matplotlib axes, or None for a new 12 x 4.4 inch figure.
    """
    if axes is None:
        fig, axes = new_figure(1, 2, figsize=(12, 4.4))
    fig = axes[0].figure
    xs = [1.0, 3.0, 5.0, 7.0, 9.0]

    # left: every word wired into one box, order only as a position in a fixed-size vector
    _, ax = _canvas(axes[0], None, (-0.2, 10.2), (0.2, 6.0))
    net = dict(left=1.5, right=8.5, bottom=2.6, top=3.8)
    for i, (x, w) in enumerate(zip(xs, WORDS)):
        b = _box(ax, x, 0.8, 1.6, 0.7, w, INPUT)
        _arrow(ax, (x, b["top"]), (5 + (x - 5) * 0.6, net["bottom"]), "#7f7f7f")
    _box(ax, 5, 3.2, 7.0, 1.2, "Feedforward network\n(one fixed-size input vector)", "#b26b00", fill="#fff4d6", fontsize=12)
    out = _box(ax, 5, 5.3, 2.0, 0.7, "Output", OUTPUT)
    _arrow(ax, (5, net["top"]), (5, out["bottom"]), "#b26b00", lw=2.2)
    ax.set_title("Feedforward: all inputs at once\n(fixed length, own weights per position)", fontsize=13)

    # right: one word per step, the hidden state carries the past forward
    _, ax = _canvas(axes[1], None, (-0.2, 10.2), (0.2, 6.0))
    hs = []
    for t, (x, w) in enumerate(zip(xs, WORDS), start=1):
        b = _box(ax, x, 0.8, 1.6, 0.7, w, INPUT)
        h = _box(ax, x, 3.0, 1.2, 0.9, f"$h_{t}$", HIDDEN, fontsize=14)
        _arrow(ax, (x, b["top"]), (x, h["bottom"]), "#7f7f7f")
        hs.append(h)
    for a, b in zip(hs, hs[1:]):
        _arrow(ax, (a["right"], 3.0), (b["left"], 3.0), HIDDEN, lw=2.4)
    out = _box(ax, 9, 5.3, 2.0, 0.7, "Output", OUTPUT)
    _arrow(ax, (9, hs[-1]["top"]), (9, out["bottom"]), OUTPUT, lw=2.2)
    ax.text(4.0, 4.15, "memory flows forward through the hidden states", ha="center", va="center",
            fontsize=11, fontstyle="italic", color=HIDDEN)
    ax.set_title("Sequential (RNN): one input at a time\n(order kept in the hidden state, any length)", fontsize=13)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 2. the RNN unrolled through time


def rnn_unrolled(ax=None, steps: int = 5) -> Figure:
    """x_t -> h_t -> y_t for t = 1..steps, h_0 = 0, the same W_xh, W_hh, W_hy at every step.

    Args:
        ax: a matplotlib axis, or None for a new figure.
        steps: how many time steps to draw (1 to 6 fit).
    """
    spacing = 2.6
    xs = [2.2 + spacing * t for t in range(steps)]
    right = xs[-1] + 1.3
    fig, ax = _canvas(ax, (12, 6.2), (-1.4, right), (-1.3, 6.4))
    h_y, x_y, y_y = 2.6, 0.4, 4.8
    h0 = _box(ax, -0.3, h_y, 1.5, 0.9, "$h_0 = 0$", HIDDEN, fill="#f4effa", fontsize=12)
    prev = h0
    for t, x in enumerate(xs, start=1):
        xb = _box(ax, x, x_y, 1.0, 0.7, f"$x_{t}$", INPUT, fontsize=14)
        hb = _box(ax, x, h_y, 1.3, 1.0, "", HIDDEN)
        ax.text(x, h_y + 0.15, f"$h_{t}$", ha="center", va="center", fontsize=15, fontweight="bold", zorder=4)
        ax.text(x, h_y - 0.3, "tanh", ha="center", va="center", fontsize=9, color="#555555", zorder=4)
        yb = _box(ax, x, y_y, 1.0, 0.7, f"$y_{t}$", OUTPUT, fontsize=14)
        _arrow(ax, (x, xb["top"]), (x, hb["bottom"]), INPUT)
        ax.text(x + 0.12, (xb["top"] + hb["bottom"]) / 2, "$W_{xh}$", ha="left", va="center", fontsize=11, color=INPUT)
        _arrow(ax, (x, hb["top"]), (x, yb["bottom"]), OUTPUT)
        ax.text(x + 0.12, (hb["top"] + yb["bottom"]) / 2, "$W_{hy}$", ha="left", va="center", fontsize=11, color=OUTPUT)
        _arrow(ax, (prev["right"], h_y), (hb["left"], h_y), HIDDEN, lw=2.4)
        ax.text((prev["right"] + hb["left"]) / 2, h_y + 0.12, "$W_{hh}$", ha="center", va="bottom", fontsize=11, color=HIDDEN)
        prev = hb
    mid = (h0["left"] + xs[-1]) / 2
    ax.text(mid, 5.9, "the same weights $W_{xh}$, $W_{hh}$, $W_{hy}$ (and biases) are shared by every time step",
            ha="center", va="center", fontsize=12, fontstyle="italic", color=WEIGHT,
            bbox=dict(boxstyle="round,pad=0.35", facecolor="#fff3e6", edgecolor=WEIGHT))
    ax.text(mid, -0.85, r"$h_t = \tanh(W_{hh}\,h_{t-1} + W_{xh}\,x_t + b_h)$        $y_t = W_{hy}\,h_t + b_y$",
            ha="center", va="center", fontsize=13)
    ax.set_title("An RNN unrolled through time", fontsize=15, fontweight="bold")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 3. the LSTM cell


def lstm_cell(ax=None) -> Figure:
    """The LSTM cell: the cell state runs along the top (the conveyor belt) touched only by
    × (forget) and + (write); four gate blocks read [h_{t-1}, x_t] from the bus below.

    Args:
        ax: a matplotlib axis, or None for a new 12 x 8.6 inch figure.
    """
    fig, ax = _canvas(ax, (12, 8.6), (-1.2, 14.2), (-1.3, 9.5))
    belt, bus = 7.6, 3.5
    ax.add_patch(FancyBboxPatch((0.6, 2.7), 11.6, 5.9, boxstyle="round,pad=0,rounding_size=0.3",
                                facecolor="#f6f6f6", edgecolor="#444444", lw=1.6, zorder=0))

    # the conveyor belt: C_{t-1} -> x forget -> + write -> C_t
    fx, ax_add = 2.8, 6.1
    _arrow(ax, (-0.5, belt), (fx - 0.35, belt), CELL, lw=3.5, head=False)
    _arrow(ax, (fx + 0.35, belt), (ax_add - 0.35, belt), CELL, lw=3.5, head=False)
    _arrow(ax, (ax_add + 0.35, belt), (13.2, belt), CELL, lw=3.5)
    ax.text(-0.5, belt + 0.25, "$C_{t-1}$", ha="left", va="bottom", fontsize=14, color=CELL)
    ax.text(13.2, belt + 0.25, "$C_t$", ha="right", va="bottom", fontsize=14, color=CELL)
    ax.text(6.4, 9.05, "cell state $C$: the conveyor belt (only the forget \u00d7 and the add + touch it)",
            ha="center", va="center", fontsize=12, fontweight="bold", color=CELL)
    _op(ax, fx, belt, 0.35, "\u00d7", FORGET, fontsize=17)
    _op(ax, ax_add, belt, 0.35, "+", GATE_IN, fontsize=17)

    # the four gate blocks, all reading the same [h_{t-1}, x_t]
    gy, gw, gh = 4.75, 1.7, 1.05
    gates = [(fx, FORGET, "forget $f_t$", r"$\sigma$"), (5.0, GATE_IN, "input $i_t$", r"$\sigma$"),
             (7.2, CANDIDATE, r"candidate $\tilde{C}_t$", "tanh"), (9.4, GATE_OUT, "output $o_t$", r"$\sigma$")]
    boxes = {}
    for x, color, name, fn in gates:
        b = _box(ax, x, gy, gw, gh, "", color)
        ax.text(x, gy + 0.2, name, ha="center", va="center", fontsize=11, zorder=4)
        ax.text(x, gy - 0.25, fn, ha="center", va="center", fontsize=12, color=color, fontweight="bold", zorder=4)
        _arrow(ax, (x, bus), (x, b["bottom"]), "#7f7f7f", lw=1.5)
        boxes[color] = b

    # forget: f_t scales the old cell state
    _arrow(ax, (fx, boxes[FORGET]["top"]), (fx, belt - 0.35), FORGET)
    # write: i_t * C~_t is added onto the belt
    mx, my = ax_add, 6.3
    _op(ax, mx, my, 0.3, "\u00d7", GATE_IN, fontsize=15)
    _arrow(ax, (5.0, boxes[GATE_IN]["top"]), (mx - 0.24, my - 0.18), GATE_IN)
    _arrow(ax, (7.2, boxes[CANDIDATE]["top"]), (mx + 0.24, my - 0.18), CANDIDATE)
    _arrow(ax, (mx, my + 0.3), (ax_add, belt - 0.35), GATE_IN)
    # read: h_t = o_t * tanh(C_t)
    ox, th_y, om_y = 11.5, 6.45, 4.75
    _arrow(ax, (ox, belt), (ox, th_y + 0.36), CELL, lw=1.8)
    _op(ax, ox, th_y, 0.36, "tanh", GATE_OUT, fontsize=9)
    _op(ax, ox, om_y, 0.3, "\u00d7", GATE_OUT, fontsize=15)
    _arrow(ax, (ox, th_y - 0.36), (ox, om_y + 0.3), GATE_OUT)
    _arrow(ax, (boxes[GATE_OUT]["right"], om_y), (ox - 0.3, om_y), GATE_OUT)
    ax.plot([ox], [belt], "o", color=CELL, ms=5, zorder=6)  # the belt is read here, not consumed

    # h_t leaves along the bottom to the next step (and to the output layer)
    hy = 1.9
    _line(ax, [ox, ox], [om_y - 0.3, hy], GATE_OUT, lw=2.4)
    _arrow(ax, (ox, hy), (13.2, hy), GATE_OUT, lw=2.4)
    ax.text(13.2, hy + 0.2, "$h_t$", ha="right", va="bottom", fontsize=14, color=GATE_OUT)
    ax.text(13.2, hy - 0.2, "to the next step\nand the output", ha="right", va="top", fontsize=10, color=GATE_OUT)

    # the input bus: h_{t-1} from the left, x_t from below
    xin = 1.6
    _line(ax, [-0.5, 9.4], [bus, bus], "#7f7f7f", lw=2.0)
    ax.text(-0.5, bus + 0.2, "$h_{t-1}$", ha="left", va="bottom", fontsize=14, color=GATE_OUT)
    _arrow(ax, (xin, hy + 0.1), (xin, bus), INPUT, lw=2.0)
    ax.plot([xin], [bus], "o", color="#7f7f7f", ms=6, zorder=6)
    ax.text(xin, hy, "$x_t$", ha="center", va="top", fontsize=14, color=INPUT)
    ax.text(5.9, bus - 0.22, "$[h_{t-1}, x_t]$ feeds all four gates", ha="center", va="top", fontsize=11, color="#555555")

    # the equations, one line per step of the update
    eq = [
        (r"$f_t = \sigma(W_f\,[h_{t-1}, x_t] + b_f)$", "what to throw away", FORGET),
        (r"$i_t = \sigma(W_i\,[h_{t-1}, x_t] + b_i)$,  $\tilde{C}_t = \tanh(W_C\,[h_{t-1}, x_t] + b_C)$", "what to write", GATE_IN),
        (r"$C_t = f_t \odot C_{t-1} + i_t \odot \tilde{C}_t$", "the belt moves on", CELL),
        (r"$o_t = \sigma(W_o\,[h_{t-1}, x_t] + b_o)$,  $h_t = o_t \odot \tanh(C_t)$", "what to show", GATE_OUT),
    ]
    for k, (text, why, color) in enumerate(eq):
        y = 0.75 - 0.55 * k
        ax.text(2.6, y, text, ha="left", va="center", fontsize=11.5)
        ax.text(2.4, y, why, ha="right", va="center", fontsize=10.5, color=color, fontstyle="italic")
    ax.set_title("Inside an LSTM cell", fontsize=15, fontweight="bold")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# 4. RNN vs LSTM vs GRU


# PyTorch's form and names, since the counts under them are torch's (two biases per block):
# the notebook's b_h is b_ih + b_hh, its C~ is g, its GRU candidate h~ is n and its z is 1 - z.
CELLS = {
    "rnn": dict(title="Vanilla RNN", blocks="1 block, no gates", color=HIDDEN, states=[("$h$  hidden state", HIDDEN)],
                gates=[("tanh", "", HIDDEN)],
                eq=[r"$h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})$"],
                note="simple, but forgets quickly"),
    "lstm": dict(title="LSTM", blocks="4 blocks: 3 gates + a candidate", color=GATE_OUT,
                 states=[("$c$  cell state", CELL), ("$h$  hidden state", GATE_OUT)],
                 gates=[(r"$\sigma$", "$f$", FORGET), (r"$\sigma$", "$i$", GATE_IN), ("tanh", "$g$", CANDIDATE), (r"$\sigma$", "$o$", GATE_OUT)],
                 eq=[r"$c_t = f \odot c_{t-1} + i \odot g$", r"$h_t = o \odot \tanh(c_t)$"],
                 note="a separate memory: long-range recall"),
    "gru": dict(title="GRU", blocks="3 blocks: 2 gates + a candidate", color=GATE_IN, states=[("$h$  hidden state", HIDDEN)],
                gates=[(r"$\sigma$", "$r$", FORGET), (r"$\sigma$", "$z$", GATE_IN), ("tanh", "$n$", CANDIDATE)],
                eq=[r"$h_t = (1 - z) \odot n + z \odot h_{t-1}$",
                    r"$n = \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn}))$"],
                note="LSTM-like memory, fewer weights"),
}


def architecture_comparison(axes=None, input_size: int = 100, hidden_size: int = 256) -> Figure:
    """RNN, LSTM and GRU cells side by side: states carried, gate blocks, update rule, and the
    parameter count of a real torch module of each at (input_size, hidden_size).

    Args:
        axes: three matplotlib axes, or None for a new 13.5 x 5.4 inch figure.
        input_size, hidden_size: the sizes whose parameter counts are printed.
    """
    from lapnet.diagnostics.param_count import param_table

    counts = {r["arch"]: r for r in param_table(input_size, hidden_size)["rows"]}
    if axes is None:
        fig, axes = new_figure(1, 3, figsize=(13.5, 5.4))
    fig = axes[0].figure
    for ax, arch in zip(axes, ("rnn", "lstm", "gru")):
        spec = CELLS[arch]
        _, ax = _canvas(ax, None, (0, 6), (-2.5, 4.3))
        ax.add_patch(FancyBboxPatch((0.4, 0.9), 5.2, 3.0, boxstyle="round,pad=0,rounding_size=0.2",
                                    facecolor="#f7f7f7", edgecolor="#444444", lw=1.5, zorder=0))
        # the states carried from step to step, as horizontal belts through the cell
        for k, (label, color) in enumerate(spec["states"]):
            y = 3.4 - 0.8 * k
            _arrow(ax, (0.05, y), (5.95, y), color, lw=3)
            ax.text(3.0, y + 0.12, label, ha="center", va="bottom", fontsize=11, color=color, fontweight="bold")
        # the gate blocks, all reading [h_{t-1}, x_t]
        n = len(spec["gates"])
        w, gap = 1.0, 0.2
        x0 = 3.0 - (n * w + (n - 1) * gap) / 2 + w / 2
        for j, (fn, name, color) in enumerate(spec["gates"]):
            x = x0 + j * (w + gap)
            _box(ax, x, 1.9, w, 0.9, "", color)
            ax.text(x, 2.08 if name else 1.9, fn, ha="center", va="center", fontsize=11, color=color, fontweight="bold", zorder=4)
            if name:
                ax.text(x, 1.68, name, ha="center", va="center", fontsize=11, zorder=4)
        _box(ax, 3.0, 0.1, 1.7, 0.6, "$x_t, h_{t-1}$", INPUT, fontsize=11)
        _arrow(ax, (3.0, 0.4), (3.0, 0.9), "#7f7f7f")
        r = counts[arch]
        lines = [
            (spec["eq"][0], 12, "black"),
            (spec["eq"][1] if len(spec["eq"]) > 1 else "", 12, "black"),
            (f"{r['pytorch']:,} parameters ({r['pytorch_ratio_vs_rnn']:.0f}x the RNN)", 11, "black"),
            (f"torch.nn module (two biases), input {input_size}, hidden {hidden_size}", 10, "#555555"),
            (spec["note"], 11, spec["color"]),
        ]
        for k, (text, size, color) in enumerate(lines):
            if text:
                ax.text(3.0, -0.55 - 0.45 * k, text, ha="center", va="center", fontsize=size, color=color,
                        fontstyle="italic" if k == 4 else "normal")
        ax.set_title(f"{spec['title']}\n{spec['blocks']}", fontsize=14, fontweight="bold", color=spec["color"])
    fig.suptitle("RNN vs LSTM vs GRU (PyTorch's form and names)", fontsize=15, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # leave the suptitle its own band
    return fig


# ---------------------------------------------------------------------------------------------
# writing and checking


FIGURES = {
    "feedforward_vs_sequential": feedforward_vs_sequential,
    "rnn_unrolled": rnn_unrolled,
    "lstm_cell": lstm_cell,
    "architecture_comparison": architecture_comparison,
}


def draw_all(out: str | Path, dpi: int = DPI) -> dict[str, dict]:
    """Write the four diagrams as PNGs into `out` (created).

    Returns:
        {name: {"path": str, "label_overlaps": [[label, label], ...], "arrow_overlaps":
        [[label, points], ...]}}: each figure is checked for colliding labels and for arrows
        drawn through labels as it is drawn, so a broken layout is reported, not shipped silently.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, draw in FIGURES.items():
        # build at the output dpi: mathtext layouts are cached per dpi, so the layout pass, the
        # save and the overlap check then parse each formula once instead of three times
        with matplotlib.rc_context({"figure.dpi": dpi}):
            fig = draw()
        path = out / f"{name}.png"
        save_figure(fig, path, dpi=dpi, facecolor="white")  # atomic: a killed run leaves the old figure whole
        written[name] = {"path": str(path), "label_overlaps": [list(p) for p in text_overlaps(fig)],
                         "arrow_overlaps": [list(p) for p in arrow_overlaps(fig)]}
    return written


def text_overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of visible labels whose boxes intersect, and labels that leave the figure.

    A label drawn inside a box is measured with its own text extent (its box is a patch, not
    a label); a label with a `bbox` is measured with that bbox.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    items = []
    texts = list(fig.texts)
    for ax in fig.axes:  # labels and titles; tick labels of the hidden axes are not drawn
        texts += list(ax.texts) + [ax.title, ax._left_title, ax._right_title]
        if ax.axison:
            texts += [ax.xaxis.label, ax.yaxis.label]
        legend = ax.get_legend()
        if legend is not None:
            texts += list(legend.get_texts())
    for t in texts:
        if not t.get_visible() or not t.get_text().strip():
            continue
        patch = t.get_bbox_patch()
        ext = (patch.get_window_extent(renderer) if patch is not None else t.get_window_extent(renderer))
        items.append((t.get_text(), ext))
    fig_box = fig.bbox
    problems = []
    for i, (a, ea) in enumerate(items):
        if ea.x0 < fig_box.x0 - 1 or ea.y0 < fig_box.y0 - 1 or ea.x1 > fig_box.x1 + 1 or ea.y1 > fig_box.y1 + 1:
            problems.append((a, "<outside the figure>"))
        for b, eb in items[i + 1 :]:
            # shrink by a pixel so labels that merely touch do not count
            if ea.x0 + 1 < eb.x1 and eb.x0 + 1 < ea.x1 and ea.y0 + 1 < eb.y1 and eb.y0 + 1 < ea.y1:
                problems.append((a, b))
    return problems


def arrow_overlaps(fig: Figure, samples: int = 40) -> list[tuple[str, int]]:
    """Labels that an arrow runs through: (label, how many of the arrow's sampled points fall
    inside the label's box, shrunk by 2 px so an arrow that ends at a label's edge is fine).

    Arrows are the FancyArrowPatches of every axes and the arrows of annotations; each
    arrow's path (shaft and head) is sampled at `samples` points per segment in pixels.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    for ax in fig.axes:
        labels = []
        for t in ax.texts:
            if t.get_visible() and t.get_text().strip():
                patch = t.get_bbox_patch()
                labels.append((t.get_text(), (patch if patch is not None else t).get_window_extent(renderer)))
        arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
        arrows += [t.arrow_patch for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
        for arrow in arrows:
            path = arrow.get_path()
            if not len(path.vertices):
                continue
            pts = arrow.get_transform().transform(path.interpolated(samples).vertices)  # (n, 2) pixels
            for text, box in labels:
                inside = ((pts[:, 0] > box.x0 + 2) & (pts[:, 0] < box.x1 - 2)
                          & (pts[:, 1] > box.y0 + 2) & (pts[:, 1] < box.y1 - 2))
                if inside.any():
                    problems.append((text, int(inside.sum())))
    return problems
