"""The adding problem (Hochreiter and Schmidhuber 1997; Le, Jaitly and Hinton 2015),
the notebook's vanishing-gradient claim put on a real task.

Each input step holds a U(0, 1) value and a marker; two steps are marked and the target
is the sum of their values, read after the last step. Predicting the mean 1.0 always
scores the variance 2/12 = 0.167 (the baseline); a model "solves" the task when its test
MSE falls below 0.01, i.e. it really carried the two marked values to the end.

What is measured, per architecture and length T: test MSE against training steps, and
the number of steps (batches) needed to solve, within a step budget. Training is Adam
with global-norm clipping, fresh random batches every step (nothing to overfit). Note
what the measurement shows: with Adam and clipping a tanh RNN does learn the task at
moderate T, only more slowly than the gated cells and at a smaller learning rate
(measured with lr 0.001: T=50 in 9000 steps against the LSTM's 3300, T=100 in 15200
against 4200); a short budget does not show that. Long runs: benchmarks/adding.py.

`engine="numpy"` trains the same model on lapnet.scratch (NumpySequenceModel) through
the same training loop; `device` picks the torch device.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from lapnet.data.synthetic import ADDING_BASELINE_MSE, adding_problem
from lapnet.errors import LapnetError
from lapnet.experiments.batches import Fresh
from lapnet.experiments.numpy_models import NumpySequenceLearner, NumpySequenceModel
from lapnet.experiments.result import INTERRUPT_HINT, ExperimentResult, stop_if_interrupted
from lapnet.experiments.trend import check_engine
from lapnet.host import own_torch_state
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, check_lr, fit

SOLVED_MSE = 0.01


@dataclass
class AddingConfig:
    """Sizes and budgets. `max_steps` is the per-run budget of training steps."""

    archs: tuple[str, ...] = ("rnn", "lstm", "gru")
    lengths: tuple[int, ...] = (50, 100, 200)
    hidden: int = 32
    batch_size: int = 64
    max_steps: int = 1200
    eval_every: int = 50
    n_test: int = 500
    lr: float = 0.01
    clip: float | None = 1.0  # global gradient-norm clip; None: off (--clip 0)
    solved_mse: float = SOLVED_MSE
    stop_when_solved: bool = True
    seed: int = 0
    engine: str = "torch"  # "torch" or "numpy" (lapnet.scratch)
    device: str = "cpu"  # torch device; the NumPy engine runs on the CPU

    def validate(self) -> None:
        if not self.archs or not self.lengths:
            raise LapnetError("adding: give at least one architecture and one length")
        for a in self.archs:
            if a not in ARCHS:
                raise LapnetError(f"unknown architecture {a!r}: expected one of {', '.join(ARCHS)}")
        if self.hidden < 1:
            raise LapnetError(f"--hidden must be at least 1, got {self.hidden}")
        if min(self.lengths) < 2:
            raise LapnetError(f"--lengths: adding problem lengths must be at least 2, got {min(self.lengths)}")
        for flag, v in (("--batch", self.batch_size), ("--max-steps", self.max_steps),
                        ("--eval-every", self.eval_every), ("n_test", self.n_test)):
            if v < 1:
                raise LapnetError(f"{flag} must be at least 1, got {v}")
        check_lr(self.lr, "--lr")
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and not isinstance(self.clip, bool)
                                          and math.isfinite(self.clip) and self.clip > 0):
            raise LapnetError(f"--clip must be a positive number, or 0 (off), got {self.clip!r}")
        check_engine(self.engine, self.device)


def train_adding(arch: str, T: int, cfg: AddingConfig, *, progress: bool = False,
                 model: Forecaster | NumpySequenceModel | None = None):
    """Train one model on the adding problem at length T (Adam + global-norm clipping).

    Args:
        arch: "rnn", "lstm" or "gru".
        T: sequence length.
        cfg: sizes, budget, engine and device.
        progress: show the progress bar.
        model: continue training this model (a Forecaster, or a NumpySequenceModel with
            engine "numpy") instead of a fresh one.

    Returns:
        the model and {"steps": [...], "test_mse": [...], "steps_to_solve": int | None,
        "final_test_mse": float, "seconds": float, "trained_steps": int}.
    """
    x_te, y_te = adding_problem(cfg.n_test, T, seed=[cfg.seed, 7, T])  # held out: (n, T, 2), (n, 1)
    numpy_engine = cfg.engine == "numpy"
    if model is None and numpy_engine:
        model = NumpySequenceModel(arch, 2, cfg.hidden, 1, seed=cfg.seed)
    elif model is None:
        torch.manual_seed(cfg.seed)
        model = Forecaster(arch, 2, cfg.hidden, 1)
    solved: list[int] = []
    curve: list[tuple[int, float]] = []
    evals = [0]

    def record(test: float) -> dict[str, float]:
        evals[0] += 1
        curve.append((evals[0] * cfg.eval_every, test))
        if test < cfg.solved_mse and not solved:
            solved.append(evals[0] * cfg.eval_every)
            if cfg.stop_when_solved:
                # the rest of the budget would add nothing: fit reads max_steps after each step,
                # so this ends training right after this evaluation, through fit's own ending
                # (its progress bar then shows this final test MSE, not the previous one)
                tcfg.max_steps = solved[0]
        return {"val_loss": test}

    tcfg = TrainConfig(epochs=1, max_steps=cfg.max_steps, lr=cfg.lr, schedule="constant", clip=cfg.clip,
                       eval_every=cfg.eval_every, seed=cfg.seed, progress=progress)
    if numpy_engine:
        from lapnet.scratch import mse_loss

        learner = NumpySequenceLearner(model, "mse", lambda m: record(mse_loss(m.forward(x_te)[0], y_te)[0]), tcfg)
    else:
        mse = torch.nn.functional.mse_loss
        xt, yt = torch.from_numpy(x_te).to(cfg.device), torch.from_numpy(y_te).to(cfg.device)

        def loss_fn(net, batch, carry):
            xb, yb = batch
            return mse(net(xb)[0], yb), carry, len(xb)

        learner = TorchLearner(model, loss_fn, lambda m: record(float(mse(m(xt)[0], yt))), tcfg, cfg.device)
    make = lambda n, rng: adding_problem(n, T, seed=rng)  # noqa: E731
    engine = " (numpy)" if numpy_engine else ""
    t0 = time.perf_counter()
    result = fit(learner, Fresh(make, cfg.batch_size, cfg.max_steps, cfg.seed), tcfg,
                 describe=f"adding {arch} T={T}{engine}", eval_label="test MSE", interrupt_hint=INTERRUPT_HINT)
    stop_if_interrupted(result)
    steps = result.steps
    if not numpy_engine:
        model.eval()
    if curve and curve[-1][0] != steps:  # fit's final evaluation may fall between intervals
        curve[-1] = (steps, curve[-1][1])
    return model, {"steps": [s for s, _ in curve], "test_mse": [v for _, v in curve],
                   "steps_to_solve": solved[0] if solved else None, "final_test_mse": curve[-1][1],
                   "seconds": time.perf_counter() - t0, "trained_steps": steps}


@own_torch_state()
def run_adding(cfg: AddingConfig | None = None, *, progress: bool = False) -> ExperimentResult:
    """Every architecture at every length: MSE curves and steps-to-solve.

    Returns:
        ExperimentResult; metrics["runs"][arch][T] holds steps_to_solve (None = not solved
        within max_steps), final_test_mse, the test-MSE curve and seconds; metrics["table"]
        one row per (arch, T); figures "adding_mse" and "adding_steps".

    Ctrl-C (SIGINT, or SIGTERM) stops the model in training at its next step and raises
    KeyboardInterrupt: nothing is returned and nothing written (the figures and metrics.json
    come from `ExperimentResult.save`, once every model has trained).
    """
    cfg = cfg or AddingConfig()
    cfg.validate()
    runs: dict[str, dict[str, dict]] = {}
    for arch in cfg.archs:
        runs[arch] = {}
        for T in cfg.lengths:
            _, r = train_adding(arch, T, cfg, progress=progress)
            runs[arch][str(T)] = r
    return assemble(runs, cfg)


def assemble(runs: dict[str, dict[str, dict]], cfg: AddingConfig) -> ExperimentResult:
    """Table, figures and metrics from finished runs ({arch: {str(T): train_adding's dict}})."""
    from lapnet import plots

    table = [{"arch": a.upper(), "T": int(T), "steps_to_solve": r["steps_to_solve"],
              "final_test_mse": r["final_test_mse"], "seconds": round(r["seconds"], 1)}
             for a, by_T in runs.items() for T, r in by_T.items()]
    fig_mse = plots.adding_curves(runs, baseline=ADDING_BASELINE_MSE, solved=cfg.solved_mse)
    fig_steps = plots.steps_to_solve({a.upper(): {int(T): r["steps_to_solve"] for T, r in by_T.items()}
                                      for a, by_T in runs.items()}, budget=cfg.max_steps,
                                     title=f"Steps to solve the adding problem (test MSE < {cfg.solved_mse})"
                                           + (", NumPy engine" if cfg.engine == "numpy" else ""))
    metrics = {"experiment": "adding", "config": asdict(cfg), "baseline_mse": ADDING_BASELINE_MSE,
               "solved_mse": cfg.solved_mse, "runs": runs, "table": table}
    return ExperimentResult("adding", metrics, {"adding_mse": fig_mse, "adding_steps": fig_steps})
