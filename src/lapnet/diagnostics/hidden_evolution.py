"""The notebook's section 2 figure: a sine wave through an untrained vanilla RNN, hidden units traced.

Eight hidden units read sin(t) over two periods; each unit responds differently (some follow
the input, some its derivative, some saturate). The notebook shows this by eye; here the
responses are also measured: each unit's correlation with sin(t) and cos(t) (the input and its
derivative), its range, and how often it saturates (|h| > 0.9).

The RNN is a seeded torch.nn.RNN (torch's default initialisation, non-zero biases, float64);
with the NumPy engine present (`lapnet.scratch`) the states come from the NumPy engine on the
same weights, and the largest difference from torch is recorded.
"""

from __future__ import annotations

import math

from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from lapnet.errors import LapnetError
from lapnet.host import own_torch_state

ENGINES = ("auto", "numpy", "torch")
SATURATED = 0.9


def _scratch_rnn():
    """lapnet.scratch.RNN when the NumPy engine is installed, else None."""
    try:
        from lapnet.scratch import RNN
    except ImportError:
        return None
    return RNN if hasattr(RNN, "from_torch") else None


@own_torch_state()
def hidden_evolution(hidden_size: int = 8, n_points: int = 50, periods: float = 2.0, seed: int = 42,
                     engine: str = "auto") -> dict[str, Any]:
    """Feed sin(t), t in [0, 2*pi*periods], through an untrained 1-layer tanh RNN.

    Args:
        hidden_size: H, hidden units (the notebook: 8).
        n_points: T, samples of the wave (the notebook: 50).
        periods: how many periods of the sine wave.
        seed: the RNN's weights.
        engine: "numpy" (lapnet.scratch), "torch", or "auto" (numpy when present).

    Returns:
        {"t": (T,), "x": (T,), "h": (T, H) hidden states, "metrics": JSON-ready dict}.
    """
    if engine not in ENGINES:
        raise LapnetError(f"engine={engine!r}: expected one of {', '.join(ENGINES)}")
    for name, v in (("hidden_size", hidden_size), ("n_points", n_points)):
        if int(v) < 1:
            raise LapnetError(f"{name} must be at least 1, got {v}")
    if not (periods > 0 and math.isfinite(periods)):
        raise LapnetError(f"periods must be a positive number, got {periods}")
    scratch_rnn = _scratch_rnn()
    if engine == "numpy" and scratch_rnn is None:
        raise LapnetError("engine='numpy': the NumPy engine (lapnet.scratch.RNN) is not available in this install")
    use_numpy = scratch_rnn is not None and engine in ("auto", "numpy")

    t = np.linspace(0.0, 2 * np.pi * periods, n_points)  # (T,)
    x = np.sin(t)  # (T,)
    torch.manual_seed(seed)
    rnn = nn.RNN(1, hidden_size, batch_first=True).double().eval()
    with torch.no_grad():
        h_torch = rnn(torch.from_numpy(x)[None, :, None])[0][0].numpy()  # (T, H)
    diff = None
    if use_numpy:
        out, _, _ = scratch_rnn.from_torch(rnn).forward(x[None, :, None])  # (1, T, H)
        h = np.asarray(out)[0]  # (T, H)
        diff = float(np.abs(h - h_torch).max())
    else:
        h = h_torch

    w_hh = rnn.weight_hh_l0.detach().numpy()  # (H, H)
    units = []
    for k in range(hidden_size):
        hk = h[:, k]
        units.append({
            "unit": k,
            "min": float(hk.min()),
            "max": float(hk.max()),
            "std": float(hk.std()),
            "corr_with_input": _corr(hk, x),
            "corr_with_derivative": _corr(hk, np.cos(t)),
            "saturated_share": float(np.mean(np.abs(hk) > SATURATED)),
        })
    metrics = {
        "engine": "numpy" if use_numpy else "torch",
        "max_abs_diff_vs_torch": diff,
        "hidden_size": hidden_size,
        "n_points": n_points,
        "periods": periods,
        "seed": seed,
        "init": "torch default: U(-1/sqrt(H), 1/sqrt(H)) weights and both biases; untrained",
        "mean_abs_activation": float(np.abs(h).mean()),
        "saturated_share": float(np.mean(np.abs(h) > SATURATED)),
        "w_hh_spectral_radius": float(np.abs(np.linalg.eigvals(w_hh)).max()),
        "units_following_input": int(sum(abs(u["corr_with_input"]) > 0.7 for u in units)),
        "units_following_derivative": int(sum(abs(u["corr_with_derivative"]) > 0.7 for u in units)),
        "units": units,
    }
    return {"t": t, "x": x, "h": h, "metrics": metrics}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 for a constant series (a dead unit follows nothing)."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def plot_hidden_evolution(result: dict[str, Any], axes=None) -> Figure:
    """Three panels: the input wave, each hidden unit's trace, and the states as a heatmap.

    Args:
        result: what `hidden_evolution` returned.
        axes: three matplotlib axes stacked vertically, or None for a new 11 x 9.5 inch figure.
    """
    t, x, h = result["t"], result["x"], result["h"]  # (T,), (T,), (T, H)
    H = h.shape[1]
    if axes is None:
        from lapnet.plots import new_figure

        fig, axes = new_figure(3, 1, figsize=(11, 9.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.6, 1.4]})
    fig = axes[0].figure

    ax = axes[0]
    ax.plot(t, x, color="#1f5fa8", lw=2, label="input: sin(t)")
    ax.set_ylabel("input value")
    ax.set_title("Input sequence: a sine wave, one sample per time step")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)

    ax = axes[1]
    colors = matplotlib.colormaps["tab10"](np.linspace(0, 1, 10))
    for k in range(H):
        ax.plot(t, h[:, k], lw=1.5, alpha=0.9, color=colors[k % 10], label=f"h[{k}]")
    ax.set_ylabel("hidden unit value")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(f"Hidden state evolution: {H} units of an untrained tanh RNN ({result['metrics']['engine']} engine)")
    if H <= 16:  # a legend with more entries than that hides the traces
        ax.legend(ncol=min(H, 8), fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    ax.grid(alpha=0.3)

    ax = axes[2]
    dt = (t[1] - t[0]) / 2 if len(t) > 1 else 0.5
    im = ax.imshow(h.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest",
                   extent=[t[0] - dt, t[-1] + dt, H - 0.5, -0.5])
    ax.set_xlabel("time t (radians of the input wave)")
    ax.set_ylabel("hidden unit")
    ax.set_title("Hidden states as a heatmap (blue = -1, red = +1)")
    # an inset colour bar keeps the heatmap's time axis aligned with the panels above
    cax = ax.inset_axes([1.01, 0.0, 0.015, 1.0])
    fig.colorbar(im, cax=cax, label="activation")
    for a in axes[:2]:
        a.tick_params(labelbottom=True)
    fig.tight_layout()
    return fig
