"""Vanilla (Elman) RNN: one layer, one direction, forward and backward through time.

Read `reference.py` (rnn_forward / rnn_backward) first: the same maths as a plain loop.

    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   act = tanh or relu

Weights in torch's layout: w_ih (H, D), w_hh (H, H), b_ih, b_hh (H,).
`mask`, `partial` and `reverse` mean what they mean in lstm.py.

Backpropagation through time: dL/dh_{t-1} = (dL/dh_t * act'(.)) W_hh, applied T times;
that repeated product is why gradients vanish or explode (notebook section 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAME = "rnn"
GATES = 1


@dataclass
class RNNCache:
    """What backward needs from forward."""

    x: np.ndarray  # (T, B, D)
    hs: np.ndarray  # (T+1, B, H)
    w_ih: np.ndarray
    w_hh: np.ndarray
    mask: np.ndarray | None
    partial: np.ndarray | None
    reverse: bool
    nonlinearity: str

    def gates(self) -> dict[str, np.ndarray]:
        """A vanilla RNN has no gates."""
        return {}


def forward(x, w_ih, w_hh, b_ih, b_hh, h0, mask=None, partial=None, reverse=False, nonlinearity="tanh"):
    """Run one RNN layer over a whole sequence.

    Args:
        x: (T, B, D) time-major input.
        w_ih, w_hh, b_ih, b_hh: torch-layout parameters.
        h0: (B, H) initial state.
        mask, partial, reverse: see lstm.forward.
        nonlinearity: "tanh" or "relu".

    Returns:
        y (T, B, H), h_n (B, H), cache.
    """
    T, B, D = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    XP = np.matmul(x.reshape(T * B, D), w_ih.T).reshape(T, B, H)  # (T, B, H) all steps at once
    XP += b_ih + b_hh
    w_hhT = np.ascontiguousarray(w_hh.T)
    hs = np.empty((T + 1, B, H), dt)
    p, n = (1, 0) if reverse else (0, 1)
    hs[T if reverse else 0] = h0
    relu = nonlinearity == "relu"
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_prev, h = hs[t + p], hs[t + n]
        np.dot(h_prev, w_hhT, h)  # np.dot costs less per call than np.matmul
        h += XP[t]
        if relu:
            np.maximum(h, 0.0, out=h)
        else:
            np.tanh(h, out=h)
        if partial is not None and partial[t]:
            np.copyto(h, h_prev, where=~mask[t])
    y = hs[:T] if reverse else hs[1:]
    h_n = hs[0] if reverse else hs[T]
    return y, h_n, RNNCache(x, hs, w_ih, w_hh, mask, partial, reverse, nonlinearity)


def backward(dy, dh_n, cache: RNNCache):
    """Backpropagate through one RNN layer.

    Returns:
        dx (T, B, D), dh0 (B, H), grads dict w_ih, w_hh, b_ih, b_hh in torch's layout.
    """
    x, hs, mask, partial, reverse = cache.x, cache.hs, cache.mask, cache.partial, cache.reverse
    T = x.shape[0]
    B, H = hs.shape[1], hs.shape[2]
    dt = hs.dtype
    h_new = hs[:T] if reverse else hs[1:]
    h_prev = hs[1:] if reverse else hs[:T]
    if cache.nonlinearity == "relu":
        Fa = (h_new > 0).astype(dt)  # relu'(a) from its output; 0 at a = 0, as torch
    else:
        Fa = np.multiply(h_new, h_new)
        np.subtract(1.0, Fa, out=Fa)  # tanh' = 1 - h^2
    dA = np.empty((T, B, H), dt)  # gradient on the pre-activation
    w_hh = cache.w_hh
    dh = np.empty((B, H), dt)
    dh_rec = np.zeros((B, H), dt) if dh_n is None else np.array(dh_n, dt)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        if dy is not None:
            np.add(dy[t], dh_rec, out=dh)
        else:
            dh[...] = dh_rec
        np.multiply(dh, Fa[t], out=dA[t])
        if partial is not None and partial[t]:
            dA[t] *= mask[t]
            np.dot(dA[t], w_hh, dh_rec)
            dh_rec += dh * ~mask[t]
        else:
            np.dot(dA[t], w_hh, dh_rec)
    T_B = T * B
    dA2 = dA.reshape(T_B, H)
    db = dA2.sum(axis=0)
    grads = {
        "w_ih": dA2.T @ x.reshape(T_B, -1),  # (H, D)
        "w_hh": dA2.T @ h_prev.reshape(T_B, H),  # (H, H)
        "b_ih": db,
        "b_hh": db.copy(),
    }
    dx = np.matmul(dA2, cache.w_ih).reshape(T, B, -1)
    return dx, dh_rec, grads
