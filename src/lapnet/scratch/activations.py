"""Numerically stable element-wise functions for users of the engine and for the losses.

`log_softmax` is what `losses.softmax_cross_entropy` uses; `sigmoid`, `softmax` and
`log_softmax` are exported as `lapnet.scratch.sigmoid` etc. for heads and experiments. The
recurrent kernels do not call them: each inlines its gates' activation where it can be
fused with the gate layout. The LSTM's small-slab path uses the identity here,
sigmoid(x) = (1 + tanh(x / 2)) / 2, halving its sigmoid weight rows once so that one `tanh`
call serves every gate; the LSTM's big-slab path and the GRU negate their sigmoid rows
instead and compute 1 / (1 + exp(-a)) in place (exp(-a) = inf gives 0, as it should);
`reference.py` has its own overflow-safe sigmoid, written to be read.

sigmoid(x) = 1 / (1 + exp(-x)) overflows `exp` for x << 0 (inf, with a warning); the tanh
identity never does.
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
