"""Numerically stable element-wise functions shared by the kernels and the losses.

sigmoid(x) = 1 / (1 + exp(-x)) overflows `exp` for x << 0; the identity
sigmoid(x) = (1 + tanh(x / 2)) / 2 never does, and it lets one `tanh` call serve every
gate of a cell (the kernels halve the sigmoid rows of their weights once, up front).
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function, finite and in [0, 1] for every finite or infinite input."""
    out = np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(z)) without overflow: shift by the max before exponentiating."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along `axis`; rows of huge logits (1e4) stay finite."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e
