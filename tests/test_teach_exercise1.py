"""`lapnet gru-forms`: Exercise 1's GRU from scratch, in both forms, against nn.GRU (float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapnet import scratch
from lapnet.errors import LapnetError
from lapnet.exercise1 import format_gru_forms, gru_forms, notebook_weights_from_torch


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _notebook_gru(W_z, b_z, W_r, b_r, W_h, b_h, xs, h):
    """The notebook's GRUFromScratch.forward, its equations as written (column vectors, [h, x])."""
    states = [h]
    for x in xs:
        hx = np.concatenate([h, x])
        z, r = _sigmoid(W_z @ hx + b_z), _sigmoid(W_r @ hx + b_r)
        h_tilde = np.tanh(W_h @ np.concatenate([r * h, x]) + b_h)
        h = (1 - z) * h + z * h_tilde
        states.append(h)
    return np.stack(states)  # (T + 1, H)


def _notebook_setup(D=3, H=4, T=5, seed=42):
    """The notebook's cell, literally: np.random.seed, GRUFromScratch's weights, test_seq; nn.GRU."""
    np.random.seed(seed)
    scale = np.sqrt(2.0 / (D + H))
    nb = {}
    for g in ("z", "r", "h"):
        nb[f"W_{g}"], nb[f"b_{g}"] = np.random.randn(H, D + H) * scale, np.zeros(H)
    test_seq = [np.random.randn(D) for _ in range(T)]
    torch.manual_seed(seed)
    gru = torch.nn.GRU(input_size=D, hidden_size=H, batch_first=True)
    return nb, np.stack(test_seq), gru


def _textbook_torch_ops(gru, xs):
    """The textbook GRU (reset gate on h before W_hn) written in torch ops on nn.GRU's weights."""
    w_ih, w_hh, b_ih, b_hh = (p.detach().double() for p in (gru.weight_ih_l0, gru.weight_hh_l0,
                                                            gru.bias_ih_l0, gru.bias_hh_l0))
    H = w_hh.shape[1]
    h, out = torch.zeros(H, dtype=torch.float64), []
    for x in torch.tensor(xs):
        ax, ah = w_ih @ x + b_ih, w_hh[: 2 * H] @ h + b_hh[: 2 * H]
        r, z = torch.sigmoid(ax[:H] + ah[:H]), torch.sigmoid(ax[H : 2 * H] + ah[H:])
        n = torch.tanh(ax[2 * H :] + w_hh[2 * H :] @ (r * h) + b_hh[2 * H :])
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out).numpy()  # (T, H)


def test_the_notebooks_sizes_pytorch_form_is_exact_textbook_form_is_not():
    report = gru_forms()
    assert (report["input_size"], report["hidden_size"], report["steps"], report["seed"]) == (3, 4, 5, 42)
    _, xs, gru = _notebook_setup()
    assert all(float(p.detach().abs().min()) > 0 for p in (gru.bias_ih_l0, gru.bias_hh_l0))  # non-zero biases
    with torch.no_grad():
        want = gru.double()(torch.tensor(xs)[None])[0][0].numpy()  # (T, H)
    np.testing.assert_allclose(report["torch_h"], want, rtol=0, atol=1e-15)
    rows = report["per_step"]
    assert [r["t"] for r in rows] == [1, 2, 3, 4, 5]
    assert max(r["pytorch_form"] for r in rows) == report["max_abs_diff"]["pytorch_form"] < 1e-15  # rounding only
    assert min(r["textbook_form"] for r in rows) > 5e-2  # visibly another function, at every step
    # the textbook column is the textbook cell's real difference, recomputed in torch ops
    textbook = _textbook_torch_ops(gru, xs)
    np.testing.assert_allclose([r["textbook_form"] for r in rows], np.abs(textbook - want).max(axis=1),
                               rtol=0, atol=1e-14)
    assert report["max_abs_diff"]["textbook_form"] == pytest.approx(np.abs(textbook - want).max(), abs=1e-14)
    assert report["textbook_layout_roundtrip"] < 1e-15


def test_the_notebooks_own_cell_and_printed_line():
    report = gru_forms()
    nb, xs, gru = _notebook_setup()
    states = report["notebook"]["hidden_states"]
    assert len(states) == 6  # "this should produce 6 hidden states (initial + 5 steps)"
    np.testing.assert_allclose(states, _notebook_gru(**nb, xs=xs, h=np.zeros(4)), rtol=0, atol=1e-12)
    with torch.no_grad():
        _, h = gru(torch.tensor(xs).unsqueeze(0).float())  # the notebook's float32 line
    np.testing.assert_array_equal(report["notebook"]["torch_final_hidden_float32"], h.squeeze().numpy())


def test_global_generators_untouched():
    np.random.seed(7)
    torch.manual_seed(7)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    gru_forms(2, 3, 4, seed=11)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("D,H,T,seed", [(1, 1, 1, 0), (5, 2, 8, 3), (4, 6, 3, 123)])
def test_other_sizes(D, H, T, seed):
    r = gru_forms(D, H, T, seed)
    assert len(r["per_step"]) == T and np.shape(r["torch_h"]) == (T, H)
    assert r["max_abs_diff"]["pytorch_form"] < 1e-15
    assert r["max_abs_diff"]["textbook_form"] > 1e-4
    assert len(r["notebook"]["hidden_states"]) == T + 1
    nb, xs, _ = _notebook_setup(D, H, T, seed)
    np.testing.assert_allclose(r["notebook"]["hidden_states"], _notebook_gru(**nb, xs=xs, h=np.zeros(H)),
                               rtol=0, atol=1e-12)


def test_notebook_layout_is_the_inverse_of_gru_weights_from_notebook():
    rng = np.random.default_rng(0)
    D, H = 3, 5
    nb = {f"W_{g}": rng.standard_normal((H, H + D)) for g in "zrh"} | {f"b_{g}": rng.standard_normal(H) for g in "zrh"}
    sd = scratch.gru_weights_from_notebook(**nb)
    back = notebook_weights_from_torch(sd)
    for k, v in nb.items():
        np.testing.assert_allclose(back[k], v, rtol=0, atol=0, err_msg=k)
    # from a torch module: the biases are summed, and the copy runs like the module in the textbook form
    torch.manual_seed(1)
    gru = torch.nn.GRU(D, H, batch_first=True, dtype=torch.float64)
    x = rng.standard_normal((2, 6, D))
    direct, via = (scratch.GRU(D, H, gru_form="textbook", dtype="float64") for _ in range(2))
    direct.load_state_dict(gru.state_dict())
    via.load_state_dict(scratch.gru_weights_from_notebook(**notebook_weights_from_torch(gru.state_dict())))
    np.testing.assert_allclose(via.forward(x)[0], direct.forward(x)[0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("bad,match", [
    ({"weight_ih_l0": np.zeros((12, 3))}, "bias_hh_l0"),  # missing keys
    ({"weight_ih_l0": np.zeros((12, 3)), "weight_hh_l0": np.zeros((12, 4)), "bias_ih_l0": np.zeros(12),
      "bias_hh_l0": np.zeros(11)}, "bias_hh_l0 must be"),
    ({"weight_ih_l0": np.zeros((9, 3)), "weight_hh_l0": np.zeros((12, 4)), "bias_ih_l0": np.zeros(12),
      "bias_hh_l0": np.zeros(12)}, "weight_ih_l0 must be"),
])
def test_notebook_weights_from_torch_refuses_bad_state_dicts(bad, match):
    with pytest.raises(LapnetError, match=match) as e:
        notebook_weights_from_torch(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kw", [dict(hidden_size=0), dict(steps=-1), dict(input_size=2.5), dict(seed=-1)])
def test_library_refuses_bad_sizes(kw):
    with pytest.raises(LapnetError):
        gru_forms(**kw)


def test_cli_text_and_json(run_cli):
    code, out, err = run_cli("gru-forms")
    assert code == 0, err
    assert "  step  pytorch form  textbook form" in out
    assert "Number of hidden states: 6" in out and "h_5: [" in out
    assert out == format_gru_forms(gru_forms()) + "\n"
    code, out, err = run_cli("gru-forms", "--input-size", "2", "--hidden", "3", "--steps", "4", "--seed", "5", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert (r["input_size"], r["hidden_size"], r["steps"], r["seed"]) == (2, 3, 4, 5)
    assert r["max_abs_diff"]["pytorch_form"] < 1e-15 < 1e-3 < r["max_abs_diff"]["textbook_form"]


@pytest.mark.parametrize("args,match", [(("--hidden", "0"), "--hidden must be at least 1"),
                                        (("--steps", "0"), "--steps must be at least 1"),
                                        (("--input-size", "-2"), "--input-size must be at least 1"),
                                        (("--seed", "-1"), "--seed")])
def test_cli_bad_input_exits_2(run_cli, args, match):
    code, out, err = run_cli("gru-forms", *args)
    assert code == 2 and out == "" and match in err and len(err.strip().splitlines()) == 1
