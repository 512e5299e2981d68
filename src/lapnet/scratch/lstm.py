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

Why it is fast: the input projection for all T steps is computed before the loop, and
inside it every per-step array is a contiguous slab. Gates are stored gate-major,
(4, B, H) per step (a column slice of a (B, 4H) array would make NumPy run one inner loop
per row), in the order o|i|f|g so the three sigmoid gates form one slab whose weight rows
are negated up front: the product gives -a, and sigmoid(a) = 1 / (1 + exp(-a)) is three
in-place calls (NumPy's float32 exp is about twice as fast as its tanh). tanh(c_t), g_t
and c_{t-1} sit side by side, so one call forms i*g | f*c_{t-1} and backward gets all
three sigmoid-derivative factors in one call. Every call writes into preallocated
buffers; the backward pass computes the factors that do not depend on the recurrence a
few steps at a time (while they sit in cache), so each backward step is five element-wise
calls and one product, and the weight gradients are one product each over all steps.

`mask` (T, B, 1) bool marks live steps of variable-length sequences (packed-sequence
semantics): a finished (or, for the reverse direction, not yet started) sequence keeps
its state, and its gate gradients are zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lapnet.scratch import workspace

NAME = "lstm"
GATES = 4


@lru_cache(maxsize=64)
def _order(H: int) -> tuple[np.ndarray, np.ndarray]:
    """Row permutation from torch's i|f|g|o to the kernel's o|i|f|g, and its inverse."""
    perm = np.arange(4 * H).reshape(4, H)[[3, 0, 1, 2]].ravel()
    return perm, np.argsort(perm)


SLAB_MIN = 512  # B*H from which gate-major products pay for their extra BLAS calls


def chunk_steps(T: int, BH: int, budget: int = 16384) -> int:
    """Steps per block of backward precomputation: small enough to stay in cache, large
    enough that tiny batches do not pay Python's per-call cost at every step."""
    return max(1, min(T, budget // max(BH, 1)))


def _blocks(T: int, k: int, reverse: bool):
    """Blocks [t0, t1) of k steps, in the order backward visits them."""
    starts = range(0, T, k)
    for t0 in starts if reverse else reversed(starts):
        yield t0, min(T, t0 + k)


@dataclass
class LSTMCache:
    """What backward needs from forward: inputs, activated gates, states, weights."""

    x: np.ndarray  # (T, B, D) layer input, time-major
    A: np.ndarray  # (T, 4, B, H) activated gates o, i, f (slot 3: g's pre-activation), gate-major
    TGC: np.ndarray  # (T+1, 3, B, H) per row: tanh(c_t) | g_t | c_{t-1}; c_T in the last row
    hs: np.ndarray  # (T+1, B, H) hidden states incl. h0
    w_ih: np.ndarray  # (4H, D) kernel order, unscaled
    w_hh: np.ndarray  # (4H, H) kernel order, unscaled
    mask: np.ndarray | None  # (T, B, 1) bool
    partial: np.ndarray | None  # (T,) bool: some sequence is not live at step t
    reverse: bool

    @property
    def p(self) -> int:
        """Row of TGC / hs that holds the state *before* step t (and step t's g, tanh(c)) is t + p."""
        return 1 if self.reverse else 0

    def gates(self) -> dict[str, np.ndarray]:
        """Gate activations in time-major (T, B, H) arrays, torch's names, and the cell c_t."""
        T, p = self.A.shape[0], self.p
        return {"i": self.A[:, 1], "f": self.A[:, 2], "g": self.TGC[p : T + p, 1], "o": self.A[:, 0],
                "c": self.TGC[1 - p : T + 1 - p, 2]}


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
    perm = _order(H)[0]
    w_ih_k, w_hh_k = w_ih[perm], w_hh[perm]  # (4H, D), (4H, H) kernel order
    sign = np.ones(4 * H, dt)
    sign[: 3 * H] = -1.0  # sigmoid rows negated: the product is -a, so exp gives e^-a directly
    w_hh_s = np.ascontiguousarray((w_hh_k * sign[:, None]).T)  # (H, 4H)
    bias = (b_ih + b_hh)[perm] * sign  # (4H,)

    # Gates are stored gate-major, (4, B, H) per step: each gate is then one contiguous
    # slab and every element-wise call below runs as one flat loop.
    A = workspace.empty((T, 4, B, H), dt)  # big per-call arrays are recycled (see workspace.py)
    bias4 = np.broadcast_to(bias.reshape(4, 1, H), (4, B, H))
    wide = B * H >= SLAB_MIN  # big slabs: products straight into gate-major order
    if wide:
        # the input projection of every step and gate: batched (B, D) x (D, H) products
        w_ih4 = (w_ih_k * sign[:, None]).reshape(4, H, D).transpose(0, 2, 1)  # (4, D, H)
        np.matmul(x[:, None], w_ih4, out=A)  # (T, 4, B, H)
        A += bias4
        w_hh4 = np.ascontiguousarray(w_hh_s.reshape(H, 4, H).transpose(1, 0, 2))  # (4, H, H)
        tmp = workspace.empty((4, B, H), dt)
        XPg = None
    else:
        # tiny slabs: one product per step, regrouped by the add (fewer calls)
        XP = np.matmul(x.reshape(T * B, D), (w_ih_k * sign[:, None]).T)  # (T*B, 4H)
        XP += bias
        XPg = XP.reshape(T, B, 4, H).transpose(0, 2, 1, 3)  # (T, 4, B, H) view
        tmp = np.empty((B, 4 * H), dt)
    tmpg = tmp if wide else tmp.reshape(B, 4, H).transpose(1, 0, 2)  # (4, B, H)
    hs = workspace.empty((T + 1, B, H), dt)
    # tanh(c_t) | g_t | c_{t-1} side by side: one product gives i*g and f*c_{t-1}, and backward
    # multiplies all three by the sigmoid derivatives o(1-o) | i(1-i) | f(1-f) in one call
    TGC = workspace.empty((T + 1, 3, B, H), dt)
    # forward: state before step t sits in row t, after it in row t+1; reverse: t+1 -> t
    p, n = (1, 0) if reverse else (0, 1)
    hs[T if reverse else 0] = h0
    TGC[T if reverse else 0, 2] = c0
    prod = np.empty((2, B, H), dt)
    # np.dot with out= costs less per call than np.matmul (it matters at tiny sizes)
    mul, add, exp, tanh, recip, dot, matmul = np.multiply, np.add, np.exp, np.tanh, np.reciprocal, np.dot, np.matmul
    # adding an array is cheaper per call than adding a Python scalar, but big slabs would read it
    ones = dt.type(1.0) if wide else np.ones((3, B, H), dt)
    # per-step views made once (list() slices in C), so the loop body only calls ufuncs
    AL, S = list(A), list(A[:, :3])  # S: the o|i|f slabs of step t
    XPL = AL if wide else list(XPg)
    IF, Gpre, O = list(A[:, 1:3]), list(A[:, 3]), list(A[:, 0])
    HS, GC = list(hs), list(TGC[:, 1:3])
    TC, G, C = list(TGC[:, 0]), list(TGC[:, 1]), list(TGC[:, 2])
    ig, fc = prod[0], prod[1]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    with np.errstate(over="ignore"):  # e^-a = inf for a << 0 gives 1 / (1 + inf) = 0, as it should
        for t in steps:
            s, h_prev, h, c, tct = S[t], HS[t + p], HS[t + n], C[t + n], TC[t + p]
            if wide:
                matmul(h_prev, w_hh4, tmp)  # (4, B, H)
            else:
                dot(h_prev, w_hh_s, tmp)  # (B, 4H)
            add(XPL[t], tmpg, AL[t])  # (4, B, H)
            exp(s, s)  # o, i, f: sigmoid(a) = 1 / (1 + e^-a)
            add(s, ones, s)
            recip(s, s)
            tanh(Gpre[t], G[t + p])  # g, beside c_{t-1}
            mul(IF[t], GC[t + p], prod)  # (2, B, H): i*g | f*c_{t-1}
            add(ig, fc, c)
            tanh(c, tct)
            mul(O[t], tct, h)
            if partial is not None and partial[t]:  # finished sequences keep their state
                np.copyto(h, h_prev, where=~mask[t])
                np.copyto(c, C[t + p], where=~mask[t])
    y = hs[:T] if reverse else hs[1:]
    h_n, c_n = (hs[0], TGC[0, 2]) if reverse else (hs[T], TGC[T, 2])
    return y, h_n, c_n, LSTMCache(x, A, TGC, hs, w_ih_k, w_hh_k, mask, partial, reverse)


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
    x, A, TGC, hs, mask, partial, reverse = (cache.x, cache.A, cache.TGC, cache.hs, cache.mask, cache.partial,
                                             cache.reverse)
    T, _, B, H = A.shape
    dt = A.dtype
    p = cache.p
    O, I, F = A[:, 0], A[:, 1], A[:, 2]  # (T, B, H)
    S3 = A[:, 0:3]  # (T, 3, B, H) o | i | f
    TGC3 = TGC[p : T + p]  # (T, 3, B, H) tanh(c_t) | g_t | c_{t-1}
    tc, G = TGC3[:, 0], TGC3[:, 1]
    h_prev = hs[p : T + p]
    k = chunk_steps(T, B * H)
    # per step: dc_t += dh_t * P;  d(o) = dh_t * Po;  d(i|f|g pre-activation) = dc_t * (Qi|Qf|Qg)
    R = workspace.empty((k, 5, B, H), dt)  # P | Po | Qi | Qf | Qg, gate-major like A
    # slot 0 of dGx is scratch for dh*P, so that one call fills it and d(o) together
    dGx = workspace.empty((T, B, 5, H), dt)
    dG = dGx[:, :, 1:].reshape(T, B, 4 * H)  # (T, B, 4H) view: gradient on the pre-activations
    assert np.shares_memory(dG, dGx)
    w_hh = cache.w_hh
    dh = np.empty((B, H), dt)
    dh_rec = np.zeros((B, H), dt) if dh_n is None else np.array(dh_n, dt)  # from step t+1
    dc = np.zeros((B, H), dt) if dc_n is None else np.array(dc_n, dt)
    dh3, dc3 = dh[None], dc[None]  # (1, B, H)
    mul, add, dot = np.multiply, np.add, np.dot
    # per-step views made once
    dGg = dGx.transpose(0, 2, 1, 3)  # (T, 5, B, H) view
    SCR_O, SCR, IFG = list(dGg[:, 0:2]), list(dGx[:, :, 0]), list(dGg[:, 2:5])
    DG, Fl = list(dG), list(F)
    DY = list(dy) if dy is not None else None
    RP, RQ = list(R[:, 0:2]), list(R[:, 2:5])
    for t0, t1 in _blocks(T, k, reverse):
        m = t1 - t0
        sl = slice(t0, t1)
        # factors free of the recurrence, computed for a block of steps while it is in cache
        r = R[:m]
        po_q = r[:, 1:4]
        np.subtract(1.0, S3[sl], po_q)
        po_q *= S3[sl]
        po_q *= TGC3[sl]  # tanh(c) o(1-o) | g i(1-i) | c_{t-1} f(1-f)
        P, Qg = r[:, 0], r[:, 4]
        mul(tc[sl], tc[sl], P)
        np.subtract(1.0, P, P)
        P *= O[sl]  # o (1 - tanh(c)^2)
        mul(G[sl], G[sl], Qg)
        np.subtract(1.0, Qg, Qg)
        Qg *= I[sl]  # i (1 - g^2)
        for t in range(t0, t1) if reverse else range(t1 - 1, t0 - 1, -1):
            j = t - t0
            if dy is not None:
                add(DY[t], dh_rec, dh)
            else:
                dh[...] = dh_rec
            cut = partial is not None and partial[t]
            if cut:
                live = mask[t]  # (B, 1)
                dh_skip, dc_skip = dh * ~live, dc * ~live  # a finished sequence passes its gradient on
                dh *= live
                dc *= live
            mul(dh3, RP[j], SCR_O[t])  # dh*P (scratch) | d(o)
            add(dc, SCR[t], dc)
            mul(dc3, RQ[j], IFG[t])  # d(i) | d(f) | d(g)
            mul(dc, Fl[t], dc)
            dot(DG[t], w_hh, dh_rec)  # (B, H)
            if cut:
                dh_rec += dh_skip
                dc += dc_skip
    T_B = T * B
    dG2 = dG.reshape(T_B, 4 * H)
    dx = np.matmul(dG2, cache.w_ih).reshape(T, B, -1)  # (T, B, D)
    inv = _order(H)[1]
    db = dGx.sum(axis=(0, 1))[1:].reshape(4 * H)[inv]  # contiguous reduction, scratch slot dropped
    grads = {
        "w_ih": (dG2.T @ x.reshape(T_B, -1))[inv],  # (4H, D)
        "w_hh": (dG2.T @ h_prev.reshape(T_B, H))[inv],  # (4H, H)
        "b_ih": db,
        "b_hh": db.copy(),
    }
    return dx, dh_rec, dc, grads
