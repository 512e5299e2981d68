"""Figures and messages of the experiments as a practitioner meets them: characters the font
lacks, honest titles and legends, the final numbers on an early-solved adding run, the
temperature experiment on a model that does not know the default prime, --checkpoint."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from lapnet.checkpoint import save_tensors, write_json


def _tiny_run(path: Path, text: str, arch: str = "lstm") -> Path:
    """A run directory with random weights (and a last.safetensors of other weights) over `text`'s characters."""
    from lapnet.data.text import Vocab
    from lapnet.models.charlm import CharLM, CharLMConfig

    vocab = Vocab.from_text(text)
    cfg = CharLMConfig(vocab_size=len(vocab), arch=arch, embed=4, hidden=6)
    path.mkdir()
    write_json(path / "config.json", {"kind": "charlm", "engine": "torch", "model": cfg.to_json()})
    write_json(path / "vocab.json", vocab.to_json())
    for seed, name, meta in ((0, "model.safetensors", {"step": 3}), (1, "last.safetensors", {"trainer": {"step": 9}})):
        torch.manual_seed(seed)
        weights = {k: v.numpy() for k, v in CharLM(cfg).state_dict().items()}
        if name == "last.safetensors":
            weights = {f"model.{k}": v for k, v in weights.items()}
        save_tensors(path / name, weights, meta)
    return path


def test_characters_the_font_lacks_are_labelled_by_code_point_without_warnings():
    from lapnet import plots

    chars = list("東京は雨🚀🔥 Привет")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Glyph ... missing from font(s)" would fail here
        fig = plots.bars_per_char(np.arange(len(chars), dtype=float), chars)
        fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    plt.close(fig)
    assert labels[:6] == ["U+6771", "U+4EAC", "U+306F", "U+96E8", "U+1F680", "U+1F525"]
    assert labels[6:] == ["␣", "П", "р", "и", "в", "е", "т"]  # the font has Cyrillic: drawn as is


def test_gates_on_unicode_text_draws_without_glyph_warnings(run_cli, tmp_path):
    run = _tiny_run(tmp_path / "run", "東京は雨🚀 abc")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, _, err = run_cli("gates", run, "--text", "東京は雨🚀 abc", "--out", tmp_path / "g", "--quiet")
    assert code == 0 and "Glyph" not in err, err
    assert not [w for w in seen if "Glyph" in str(w.message)]


def test_gates_and_temperature_read_the_last_checkpoint_when_asked(tmp_path):
    from lapnet.experiments.gates import GatesConfig, run_gates
    from lapnet.experiments.temperature import TemperatureConfig, run_temperature

    run = _tiny_run(tmp_path / "run", "To be or not to be")
    best = run_gates(run, GatesConfig(text="to be"))
    last = run_gates(run, GatesConfig(text="to be", checkpoint="last"))
    assert (best.metrics["checkpoint"], best.metrics["step"]) == ("best", 3)
    assert (last.metrics["checkpoint"], last.metrics["step"]) == ("last", 9)
    assert best.metrics["mean_abs_h_per_char"] != last.metrics["mean_abs_h_per_char"]
    t = run_temperature(run, TemperatureConfig(sample_temperatures=(0.5,), length=5, checkpoint="last"))
    assert t.metrics["step"] == 9
    for r in (best, last, t):
        r.close()


def test_temperature_falls_back_from_the_default_prime_and_takes_0_as_greedy(tmp_path):
    from lapnet.experiments.temperature import TemperatureConfig, run_temperature
    from lapnet.sampling import SampleConfig, generate
    from lapnet.text_runs import load_run

    run = _tiny_run(tmp_path / "run", "abc to be or not to b")  # no 'T'
    with pytest.warns(UserWarning, match=r"never saw \('T'\): starting from 'o be or not to b' instead"):
        r = run_temperature(run, TemperatureConfig(figure_temperatures=(0, 1.0), sample_temperatures=(0,), length=8))
    assert r.metrics["prime"] == "o be or not to b"
    greedy = generate(load_run(run).stepper(), load_run(run).vocab, prime="o be or not to b", length=8,
                      cfg=SampleConfig(0.0), seed=123)[0]
    assert r.metrics["samples"]["0"] == greedy  # 0 is the argmax, whatever the seed
    assert max(q for _, q in r.metrics["model"]["0"]["top"]) == 1.0
    r.close()
    with pytest.raises(Exception, match="--prime"):  # a prime the user typed is never replaced
        run_temperature(run, TemperatureConfig(prime="To", sample_temperatures=(0.5,), length=3))
    for bad in (float("inf"), -1.0, float("nan")):
        with pytest.raises(Exception, match="finite numbers, 0 \\(greedy\\) or positive"):
            TemperatureConfig(sample_temperatures=(bad,)).validate()


def test_gates_exports_a_text_longer_than_a_heatmap_holds_without_figures(tmp_path):
    from lapnet.experiments.gates import MAX_TEXT, GatesConfig, export_states, run_gates

    run = _tiny_run(tmp_path / "run", "ab ")
    long = "ab " * (MAX_TEXT // 3 + 10)
    with pytest.raises(Exception, match="--export alone writes the states of a longer text"):
        run_gates(run, GatesConfig(text=long))
    r = run_gates(run, GatesConfig(text=long, figures=False))
    assert r.figures == {} and r.arrays["layer0_h"].shape == (len(long), 6)
    assert np.load(export_states(r, tmp_path / "s.npz"))["layer0_f"].shape == (len(long), 6)


def test_steps_to_solve_legend_and_axis(tmp_path):
    from lapnet import plots

    fig = plots.steps_to_solve({"RNN": {50: None, 100: None}, "GRU": {50: 150, 100: 300}}, budget=1200)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["RNN: not solved within 1200 steps", "GRU"]  # no filled RNN entry
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0  # 150 reads off a linear axis
    plt.close(fig)
    fig = plots.steps_to_solve({"GRU": {50: 100}}, budget=20000)
    assert fig.axes[0].get_yscale() == "log"
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert len(ticks) >= 4  # labelled ticks, not just 2e2 and 3e2
    plt.close(fig)


def test_sine_titles_name_the_archs_and_the_engine():
    from lapnet.experiments.sine import SineConfig, run_sine

    r = run_sine(SineConfig(hidden_sizes=(2,), archs=("rnn", "gru"), arch_hidden=2, epochs=1, horizon=2,
                            engine="numpy"))
    left, right = r.figures["loss_curves"].axes[:2]
    assert right.get_title() == "RNN vs GRU (hidden_size=2, NumPy engine)"
    assert left.get_title() == "Effect of hidden size (LSTM, NumPy engine)"
    r.close()


def test_trend_examples_write_each_p_up():
    from lapnet import plots

    x = np.array([[0.0, 1.0, 2.0], [0.0, -1.0, -2.0]])
    fig = plots.trend_examples(x, np.array([3, 3]), np.array([1, 0]), np.array([0.93, 0.61]))
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0.61", "0.93"]
    plt.close(fig)


def test_an_adding_run_solved_early_ends_on_its_final_evaluation():
    from lapnet.experiments.adding import AddingConfig, train_adding

    cfg = AddingConfig(archs=("gru",), lengths=(4,), hidden=8, batch_size=32, max_steps=400, eval_every=10,
                       solved_mse=0.2)  # loose enough to be reached within a few evaluations
    _, r = train_adding("gru", 4, cfg)
    assert r["steps_to_solve"] is not None and r["trained_steps"] == r["steps_to_solve"] == r["steps"][-1]
    assert r["final_test_mse"] == r["test_mse"][-1] < 0.2


@pytest.mark.parametrize("args,message", [
    (("trend", "--epochs", "0"), "--epochs must be at least 1, got 0"),
    (("trend", "--train", "0"), "--train must be at least 1, got 0"),
    (("sine", "--epochs", "0"), "--epochs must be at least 1, got 0"),
    (("adding", "--max-steps", "0"), "--max-steps must be at least 1, got 0"),
])
def test_size_errors_name_the_flag(run_cli, tmp_path, args, message):
    code, _, err = run_cli(*args, "--out", tmp_path / "o")
    assert code == 2 and err == f"lapnet: error: {message}\n"


@pytest.mark.parametrize("args,message", [
    (("adding", "--lengths", "50,,100"), "--lengths '50,,100': empty item (two commas in a row, or a comma at an end)"),
    (("sine", "--hidden", "8,"), "--hidden '8,': empty item (two commas in a row, or a comma at an end)"),
    (("sine", "--hidden", "8,2,8"), "--hidden '8,2,8': 8 is given twice"),
    (("adding", "--arch", "rnn", "rnn"), "--arch 'rnn,rnn': rnn is given twice"),
    (("temperature", "--temperatures", "0.5,inf"), "temperatures must be finite numbers, 0 (greedy) or positive, got inf"),
])
def test_list_options_refuse_empty_and_repeated_items(run_cli, tmp_path, args, message):
    code, _, err = run_cli(*args, "--out", tmp_path / "o", "--quiet")
    assert code == 2 and err == f"lapnet: error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_gates_cli_long_text_export_checkpoint_and_force(run_cli, tmp_path):
    lstm = _tiny_run(tmp_path / "lstm", "ab ")
    rnn = _tiny_run(tmp_path / "rnn", "ab ", arch="rnn")
    out, npz = tmp_path / "g", tmp_path / "s.npz"
    code, _, err = run_cli("gates", lstm, "--text", "ab", "--out", out, "--checkpoint", "last")
    assert code == 0 and json.loads((out / "metrics.json").read_text())["step"] == 9, err
    assert sorted(p.name for p in out.iterdir()) == ["gates.png", "hidden.png", "metrics.json"]
    # an RNN has no gates: --force leaves no gates.png of the LSTM behind
    code, _, err = run_cli("gates", rnn, "--text", "ab", "--out", out, "--force", "--quiet")
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["hidden.png", "metrics.json"], err
    long = "ab " * 150
    code, _, err = run_cli("gates", lstm, "--text", long, "--out", tmp_path / "g2", "--quiet")
    assert code == 2 and "(--export alone writes the states of a longer text)" in err
    code, _, err = run_cli("gates", lstm, "--text", long, "--export", npz, "--out", tmp_path / "g2")
    assert code == 0, err
    assert f"lapnet: warning: --text has {len(long)} characters" in err and f"{npz}" in err.split("wrote ")[-1]
    assert sorted(p.name for p in (tmp_path / "g2").iterdir()) == ["metrics.json"]
    code, _, err = run_cli("gates", lstm, "--checkpoint", "newest", "--out", tmp_path / "g3")
    assert code == 2 and err == "lapnet: error: --checkpoint newest: expected best or last\n"
    assert not (tmp_path / "g3").exists()


def test_temperature_cli_default_prime_falls_back_only_when_not_given(run_cli, tmp_path):
    run = _tiny_run(tmp_path / "run", "abc to be or not to b")
    code, out, err = run_cli("temperature", run, "--temperatures", "0,1", "--length", "5", "--out", tmp_path / "t",
                             "--quiet", "--json")
    assert code == 0 and "lapnet: warning: the default --prime 'To be or not to b' has characters" in err, err
    m = json.loads(out)
    assert m["prime"] == "o be or not to b" and set(m["samples"]) == {"0.0", "1.0"}
    code, _, err = run_cli("temperature", run, "--prime", "To be", "--out", tmp_path / "t2", "--quiet")
    assert code == 2 and "--prime" in err and "'T'" in err


def test_an_lstm_with_a_large_cell_state_still_traces(tmp_path):
    """float32 keeps ~7 digits of an unbounded cell state: it is compared relative to its size."""
    from lapnet.diagnostics.gates import trace_gates

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        lstm.bias_ih_l0[4:8] = 20.0  # forget gate shut open, input gate open: c grows by ~g every step
        lstm.bias_ih_l0[0:4] = 20.0
        lstm.bias_ih_l0[8:12] = 20.0  # candidate saturated at 1
    x = torch.randn(1, 600, 3)
    trace = trace_gates(lstm, x)
    assert np.abs(trace.layers[0]["c"]).max() > 500 and trace.max_abs_diff < 1e-4


def test_progress_bars_name_what_they_evaluate(run_cli, tmp_path):
    """trend is scored on a test set: its bar says 'test BCE', not 'val'."""
    code, _, err = run_cli("trend", "--epochs", "2", "--out", str(tmp_path / "t"))
    assert code == 0, err
    bar = next(line for line in err.splitlines() if "loss" in line and "/s" in line)
    assert "test BCE" in bar and " val " not in bar
