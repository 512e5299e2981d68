"""LSTM: one layer, one direction, forward and backward through time (the kernel).

Read `reference.py` (lstm_forward / lstm_backward) first: the same maths as a plain loop.

Notation (PyTorch's, batch-first at the public API, time-major inside the kernel):

    x_t (B, D)  h_t, c_t (B, H)
    i = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
    f = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
    g = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate
    o = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Weights in torch's layout: w_ih (4H, D) = W_ii|W_if|W_ig|W_io, w_hh (4H, H), b_ih, b_hh (4H,).

Why it is fast. Two arrangements of the same maths, picked by the slab size B*H:

Big slabs (B*H >= SLAB_MIN: arithmetic and memory dominate). The input projection for
all T steps is computed before the loop, and inside it every per-step array is a
contiguous slab. Gates are stored gate-major, (4, B, H) per step (a column slice of a
(B, 4H) array would make NumPy run one inner loop per row), in the order o|i|f|g so the
three sigmoid gates form one slab whose weight rows are negated up front: the product
gives -a, and sigmoid(a) = 1 / (1 + exp(-a)) is three in-place calls (with AVX2, NumPy's
float32 exp was twice as fast as its tanh; with AVX-512 the two cost about the same). tanh(c_t), g_t and c_{t-1} sit side by side, so
one call forms i*g | f*c_{t-1} and backward gets all three sigmoid-derivative factors in
one call. Every call writes into preallocated buffers; the backward pass computes the
factors that do not depend on the recurrence a few steps at a time (while they sit in
cache), so each backward step is five element-wise calls and one product, and the weight
gradients are one product each over all steps. The big per-call arrays come from
`workspace` (recycled between calls, no page faults).

Small slabs (B*H < SLAB_MIN: every NumPy call costs ~0.5 us whatever it computes, so
the count of calls per step is the cost): `_forward_small` and `_backward_small` spend
flops to save calls, 8 per step forward and 5 backward (see their docstrings), and keep
their buffers and per-step views between calls of the same shape (`_Plan`).

`mask` (T, B, 1) bool marks live steps of variable-length sequences (packed-sequence
semantics): a finished (or, for the reverse direction, not yet started) sequence keeps
its state, and its gate gradients are zero.
"""

from __future__ import annotations

import sys
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


SLAB_MIN = 512  # B*H from which the gate-major big-slab path runs; below it, the fewest-calls path


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
    S: np.ndarray  # (T, 3, B, H) sigmoid gates o, i, f (a gate-major view)
    TGC: np.ndarray  # (T+1, 3, B, H) per row: tanh(c_t) | g_t | c_{t-1}; c_T in the last row
    hs: np.ndarray  # (T+1, B, H) hidden states incl. h0
    w_ih: np.ndarray  # (4H, D) kernel order, unscaled
    w_hh: np.ndarray  # (4H, H) kernel order, unscaled
    mask: np.ndarray | None  # (T, B, 1) bool
    partial: np.ndarray | None  # (T,) bool: some sequence is not live at step t
    reverse: bool
    Z: np.ndarray | None = None  # small-slab path: (T, B, D+H+1) rows x_t | h_{t-1} | 1 each step saw

    @property
    def p(self) -> int:
        """Row of TGC / hs that holds the state *before* step t (and step t's g, tanh(c)) is t + p."""
        return 1 if self.reverse else 0

    def gates(self) -> dict[str, np.ndarray]:
        """Gate activations in time-major (T, B, H) arrays, torch's names, and the cell c_t."""
        T, p = self.S.shape[0], self.p
        return {"i": self.S[:, 1], "f": self.S[:, 2], "g": self.TGC[p : T + p, 1], "o": self.S[:, 0],
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
    if B * H < SLAB_MIN:
        Wk = np.concatenate((w_ih, w_hh, (b_ih + b_hh)[:, None]), axis=1)[perm]  # (4H, D+H+1) kernel order
        return _forward_small(x, Wk, h0, c0, mask, partial, reverse)
    w_ih_k, w_hh_k = w_ih[perm], w_hh[perm]  # (4H, D), (4H, H) kernel order
    sign = np.ones(4 * H, dt)
    sign[: 3 * H] = -1.0  # sigmoid rows negated: the product is -a, so exp gives e^-a directly
    w_hh_s = np.ascontiguousarray((w_hh_k * sign[:, None]).T)  # (H, 4H)
    bias = (b_ih + b_hh)[perm] * sign  # (4H,)

    # Gates are stored gate-major, (4, B, H) per step: each gate is then one contiguous
    # slab and every element-wise call below runs as one flat loop.
    A = workspace.empty((T, 4, B, H), dt)  # big per-call arrays are recycled (see workspace.py)
    # the input projection of every step and gate: batched (B, D) x (D, H) products
    w_ih4 = (w_ih_k * sign[:, None]).reshape(4, H, D).transpose(0, 2, 1)  # (4, D, H)
    np.matmul(x[:, None], w_ih4, out=A)  # (T, 4, B, H)
    A += bias.reshape(4, 1, H)
    w_hh4 = np.ascontiguousarray(w_hh_s.reshape(H, 4, H).transpose(1, 0, 2))  # (4, H, H)
    tmp = workspace.empty((4, B, H), dt)
    hs = workspace.empty((T + 1, B, H), dt)
    # tanh(c_t) | g_t | c_{t-1} side by side: one product gives i*g and f*c_{t-1}, and backward
    # multiplies all three by the sigmoid derivatives o(1-o) | i(1-i) | f(1-f) in one call
    TGC = workspace.empty((T + 1, 3, B, H), dt)
    # forward: state before step t sits in row t, after it in row t+1; reverse: t+1 -> t
    p, n = (1, 0) if reverse else (0, 1)
    hs[T if reverse else 0] = h0
    TGC[T if reverse else 0, 2] = c0
    prod = np.empty((2, B, H), dt)
    mul, add, exp, tanh, recip, matmul = np.multiply, np.add, np.exp, np.tanh, np.reciprocal, np.matmul
    one = dt.type(1.0)
    # per-step views made once (list() slices in C), so the loop body only calls ufuncs
    AL, S = list(A), list(A[:, :3])  # S: the o|i|f slabs of step t
    IF, Gpre, O = list(A[:, 1:3]), list(A[:, 3]), list(A[:, 0])
    HS, GC = list(hs), list(TGC[:, 1:3])
    TC, G, C = list(TGC[:, 0]), list(TGC[:, 1]), list(TGC[:, 2])
    ig, fc = prod[0], prod[1]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    with np.errstate(over="ignore"):  # e^-a = inf for a << 0 gives 1 / (1 + inf) = 0, as it should
        for t in steps:
            s, h_prev, h, c, tct = S[t], HS[t + p], HS[t + n], C[t + n], TC[t + p]
            matmul(h_prev, w_hh4, tmp)  # (4, B, H)
            add(AL[t], tmp, AL[t])  # (4, B, H)
            exp(s, s)  # o, i, f: sigmoid(a) = 1 / (1 + e^-a)
            add(s, one, s)
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
    return y, h_n, c_n, LSTMCache(x, A[:, :3], TGC, hs, w_ih_k, w_hh_k, mask, partial, reverse)


def _forward_small(x, Wk, h0, c0, mask, partial, reverse):
    """`forward` for small slabs (B*H < SLAB_MIN), arranged for the fewest NumPy calls per step.

    At such sizes every NumPy call costs the same ~0.5 us whatever it computes, so this
    path trades arithmetic for calls (8 per step instead of 10). The maths is unchanged:
      - row t+p of Z holds x_t | h_{t-1} | 1, so ONE product gives every gate's
        pre-activation, biases included (no separate input projection to add);
      - ONE tanh activates all gates: the sigmoid rows of the weights are halved, since
        sigmoid(a) = (1 + tanh(a/2)) / 2, which then costs a multiply and an add;
      - row t+p of R holds o | i | f | tanh(c_t) | g | c_{t-1}: the product writes o|i|f|.|g
        (a zero weight block leaves room for tanh(c_t)), i|f sits against g|c_{t-1} for
        one multiply, and backward finds tanh(c)|g|c_{t-1} beside o|i|f, as it expects.
    Wk (4H, D+H+1) is w_ih | w_hh | b_ih + b_hh in kernel order.
    """
    T, B, D = x.shape
    H = Wk.shape[0] // 4
    dt = x.dtype
    p = 1 if reverse else 0
    P = _plan(_ForwardPlan, T, B, D, H, dt, reverse)  # buffers and per-step views (reused when free)
    Wt, Z, R = P.Wt, P.Z, P.R
    np.multiply(Wk[: 3 * H], P.half, out=Wt[: 3 * H])  # tanh(a/2) for the sigmoid gates
    Wt[4 * H :] = Wk[3 * H :]
    Z[p : T + p, :, :D] = x
    Z[T if reverse else 0, :, D : D + H] = h0
    R[T if reverse else 0, :, 5 * H :] = c0
    prod, ig, fc, scale, shift, W = P.prod, P.ig, P.fc, P.scale, P.shift, P.W
    mul, add, tanh = np.multiply, np.add, np.tanh
    # np.dot costs less per call than np.matmul but writes only into contiguous rows (B = 1)
    dot = np.dot if B == 1 else np.matmul
    keep = P.no_mask  # steps where some sequence has finished: (finished (B, 1), h_{t-1}, c_{t-1})
    if partial is not None:
        order = range(T - 1, -1, -1) if reverse else range(T)
        keep = [(~mask[t], P.hs[t + p], P.C[t + p]) if partial[t] else None for t in order]
    for z, g5, o, i_f, tc, g_c, c, h, kept in zip(*P.steps, keep):
        dot(z, W, g5)  # (B, 5H) pre-activations, halved for o|i|f
        tanh(g5, g5)
        mul(g5, scale, g5)
        add(g5, shift, g5)  # o, i, f = (1 + tanh(a/2)) / 2
        mul(i_f, g_c, prod)  # (B, 2H): i*g | f*c_{t-1}
        add(ig, fc, c)
        tanh(c, tc)
        mul(o, tc, h)
        if kept is not None:  # finished sequences keep their state
            finished, h_prev, c_prev = kept
            np.copyto(h, h_prev, where=finished)
            np.copyto(c, c_prev, where=finished)
    return P.y, P.h_n, P.c_n, LSTMCache(P.x, P.S, P.TGC, P.hs, Wk[:, :D], Wk[:, D : D + H], mask, partial, reverse,
                                        P.rows)


class _Plan:
    """Buffers and per-step views of one small-slab call, kept for the next call of that shape.

    Why: at small sizes, making the per-step views (about 0.15 us each, 8 per step
    forward and 7 backward) and the buffers costs a quarter of a forward + backward. A
    plan is handed out again only when nothing outside it refers to its buffers or to the
    views it hands out (a cache, an output, a view of one): their reference counts are
    back to what the plan alone holds, the same test as in workspace.py.
    """

    _guarded: tuple = ()  # the buffers and every view the call hands out
    _counts: list[int] = []  # their reference counts when only the plan holds them

    def free(self) -> bool:
        return _refcounts(self._guarded) == self._counts


def _refcounts(objs) -> list[int]:
    return [sys.getrefcount(o) for o in objs]


_PLANS: dict[tuple, list[_Plan]] = {}
PLAN_BYTES = 4 * 2**20  # bigger plans are built per call and not kept
PLANS_MAX_BYTES = 64 * 2**20  # all kept plans together (many sequence lengths: the oldest free go)


def _plan(cls, *key) -> _Plan:
    """A free plan of class `cls` for this shape, or a new one (kept if small)."""
    plans = _PLANS.setdefault((cls, *key), [])
    for plan in plans:
        if plan.free():
            return plan
    plan = cls(*key)
    plan._counts = _refcounts(plan._guarded)  # here, once the builder's local names are gone
    if len(plans) < 4 and plan.nbytes <= PLAN_BYTES:
        kept = sum(q.nbytes for qs in _PLANS.values() for q in qs)
        for qs in list(_PLANS.values()):  # dicts keep insertion order: oldest shapes first
            for q in [q for q in qs if kept + plan.nbytes > PLANS_MAX_BYTES and q.free()]:
                qs.remove(q)
                kept -= q.nbytes
        if kept + plan.nbytes <= PLANS_MAX_BYTES:
            plans.append(plan)
    return plan


class _ForwardPlan(_Plan):
    """Z (T+1, B, D+H+1) rows x_t | h_{t-1} | 1, R (T+1, B, 6H) rows o|i|f|tanh(c_t)|g|c_{t-1},
    the weight buffer, and the per-step views in the order the steps run."""

    def __init__(self, T, B, D, H, dt, reverse):
        p, n = (1, 0) if reverse else (0, 1)
        K = D + H + 1
        self.Wt = np.empty((5 * H, K), dt)  # o|i|f|(zero)|g rows
        self.Wt[3 * H : 4 * H] = 0.0
        self.W = self.Wt.T  # (D+H+1, 5H)
        self.half = np.full((3 * H, K), 0.5, dt)
        self.Z = Z = np.empty((T + 1, B, K), dt)
        Z[:, :, D + H] = 1.0
        Z[0 if reverse else T, :, :D] = 0.0  # the row that only receives the final state
        self.R = R = np.empty((T + 1, B, 6 * H), dt)
        self.nbytes = Z.nbytes + R.nbytes
        self.prod = np.empty((B, 2 * H), dt)
        self.ig, self.fc = self.prod[:, :H], self.prod[:, H:]
        self.scale, self.shift = _sigmoid_fix(B, H, dt)  # (B, 5H): o|i|f get (1 + t) / 2, the rest stay
        self.hs, self.C = Z[:, :, D : D + H], R[:, :, 5 * H :]  # (T+1, B, H) views
        # per-row views, in the order the steps run: rows t+p (step t's own) and t+n (where
        # its new state goes), so that zip hands them out without any indexing
        rows = slice(T, 0, -1) if reverse else slice(0, T)
        news = slice(T - 1, None, -1) if reverse else slice(1, T + 1)
        self.steps = (list(Z[rows]), list(R[rows, :, : 5 * H]), list(R[rows, :, :H]), list(R[rows, :, H : 3 * H]),
                      list(R[rows, :, 3 * H : 4 * H]), list(R[rows, :, 4 * H :]), list(self.C[news]),
                      list(self.hs[news]))
        self.no_mask = [None] * T
        # what the call hands out: outputs and the cache's views
        Rg = R.reshape(T + 1, B, 6, H).transpose(0, 2, 1, 3)  # (T+1, 6, B, H) gate-major view
        self.y = self.hs[:T] if reverse else self.hs[1:]
        self.h_n, self.c_n = (self.hs[0], Rg[0, 5]) if reverse else (self.hs[T], Rg[T, 5])
        self.x, self.rows = Z[p : T + p, :, :D], Z[p : T + p]
        self.S, self.TGC = Rg[p : T + p, :3], Rg[:, 3:]
        self._guarded = (Z, R, self.y, self.h_n, self.c_n, self.x, self.rows, self.S, self.TGC, self.hs, self.C)


@lru_cache(maxsize=16)
def _sigmoid_fix(B: int, H: int, dt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Constant (B, 5H) rows: times 1/2 then plus 1/2 on o|i|f, identity on the rest."""
    scale, shift = np.ones((B, 5, H), dt), np.zeros((B, 5, H), dt)
    scale[:, :3], shift[:, :3] = 0.5, 0.5
    for a in (scale, shift):
        a.flags.writeable = False
    return scale.reshape(B, 5 * H), shift.reshape(B, 5 * H)


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
    x, S3, TGC, hs, mask, partial, reverse = (cache.x, cache.S, cache.TGC, cache.hs, cache.mask, cache.partial,
                                              cache.reverse)
    T, _, B, H = S3.shape  # S3: (T, 3, B, H) o | i | f
    if B * H < SLAB_MIN:
        return _backward_small(dy, dh_n, dc_n, cache)
    dt = S3.dtype
    p = cache.p
    O, I, F = S3[:, 0], S3[:, 1], S3[:, 2]  # (T, B, H)
    TGC3 = TGC[p : T + p]  # (T, 3, B, H) tanh(c_t) | g_t | c_{t-1}
    k = chunk_steps(T, B * H)
    # per step: dc_t += dh_t * P;  d(o) = dh_t * Po;  d(i|f|g pre-activation) = dc_t * (Qi|Qf|Qg)
    R = workspace.empty((k, 5, B, H), dt)  # P | Po | Qi | Qf | Qg, gate-major like S3
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
        sl = slice(t0, t1)
        # factors free of the recurrence, computed for a block of steps while it is in cache
        _factors(S3[sl], TGC3[sl], R[: t1 - t0])
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
    db = dGx.sum(axis=(0, 1))[1:].reshape(4 * H)  # contiguous reduction, scratch slot dropped
    dx, grads = _param_grads(dG.reshape(T * B, 4 * H), db, x, hs[p : T + p], cache)
    return dx, dh_rec, dc, grads


def _factors(S3, TGC3, R):
    """The backward factors that do not depend on the recurrence, for a block of m steps.

    S3 (m, 3, B, H) o|i|f and TGC3 (m, 3, B, H) tanh(c)|g|c_{t-1} in; R (m, 5, B, H) out:
    P = o (1 - tanh(c)^2) | Po = tanh(c) o(1-o) | Qi = g i(1-i) | Qf = c_{t-1} f(1-f) | Qg = i (1 - g^2).
    """
    po_q = R[:, 1:4]
    np.subtract(1.0, S3, po_q)
    po_q *= S3
    po_q *= TGC3  # tanh(c) o(1-o) | g i(1-i) | c_{t-1} f(1-f)
    P, Qg, tc, g = R[:, 0], R[:, 4], TGC3[:, 0], TGC3[:, 1]
    np.multiply(tc, tc, P)
    np.subtract(1.0, P, P)
    P *= S3[:, 0]  # o (1 - tanh(c)^2)
    np.multiply(g, g, Qg)
    np.subtract(1.0, Qg, Qg)
    Qg *= S3[:, 1]  # i (1 - g^2)


def _param_grads(dG2, db, x, h_prev, cache: LSTMCache):
    """dx and the weight gradients (torch's layout) from the pre-activation gradients.

    dG2 (T*B, 4H) kernel order, db (4H,) its sum over steps and batch; x (T, B, D) and
    h_prev (T, B, H) as each step saw them.
    """
    T, B, D = x.shape
    H = h_prev.shape[2]
    inv = _order(H)[1]
    dx = np.matmul(dG2, cache.w_ih).reshape(T, B, D)  # (T, B, D)
    db = db[inv]
    grads = {
        "w_ih": (dG2.T @ x.reshape(T * B, D))[inv],  # (4H, D)
        "w_hh": (dG2.T @ h_prev.reshape(T * B, H))[inv],  # (4H, H)
        "b_ih": db,
        "b_hh": db.copy(),
    }
    return dx, grads


def _backward_small(dy, dh_n, dc_n, cache: LSTMCache):
    """`backward` for small slabs (B*H < SLAB_MIN), arranged for the fewest NumPy calls per step.

    Same maths; at these sizes a call costs the same whatever it computes, and a call that
    broadcasts costs about 2.5 plain ones, so every per-step call here works on operands of
    one shape: dh is kept 4 times side by side and dc 3 times, and the factors are laid
    out to match. Per step and batch row, the gradient row E holds
        dh*P | dh*P | dh*P | d(o) | d(i) | d(f) | d(g) | dy of the step visited next
    and the factor row Fc holds P | P | P | Po | Qi | Qf | Qg | f | f | f, so a step is
        E[0:4] = DH4 * Fc[0:4];  DC3 += E[0:3];  E[4:7] = DC3 * Fc[4:7];  DC3 *= Fc[7:10];
        DH4 = E[3:8] x [W_hh; I] tiled 4 times  (the next step's dh, its dy included).
    """
    S3, TGC, mask, partial, reverse = cache.S, cache.TGC, cache.mask, cache.partial, cache.reverse
    T, _, B, H = S3.shape
    dt = S3.dtype
    p = cache.p
    P = _plan(_BackwardPlan, T, B, H, dt, reverse)  # buffers and per-step views (reused when free)
    Fg, E, DH4, DC3 = P.Fg, P.E, P.DH4, P.DC3
    _factors(S3, TGC[p : T + p], Fg[:, 2:7])  # P | Po | Qi | Qf | Qg
    Fg[:, 0:2] = Fg[:, 2:3]  # P three times
    Fg[:, 7:10] = S3[:, 2:3]  # f three times
    # slot 7: dy of the step visited next (none after the last one visited)
    nxt = slice(0, T - 1) if reverse else slice(1, T)
    if dy is None:
        E[nxt, :, 7] = 0.0
    else:
        E[nxt, :, 7] = dy[1:] if reverse else dy[:-1]
    P.w4[: 4 * H] = cache.w_hh[:, None]  # [W_hh; I] four times side by side
    DH4.fill(0.0)
    if dh_n is not None:
        DH4 += dh_n[:, None]
    if dy is not None:
        DH4 += dy[0 if reverse else T - 1][:, None]  # the first visited step's own dy
    DC3.fill(0.0)
    if dc_n is not None:
        DC3 += dc_n[:, None]
    DH4, DC3, w4 = P.DH4r, P.DC3r, P.w4r  # (B, 4H), (B, 3H), (5H, 4H)
    mul, add = np.multiply, np.add
    dot = np.dot if B == 1 else np.matmul  # np.dot reads strided rows but writes contiguous ones
    live = P.no_mask
    if partial is not None:
        live = [mask[t] if partial[t] else None for t in (range(T) if reverse else range(T - 1, -1, -1))]
    for e_po, e_p, e_ifg, e_dot, f_po, f_q, f_f, alive in zip(*P.steps, live):
        if alive is not None:  # (B, 1)
            dh_skip, dc_skip = DH4 * ~alive, DC3 * ~alive  # a finished sequence passes its gradient on
            DH4 *= alive
            DC3 *= alive
        mul(DH4, f_po, e_po)  # dh*P (x3) | d(o)
        add(DC3, e_p, DC3)
        mul(DC3, f_q, e_ifg)  # d(i) | d(f) | d(g)
        mul(DC3, f_f, DC3)
        dot(e_dot, w4, DH4)  # (B, 4H): the next visited step's dh, 4 times
        if alive is not None:
            DH4 += dh_skip
            DC3 += dc_skip
    dG2 = E[:, :, 3:7].reshape(T * B, 4 * H)  # (T*B, 4H) o|i|f|g
    dx = np.matmul(dG2, cache.w_ih).reshape(T, B, -1)  # (T, B, D)
    # one product against the rows x_t | h_{t-1} | 1 gives dW_ih | dW_hh | db at once
    D = dx.shape[2]
    G = (dG2.T @ cache.Z.reshape(T * B, D + H + 1))[_order(H)[1]]  # (4H, D+H+1), torch's order
    grads = {"w_ih": G[:, :D].copy(), "w_hh": G[:, D : D + H].copy(), "b_ih": G[:, -1].copy(), "b_hh": G[:, -1].copy()}
    return dx, DH4[:, :H].copy(), DC3[:, :H].copy(), grads


class _BackwardPlan(_Plan):
    """E (T, B, 8, H) gradient rows, Fc (T, B, 10, H) factor rows, dh x4, dc x3, [W_hh; I] x4,
    and the per-step views in the order the steps are visited. Nothing of it leaves backward."""

    def __init__(self, T, B, H, dt, reverse):
        self.Fc = Fc = np.empty((T, B, 10, H), dt)
        self.Fg = Fc.transpose(0, 2, 1, 3)  # (T, 10, B, H) gate-major view
        self.E = E = np.empty((T, B, 8, H), dt)
        E[T - 1 if reverse else 0, :, 7] = 0.0  # no step is visited after this one
        self.nbytes = Fc.nbytes + E.nbytes
        self.w4 = np.empty((5 * H, 4, H), dt)
        self.w4[4 * H :] = np.eye(H, dtype=dt)[:, None]
        self.w4r = self.w4.reshape(5 * H, 4 * H)
        self.DH4, self.DC3 = np.empty((B, 4, H), dt), np.empty((B, 3, H), dt)
        self.DH4r, self.DC3r = self.DH4.reshape(B, 4 * H), self.DC3.reshape(B, 3 * H)
        Er, Fr = E.reshape(T, B, 8 * H), Fc.reshape(T, B, 10 * H)
        order = slice(None) if reverse else slice(None, None, -1)  # steps in the order they are visited
        self.steps = (list(Er[order, :, : 4 * H]), list(Er[order, :, : 3 * H]), list(Er[order, :, 4 * H : 7 * H]),
                      list(Er[order, :, 3 * H :]), list(Fr[order, :, : 4 * H]), list(Fr[order, :, 4 * H : 7 * H]),
                      list(Fr[order, :, 7 * H :]))
        self.no_mask = [None] * T
        self._guarded = (Fc, E, self.DH4, self.DC3, self.w4)
