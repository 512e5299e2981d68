"""The three cells as the equations read: RNN, LSTM and GRU, one time step at a time.

This file is for reading. It is what `rnn.py`, `lstm.py` and `gru.py` compute, written
with nothing but the maths: one layer, one direction, full-length sequences, a Python loop
over time whose body is the cell's equations, and a backward loop that applies the chain
rule to them in reverse. The fast kernels rearrange the same arithmetic (all steps' input
projections in one product, gates stored side by side, preallocated buffers, weight
gradients as one product over all steps); tests/test_scratch_reference.py checks that the
two agree to 1e-12 and that this file alone matches torch.nn.RNN/LSTM/GRU in float64.
`benchmarks/engine.py --reference` times it against both.

Notation (PyTorch's): x_t (B, D) input at step t, h_t (B, H) hidden state, c_t (B, H) the
LSTM's cell; weights in torch's layout, w_ih (G*H, D), w_hh (G*H, H), b_ih, b_hh (G*H,)
with the G gate blocks stacked in torch's order (LSTM i|f|g|o, GRU r|z|n). Shapes here
are batch-first: x (B, T, D) -> hs (B, T, H).

Backward convention: `dhs` (B, T, H) is dL/dh_t from above at every step and `dh_T`
(B, H) the gradient on the final state; every function returns dL/dx, dL/d(initial
state) and the parameter gradients keyed like the weights (w_ih, w_hh, b_ih, b_hh).

    hs, h_T, cache = rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    dx, dh0, grads = rnn_backward(dhs, dh_T, cache)
"""

from __future__ import annotations

import numpy as np


def sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-a), written so that neither branch overflows."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _zero_grads(w_ih, w_hh, b_ih, b_hh) -> dict[str, np.ndarray]:
    return {"w_ih": np.zeros_like(w_ih), "w_hh": np.zeros_like(w_hh),
            "b_ih": np.zeros_like(b_ih), "b_hh": np.zeros_like(b_hh)}


# --- vanilla RNN ---------------------------------------------------------------------------
#   h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity: str = "tanh"):
    """x (B, T, D), h0 (B, H) -> hs (B, T, H), h_T (B, H), cache."""
    act = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0.0))
    T = x.shape[1]
    h, hs, pre = h0, [], []
    for t in range(T):
        a = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, H) pre-activation
        h = act(a)
        pre.append(a)
        hs.append(h)
    cache = {"x": x, "h0": h0, "hs": hs, "pre": pre, "w": (w_ih, w_hh, b_ih, b_hh), "nonlinearity": nonlinearity}
    return np.stack(hs, axis=1), h, cache  # (B, T, H)


def rnn_backward(dhs, dh_T, cache):
    """dhs (B, T, H), dh_T (B, H) -> dx (B, T, D), dh0 (B, H), grads."""
    x, hs, pre = cache["x"], cache["hs"], cache["pre"]
    w_ih, w_hh, b_ih, b_hh = cache["w"]
    g = _zero_grads(w_ih, w_hh, b_ih, b_hh)
    dx = np.zeros_like(x)
    dh_next = dh_T  # dL/dh_t arriving from step t+1 (the final state's gradient at t = T-1)
    for t in reversed(range(x.shape[1])):
        h_prev = hs[t - 1] if t > 0 else cache["h0"]
        dh = dhs[:, t] + dh_next  # h_t feeds both the output at t and step t+1
        if cache["nonlinearity"] == "tanh":
            da = dh * (1.0 - hs[t] ** 2)  # tanh'(a) = 1 - tanh(a)^2
        else:
            da = dh * (pre[t] > 0)  # relu'(a) = 1 where a > 0
        g["w_ih"] += da.T @ x[:, t]
        g["w_hh"] += da.T @ h_prev
        g["b_ih"] += da.sum(0)
        g["b_hh"] += da.sum(0)
        dx[:, t] = da @ w_ih
        dh_next = da @ w_hh  # to h_{t-1}: this product, repeated T times, is what vanishes or explodes
    return dx, dh_next, g


# --- LSTM ----------------------------------------------------------------------------------
#   i, f, o = sigmoid(.), g = tanh(.)    each (x_t W_i*^T + b_i* + h_{t-1} W_h*^T + b_h*)
#   c_t = f * c_{t-1} + i * g            the cell: added to, not multiplied through a weight
#   h_t = o * tanh(c_t)


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """x (B, T, D), h0, c0 (B, H) -> hs (B, T, H), (h_T, c_T), cache."""
    T = x.shape[1]
    h, c = h0, c0
    steps = []
    for t in range(T):
        a = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, 4H): i | f | g | o
        ai, af, ag, ao = np.split(a, 4, axis=1)  # 4 x (B, H)
        i, f, g, o = sigmoid(ai), sigmoid(af), np.tanh(ag), sigmoid(ao)
        c_prev, h_prev = c, h
        c = f * c_prev + i * g
        h = o * np.tanh(c)
        steps.append({"i": i, "f": f, "g": g, "o": o, "c": c, "c_prev": c_prev, "h": h, "h_prev": h_prev})
    cache = {"x": x, "steps": steps, "w": (w_ih, w_hh, b_ih, b_hh)}
    return np.stack([s["h"] for s in steps], axis=1), (h, c), cache


def lstm_backward(dhs, dh_T, dc_T, cache):
    """dhs (B, T, H), dh_T, dc_T (B, H) -> dx (B, T, D), (dh0, dc0), grads."""
    x, steps = cache["x"], cache["steps"]
    w_ih, w_hh, b_ih, b_hh = cache["w"]
    gr = _zero_grads(w_ih, w_hh, b_ih, b_hh)
    dx = np.zeros_like(x)
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(x.shape[1])):
        s = steps[t]
        i, f, g, o, c = s["i"], s["f"], s["g"], s["o"], s["c"]
        dh = dhs[:, t] + dh_next
        tanh_c = np.tanh(c)
        do = dh * tanh_c
        dc = dc_next + dh * o * (1.0 - tanh_c**2)  # the cell's gradient: from step t+1 and through h_t
        di, df, dg = dc * g, dc * s["c_prev"], dc * i
        dc_next = dc * f  # to c_{t-1}: scaled by the forget gate only, no weight matrix in between
        da = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g**2), do * o * (1.0 - o)],
                            axis=1)  # (B, 4H) dL/d(pre-activation): sigmoid' = s(1-s), tanh' = 1-t^2
        gr["w_ih"] += da.T @ x[:, t]
        gr["w_hh"] += da.T @ s["h_prev"]
        gr["b_ih"] += da.sum(0)
        gr["b_hh"] += da.sum(0)
        dx[:, t] = da @ w_ih
        dh_next = da @ w_hh
    return dx, (dh_next, dc_next), gr


# --- GRU -----------------------------------------------------------------------------------
#   r, z = sigmoid(x_t W_i*^T + b_i* + h_{t-1} W_h*^T + b_h*)
#   n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))      form="pytorch"
#   n = tanh(x_t W_in^T + b_in + (r * h_{t-1}) W_hn^T + b_hn)      form="textbook" (Cho et al.)
#   h_t = (1 - z) * n + z * h_{t-1}


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, form: str = "pytorch"):
    """x (B, T, D), h0 (B, H) -> hs (B, T, H), h_T (B, H), cache."""
    H = h0.shape[1]
    w_hr_hz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]  # (2H, H), (H, H)
    b_hr_hz, b_hn = b_hh[: 2 * H], b_hh[2 * H :]
    h, steps = h0, []
    for t in range(x.shape[1]):
        ax_r, ax_z, ax_n = np.split(x[:, t] @ w_ih.T + b_ih, 3, axis=1)  # input side, 3 x (B, H)
        ah_r, ah_z = np.split(h @ w_hr_hz.T + b_hr_hz, 2, axis=1)  # hidden side of r and z
        r, z = sigmoid(ax_r + ah_r), sigmoid(ax_z + ah_z)
        if form == "pytorch":
            hn = h @ w_hn.T + b_hn  # (B, H), then gated by r
            n = np.tanh(ax_n + r * hn)
        else:
            hn = (r * h) @ w_hn.T + b_hn  # the gate applied to h before the product
            n = np.tanh(ax_n + hn)
        h_prev, h = h, (1.0 - z) * n + z * h
        steps.append({"r": r, "z": z, "n": n, "hn": hn, "h_prev": h_prev, "h": h})
    cache = {"x": x, "steps": steps, "w": (w_ih, w_hh, b_ih, b_hh), "form": form}
    return np.stack([s["h"] for s in steps], axis=1), h, cache


def gru_backward(dhs, dh_T, cache):
    """dhs (B, T, H), dh_T (B, H) -> dx (B, T, D), dh0 (B, H), grads."""
    x, steps = cache["x"], cache["steps"]
    w_ih, w_hh, b_ih, b_hh = cache["w"]
    H = dh_T.shape[1]
    w_hn = w_hh[2 * H :]
    gr = _zero_grads(w_ih, w_hh, b_ih, b_hh)
    dx = np.zeros_like(x)
    dh_next = dh_T
    for t in reversed(range(x.shape[1])):
        s = steps[t]
        r, z, n, hn, h_prev = s["r"], s["z"], s["n"], s["hn"], s["h_prev"]
        dh = dhs[:, t] + dh_next
        dn = dh * (1.0 - z)
        dz = dh * (h_prev - n)
        dh_prev = dh * z  # the direct path: h_t = ... + z * h_{t-1}
        dan = dn * (1.0 - n**2)  # dL/d(pre-activation of n)
        if cache["form"] == "pytorch":
            dr = dan * hn
            dhn = dan * r  # dL/d(h W_hn^T + b_hn)
            dh_n_side = dhn @ w_hn  # to h_{t-1} through W_hn
            hn_input = h_prev  # what W_hn multiplied
        else:
            drh = dan @ w_hn  # dL/d(r * h_{t-1})
            dr = drh * h_prev
            dhn = dan
            dh_n_side = drh * r
            hn_input = r * h_prev
        dar, daz = dr * r * (1.0 - r), dz * z * (1.0 - z)
        dax = np.concatenate([dar, daz, dan], axis=1)  # (B, 3H) input side r | z | n
        dah_rz = np.concatenate([dar, daz], axis=1)  # (B, 2H) hidden side r | z
        gr["w_ih"] += dax.T @ x[:, t]
        gr["b_ih"] += dax.sum(0)
        gr["w_hh"][: 2 * H] += dah_rz.T @ h_prev
        gr["w_hh"][2 * H :] += dhn.T @ hn_input
        gr["b_hh"] += np.concatenate([dah_rz, dhn], axis=1).sum(0)
        dx[:, t] = dax @ w_ih
        dh_next = dh_prev + dah_rz @ w_hh[: 2 * H] + dh_n_side
    return dx, dh_next, gr
