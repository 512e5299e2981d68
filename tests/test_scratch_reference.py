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
    """Every output and gradient equal to `tol`, relative to the largest entry of its array.

    Why the scale: an entry that is a sum of large terms of both signs (a gradient through
    many steps, a relu RNN's growing states) is exact only to about (size of the terms) x
    eps, however small the sum itself; two correct summation orders differ by that much
    (1.3e-12 on an entry of 0.026 beside entries of 25, seen with AVX-512 BLAS)."""
    out_a, st_a, dx_a, ds_a, g_a = a
    out_b, st_b, dx_b, ds_b, g_b = b
    pairs = [(out_a, out_b, "output"), (dx_a, dx_b, "dL/dx")]
    pairs += [(p, q, f"final state {i}") for i, (p, q) in enumerate(zip(st_a, st_b))]
    pairs += [(p, q, f"dL/d initial state {i}") for i, (p, q) in enumerate(zip(ds_a, ds_b))]
    pairs += [(g_a[k], g_b[k], f"d{k}") for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    for p, q, name in pairs:
        scale = max(1.0, float(np.abs(q).max()))
        np.testing.assert_allclose(p, q, rtol=tol, atol=tol * scale, err_msg=f"{what}: {name}")


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


# --- dL/dh_t (and dL/dc_t) at every step, against torch's autograd on an unrolled cell ------


def _torch_steps(kind, option, w, x, state, dout, dstate):
    """Total dL/dh_t (and dL/dc_t) at every step: torch cells unrolled by hand, retain_grad on each state."""
    B, T, D = x.shape
    H = w[1].shape[1]
    tw = [torch.tensor(a) for a in w]
    if kind == "rnn":
        cell = torch.nn.RNNCell(D, H, nonlinearity=option, dtype=torch.float64)
    elif kind == "lstm":
        cell = torch.nn.LSTMCell(D, H, dtype=torch.float64)
    elif option == "pytorch":
        cell = torch.nn.GRUCell(D, H, dtype=torch.float64)
    else:
        cell = None  # the textbook GRU has no torch cell: its equations in torch ops below
    if cell is not None:
        with torch.no_grad():
            for p, a in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), tw):
                p.copy_(a)
    h = torch.tensor(state[0], requires_grad=True)  # a leaf: every later state needs grad, even with no weights
    c = torch.tensor(state[1], requires_grad=True) if kind == "lstm" else None
    hs, cs = [], []
    for t in range(T):
        xt = torch.tensor(x[:, t])
        if kind == "lstm":
            h, c = cell(xt, (h, c))
            c.retain_grad()
            cs.append(c)
        elif cell is not None:
            h = cell(xt, h)
        else:
            w_ih, w_hh, b_ih, b_hh = tw
            ax, ah_rz = xt @ w_ih.T + b_ih, h @ w_hh[: 2 * H].T + b_hh[: 2 * H]
            r, z = torch.sigmoid(ax[:, :H] + ah_rz[:, :H]), torch.sigmoid(ax[:, H : 2 * H] + ah_rz[:, H:])
            n = torch.tanh(ax[:, 2 * H :] + (r * h) @ w_hh[2 * H :].T + b_hh[2 * H :])
            h = (1 - z) * n + z * h
        h.retain_grad()
        hs.append(h)
    loss = sum((a * torch.tensor(dout[:, t])).sum() for t, a in enumerate(hs)) + (h * torch.tensor(dstate[0])).sum()
    if kind == "lstm":
        loss = loss + (c * torch.tensor(dstate[1])).sum()
    loss.backward()
    dh = np.stack([a.grad.numpy() for a in hs], axis=1)  # T x (B, H) -> (B, T, H)
    return (dh, np.stack([a.grad.numpy() for a in cs], axis=1)) if kind == "lstm" else dh


@pytest.mark.parametrize("kind,option", CASES + [("gru", "textbook")])
@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (1, 1, 1, 1), (2, 4, 3, 1)])
def test_backward_returns_dl_dh_at_every_step(kind, option, shape):
    mod, x, state, dout, dstate = _problem(kind, *shape, seed=30 + sum(shape), nonlinearity=option)
    w = _weights(mod)
    want = _torch_steps(kind, option, w, x, state, dout, dstate)
    plain = _reference(kind, x, state, dout, dstate, w, option)
    if kind == "rnn":
        out, h, cache = ref.rnn_forward(x, state[0], *w, nonlinearity=option)
        dx, dh0, g, got = ref.rnn_backward(dout, dstate[0], cache, return_steps=True)
    elif kind == "lstm":
        out, _, cache = ref.lstm_forward(x, state[0], state[1], *w)
        dx, (dh0, _), g, got = ref.lstm_backward(dout, dstate[0], dstate[1], cache, return_steps=True)
    else:
        out, h, cache = ref.gru_forward(x, state[0], *w, form=option)
        dx, dh0, g, got = ref.gru_backward(dout, dstate[0], cache, return_steps=True)
    got, want = (got, want) if kind == "lstm" else ((got,), (want,))
    for name, a, b in zip(("dL/dh_t", "dL/dc_t"), got, want):
        assert a.shape == shape[:2] + (shape[3],)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=f"{kind} {option} {shape}: {name}")
    # the option adds the per-step gradients and changes nothing else
    np.testing.assert_array_equal(dx, plain[2])
    np.testing.assert_array_equal(dh0, plain[3][0])
    for k in g:
        np.testing.assert_array_equal(g[k], plain[4][k])
    # the last step's total is the final state's gradient plus the output's
    np.testing.assert_allclose(got[0][:, -1], dout[:, -1] + dstate[0], rtol=0, atol=1e-15)


# --- the notebook's Exercise 1 GRU --------------------------------------------------------


def _notebook_gru(W_z, b_z, W_r, b_r, W_h, b_h, xs, h):
    """The notebook's GRUFromScratch.forward, from its equations: column vectors, [h, x] concatenated."""
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    hidden_states = [h]
    for x_t in xs:
        hx = np.concatenate([h, x_t])
        z = sig(W_z @ hx + b_z)  # update gate
        r = sig(W_r @ hx + b_r)  # reset gate
        h_tilde = np.tanh(W_h @ np.concatenate([r * h, x_t]) + b_h)  # candidate
        h = (1 - z) * h + z * h_tilde
        hidden_states.append(h)
    return np.stack(hidden_states)  # (T + 1, H): initial + one per step


def _notebook_weights(D, H, seed):
    rng = np.random.default_rng(seed)
    W = [rng.standard_normal((H, H + D)) * 0.8 for _ in range(3)]  # W_z, W_r, W_h
    b = [rng.standard_normal(H) * 0.5 for _ in range(3)]  # non-zero biases
    return dict(W_z=W[0], b_z=b[0], W_r=W[1], b_r=b[1], W_h=W[2], b_h=b[2])


@pytest.mark.parametrize("D,H,T", [(3, 4, 5), (1, 1, 1), (5, 2, 8)])
def test_exercise1_notebook_gru_maps_exactly_onto_textbook_form(D, H, T):
    nb = _notebook_weights(D, H, seed=D * 10 + H)
    rng = np.random.default_rng(H)
    xs, h0 = rng.standard_normal((T, D)), rng.standard_normal(H)
    want = _notebook_gru(**nb, xs=xs, h=h0)[1:]  # (T, H): h_1 .. h_T
    sd = ref.gru_weights_from_notebook(**nb)
    assert {k: v.shape for k, v in sd.items()} == {"weight_ih_l0": (3 * H, D), "weight_hh_l0": (3 * H, H),
                                                   "bias_ih_l0": (3 * H,), "bias_hh_l0": (3 * H,)}
    assert scratch.gru_weights_from_notebook is ref.gru_weights_from_notebook
    gru = scratch.GRU(D, H, gru_form="textbook", dtype="float64")
    gru.load_state_dict(sd)
    out, h_T, _ = gru.forward(xs[None], h0[None, None])  # (1, T, H), (1, 1, H)
    np.testing.assert_allclose(out[0], want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_T[0, 0], want[-1], rtol=0, atol=1e-12)
    w = [sd[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    hs, _, _ = ref.gru_forward(xs[None], h0[None], *w, form="textbook")
    np.testing.assert_allclose(hs[0], want, rtol=0, atol=1e-12)
    if T > 1 or H > 1:  # one step of one unit can agree by chance; the flip and the form matter otherwise
        unflipped = {k: v.copy() for k, v in sd.items()}
        for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0"):
            unflipped[k][H : 2 * H] *= -1  # the z block back as the notebook wrote it
        gru.load_state_dict(unflipped)
        assert np.abs(gru.forward(xs[None], h0[None, None])[0][0] - want).max() > 1e-2
        torch_form = scratch.GRU(D, H, dtype="float64")
        torch_form.load_state_dict(sd)
        assert np.abs(torch_form.forward(xs[None], h0[None, None])[0][0] - want).max() > 1e-3


def test_exercise1_with_the_notebooks_own_init_and_sequence():
    """The notebook's cell: seed 42, its scaled randn weights, zero biases, five inputs of three features."""
    np.random.seed(42)
    scale = np.sqrt(2.0 / (3 + 4))
    nb = {}
    for g in ("z", "r", "h"):
        nb[f"W_{g}"], nb[f"b_{g}"] = np.random.randn(4, 7) * scale, np.zeros(4)
    test_seq = [np.random.randn(3) for _ in range(5)]
    want = _notebook_gru(**nb, xs=test_seq, h=np.zeros(4))
    assert len(want) == 6  # "initial + 5 steps", as the notebook's check expects
    gru = scratch.GRU(3, 4, gru_form="textbook", dtype="float64")
    gru.load_state_dict(ref.gru_weights_from_notebook(**nb))
    np.testing.assert_allclose(gru.forward(np.stack(test_seq)[None])[0][0], want[1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("change,match", [
    (dict(b_z=np.zeros((2, 4))), "b_z"),
    (dict(b_r=np.zeros(5)), "b_r"),
    (dict(W_h=np.zeros((4, 4))), "W_h"),
    (dict(W_z=np.zeros((4, 9))), "differ"),
])
def test_gru_weights_from_notebook_refuses_bad_shapes(change, match):
    nb = {**_notebook_weights(3, 4, seed=0), **change}
    with pytest.raises(ValueError, match=match) as e:
        ref.gru_weights_from_notebook(**nb)
    assert "\n" not in str(e.value)


# --- the optimizers' defaults are torch's ---------------------------------------------------


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adam"])
def test_optimizer_defaults_are_torchs(name):
    import inspect

    mine = inspect.signature(getattr(scratch, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    shared = [k for k in mine if k != "params"]
    assert "lr" in shared
    for k in shared:
        assert mine[k].default == theirs[k].default, f"{name}({k}=...): lapnet {mine[k].default}, torch {theirs[k].default}"
    # and one default step moves a parameter exactly as torch's does
    p, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    opt = getattr(scratch, name)({"w": p})
    opt.step({"w": g})
    pt = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    topt = getattr(torch.optim, name)([pt])
    pt.grad = torch.tensor(g)
    topt.step()
    np.testing.assert_allclose(p, pt.detach().numpy(), rtol=0, atol=1e-15)
