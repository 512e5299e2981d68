"""`lapnet shapes`: shapes and facts computed from torch, checked against independent expectations."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lapnet.shapes import ShapeConfig, explore_shapes


def _by_name(rows):
    return {r["name"]: r for r in rows}


def _expected_params(gates: int, D: int, H: int, L: int, dirs: int) -> int:
    # written out independently of lapnet: two biases per gate block, stacked layers read dirs*H
    return sum(dirs * gates * ((D if l == 0 else dirs * H) * H + H * H + 2 * H) for l in range(L))


def test_issue_example_json(run_cli):
    code, out, err = run_cli("shapes", "--arch", "lstm", "--input-size", "10", "--hidden", "20", "--layers", "2",
                             "--bidirectional", "--batch-first", "--batch", "3", "--seq-len", "5",
                             "--lengths", "5,3,2", "--json")
    assert code == 0, err
    rep = json.loads(out)
    t = _by_name(rep["tensors"])
    assert t["input"]["shape"] == [3, 5, 10]
    assert t["output"]["shape"] == [3, 5, 40]
    assert t["h_n"]["shape"] == [4, 3, 20] and t["c_n"]["shape"] == [4, 3, 20]
    assert t["h_n"]["axes"] == ["num_layers * num_directions", "batch", "hidden"]
    assert all(r["axes_match"] for r in rep["tensors"] + rep["parameters"])
    assert rep["total_parameters"] == _expected_params(4, 10, 20, 2, 2) == 15040
    p = _by_name(rep["parameters"])
    assert p["weight_ih_l1_reverse"]["shape"] == [80, 40] and p["weight_ih_l1_reverse"]["count"] == 3200
    facts = {f["id"]: f for f in rep["facts"]}
    for fid in ("packed_final_state_at_own_last_step", "packed_padding_is_zero", "packed_last_step_is_not_final_state",
                "packed_equals_each_alone", "backward_final_state_at_time_0", "output_is_top_layer_only",
                "cell_state_not_in_output", "state_is_never_batch_first"):
        assert facts[fid]["holds"], facts[fid]
    # 0-based, as torch's weight names (weight_ih_l0) and `lapnet gates --layer`
    assert rep["h_n_slots"] == ["h_n[0] = layer 0 forward", "h_n[1] = layer 0 backward",
                                "h_n[2] = layer 1 forward", "h_n[3] = layer 1 backward"]
    assert facts["output_is_top_layer_only"]["claim"].startswith("h_n[0] (layer 0's final state, the bottom layer)")


def test_text_table_time_first_by_default(run_cli):
    code, out, err = run_cli("shapes", "--arch", "gru", "--bidirectional", "--layers", "2")
    assert code == 0, err
    assert "input:  (5, 3, 10)  = (seq_len, batch, input_size)" in out
    assert "h_n:    (4, 3, 20)  = (num_layers * num_directions, batch, hidden)" in out
    assert ("  h_n[0] = layer 0 forward   h_n[1] = layer 0 backward   h_n[2] = layer 1 forward   h_n[3] = layer 1 backward\n"
            "  (layers count from 0, as torch names the weights: layer 0 is weight_ih_l0, the bottom one)\n") in out
    assert "output: (5, 3, 40)  = (seq_len, batch, num_directions * hidden)" in out
    assert "[NO ]" not in out and "[yes] output[0, :, 20:] == h_n[-1]" in out
    assert "total: 11,280 parameters" in out  # 2 layers x 2 directions of a GRU, two biases


@pytest.mark.parametrize("batch_first", [False, True])
def test_bidirectional_halves_on_values(batch_first):
    """The report's claims, and the same claims re-derived from an independent torch run."""
    cfg = ShapeConfig("lstm", 4, 3, 1, bidirectional=True, batch_first=batch_first, batch=2, seq_len=6, seed=3)
    rep = explore_shapes(cfg)
    facts = {f["id"]: f for f in rep["facts"]}
    assert facts["last_output_is_final_hidden"]["holds"] and facts["last_output_is_final_hidden"]["max_abs_diff"] < 1e-12
    assert facts["backward_final_state_at_time_0"]["holds"] and facts["backward_final_state_at_time_0"]["max_abs_diff"] < 1e-12
    assert facts["backward_half_at_last_step_is_not_final"]["holds"]
    assert facts["backward_half_at_last_step_is_not_final"]["max_abs_diff"] > 1e-3

    torch.manual_seed(11)
    m = nn.LSTM(4, 3, bidirectional=True, batch_first=batch_first).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64) if batch_first else torch.randn(6, 2, 4, dtype=torch.float64)
    out, (h, _) = m(x)
    last, first = (out[:, -1], out[:, 0]) if batch_first else (out[-1], out[0])
    torch.testing.assert_close(last[:, :3], h[0], rtol=0, atol=1e-12)  # forward: its end is the last step
    torch.testing.assert_close(first[:, 3:], h[1], rtol=0, atol=1e-12)  # backward: its end is time 0
    assert not torch.allclose(last[:, 3:], h[1])


@pytest.mark.parametrize("arch,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_unidirectional_last_output_and_shapes(arch, gates):
    cfg = ShapeConfig(arch, 2, 5, 1, batch=4, seq_len=3, seed=1)
    rep = explore_shapes(cfg)
    t = _by_name(rep["tensors"])
    assert t["input"]["shape"] == [3, 4, 2] and t["output"]["shape"] == [3, 4, 5] and t["h_n"]["shape"] == [1, 4, 5]
    assert ("c_n" in t) == (arch == "lstm")
    assert rep["total_parameters"] == _expected_params(gates, 2, 5, 1, 1)
    fact = next(f for f in rep["facts"] if f["id"] == "last_output_is_final_hidden")
    assert fact["holds"] and fact["claim"].startswith("output[-1] == h_n[-1]")


def test_packed_time_first_final_state_at_own_step():
    cfg = ShapeConfig("rnn", 3, 4, 2, bidirectional=True, batch_first=False, batch=3, seq_len=4, lengths=(2, 4, 1))
    rep = explore_shapes(cfg)
    assert all(f["holds"] for f in rep["facts"]), [f for f in rep["facts"] if not f["holds"]]
    assert _by_name(rep["tensors"])["output"]["shape"] == [4, 3, 8]


def test_scratch_engine_agrees_when_present():
    rep = explore_shapes(ShapeConfig("gru", 3, 4, 2, bidirectional=True, batch_first=True, batch=3, seq_len=4, lengths=(4, 2, 3)))
    if not rep["scratch"]["available"]:
        pytest.skip(rep["scratch"]["reason"])
    assert rep["scratch"]["agrees"], rep["scratch"]
    assert {r["name"]: r["shape"] for r in rep["scratch"]["tensors"]} == {"output": [3, 4, 8], "h_n": [4, 3, 4]}
    assert all(r["max_abs_diff"] < 1e-12 for r in rep["scratch"]["tensors"])
    # the same claims hold on the NumPy engine's own values (packing, backward state at time 0, ...)
    assert rep["scratch"]["facts_hold"]
    assert [f["id"] for f in rep["scratch"]["facts"]] == [f["id"] for f in rep["facts"]]


def test_scratch_shown_in_text_time_first(run_cli):
    code, out, err = run_cli("shapes", "--arch", "lstm", "--bidirectional", "--lengths", "5,1,3")
    assert code == 0, err
    if "not run:" in out:
        pytest.skip("lapnet.scratch not available")
    assert "compared with torch's output transposed" in out
    assert "agrees with torch: yes" in out and "c_n:     (2, 3, 20)  same shape" in out


@pytest.mark.parametrize("args,needle", [
    (("--hidden", "0"), "--hidden"),
    (("--batch", "-2"), "--batch"),
    (("--arch", "transformer"), "unknown architecture"),
    (("--seq-len", "4", "--lengths", "5,3,2"), "between 1 and seq_len=4"),
    (("--lengths", "5,3"), "2 lengths for a batch of 3"),
    (("--lengths", "5,0,2"), "between 1 and seq_len"),
    (("--lengths", "five"), "comma-separated integers"),
])
def test_bad_input_one_line_exit_2(run_cli, args, needle):
    code, out, err = run_cli("shapes", *args)
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("lapnet: error:") and needle in lines[0]
    assert out == ""
