"""Notebook Exercise 2, solved: classify a noisy sequence as trending up or down.

The notebook's data and training: 500 training and 100 test sequences of length 20,
slope U(0.05, 0.2) up or U(-0.2, -0.05) down plus N(0, 0.3^2) noise, an LSTM with 32
hidden units and a linear head on the final state, BCEWithLogitsLoss, Adam lr 0.01, 50
full-batch epochs; it expects test accuracy above 0.90. Options beyond the notebook:
another architecture, a bidirectional encoder, random lengths (packed sequences), the
NumPy engine (lapnet.scratch through the same training loop) and the torch device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from lapnet.data.synthetic import trend_sequences
from lapnet.errors import LapnetError
from lapnet.experiments.batches import FullBatch
from lapnet.experiments.numpy_models import NumpySequenceLearner, NumpySequenceModel, bce_with_logits
from lapnet.experiments.result import INTERRUPT_HINT, ExperimentResult, stop_if_interrupted
from lapnet.host import own_torch_state
from lapnet.models.classifier import Classifier
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, check_lr, fit

ENGINES = ("torch", "numpy")


@dataclass
class TrendConfig:
    """Exercise 2's set-up; `min_len` set means variable lengths in [min_len, seq_len]."""

    arch: str = "lstm"
    hidden: int = 32
    n_train: int = 500
    n_test: int = 100
    seq_len: int = 20
    min_len: int | None = None
    bidirectional: bool = False
    epochs: int = 50
    lr: float = 0.01
    target: float = 0.90
    seed: int = 42
    engine: str = "torch"  # "torch" or "numpy" (lapnet.scratch)
    device: str = "cpu"  # torch device; the NumPy engine runs on the CPU

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise LapnetError(f"unknown architecture {self.arch!r}: expected one of {', '.join(ARCHS)}")
        if self.hidden < 1:
            raise LapnetError(f"hidden size must be at least 1, got {self.hidden}")
        if min(self.n_train, self.n_test, self.seq_len, self.epochs) < 1:
            bad = next(f"{flag} must be at least 1, got {v}" for flag, v in (
                ("--train", self.n_train), ("--test", self.n_test), ("--length", self.seq_len),
                ("--epochs", self.epochs)) if v < 1)
            raise LapnetError(bad)
        check_lr(self.lr, "--lr")
        if self.min_len is not None and not 1 <= self.min_len <= self.seq_len:
            raise LapnetError(f"min length must be in [1, {self.seq_len}], got {self.min_len}")
        check_engine(self.engine, self.device)


def check_engine(engine: str, device: str) -> None:
    """One line for an unknown engine, or for the NumPy engine sent to a GPU."""
    if engine not in ENGINES:
        raise LapnetError(f"unknown engine {engine!r}: expected torch or numpy")
    if engine == "numpy" and device != "cpu":
        raise LapnetError(f"--engine numpy runs on the CPU only, not on --device {device}")


def _data(n: int, cfg: TrendConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, lengths = trend_sequences(n, cfg.seq_len, min_len=cfg.min_len, seed=seed)
    return x, y[:, None], lengths  # (n, T, 1) (n, 1) (n,)


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(((logits > 0) == (y > 0.5)).mean())


def build_trend_model(cfg: TrendConfig, data: dict[str, tuple], evaluate: Callable, tcfg: TrainConfig):
    """The classifier on the chosen engine, its learner and batches.

    Args:
        cfg: the experiment's config (arch, hidden, bidirectional, seed, engine, device).
        data: {"train" | "test": (x (n, T, 1), y (n, 1), lengths (n,))} NumPy arrays.
        evaluate: (logits) -> metrics dict, where logits(split) -> ndarray (n, 1).
        tcfg: the training config (lr, clipping) the learner reads.

    Returns:
        (learner, batches, logits): `logits(split)` runs the current model on a split.
    """
    variable = cfg.min_len is not None  # equal lengths: no packing, exactly the notebook's model
    if cfg.engine == "numpy":
        model = NumpySequenceModel(cfg.arch, 1, cfg.hidden, 1, bidirectional=cfg.bidirectional, seed=cfg.seed)

        def logits(split: str) -> np.ndarray:
            x, _, lengths = data[split]
            return model.forward(x, lengths if variable else None)[0]  # (n, 1)

        learner = NumpySequenceLearner(model, "bce_with_logits", lambda m: evaluate(logits), tcfg)
        return learner, FullBatch(*data["train"][: 3 if variable else 2]), logits

    dev = torch.device(cfg.device)
    t = {s: tuple(torch.from_numpy(a).to(dev) for a in arrays) for s, arrays in data.items()}
    torch.manual_seed(cfg.seed)
    model = Classifier(cfg.arch, 1, cfg.hidden, 1, bidirectional=cfg.bidirectional)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def forward(net, x, lengths):
        return net(x, lengths if variable else None)  # packed only when lengths differ

    def loss_fn(net, batch, carry):
        xb, yb, lb = batch
        return bce(forward(net, xb, lb), yb), carry, len(xb)

    def logits(split: str) -> np.ndarray:
        x, _, lengths = t[split]
        with torch.no_grad():
            return forward(model, x, lengths).cpu().numpy()  # (n, 1)

    learner = TorchLearner(model, loss_fn, lambda m: evaluate(logits), tcfg, cfg.device)
    return learner, FullBatch(*t["train"]), logits


@own_torch_state()
def run_trend(cfg: TrendConfig | None = None, *, progress: bool = False) -> ExperimentResult:
    """Train the trend classifier; measure test accuracy after every epoch.

    Returns:
        ExperimentResult with metrics test_accuracy, train_accuracy, test_loss,
        epochs_to_target (first epoch whose test accuracy >= target, or None), reached_target,
        and the per-epoch curves; figures "trend_training" and "trend_examples".

    Ctrl-C (SIGINT, or SIGTERM) stops the model in training at its next step and raises
    KeyboardInterrupt: nothing is returned and nothing written (the figures and metrics.json
    come from `ExperimentResult.save`, once every model has trained).
    """
    from lapnet import plots

    cfg = cfg or TrendConfig()
    cfg.validate()
    data = {"train": _data(cfg.n_train, cfg, cfg.seed), "test": _data(cfg.n_test, cfg, cfg.seed + 1)}  # held out
    y_tr, y_te = data["train"][1], data["test"][1]

    def evaluate(logits) -> dict[str, float]:
        z = logits("test")
        return {"val_loss": bce_with_logits(z, y_te)[0], "test_accuracy": _accuracy(z, y_te),
                "train_accuracy": _accuracy(logits("train"), y_tr)}

    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="constant", clip=None, seed=cfg.seed, progress=progress)
    learner, batches, logits = build_trend_model(cfg, data, evaluate, tcfg)
    before = _accuracy(logits("test"), y_te)  # the untrained model: about 0.5, a coin flip
    engine = " (numpy)" if cfg.engine == "numpy" else ""
    result = fit(learner, batches, tcfg, describe=f"trend {cfg.arch}{engine}", eval_label="test BCE",
                 interrupt_hint=INTERRUPT_HINT)
    stop_if_interrupted(result)
    hist = result.history
    test_acc = [h["test_accuracy"] for h in hist]
    reached = [i + 1 for i, a in enumerate(test_acc) if a >= cfg.target]
    z = logits("test")[:, 0]
    prob = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid
    x_te, _, len_te = data["test"]

    label = (f"{cfg.arch.upper()}{' bidirectional' if cfg.bidirectional else ''}, H={cfg.hidden}"
             f"{', NumPy engine' if cfg.engine == 'numpy' else ''}")
    fig = plots.accuracy_curves({"test set (epoch 0: untrained)": [before, *test_acc]},
                                title=f"Trend classifier ({label}): accuracy per epoch", target=cfg.target)
    fig_ex = plots.trend_examples(x_te[:, :, 0], len_te, y_te[:, 0], prob,
                                  title=f"Test sequences and their predicted P(up) ({label})")
    metrics = {
        "experiment": "trend",
        "config": asdict(cfg),
        "test_accuracy": test_acc[-1],
        "test_accuracy_untrained": before,
        "train_accuracy": hist[-1]["train_accuracy"],
        "test_loss": hist[-1]["val_loss"],
        "target": cfg.target,
        "reached_target": bool(test_acc[-1] >= cfg.target),
        "epochs_to_target": reached[0] if reached else None,
        "curves": {"train_loss": [h["train_loss"] for h in hist], "test_loss": [h["val_loss"] for h in hist],
                   "test_accuracy": test_acc, "train_accuracy": [h["train_accuracy"] for h in hist]},
        "seconds": result.seconds,
    }
    return ExperimentResult("trend", metrics, {"trend_training": fig, "trend_examples": fig_ex})
