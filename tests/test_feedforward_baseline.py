"""`lapnet feedforward`: a fixed-window MLP beside an RNN, on lengths neither saw in training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lapnet.errors import LapnetError
from lapnet.experiments.feedforward import (FeedforwardConfig, format_feedforward, mlp_param_count, run_feedforward,
                                            spike_sequences, to_window, window_mlp)


@pytest.fixture(scope="module")
def default_run():
    """The command's default run (both tasks, LSTM, seed 42): about 10 s on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_feedforward(FeedforwardConfig()).metrics
    finally:
        torch.set_num_threads(threads)


def _rows(metrics, task):
    return {r["length"]: r for r in metrics["tasks"][task]["rows"]}


def test_spike_needs_memory_the_window_does_not_have(default_run):
    rows = _rows(default_run, "spike")
    assert [rows[L]["in_training"] for L in (3, 10, 20, 40, 80, 160)] == ["shorter", "yes", "yes", "longer", "longer",
                                                                          "longer"]
    assert min(r["rnn"] for r in rows.values()) > 0.9  # the LSTM at every length, 160 = 8x its longest training one
    for L in (40, 80, 160):  # the spike is often outside the MLP's 20 steps, whichever 20 it keeps
        assert rows[L]["rnn_minus_best_mlp"] > 0.2 and rows[L]["winner"] == "rnn"
    assert max(rows[160]["mlp_first"], rows[160]["mlp_last"]) < 0.65  # near a coin flip
    assert rows[20]["rnn_minus_best_mlp"] > 0.1  # behind inside its window too: no weights shared across positions
    assert default_run["tasks"]["spike"]["train_accuracy"]["mlp"] == 1.0  # not for lack of training
    for L in (3, 10, 20):  # a sequence that fits the window is fed whole: both cuts are the same input
        assert rows[L]["mlp_first"] == rows[L]["mlp_last"]


def test_trend_the_window_loses_nothing(default_run):
    rows = _rows(default_run, "trend")
    assert not any(r["winner"] == "rnn" for r in rows.values())  # the RNN wins nowhere: said, not hidden
    for L in (10, 20, 40, 80, 160):
        assert min(rows[L]["mlp_first"], rows[L]["mlp_last"]) >= 0.99 and abs(rows[L]["rnn_minus_best_mlp"]) <= 0.02
    assert rows[3]["winner"] == "mlp"
    text = format_feedforward(default_run)
    assert "the LSTM does not win at any length here" in text
    assert "the LSTM wins at lengths 10, 20, 40, 80, 160" in text


def test_parameter_counts(default_run):
    H, D, N, M = 32, 1, 20, 32
    lstm = 4 * (D * H + H * H + 2 * H) + H + 1  # two biases per block, then the linear head
    p = default_run["params"]
    assert lstm == 4513 and (p["rnn"], p["mlp"], p["mlp_for_longest_test"]) == (lstm, 1345, 10305)
    assert (mlp_param_count(N, M), mlp_param_count(160, M)) == (1345, 10305)  # 2N * M + M + M + 1: grows with N
    assert sum(q.numel() for q in window_mlp(N, M).parameters()) == 1345


def test_to_window_pads_and_cuts():
    x = np.arange(1, 8, dtype=np.float32)[None, :, None].repeat(2, axis=0)  # (2, 7, 1): 1..7
    x[1, 3:] = 0.0
    lengths = np.array([7, 3])  # the second: 3 real steps, then padding
    first, last = to_window(x, lengths, 4, "first"), to_window(x, lengths, 4, "last")
    np.testing.assert_array_equal(first, [[1, 2, 3, 4, 1, 1, 1, 1], [1, 2, 3, 0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(last, [[4, 5, 6, 7, 1, 1, 1, 1], [1, 2, 3, 0, 1, 1, 1, 0]])
    assert first.dtype == np.float32 and first.shape == (2, 8)


def test_spike_sequences():
    x, y, lengths = spike_sequences(400, 12, min_len=4, noise=0.0, seed=3)
    assert x.shape == (400, 12, 1) and y.shape == (400,) and lengths.min() >= 4 and lengths.max() <= 12
    nonzero = (x[:, :, 0] != 0).sum(axis=1)
    np.testing.assert_array_equal(nonzero, y)  # one spike in each positive, none in a negative
    where = np.argmax(x[:, :, 0], axis=1)
    assert np.all(where[y == 1] < lengths[y == 1])  # always at a real step, never in the padding
    assert 0.4 < y.mean() < 0.6


def test_cli_small_run_and_json(run_cli):
    code, out, err = run_cli("feedforward", "--task", "spike", "--arch", "gru", "--test-lengths", "5,40",
                             "--train", "200", "--test", "200", "--epochs", "20", "--mlp-epochs", "50", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert list(m["tasks"]) == ["spike"] and m["config"]["arch"] == "gru"
    assert [r["length"] for r in m["tasks"]["spike"]["rows"]] == [5, 40]
    assert m["params"]["rnn"] == 3 * (32 + 32 * 32 + 64) + 33
    code, out, err = run_cli("feedforward", "--task", "trend", "--test-lengths", "30", "--train", "100", "--test", "50",
                             "--epochs", "2", "--mlp-epochs", "2")
    assert code == 0, err
    assert "task trend: Exercise 2's data" in out and "MLP first 20  MLP last 20" in out and "parameters: LSTM 4,513" in out


@pytest.mark.parametrize("args,match", [
    (("--task", "sine"), "--task"),
    (("--test-lengths", "3,x"), "--test-lengths"),
    (("--test-lengths", "0,5"), "at least 1"),
    (("--min-length", "30"), "longer than --length"),
    (("--arch", "cnn"), "unknown architecture"),
    (("--lr", "0"), "--lr"),
    (("--lr", "nan"), "--lr"),
    (("--mlp-epochs", "0"), "--mlp-epochs must be at least 1"),
])
def test_cli_bad_input_exits_2(run_cli, args, match):
    code, out, err = run_cli("feedforward", *args)
    assert code == 2 and out == "" and match in err and len(err.strip().splitlines()) == 1


def test_config_refuses_bad_values():
    with pytest.raises(LapnetError, match="tasks"):
        FeedforwardConfig(tasks=()).validate()
    with pytest.raises(LapnetError, match="min_len"):
        FeedforwardConfig(min_len=9, max_len=8).validate()


def test_the_diagram_does_not_say_a_feedforward_net_loses_order():
    """On concatenated inputs it keeps each position (its own slot and weights); what it lacks is measured above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lapnet.diagrams import feedforward_vs_sequential

    fig = feedforward_vs_sequential()
    try:
        title = fig.axes[0].get_title()
        assert "order is lost" not in title and "fixed length" in title and "own weights per position" in title
    finally:
        plt.close(fig)
