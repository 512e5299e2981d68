"""`lapnet params`: the notebook's one-bias formula beside PyTorch's real two-bias counts."""

from __future__ import annotations

import json

import pytest


def test_notebook_table_and_torch_counts(run_cli):
    code, out, err = run_cli("params", "--json")
    assert code == 0, err
    rows = {r["arch"]: r for r in json.loads(out)["rows"]}
    D, H = 100, 256
    for arch, g in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        r = rows[arch]
        assert r["notebook_formula"] == g * (D * H + H * H + H)  # the notebook's printed formula
        assert r["pytorch"] == g * (D * H + H * H + 2 * H)
        assert r["difference"] == g * H
        assert sum(r["tensors"].values()) == r["pytorch"]
    assert rows["rnn"]["notebook_formula"] == 91392 and rows["lstm"]["notebook_formula"] == 365568
    assert rows["lstm"]["notebook_ratio_vs_rnn"] == pytest.approx(4.0)
    # the second bias: redundant for RNN/LSTM, a real parameter for the GRU (b_hn inside r * (...))
    assert rows["rnn"]["second_bias_redundant"] and rows["lstm"]["second_bias_redundant"]
    assert not rows["gru"]["second_bias_redundant"] and rows["gru"]["bias_fold_max_change"] > 1e-3
    assert rows["gru"]["bias_fold_rz_max_change"] < 1e-12


def test_text_explains_difference(run_cli):
    code, out, err = run_cli("params", "--input-size", "10", "--hidden", "20", "--layers", "2", "--bidirectional")
    assert code == 0, err
    assert "two bias vectors" in out
    # layer 0 reads 10 features, layer 1 reads 2*20; two directions each; LSTM
    expected = sum(2 * 4 * (d * 20 + 400 + 40) for d in (10, 40))
    assert f"{expected:,}" in out


@pytest.mark.parametrize("args", [("--hidden", "0"), ("--input-size", "-1"), ("--layers", "0")])
def test_bad_sizes_exit_2(run_cli, args):
    code, out, err = run_cli("params", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "must be at least 1" in err
