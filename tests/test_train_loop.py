"""The shared training loop: loss falls, checkpoints, resume equals straight training, guards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapnet.checkpoint import load_tensors
from lapnet.errors import LapnetError
from lapnet.train import TorchLearner, TrainConfig, TrainingDiverged, fit


class ToyBatches:
    """y = x @ w_true + noise, in shuffled mini-batches; the same order for the same epoch."""

    def __init__(self, n=64, batch=16, seed=0):
        g = np.random.default_rng(seed)
        self.x = torch.tensor(g.normal(size=(n, 3)), dtype=torch.float32)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
        self.batch, self.seed = batch, seed

    def steps_per_epoch(self):
        return len(self.x) // self.batch

    def epoch(self, e):
        order = np.random.default_rng((self.seed, e)).permutation(len(self.x))
        for i in range(self.steps_per_epoch()):
            idx = torch.as_tensor(order[i * self.batch:(i + 1) * self.batch])
            yield self.x[idx], self.y[idx]


def make(cfg, data, lr_scale=1.0):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))

    def loss_fn(net, batch, carry):
        x, y = batch
        return torch.nn.functional.mse_loss(net(x) * lr_scale, y), None, len(x)

    def evaluate(m):
        return {"val_loss": torch.nn.functional.mse_loss(m(data.x), data.y).item()}

    return model, TorchLearner(model, loss_fn, evaluate, cfg)


def test_loss_falls_and_checkpoints_are_written(tmp_path):
    data = ToyBatches()
    cfg = TrainConfig(epochs=30, lr=0.05, progress=False)
    _, learner = make(cfg, data)
    res = fit(learner, data, cfg, out=tmp_path, meta={"kind": "toy"})
    assert res.stopped == "epochs" and res.steps == 30 * 4
    assert res.history[-1]["val_loss"] < 0.2 * res.history[0]["val_loss"]
    arrays, meta = load_tensors(tmp_path / "model.safetensors")
    assert meta["kind"] == "toy" and meta["val_loss"] == pytest.approx(res.best_val)
    assert set(arrays) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 30


def test_resume_equals_straight_training(tmp_path):
    data = ToyBatches()
    cfg4 = TrainConfig(epochs=4, lr=0.05, schedule="constant", progress=False)
    m_straight, learner = make(cfg4, data)
    fit(learner, data, cfg4, out=tmp_path / "a")

    cfg2 = TrainConfig(epochs=2, lr=0.05, schedule="constant", progress=False)
    _, learner = make(cfg2, data)
    fit(learner, data, cfg2, out=tmp_path / "b")
    m_resumed, learner = make(cfg4, data)  # a fresh process would start from scratch weights
    res = fit(learner, data, cfg4, out=tmp_path / "b", resume=True)
    assert res.steps == 16
    for (k, a), b in zip(m_straight.state_dict().items(), m_resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = ToyBatches()
    cfg = TrainConfig(epochs=2, lr=0.05, progress=False)
    _, learner = make(cfg, data)
    fit(learner, data, cfg, out=tmp_path)
    before, _ = load_tensors(tmp_path / "last.safetensors")
    cfg_nan = TrainConfig(epochs=5, lr=0.05, progress=False)
    _, learner = make(cfg_nan, data, lr_scale=float("nan"))
    with pytest.raises(TrainingDiverged, match="step 9"):
        fit(learner, data, cfg_nan, out=tmp_path, resume=True)
    after, _ = load_tensors(tmp_path / "last.safetensors")
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_early_stopping_and_step_limit():
    data = ToyBatches()
    cfg = TrainConfig(epochs=None, max_steps=7, eval_every=2, lr=0.05, progress=False)
    _, learner = make(cfg, data)
    res = fit(learner, data, cfg)
    assert res.stopped == "max_steps" and res.steps == 7
    assert [h["step"] for h in res.history] == [2, 4, 6, 7]

    cfg = TrainConfig(epochs=50, lr=0.05, patience=2, progress=False)
    _, learner = make(cfg, data)
    learner.evaluate_fn = lambda m: {"val_loss": 1.0}  # a validation loss that never improves
    res = fit(learner, data, cfg)
    assert res.stopped == "early_stop" and res.steps == 3 * 4


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ValueError, match="nothing would stop"):
        TrainConfig(epochs=None).validate()


def test_namedtuple_batches_are_moved_whole():
    from typing import NamedTuple

    class Pair(NamedTuple):
        x: torch.Tensor
        y: torch.Tensor

    data = ToyBatches()
    cfg = TrainConfig(epochs=1, lr=0.05, progress=False)
    _, learner = make(cfg, data)
    batch = learner._prepare(Pair(data.x[:4], data.y[:4]))
    assert isinstance(batch, Pair) and batch.x.shape == (4, 3)


def test_scalars_survive_a_checkpoint(tmp_path):
    from lapnet.checkpoint import save_tensors

    save_tensors(tmp_path / "s.safetensors", {"step": np.int64(7), "w": np.ones((2, 2))}, {})
    arrays, _ = load_tensors(tmp_path / "s.safetensors")
    assert arrays["step"].shape == () and arrays["step"] == 7


def test_json_outputs_are_strict_json(tmp_path):
    """NaN and infinities (an AUC of one class, an empty bucket) are written as null: JSON has no
    NaN, and a bare NaN breaks JavaScript's, Go's and most other parsers."""
    from lapnet.checkpoint import json_text, write_json

    def strict(text):
        def refuse(token):
            raise ValueError(f"not JSON: {token}")

        return json.loads(text, parse_constant=refuse)

    obj = {"auc": float("nan"), "big": float("inf"), "np": np.float32("nan"), "ok": np.float64(0.25),
           "rows": [1, -float("inf"), {"deep": np.array([0.5, np.nan])}], "n": np.int64(3), "t": (1.5, float("nan"))}
    want = {"auc": None, "big": None, "np": None, "ok": 0.25, "rows": [1, None, {"deep": [0.5, None]}], "n": 3,
            "t": [1.5, None]}
    assert strict(json_text(obj)) == want
    write_json(tmp_path / "m.json", obj)
    assert strict((tmp_path / "m.json").read_text()) == want


def test_a_checkpoint_of_another_model_is_named_precisely():
    """Loading another model's training state names the missing, unexpected and mis-shaped weights."""
    import torch

    from lapnet.train import TorchLearner, TrainConfig

    cfg = TrainConfig(epochs=1, progress=False)

    def learner(model):
        return TorchLearner(model, lambda *a: None, lambda m: {"val_loss": 0.0}, cfg)

    gru = learner(torch.nn.GRU(3, 4, num_layers=2))
    arrays, meta = gru.state()
    with pytest.raises(LapnetError) as e:
        learner(torch.nn.GRU(3, 5)).load_state(arrays, meta)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("checkpoint does not fit this GRU:")
    assert "unexpected weight_ih_l1, weight_hh_l1, bias_ih_l1, bias_hh_l1" in msg
    assert "wrong shape: weight_ih_l0 (12, 3) for (15, 3)" in msg


def test_checkpoints_are_written_without_a_process_group_whatever_RANK_says(tmp_path, monkeypatch):
    """Only a joined process group makes a process a follower that writes nothing: a RANK variable
    set by some other launcher does not (it used to drop every checkpoint silently)."""
    import math

    from lapnet.checkpoint import save_tensors

    monkeypatch.setenv("RANK", "1")
    save_tensors(tmp_path / "w.safetensors", {"a": np.ones(2)}, {"val": math.nan, "inf": math.inf})
    arrays, meta = load_tensors(tmp_path / "w.safetensors")
    assert arrays["a"].tolist() == [1.0, 1.0]
    assert meta == {"val": None, "inf": None}  # strict JSON in the header: no bare NaN


class Streams:
    """2 streams of 40 steps, cut into 5 chunks of 8 per epoch: chunk k+1 continues chunk k (a GRU
    carries its state across chunks; test_train_review uses it too)."""

    x = torch.tensor(np.random.default_rng(3).normal(size=(2, 40, 3)))

    def steps_per_epoch(self):
        return 5

    def epoch(self, e):
        for k in range(5):
            xs = self.x[:, 8 * k:8 * k + 8]
            yield xs, xs.sum(-1, keepdim=True).cumsum(1) * 0.1


def test_resume_mid_epoch_continues_the_carried_state(tmp_path):
    """Truncated BPTT carries the hidden state between the steps of an epoch; a run stopped in the
    middle of one and resumed ends with the weights of a run never stopped (it used to restart
    the streams from zeros: 0.017 off at step 4 of 10)."""
    def loss_fn(net, batch, carry):
        out, h = net(batch[0], carry)
        return torch.nn.functional.mse_loss(out[..., :1], batch[1]), h.detach(), batch[0].shape[0]

    def run(out, **kw):
        torch.manual_seed(0)
        model = torch.nn.GRU(3, 4, batch_first=True).double()
        cfg = TrainConfig(lr=0.05, schedule="constant", eval_every=1, progress=False, **kw)
        learner = TorchLearner(model, loss_fn, lambda m: {"val_loss": 0.0}, cfg)
        fit(learner, Streams(), cfg, out=out, resume=(out / "last.safetensors").exists())
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    whole = run(tmp_path / "whole", epochs=2)
    run(tmp_path / "cut", epochs=2, max_steps=7)  # stops at step 2 of the second epoch
    resumed = run(tmp_path / "cut", epochs=2)
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=1e-14)


def test_divergence_before_any_checkpoint_says_none_was_written(tmp_path):
    model = torch.nn.Linear(2, 1)

    def loss_fn(net, batch, carry):
        return net(batch).sum() * float("nan"), None, 1

    class One:
        def steps_per_epoch(self):
            return 3

        def epoch(self, e):
            for _ in range(3):
                yield torch.ones(1, 2)

    cfg = TrainConfig(epochs=1, progress=False)
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet"):
        fit(TorchLearner(model, loss_fn, lambda m: {"val_loss": 0.0}, cfg), One(), cfg, out=tmp_path / "run")


def test_bfloat16_cannot_be_checkpointed_and_says_why(tmp_path):
    from lapnet.checkpoint import save_tensors

    with pytest.raises(LapnetError, match=r"bfloat16 .*\.float\(\)"):
        save_tensors(tmp_path / "w.safetensors", {"w": torch.ones(2, dtype=torch.bfloat16)})
    assert not (tmp_path / "w.safetensors").exists()


class _ConstantLossLearner:
    """A learner whose step loss is the batch's own number: train_loss is then a known mean."""

    def __init__(self):
        self.w = np.zeros(1)

    def train_step(self, batch, carry, lr):
        return float(batch), None, 1

    def evaluate(self):
        return {"val_loss": 1.0}

    def weights(self):
        return {"w": self.w}

    def state(self):
        return {"w": self.w}, {}

    def load_state(self, arrays, meta):
        self.w = arrays["w"]


class _ThreeBatches:
    def steps_per_epoch(self):
        return 3

    def epoch(self, e):
        return iter([1.0, 2.0, 3.0] if e == 0 else [10.0, 20.0, 30.0])


def test_train_loss_is_the_mean_of_the_steps_since_the_last_evaluation():
    """A running sum never reset at an evaluation (caught before only by a learning-curve test
    far away) would report 2.0 then 11.0 here."""
    result = fit(_ConstantLossLearner(), _ThreeBatches(), TrainConfig(epochs=2, progress=False))
    assert [row["train_loss"] for row in result.history] == [2.0, 20.0]
