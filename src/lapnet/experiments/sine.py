"""Notebook section 6: how hidden size and architecture change a sine forecaster.

The notebook's set-up, unchanged: sin(t) on 200 points over [0, 8*pi], windows of 20
values -> the next value, Adam at lr 0.01, 200 full-batch epochs, MSE. Measured here:
the loss curves (log scale), the final training MSE, and a multi-step forecast that feeds
each prediction back in as the next input, against the true continuation of the wave.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from lapnet.data.synthetic import sine_wave, sine_windows
from lapnet.errors import LapnetError
from lapnet.experiments.batches import FullBatch
from lapnet.experiments.numpy_models import NumpySequenceLearner, NumpySequenceModel
from lapnet.experiments.result import INTERRUPT_HINT, ExperimentResult, stop_if_interrupted
from lapnet.host import own_torch_state
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, check_lr, fit


@dataclass
class SineConfig:
    """The notebook's defaults. `hidden_sizes` are LSTM sizes for the left panel; `archs`
    are compared at `arch_hidden` in the right panel."""

    hidden_sizes: tuple[int, ...] = (2, 8, 32, 128)
    archs: tuple[str, ...] = ("rnn", "lstm", "gru")
    arch_hidden: int = 32
    epochs: int = 200
    lr: float = 0.01
    n_points: int = 200
    window: int = 20
    horizon: int = 100  # forecast steps fed back in, past the end of the training wave
    seed: int = 42
    engine: str = "torch"  # "torch" or "numpy" (lapnet.scratch)
    device: str = "cpu"  # torch device; the NumPy engine runs on the CPU

    def validate(self) -> None:
        if not self.hidden_sizes or not self.archs:
            raise LapnetError("sine: give at least one hidden size and one architecture")
        for flag, sizes in (("--hidden", self.hidden_sizes), ("--arch-hidden", (self.arch_hidden,))):
            for h in sizes:
                if int(h) < 1:
                    raise LapnetError(f"{flag}: hidden size must be at least 1, got {h}")
        for a in self.archs:
            if a not in ARCHS:
                raise LapnetError(f"unknown architecture {a!r}: expected one of {', '.join(ARCHS)}")
        for flag, v in (("--epochs", self.epochs), ("--horizon", self.horizon), ("window", self.window)):
            if v < 1:
                raise LapnetError(f"{flag} must be at least 1, got {v}")
        check_lr(self.lr, "--lr")
        if self.engine not in ("torch", "numpy"):
            raise LapnetError(f"unknown engine {self.engine!r}: expected torch or numpy")
        if self.engine == "numpy" and self.device != "cpu":
            raise LapnetError(f"--engine numpy runs on the CPU only, not on --device {self.device}")
        if self.n_points <= self.window:
            raise LapnetError(f"n_points ({self.n_points}) must exceed the window ({self.window})")


def train_forecaster(arch: str, hidden: int, x: torch.Tensor, y: torch.Tensor, cfg: SineConfig,
                     *, progress: bool = False) -> tuple[Forecaster, list[float]]:
    """Train one forecaster full-batch; returns the model and its per-epoch training MSE
    (the loss of each epoch's batch before that epoch's update, as the notebook records it)."""
    torch.manual_seed(cfg.seed)  # the notebook seeds each model alike
    model = Forecaster(arch, 1, hidden, 1)
    mse = torch.nn.functional.mse_loss

    curve: list[float] = []

    def loss_fn(net, batch, carry):
        xb, yb = batch
        loss = mse(net(xb)[0], yb)
        curve.append(float(loss.detach()))  # full batch: this is the epoch's loss, before its update
        return loss, carry, len(xb)

    def evaluate(m):
        return {"val_loss": mse(m(x)[0], y)}  # no held-out set in the notebook: the fit itself

    # one evaluation at the end: the per-epoch curve comes from the steps themselves
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="constant", clip=None, seed=cfg.seed,
                       eval_every=cfg.epochs, progress=progress)
    stop_if_interrupted(fit(TorchLearner(model, loss_fn, evaluate, tcfg, cfg.device), FullBatch(x, y), tcfg,
                            describe=f"sine {arch} H={hidden}", eval_label="fit MSE",
                            interrupt_hint=INTERRUPT_HINT))
    return model, curve


class NumpyForecaster(NumpySequenceModel):
    """The Forecaster on the NumPy engine (scratch RNN/LSTM/GRU -> last step -> Linear): the
    shared NumpySequenceModel with the interface run_sine uses, `model(x)` -> (pred, state)
    on (N, T, 1) inputs and `rollout(window, steps)`; arrays may be numpy or torch."""

    def __init__(self, arch: str, hidden: int, seed: int):
        super().__init__(arch, 1, hidden, 1, dtype=np.float32, seed=seed)

    def __call__(self, x):
        return torch.from_numpy(self.forward(np.asarray(x, np.float32))[0]), None

    def eval(self) -> "NumpyForecaster":
        return self

    def rollout(self, window, steps: int) -> torch.Tensor:
        """(B, T, 1) last values -> (B, steps, 1), each prediction fed back in (as Forecaster.rollout)."""
        seq = np.asarray(window, dtype=np.float32)
        T = seq.shape[1]
        preds = []
        for _ in range(steps):
            pred, _ = self.forward(seq[:, -T:])  # (B, 1)
            preds.append(pred)
            seq = np.concatenate([seq, pred[:, None, :]], axis=1)  # (B, T + k, 1)
        return torch.from_numpy(np.stack(preds, axis=1))  # (B, steps, 1)


def train_forecaster_numpy(arch: str, hidden: int, x: np.ndarray, y: np.ndarray, cfg: SineConfig,
                           *, progress: bool = False) -> tuple[NumpyForecaster, list[float]]:
    """`train_forecaster` on the NumPy engine, through the same training loop (Adam, MSE, full batch)."""
    from lapnet.scratch import mse_loss

    model = NumpyForecaster(arch, hidden, cfg.seed)
    curve: list[float] = []  # full batch: each epoch's loss, before its update
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="constant", clip=None, seed=cfg.seed,
                       eval_every=cfg.epochs, progress=progress)
    learner = NumpySequenceLearner(model, "mse", lambda m: {"val_loss": float(mse_loss(m.forward(x)[0], y)[0])}, tcfg,
                           on_loss=lambda loss: curve.append(float(loss)))
    stop_if_interrupted(fit(learner, FullBatch(x, y), tcfg,
                            describe=f"sine {arch} H={hidden} (numpy)", eval_label="fit MSE",
                            interrupt_hint=INTERRUPT_HINT))
    return model, curve


@own_torch_state()
def run_sine(cfg: SineConfig | None = None, *, progress: bool = False) -> ExperimentResult:
    """Train every configured forecaster and measure it.

    Returns:
        ExperimentResult with metrics {"config", "hidden_size": {H: {...}}, "architecture":
        {arch: {...}}} where each entry holds final_mse (the trained model's), min_mse (the
        lowest over the run: every epoch's pre-update loss and the final one, so never above
        final_mse), forecast_mse and the loss curve (one pre-update loss per epoch); figures
        "loss_curves" and "forecast".

    Ctrl-C (SIGINT, or SIGTERM) stops the model in training at its next step and raises
    KeyboardInterrupt: nothing is returned and nothing written (the figures and metrics.json
    come from `ExperimentResult.save`, once every model has trained).
    """
    from lapnet import plots

    cfg = cfg or SineConfig()
    cfg.validate()
    t, wave = sine_wave(cfg.n_points)
    xs, ys = sine_windows(wave, cfg.window)
    x, y = torch.from_numpy(xs).to(cfg.device), torch.from_numpy(ys).to(cfg.device)  # (N, window, 1), (N, 1)
    dt = float(t[1] - t[0])
    t_future = t[-1] + dt * np.arange(1, cfg.horizon + 1)  # the wave's true continuation
    future = np.sin(t_future)
    last_window = torch.from_numpy(wave[-cfg.window:]).reshape(1, cfg.window, 1).to(cfg.device)  # (1, window, 1)

    def measure(arch: str, hidden: int) -> dict:
        train = train_forecaster_numpy if cfg.engine == "numpy" else train_forecaster
        model, curve = train(arch, hidden, x, y, cfg, progress=progress)
        model.eval()
        with torch.no_grad():
            final = float(torch.nn.functional.mse_loss(model(x)[0], y))
        pred = model.rollout(last_window, cfg.horizon)[0, :, 0].cpu().numpy()  # (horizon,)
        # the curve holds each epoch's loss BEFORE its update, so the weights after the last
        # update are scored only by `final`: the lowest MSE seen includes it
        return {"arch": arch, "hidden_size": hidden, "final_mse": final, "min_mse": float(min(*curve, final)),
                "forecast_mse": float(np.mean((pred - future) ** 2)), "loss_curve": curve,
                "forecast": pred.tolist()}

    by_hidden = {str(h): measure("lstm", int(h)) for h in cfg.hidden_sizes}
    by_arch = {}
    for a in cfg.archs:
        reuse = by_hidden.get(str(cfg.arch_hidden)) if a == "lstm" else None  # same seed, same model
        by_arch[a] = reuse if reuse is not None else measure(a, cfg.arch_hidden)

    engine = "NumPy engine" if cfg.engine == "numpy" else "torch engine"
    fig_loss = plots.loss_curves_two_panel(
        {f"hidden_size={h}": r["loss_curve"] for h, r in by_hidden.items()},
        {a.upper(): r["loss_curve"] for a, r in by_arch.items()},
        left_title=f"Effect of hidden size (LSTM, {engine})",
        right_title=f"{' vs '.join(a.upper() for a in cfg.archs)} (hidden_size={cfg.arch_hidden}, {engine})",
        ylabel="training MSE (full batch)",
    )
    shown = {f"{a.upper()} (H={cfg.arch_hidden})": r["forecast"] for a, r in by_arch.items()}
    smallest = min(cfg.hidden_sizes)
    if smallest != cfg.arch_hidden:  # the capacity panel's weakest model, for contrast
        shown[f"LSTM (H={smallest})"] = by_hidden[str(smallest)]["forecast"]
    fig_fc = plots.forecast_plot(
        t, wave, t_future, future, shown,
        title=f"Multi-step forecast: {cfg.horizon} steps, each prediction fed back in ({engine})",
    )
    metrics = {
        "experiment": "sine",
        "config": asdict(cfg),
        "hidden_size": by_hidden,
        "architecture": by_arch,
        "table": [{"model": f"{r['arch'].upper()} H={r['hidden_size']}", "final_mse": r["final_mse"],
                   "forecast_mse": r["forecast_mse"]}
                  for r in [*by_hidden.values(), *[v for v in by_arch.values() if v not in by_hidden.values()]]],
    }
    return ExperimentResult("sine", metrics, {"loss_curves": fig_loss, "forecast": fig_fc})
