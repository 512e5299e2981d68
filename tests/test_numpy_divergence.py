"""A gradient that overflows in the NumPy engine's recurrence (the forward pass still finite)
stops training as divergence, before any update, like a NaN loss does; it is not reported as
bad input by the clipping or the embedding's input checks."""

from __future__ import annotations

import numpy as np
import pytest

from lapnet.train import TrainConfig, TrainingDiverged, fit


def _explode(params: dict[str, np.ndarray], hh: str) -> None:
    """Zero input path and biases keep h at 0 (a finite forward); a huge W_hh blows up the backward."""
    for k in params:
        if "bias" in k and "head" not in k:
            params[k][:] = 0
    params[hh][:] = 1e3 * np.eye(params[hh].shape[1], dtype=params[hh].dtype)


def test_a_sequence_model_whose_gradients_overflow_diverges_before_updating():
    from lapnet.experiments.numpy_models import NumpySequenceLearner, NumpySequenceModel

    m = NumpySequenceModel("rnn", 1, 8, 1)
    p = m.parameters()
    _explode(p, next(k for k in p if "weight_hh" in k))
    before = {k: v.copy() for k, v in p.items()}

    class Batches:
        def steps_per_epoch(self):
            return 2

        def epoch(self, e):
            for _ in range(2):
                yield np.zeros((4, 40, 1), np.float32), np.ones((4, 1), np.float32)

    learner = NumpySequenceLearner(m, "mse", lambda mm: {"val_loss": 1.0},
                                   TrainConfig(lr=1e-3, clip=1.0, max_steps=3, progress=False))
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1 .*stopped before updating"):
        fit(learner, Batches(), learner.cfg)
    for k, v in m.parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_a_numpy_charlm_whose_gradients_overflow_diverges_before_updating():
    from lapnet.models.charlm import CharLMConfig
    from lapnet.models.numpy_charlm import NumpyCharLMLearner
    from lapnet.text_runs import TextBatches, build_model

    net = build_model(CharLMConfig(vocab_size=5, arch="rnn", embed=4, hidden=8, layers=1), "numpy", 0)
    p = net.parameters()
    p["embed.weight"][:] = 0
    _explode(p, "rnn.weight_hh_l0")
    before = {k: v.copy() for k, v in p.items()}
    batches = TextBatches(np.random.default_rng(0).integers(0, 5, 2000), 4, 40, seed=0)
    learner = NumpyCharLMLearner(net, lambda: {"val_loss": 1.0},
                                 TrainConfig(lr=1e-3, clip=5.0, max_steps=3, progress=False))
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1 .*stopped before updating"):
        fit(learner, batches, learner.cfg)
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
