"""Torch-free checks of lapnet.scratch: finite-difference gradients and invariants that
must hold for any sizes (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lapnet import scratch
from lapnet.scratch.recurrent import KINDS

FAST = settings(max_examples=12, deadline=None)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("L,bi,lengths", [(1, False, None), (2, True, [5, 2, 4])])
def test_gradcheck_every_parameter_input_and_initial_state(kind, L, bi, lengths):
    layer = KINDS[kind](3, 4, L, bidirectional=bi, dtype="float64", seed=L)
    x = np.random.default_rng(L).standard_normal((3, 5, 3))
    result = scratch.gradcheck(layer, x, lengths=lengths, samples=4, seed=1)
    names = [r["tensor"] for r in result.rows]
    assert set(layer.state_dict()) < set(names) and "input" in names and "h0" in names
    assert kind != "lstm" or "c0" in names
    assert result.max_rel_error < 1e-6, result.rows


def test_gradcheck_relu_rnn_and_textbook_gru():
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    for layer in (scratch.RNN(3, 4, nonlinearity="relu", seed=3), scratch.GRU(3, 4, gru_form="textbook", seed=3)):
        assert scratch.gradcheck(layer, x, samples=4).max_rel_error < 1e-6


def test_gradcheck_catches_a_wrong_gradient():
    class Broken(scratch.LSTM):
        def backward(self, dout, dstate, cache):
            dx, ds0, grads = super().backward(dout, dstate, cache)
            grads["bias_hh_l0"] = grads["bias_hh_l0"] * 1.001
            return dx, ds0, grads

    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    result = scratch.gradcheck(Broken(3, 4), x, samples=4)
    assert not result.ok()
    assert {r["tensor"] for r in result.rows if r["max_rel_error"] > 1e-6} == {"bias_hh_l0"}


sizes = st.tuples(st.sampled_from(["rnn", "lstm", "gru"]), st.integers(1, 3), st.integers(1, 6),
                  st.integers(1, 3), st.integers(1, 4), st.integers(1, 2), st.integers(0, 2**16))


def _setup(kind, B, T, D, H, L, seed):
    layer = KINDS[kind](D, H, L, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D)) * 2
    h0 = rng.standard_normal((L, B, H))
    state = (h0, rng.standard_normal((L, B, H))) if kind == "lstm" else h0
    return layer, x, state


def _same_state(a, b):
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)


@FAST
@given(sizes)
def test_a_sequence_equals_T_single_steps(args):
    kind, B, T, D, H, L, seed = args
    layer, x, state = _setup(kind, B, T, D, H, L, seed)
    out, final, _ = layer.forward(x, state)
    s = state
    for t in range(T):
        step, s, _ = layer.forward(x[:, t : t + 1], s)  # (B, 1, H)
        np.testing.assert_allclose(step[:, 0], out[:, t], rtol=0, atol=1e-12)
    _same_state(s, final)


@FAST
@given(sizes, st.data())
def test_splitting_and_carrying_the_state_changes_nothing(args, data):
    kind, B, T, D, H, L, seed = args
    layer, x, state = _setup(kind, B, T, D, H, L, seed)
    k = data.draw(st.integers(0, T))
    out, final, _ = layer.forward(x, state)
    parts, s = [], state
    for sl in (slice(0, k), slice(k, T)):
        if sl.stop > sl.start:
            o, s, _ = layer.forward(x[:, sl], s)
            parts.append(o)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), out, rtol=0, atol=1e-12)
    _same_state(s, final)


@FAST
@given(st.sampled_from(["lstm", "gru"]), st.floats(0.1, 1e3), st.integers(0, 2**16), st.booleans())
def test_gates_stay_in_unit_interval(kind, scale, seed, bi):
    layer = KINDS[kind](3, 4, 2, bidirectional=bi, dtype="float32", seed=seed)
    x = np.random.default_rng(seed).standard_normal((2, 7, 3)) * scale
    _, _, cache = layer.forward(x, lengths=[7, 3])
    for l in range(2):
        for d in range(2 if bi else 1):
            gates = cache.gates(l, d)
            for name in ("i", "f", "o") if kind == "lstm" else ("r", "z"):
                g = gates[name]
                assert g.shape == (2, 7, 4)
                assert np.all((g >= 0) & (g <= 1)), name
            cand = gates["g" if kind == "lstm" else "n"]
            assert np.all(np.abs(cand) <= 1)


@FAST
@given(st.sampled_from(["rnn", "lstm", "gru"]), st.integers(0, 2**16))
def test_variable_lengths_equal_running_each_sequence_alone(kind, seed):
    """Packed semantics without torch: a padded row gives what the row alone gives."""
    layer = KINDS[kind](2, 3, 2, bidirectional=True, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, size=3)
    x = rng.standard_normal((3, 5, 2))
    out, final, _ = layer.forward(x, lengths=lengths)
    h_final = final[0] if kind == "lstm" else final
    for b, n in enumerate(lengths):
        alone, s, _ = layer.forward(x[b : b + 1, :n])
        np.testing.assert_allclose(out[b, :n], alone[0], rtol=0, atol=1e-12)
        assert np.all(out[b, n:] == 0)
        np.testing.assert_allclose(h_final[:, b], (s[0] if kind == "lstm" else s)[:, 0], rtol=0, atol=1e-12)


def test_workspace_reuses_only_buffers_nobody_holds():
    from lapnet.scratch import workspace

    shape = (64, 1024)  # above MIN_BYTES, so it is pooled
    a = workspace.empty(shape, np.float32)
    view = a[3:]
    assert workspace.empty(shape, np.float32) is not a  # a is still held (by `a` and by `view`)
    del a
    b = workspace.empty(shape, np.float32)
    assert not np.shares_memory(b, view)  # the view alone still keeps its buffer out of the pool
    del view, b
    c = workspace.empty(shape, np.float32)
    d = workspace.empty(shape, np.float32)
    assert not np.shares_memory(c, d)


@pytest.mark.parametrize("B,H,bi", [(16, 32, False), (2, 8, True)])  # big-slab path, small-slab path
def test_a_cache_kept_alive_is_not_overwritten_by_later_calls(B, H, bi):
    """The engine recycles its per-call arrays; an old cache must still give its own gradients."""
    layer = scratch.LSTM(4, H, 2, bidirectional=bi, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, B, 7, 4))
    dout = rng.standard_normal((B, 7, H * (2 if bi else 1)))
    _, _, cache1 = layer.forward(x1)
    expected = layer.backward(dout, None, cache1)[2]
    _, _, cache1 = layer.forward(x1)
    for _ in range(3):  # other calls in between, some of whose caches die at once
        layer.backward(dout, None, layer.forward(x2)[2])
    again = layer.backward(dout, None, cache1)[2]
    for k in expected:
        np.testing.assert_array_equal(again[k], expected[k], err_msg=k)


def test_a_view_of_a_kernel_output_survives_later_calls():
    """The small-slab LSTM kernel reuses its buffers only when nothing refers to them."""
    from lapnet.scratch import lstm

    rng = np.random.default_rng(1)
    w = [rng.standard_normal(s) for s in ((32, 3), (32, 8), (32,), (32,))]
    h0 = c0 = np.zeros((1, 8))
    y = lstm.forward(rng.standard_normal((5, 1, 3)), *w, h0, c0)[0]
    first = y[2].copy()
    view = y[2]  # a new view of the kernel's buffer, not the array it returned
    del y
    for _ in range(2):
        lstm.forward(rng.standard_normal((5, 1, 3)), *w, h0, c0)
    np.testing.assert_array_equal(view, first)
