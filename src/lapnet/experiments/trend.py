"""Notebook Exercise 2, solved: classify a noisy sequence as trending up or down.

The notebook's data and training: 500 training and 100 test sequences of length 20,
slope U(0.05, 0.2) up or U(-0.2, -0.05) down plus N(0, 0.3^2) noise, an LSTM with 32
hidden units and a linear head on the final state, BCEWithLogitsLoss, Adam lr 0.01, 50
full-batch epochs; it expects test accuracy above 0.90. Options beyond the notebook:
another architecture, a bidirectional encoder, and random lengths (packed sequences).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from lapnet.data.synthetic import trend_sequences
from lapnet.errors import LapnetError
from lapnet.experiments.batches import FullBatch
from lapnet.experiments.result import ExperimentResult, stop_if_interrupted
from lapnet.models.classifier import Classifier
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, fit


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

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise LapnetError(f"unknown architecture {self.arch!r}: expected one of {', '.join(ARCHS)}")
        if self.hidden < 1:
            raise LapnetError(f"hidden size must be at least 1, got {self.hidden}")
        if min(self.n_train, self.n_test, self.seq_len, self.epochs) < 1:
            raise LapnetError("n_train, n_test, seq_len and epochs must be at least 1")
        if self.min_len is not None and not 1 <= self.min_len <= self.seq_len:
            raise LapnetError(f"min length must be in [1, {self.seq_len}], got {self.min_len}")


def _tensors(n: int, cfg: TrendConfig, seed: int):
    x, y, lengths = trend_sequences(n, cfg.seq_len, min_len=cfg.min_len, seed=seed)
    return torch.from_numpy(x), torch.from_numpy(y)[:, None], torch.from_numpy(lengths)  # (n,T,1) (n,1) (n,)


def run_trend(cfg: TrendConfig | None = None, *, progress: bool = False) -> ExperimentResult:
    """Train the trend classifier; measure test accuracy after every epoch.

    Returns:
        ExperimentResult with metrics test_accuracy, train_accuracy, test_loss,
        epochs_to_target (first epoch whose test accuracy >= target, or None), reached_target,
        and the per-epoch curves; figures "trend_training" and "trend_examples".
    """
    from lapnet import plots

    cfg = cfg or TrendConfig()
    cfg.validate()
    variable = cfg.min_len is not None
    x_tr, y_tr, len_tr = _tensors(cfg.n_train, cfg, cfg.seed)
    x_te, y_te, len_te = _tensors(cfg.n_test, cfg, cfg.seed + 1)  # a different draw: held out
    torch.manual_seed(cfg.seed)
    model = Classifier(cfg.arch, 1, cfg.hidden, 1, bidirectional=cfg.bidirectional)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def logits(m, x, lengths):
        return m(x, lengths if variable else None)  # packed only when lengths differ

    def accuracy(m, x, y, lengths) -> float:
        return float(((logits(m, x, lengths) > 0).float() == y).float().mean())

    def loss_fn(net, batch, carry):
        xb, yb, lb = batch
        return bce(logits(net, xb, lb), yb), carry, len(xb)

    def evaluate(m):
        return {"val_loss": bce(logits(m, x_te, len_te), y_te), "test_accuracy": accuracy(m, x_te, y_te, len_te),
                "train_accuracy": accuracy(m, x_tr, y_tr, len_tr)}

    model.eval()
    with torch.no_grad():  # the untrained model: about 0.5, a coin flip
        before = accuracy(model, x_te, y_te, len_te)
    model.train()
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="constant", clip=None, seed=cfg.seed, progress=progress)
    result = fit(TorchLearner(model, loss_fn, evaluate, tcfg), FullBatch(x_tr, y_tr, len_tr), tcfg,
                 describe=f"trend {cfg.arch}")
    stop_if_interrupted(result)
    hist = result.history
    test_acc = [h["test_accuracy"] for h in hist]
    reached = [i + 1 for i, a in enumerate(test_acc) if a >= cfg.target]
    model.eval()
    with torch.no_grad():
        prob = torch.sigmoid(logits(model, x_te, len_te))[:, 0].numpy()

    label = f"{cfg.arch.upper()}{' bidirectional' if cfg.bidirectional else ''}, H={cfg.hidden}"
    fig = plots.accuracy_curves({"test set (epoch 0: untrained)": [before, *test_acc]},
                                title=f"Trend classifier ({label}): accuracy per epoch", target=cfg.target)
    fig_ex = plots.trend_examples(x_te[:, :, 0].numpy(), len_te.numpy(), y_te[:, 0].numpy(), prob,
                                  title=f"Test sequences and predicted P(up) ({label})")
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
