"""lapnet.scratch against torch.nn.RNN / LSTM / GRU: outputs, final states, every gradient.

The same computation is run twice, once by the NumPy engine and once by torch, with the
same weights (random, non-zero biases that differ between b_ih and b_hh), the same input
and initial state, and the same random upstream gradients on both the outputs and the
final state(s).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lapnet import scratch

TORCH = {"rnn": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
KINDS = list(TORCH)


def make_torch(kind, D, H, L=1, bi=False, dtype=torch.float64, seed=0, scale=0.6):
    torch.manual_seed(seed)
    kw = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
    mod = TORCH[kind](D, H, L, batch_first=True, bidirectional=bi, dtype=dtype, **kw)
    if scale:  # larger than torch's init so that gates move well away from 0.5
        with torch.no_grad():
            for p in mod.parameters():
                p.normal_(0.0, scale)
    return mod


def torch_run(mod, x, state, lengths, dout, dstate):
    """Forward + backward in torch; returns numpy out, state tuple, dx, dstate0 tuple, grads."""
    x = torch.tensor(x, requires_grad=True)
    st = tuple(torch.tensor(s, requires_grad=True) for s in state)
    arg = st if isinstance(mod, torch.nn.LSTM) else st[0]
    if lengths is not None:
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        out, s = mod(packed, arg)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    else:
        out, s = mod(x, arg)
    s = s if isinstance(s, tuple) else (s,)
    loss = (out * torch.tensor(dout)).sum() + sum((a * torch.tensor(g)).sum() for a, g in zip(s, dstate))
    mod.zero_grad()
    loss.backward()
    return (out.detach().numpy(), tuple(a.detach().numpy() for a in s), x.grad.numpy(),
            tuple(a.grad.numpy() for a in st), {n: p.grad.numpy() for n, p in mod.named_parameters()})


def compare(kind, B, T, D, H, L=1, bi=False, lengths=None, dtype=torch.float64, tol=1e-10, seed=0, scale=0.6):
    rng = np.random.default_rng(seed)
    mod = make_torch(kind, D, H, L, bi, dtype, seed, scale)
    eng = scratch.from_torch(mod)
    npdt = np.float64 if dtype == torch.float64 else np.float32
    dirs = 2 if bi else 1
    n_state = 2 if kind == "lstm" else 1
    x = rng.standard_normal((B, T, D)).astype(npdt)
    state = tuple(rng.standard_normal((L * dirs, B, H)).astype(npdt) for _ in range(n_state))
    dout = rng.standard_normal((B, T, dirs * H)).astype(npdt)
    dstate = tuple(rng.standard_normal((L * dirs, B, H)).astype(npdt) for _ in range(n_state))
    if lengths is not None:  # torch's padded output is zero there; its gradient never arrives
        dout = dout * (np.arange(T)[None, :, None] < np.asarray(lengths)[:, None, None])
    t_out, t_state, t_dx, t_ds0, t_grads = torch_run(mod, x, state, lengths, dout, dstate)

    pick = (lambda s: s) if kind == "lstm" else (lambda s: s[0])
    out, st, cache = eng.forward(x, pick(state), lengths)
    dx, ds0, grads = eng.backward(dout, pick(dstate), cache)
    st = st if kind == "lstm" else (st,)
    ds0 = ds0 if kind == "lstm" else (ds0,)

    def close(a, b, name):
        assert a.dtype == npdt, f"{name}: dtype {a.dtype}"
        torch.testing.assert_close(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)),
                                   rtol=tol, atol=tol, msg=lambda m: f"{kind} {name}: {m}")

    close(out, t_out, "output")
    for n, a, b in zip("hc", st, t_state):
        close(a, b, f"final {n}")
    close(dx, t_dx, "dx")
    for n, a, b in zip("hc", ds0, t_ds0):
        close(a, b, f"d{n}0")
    assert list(grads) == list(t_grads), "gradient names and order follow torch"
    for n in t_grads:
        close(grads[n], t_grads[n], f"grad {n}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_parity_random_sizes(kind, seed):
    rng = np.random.default_rng(100 + seed)
    B, T, D, H = (int(v) for v in rng.integers(1, [5, 8, 6, 7], endpoint=True))
    compare(kind, B, T, D, H, seed=seed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("L,bi", [(2, False), (1, True), (3, True)])
def test_float64_parity_stacked_bidirectional(kind, L, bi):
    compare(kind, B=3, T=5, D=4, H=5, L=L, bi=bi, seed=L + bi)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("B,T,D,H", [(1, 1, 1, 1), (1, 7, 2, 1), (4, 1, 3, 2), (1, 1, 5, 6)])
def test_float64_parity_edge_shapes(kind, B, T, D, H):
    compare(kind, B, T, D, H, L=2, bi=True, seed=B * T)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("L,bi", [(1, False), (2, True)])
def test_float64_parity_variable_lengths_vs_packed(kind, L, bi):
    compare(kind, B=4, T=6, D=3, H=4, L=L, bi=bi, lengths=[6, 2, 4, 1], seed=7)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_parity(kind):
    # torch's own init (random non-zero biases): float32 rounding stays near 1e-6
    compare(kind, B=4, T=9, D=5, H=8, L=2, bi=True, dtype=torch.float32, tol=1e-5, seed=3, scale=None)
    compare(kind, B=3, T=6, D=2, H=3, lengths=[6, 3, 1], dtype=torch.float32, tol=1e-5, seed=4, scale=None)


def test_exercise1_gru_matches_nn_gru_exactly():
    """Exercise 1's sizes in torch's form: the engine's hidden states equal nn.GRU's, not 'similar magnitude'.

    The notebook's own GRUFromScratch (textbook form, z flipped) is checked in
    test_scratch_reference.py::test_exercise1_notebook_gru_maps_exactly_onto_textbook_form.
    """
    rng = np.random.default_rng(42)
    test_seq = rng.standard_normal((5, 3))  # five steps of three features, as the notebook
    torch.manual_seed(42)
    gru_pt = torch.nn.GRU(input_size=3, hidden_size=4, batch_first=True, dtype=torch.float64)
    out_pt, h_pt = gru_pt(torch.tensor(test_seq)[None])
    gru = scratch.GRU.from_torch(gru_pt)
    out, h, _ = gru.forward(test_seq[None])
    hidden_states = out[0]  # (5, 4): h_1 .. h_5
    np.testing.assert_allclose(hidden_states, out_pt[0].detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h, h_pt.detach().numpy(), rtol=0, atol=1e-10)


def test_textbook_gru_does_not_match_torch():
    """Same weights, textbook form (r applied to h before W_hn): different hidden states."""
    mod = make_torch("gru", 3, 4, seed=5)
    x = np.random.default_rng(5).standard_normal((2, 6, 3))
    torch_out = mod(torch.tensor(x))[0].detach().numpy()
    textbook = scratch.GRU(3, 4, gru_form="textbook", dtype="float64")
    textbook.load_state_dict(mod.state_dict())
    pytorch_form = scratch.GRU.from_torch(mod)
    assert np.abs(pytorch_form.forward(x)[0] - torch_out).max() < 1e-10
    assert np.abs(textbook.forward(x)[0] - torch_out).max() > 1e-2
    with pytest.raises(ValueError, match="textbook"):
        textbook.to_torch()


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_to_torch_round_trip(kind):
    eng = scratch.recurrent.KINDS[kind](3, 4, 2, bidirectional=True, dtype="float64", seed=9)
    mod = eng.to_torch()
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    np.testing.assert_allclose(eng.forward(x)[0], mod(torch.tensor(x))[0].detach().numpy(), atol=1e-12)
    back = scratch.from_torch(mod)
    for k, v in eng.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)
    # load_state_dict takes torch tensors as they are
    other = scratch.recurrent.KINDS[kind](3, 4, 2, bidirectional=True, dtype="float64", seed=1)
    other.load_state_dict(mod.state_dict())
    np.testing.assert_array_equal(other.forward(x)[0], eng.forward(x)[0])


@pytest.mark.parametrize("lengths", [None, [5, 2, 3, 1, 5, 4, 2, 1]])
def test_lstm_wide_path_parity(lengths):
    """Large slabs (B*H >= SLAB_MIN) take the batched gate-major products: check them too."""
    from lapnet.scratch import lstm

    B, H = 8, 64
    assert B * H >= lstm.SLAB_MIN
    compare("lstm", B, 5, 3, H, L=2, bi=True, lengths=lengths, seed=11)
    compare("lstm", B, 4, 3, H, dtype=torch.float32, tol=1e-5, seed=12, scale=None)
