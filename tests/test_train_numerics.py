"""The training loop at the edges of float32: learning rates it cannot hold, an update torch
cannot apply, NumPy's warnings during a divergence that fit reports itself."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lapnet.errors import LapnetError
from lapnet.train import LR_MAX, LR_MIN, TorchLearner, TrainConfig, TrainingDiverged, check_lr, fit


@pytest.mark.parametrize("lr", [1e39, 1e300, 1e-39, 1e-300, 5e-324])
def test_a_learning_rate_outside_float32_is_refused_in_one_line(lr):
    with pytest.raises(LapnetError, match=r"^lr must be a positive number within float32's range") as e:
        TrainConfig(epochs=1, lr=lr).validate()
    assert "\n" not in str(e.value)
    with pytest.raises(LapnetError, match=r"^--lr must"):
        check_lr(lr, "--lr")


@pytest.mark.parametrize("lr", [LR_MIN, 1e-30, 1e-2, 1e37, LR_MAX])
def test_a_learning_rate_float32_holds_is_accepted(lr):
    TrainConfig(epochs=1, lr=lr).validate()
    assert np.isfinite(np.float32(lr)) and np.float32(lr) > 0


class _Batches:
    def __init__(self, n: int = 3):
        self.n = n

    def steps_per_epoch(self) -> int:
        return self.n

    def epoch(self, e):
        import torch

        g = torch.Generator().manual_seed(e)
        for _ in range(self.n):
            yield torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)


def _torch_learner(cfg):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    mse = torch.nn.functional.mse_loss

    def loss_fn(net, batch, carry):
        x, y = batch
        return mse(net(x), y), carry, len(x)

    x, y = torch.randn(16, 3), torch.randn(16, 1)
    return TorchLearner(model, loss_fn, lambda m: {"val_loss": mse(m(x), y)}, cfg)


def test_an_update_torch_cannot_apply_is_a_divergence_at_its_step(tmp_path):
    # lr 1e38 is a float32, but Adam's first step is lr / (1 - 0.9) = 1e39: torch raised
    # "RuntimeError: value cannot be converted to type float without overflow" out of fit
    cfg = TrainConfig(epochs=2, lr=1e38, schedule="constant", progress=False)
    with pytest.raises(TrainingDiverged, match=r"^the update overflowed at step 1 \(epoch 1\): lr 1e\+38") as e:
        fit(_torch_learner(cfg), _Batches(), cfg, out=tmp_path / "run")
    assert e.value.step == 1 and "no checkpoint was written yet" in str(e.value)


def test_a_loss_divergence_carries_its_step(tmp_path):
    cfg = TrainConfig(epochs=1, lr=1e-2, progress=False)

    class NanAtThree:
        steps = 0

        def train_step(self, batch, carry, lr):
            self.steps += 1
            return (float("nan") if self.steps == 3 else 1.0), carry, 1

        def evaluate(self):
            return {"val_loss": 1.0}

        def weights(self):
            return {"w": np.zeros(2, np.float32)}

        def state(self):
            return {"model.w": np.zeros(2, np.float32)}, {}

        def load_state(self, arrays, meta):
            pass

    with pytest.raises(TrainingDiverged, match="loss became nan at step 3") as e:
        fit(NanAtThree(), _Batches(5), cfg)
    assert e.value.step == 3


def test_numpy_overflow_in_an_evaluation_fit_reports_shows_no_runtime_warning():
    # an evaluation of diverging weights overflows in NumPy; fit reports the non-finite loss in
    # its own line, so NumPy's "overflow encountered in ..." must not show ahead of it
    cfg = TrainConfig(epochs=1, lr=1e-2, progress=False)

    class Overflows:
        def train_step(self, batch, carry, lr):
            return 1.0, carry, 1

        def evaluate(self):
            big = np.full(4, 1e30, np.float32)
            return {"val_loss": float(np.mean(big * big))}  # inf, with a RuntimeWarning

        def weights(self):
            return {"w": np.zeros(2, np.float32)}

        def state(self):
            return {"model.w": np.zeros(2, np.float32)}, {}

        def load_state(self, arrays, meta):
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would surface as an exception here
        with pytest.raises(TrainingDiverged, match="validation loss became inf at step 2") as e:
            fit(Overflows(), _Batches(2), cfg)
    assert e.value.step == 2
