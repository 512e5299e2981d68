"""Bad input to lapnet.scratch gets one clear LapnetError before any work (review fixes).

Each test asserts the exact behaviour: the message (or its fragments), that nothing was
changed, and that the good input next to it still gives the right values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lapnet import scratch
from lapnet.errors import LapnetError
from lapnet.scratch import reference as ref

KINDS = {"rnn": scratch.RNN, "lstm": scratch.LSTM, "gru": scratch.GRU}


# --- 1. dtype -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda dt: scratch.LSTM(3, 4, dtype=dt), lambda dt: scratch.GRU(3, 4, dtype=dt),
    lambda dt: scratch.RNN(3, 4, dtype=dt), lambda dt: scratch.Linear(3, 4, dtype=dt),
    lambda dt: scratch.Embedding(3, 4, dtype=dt)], ids=["LSTM", "GRU", "RNN", "Linear", "Embedding"])
@pytest.mark.parametrize("bad", ["bogus", [1, 2], "float16", "int64", object, torch.bfloat16])
def test_unknown_dtype_is_refused(make, bad):
    with pytest.raises(LapnetError) as e:
        make(bad)
    assert str(e.value) == f"dtype {bad!r}: the engine supports float32 and float64"


def test_bogus_dtype_message_is_exact():
    with pytest.raises(LapnetError) as e:
        scratch.LSTM(3, 4, dtype="bogus")
    assert str(e.value) == "dtype 'bogus': the engine supports float32 and float64"


@pytest.mark.parametrize("given, want", [
    ("float32", np.float32), ("float64", np.float64), (np.float64, np.float64), ("double", np.float64),
    (torch.float64, np.float64), (torch.float32, np.float32), (None, np.float32)])
def test_supported_dtypes_still_work(given, want):
    m = scratch.GRU(3, 4, dtype=given)
    assert m.dtype == np.dtype(want)
    assert all(p.dtype == np.dtype(want) for p in m.parameters().values())
    assert repr(m).endswith(f"dtype={np.dtype(want).name})")
    assert scratch.Linear(3, 2, dtype=given).parameters()["weight"].dtype == np.dtype(want)


# --- 2, 3. the readable reference cells --------------------------------------------------------

def _w(gates, H=4, D=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * 0.5 for s in ((gates * H, D), (gates * H, H), (gates * H,), (gates * H,))]


X = np.random.default_rng(1).standard_normal((2, 5, 3))  # (B, T, D)
Z = np.zeros((2, 4))  # (B, H)


@pytest.mark.parametrize("form", ["torch", "Pytorch", "", None])
def test_reference_gru_refuses_unknown_form(form):
    with pytest.raises(LapnetError) as e:
        ref.gru_forward(X, Z, *_w(3), form=form)
    assert str(e.value) == f"form must be 'pytorch' or 'textbook', got {form!r}"


def test_reference_gru_forms_still_run_and_differ():
    a, _, ca = ref.gru_forward(X, Z + 0.3, *_w(3), form="pytorch")
    b, _, cb = ref.gru_forward(X, Z + 0.3, *_w(3), form="textbook")
    assert a.shape == b.shape == (2, 5, 4) and np.abs(a - b).max() > 1e-3
    assert ca["form"] == "pytorch" and cb["form"] == "textbook"
    assert ref.gru_backward(np.ones_like(b), Z, cb)[0].shape == (2, 5, 3)


def test_reference_rnn_refuses_unknown_nonlinearity():
    with pytest.raises(LapnetError) as e:
        ref.rnn_forward(X, Z, *_w(1), nonlinearity="sigmoid")
    assert str(e.value) == "nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"


@pytest.mark.parametrize("call, message", [
    (lambda: ref.rnn_forward(X, np.zeros((1, 2, 4)), *_w(1)), "h0 must be (B, H) = (2, 4), got (1, 2, 4)"),
    (lambda: ref.rnn_forward(X, np.zeros((2, 5)), *_w(1)), "h0 must be (B, H) = (2, 4), got (2, 5)"),
    (lambda: ref.rnn_forward(X[0], Z, *_w(1)), "x must be (B, T, D) with B, T, D >= 1, got (5, 3)"),
    (lambda: ref.rnn_forward(X[:, :0], Z, *_w(1)), "x must be (B, T, D) with B, T, D >= 1, got (2, 0, 3)"),
    (lambda: ref.rnn_forward(X, Z, *_w(1, D=2)), "w_ih must be (H, D) = (4, 3), got (4, 2)"),
    (lambda: ref.lstm_forward(X, Z, np.zeros(4), *_w(4)), "c0 must be (B, H) = (2, 4), got (4,)"),
    (lambda: ref.lstm_forward(X, Z, Z, *_w(3)), "w_ih must be (4H, D) = (16, 3), got (12, 3)"),  # GRU weights
    (lambda: ref.lstm_forward(X, Z, Z, _w(4)[0], np.zeros((12, 4)), *_w(4)[2:]),
     "w_hh must be (4H, H) = (16, 4), got (12, 4)"),
    (lambda: ref.lstm_forward(X, Z, Z, *_w(4)[:3], np.zeros(4)), "b_hh must be (4H,) = (16,), got (4,)"),
    (lambda: ref.gru_forward(X, Z, np.zeros((12, 3)), np.zeros(12), np.zeros(12), np.zeros(12)),
     "w_hh must be (3H, H) with H >= 1, got (12,)"),
    (lambda: ref.gru_forward(X, Z, *_w(3)[:2], np.zeros(9), np.zeros(12)), "b_ih must be (3H,) = (12,), got (9,)"),
])
def test_reference_forward_refuses_wrong_shapes(call, message):
    with pytest.raises(LapnetError) as e:
        call()
    assert str(e.value) == message


def test_reference_backward_refuses_wrong_shapes():
    _, _, cr = ref.rnn_forward(X, Z, *_w(1))
    _, _, cl = ref.lstm_forward(X, Z, Z, *_w(4))
    _, _, cg = ref.gru_forward(X, Z, *_w(3))
    dhs = np.ones((2, 5, 4))
    cases = [
        (lambda: ref.rnn_backward(dhs[:, :4], Z, cr), "dhs must be (B, T, H) = (2, 5, 4), got (2, 4, 4)"),
        (lambda: ref.rnn_backward(dhs, np.zeros((1, 2, 4)), cr), "dh_T must be (B, H) = (2, 4), got (1, 2, 4)"),
        (lambda: ref.lstm_backward(dhs, Z, np.zeros(4), cl), "dc_T must be (B, H) = (2, 4), got (4,)"),
        (lambda: ref.gru_backward(dhs[0], Z, cg), "dhs must be (B, T, H) = (2, 5, 4), got (5, 4)"),
    ]
    for call, message in cases:
        with pytest.raises(LapnetError) as e:
            call()
        assert str(e.value) == message


def test_reference_scalar_broadcasting_state_is_refused_not_broadcast():
    """The review's case: an h0 that broadcasts would have given a (1, 5, 2, 4) result."""
    with pytest.raises(LapnetError, match=r"h0 must be \(B, H\)"):
        ref.rnn_forward(X, 0.0, *_w(1))
    hs, h_T, _ = ref.rnn_forward(X, Z, *_w(1))
    assert hs.shape == (2, 5, 4) and h_T.shape == (2, 4)


# --- 4. raw errors become one clear message ----------------------------------------------------

def test_mse_loss_refuses_empty_and_non_numeric():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way either
        with pytest.raises(LapnetError) as e:
            scratch.mse_loss(np.ones(0), np.ones(0))
        assert str(e.value) == "mse_loss needs at least one element, got empty arrays of shape (0,)"
        with pytest.raises(LapnetError) as e:
            scratch.mse_loss(np.array(["a", "b"]), np.array(["c", "d"]))
        assert str(e.value) == "mse_loss needs numeric arrays, got dtypes <U1 (pred) and <U1 (target)"
        with pytest.raises(LapnetError, match="numeric arrays"):
            scratch.mse_loss(np.ones(2), np.array([None, 1.0], dtype=object))


def test_mse_loss_values_for_int_bool_and_float32():
    loss, grad = scratch.mse_loss(np.array([1, 2]), np.array([0, 0]))
    assert loss == 2.5 and grad.dtype == np.float64
    np.testing.assert_array_equal(grad, [1.0, 2.0])
    loss, grad = scratch.mse_loss(np.array([True, False]), np.array([False, False]))
    assert loss == 0.5 and grad.dtype == np.float64
    np.testing.assert_array_equal(grad, [1.0, 0.0])
    loss, grad = scratch.mse_loss(np.array([3.0], np.float32), np.array([1.0], np.float32))
    assert loss == 4.0 and grad.dtype == np.float32 and grad[0] == 4.0


def test_linear_backward_refuses_wrong_dy():
    lin = scratch.Linear(3, 2, dtype="float64")
    _, cache = lin.forward(np.ones((4, 3)))
    for dy, got in ((np.ones((4, 3)), "(4, 3)"), (np.ones(8), "(8,)"), (np.ones((1, 4, 2)), "(1, 4, 2)")):
        with pytest.raises(LapnetError) as e:
            lin.backward(dy, cache)
        assert str(e.value) == f"Linear backward: dy must have shape (4, 2) like the output, got {got}"
    with pytest.raises(LapnetError, match="Linear backward: dy contains NaN or infinite values"):
        lin.backward(np.full((4, 2), np.nan), cache)
    with pytest.raises(LapnetError, match="Linear backward: dy must be numeric, got dtype <U1"):
        lin.backward(np.full((4, 2), "a"), cache)
    with pytest.raises(LapnetError, match="Linear backward needs the cache forward returned"):
        lin.backward(np.ones((4, 2)), None)
    dx, g = lin.backward(np.ones((4, 2)), cache)  # the right shape still works
    np.testing.assert_allclose(g["bias"], [4.0, 4.0])
    np.testing.assert_allclose(dx, np.ones((4, 2)) @ lin.parameters()["weight"])


def test_embedding_backward_refuses_wrong_dy():
    emb = scratch.Embedding(5, 2, dtype="float64")
    _, ids = emb.forward(np.array([[1, 2, 1]]))
    for dy in (np.ones((3, 2)), np.ones((1, 3, 3)), np.ones(6)):
        with pytest.raises(LapnetError) as e:
            emb.backward(dy, ids)
        assert str(e.value) == f"Embedding backward: dy must have shape (1, 3, 2) like the output, got {dy.shape}"
    with pytest.raises(LapnetError, match="Embedding backward needs the cache forward returned"):
        emb.backward(np.ones((1, 3, 2)), np.ones(3))
    g = emb.backward(np.ones((1, 3, 2)), ids)["weight"]
    np.testing.assert_array_equal(g, [[0, 0], [2, 2], [1, 1], [0, 0], [0, 0]])


@pytest.mark.parametrize("fn, what, verb", [(scratch.clip_grad_norm, "clip_grad_norm", "scaled"),
                                            (scratch.clip_grad_value, "clip_grad_value", "clipped")])
def test_clip_functions_refuse_non_float_gradients(fn, what, verb):
    g = {"b": np.array([0.5]), "w": np.array([3, 4])}
    with pytest.raises(LapnetError) as e:
        fn(g, 1.0)
    assert str(e.value) == (f"{what}: gradient 'w' must be a float numpy array ({verb} in place), "
                            f"got an array of dtype int64")
    np.testing.assert_array_equal(g["w"], [3, 4])
    np.testing.assert_array_equal(g["b"], [0.5])  # nothing touched, not even the valid one
    with pytest.raises(LapnetError, match=f"{what}: gradient 'w' must be a float numpy array .* got list"):
        fn({"w": [3.0, 4.0]}, 1.0)
    with pytest.raises(LapnetError, match=f"{what} needs a dict of name -> gradient array .* got list"):
        fn([np.ones(2)], 1.0)
    ro = np.ones(2)
    ro.flags.writeable = False
    with pytest.raises(LapnetError, match="gradient 'w' is a read-only array"):
        fn({"w": ro}, 0.5)


@pytest.mark.parametrize("cls", [scratch.SGD, scratch.Adagrad, scratch.Adam])
def test_optimizers_refuse_bad_parameters(cls):
    name = cls.__name__
    cases = [
        ({"w": [1.0, 2.0]}, f"{name}: parameter 'w' must be a float numpy array (updated in place), got list"),
        ([np.ones(3)], f"{name} needs a dict of name -> parameter array (layer.parameters()), got list"),
        ({"w": np.ones(3, np.int64)},
         f"{name}: parameter 'w' must be a float numpy array (updated in place), got an array of dtype int64"),
        ({}, f"{name} got an empty dict of parameters"),
    ]
    for params, message in cases:
        with pytest.raises(LapnetError) as e:
            cls(params)
        assert str(e.value) == message


@pytest.mark.parametrize("cls", [scratch.SGD, scratch.Adagrad, scratch.Adam])
def test_optimizer_step_refuses_bad_gradients_before_any_update(cls):
    p = {"w": np.ones(3), "b": np.zeros(2)}
    opt = cls(p, lr=0.1)
    for grads, message in (
            ([np.ones(3), np.ones(2)], "step needs a dict of name -> gradient array, got list"),
            ({"w": np.ones(3), "b": np.array(["x", "y"])}, "gradient 'b' must be numeric, got dtype <U1"),
            ({"w": np.ones(3), "b": np.ones(3)}, "gradient 'b' has shape (3,), parameter (2,)")):
        with pytest.raises(LapnetError) as e:
            opt.step(grads)
        assert str(e.value) == message
    with pytest.raises(LapnetError, match="lr must be a finite number"):
        opt.step({"w": np.ones(3), "b": np.ones(2)}, lr=float("nan"))
    assert opt.t == 0  # a refused step counts for nothing
    np.testing.assert_array_equal(p["w"], 1.0)
    np.testing.assert_array_equal(p["b"], 0.0)
    opt.step({"w": [1, 1, 1], "b": np.ones(2)})  # lists and ints are fine as gradients
    assert opt.t == 1 and np.all(p["w"] < 1.0)


def test_optimizer_load_state_dict_refuses_a_non_mapping():
    with pytest.raises(LapnetError, match="optimizer state must be a dict of name -> array, got list"):
        scratch.Adam({"w": np.ones(2)}).load_state_dict([1, 2])


@pytest.mark.parametrize("chunk", [2.5, 0, -1, True, "2", None])
def test_truncated_bptt_refuses_a_non_integer_chunk_before_any_work(chunk):
    calls = []
    m = scratch.LSTM(3, 4, dtype="float64")
    with pytest.raises(LapnetError) as e:
        scratch.truncated_bptt(m, X, chunk, lambda o, sl: calls.append(sl) or (0.0, o))
    assert str(e.value) == f"chunk must be a positive integer, got {chunk!r}"
    assert calls == []
    with pytest.raises(LapnetError) as e:
        scratch.chunks(5, chunk)  # refused at the call, not when iterated
    assert str(e.value) == f"chunk must be a positive integer, got {chunk!r}"


def test_truncated_bptt_refuses_a_non_callable_loss_and_bad_T():
    with pytest.raises(LapnetError, match="loss_grad must be a function .* got NoneType"):
        scratch.truncated_bptt(scratch.GRU(3, 4), X, 2, None)
    with pytest.raises(LapnetError, match="T must be an integer >= 0, got 5.0"):
        scratch.chunks(5.0, 2)
    assert list(scratch.chunks(5, np.int64(2))) == [slice(0, 2), slice(2, 4), slice(4, 5)]


# --- 5. clip_grad_norm with NaN / inf -------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_clip_grad_norm_refuses_non_finite_gradients_and_changes_nothing(bad):
    g = {"a": np.array([3.0, 4.0]), "w": np.array([1.0, bad]), "b": np.array([bad], np.float32)}
    before = {k: v.copy() for k, v in g.items()}
    with pytest.raises(LapnetError) as e:
        scratch.clip_grad_norm(g, 1.0)
    assert str(e.value) == ("clip_grad_norm: gradients 'w', 'b' contain NaN or infinite values (nothing was changed): "
                            "the run has diverged; lower the learning rate")
    for k in g:
        np.testing.assert_array_equal(g[k], before[k])  # NaN == NaN for assert_array_equal
    with pytest.raises(LapnetError, match="gradient 'w' contains NaN"):
        scratch.clip_grad_norm({"w": np.array([bad])}, 1.0)


def test_clip_grad_norm_of_huge_finite_float32_gradients_scales_them():
    """The norm is summed in float64: 1e30**2 overflows float32, and an inf norm would zero them."""
    g = {"w": np.full(4, 1e30, np.float32)}
    total = scratch.clip_grad_norm(g, 1.0)
    assert total == pytest.approx(2e30, rel=1e-6)
    np.testing.assert_allclose(g["w"], 0.5, rtol=1e-6)
    assert scratch.clip_grad_norm({"a": np.array([3.0]), "b": np.array([4.0])}, 10.0) == 5.0


def test_clip_grad_value_keeps_torch_semantics_for_non_finite():
    g = {"w": np.array([np.inf, -np.inf, np.nan, 0.5])}
    scratch.clip_grad_value(g, 1.0)
    np.testing.assert_array_equal(g["w"], [1.0, -1.0, np.nan, 0.5])


# --- 6. gates past each sequence's end ------------------------------------------------------------

@pytest.mark.parametrize("kind, names", [("gru", ("r", "z", "n")), ("lstm", ("i", "f", "g", "o", "c"))])
def test_gates_are_zero_past_each_end_and_real_before(kind, names):
    layer = KINDS[kind](3, 4, bidirectional=True, dtype="float64", seed=3)
    x = np.random.default_rng(4).standard_normal((2, 5, 3))
    _, _, cache = layer.forward(x, lengths=[5, 2])
    _, _, alone = layer.forward(x[1:2, :2])  # row 1 by itself, its own length
    for d in (0, 1):
        gates, ref_gates = cache.gates(0, d), alone.gates(0, d)
        assert set(gates) == set(names)
        for name in names:
            g = gates[name]
            assert g.shape == (2, 5, 4) and g.flags.c_contiguous
            assert np.all(g[1, 2:] == 0.0) and not np.signbit(g[1, 2:]).any(), (d, name)
            np.testing.assert_allclose(g[1, :2], ref_gates[name][0], rtol=0, atol=1e-12)
            assert np.all(g[0] != 0.0)  # the full-length row keeps every step
    _, _, full = layer.forward(x)  # without lengths nothing is masked
    assert np.all(full.gates(0, 0)["z" if kind == "gru" else "f"] != 0.0)


# --- 7. from_torch of the wrong kind ---------------------------------------------------------------

@pytest.mark.parametrize("cls, module, message", [
    (scratch.LSTM, lambda: torch.nn.GRU(3, 4), "LSTM.from_torch got a GRU: it builds the twin of a torch.nn.LSTM"),
    (scratch.RNN, lambda: torch.nn.LSTM(3, 4), "RNN.from_torch got an LSTM: it builds the twin of a torch.nn.RNN"),
    (scratch.GRU, lambda: torch.nn.RNN(3, 4, nonlinearity="relu"),
     "GRU.from_torch got an RNN: it builds the twin of a torch.nn.GRU"),
    (scratch.GRU, lambda: torch.nn.Linear(3, 4), "GRU.from_torch got a Linear: it builds the twin of a torch.nn.GRU"),
])
def test_from_torch_names_the_kind_mismatch(cls, module, message):
    with pytest.raises(LapnetError) as e:
        cls.from_torch(module())
    assert str(e.value) == message + " (scratch.from_torch(module) picks the class itself)"


def test_from_torch_of_the_right_kind_still_copies_the_weights():
    torch.manual_seed(0)
    mod = torch.nn.GRU(3, 4).double()
    eng = scratch.GRU.from_torch(mod)
    for k, v in mod.state_dict().items():
        np.testing.assert_array_equal(eng.state_dict()[k], v.numpy())


# --- 8. dropout with one layer -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dropout_with_one_layer_warns_as_torch(kind):
    with pytest.warns(UserWarning) as rec:
        layer = KINDS[kind](3, 4, dropout=0.5)
    assert len(rec) == 1
    assert str(rec[0].message) == ("dropout=0.5 has no effect with num_layers=1: dropout sits between stacked layers "
                                   "(after every layer but the last), so it needs num_layers > 1")
    assert rec[0].filename == __file__  # points at the caller's line
    assert layer.dropout == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KINDS[kind](3, 4, 2, dropout=0.5)  # between two layers: no warning
        KINDS[kind](3, 4, dropout=0.0)
        layer.astype("float64")  # a copy does not warn again


def test_from_torch_does_not_repeat_torchs_dropout_warning():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        mod = torch.nn.LSTM(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eng = scratch.from_torch(mod)
    assert eng.dropout == 0.5 and eng.num_layers == 1


def test_bad_arguments_are_refused_before_the_dropout_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LapnetError, match="dtype 'bogus'"):
            scratch.LSTM(3, 4, dropout=0.5, dtype="bogus")


# --- positional arguments after num_layers --------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: scratch.LSTM(3, 4, 2, True),
     "LSTM: 1 positional argument(s) after num_layers, which torch.nn.LSTM would read as bias=True: "
     "pass bias, batch_first, dropout, bidirectional, ... by keyword (e.g. LSTM(3, 4, 2, bidirectional=True))"),
    (lambda: scratch.GRU(3, 4, 1, True, True),
     "GRU: 2 positional argument(s) after num_layers, which torch.nn.GRU would read as bias=True, "
     "batch_first=True: pass bias, batch_first, dropout, bidirectional, ... by keyword "
     "(e.g. GRU(3, 4, 2, bidirectional=True))"),
    (lambda: scratch.RNN(3, 4, 2, "relu"),
     "RNN: 1 positional argument(s) after num_layers, which torch.nn.RNN would read as nonlinearity='relu': "
     "pass nonlinearity, bias, batch_first, dropout, ... by keyword (e.g. RNN(3, 4, 2, bidirectional=True))"),
], ids=["LSTM", "GRU", "RNN"])
def test_positional_arguments_after_num_layers_are_one_clear_error(make, message):
    """torch's 4th positional argument is bias (RNN: nonlinearity); the engine takes everything
    after num_layers by keyword and says so in one line, naming the class, not a TypeError."""
    with pytest.raises(LapnetError) as e:
        make()
    assert str(e.value) == message and "\n" not in str(e.value)


def test_more_positional_arguments_than_torch_names_are_counted():
    with pytest.raises(LapnetError, match=r"would read as bias=True, batch_first=True, dropout=0.0, "
                                          r"bidirectional=True, and 2 more: pass"):
        scratch.GRU(3, 4, 2, True, True, 0.0, True, 0, 1)


def test_the_same_arguments_by_keyword_still_build_the_layer():
    lstm = scratch.LSTM(3, 4, 2, bias=True, batch_first=True, bidirectional=True)
    assert (lstm.num_layers, lstm.num_directions) == (2, 2) and "weight_ih_l1_reverse" in lstm.state_dict()
    rnn = scratch.RNN(3, 4, 2, nonlinearity="relu")
    assert rnn.nonlinearity == "relu" and rnn.num_layers == 2
    assert scratch.GRU(3, 4, 1, gru_form="textbook").gru_form == "textbook"
