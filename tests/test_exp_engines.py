"""`lapnet trend | adding --engine numpy` and `--device` for the experiments.

The NumPy engine learns the tasks through the same training loop, and from the same
weights in float64 it takes the very same steps as the torch engine (losses and updated
weights), with packed variable lengths and both directions. `--device cuda` on a machine
without CUDA is one line and exit 2; `auto` picks the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapnet.experiments.numpy_models import NumpySequenceLearner, NumpySequenceModel, bce_with_logits
from lapnet.models.classifier import Classifier
from lapnet.models.forecaster import Forecaster
from lapnet.train import TorchLearner, TrainConfig

NO_CUDA = not torch.cuda.is_available()


def test_trend_numpy_engine_learns(run_cli, tmp_path):
    code, out, err = run_cli("trend", "--engine", "numpy", "--hidden", "8", "--epochs", "15", "--train", "200",
                             "--test", "60", "--out", tmp_path / "t", "--quiet", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["config"]["engine"] == "numpy" and m["config"]["device"] == "cpu"
    assert m["test_accuracy"] >= 0.9
    losses = m["curves"]["train_loss"]
    assert len(losses) == 15 and losses[-1] < 0.6 * losses[0]  # the loss falls
    assert (tmp_path / "t" / "trend_training.png").stat().st_size > 0


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_trend_numpy_engine_bidirectional_variable_length(run_cli, tmp_path, arch):
    code, out, err = run_cli("trend", "--engine", "numpy", "--bidirectional", "--variable-length", "--min-length", "4",
                             "--arch", arch, "--hidden", "8", "--epochs", "15", "--train", "200", "--test", "60",
                             "--out", tmp_path / "t", "--quiet", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["config"]["bidirectional"] is True and m["config"]["min_len"] == 4
    assert m["test_accuracy"] > 0.8
    assert m["curves"]["test_loss"][-1] < 0.7 * m["curves"]["test_loss"][0]


def test_adding_numpy_engine_lstm_solves_what_the_rnn_does_not(run_cli, tmp_path):
    code, out, err = run_cli("adding", "--engine", "numpy", "--archs", "rnn,lstm", "--lengths", "10", "--hidden", "16",
                             "--max-steps", "400", "--eval-every", "100", "--keep-going", "--out", tmp_path / "a",
                             "--quiet", "--json")
    assert code == 0, err
    m = json.loads(out)
    rnn, lstm = m["runs"]["rnn"]["10"], m["runs"]["lstm"]["10"]
    assert lstm["steps"] == [100, 200, 300, 400]
    assert lstm["final_test_mse"] < m["solved_mse"] < rnn["final_test_mse"] < m["baseline_mse"]
    assert lstm["steps_to_solve"] is not None and rnn["steps_to_solve"] is None


def _batch(rng, B=6, T=7, D=1, variable=True):
    x = rng.normal(size=(B, T, D))
    lengths = np.array([T, 3, 1, 5, T, 2][:B]) if variable else np.full(B, T)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0  # padding, as trend_sequences writes it
    return x, lengths


@pytest.mark.parametrize("arch,bidirectional,variable", [
    ("lstm", True, True), ("gru", False, True), ("rnn", True, False), ("lstm", False, False)])
def test_trend_step_parity_with_torch_in_float64(arch, bidirectional, variable):
    """The trend step on both engines from the same weights: equal losses, equal updated
    weights after three Adam steps (packed lengths and both directions included)."""
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    net = Classifier(arch, 1, 5, 1, bidirectional=bidirectional).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.5)  # random, non-zero biases: both bias vectors must be used
    twin = NumpySequenceModel(arch, 1, 5, 1, bidirectional=bidirectional, dtype="float64")
    twin.load_state_dict(net.state_dict())
    x, lengths = _batch(rng, variable=variable)
    y = (rng.random((6, 1)) > 0.5).astype(np.float64)
    cfg = TrainConfig(epochs=1, lr=0.01, clip=None)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def loss_fn(m, batch, carry):
        xb, yb, lb = batch
        return bce(m(xb, lb if variable else None), yb), carry, len(xb)

    t_learner = TorchLearner(net, loss_fn, lambda m: {}, cfg)
    n_learner = NumpySequenceLearner(twin, "bce_with_logits", lambda m: {}, cfg)
    tb = (torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths))
    nb = (x, y, lengths) if variable else (x, y)
    for step in range(3):
        lt, _, _ = t_learner.train_step(tb, None, 0.01)
        ln, _, _ = n_learner.train_step(nb, None, 0.01)
        assert ln == pytest.approx(lt, rel=1e-12, abs=1e-14), f"step {step + 1}"
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(twin.parameters()[k], v.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_adding_step_parity_with_torch_in_float64():
    """The adding step (MSE, global-norm clipping that bites, Adam) on both engines."""
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    net = Forecaster("gru", 2, 6, 1).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.5)
    twin = NumpySequenceModel("gru", 2, 6, 1, dtype="float64")
    twin.load_state_dict(net.state_dict())
    x, y = rng.random((8, 9, 2)), rng.random((8, 1)) * 2
    cfg = TrainConfig(epochs=1, lr=0.01, clip=0.05)  # small enough to clip every step
    mse = torch.nn.functional.mse_loss
    t_learner = TorchLearner(net, lambda m, b, c: (mse(m(b[0])[0], b[1]), c, len(b[0])), lambda m: {}, cfg)
    n_learner = NumpySequenceLearner(twin, "mse", lambda m: {}, cfg)
    first = None
    for step in range(3):
        lt, _, _ = t_learner.train_step((torch.from_numpy(x), torch.from_numpy(y)), None, 0.01)
        ln, _, _ = n_learner.train_step((x, y), None, 0.01)
        first = first or ln
        assert ln == pytest.approx(lt, rel=1e-12), f"step {step + 1}"
    assert ln < first
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(twin.parameters()[k], v.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_numpy_lengths_equal_each_sequence_alone_unpadded(arch):
    """The NumPy trend model on a padded batch with lengths= gives each sequence's logit as
    if it ran alone at its own length, whatever sits in the padding (both directions)."""
    rng = np.random.default_rng(11)
    model = NumpySequenceModel(arch, 1, 4, 1, bidirectional=True, dtype="float64", seed=2)
    x, lengths = _batch(rng)
    x_noisy = x.copy()
    x_noisy[np.arange(7)[None, :] >= lengths[:, None]] = 99.0  # garbage in the padding
    batch = model.forward(x_noisy, lengths)[0]  # (6, 1)
    alone = np.concatenate([model.forward(x[i : i + 1, : lengths[i]])[0] for i in range(len(x))])  # (6, 1)
    np.testing.assert_allclose(batch, alone, rtol=1e-12, atol=1e-14)


def test_bce_with_logits_matches_torch_at_extreme_logits():
    z = np.array([[-800.0], [-30.0], [0.0], [2.5], [30.0], [800.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0]])
    zt = torch.from_numpy(z).requires_grad_()
    lt = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.from_numpy(y))
    lt.backward()
    ln, dz = bce_with_logits(z, y)
    assert ln == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_numpy_model_refuses_weights_that_do_not_fit():
    from lapnet.errors import LapnetError

    twin = NumpySequenceModel("lstm", 1, 4, 1)
    with pytest.raises(LapnetError, match="missing"):
        twin.load_state_dict({"head.weight": np.zeros((1, 4))})
    bad = {k: np.zeros((2, 2)) for k in twin.parameters()}
    with pytest.raises(LapnetError, match="shape"):
        twin.load_state_dict(bad)


# --- --device ----------------------------------------------------------------------------

@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("command", [["sine"], ["trend"], ["adding"], ["trend", "--engine", "numpy"]])
def test_device_cuda_without_cuda_is_one_line_exit_2(run_cli, tmp_path, command):
    code, out, err = run_cli(*command, "--device", "cuda", "--out", tmp_path / "x", "--quiet")
    assert code == 2
    assert err.startswith("lapnet: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert "cuda" in err.lower()
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.mark.parametrize("command", [["sine"], ["adding"], ["trend", "--engine", "numpy"]])
def test_unknown_device_is_refused(run_cli, tmp_path, command):
    code, _, err = run_cli(*command, "--device", "tpu", "--out", tmp_path / "x", "--quiet")
    assert code == 2 and "--device tpu" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_device_auto_picks_the_cpu(run_cli, tmp_path):
    code, out, err = run_cli("sine", "--hidden", "2", "--archs", "lstm", "--arch-hidden", "2", "--epochs", "2",
                             "--horizon", "2", "--device", "auto", "--out", tmp_path / "s", "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["config"]["device"] == "cpu"
    code, out, err = run_cli("adding", "--archs", "gru", "--lengths", "4", "--hidden", "2", "--max-steps", "2",
                             "--eval-every", "1", "--device", "auto", "--out", tmp_path / "a", "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["config"]["device"] == "cpu"


def test_unknown_engine_for_trend_and_adding(run_cli, tmp_path):
    for cmd in ("trend", "adding"):
        code, _, err = run_cli(cmd, "--engine", "jax", "--out", tmp_path / "x", "--quiet")
        assert code == 2 and "'jax'" in err and err.count("\n") == 1, err
