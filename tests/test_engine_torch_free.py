"""The NumPy engine never imports torch: importing `lapnet.scratch` and running every public
function in a fresh interpreter leaves `torch` out of `sys.modules` (the engine tour, which
compares with torch, lives in `lapnet.experiments.engine_tour`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np

    import lapnet.scratch as scratch
    from lapnet.scratch import blas

    assert "torch" not in sys.modules, "import lapnet.scratch"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3))
    ran = []
    for cls in (scratch.RNN, scratch.LSTM, scratch.GRU):
        layer = cls(3, 4, 2, bidirectional=True, dtype="float64", seed=1)
        out, state, cache = layer.forward(x, lengths=[5, 3])  # (B, T, 2H)
        dx, ds0, grads = layer.backward(np.ones_like(out), None, cache)
        layer.load_state_dict(layer.state_dict())
        assert dx.shape == x.shape and set(grads) == set(layer.state_dict())
        res = scratch.gradcheck(cls(3, 2, dtype="float64", seed=2), x, samples=2)
        assert res.ok(), res.max_rel_error
        loss = scratch.truncated_bptt(cls(3, 4, dtype="float64"), x, 2, lambda o, sl: (float((o * o).sum()), 2 * o))
        ran.append(cls.__name__)
    emb, lin = scratch.Embedding(7, 3, seed=0), scratch.Linear(3, 7, seed=0)
    e, ecache = emb.forward(np.array([[1, 2, 3]]))  # (1, 3, 3)
    logits, lcache = lin.forward(e)  # (1, 3, 7)
    ce, dlogits = scratch.softmax_cross_entropy(logits, np.array([[2, 3, 4]]))
    de, g_lin = lin.backward(dlogits, lcache)
    g_emb = emb.backward(de, ecache)
    mse, _ = scratch.mse_loss(logits, np.zeros_like(logits))
    grads = {**{f"lin.{k}": v for k, v in g_lin.items()}, **{f"emb.{k}": v for k, v in g_emb.items()}}
    params = {**{f"lin.{k}": v for k, v in lin.parameters().items()},
              **{f"emb.{k}": v for k, v in emb.parameters().items()}}
    scratch.clip_grad_value(grads, 1.0)
    scratch.clip_grad_norm(grads, 1.0)
    for opt in (scratch.SGD(params, lr=0.1), scratch.Adagrad(params), scratch.Adam(params)):
        opt.step(grads)
    scratch.sigmoid(x), scratch.softmax(x), scratch.log_softmax(x)
    list(scratch.chunks(5, 2)), scratch.detach(np.ones(2))
    ref = scratch.reference
    z = np.zeros((2, 4))
    for n in (1, 3, 4):  # rnn, gru, lstm: the blocks stacked in w_ih
        w = [rng.standard_normal(s) for s in ((n * 4, 3), (n * 4, 4), (n * 4,), (n * 4,))]
        if n == 4:
            hs, _, rcache = ref.lstm_forward(x, z, z, *w)
            ref.lstm_backward(np.ones_like(hs), z, z, rcache)
        else:
            fwd, bwd = (ref.rnn_forward, ref.rnn_backward) if n == 1 else (ref.gru_forward, ref.gru_backward)
            hs, _, rcache = fwd(x, z, *w)
            bwd(np.ones_like(hs), z, rcache)
    scratch.gru_weights_from_notebook(*(rng.standard_normal(s) for s in ((4, 7), (4,)) * 3))
    scratch.set_engine_threads(2), blas.set_blas_threads(1), blas.blas_threads(), scratch.set_engine_threads(1)
    assert "torch" not in sys.modules, "running lapnet.scratch"
    print(" ".join(ran), "ok")
""")


def test_scratch_never_imports_torch():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RNN LSTM GRU ok"
