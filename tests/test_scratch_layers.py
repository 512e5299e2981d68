"""Embedding, Linear, losses, clipping and optimizers of lapnet.scratch against torch;
truncated BPTT; bad input; the engine never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lapnet import scratch
from lapnet.errors import LapnetError


def t(a):
    return torch.tensor(np.asarray(a), requires_grad=True)


def test_engine_never_imports_torch():
    code = "import sys, lapnet.scratch; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_embedding_and_linear_match_torch():
    rng = np.random.default_rng(0)
    emb = scratch.Embedding(7, 3, dtype="float64", seed=1)
    lin = scratch.Linear(3, 5, dtype="float64", seed=2)
    ids = rng.integers(0, 7, (4, 6))  # repeated ids: their gradients must accumulate
    e, ce = emb.forward(ids)
    y, cl = lin.forward(e)
    dy = rng.standard_normal(y.shape)
    de, g_lin = lin.backward(dy, cl)
    g_emb = emb.backward(de, ce)

    temb, tlin = torch.nn.Embedding(7, 3, dtype=torch.float64), torch.nn.Linear(3, 5, dtype=torch.float64)
    temb.load_state_dict({k: torch.tensor(v) for k, v in emb.state_dict().items()})
    tlin.load_state_dict({k: torch.tensor(v) for k, v in lin.state_dict().items()})
    ty = tlin(temb(torch.tensor(ids)))
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(g_lin["weight"], tlin.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(g_lin["bias"], tlin.bias.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(g_emb["weight"], temb.weight.grad.numpy(), atol=1e-12)
    with pytest.raises(LapnetError, match=r"token ids must be in \[0, 7\)"):
        emb.forward(np.array([[0, 7]]))


@pytest.mark.parametrize("use_mask", [False, True])
def test_cross_entropy_matches_torch_with_ignore_and_mask(use_mask):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 4, 6)) * 3
    targets = rng.integers(0, 6, (3, 4))
    targets[0, 1] = -100
    mask = rng.random((3, 4)) > 0.3 if use_mask else None
    loss, grad = scratch.softmax_cross_entropy(logits, targets, mask=mask, ignore_index=-100)
    tt = targets.copy()
    if use_mask:
        tt[~mask] = -100  # torch's way of not counting a position
    tl = t(logits)
    ref = torch.nn.functional.cross_entropy(tl.reshape(-1, 6), torch.tensor(tt).reshape(-1), ignore_index=-100)
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12
    np.testing.assert_allclose(grad, tl.grad.numpy(), atol=1e-12)


def test_extreme_logits_and_saturated_gates_stay_finite():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])
    loss, grad = scratch.softmax_cross_entropy(logits, np.array([1, 2]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(1e4, rel=1e-9)  # the first row pays 2e4 / 2 rows
    s = scratch.sigmoid(np.array([-1e4, -800.0, 0.0, 800.0, 1e4]))
    np.testing.assert_array_equal(s, [0.0, 0.0, 0.5, 1.0, 1.0])
    for cls in (scratch.RNN, scratch.LSTM, scratch.GRU):
        for dt in ("float32", "float64"):
            layer = cls(2, 3, 2, bidirectional=True, dtype=dt)
            x = np.full((2, 4, 2), 1e4)  # every gate pre-activation saturates
            x[1] *= -1
            out, st, cache = layer.forward(x)
            dx, ds0, grads = layer.backward(np.ones_like(out), None, cache)
            assert np.isfinite(out).all() and np.isfinite(dx).all()
            assert all(np.isfinite(g).all() for g in grads.values())


def test_mse_matches_torch():
    rng = np.random.default_rng(2)
    p, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    loss, grad = scratch.mse_loss(p, y)
    tp = t(p)
    ref = torch.nn.functional.mse_loss(tp, torch.tensor(y))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12
    np.testing.assert_allclose(grad, tp.grad.numpy(), atol=1e-12)


def test_clipping_matches_torch():
    rng = np.random.default_rng(3)
    grads = {"a": rng.standard_normal((4, 3)) * 5, "b": rng.standard_normal(7)}
    ps = [torch.zeros(4, 3, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)]
    for p, g in zip(ps, grads.values()):
        p.grad = torch.tensor(g)
    norm = scratch.clip_grad_norm(grads, 1.5)
    ref = torch.nn.utils.clip_grad_norm_(ps, 1.5)
    assert abs(norm - ref.item()) < 1e-12
    for p, g in zip(ps, grads.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), atol=1e-12)
    scratch.clip_grad_value(grads, 0.1)
    torch.nn.utils.clip_grad_value_(ps, 0.1)
    for p, g in zip(ps, grads.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), atol=1e-12)
        assert np.abs(g).max() <= 0.1


@pytest.mark.parametrize("name", ["sgd", "sgd_nesterov", "adagrad", "adam", "adam_wd"])
def test_optimizers_mirror_torch_for_ten_steps(name):
    rng = np.random.default_rng(4)
    start = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    params = {k: v.copy() for k, v in start.items()}
    tparams = [torch.tensor(v, requires_grad=True) for v in start.values()]
    mk = {
        "sgd": (lambda p: scratch.SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
        "sgd_nesterov": (lambda p: scratch.SGD(p, lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.01),
                         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.01)),
        "adagrad": (lambda p: scratch.Adagrad(p, lr=0.3), lambda p: torch.optim.Adagrad(p, lr=0.3)),
        "adam": (lambda p: scratch.Adam(p, lr=0.05), lambda p: torch.optim.Adam(p, lr=0.05)),
        "adam_wd": (lambda p: scratch.Adam(p, lr=0.05, betas=(0.8, 0.9), weight_decay=0.1),
                    lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.9), weight_decay=0.1)),
    }[name]
    opt, topt = mk[0](params), mk[1](tparams)
    for step in range(10):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        lr = 0.05 / (1 + step) if name.startswith("adam") else None  # a schedule, as train.fit sets it
        opt.step(grads, lr=lr)
        for p, g in zip(tparams, grads.values()):
            p.grad = torch.tensor(g)
        if lr is not None:
            for group in topt.param_groups:
                group["lr"] = lr
        topt.step()
    for p, tp in zip(params.values(), tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), atol=1e-12)
    state = opt.state_dict()
    again = type(opt)({k: v.copy() for k, v in params.items()}, lr=0.05)
    again.load_state_dict(state)
    assert again.t == 10


def test_truncated_bptt_carries_state_without_gradient():
    rng = np.random.default_rng(5)
    lstm = scratch.LSTM(2, 3, dtype="float64")
    x = rng.standard_normal((2, 7, 2))
    R = rng.standard_normal((2, 7, 3))
    whole, _, _ = lstm.forward(x)

    def loss_grad(out, sl):
        return float((out * R[:, sl]).sum()), R[:, sl]

    total, grads, dx, state = scratch.truncated_bptt(lstm, x, 3, loss_grad)
    assert total == pytest.approx(float((whole * R).sum()), abs=1e-12)  # the forward sees all history
    # gradient of each chunk with its initial state held constant, summed
    expect, s = None, None
    for sl in scratch.chunks(7, 3):
        out, s_new, cache = lstm.forward(x[:, sl], s)
        _, _, g = lstm.backward(R[:, sl], None, cache)
        expect = g if expect is None else {k: expect[k] + g[k] for k in g}
        s = s_new
    for k in grads:
        np.testing.assert_allclose(grads[k], expect[k], atol=1e-12)
    full = lstm.backward(R, None, lstm.forward(x)[2])[2]
    assert any(np.abs(full[k] - grads[k]).max() > 1e-6 for k in grads)  # truncation changes something
    np.testing.assert_allclose(state[0], lstm.forward(x)[1][0], atol=1e-12)


def test_dropout_between_layers_only_in_training():
    gru = scratch.GRU(3, 4, num_layers=2, dropout=0.5, dtype="float64")
    x = np.random.default_rng(6).standard_normal((2, 5, 3))
    a = gru.forward(x)[0]
    np.testing.assert_array_equal(a, gru.forward(x, rng=np.random.default_rng(1))[0])  # eval: no dropout
    b, _, cache = gru.forward(x, train=True, rng=np.random.default_rng(0))
    assert np.abs(a - b).max() > 1e-3
    c = gru.forward(x, train=True, rng=np.random.default_rng(0))[0]
    np.testing.assert_array_equal(b, c)  # same rng, same masks
    dx, _, grads = gru.backward(np.ones_like(b), None, cache)
    assert np.isfinite(dx).all()
    with pytest.raises(LapnetError, match="needs an rng"):
        gru.forward(x, train=True)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m.forward(np.zeros((2, 3))), r"must be \(B, T, D\)"),
        (lambda m: m.forward(np.zeros((2, 3, 5))), "D=5 features per step but input_size is 4"),
        (lambda m: m.forward(np.zeros((2, 0, 4))), "empty"),
        (lambda m: m.forward(np.full((2, 3, 4), np.nan)), "NaN"),
        (lambda m: m.forward(np.zeros((2, 3, 4)), lengths=[3, 4]), "between 1 and T=3"),
        (lambda m: m.forward(np.zeros((2, 3, 4)), lengths=[3, 0]), "between 1 and T=3"),
        (lambda m: m.forward(np.zeros((2, 3, 4)), lengths=[3]), r"lengths must have shape \(2,\)"),
        (lambda m: m.forward(np.zeros((2, 3, 4)), (np.zeros((1, 2, 5)), np.zeros((2, 2, 5)))), r"state h must have shape \(2, 2, 5\)"),
        (lambda m: m.forward(np.zeros((2, 3, 4)), np.zeros((2, 2, 5))), r"must be a pair \(h, c\)"),
        (lambda m: m.load_state_dict({}), "missing weight_ih_l0"),
        (lambda m: m.load_state_dict({**m.state_dict(), "extra": np.zeros(1)}), "unexpected extra"),
        (lambda m: m.load_state_dict({**m.state_dict(), "bias_hh_l0": np.zeros(3)}), r"bias_hh_l0.*shape \(3,\)"),
        (lambda m: m.backward(np.zeros((2, 3, 6)), None, m.forward(np.zeros((2, 3, 4)))[2]), "dout must have shape"),
        (lambda m: m.backward(np.full((2, 3, 5), np.nan), None, m.forward(np.zeros((2, 3, 4)))[2]), "dout contains NaN"),
        (lambda m: m.backward(None, (np.zeros((2, 2, 5)), np.zeros((2, 3, 5))), m.forward(np.zeros((2, 3, 4)))[2]),
         r"dstate c must have shape \(2, 2, 5\)"),
    ],
)
def test_bad_input_raises_one_clear_error(call, match):
    lstm = scratch.LSTM(4, 5, num_layers=2)
    with pytest.raises(LapnetError, match=match):
        call(lstm)


def test_bad_constructor_arguments():
    with pytest.raises(LapnetError, match="hidden_size"):
        scratch.RNN(3, 0)
    with pytest.raises(LapnetError, match="nonlinearity"):
        scratch.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(LapnetError, match="dtype"):
        scratch.GRU(3, 4, dtype="float16")
    with pytest.raises(LapnetError, match="dropout"):
        scratch.LSTM(3, 4, dropout=1.0)


def test_engine_runs_blas_single_threaded_and_restores_the_setting(monkeypatch):
    from lapnet.scratch import blas

    before = blas.blas_threads()
    seen = []
    real = np.dot

    def spy(*args):
        seen.append(blas.blas_threads())
        return real(*args)

    monkeypatch.setattr(np, "dot", spy)
    lstm = scratch.LSTM(2, 3)
    out, _, cache = lstm.forward(np.ones((1, 4, 2)))
    lstm.backward(out, None, cache)
    assert seen and (before is None or set(seen) == {1})
    assert blas.blas_threads() == before
    with pytest.raises(ValueError):
        scratch.set_engine_threads(0)


@pytest.mark.parametrize("kind,lengths", [("rnn", [8, 2, 5]), ("lstm", [8, 2, 5]), ("gru", [8, 2, 5]), ("lstm", [5, 2, 4])])
def test_truncated_bptt_with_lengths_equals_each_sequence_alone(kind, lengths):
    rng = np.random.default_rng(11)
    layer = getattr(scratch, kind.upper())(2, 3, num_layers=2, dtype="float64", seed=4)
    x = rng.standard_normal((3, 8, 2))
    R = rng.standard_normal((3, 8, 3))
    lengths = np.array(lengths)  # [8, 2, 5]: ends inside the first and second chunks; [5, 2, 4]: the last chunk runs nothing

    def loss_grad(out, sl):
        return float((out * R[:, sl]).sum()), R[:, sl]

    total, grads, dx, state = scratch.truncated_bptt(layer, x, 3, loss_grad, lengths=lengths)
    expect_total, expect = 0.0, None
    for b, n in enumerate(lengths):  # each sequence alone, cut at its own length, same chunks
        rb = R[b:b + 1, :n]
        tb, gb, dxb, sb = scratch.truncated_bptt(layer, x[b:b + 1, :n], 3, lambda o, sl: (float((o * rb[:, sl]).sum()), rb[:, sl]))
        expect_total += tb
        expect = gb if expect is None else {k: expect[k] + gb[k] for k in gb}
        np.testing.assert_allclose(dx[b, :n], dxb[0], atol=1e-12)
        assert np.all(dx[b, n:] == 0)  # no gradient past the end
        for s, s1 in zip(state if kind == "lstm" else (state,), sb if kind == "lstm" else (sb,)):
            np.testing.assert_allclose(s[:, b], s1[:, 0], atol=1e-12)  # the state at its own last step
    assert total == pytest.approx(expect_total, abs=1e-10)
    for k in grads:
        np.testing.assert_allclose(grads[k], expect[k], atol=1e-12)


def test_truncated_bptt_refuses_bidirectional_and_bad_lengths():
    x = np.zeros((2, 4, 2))
    with pytest.raises(LapnetError, match="unidirectional"):
        scratch.truncated_bptt(scratch.GRU(2, 3, bidirectional=True), x, 2, lambda o, sl: (0.0, o))
    with pytest.raises(LapnetError, match="lengths must be between 1 and T=4"):
        scratch.truncated_bptt(scratch.GRU(2, 3), x, 2, lambda o, sl: (0.0, o), lengths=[5, 1])


def test_dropout_scales_what_it_keeps_by_one_over_the_keep_share():
    """Inverted dropout, as torch: kept units are scaled by 1 / (1 - p) in training, so eval needs
    no rescaling (a mask of plain 0/1 passed every other test)."""
    lstm = scratch.LSTM(3, 4, num_layers=2, dropout=0.25, dtype="float64")
    x = np.random.default_rng(0).standard_normal((64, 20, 3))
    _, _, cache = lstm.forward(x, train=True, rng=np.random.default_rng(1))
    mask = cache.drop_masks[0]
    assert sorted(np.unique(mask)) == [0.0, pytest.approx(4 / 3, rel=1e-15)]
    assert 0.72 < np.mean(mask > 0) < 0.78  # about 1 - p of the units kept
