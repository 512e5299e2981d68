"""The learning-rate schedule `lapnet.train.lr_at`: linear warm-up from the first step, cosine
decay to `min_lr_frac * lr`, the constant schedule, and `fit` feeding it the run's progress
measured in steps or against a time budget."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from lapnet.train import TrainConfig, fit, lr_at


def _cosine(lr: float, frac: float, p: float) -> float:
    low = lr * frac
    return low + (lr - low) * (1 + math.cos(math.pi * p)) / 2


def test_warmup_ramps_linearly_from_the_first_step():
    cfg = TrainConfig(lr=0.1, schedule="constant", warmup_steps=4)
    got = [lr_at(cfg, step, 0.0) for step in range(6)]
    # step 0 already learns (lr/4, not 0); full lr from step warmup_steps - 1 on
    np.testing.assert_allclose(got, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rtol=0, atol=1e-15)


def test_cosine_goes_from_lr_to_min_lr_frac_times_lr():
    cfg = TrainConfig(lr=0.2, schedule="cosine", min_lr_frac=0.05)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.2, abs=1e-15)
    assert lr_at(cfg, 0, 1.0) == pytest.approx(0.05 * 0.2, abs=1e-15)
    assert lr_at(cfg, 0, 0.5) == pytest.approx((0.2 + 0.01) / 2, abs=1e-15)  # halfway: the midpoint
    assert lr_at(cfg, 0, 0.25) == pytest.approx(0.01 + 0.19 * (1 + math.sqrt(0.5)) / 2, abs=1e-15)
    ps = np.linspace(0, 1, 11)
    lrs = [lr_at(cfg, 0, p) for p in ps]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing over the run
    # progress outside [0, 1] (a run past its plan, a clock read early) is clamped
    assert lr_at(cfg, 0, 1.7) == lr_at(cfg, 0, 1.0) and lr_at(cfg, 0, -0.3) == lr_at(cfg, 0, 0.0)


def test_min_lr_frac_one_and_zero():
    assert lr_at(TrainConfig(lr=0.3, min_lr_frac=1.0), 5, 0.6) == pytest.approx(0.3, abs=1e-15)  # no decay
    assert lr_at(TrainConfig(lr=0.3, min_lr_frac=0.0), 5, 1.0) == pytest.approx(0.0, abs=1e-15)


def test_constant_schedule_ignores_progress():
    cfg = TrainConfig(lr=0.07, schedule="constant", min_lr_frac=0.1)
    assert {lr_at(cfg, step, p) for step in (0, 10, 1000) for p in (0.0, 0.4, 1.0)} == {0.07}


def test_warmup_scales_the_cosine():
    cfg = TrainConfig(lr=0.1, schedule="cosine", min_lr_frac=0.1, warmup_steps=10)
    assert lr_at(cfg, 1, 0.5) == pytest.approx(0.2 * _cosine(0.1, 0.1, 0.5), abs=1e-15)
    assert lr_at(cfg, 9, 0.5) == pytest.approx(_cosine(0.1, 0.1, 0.5), abs=1e-15)


class _LrRecorder:
    """The smallest learner fit accepts: records the lr of each step; `on_step` runs inside it."""

    def __init__(self, on_step=lambda: None):
        self.w = np.zeros(2)
        self.lrs: list[float] = []
        self.on_step = on_step

    def train_step(self, batch, carry, lr):
        self.lrs.append(lr)
        self.on_step()
        self.w -= lr  # a real update: the weights depend on the schedule
        return float(np.sum(self.w ** 2)), carry, 1

    def evaluate(self):
        return {"val_loss": float(np.sum(self.w ** 2))}

    def weights(self):
        return {"w": self.w.copy()}

    def state(self):
        return {"w": self.w.copy()}, {}

    def load_state(self, arrays, meta):
        self.w[...] = arrays["w"]


class _OneBatch:
    def steps_per_epoch(self):
        return 1

    def epoch(self, e):
        yield np.zeros(1)


def test_fit_feeds_progress_in_steps():
    learner = _LrRecorder()
    cfg = TrainConfig(epochs=5, lr=0.1, min_lr_frac=0.2, progress=False)
    fit(learner, _OneBatch(), cfg)
    np.testing.assert_allclose(learner.lrs, [_cosine(0.1, 0.2, k / 5) for k in range(5)], rtol=1e-12)


def test_fit_feeds_progress_from_the_time_budget(monkeypatch):
    """With --minutes the progress is elapsed time / budget: a fake clock that moves 15 s per
    step through a one-minute budget gives progress 0, 1/4, 1/2, 3/4, and training stops at 1."""
    now = [1000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    def tick():
        now[0] += 15.0

    learner = _LrRecorder(on_step=tick)
    cfg = TrainConfig(epochs=None, minutes=1.0, lr=0.1, min_lr_frac=0.2, progress=False)
    res = fit(learner, _OneBatch(), cfg)
    assert res.stopped == "minutes"
    np.testing.assert_allclose(learner.lrs, [_cosine(0.1, 0.2, k / 4) for k in range(4)], rtol=1e-12)


def test_the_earlier_of_steps_and_time_sets_the_progress(monkeypatch):
    """max_steps 10 with a clock at 1/4 of the budget per step: time is ahead of the steps."""
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    def tick():
        now[0] += 15.0

    learner = _LrRecorder(on_step=tick)
    cfg = TrainConfig(epochs=None, minutes=1.0, max_steps=10, lr=0.1, min_lr_frac=0.0, schedule="cosine",
                      progress=False)
    fit(learner, _OneBatch(), cfg)
    np.testing.assert_allclose(learner.lrs, [_cosine(0.1, 0.0, max(k / 10, k / 4)) for k in range(4)], rtol=1e-12)
