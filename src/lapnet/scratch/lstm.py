"""LSTM: one layer, one direction, forward and backward through time (the kernel).

Notation (PyTorch's, batch-first at the public API, time-major inside the kernel):

    x_t (B, D)  h_t, c_t (B, H)
    i = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
    f = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
    g = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate
    o = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Weights in torch's layout: w_ih (4H, D) = W_ii|W_if|W_ig|W_io, w_hh (4H, H), b_ih, b_hh (4H,).

Why it is fast: the input projection for all T steps is one matrix product; inside the
loop the gates are kept in the order o|i|f|g so that the three sigmoid gates are one
contiguous block, their weight rows are pre-halved so that one `tanh` call activates all
four gates (sigmoid(x) = (1 + tanh(x/2)) / 2), and every element-wise step writes into
preallocated buffers. The backward pass precomputes, for all T at once, every factor that
does not depend on the recurrence, so each step is six element-wise calls and one product.

`mask` (T, B, 1) bool marks live steps of variable-length sequences (packed-sequence
semantics): a finished (or, for the reverse direction, not yet started) sequence keeps
its state, and its gate gradients are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAME = "lstm"
GATES = 4


def _order(H: int) -> np.ndarray:
    """Row permutation from torch's i|f|g|o to the kernel's o|i|f|g."""
    blocks = np.arange(4 * H).reshape(4, H)
    return blocks[[3, 0, 1, 2]].ravel()


@dataclass
class LSTMCache:
    """What backward needs from forward: inputs, activated gates, states, weights."""

    x: np.ndarray  # (T, B, D) layer input, time-major
    A: np.ndarray  # (T, B, 4, H) activated gates o, i, f, g
    hs: np.ndarray  # (T+1, B, H) hidden states incl. h0
    cs: np.ndarray  # (T+1, B, H) cell states incl. c0
    tc: np.ndarray  # (T, B, H) tanh(c_t)
    w_ih: np.ndarray  # (4H, D) kernel order, unscaled
    w_hh: np.ndarray  # (4H, H) kernel order, unscaled
    mask: np.ndarray | None  # (T, B, 1) bool
    partial: np.ndarray | None  # (T,) bool: some sequence is not live at step t
    reverse: bool

    def gates(self) -> dict[str, np.ndarray]:
        """Gate activations in time-major (T, B, H) arrays, torch's names."""
        return {"i": self.A[:, :, 1], "f": self.A[:, :, 2], "g": self.A[:, :, 3], "o": self.A[:, :, 0],
                "c": self.cs[1:] if not self.reverse else self.cs[:-1]}


def forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask=None, partial=None, reverse=False):
    """Run one LSTM layer over a whole sequence.

    Args:
        x: (T, B, D) time-major input.
        w_ih, w_hh, b_ih, b_hh: torch-layout parameters (see module docstring).
        h0, c0: (B, H) initial states.
        mask: (T, B, 1) bool live steps, or None when every sequence has length T.
        partial: (T,) bool, steps where some sequence is not live (with `mask`).
        reverse: read the sequence from t = T-1 down to 0.

    Returns:
        y: (T, B, H) hidden state at each step (a view into the cache).
        h_n, c_n: (B, H) final states.
        cache: LSTMCache for `backward`.
    """
    T, B, D = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    perm = _order(H)
    w_ih_k, w_hh_k = w_ih[perm], w_hh[perm]  # (4H, D), (4H, H) kernel order
    half = np.ones(4 * H, dt)
    half[: 3 * H] = 0.5  # sigmoid rows halved: tanh(x/2) then (1 + .)/2 is the sigmoid
    w_hh_s = np.ascontiguousarray((w_hh_k * half[:, None]).T)  # (H, 4H)
    bias = (b_ih + b_hh)[perm] * half  # (4H,)

    A = np.empty((T, B, 4, H), dt)
    A3 = A.reshape(T, B, 4 * H)
    # the input projection of every step at once: one (T*B, D) x (D, 4H) product
    np.matmul(x.reshape(T * B, D), (w_ih_k * half[:, None]).T, out=A.reshape(T * B, 4 * H))
    A3 += bias
    hs = np.empty((T + 1, B, H), dt)
    cs = np.empty((T + 1, B, H), dt)
    tc = np.empty((T, B, H), dt)
    # forward: state before step t is hs[t], after it hs[t+1]; reverse: hs[t+1] -> hs[t]
    p, n = (1, 0) if reverse else (0, 1)
    hs[T if reverse else 0] = h0
    cs[T if reverse else 0] = c0
    tmp = np.empty((B, 4 * H), dt)
    ig = np.empty((B, H), dt)
    O, I, F, G = A[:, :, 0], A[:, :, 1], A[:, :, 2], A[:, :, 3]  # (T, B, H) views
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_prev, c_prev, h, c, a = hs[t + p], cs[t + p], hs[t + n], cs[t + n], A3[t]
        np.matmul(h_prev, w_hh_s, out=tmp)  # (B, 4H)
        a += tmp
        np.tanh(a, out=a)
        s = a[:, : 3 * H]  # o, i, f
        s *= 0.5
        s += 0.5
        np.multiply(F[t], c_prev, out=c)
        np.multiply(I[t], G[t], out=ig)
        c += ig
        np.tanh(c, out=tc[t])
        np.multiply(O[t], tc[t], out=h)
        if partial is not None and partial[t]:  # finished sequences keep their state
            np.copyto(h, h_prev, where=~mask[t])
            np.copyto(c, c_prev, where=~mask[t])
    y = hs[:T] if reverse else hs[1:]
    h_n, c_n = (hs[0], cs[0]) if reverse else (hs[T], cs[T])
    return y, h_n, c_n, LSTMCache(x, A, hs, cs, tc, w_ih_k, w_hh_k, mask, partial, reverse)


def backward(dy, dh_n, dc_n, cache: LSTMCache):
    """Backpropagate through one LSTM layer.

    Args:
        dy: (T, B, H) gradient on the outputs (zero past each sequence's end), or None.
        dh_n, dc_n: (B, H) gradient on the final states, or None.
        cache: from `forward`.

    Returns:
        dx: (T, B, D) gradient on the input.
        dh0, dc0: (B, H) gradient on the initial states.
        grads: dict w_ih, w_hh, b_ih, b_hh in torch's layout.
    """
    x, A, hs, cs, tc, mask, partial, reverse = (cache.x, cache.A, cache.hs, cache.cs, cache.tc,
                                                cache.mask, cache.partial, cache.reverse)
    T, B, _, H = A.shape
    dt = A.dtype
    O, I, F, G = A[:, :, 0], A[:, :, 1], A[:, :, 2], A[:, :, 3]  # (T, B, H)
    c_prev = cs[1:] if reverse else cs[:T]  # (T, B, H)
    h_prev = hs[1:] if reverse else hs[:T]
    # Factors that do not depend on the recurrence, for all T at once:
    # dc_t += dh_t * P;  d(o) = dh_t * Po;  d(i|f|g preact) = dc_t * Q
    P = np.multiply(tc, tc)
    np.subtract(1.0, P, out=P)
    P *= O  # o * (1 - tanh(c)^2)
    Po = np.subtract(1.0, O)
    Po *= O
    Po *= tc  # tanh(c) * o(1-o)
    Q = np.empty((T, B, 3, H), dt)
    np.subtract(1.0, I, out=Q[:, :, 0])
    Q[:, :, 0] *= I
    Q[:, :, 0] *= G  # g * i(1-i)
    np.subtract(1.0, F, out=Q[:, :, 1])
    Q[:, :, 1] *= F
    Q[:, :, 1] *= c_prev  # c_{t-1} * f(1-f)
    np.multiply(G, G, out=Q[:, :, 2])
    np.subtract(1.0, Q[:, :, 2], out=Q[:, :, 2])
    Q[:, :, 2] *= I  # i * (1 - g^2)

    dG = np.empty((T, B, 4, H), dt)  # gradient on the pre-activations, kernel order
    dG3 = dG.reshape(T, B, 4 * H)
    w_hh = cache.w_hh
    dh = np.empty((B, H), dt)
    dh_rec = np.zeros((B, H), dt) if dh_n is None else np.array(dh_n, dt)  # from step t+1
    dc = np.zeros((B, H), dt) if dc_n is None else np.array(dc_n, dt)
    tmp = np.empty((B, H), dt)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        if dy is not None:
            np.add(dy[t], dh_rec, out=dh)
        else:
            dh[...] = dh_rec
        if partial is not None and partial[t]:
            live = mask[t]  # (B, 1)
            dh_skip, dc_skip = dh * ~live, dc * ~live  # a finished sequence passes its gradient on
            dh *= live
            dc *= live
        np.multiply(dh, P[t], out=tmp)
        dc += tmp
        np.multiply(dh, Po[t], out=dG[t, :, 0])
        np.multiply(dc[:, None, :], Q[t], out=dG[t, :, 1:])
        dc *= F[t]
        np.matmul(dG3[t], w_hh, out=dh_rec)  # (B, H)
        if partial is not None and partial[t]:
            dh_rec += dh_skip
            dc += dc_skip
    T_B = T * B
    dG2 = dG.reshape(T_B, 4 * H)
    dx = np.matmul(dG2, cache.w_ih).reshape(T, B, -1)  # (T, B, D)
    inv = np.argsort(_order(H))
    db = dG2.sum(axis=0)[inv]
    grads = {
        "w_ih": (dG2.T @ x.reshape(T_B, -1))[inv],  # (4H, D)
        "w_hh": (dG2.T @ h_prev.reshape(T_B, H))[inv],  # (4H, H)
        "b_ih": db,
        "b_hh": db.copy(),
    }
    return dx, dh_rec, dc, grads
