"""CharLM on both engines (float64 parity), the sampling steppers, and the sampling rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lapnet.data.text import Vocab
from lapnet.errors import LapnetError
from lapnet.models.charlm import CharLM, CharLMConfig, TorchStepper
from lapnet.models.numpy_charlm import NumpyCharLM, NumpyStepper
from lapnet.sampling import Chooser, SampleConfig, filter_probs, generate

V = 11
VOCAB = Vocab("abcdefghij ")


def _models(arch: str, layers: int = 2, seed: int = 0, dtype=torch.float64):
    """A torch CharLM with non-zero random biases everywhere, and its NumPy twin."""
    torch.manual_seed(seed)
    cfg = CharLMConfig(V, arch=arch, embed=5, hidden=7, layers=layers)
    m = CharLM(cfg).to(dtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    arrays = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    return m, NumpyCharLM(cfg, arrays, dtype=np.float64 if dtype == torch.float64 else np.float32)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_numpy_charlm_matches_torch_forward_and_gradients(arch):
    m, nm = _models(arch)
    rng = np.random.default_rng(1)
    x = rng.integers(0, V, (3, 6))
    h0 = rng.standard_normal((2, 3, 7))
    state = (h0, rng.standard_normal((2, 3, 7))) if arch == "lstm" else h0
    tstate = tuple(torch.tensor(s) for s in state) if arch == "lstm" else torch.tensor(state)
    logits, st = m(torch.tensor(x), tstate)
    nlogits, nst, cache = nm.forward(x, state)
    torch.testing.assert_close(torch.tensor(nlogits), logits.detach(), rtol=1e-10, atol=1e-10, msg="logits")
    up = rng.standard_normal(nlogits.shape)  # a random upstream gradient, not .sum()
    (logits * torch.tensor(up)).sum().backward()
    grads = nm.backward(up, cache)
    for name, p in m.named_parameters():
        torch.testing.assert_close(torch.tensor(grads[name]), p.grad, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("engine", ["torch", "torch-cells", "numpy"])
def test_stateful_stepping_equals_re_encoding_the_prefix(arch, engine):
    m, nm = _models(arch, dtype=torch.float32)
    stepper = {"torch": lambda: TorchStepper(m), "torch-cells": lambda: TorchStepper(m, numpy_steps=False),
               "numpy": lambda: NumpyStepper(nm)}[engine]()
    ids = np.random.default_rng(2).integers(0, V, (2, 12))
    logits, state = stepper.prime(ids[:, :3])
    for t in range(3, 12):  # step k's logits == the full forward pass over the prefix ids[:, :k]
        with torch.no_grad():
            full = m(torch.tensor(ids[:, :t]))[0][:, -1].numpy()
        np.testing.assert_allclose(logits, full, rtol=1e-4, atol=1e-5, err_msg=f"t={t}")
        logits, state = stepper.step(ids[:, t], state)


def test_greedy_is_the_argmax_path():
    m, _ = _models("lstm", dtype=torch.float32)
    out = generate(TorchStepper(m), VOCAB, prime="abc", length=15, cfg=SampleConfig(temperature=0))[0]
    ids = list(VOCAB.encode("abc"))
    for _ in range(15):  # re-encode the whole text each step and take the most likely character
        with torch.no_grad():
            ids.append(int(m(torch.tensor([ids]))[0][0, -1].argmax()))
    assert out == VOCAB.decode(ids)


def test_samples_repeat_with_a_seed_and_both_engines_agree():
    m, nm = _models("gru", dtype=torch.float32)
    kw = dict(prime="ab", length=40, cfg=SampleConfig(temperature=1.0), num_samples=3)
    a = generate(TorchStepper(m), VOCAB, seed=5, **kw)
    assert a == generate(TorchStepper(m), VOCAB, seed=5, **kw)
    assert a == generate(NumpyStepper(nm), VOCAB, seed=5, **kw)
    assert a != generate(TorchStepper(m), VOCAB, seed=6, **kw)
    assert len(a) == 3 and all(s.startswith("ab") and len(s) == 42 for s in a)
    assert len(set(a)) > 1  # the batch holds independent samples


def test_top_k_and_top_p_keep_the_right_characters():
    logits = np.log(np.array([[0.5, 0.25, 0.15, 0.1], [0.1, 0.2, 0.3, 0.4]]))
    p = filter_probs(logits, SampleConfig(temperature=1.0, top_k=2))
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3, 0, 0], [0, 0, 3 / 7, 4 / 7]])
    p = filter_probs(logits, SampleConfig(temperature=1.0, top_p=0.7))  # 0.5+0.25 reaches 0.7
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3, 0, 0], [0, 0, 3 / 7, 4 / 7]])
    p = filter_probs(logits, SampleConfig(temperature=1.0, top_p=0.5))  # the top one alone suffices
    np.testing.assert_allclose(p[0], [1, 0, 0, 0])
    p = filter_probs(logits, SampleConfig(temperature=1.0, top_p=1.0))
    np.testing.assert_allclose(p, np.exp(logits))
    p = filter_probs(logits, SampleConfig(temperature=0.5))  # temperature sharpens: p^2 renormalised
    np.testing.assert_allclose(p[0], np.array([25, 6.25, 2.25, 1]) / 34.5)


@pytest.mark.parametrize("cfg", [SampleConfig(temperature=1.0), SampleConfig(temperature=0.5),
                                 SampleConfig(temperature=1.0, top_k=3), SampleConfig(temperature=0.5, top_p=0.999)])
def test_sampling_matches_the_distribution(cfg):
    """Gumbel-max (plain) and inverse CDF (top-k / top-p) both draw from softmax(z / T)."""
    probs = np.array([0.6, 0.3, 0.1, 0.0])
    choose = Chooser(cfg, seed=0)
    logits = np.tile(np.log(probs + 1e-300), (20_000, 1))
    want = probs ** (1 / cfg.temperature) / (probs ** (1 / cfg.temperature)).sum()
    freq = np.bincount(choose(logits), minlength=4) / 20_000
    np.testing.assert_allclose(freq, want, atol=0.015)
    assert freq[3] == 0


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_one_stream_fast_path_gives_the_batched_samples(arch):
    """`generate` with one stream takes the scalar loop (`step_one`, `Chooser.one`); it must
    make exactly the characters the batched loop makes with B = 1 and the same seed."""
    torch.manual_seed(3)
    tm = CharLM(CharLMConfig(len(VOCAB), arch=arch, hidden=16, embed=8, layers=2)).eval()
    nm = NumpyCharLM(tm.cfg, {k: v.detach().numpy() for k, v in tm.state_dict().items()})

    class Batched:  # the same stepper without step_one: generate falls back to the batched loop
        def __init__(self, s):
            self.prime, self.step = s.prime, s.step

    for cfg in (SampleConfig(0.8), SampleConfig(1.0, top_k=5), SampleConfig(0.0)):
        streamed: list[str] = []
        stepper, calls = NumpyStepper(nm), []
        stream = stepper.stream
        stepper.stream = lambda *a: calls.append(stream(*a)) or calls[-1]  # records what it returned
        fast = generate(stepper, VOCAB, prime="ab", length=600, cfg=cfg, seed=11,
                        on_chars=lambda cs: streamed.extend(cs))
        slow = generate(Batched(NumpyStepper(nm)), VOCAB, prime="ab", length=600, cfg=cfg, seed=11)
        assert fast == slow  # 600 characters: the LSTM's fused loop crosses two blocks of noise
        assert len(fast[0]) == 602 and "".join(streamed) == fast[0]
        # the LSTM's fused loop made the 599 characters after the first; top-k never asks for it
        ran = [c is not None for c in calls]
        assert ran == ([] if cfg.top_k else [arch == "lstm"])
        if arch == "lstm" and not cfg.top_k:
            assert len(calls[0]) == 599


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)])
def test_bad_sampling_options_are_refused(bad):
    with pytest.raises(LapnetError):
        SampleConfig(**bad).validate()


def test_step_one_buffers_are_made_with_the_stepper_and_match_step():
    """NumpyStepper makes step_one's LSTM gate buffers in __init__ (no lazy hasattr), and the
    single-stream step gives the batched step's logits and states, character after character."""
    torch.manual_seed(4)
    tm = CharLM(CharLMConfig(len(VOCAB), arch="lstm", hidden=6, embed=4, layers=2)).eval()
    nm = NumpyCharLM(tm.cfg, {k: v.detach().numpy() for k, v in tm.state_dict().items()})
    st = NumpyStepper(nm)
    assert len(st._gates) == 2 and all(g.shape == (24,) for g in st._gates)  # (4H,) per layer
    assert all(v[0].base is g and v[4].base is g for v, g in zip(st._views, st._gates))  # views, not copies
    _, s_batch = st.prime(np.array([[1, 2]]))
    s_one = s_batch
    for i in (3, 0, 5, 2):
        lb, s_batch = st.step(np.array([i]), s_batch)  # (1, V)
        lo, s_one = st.step_one(i, s_one)  # (V,)
        np.testing.assert_allclose(lo, lb[0], rtol=1e-5, atol=1e-6)
    gru = CharLM(CharLMConfig(len(VOCAB), arch="gru", hidden=3, embed=2))
    assert NumpyStepper(NumpyCharLM(gru.cfg, {k: v.detach().numpy() for k, v in gru.state_dict().items()}))._gates == []
