"""Diagnostics: gradient flow by autograd equals the NumPy engine's; gates reproduce the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lapnet import scratch
from lapnet.data.synthetic import adding_problem
from lapnet.diagnostics.clipping import clipped_cosines
from lapnet.diagnostics.gates import saturation, trace_gates
from lapnet.diagnostics.gradflow import hidden_grads_scratch, hidden_grads_torch, norms_by_distance
from lapnet.diagnostics.spectrum import spectrum_stats, whh_blocks
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import make_recurrent


def _random_biases(module, scale=0.5):
    with torch.no_grad():
        for n, p in module.named_parameters():
            if "bias" in n:
                p.normal_(0.0, scale)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_hidden_grads_autograd_equals_scratch(arch):
    torch.manual_seed(1)
    model = Forecaster(arch, 2, 6, 1).double()
    _random_biases(model)
    x, y = (torch.from_numpy(a).double() for a in adding_problem(3, 9, seed=5))
    g_t = hidden_grads_torch(model.rnn, model.head, x, lambda p: ((p - y) ** 2).sum(-1))
    W, b, yn = model.head.weight.detach().numpy(), model.head.bias.detach().numpy(), y.numpy()
    g_n = hidden_grads_scratch(scratch.from_torch(model.rnn), x.numpy(), lambda h: 2 * ((h @ W.T + b) - yn) @ W)
    assert g_t.shape == (3, 9, 6)
    np.testing.assert_allclose(g_n, g_t, rtol=1e-9, atol=1e-12)
    # and the gradient on h_t is the true one: perturbing h_t changes L_T as it says
    # (finite differences through the torch module, for the middle step of example 0)
    t, eps = 4, 1e-6
    with torch.no_grad():
        _, state = model.rnn(x[:, : t + 1])
        direction = torch.randn(6, dtype=torch.float64)

        def loss_from(st):
            _, s = model.rnn(x[:, t + 1 :], st)
            h = s[0] if isinstance(s, tuple) else s
            return float(((model.head(h[0]) - y) ** 2).sum())

        def shifted(sign):
            if isinstance(state, tuple):
                h, c = state[0].clone(), state[1]
                h[0, 0] += sign * eps * direction
                return (h, c)
            h = state.clone()
            h[0, 0] += sign * eps * direction
            return h

        fd = (loss_from(shifted(+1)) - loss_from(shifted(-1))) / (2 * eps)
    assert abs(fd - float(g_t[0, t] @ direction.numpy())) < 1e-6


def test_norms_by_distance_orders_from_the_last_step():
    g = np.zeros((2, 4, 3))
    g[:, -1] = 1.0  # only the last step has gradient
    n = norms_by_distance(g)
    assert n[0] == pytest.approx(np.sqrt(3)) and (n[1:] == 0).all()


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_gates_reproduce_the_model_and_match_the_engine(arch):
    torch.manual_seed(2)
    rnn = make_recurrent(arch, 4, 5, 2)
    _random_biases(rnn)
    x = torch.randn(2, 7, 4)
    tr = trace_gates(rnn, x)
    assert tr.max_abs_diff < 1e-5
    with torch.no_grad():
        out, _ = rnn(x)
    np.testing.assert_allclose(tr.layers[-1]["h"], out.double().numpy(), atol=1e-5)
    if arch == "rnn":
        return
    _, _, cache = scratch.from_torch(rnn.double()).forward(x.double().numpy())
    for layer in range(2):
        for name, v in cache.gates(layer).items():
            np.testing.assert_allclose(tr.layers[layer][name], v, atol=1e-12, err_msg=f"layer {layer} {name}")
    for g in ("i", "f", "o") if arch == "lstm" else ("r", "z"):
        v = tr.layers[0][g]
        assert v.min() >= 0.0 and v.max() <= 1.0


@pytest.mark.parametrize("arch, nonlinearity", [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")])
def test_traced_gates_are_the_cells_equations_in_float64(arch, nonlinearity):
    """The trace (scratch.reference's cells) gives torch's hidden states to rounding in float64,
    and its gates satisfy the cell's own update equations step by step."""
    torch.manual_seed(3)
    rnn = make_recurrent(arch, 3, 4, 2, nonlinearity=nonlinearity).double()
    _random_biases(rnn)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    tr = trace_gates(rnn, x, atol=1e-12)
    assert tr.max_abs_diff < 1e-12
    for rec in tr.layers:
        h_prev = np.concatenate([np.zeros_like(rec["h"][:, :1]), rec["h"][:, :-1]], axis=1)  # (B, T, H)
        if arch == "lstm":
            c_prev = np.concatenate([np.zeros_like(rec["c"][:, :1]), rec["c"][:, :-1]], axis=1)
            np.testing.assert_allclose(rec["c"], rec["f"] * c_prev + rec["i"] * rec["g"], rtol=0, atol=1e-14)
            np.testing.assert_allclose(rec["h"], rec["o"] * np.tanh(rec["c"]), rtol=0, atol=1e-14)
        elif arch == "gru":
            np.testing.assert_allclose(rec["h"], (1 - rec["z"]) * rec["n"] + rec["z"] * h_prev, rtol=0, atol=1e-14)
        else:
            assert list(rec) == ["h"] and ((rec["h"] >= 0).all() if nonlinearity == "relu" else (rec["h"] < 0).any())


def test_trace_gates_refuses_a_mismatch():
    rnn = make_recurrent("lstm", 3, 4)
    x = torch.randn(1, 5, 3)
    from lapnet.diagnostics import gates as G

    original = G._layer_trace
    try:  # a wrong recomputation must be caught, not drawn
        G._layer_trace = lambda *a, **k: {**original(*a, **k), "h": original(*a, **k)["h"] + 0.01}
        with pytest.raises(ValueError, match="do not reproduce"):
            trace_gates(rnn, x)
    finally:
        G._layer_trace = original


def test_saturation_and_spectrum_and_clipping_numbers():
    s = saturation(np.array([0.05, 0.5, 0.95, 0.99]), "f")
    assert s["share_below_0.1"] == 0.25 and s["share_above_0.9"] == 0.5
    assert saturation(np.array([-0.95, 0.0]), "g")["share_abs_above_0.9"] == 0.5
    w = np.diag([0.5, -2.0, 1.5])
    st = spectrum_stats(w)
    assert st["spectral_radius"] == pytest.approx(2.0) and st["share_outside_unit_circle"] == pytest.approx(2 / 3)
    blocks = whh_blocks("lstm", np.arange(32.0).reshape(8, 4) * 0 + np.repeat(np.arange(4), 2)[:, None])
    assert list(blocks) == ["i", "f", "g", "o"] and (blocks["g"] == 2).all()
    c = clipped_cosines(np.array([10.0, 0.1]), 1.0, 0.5)
    assert c["norm"] == pytest.approx(1.0)
    # element-wise clipping turned the direction: [10, 0.1] -> [0.5, 0.1]
    assert c["value"] == pytest.approx(5.01 / (np.hypot(10, 0.1) * np.hypot(0.5, 0.1)))
    assert c["value"] < 0.99


def test_softmax_t_is_the_samplers_distribution():
    from lapnet.experiments.temperature import softmax_t
    from lapnet.sampling import GREEDY_BELOW, SampleConfig, filter_probs

    z = np.array([2.0, 1.0, 0.1, -3.0])
    for t in (0.2, 1.0, 2.0):
        e = np.exp(z / t)
        np.testing.assert_allclose(softmax_t(z, t), e / e.sum(), rtol=1e-14, atol=0)
        np.testing.assert_array_equal(softmax_t(z, t), filter_probs(z[None], SampleConfig(temperature=t))[0])
    p = softmax_t(z, 1.0)
    assert p.dtype == np.float64 and p.sum() == pytest.approx(1.0, abs=1e-15)
    assert softmax_t(np.array([0.0, 1e4, 5.0]), 0.5)[1] == 1.0  # huge logits: no overflow, no NaN
    np.testing.assert_array_equal(softmax_t(z, GREEDY_BELOW / 2), [1.0, 0.0, 0.0, 0.0])  # the T -> 0 limit
