"""The readable cells (lapnet.scratch.reference) against torch and against the fast kernels.

float64, non-zero random biases and initial states, random upstream gradients on every output
step and on the final state(s), edge shapes (T=1, B=1, H=1).
"""

import numpy as np
import pytest
import torch

from lapnet import scratch
from lapnet.scratch import reference as ref

SHAPES = [(3, 6, 4, 5), (1, 1, 1, 1), (2, 9, 3, 1), (1, 4, 2, 3)]  # B, T, D, H
CASES = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None), ("gru", "pytorch")]


def _problem(kind, B, T, D, H, seed, nonlinearity=None):
    """A torch layer with random weights (biases included), inputs, initial and upstream gradients."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if kind == "rnn":
        mod = torch.nn.RNN(D, H, 1, batch_first=True, nonlinearity=nonlinearity, dtype=torch.float64)
    else:
        mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](D, H, 1, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for p in mod.parameters():
            p.normal_(0.0, 0.6)
    n_state = 2 if kind == "lstm" else 1
    return (mod, rng.standard_normal((B, T, D)), [rng.standard_normal((B, H)) for _ in range(n_state)],
            rng.standard_normal((B, T, H)), [rng.standard_normal((B, H)) for _ in range(n_state)])


def _weights(mod):
    return [p.detach().numpy().copy() for p in (mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0)]


def _reference(kind, x, state, dout, dstate, w, option):
    """The reference forward and backward -> out, final states, dx, d initial states, grads."""
    if kind == "rnn":
        out, h, cache = ref.rnn_forward(x, state[0], *w, nonlinearity=option)
        dx, dh0, g = ref.rnn_backward(dout, dstate[0], cache)
        return out, [h], dx, [dh0], g
    if kind == "lstm":
        out, (h, c), cache = ref.lstm_forward(x, state[0], state[1], *w)
        dx, (dh0, dc0), g = ref.lstm_backward(dout, dstate[0], dstate[1], cache)
        return out, [h, c], dx, [dh0, dc0], g
    out, h, cache = ref.gru_forward(x, state[0], *w, form=option)
    dx, dh0, g = ref.gru_backward(dout, dstate[0], cache)
    return out, [h], dx, [dh0], g


def _torch(mod, kind, x, state, dout, dstate):
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in state]  # (1, B, H)
    out, s_n = mod(xt, tuple(st) if kind == "lstm" else st[0])
    s_n = list(s_n) if kind == "lstm" else [s_n]
    loss = (out * torch.tensor(dout)).sum() + sum((a[0] * torch.tensor(g)).sum() for a, g in zip(s_n, dstate))
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in zip(("w_ih", "w_hh", "b_ih", "b_hh"),
                                                 (mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0))}
    return (out.detach().numpy(), [a[0].detach().numpy() for a in s_n], xt.grad.numpy(),
            [s.grad[0].numpy() for s in st], grads)


def _assert_same(a, b, tol, what):
    """Every output and gradient equal to `tol`, absolute or relative (a relu RNN's states grow large)."""
    out_a, st_a, dx_a, ds_a, g_a = a
    out_b, st_b, dx_b, ds_b, g_b = b
    np.testing.assert_allclose(out_a, out_b, rtol=tol, atol=tol, err_msg=f"{what}: output")
    for i, (p, q) in enumerate(zip(st_a, st_b)):
        np.testing.assert_allclose(p, q, rtol=tol, atol=tol, err_msg=f"{what}: final state {i}")
    np.testing.assert_allclose(dx_a, dx_b, rtol=tol, atol=tol, err_msg=f"{what}: dL/dx")
    for i, (p, q) in enumerate(zip(ds_a, ds_b)):
        np.testing.assert_allclose(p, q, rtol=tol, atol=tol, err_msg=f"{what}: dL/d initial state {i}")
    for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_allclose(g_a[k], g_b[k], rtol=tol, atol=tol, err_msg=f"{what}: d{k}")


@pytest.mark.parametrize("kind,option", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_cells_match_torch(kind, option, shape):
    mod, x, state, dout, dstate = _problem(kind, *shape, seed=sum(shape), nonlinearity=option)
    mine = _reference(kind, x, state, dout, dstate, _weights(mod), option)
    _assert_same(mine, _torch(mod, kind, x, state, dout, dstate), 1e-10, f"{kind} {option} {shape} vs torch")


def _fast(kind, option, x, state, dout, dstate, w):
    """The same problem through the engine's layer objects (the fast kernels)."""
    D, H = x.shape[2], w[1].shape[1]
    if kind == "rnn":
        layer = scratch.RNN(D, H, nonlinearity=option, dtype="float64")
    elif kind == "lstm":
        layer = scratch.LSTM(D, H, dtype="float64")
    else:
        layer = scratch.GRU(D, H, gru_form=option, dtype="float64")
    layer.load_state_dict(dict(zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), w)))
    pack = (lambda v: tuple(a[None] for a in v)) if kind == "lstm" else (lambda v: v[0][None])
    out, s_n, cache = layer.forward(x, pack(state))
    dx, ds0, g = layer.backward(dout, pack(dstate), cache)
    s_n, ds0 = (list(s_n), list(ds0)) if kind == "lstm" else ([s_n], [ds0])
    grads = {k: g[n] for k, n in zip(("w_ih", "w_hh", "b_ih", "b_hh"),
                                     ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))}
    return out, [a[0] for a in s_n], dx, [a[0] for a in ds0], grads


@pytest.mark.parametrize("kind,option", CASES + [("gru", "textbook")])
@pytest.mark.parametrize("shape", SHAPES + [(8, 5, 3, 70)])  # B*H = 560: the LSTM's big-slab path too
def test_fast_kernels_compute_what_the_reference_reads(kind, option, shape):
    mod, x, state, dout, dstate = _problem(kind, *shape, seed=7 + sum(shape), nonlinearity=option)
    w = _weights(mod)
    mine = _reference(kind, x, state, dout, dstate, w, option)
    _assert_same(_fast(kind, option, x, state, dout, dstate, w), mine, 1e-12, f"{kind} {option} {shape} fast vs reference")


def test_textbook_gru_reference_is_not_torchs():
    """The reset gate applied before the product (Cho et al.) is a different function from torch's."""
    mod, x, state, dout, dstate = _problem("gru", 2, 5, 3, 4, seed=3)
    textbook, _, _ = ref.gru_forward(x, state[0], *_weights(mod), form="textbook")
    pytorch, _, _ = ref.gru_forward(x, state[0], *_weights(mod), form="pytorch")
    assert np.max(np.abs(textbook - pytorch)) > 1e-3


def test_reference_sigmoid_is_finite_at_extremes():
    a = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    s = ref.sigmoid(a)
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[2] == 0.5 and s[-1] == 1.0
    np.testing.assert_allclose(s, 1.0 / (1.0 + np.exp(-np.clip(a, -700, 700))), rtol=1e-15, atol=1e-300)
