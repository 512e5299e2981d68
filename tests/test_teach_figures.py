"""`lapnet diagrams` and `lapnet hidden`: PNGs are written and decode, labels never collide, numbers are measured."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from lapnet import diagrams
from lapnet.diagnostics.hidden_evolution import hidden_evolution


def test_diagrams_command_writes_four_clean_pngs(run_cli, tmp_path):
    out = tmp_path / "dg"
    code, stdout, err = run_cli("diagrams", "--out", out, "--dpi", "80", "--json")
    assert code == 0, err
    written = json.loads(stdout)
    assert set(written) == {"feedforward_vs_sequential", "rnn_unrolled", "lstm_cell", "architecture_comparison"}
    for w in written.values():
        assert w["label_overlaps"] == []  # no two labels collide, none leaves the figure
        assert w["arrow_overlaps"] == []  # no arrow runs through a label
        img = mpimg.imread(w["path"])  # decodes
        assert img.ndim == 3 and img.shape[1] >= 900  # 12+ inches: ~900 px even at 80 dpi
        assert img[..., :3].std() > 0.05  # not blank


def test_overlap_checker_catches_a_collision():
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "one label")
    ax.text(0.52, 0.5, "another label")
    try:
        assert len(diagrams.text_overlaps(fig)) == 1
    finally:
        plt.close(fig)


def test_arrow_checker_catches_an_arrow_through_a_label():
    from matplotlib.patches import FancyArrowPatch

    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "a label", ha="center", va="center")
    ax.text(0.5, 0.1, "clear of it", ha="center")
    try:
        assert diagrams.arrow_overlaps(fig) == []
        ax.add_patch(FancyArrowPatch((0.1, 0.5), (0.9, 0.5), arrowstyle="->", mutation_scale=10))  # through it
        ax.annotate("", xy=(0.95, 0.9), xytext=(0.95, 0.2), arrowprops=dict(arrowstyle="->"))  # beside both
        hits = diagrams.arrow_overlaps(fig)
        assert [h[0] for h in hits] == ["a label"] and hits[0][1] > 0
    finally:
        plt.close(fig)


def test_functions_draw_into_given_axes():
    fig, axes = plt.subplots(1, 3)
    try:
        assert diagrams.architecture_comparison(axes=axes, input_size=3, hidden_size=4) is fig
        text = " ".join(t.get_text() for a in axes for t in a.texts)
        assert f"{4 * (3 * 4 + 16 + 8)} parameters" in text  # LSTM at D=3, H=4, two biases, from torch
        # torch's counts under torch's equations: two biases, the GRU's z weighing h_{t-1} (not the notebook's)
        assert r"b_{ih}" in text and r"b_{hh}" in text
        assert r"(1 - z) \odot n + z \odot h_{t-1}" in text and r"\tilde{h}" not in text
    finally:
        plt.close(fig)


def test_hidden_command(run_cli, tmp_path):
    out = tmp_path / "hid"
    code, stdout, err = run_cli("hidden", "--out", out, "--hidden", "4", "--points", "30", "--dpi", "50", "--json")
    assert code == 0, err
    m = json.loads(stdout)
    assert json.loads((out / "metrics.json").read_text()) == m
    assert mpimg.imread(out / "hidden_states.png").ndim == 3
    assert m["hidden_size"] == 4 and len(m["units"]) == 4 and m["n_points"] == 30
    for key in ("engine", "max_abs_diff_vs_torch", "mean_abs_activation", "saturated_share", "w_hh_spectral_radius",
                "units_following_input", "units_following_derivative"):
        assert key in m  # what --help promises
    if m["engine"] == "numpy":
        assert m["max_abs_diff_vs_torch"] < 1e-12


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_hidden_table_shows_the_torch_comparison_only_when_there_is_one(run_cli, tmp_path, engine):
    """--engine torch compares nothing: no `max_abs_diff_vs_torch  None` row on screen, and
    metrics.json keeps the key as null, as --help and docs/guide/teach.md say."""
    out = tmp_path / engine
    code, stdout, err = run_cli("hidden", "--out", out, "--hidden", "4", "--points", "30", "--dpi", "50",
                                "--engine", engine)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["engine"] == engine and "w_hh_spectral_radius" in err and "None" not in err
    if engine == "torch":
        assert m["max_abs_diff_vs_torch"] is None and "max_abs_diff_vs_torch" not in err
    else:
        assert m["max_abs_diff_vs_torch"] < 1e-12 and "max_abs_diff_vs_torch" in err


def test_hidden_states_are_a_real_tanh_rnn():
    """Recompute h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) step by step from the same seed."""
    r = hidden_evolution(hidden_size=5, n_points=12, seed=3, engine="torch")
    torch.manual_seed(3)
    rnn = nn.RNN(1, 5, batch_first=True).double()
    W_ih, W_hh = rnn.weight_ih_l0.detach().numpy(), rnn.weight_hh_l0.detach().numpy()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy()
    h = np.zeros(5)
    for t, x in enumerate(np.sin(np.linspace(0, 4 * np.pi, 12))):
        h = np.tanh(W_ih[:, 0] * x + W_hh @ h + b)
        np.testing.assert_allclose(r["h"][t], h, rtol=0, atol=1e-12)
    m = r["metrics"]
    assert m["engine"] == "torch" and m["max_abs_diff_vs_torch"] is None
    assert m["w_hh_spectral_radius"] == pytest.approx(np.abs(np.linalg.eigvals(W_hh)).max())
    c = np.corrcoef(r["h"][:, 0], r["x"])[0, 1]
    assert m["units"][0]["corr_with_input"] == pytest.approx(c)


@pytest.mark.parametrize("cmd,args,needle", [
    ("hidden", ("--hidden", "0"), "--hidden must be at least 1"),
    ("hidden", ("--engine", "jax"), "--engine jax"),
    ("hidden", ("--periods", "0"), "periods must be a positive number"),
    ("hidden", ("--periods", "inf"), "periods must be a positive number, got inf"),
])
def test_hidden_bad_input(run_cli, tmp_path, cmd, args, needle):
    code, out, err = run_cli(cmd, "--out", tmp_path / "x", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing written on bad input


@pytest.mark.parametrize("cmd", ["diagrams", "hidden"])
def test_out_is_a_file(run_cli, tmp_path, cmd):
    f = tmp_path / "afile"
    f.write_text("keep me")
    code, out, err = run_cli(cmd, "--out", f)
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1
    assert f.read_text() == "keep me"
