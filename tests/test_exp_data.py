"""Synthetic tasks and the forecaster/classifier models: values, shapes, packed sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lapnet.data.synthetic import (ADDING_BASELINE_MSE, adding_problem, copy_task, sine_wave, sine_windows,
                                   trend_sequences)
from lapnet.errors import LapnetError
from lapnet.models.classifier import Classifier
from lapnet.models.forecaster import Forecaster


def test_sine_windows_are_the_next_value():
    t, w = sine_wave(200)
    assert t[0] == 0 and np.isclose(t[-1], 8 * np.pi)
    x, y = sine_windows(w, 20)
    assert x.shape == (180, 20, 1) and y.shape == (180, 1)
    np.testing.assert_array_equal(x[5, :, 0], w[5:25])
    assert y[5, 0] == w[25]
    with pytest.raises(LapnetError):
        sine_windows(w[:10], 20)


def test_trend_labels_follow_the_slope_and_padding_is_zero():
    x, y, lengths = trend_sequences(400, 20, seed=1)
    assert x.shape == (400, 20, 1) and set(np.unique(y)) == {0.0, 1.0}
    rise = x[:, -5:, 0].mean(1) - x[:, :5, 0].mean(1)  # the slope shows through the noise
    assert np.mean((rise > 0) == (y == 1)) > 0.95
    assert (lengths == 20).all()
    xv, _, lv = trend_sequences(200, 20, min_len=5, seed=2)
    assert lv.min() >= 5 and lv.max() <= 20 and len(set(lv.tolist())) > 5
    for i in range(20):
        assert (xv[i, lv[i]:] == 0).all()
    # the same seed gives the same data
    np.testing.assert_array_equal(trend_sequences(10, seed=3)[0], trend_sequences(10, seed=3)[0])


def test_adding_problem_target_and_baseline():
    x, y = adding_problem(5000, 30, seed=0)
    assert x.shape == (5000, 30, 2)
    assert (x[:, :, 1].sum(1) == 2).all()
    assert (x[:, :15, 1].sum(1) == 1).all()  # one marker in each half
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * x[:, :, 1]).sum(1), rtol=1e-6)
    # predicting the mean 1.0 scores the variance of U1 + U2 = 1/6
    assert abs(np.mean((y - 1.0) ** 2) - ADDING_BASELINE_MSE) < 0.01


def test_copy_task_layout():
    x, y = copy_task(4, n_symbols=5, copy_len=3, delay=6, seed=0)
    assert x.shape == y.shape == (4, 12)
    np.testing.assert_array_equal(y[:, -3:], x[:, :3])
    assert (x[:, 8] == 6).all()  # the go marker, one step before the answer
    assert (y[:, :-3] == 0).all()


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_batch_equals_each_sequence_alone(arch, bidirectional):
    torch.manual_seed(0)
    model = Classifier(arch, 1, 6, 2, bidirectional=bidirectional).eval()
    x, _, lengths = trend_sequences(6, 12, min_len=2, seed=4)
    xb, lb = torch.from_numpy(x), torch.from_numpy(lengths)
    with torch.no_grad():
        batch = model(xb, lb)  # (6, 2), padded and packed
        alone = torch.cat([model(xb[i : i + 1, : lb[i]]) for i in range(6)])  # each unpadded, no lengths
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-6)
    # and the padding really is ignored: garbage past the ends changes nothing
    noisy = xb.clone()
    for i in range(6):
        noisy[i, lb[i]:] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, lb), batch)


def test_forecaster_rollout_feeds_predictions_back():
    torch.manual_seed(0)
    model = Forecaster("gru", 1, 5, 1).eval()
    window = torch.randn(2, 7, 1)
    roll = model.rollout(window, 3)  # (2, 3, 1)
    with torch.no_grad():
        p1, _ = model(window)
        p2, _ = model(torch.cat([window, p1[:, None]], 1)[:, -7:])
    torch.testing.assert_close(roll[:, 0], p1)
    torch.testing.assert_close(roll[:, 1], p2)


def test_an_interrupted_training_stops_the_whole_experiment():
    from types import SimpleNamespace

    from lapnet.experiments.result import stop_if_interrupted

    stop_if_interrupted(SimpleNamespace(stopped="max_steps"))  # a normal end: nothing happens
    with pytest.raises(KeyboardInterrupt):
        stop_if_interrupted(SimpleNamespace(stopped="interrupted"))
