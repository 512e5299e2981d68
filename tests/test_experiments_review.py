"""A review of the experiment commands: trend's one --arch, an option that has no effect,
the adding help's numbers against the guide, spectrum.png without an RNN, the GRU's z
labelled as torch's, and gate/hidden figures of arrays with NaN at padded steps."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from lapnet.checkpoint import save_tensors, write_json

REPO = Path(__file__).resolve().parents[1]
TINY_TREND = ("--epochs", "1", "--train", "16", "--test", "8", "--length", "6", "--hidden", "4")


def _tiny_run(path: Path, text: str, arch: str) -> Path:
    """A `lapnet text train` run directory with random weights over `text`'s characters."""
    from lapnet.data.text import Vocab
    from lapnet.models.charlm import CharLM, CharLMConfig

    vocab = Vocab.from_text(text)
    cfg = CharLMConfig(vocab_size=len(vocab), arch=arch, embed=4, hidden=6)
    path.mkdir()
    write_json(path / "config.json", {"kind": "charlm", "engine": "torch", "model": cfg.to_json()})
    write_json(path / "vocab.json", vocab.to_json())
    torch.manual_seed(0)
    save_tensors(path / "model.safetensors", {k: v.numpy() for k, v in CharLM(cfg).state_dict().items()}, {"step": 3})
    return path


def _words(text: str) -> str:
    """Help text as one line of words (rich wraps it and draws boxes around the options)."""
    return " ".join(text.replace("│", " ").split())


# 1. trend trains one architecture: a list or a repeated --arch is refused, before anything is written


@pytest.mark.parametrize("args, got", [(("--arch", "rnn,gru"), "rnn, gru"),
                                       (("--arch", "rnn", "--arch", "gru"), "rnn, gru"),
                                       (("--arch", "lstm,LSTM"), "lstm, lstm")])
def test_trend_refuses_more_than_one_arch_and_writes_nothing(run_cli, tmp_path, args, got):
    out = tmp_path / "x"
    code, stdout, err = run_cli("trend", *TINY_TREND, *args, "--out", out)
    assert code == 2
    assert err.strip().splitlines() == [f"lapnet: error: trend takes one --arch (rnn, lstm or gru), got {got}: it "
                                        f"trains one model; run it once per architecture"]
    assert stdout == ""
    assert not out.exists()


def test_trend_one_arch_trains_that_arch(run_cli, tmp_path):
    code, stdout, err = run_cli("trend", *TINY_TREND, "--arch", "GRU", "--out", tmp_path / "t", "--quiet", "--json")
    assert code == 0, err
    assert json.loads(stdout)["config"]["arch"] == "gru"
    code, stdout, err = run_cli("trend", *TINY_TREND, "--out", tmp_path / "d", "--quiet", "--json")
    assert code == 0, err
    assert json.loads(stdout)["config"]["arch"] == "lstm"  # the default


def test_trend_help_says_it_takes_one_arch(run_cli):
    code, stdout, _ = run_cli("trend", "--help")
    assert code == 0
    text = _words(stdout)
    assert "--arch takes one architecture: trend trains one model (a list is refused" in text
    assert "a list (--arch rnn,gru) or a second --arch is refused" in text
    assert "--min-length applies only with --variable-length" in text


@pytest.mark.parametrize("command", ["sine", "adding", "gradflow"])
def test_the_comparing_commands_still_take_a_list(run_cli, command):
    """The other experiment commands with --arch compare architectures: their help says the list forms."""
    code, stdout, _ = run_cli(command, "--help")
    assert code == 0
    assert "--arch rnn lstm gru, --arch rnn --arch gru or --arch rnn,gru" in _words(stdout)


def test_gradflow_repeated_arch_measures_each(run_cli, tmp_path):
    code, stdout, err = run_cli("gradflow", "--arch", "rnn", "--arch", "gru", "--steps", "0", "--clip-steps", "0",
                                "--length", "4", "--hidden", "3", "--engine", "torch", "--out", tmp_path / "g",
                                "--quiet", "--json")
    assert code == 0, err
    assert list(json.loads(stdout)["archs"]) == ["rnn", "gru"]


# 2. --min-length without --variable-length has no effect: a warning (as --dropout with --layers 1)


def test_trend_min_length_without_variable_length_warns(run_cli, tmp_path):
    code, stdout, err = run_cli("trend", *TINY_TREND, "--min-length", "3", "--out", tmp_path / "t", "--quiet", "--json")
    assert code == 0, err
    assert err.strip().splitlines() == [
        "lapnet: warning: --min-length 3 does nothing without --variable-length: every sequence has --length 6 "
        "steps; give --variable-length to use it"]
    cfg = json.loads(stdout)["config"]
    assert cfg["min_len"] is None and cfg["seq_len"] == 6


def test_trend_min_length_with_variable_length_or_untyped_is_silent(run_cli, tmp_path):
    code, stdout, err = run_cli("trend", *TINY_TREND, "--variable-length", "--min-length", "3",
                                "--out", tmp_path / "v", "--quiet", "--json")
    assert code == 0 and "warning" not in err, err
    assert json.loads(stdout)["config"]["min_len"] == 3
    code, stdout, err = run_cli("trend", *TINY_TREND, "--out", tmp_path / "d", "--quiet", "--json")
    assert code == 0 and "warning" not in err, err
    assert json.loads(stdout)["config"]["min_len"] is None


# 3. adding --help quotes the guide's re-measured RNN steps at lr 0.001


def test_adding_help_quotes_the_guides_rnn_steps(run_cli):
    guide = (REPO / "docs" / "guide" / "experiments.md").read_text(encoding="utf-8")
    row = re.search(r"^\| RNN \| (\d+) \(([\d.]+)x LSTM\) \| (\d+) \(([\d.]+)x LSTM\) \|$", guide, re.M)
    assert row, "the guide's lr 0.001 table has no RNN row"
    t50, x50, t100, x100 = row.groups()
    assert (t50, t100) == ("10000", "18000")
    code, stdout, _ = run_cli("adding", "--help")
    assert code == 0
    text = _words(stdout)
    assert f"with --lr 0.001 and about {t50} (T=50) or {t100} (T=100) steps ({x50}x and {x100}x the LSTM's)" in text
    assert "9000" not in text and "15000" not in text


# 4. spectrum.png: never an empty axis


def _has_artists(ax) -> bool:
    return bool(ax.patches or ax.lines or ax.collections or ax.images)


def test_spectrum_without_rnn_is_one_panel_of_radii():
    from lapnet.cli.common import set_threads
    from lapnet.experiments.gradflow import GradflowConfig, run_gradflow

    set_threads(1)
    result = run_gradflow(GradflowConfig(archs=("lstm",), hidden=3, length=4, steps=0, clip_steps=0, engine="torch"))
    try:
        fig = result.figures["spectrum"]
        assert len(fig.axes) == 1
        ax = fig.axes[0]
        assert ax.axison and _has_artists(ax)
        assert ax.get_title() == "Spectral radius of each W_hh gate block"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["LSTM:i", "LSTM:f", "LSTM:g", "LSTM:o"]
        radii = result.metrics["archs"]["lstm"]["init"]["spectrum"]
        assert [p.get_height() for p in ax.patches] == pytest.approx([radii[g]["spectral_radius"] for g in "ifgo"])
    finally:
        result.close()


def test_spectrum_with_rnn_has_eigenvalues_and_radii_and_no_empty_axis():
    from lapnet.experiments.gradflow import spectrum_figure

    def entry(blocks):
        return {"init": {"spectrum": {g: {"spectral_radius": r, "eigenvalues": [[r, 0.0], [0.0, -r / 2]]}
                                      for g, r in blocks.items()}}}

    per_arch = {"gru": entry({"r": 0.5, "z": 0.6, "n": 0.7}), "rnn": entry({"h": 0.9})}
    fig = spectrum_figure(per_arch, ["init"])
    try:
        assert len(fig.axes) == 2 and all(ax.axison and _has_artists(ax) for ax in fig.axes)
        assert fig.axes[0].get_title() == "Eigenvalues of the RNN's W_hh"
        assert [p.get_height() for p in fig.axes[1].patches] == pytest.approx([0.5, 0.6, 0.7, 0.9])
        fig_no_rnn = spectrum_figure({"gru": per_arch["gru"]}, ["init"])
        assert len(fig_no_rnn.axes) == 1 and _has_artists(fig_no_rnn.axes[0])
        plt.close(fig_no_rnn)
    finally:
        plt.close(fig)


def test_gradflow_cli_lstm_only_writes_spectrum(run_cli, tmp_path):
    out = tmp_path / "gf_l"
    code, _, err = run_cli("gradflow", "--arch", "lstm", "--steps", "0", "--clip-steps", "0", "--length", "4",
                           "--hidden", "3", "--out", out, "--quiet")
    assert code == 0, err
    assert (out / "spectrum.png").stat().st_size > 0


# 5. the GRU's z is torch's (1 = keep h_{t-1}), and the title says so; NaN at padded steps is drawn blank


def test_gru_update_gate_title_says_torchs_z_and_the_trace_agrees(tmp_path):
    from lapnet.diagnostics.gates import trace_gates
    from lapnet.experiments.gates import GatesConfig, run_gates
    from lapnet.text_runs import load_run

    run = _tiny_run(tmp_path / "run", "to be or not", "gru")
    result = run_gates(run, GatesConfig(text="to be or not"))
    try:
        titles = [ax.get_title() for ax in result.figures["gates"].axes if ax.get_title()]
        assert len(titles) == 3
        assert titles[1].startswith("update gate z (torch's: 1 = keep h_{t-1}; notebook's z = 1 - this) (")
        assert titles[0].startswith("reset gate r (") and titles[2].startswith("candidate n (")
    finally:
        result.close()
    # what the title claims: h_t = (1 - z) * n + z * h_{t-1}, so z = 1 keeps h_{t-1}
    model = load_run(run, engine="torch", device="cpu").model
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        rec = trace_gates(model.rnn, model.embed(ids)).layers[0]
    h, z, n = rec["h"][0], rec["z"][0], rec["n"][0]
    np.testing.assert_allclose(h[1:], (1 - z[1:]) * n[1:] + z[1:] * h[:-1], rtol=0, atol=1e-12)


def test_guide_says_which_z_the_gates_figure_shows():
    guide = " ".join((REPO / "docs" / "guide" / "experiments.md").read_text(encoding="utf-8").split())
    assert "The GRU's z is torch's, h' = (1 - z) * n + z * h, so z = 1 keeps h_{t-1}" in guide


def test_gate_and_hidden_figures_tolerate_nan_at_padded_steps():
    from lapnet.experiments.gates import _nan_stat, gates_figure, hidden_figure

    rng = np.random.default_rng(0)
    T, H = 6, 5
    gates = {g: rng.uniform(0, 1, (T, H)) for g in "ifgo"}
    gates["c"] = rng.normal(0, 3, (T, H))
    h = np.tanh(rng.normal(size=(T, H)))
    for a in (*gates.values(), h):
        a[4:] = np.nan  # a sequence of length 4 in a padded batch of length 6
    stats = {g: {"share_below_0.1": 0.1, "share_above_0.9": 0.2, "share_abs_above_0.9": 0.3} for g in "ifgo"}
    chars = list("abcdef")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice" / "All-NaN slice" RuntimeWarning
        mean_abs_h = _nan_stat(np.nanmean, np.abs(h), axis=1)
        fig = gates_figure(gates, kind="lstm", layer=0, chars=chars, max_units=4, stats=stats)
        fig_h = hidden_figure(h, mean_abs_h, kind="lstm", layer=0, chars=chars, max_units=4)
        fig.canvas.draw()
        fig_h.canvas.draw()
    try:
        np.testing.assert_allclose(mean_abs_h[:4], np.abs(h[:4]).mean(axis=1))
        assert np.isnan(mean_abs_h[4:]).all()
        heat = [ax for ax in fig.axes if ax.images]
        assert len(heat) == 5
        c_img = heat[-1].images[0]
        vmin, vmax = c_img.get_clim()
        finite = np.abs(gates["c"][:4, :4])
        assert vmax == pytest.approx(np.percentile(finite, 98)) and vmin == -vmax
        assert heat[-1].get_title() == f"cell state c (|c| up to {finite.max():.2f}, colour scale +-{vmax:.2f})"
        assert np.isnan(np.asarray(c_img.get_array(), dtype=float)[:, 4:]).all()  # blank, not a colour
        bars = fig_h.axes[1].patches  # axes: the heatmap, the bars, the heatmap's colour bar
        assert [b.get_height() for b in bars[:4]] == pytest.approx(list(mean_abs_h[:4]))
    finally:
        plt.close(fig)
        plt.close(fig_h)
    assert float(_nan_stat(np.nanmax, np.full((2, 2), np.nan), default=0.0)) == 0.0
