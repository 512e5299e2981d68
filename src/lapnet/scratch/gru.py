"""GRU: one layer, one direction, forward and backward through time (the kernel).

Read `reference.py` (gru_forward / gru_backward) first: the same maths as a plain loop.

PyTorch's form (the default, and the only one that matches `torch.nn.GRU`):

    r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
    n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))       candidate
    h_t = (1 - z) * n + z * h_{t-1}

The textbook form (the notebook's Exercise 1, Cho et al. 2014) applies the reset gate to
h before the product instead:

    n = tanh(W_in x_t + b_in + W_hn (r * h_{t-1}) + b_hn)

The two agree when r = 1 everywhere, or when W_hn = 0 and b_hn = 0 (with W_hn = 0
torch's form still adds r * b_hn where the textbook form adds b_hn); with the same weights
their hidden states differ (tests/test_scratch_parity.py::test_textbook_gru_does_not_match_torch,
tests/test_scratch_reference.py::test_textbook_gru_reference_is_not_torchs). The notebook
also writes h_t = (1 - z) h_{t-1} + z n, the same cell with z relabelled 1 - z, and one
matrix on [h, x]; lapnet keeps torch's convention in both forms so that one set of weights
serves both, and `reference.gru_weights_from_notebook` maps the notebook's weights onto the
textbook form (z block negated) exactly.

Weights in torch's layout: w_ih (3H, D) = W_ir|W_iz|W_in, w_hh (3H, H), b_ih, b_hh (3H,).
`mask`, `partial` and `reverse` mean what they mean in lstm.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAME = "gru"
GATES = 3


@dataclass
class GRUCache:
    """What backward needs from forward."""

    x: np.ndarray  # (T, B, D)
    RZ: np.ndarray  # (T, B, 2, H) activated r, z
    N: np.ndarray  # (T, B, H) candidate n
    GHn: np.ndarray  # (T, B, H) W_hn h + b_hn (pytorch) or W_hn (r*h) + b_hn (textbook)
    hs: np.ndarray  # (T+1, B, H)
    w_ih: np.ndarray
    w_hh: np.ndarray
    mask: np.ndarray | None
    partial: np.ndarray | None
    reverse: bool
    form: str

    def gates(self) -> dict[str, np.ndarray]:
        """Gate activations in time-major (T, B, H) arrays."""
        return {"r": self.RZ[:, :, 0], "z": self.RZ[:, :, 1], "n": self.N}


def forward(x, w_ih, w_hh, b_ih, b_hh, h0, mask=None, partial=None, reverse=False, form="pytorch"):
    """Run one GRU layer over a whole sequence.

    Args:
        x: (T, B, D) time-major input.
        w_ih, w_hh, b_ih, b_hh: torch-layout parameters.
        h0: (B, H) initial state.
        mask, partial, reverse: see lstm.forward.
        form: "pytorch" or "textbook" (see module docstring).

    Returns:
        y (T, B, H), h_n (B, H), cache.
    """
    T, B, D = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    sign = np.ones(3 * H, dt)
    sign[: 2 * H] = -1.0  # r, z rows negated: the product is -a and sigmoid(a) = 1 / (1 + exp(-a))
    b = b_ih * sign
    b[: 2 * H] -= b_hh[: 2 * H]  # b_hr, b_hz fold into the input projection; b_hn sits inside r*(.)
    b_hn = b_hh[2 * H :]
    XP = np.matmul(x.reshape(T * B, D), (w_ih * sign[:, None]).T).reshape(T, B, 3 * H)  # (T, B, 3H)
    XP += b
    textbook = form == "textbook"
    if textbook:
        w_rz = np.ascontiguousarray((-w_hh[: 2 * H]).T)  # (H, 2H)
        w_nT = np.ascontiguousarray(w_hh[2 * H :].T)  # (H, H)
    else:
        w_hhT = np.ascontiguousarray((w_hh * sign[:, None]).T)  # (H, 3H)
    RZ = np.empty((T, B, 2, H), dt)
    N = np.empty((T, B, H), dt)
    GHn = np.empty((T, B, H), dt)
    hs = np.empty((T + 1, B, H), dt)
    p, n = (1, 0) if reverse else (0, 1)
    hs[T if reverse else 0] = h0
    gh = np.empty((B, 3 * H), dt)
    ones = np.ones((B, 2 * H), dt)
    rh = np.empty((B, H), dt)
    with np.errstate(over="ignore"):  # exp(-a) = inf for a << 0 gives sigmoid 0, as it should
        for t in range(T - 1, -1, -1) if reverse else range(T):
            h_prev, h, rz, xp = hs[t + p], hs[t + n], RZ[t].reshape(B, 2 * H), XP[t]
            if textbook:
                np.matmul(h_prev, w_rz, out=gh[:, : 2 * H])
            else:
                np.dot(h_prev, w_hhT, gh)  # (B, 3H); np.dot costs less per call than np.matmul
            np.add(xp[:, : 2 * H], gh[:, : 2 * H], out=rz)
            np.exp(rz, out=rz)
            np.add(rz, ones, out=rz)
            np.reciprocal(rz, out=rz)
            r, z, ghn, cand = RZ[t, :, 0], RZ[t, :, 1], GHn[t], N[t]
            if textbook:
                np.multiply(r, h_prev, out=rh)
                np.matmul(rh, w_nT, out=ghn)
                ghn += b_hn
                np.add(ghn, xp[:, 2 * H :], out=cand)
            else:
                np.add(gh[:, 2 * H :], b_hn, out=ghn)
                np.multiply(r, ghn, out=cand)
                cand += xp[:, 2 * H :]
            np.tanh(cand, out=cand)
            np.subtract(h_prev, cand, out=h)  # h = n + z * (h_prev - n)
            h *= z
            h += cand
            if partial is not None and partial[t]:
                np.copyto(h, h_prev, where=~mask[t])
    y = hs[:T] if reverse else hs[1:]
    h_n = hs[0] if reverse else hs[T]
    return y, h_n, GRUCache(x, RZ, N, GHn, hs, w_ih, w_hh, mask, partial, reverse, form)


def backward(dy, dh_n, cache: GRUCache):
    """Backpropagate through one GRU layer.

    Args:
        dy: (T, B, H) gradient on the outputs, or None.
        dh_n: (B, H) gradient on the final state, or None.
        cache: from `forward`.

    Returns:
        dx (T, B, D), dh0 (B, H), grads dict w_ih, w_hh, b_ih, b_hh in torch's layout.
    """
    if cache.form == "textbook":
        return _backward_textbook(dy, dh_n, cache)
    x, RZ, N, GHn, hs, mask, partial, reverse = (cache.x, cache.RZ, cache.N, cache.GHn, cache.hs,
                                                 cache.mask, cache.partial, cache.reverse)
    T, B, _, H = RZ.shape
    dt = RZ.dtype
    R, Z = RZ[:, :, 0], RZ[:, :, 1]
    h_prev = hs[1:] if reverse else hs[:T]
    # Factors free of the recurrence, for all T at once:
    # d(z preact) = dh * Fz;  d(n preact) = dh * Fn;  d(r preact) = d(n preact) * Fr
    FzFn = np.empty((T, B, 2, H), dt)
    Fz, Fn = FzFn[:, :, 0], FzFn[:, :, 1]
    np.subtract(h_prev, N, out=Fz)
    Fz *= Z
    Fz *= 1.0 - Z  # (h_prev - n) z (1 - z)
    np.multiply(N, N, out=Fn)
    np.subtract(1.0, Fn, out=Fn)
    Fn *= 1.0 - Z  # (1 - z)(1 - n^2)
    Fr = np.subtract(1.0, R)
    Fr *= R
    Fr *= GHn  # (W_hn h + b_hn) r (1 - r)

    dGI = np.empty((T, B, 3, H), dt)  # gradient on the input-side pre-activations r|z|n
    dGH = np.empty((T, B, 3, H), dt)  # ... on the hidden-side ones (n differs: times r)
    w_hh = cache.w_hh
    dh = np.empty((B, H), dt)
    dh_rec = np.zeros((B, H), dt) if dh_n is None else np.array(dh_n, dt)
    tmp = np.empty((B, H), dt)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        if dy is not None:
            np.add(dy[t], dh_rec, out=dh)
        else:
            dh[...] = dh_rec
        if partial is not None and partial[t]:
            dh_skip = dh * ~mask[t]
            dh *= mask[t]  # every gate gradient is linear in dh: zero rows stay zero
        gi, gh = dGI[t], dGH[t]
        np.multiply(dh[:, None, :], FzFn[t], out=gi[:, 1:])
        np.multiply(gi[:, 2], Fr[t], out=gi[:, 0])
        gh[:, :2] = gi[:, :2]
        np.multiply(gi[:, 2], R[t], out=gh[:, 2])
        np.dot(gh.reshape(B, 3 * H), w_hh, dh_rec)  # (B, H)
        np.multiply(dh, Z[t], out=tmp)
        dh_rec += tmp
        if partial is not None and partial[t]:
            dh_rec += dh_skip
    T_B = T * B
    gi2, gh2 = dGI.reshape(T_B, 3 * H), dGH.reshape(T_B, 3 * H)
    grads = {
        "w_ih": gi2.T @ x.reshape(T_B, -1),  # (3H, D)
        "w_hh": gh2.T @ h_prev.reshape(T_B, H),  # (3H, H)
        "b_ih": gi2.sum(axis=0),
        "b_hh": gh2.sum(axis=0),
    }
    dx = np.matmul(gi2, cache.w_ih).reshape(T, B, -1)  # (T, B, D)
    return dx, dh_rec, grads


def _backward_textbook(dy, dh_n, cache: GRUCache):
    """Backward of the textbook form: n = tanh(W_in x + b_in + W_hn (r*h) + b_hn).

    Clarity over speed: this form exists to be compared with torch's, not to train fast.
    """
    x, RZ, N, hs, mask, partial, reverse = (cache.x, cache.RZ, cache.N, cache.hs, cache.mask,
                                            cache.partial, cache.reverse)
    T, B, _, H = RZ.shape
    dt = RZ.dtype
    w_hh = cache.w_hh
    h_prev_all = hs[1:] if reverse else hs[:T]
    dGI = np.zeros((T, B, 3, H), dt)
    RH = RZ[:, :, 0] * h_prev_all  # (T, B, H) r * h_{t-1}
    dh_rec = np.zeros((B, H), dt) if dh_n is None else np.array(dh_n, dt)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        dh = dh_rec + (dy[t] if dy is not None else 0.0)
        live = mask[t] if (partial is not None and partial[t]) else True
        dh_skip = dh * ~live if live is not True else 0.0
        dh = dh * live
        r, z, n, h_prev = RZ[t, :, 0], RZ[t, :, 1], N[t], h_prev_all[t]
        dn = dh * (1.0 - z) * (1.0 - n * n)  # (B, H)
        dz = dh * (h_prev - n) * z * (1.0 - z)
        drh = dn @ w_hh[2 * H :]  # gradient on r * h_{t-1}
        dr = drh * h_prev * r * (1.0 - r)
        dGI[t, :, 0], dGI[t, :, 1], dGI[t, :, 2] = dr, dz, dn
        dh_rec = dh * z + drh * r + np.concatenate([dr, dz], axis=1) @ w_hh[: 2 * H] + dh_skip
    T_B = T * B
    gi2 = dGI.reshape(T_B, 3 * H)
    hp2 = h_prev_all.reshape(T_B, H)
    w_hh_grad = np.concatenate([gi2[:, : 2 * H].T @ hp2, gi2[:, 2 * H :].T @ RH.reshape(T_B, H)])
    db = gi2.sum(axis=0)
    grads = {"w_ih": gi2.T @ x.reshape(T_B, -1), "w_hh": w_hh_grad, "b_ih": db, "b_hh": db.copy()}
    dx = np.matmul(gi2, cache.w_ih).reshape(T, B, -1)
    return dx, dh_rec, grads
