"""`RaceTrainConfig`: how `lapnet race train` trains (`training.train_race`), saved in the run's
config.json, and `validate`, which refuses a bad setting before anything is read or written."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lapnet.errors import LapnetError
from lapnet.models.recurrent import ARCHS
from lapnet.race.models import HEADS, HORIZON_WEIGHT_POWER
from lapnet.race.pit import PIT_L2


@dataclass
class RaceTrainConfig:
    """How `train_race` trains (saved in config.json)."""

    hidden_size: int = 64  # chosen over 32 by the folds' inner validation races (benchmarks/race_real.py)
    num_layers: int = 1
    arch: str = "gru"
    dropout: float = 0.3  # 15 races are few: dropout and weight decay keep the net from learning each circuit
    epochs: int = 80
    # a wall-clock budget for the whole of train_race: each net still to train (pretraining, members,
    # taggers) gets an equal share of what is left; loading, simulation and the pit model's fit count too
    minutes: float | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_size: int = 32
    patience: int | None = 20  # the pit call keeps improving after the lap-time loss flattens
    seed: int = 0
    pit_weight: float = 1.0  # the net's own pit head; unused (weight 0) when the PitModel makes the pit call
    members: int = 3  # an ensemble of nets, seeds seed, seed+1, ..., each early-stopped on its own validation race
    val_races: int = 1  # races held out for early stopping (0: a share of drivers instead); 3 was tried: worse on 4 of 5 folds
    pretrain_sim: int = 0  # simulated races to pretrain on before the real ones
    pretrain_epochs: int = 20
    tagger: bool = True  # train the bidirectional phase tagger when Phase labels exist
    # without Phase labels in the training laps (real races): learn the push / conserve / pit-window calls
    # from this many simulated races calibrated to the training laps (a post-race and a live tagger); 0: none
    phase_sim: int = 20
    linear_skip: bool = True  # add a linear map of the lap's features to the forecast (wide and deep; chosen by inner validation)
    pit_caller: bool = True  # the pit call from a separate per-lap logistic model (lapnet.race.pit.PitModel), not the net's pit head
    # the forecast's distribution (RaceModelConfig.head): "laplace" chosen over "gaussian" by the folds'
    # inner validation races (h1 0.4166 vs 0.4314, better on all 5); its 90% interval is also the calibrated one
    head: str = "laplace"
    mean_loss: str = "l1"  # the location's loss: "l1", or "nll" (the joint Laplace NLL, Laplace head only; inner validation 0.4229: not kept)
    scale_weight: float = 0.1  # weight of the scale's NLL in the loss (with mean_loss "l1"; inner validation 0.4166 vs 0.4206 at 0.3, 0.4187 at 0.03)
    # the forecast loss weighs horizon k by 1 / k**horizon_power: 2 favours the next lap (chosen on the real
    # races: 1 and 0.5 were less good at h1); 0 weighs the 10-lap horizon like the next lap
    horizon_power: float = HORIZON_WEIGHT_POWER
    # the weight in the forecast loss of origins whose stint has no Scored lap yet (an out-lap, the start, a
    # restart; `race_loss`): 0 leaves them out; out of fold 1 cost the Scored laps' next-lap gain 1.5 points
    # (-9.3% against -10.8% vs persistence), 0.1 cost 0.5 (benchmarks/race_real.py --fresh-weight W)
    fresh_weight: float = 0.0
    # the pit model's L2 strengths; the one with the best pooled AUC over leave-races-out folds of the training races is kept
    pit_l2: tuple = PIT_L2
    expected_gap: bool = True  # fit an ExpectedGap (the mean lap above the median forecast) after training; needs pit_caller
    expected_gap_check: bool = True  # keep it only if its 10-lap total beats the median's (squared error) on the validation race(s)
    expected_ridge: tuple = (1e-1, 1e-2, 1e-3, 1e-4)  # its L2 strengths per lap; the best validation-race MSE is kept
    # fit a FreshStart (the forecast from laps whose stint has no Scored lap yet) after training; needs pit_caller.
    # Kept only if leave-races-out folds inside the training races score it better than the nets on those laps
    fresh_start: bool = True
    fresh_start_check: bool = True  # keep it only if those folds beat the nets there (False: keep it whenever fitted)
    fresh_ridge: tuple = (1e-1, 1e-2, 1e-3, 1e-4)  # its L2 strengths per lap; the folds' best MAE is kept
    progress: bool = True
    device: str = "cpu"  # where the nets train ("cuda" rarely pays for nets this small); everything after runs on the CPU

    def validate(self) -> None:
        """Refuse a config `train_race` cannot train with, before anything is read or written.

        `val_races` larger than the races at hand is not an error: of the races with Scored laps
        `train_race` holds out at most one, or a quarter of them (rounded down) when there are 8
        or more (15% of the drivers below 3 races), and warns when that is fewer than the races
        asked for (above 1).

        Raises:
            LapnetError: one line naming every bad field and its value
                ("hidden_size must be at least 1, got 0; lr must be a positive number, got -1.0").
        """
        problems = []
        for name, low in (("hidden_size", 1), ("num_layers", 1), ("epochs", 1), ("batch_size", 1), ("members", 1),
                          ("pretrain_epochs", 1), ("seed", 0), ("val_races", 0), ("pretrain_sim", 0), ("phase_sim", 0)):
            problems.append(_check_int(name, getattr(self, name), low))
        if self.patience is not None:
            problems.append(_check_int("patience", self.patience, 1, none_ok=True))
        from lapnet.train import check_lr

        try:
            check_lr(self.lr)  # float32's normal range, the rule of every command
        except LapnetError as e:
            problems.append(str(e))
        for name in (("minutes",) if self.minutes is not None else ()):
            v = getattr(self, name)
            if not (_is_real(v) and math.isfinite(v) and v > 0):
                problems.append(f"{name} must be a positive number{' or None' if name == 'minutes' else ''}, got {v!r}")
        for name in ("weight_decay", "pit_weight", "scale_weight", "horizon_power", "fresh_weight"):
            v = getattr(self, name)
            if not (_is_real(v) and math.isfinite(v) and v >= 0):
                problems.append(f"{name} must be a number >= 0, got {v!r}")
        if not (_is_real(self.dropout) and 0.0 <= self.dropout < 1.0):
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.arch, str) and self.arch.lower() in ARCHS):
            problems.append(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.head not in HEADS:
            problems.append(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.mean_loss not in ("l1", "nll"):
            problems.append(f"mean_loss must be 'l1' or 'nll', got {self.mean_loss!r}")
        elif self.mean_loss == "nll" and self.head != "laplace":
            problems.append(f"mean_loss 'nll' needs head 'laplace', got head {self.head!r}")
        for name in ("pit_l2", "expected_ridge", "fresh_ridge"):
            v = getattr(self, name)
            if not (isinstance(v, (tuple, list)) and v and all(_is_real(x) and math.isfinite(x) and x > 0 for x in v)):
                problems.append(f"{name} must be a non-empty tuple of positive numbers, got {v!r}")
        for name in ("tagger", "linear_skip", "pit_caller", "expected_gap", "expected_gap_check", "fresh_start",
                     "fresh_start_check", "progress"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                problems.append(f"{name} must be True or False, got {getattr(self, name)!r}")
        try:
            dev = torch.device(self.device)
            if dev.type not in ("cpu", "cuda"):
                problems.append(f"device must be 'cpu' or 'cuda', got {self.device!r}")
            elif dev.type == "cuda" and not torch.cuda.is_available():
                problems.append(f"device {self.device!r}: CUDA is not available here")
        except (RuntimeError, TypeError):
            problems.append(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        problems = [p for p in problems if p]
        if problems:
            raise LapnetError("RaceTrainConfig: " + "; ".join(problems))


def _is_real(v: Any) -> bool:
    """A real number (int or float, numpy's too), not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _check_int(name: str, v: Any, low: int, none_ok: bool = False) -> str | None:
    """The problem with an integer field that must be at least `low`, or None."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
        return f"{name} must be a whole number{' or None' if none_ok else ''}, got {v!r}"
    if v < low:
        return f"{name} must be at least {low}, got {v}"
    return None
