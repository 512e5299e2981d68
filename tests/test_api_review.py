"""Findings of the API review outside the race package: each test failed before its fix.

Toy sizes only: every test runs in milliseconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapnet import scratch
from lapnet.errors import LapnetError

KINDS = {"rnn": scratch.RNN, "lstm": scratch.LSTM, "gru": scratch.GRU}


def _zeros(layer):
    return {k: np.zeros_like(v) for k, v in layer.state_dict().items()}


# --- 1. load_state_dict copies into the live arrays ---------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_optimizer_built_before_load_state_dict_still_trains_the_layer(kind):
    layer = KINDS[kind](3, 4, dtype="float64")
    opt = scratch.SGD(layer.parameters(), lr=1.0)
    layer.load_state_dict(_zeros(layer))
    grads = {k: np.full_like(v, 0.5) for k, v in layer.parameters().items()}
    opt.step(grads)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, -0.5 * np.ones_like(v), err_msg=k)


def test_linear_and_embedding_load_state_dict_keep_optimizer_binding():
    for mod in (scratch.Linear(3, 2, dtype="float64"), scratch.Embedding(5, 2, dtype="float64")):
        opt = scratch.Adam(mod.parameters(), lr=0.1)
        mod.load_state_dict({k: torch.zeros(v.shape, dtype=torch.float64) for k, v in mod.state_dict().items()})
        opt.step({k: np.ones_like(v) for k, v in mod.parameters().items()})
        for v in mod.state_dict().values():
            np.testing.assert_allclose(v, -0.1)  # Adam's first step moves by lr


def test_state_dict_returns_copies_and_loading_copies_the_input():
    layer = scratch.LSTM(2, 3, dtype="float64")
    sd = layer.state_dict()
    sd["weight_hh_l0"][...] = 7.0
    assert not np.any(layer.parameters()["weight_hh_l0"] == 7.0)
    src = _zeros(layer)
    layer.load_state_dict(src)
    src["bias_ih_l0"][...] = 3.0  # the caller's arrays stay theirs
    assert np.all(layer.parameters()["bias_ih_l0"] == 0.0)


def test_load_state_dict_float32_into_float64_keeps_dtype_and_a_bad_entry_changes_nothing():
    layer = scratch.GRU(2, 3, dtype="float64")
    before = layer.state_dict()
    live = layer.parameters()["weight_ih_l0"]
    layer.load_state_dict({k: v.astype(np.float32) for k, v in before.items()})
    assert layer.parameters()["weight_ih_l0"] is live and live.dtype == np.float64
    bad = _zeros(layer)
    bad["weight_hh_l0"] = np.zeros((1, 1))
    with pytest.raises(LapnetError, match=r"weight_hh_l0.*shape"):
        layer.load_state_dict(bad)
    np.testing.assert_allclose(layer.state_dict()["weight_ih_l0"], before["weight_ih_l0"], rtol=1e-6)


# --- 2. caches know which layer made them ---------------------------------------------------


def test_backward_refuses_a_cache_of_another_shape_or_kind():
    x = np.zeros((1, 2, 3))
    _, _, c1 = scratch.LSTM(3, 4, dtype="float64").forward(x)
    big = scratch.LSTM(3, 4, 2, bidirectional=True, dtype="float64")
    with pytest.raises(LapnetError, match="cache from a 1-layer unidirectional LSTM, this is a 2-layer bidirectional LSTM"):
        big.backward(None, None, c1)
    _, _, cg = scratch.GRU(3, 4, dtype="float64").forward(x)
    with pytest.raises(LapnetError, match="cache from a 1-layer unidirectional GRU, this is a 1-layer unidirectional LSTM"):
        scratch.LSTM(3, 4, dtype="float64").backward(None, None, cg)


def test_backward_refuses_a_cache_of_another_layer_object_of_the_same_shape():
    a, b = scratch.LSTM(3, 4, dtype="float64"), scratch.LSTM(3, 4, dtype="float64")
    _, _, cache = a.forward(np.ones((1, 2, 3)))
    with pytest.raises(LapnetError, match="cache from another layer object"):
        b.backward(np.ones((1, 2, 4)), None, cache)
    dx, _, _ = a.backward(np.ones((1, 2, 4)), None, cache)  # its own layer still works
    assert dx.shape == (1, 2, 3)


def test_gates_out_of_range_is_a_clear_error():
    layer = scratch.LSTM(3, 4, 2, bidirectional=True)
    _, _, cache = layer.forward(np.zeros((1, 2, 3), np.float32))
    assert cache.gates(1, 1)["i"].shape == (1, 2, 4)
    with pytest.raises(LapnetError, match=r"layer must be an integer in \[0, 2\).*got 2"):
        cache.gates(2, 0)
    with pytest.raises(LapnetError, match=r"direction must be an integer in \[0, 2\).*got -1"):
        cache.gates(0, -1)


# --- 3. bad inputs: one clear LapnetError naming the argument --------------------------------


@pytest.mark.parametrize("lengths", [["5", "5"], np.array([True, True]), np.array([1.5, 2.0]),
                                     np.array([None, 2], dtype=object)])
def test_forward_lengths_must_be_integers(lengths):
    with pytest.raises(LapnetError, match="lengths must be integers"):
        scratch.LSTM(3, 4).forward(np.zeros((2, 5, 3), np.float32), lengths=lengths)


def test_forward_lengths_as_whole_floats_and_lists_still_work():
    layer = scratch.GRU(3, 4, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    a = layer.forward(x, lengths=[5, 3])[0]
    b = layer.forward(x, lengths=np.array([5.0, 3.0]))[0]
    np.testing.assert_array_equal(a, b)
    assert np.all(a[1, 3:] == 0) and np.any(a[1, :3] != 0)


@pytest.mark.parametrize("value, match", [
    (np.array([["a"] * 3] * 16), "float dtype"),
    ([[0.0] * 3] * 16, "numpy array or a torch tensor"),
    (np.zeros((16, 3), np.int64), "float dtype"),
])
def test_load_state_dict_refuses_non_float_arrays(value, match):
    layer = scratch.LSTM(3, 4)
    sd = layer.state_dict()
    sd["weight_ih_l0"] = value
    with pytest.raises(LapnetError, match=rf"weight_ih_l0.*{match}"):
        layer.load_state_dict(sd)
    lin = scratch.Linear(3, 2)
    with pytest.raises(LapnetError, match="weight"):
        lin.load_state_dict({"weight": [[1.0] * 3] * 2, "bias": np.zeros(2, np.float32)})


def test_load_state_dict_refuses_a_non_mapping():
    with pytest.raises(LapnetError, match="mapping"):
        scratch.RNN(2, 2).load_state_dict([("weight_ih_l0", np.zeros((2, 2)))])


@pytest.mark.parametrize("args", [(3, None), (None, 4), (3, 4.0), (3, True), (3, 4, 0), ("3", 4)])
def test_sizes_must_be_positive_integers(args):
    with pytest.raises(LapnetError, match="must be a positive integer"):
        scratch.LSTM(*args)


def test_linear_and_embedding_sizes_must_be_positive_integers():
    with pytest.raises(LapnetError, match="out_features must be a positive integer"):
        scratch.Linear(3, None)
    with pytest.raises(LapnetError, match="num_embeddings must be a positive integer"):
        scratch.Embedding(2.5, 3)


def test_from_torch_refuses_bfloat16_and_float16_by_name():
    for dt in (torch.bfloat16, torch.float16):
        mod = torch.nn.LSTM(2, 3, batch_first=True).to(dt)
        with pytest.raises(LapnetError, match=r"from_torch: .*only float32 and float64"):
            scratch.from_torch(mod)


def test_bfloat16_tensor_input_is_a_clear_error():
    with pytest.raises(LapnetError, match="bfloat16.*only float32 and float64"):
        scratch.LSTM(2, 3).forward(torch.zeros(1, 2, 2, dtype=torch.bfloat16))


@pytest.mark.parametrize("fn, name", [(scratch.clip_grad_value, "clip_value"), (scratch.clip_grad_norm, "max_norm")])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0, None, "1"])
def test_clip_thresholds_must_be_finite_and_positive(fn, name, bad):
    g = {"w": np.ones(3)}
    with pytest.raises(LapnetError, match=name):
        fn(g, bad)
    np.testing.assert_array_equal(g["w"], 1.0)  # nothing touched


@pytest.mark.parametrize("make, name", [
    (lambda p: scratch.Adam(p, lr=float("nan")), "lr"),
    (lambda p: scratch.Adam(p, lr=0.0), "lr"),
    (lambda p: scratch.Adam(p, eps=-1e-8), "eps"),
    (lambda p: scratch.Adam(p, betas=(0.9, float("nan"))), "betas"),
    (lambda p: scratch.Adam(p, betas=None), "betas"),
    (lambda p: scratch.SGD(p, momentum=-1), "momentum"),
    (lambda p: scratch.SGD(p, lr=float("inf")), "lr"),
    (lambda p: scratch.SGD(p, nesterov=True), "nesterov"),
    (lambda p: scratch.SGD(p, weight_decay=float("nan")), "weight_decay"),
    (lambda p: scratch.Adagrad(p, lr="fast"), "lr"),
])
def test_optimizer_hyperparameters_are_checked(make, name):
    with pytest.raises(LapnetError, match=name):
        make({"w": np.zeros(2)})


def test_optimizer_step_lr_override_must_be_finite():
    p = {"w": np.zeros(2)}
    opt = scratch.SGD(p, lr=0.1)
    with pytest.raises(LapnetError, match="lr"):
        opt.step({"w": np.ones(2)}, lr=float("nan"))
    opt.step({"w": np.ones(2)}, lr=0.0)  # a schedule may reach zero
    np.testing.assert_array_equal(p["w"], 0.0)


def test_linear_refuses_nan_input_like_the_recurrent_layers():
    lin = scratch.Linear(2, 1)
    for bad in (np.array([[np.nan, 0.0]]), np.array([[np.inf, 0.0]])):
        with pytest.raises(LapnetError, match="Linear input contains NaN"):
            lin.forward(bad)
    with pytest.raises(LapnetError, match="input contains NaN"):
        scratch.LSTM(2, 1).forward(np.array([[[np.nan, 0.0]]]))


# --- 4. keyword-only arguments after num_layers ----------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_fourth_positional_argument_is_refused(kind):
    as_torch = "nonlinearity=True" if kind == "rnn" else "bias=True"  # what torch reads the True as
    with pytest.raises(LapnetError, match=rf"positional argument\(s\) after num_layers, which torch.nn.\w+ would read "
                                          rf"as {as_torch}: pass .* by keyword"):
        KINDS[kind](3, 4, 2, True)


def test_bias_and_batch_first_true_accepted_false_refused():
    layer = scratch.LSTM(3, 4, 2, bias=np.True_, batch_first=True, bidirectional=True)
    assert layer.bidirectional and layer.num_layers == 2
    with pytest.raises(LapnetError, match="bias=False is not supported"):
        scratch.GRU(3, 4, bias=False)
    with pytest.raises(LapnetError, match="bias=None is not supported"):
        scratch.LSTM(3, 4, bias=None)
    with pytest.raises(LapnetError, match=r"batch_first=False is not supported.*batch-first"):
        scratch.RNN(3, 4, batch_first=False)
    with pytest.raises(LapnetError, match="bidirectional must be True or False"):
        scratch.LSTM(3, 4, bidirectional="yes")


def test_from_torch_and_astype_still_build_bidirectional_layers():
    mod = torch.nn.GRU(2, 3, 2, bidirectional=True, batch_first=True).double()
    eng = scratch.from_torch(mod)
    assert eng.bidirectional and eng.num_layers == 2 and eng.dtype == np.float64
    x = np.random.default_rng(1).standard_normal((2, 4, 2))
    ref, _ = mod(torch.from_numpy(x))
    np.testing.assert_allclose(eng.forward(x)[0], ref.detach().numpy(), atol=1e-12)
    assert eng.astype("float32").bidirectional


# --- 5. the torch side: lapnet.models ---------------------------------------------------------


def test_make_recurrent_refuses_non_integer_sizes():
    from lapnet.models.recurrent import make_recurrent

    for args, name in (((2, 2.5), "hidden_size"), ((None, 3), "input_size"), ((2, 3, 1.0), "num_layers"),
                       ((2, True), "hidden_size")):
        with pytest.raises(LapnetError, match=f"{name} must be a positive integer"):
            make_recurrent("gru", *args)
    with pytest.raises(LapnetError, match="nonlinearity"):
        make_recurrent("rnn", 2, 3, nonlinearity="sigmoid")
    with pytest.raises(LapnetError, match="unknown architecture"):
        make_recurrent(None, 2, 3)
    assert make_recurrent("GRU", np.int64(2), 3).hidden_size == 3


@pytest.mark.parametrize("lengths, match", [
    (torch.tensor([5, 6]), "between 1 and T=5"),
    (torch.tensor([0, 3]), "between 1 and T=5"),
    ([3], r"shape \(2,\)"),
    (torch.tensor([2.5, 3.0]), "integers"),
    (["3", "4"], "integers"),
])
def test_run_recurrent_validates_lengths(lengths, match):
    from lapnet.models.recurrent import make_recurrent, run_recurrent

    rnn = make_recurrent("lstm", 2, 3)
    with pytest.raises(LapnetError, match=match):
        run_recurrent(rnn, torch.zeros(2, 5, 2), lengths)


def test_run_recurrent_accepts_a_list_and_matches_a_tensor():
    from lapnet.models.recurrent import make_recurrent, run_recurrent

    torch.manual_seed(0)
    rnn = make_recurrent("gru", 2, 3)
    x = torch.randn(2, 5, 2)
    with torch.no_grad():
        out_list, h_list = run_recurrent(rnn, x, [5, 2])
        out_t, h_t = run_recurrent(rnn, x, torch.tensor([5, 2]))
        _, h_short = rnn(x[1:, :2])  # the second sequence alone, cut at its length
    torch.testing.assert_close(out_list, out_t)
    torch.testing.assert_close(h_list[:, 1], h_short[:, 0])
    assert torch.all(out_list[1, 2:] == 0)


def test_forecaster_rollout_checks_sizes():
    from lapnet.models.forecaster import Forecaster

    torch.manual_seed(0)
    two_out = Forecaster("lstm", input_size=1, hidden_size=4, output_size=2)
    with pytest.raises(LapnetError, match=r"output_size \(2\) must equal input_size \(1\)"):
        two_out.rollout(torch.zeros(1, 3, 1), 2)
    f = Forecaster("gru", input_size=2, hidden_size=4, output_size=2)
    with pytest.raises(LapnetError, match=r"D = input_size = 2, got shape \(1, 3, 1\)"):
        f.rollout(torch.zeros(1, 3, 1), 2)
    with pytest.raises(LapnetError, match="steps must be a positive integer"):
        f.rollout(torch.zeros(1, 3, 2), 0)
    preds = f.rollout(torch.zeros(1, 3, 2), 3)
    assert preds.shape == (1, 3, 2)
    with torch.no_grad():
        first, _ = f(torch.zeros(1, 3, 2))
    torch.testing.assert_close(preds[:, 0], first)


# --- 6. lapnet.train.fit ------------------------------------------------------------------------


class _Batches:
    def __init__(self, spe=2):
        self.spe = spe

    def steps_per_epoch(self):
        return self.spe

    def epoch(self, e):
        for i in range(self.spe):
            yield float(e * self.spe + i)


class _Learner:
    """A one-number 'model' that counts its calls: enough to see what fit does."""

    def __init__(self, metrics=None):
        self.w = np.zeros(1)
        self.steps = self.evals = 0
        self.metrics = metrics

    def train_step(self, batch, carry, lr):
        self.steps += 1
        self.w += lr
        return 1.0 / (1.0 + batch), carry, 1

    def evaluate(self):
        self.evals += 1
        return {"val_loss": float(1.0 / (1.0 + self.w[0])), "acc": 0.5} if self.metrics is None else self.metrics

    def weights(self):
        return {"w": self.w.copy()}

    def state(self):
        return {"w": self.w.copy()}, {}

    def load_state(self, arrays, meta):
        self.w[...] = arrays["w"]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("limits", [dict(epochs=2), dict(epochs=None, max_steps=3)])
def test_resuming_a_finished_run_does_nothing_and_returns_its_result(tmp_path, limits):
    from lapnet.train import TrainConfig, fit

    cfg = TrainConfig(**limits, lr=0.1, schedule="constant", progress=False)
    first = fit(_Learner(), _Batches(), cfg, out=tmp_path)
    before = _files(tmp_path)
    learner = _Learner()
    again = fit(learner, _Batches(), cfg, out=tmp_path, resume=True)
    assert learner.steps == 0 and learner.evals == 0
    assert _files(tmp_path) == before  # no log row, no checkpoint rewritten
    assert (again.stopped, again.steps, again.best_val) == (first.stopped, first.steps, first.best_val)
    assert again.last_metrics == first.last_metrics and again.last_metrics["acc"] == 0.5
    assert again.history == first.history
    assert learner.w[0] == pytest.approx(0.1 * first.steps)  # the restored weights


def test_resuming_an_unfinished_run_still_trains_to_the_total(tmp_path):
    from lapnet.train import TrainConfig, fit

    fit(_Learner(), _Batches(), TrainConfig(epochs=1, lr=0.1, schedule="constant", progress=False), out=tmp_path)
    learner = _Learner()
    res = fit(learner, _Batches(), TrainConfig(epochs=3, lr=0.1, schedule="constant", progress=False),
              out=tmp_path, resume=True)
    assert learner.steps == 4 and learner.evals == 2 and res.steps == 6
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]


@pytest.mark.parametrize("metrics, match", [
    ({"loss": 0.3}, r"evaluate\(\) must return a dict with 'val_loss', got \['loss'\]"),
    ({"val_loss": None}, r"must return a number as 'val_loss', got None"),
    ([0.3], r"must return a dict with 'val_loss', got list"),
])
def test_evaluate_without_val_loss_is_a_clear_error_not_divergence(metrics, match):
    from lapnet.train import TrainConfig, TrainingDiverged, fit

    with pytest.raises(LapnetError, match=match) as e:
        fit(_Learner(metrics), _Batches(), TrainConfig(epochs=1, progress=False))
    assert not isinstance(e.value, TrainingDiverged)


def test_nan_val_loss_is_still_divergence():
    from lapnet.train import TrainConfig, TrainingDiverged, fit

    with pytest.raises(TrainingDiverged, match="validation loss became nan"):
        fit(_Learner({"val_loss": np.float32("nan")}), _Batches(), TrainConfig(epochs=1, progress=False))


@pytest.mark.parametrize("field, value", [("epochs", 1.5), ("epochs", "3"), ("epochs", True), ("max_steps", 2.0),
                                          ("eval_every", "5"), ("patience", 0.5), ("warmup_steps", -1)])
def test_train_config_requires_integer_counts(field, value):
    from lapnet.train import TrainConfig

    with pytest.raises(LapnetError, match=rf"^{field} must be an integer >= \d"):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("field, value", [("lr", "0.1"), ("minutes", "2"), ("clip", float("nan")),
                                          ("weight_decay", -0.1), ("min_lr_frac", 2.0)])
def test_train_config_numbers_are_checked_by_name(field, value):
    from lapnet.train import TrainConfig

    with pytest.raises(LapnetError, match=rf"^{field} must be"):
        TrainConfig(**{field: value}).validate()


def test_sine_learner_with_diverged_weights_reports_divergence_without_updating():
    from lapnet.experiments.batches import FullBatch
    from lapnet.experiments.engine_tour import SineDemoConfig, sine_data, sine_learner
    from lapnet.train import TrainConfig, TrainingDiverged, fit

    cfg = SineDemoConfig(hidden=3, epochs=2, n_points=30, window=5)
    (x, y), (xv, yv) = sine_data(cfg)
    learner = sine_learner(cfg, xv, yv)
    learner.model.parameters()["rnn.weight_hh_l0"][0, 0] = np.nan  # as an overflowed update leaves it
    before = learner.weights()
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1"):
        fit(learner, FullBatch(x, y), TrainConfig(epochs=2, progress=False))
    for k, v in learner.weights().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # no update after the NaN loss


def test_numpy_sequence_model_with_diverged_weights_gives_nan_outputs_not_an_error():
    """Linear refuses NaN input: a diverged encoder must still reach fit as a NaN loss."""
    from lapnet.experiments.numpy_models import NumpySequenceModel

    m = NumpySequenceModel("gru", 2, 4, 1)
    m.parameters()["rnn.weight_hh_l0"][0, 0] = np.nan
    y, cache = m.forward(np.ones((3, 5, 2), np.float32))
    assert y.shape == (3, 1) and np.isnan(y).all() and cache is None


def test_run_recurrent_refuses_what_it_would_misread():
    """A time-major module (batch_first=False) would read (B, T, D) as (T, B, D) without lengths and
    correctly with them: two answers to one call. A PackedSequence is packed already."""
    import torch

    from lapnet.models import Classifier, Forecaster, make_recurrent, run_recurrent

    x = torch.zeros(4, 6, 3)
    with pytest.raises(LapnetError, match="batch-first modules .*batch_first=False"):
        run_recurrent(torch.nn.GRU(3, 5), x)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [6, 5, 4, 3], batch_first=True)
    with pytest.raises(LapnetError, match="padded .* tensor, got a PackedSequence"):
        run_recurrent(make_recurrent("gru", 3, 5), packed, lengths=[6, 5, 4, 3])
    with pytest.raises(LapnetError, match="vanilla RNN only"):
        make_recurrent("lstm", 3, 5, nonlinearity="relu")
    assert Classifier and Forecaster  # exported with the other models
