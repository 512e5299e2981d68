"""The three cells as the equations read: RNN, LSTM and GRU, one time step at a time.

This file is for reading. It is what `rnn.py`, `lstm.py` and `gru.py` compute, written
with nothing but the maths: one layer, one direction, full-length sequences, a Python loop
over time whose body is the cell's equations, and a backward loop that applies the chain
rule to them in reverse. The fast kernels rearrange the same arithmetic (all steps' input
projections in one product, gates stored side by side, preallocated buffers, weight
gradients as one product over all steps); tests/test_scratch_reference.py checks that the
two agree to 1e-12 and that this file alone matches torch.nn.RNN/LSTM/GRU in float64.
`benchmarks/engine.py --reference` times it against both.

Notation: the notebook's and the engine's (which is PyTorch's). The notebook writes one
column vector per sequence and one matrix per block (a gate or the candidate) acting on
[h_{t-1}, x_t]; the engine keeps a batch of row vectors and torch's two matrices and two
biases per block:

    notebook                              engine (here and in torch.nn.RNN/LSTM/GRU)
    ------------------------------------  ------------------------------------------------------
    x_t (D,), h_t (H,) column vectors     x_t (B, D), h_t (B, H): one row per sequence
    W_hh h_{t-1} + W_xh x_t + b_h         h_{t-1} @ w_hh.T + x_t @ w_ih.T + b_ih + b_hh
                                            (W_xh is w_ih, W_hh is w_hh, b_h is b_ih + b_hh)
    W_f . [h_{t-1}, x_t] + b_f            W_f[:, :H] is w_hh's f block, W_f[:, H:] w_ih's;
      (one matrix on the concatenation)     b_f is b_if + b_hf (torch keeps two biases)
    one bias per block                    b_ih, b_hh (G*H,) both: only their sum matters,
                                            except the GRU's b_hn in torch's form
    blocks stored apart: W_f, W_i, ...    G blocks stacked in one matrix, w_ih (G*H, D),
                                            w_hh (G*H, H); LSTM i|f|g|o, GRU r|z|n
    LSTM f, i, o, C~_t, C_t               f, i, o, g (= C~_t), c (= C_t)
    GRU z, r, h~_t                        z, r, n (= h~_t); torch's z is 1 - the notebook's z,
                                            and torch's n applies r after W_hn (form below)
    GRU h_t = (1-z) h_{t-1} + z h~        h_t = (1 - z) * n + z * h_{t-1}

A row-vector product x_t @ w.T (B, G*H) is the notebook's W x_t (G*H,) transposed, one row
per sequence: the weights are the same numbers. Shapes here are batch-first:
x (B, T, D) -> hs (B, T, H). `gru_weights_from_notebook` maps Exercise 1's weights onto
the engine's textbook GRU exactly.

Backward convention: `dhs` (B, T, H) is dL/dh_t from above at every step and `dh_T`
(B, H) the gradient on the final state; every function returns dL/dx, dL/d(initial
state) and the parameter gradients keyed like the weights (w_ih, w_hh, b_ih, b_hh), and
with `return_steps=True` also the total dL/dh_t (and dL/dc_t for the LSTM) at every step,
(B, T, H): what flows back into step t from its output and from step t+1.

b_ih and b_hh always receive the same gradient, except the GRU's n block in torch's form:
both are added to the same pre-activation a, so da/db_ih = da/db_hh = 1 and each gets
dL/da summed over the batch and the steps. That is also why one of them is redundant.

    hs, h_T, cache = rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    dx, dh0, grads = rnn_backward(dhs, dh_T, cache)
    dx, dh0, grads, dh_steps = rnn_backward(dhs, dh_T, cache, return_steps=True)

Every function first checks the shapes of what it is given and refuses a wrong one with a
LapnetError naming it ("h0 must be (B, H) = (2, 4), got (1, 2, 4)"): NumPy would otherwise
broadcast it into a wrong answer without a word.
"""

from __future__ import annotations

import numpy as np

from lapnet.errors import LapnetError


def sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-a), written so that neither branch overflows."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_shapes(x, w, gates: int, **states) -> None:
    """Refuse wrong shapes before any work: NumPy would broadcast most of them into a wrong
    answer without a word. x (B, T, D); w = (w_ih, w_hh, b_ih, b_hh) with w_ih (G*H, D),
    w_hh (G*H, H), b_ih and b_hh (G*H,), G = `gates`; each state (B, H), `dhs` (B, T, H)."""
    w, G = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), w)), f"{gates}H" if gates > 1 else "H"
    if np.ndim(x) != 3 or 0 in np.shape(x):
        raise LapnetError(f"x must be (B, T, D) with B, T, D >= 1, got {np.shape(x)}")
    if np.ndim(w["w_hh"]) != 2 or 0 in np.shape(w["w_hh"]):
        raise LapnetError(f"w_hh must be ({G}, H) with H >= 1, got {np.shape(w['w_hh'])}")
    (B, T, D), H = np.shape(x), np.shape(w["w_hh"])[1]
    GH = gates * H
    want = {"w_ih": (f"{G}, D", (GH, D)), "w_hh": (f"{G}, H", (GH, H)), "b_ih": (f"{G},", (GH,)),
            "b_hh": (f"{G},", (GH,)), "dhs": ("B, T, H", (B, T, H))}
    for name, a in {**w, **states}.items():
        dims, shape = want.get(name, ("B, H", (B, H)))  # any other name is a state: h0, c0, dh_T, dc_T
        if np.shape(a) != shape:
            raise LapnetError(f"{name} must be ({dims}) = {shape}, got {np.shape(a)}")


def _zero_grads(w_ih, w_hh, b_ih, b_hh) -> dict[str, np.ndarray]:
    return {"w_ih": np.zeros_like(w_ih), "w_hh": np.zeros_like(w_hh),
            "b_ih": np.zeros_like(b_ih), "b_hh": np.zeros_like(b_hh)}


# --- vanilla RNN ---------------------------------------------------------------------------
#   h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity: str = "tanh"):
    """x (B, T, D), h0 (B, H) -> hs (B, T, H), h_T (B, H), cache."""
    _check_shapes(x, (w_ih, w_hh, b_ih, b_hh), 1, h0=h0)
    if nonlinearity not in ("tanh", "relu"):
        raise LapnetError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    act = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0.0))
    T = x.shape[1]
    h, hs, pre = h0, [], []
    for t in range(T):
        a = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, D) @ (D, H) + (B, H) @ (H, H) -> (B, H)
        h = act(a)
        pre.append(a)
        hs.append(h)
    cache = {"x": x, "h0": h0, "hs": hs, "pre": pre, "w": (w_ih, w_hh, b_ih, b_hh), "nonlinearity": nonlinearity}
    return np.stack(hs, axis=1), h, cache  # T x (B, H) -> (B, T, H)


def rnn_backward(dhs, dh_T, cache, return_steps: bool = False):
    """dhs (B, T, H), dh_T (B, H) -> dx (B, T, D), dh0 (B, H), grads[, dh_steps (B, T, H)].

    With `return_steps`, dh_steps[:, t] is the total dL/dh_t: dhs[:, t] plus what step t+1
    sends back (the final state's dh_T at the last step).
    """
    _check_shapes(cache["x"], cache["w"], 1, dhs=dhs, dh_T=dh_T)
    x, hs, pre = cache["x"], cache["hs"], cache["pre"]
    w_ih, w_hh, b_ih, b_hh = cache["w"]
    g = _zero_grads(w_ih, w_hh, b_ih, b_hh)
    dx = np.zeros_like(x)
    dh_steps = np.zeros_like(dhs)
    dh_next = dh_T  # dL/dh_t arriving from step t+1 (the final state's gradient at t = T-1)
    for t in reversed(range(x.shape[1])):
        h_prev = hs[t - 1] if t > 0 else cache["h0"]
        dh = dhs[:, t] + dh_next  # h_t feeds both the output at t and step t+1
        dh_steps[:, t] = dh
        if cache["nonlinearity"] == "tanh":
            da = dh * (1.0 - hs[t] ** 2)  # tanh'(a) = 1 - tanh(a)^2
        else:
            da = dh * (pre[t] > 0)  # relu'(a) = 1 where a > 0
        g["w_ih"] += da.T @ x[:, t]  # (H, B) @ (B, D) -> (H, D): summed over the batch
        g["w_hh"] += da.T @ h_prev  # (H, B) @ (B, H) -> (H, H)
        g["b_ih"] += da.sum(0)  # (H,); both biases sit in the same sum a, so both get dL/da
        g["b_hh"] += da.sum(0)
        dx[:, t] = da @ w_ih  # (B, H) @ (H, D) -> (B, D)
        dh_next = da @ w_hh  # (B, H) to h_{t-1}: this product, repeated T times, is what vanishes or explodes
    return (dx, dh_next, g, dh_steps) if return_steps else (dx, dh_next, g)


# --- LSTM ----------------------------------------------------------------------------------
#   i, f, o = sigmoid(.), g = tanh(.)    each (x_t W_i*^T + b_i* + h_{t-1} W_h*^T + b_h*)
#   c_t = f * c_{t-1} + i * g            the cell: added to, not multiplied through a weight
#   h_t = o * tanh(c_t)


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """x (B, T, D), h0, c0 (B, H) -> hs (B, T, H), (h_T, c_T), cache."""
    _check_shapes(x, (w_ih, w_hh, b_ih, b_hh), 4, h0=h0, c0=c0)
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
    return np.stack([s["h"] for s in steps], axis=1), (h, c), cache  # T x (B, H) -> (B, T, H)


def lstm_backward(dhs, dh_T, dc_T, cache, return_steps: bool = False):
    """dhs (B, T, H), dh_T, dc_T (B, H) -> dx (B, T, D), (dh0, dc0), grads[, (dh_steps, dc_steps)].

    With `return_steps`, dh_steps[:, t] and dc_steps[:, t] (B, T, H) are the total dL/dh_t
    and dL/dc_t: from the output at t, from step t+1, and for c_t also through h_t.
    """
    _check_shapes(cache["x"], cache["w"], 4, dhs=dhs, dh_T=dh_T, dc_T=dc_T)
    x, steps = cache["x"], cache["steps"]
    w_ih, w_hh, b_ih, b_hh = cache["w"]
    gr = _zero_grads(w_ih, w_hh, b_ih, b_hh)
    dx = np.zeros_like(x)
    dh_steps, dc_steps = np.zeros_like(dhs), np.zeros_like(dhs)
    dh_next, dc_next = dh_T, dc_T
    for t in reversed(range(x.shape[1])):
        s = steps[t]
        i, f, g, o, c = s["i"], s["f"], s["g"], s["o"], s["c"]
        dh = dhs[:, t] + dh_next
        tanh_c = np.tanh(c)
        do = dh * tanh_c
        dc = dc_next + dh * o * (1.0 - tanh_c**2)  # the cell's gradient: from step t+1 and through h_t
        dh_steps[:, t], dc_steps[:, t] = dh, dc
        di, df, dg = dc * g, dc * s["c_prev"], dc * i
        dc_next = dc * f  # to c_{t-1}: scaled by the forget gate only, no weight matrix in between
        da = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g**2), do * o * (1.0 - o)],
                            axis=1)  # 4 x (B, H) -> (B, 4H) dL/d(pre-activation): sigmoid' = s(1-s), tanh' = 1-t^2
        gr["w_ih"] += da.T @ x[:, t]  # (4H, B) @ (B, D) -> (4H, D)
        gr["w_hh"] += da.T @ s["h_prev"]  # (4H, B) @ (B, H) -> (4H, H)
        gr["b_ih"] += da.sum(0)  # (4H,); the same for b_hh: both sit in the same sum a
        gr["b_hh"] += da.sum(0)
        dx[:, t] = da @ w_ih  # (B, 4H) @ (4H, D) -> (B, D)
        dh_next = da @ w_hh  # (B, 4H) @ (4H, H) -> (B, H)
    dstate0 = (dh_next, dc_next)
    return (dx, dstate0, gr, (dh_steps, dc_steps)) if return_steps else (dx, dstate0, gr)


# --- GRU -----------------------------------------------------------------------------------
#   r, z = sigmoid(x_t W_i*^T + b_i* + h_{t-1} W_h*^T + b_h*)
#   n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))      form="pytorch" (torch.nn.GRU)
#   n = tanh(x_t W_in^T + b_in + (r * h_{t-1}) W_hn^T + b_hn)      form="textbook" (Cho et al.)
#   h_t = (1 - z) * n + z * h_{t-1}                                both forms: torch's z
# The notebook's Exercise 1 is the textbook form with z relabelled 1 - z (it writes
# h_t = (1 - z) h_{t-1} + z h~) and one matrix on [h, x]: `gru_weights_from_notebook` maps it.


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, form: str = "pytorch"):
    """x (B, T, D), h0 (B, H) -> hs (B, T, H), h_T (B, H), cache."""
    _check_shapes(x, (w_ih, w_hh, b_ih, b_hh), 3, h0=h0)
    if form not in ("pytorch", "textbook"):
        raise LapnetError(f"form must be 'pytorch' or 'textbook', got {form!r}")
    H = h0.shape[1]
    w_hr_hz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]  # (2H, H), (H, H)
    b_hr_hz, b_hn = b_hh[: 2 * H], b_hh[2 * H :]  # (2H,), (H,)
    h, steps = h0, []
    for t in range(x.shape[1]):
        ax_r, ax_z, ax_n = np.split(x[:, t] @ w_ih.T + b_ih, 3, axis=1)  # (B, 3H) -> input side, 3 x (B, H)
        ah_r, ah_z = np.split(h @ w_hr_hz.T + b_hr_hz, 2, axis=1)  # (B, 2H) -> hidden side of r and z
        r, z = sigmoid(ax_r + ah_r), sigmoid(ax_z + ah_z)
        if form == "pytorch":
            hn = h @ w_hn.T + b_hn  # (B, H), then gated by r
            n = np.tanh(ax_n + r * hn)
        else:
            hn = (r * h) @ w_hn.T + b_hn  # (B, H): the gate applied to h before the product
            n = np.tanh(ax_n + hn)
        h_prev, h = h, (1.0 - z) * n + z * h
        steps.append({"r": r, "z": z, "n": n, "hn": hn, "h_prev": h_prev, "h": h})
    cache = {"x": x, "steps": steps, "w": (w_ih, w_hh, b_ih, b_hh), "form": form}
    return np.stack([s["h"] for s in steps], axis=1), h, cache  # T x (B, H) -> (B, T, H)


def gru_backward(dhs, dh_T, cache, return_steps: bool = False):
    """dhs (B, T, H), dh_T (B, H) -> dx (B, T, D), dh0 (B, H), grads[, dh_steps (B, T, H)].

    With `return_steps`, dh_steps[:, t] is the total dL/dh_t (from the output at t and from
    step t+1).
    """
    _check_shapes(cache["x"], cache["w"], 3, dhs=dhs, dh_T=dh_T)
    x, steps = cache["x"], cache["steps"]
    w_ih, w_hh, b_ih, b_hh = cache["w"]
    H = dh_T.shape[1]
    w_hn = w_hh[2 * H :]  # (H, H)
    gr = _zero_grads(w_ih, w_hh, b_ih, b_hh)
    dx = np.zeros_like(x)
    dh_steps = np.zeros_like(dhs)
    dh_next = dh_T
    for t in reversed(range(x.shape[1])):
        s = steps[t]
        r, z, n, hn, h_prev = s["r"], s["z"], s["n"], s["hn"], s["h_prev"]
        dh = dhs[:, t] + dh_next
        dh_steps[:, t] = dh
        dn = dh * (1.0 - z)
        dz = dh * (h_prev - n)
        dh_prev = dh * z  # the direct path: h_t = ... + z * h_{t-1}
        dan = dn * (1.0 - n**2)  # dL/d(pre-activation of n)
        if cache["form"] == "pytorch":
            dr = dan * hn
            dhn = dan * r  # dL/d(h W_hn^T + b_hn): b_hn sits inside r * (.), so its gradient differs from b_in's
            dh_n_side = dhn @ w_hn  # (B, H) @ (H, H) -> (B, H): to h_{t-1} through W_hn
            hn_input = h_prev  # what W_hn multiplied
        else:
            drh = dan @ w_hn  # (B, H) dL/d(r * h_{t-1})
            dr = drh * h_prev
            dhn = dan  # b_in and b_hn both sit outside r here: the same gradient
            dh_n_side = drh * r
            hn_input = r * h_prev
        dar, daz = dr * r * (1.0 - r), dz * z * (1.0 - z)
        dax = np.concatenate([dar, daz, dan], axis=1)  # (B, 3H) input side r | z | n
        dah_rz = np.concatenate([dar, daz], axis=1)  # (B, 2H) hidden side r | z
        gr["w_ih"] += dax.T @ x[:, t]  # (3H, B) @ (B, D) -> (3H, D)
        gr["b_ih"] += dax.sum(0)  # (3H,)
        gr["w_hh"][: 2 * H] += dah_rz.T @ h_prev  # (2H, B) @ (B, H) -> (2H, H)
        gr["w_hh"][2 * H :] += dhn.T @ hn_input  # (H, B) @ (B, H) -> (H, H)
        gr["b_hh"] += np.concatenate([dah_rz, dhn], axis=1).sum(0)  # (B, 3H) -> (3H,)
        dx[:, t] = dax @ w_ih  # (B, 3H) @ (3H, D) -> (B, D)
        dh_next = dh_prev + dah_rz @ w_hh[: 2 * H] + dh_n_side  # (B, 2H) @ (2H, H) -> (B, H)
    return (dx, dh_next, gr, dh_steps) if return_steps else (dx, dh_next, gr)


def gru_weights_from_notebook(W_z, b_z, W_r, b_r, W_h, b_h) -> dict[str, np.ndarray]:
    """Exercise 1's weights as a state_dict for `scratch.GRU(D, H, gru_form="textbook")`.

    The notebook's GRUFromScratch, with column vectors and one matrix on [h_{t-1}, x_t]:

        z = sigmoid(W_z [h_{t-1}, x_t] + b_z)          r = sigmoid(W_r [h_{t-1}, x_t] + b_r)
        h~ = tanh(W_h [r * h_{t-1}, x_t] + b_h)        h_t = (1 - z) * h_{t-1} + z * h~

    is the engine's textbook form once (1) each (H, H + D) matrix is split, its first H
    columns (acting on h) going to w_hh's block and its last D (acting on x) to w_ih's;
    (2) each single bias goes to bias_ih and zeros to bias_hh (in the textbook form every
    bias sits outside the gates, so only the sum counts); (3) the z block, weights and
    bias, is negated: sigmoid(-a) = 1 - sigmoid(a), so the engine's z, the weight on
    h_{t-1}, becomes 1 - the notebook's z. The mapping is exact: the hidden states agree
    to rounding (tests/test_scratch_reference.py, 1e-12 in float64). Torch's own form
    (`torch.nn.GRU`) gates W_hn h + b_hn instead of h and cannot reproduce it.

        g = GRUFromScratch(3, 4)                                   # the notebook's class
        gru = scratch.GRU(3, 4, gru_form="textbook", dtype="float64")
        gru.load_state_dict(gru_weights_from_notebook(g.W_z, g.b_z, g.W_r, g.b_r, g.W_h, g.b_h))
        out, h_T, _ = gru.forward(np.stack(test_seq)[None])        # out[0, t] == g's h_{t+1}

    Args:
        W_z, W_r, W_h: (H, H + D) the notebook's matrices, columns ordered [h, x].
        b_z, b_r, b_h: (H,) their biases.

    Returns:
        weight_ih_l0 (3H, D), weight_hh_l0 (3H, H), bias_ih_l0, bias_hh_l0 (3H,), float64,
        blocks in torch's order r|z|n.
    """
    W = {k: np.array(v, dtype=np.float64) for k, v in (("W_z", W_z), ("W_r", W_r), ("W_h", W_h))}
    b = {k: np.array(v, dtype=np.float64) for k, v in (("b_z", b_z), ("b_r", b_r), ("b_h", b_h))}
    H = b["b_z"].shape[0] if b["b_z"].ndim == 1 else -1
    for k, v in b.items():
        if v.shape != (H,) or H < 1:
            raise LapnetError(f"gru_weights_from_notebook: {k} must be (H,) like b_z, got shape {v.shape}")
    for k, v in W.items():
        if v.ndim != 2 or v.shape[0] != H or v.shape[1] <= H:
            raise LapnetError(f"gru_weights_from_notebook: {k} must be (H, H + D) = ({H}, {H} + D) with D >= 1, "
                              f"got shape {v.shape}")
    if len({v.shape for v in W.values()}) != 1:
        raise LapnetError(f"gru_weights_from_notebook: W_z, W_r, W_h differ in shape: "
                          f"{W['W_z'].shape}, {W['W_r'].shape}, {W['W_h'].shape}")
    flip = {"W_z": -1.0, "W_r": 1.0, "W_h": 1.0}  # torch's z = 1 - notebook's z = sigmoid(-a)
    order = ("W_r", "W_z", "W_h")  # torch's block order r | z | n
    return {
        "weight_ih_l0": np.concatenate([flip[k] * W[k][:, H:] for k in order]),  # 3 x (H, D) -> (3H, D)
        "weight_hh_l0": np.concatenate([flip[k] * W[k][:, :H] for k in order]),  # 3 x (H, H) -> (3H, H)
        "bias_ih_l0": np.concatenate([b["b_r"], -b["b_z"], b["b_h"]]),  # (3H,)
        "bias_hh_l0": np.zeros(3 * H),
    }
