"""The spectrum of the recurrent weights W_hh, the matrix the notebook says decides
between vanishing (largest |eigenvalue| < 1) and exploding (> 1) gradients.

For a vanilla RNN W_hh is one (H, H) matrix. An LSTM stacks four blocks (i, f, g, o) and a
GRU three (r, z, n) in torch's `weight_hh_l0` (gate order as torch); each block acts on
h_{t-1} for its own gate, so each gets its own spectrum.
"""

from __future__ import annotations

import numpy as np

GATES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def whh_blocks(kind: str, weight_hh: np.ndarray) -> dict[str, np.ndarray]:
    """Split a `weight_hh_l0` (G*H, H) into its per-gate (H, H) blocks."""
    names = GATES[kind]
    H = weight_hh.shape[1]
    return {g: np.asarray(weight_hh[k * H : (k + 1) * H]) for k, g in enumerate(names)}


def spectrum_stats(w: np.ndarray) -> dict[str, float]:
    """Spectral radius (largest |eigenvalue|), largest singular value (the most one step
    can stretch a vector) and the share of eigenvalues outside the unit circle."""
    ev = np.linalg.eigvals(w)
    return {"spectral_radius": float(np.abs(ev).max()), "max_singular_value": float(np.linalg.norm(w, 2)),
            "share_outside_unit_circle": float(np.mean(np.abs(ev) > 1.0))}
