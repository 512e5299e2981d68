"""Train, predict and evaluate race models: the library behind `lapnet race train|predict|eval`.

    metrics = train_race(["2023_miami_R.csv", ...], "runs/race")
    table, metrics = predict_race("runs/race", "2023_italian_R.csv", out="runs/race/monza")
    metrics = eval_race("runs/race", ["2023_italian_R.csv"])

Every lap is context for the model; the loss and the metrics count only Scored laps (see
`lapnet.race.clean`). A run directory holds model.safetensors (the forecaster), config.json
(features, normalisation, architecture, masks), metrics.json, log.jsonl, and tagger/ (the
bidirectional phase tagger) when the training laps carried Phase labels (simulated races).
While `train_race` works on a directory it holds training.incomplete, which `load_run`
refuses: an interrupted or failed run never passes for a finished one.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lapnet import distributed
from lapnet.checkpoint import check_weights, load_tensors, read_json, write_json
from lapnet.errors import CheckpointError, LapnetError
from lapnet.race.baselines import BASELINES, baseline_forecasts, fresh_baselines
from lapnet.race.schema import WET_COMPOUNDS
from lapnet.race.features import (
    COMPOUNDS,
    FEATURES,
    HORIZONS,
    NET_FEATURES,
    PHASES,
    PIT_AHEAD,
    PIT_EXTRA,
    RACE_SECONDS,
    REF_LAPS,
    Sequences,
    build_sequences,
    check_features,
)
from lapnet.race.metrics import (MASKS, REPORT_HORIZONS, coverage, eval_mask, forecast_report, macro_f1, phase_checks, pit_report, roc_auc,
                                 stint_trend_report, totals_report)
from lapnet.models.recurrent import ARCHS
from lapnet.race.models import (HEADS, HORIZON_WEIGHT_POWER, INTERVAL90, ExpectedGap, FreshStart, RaceEnsemble, RaceModelConfig, RaceNet,
                                WithPitCaller, race_loss)
from lapnet.race.outputs import (MAX_FIGURES, PREDICT_COMMAND, PREDICT_PNG_MARK, check_predict_out, earlier_predict_files,
                                 forecast_figure_name, stale_staging)
from lapnet.race.pit import PIT_L2, PitModel

PIT_EVAL_RULE = "every lap after which the driver has another lap (in- and out-laps, neutralised laps included); label: an in-lap among the next 3 laps"
SCORED_RULE = ("Scored = timed, IsAccurate, not deleted, no SC/VSC/red (TrackStatus 4-7), not an in-, out- or lap-1, "
               "not a restart after a red flag (laps up to the first timed one), dry compound")
FRESH_UNRECORDED = ("not recorded (a run trained before fresh_weight was a setting: such runs left these origins "
                    "out, but for those trained on 2026-11-27 before race_loss(fresh_weight=0), which weighed them 1)")


def fresh_rule(fresh_weight: float | None) -> str:
    """How the forecast loss treats origins whose stint has no Scored lap yet (`race_loss`'s
    fresh_weight; None: a run that did not record it)."""
    if fresh_weight is None:
        return "origins whose stint has no Scored lap yet (out-laps, the start, restarts): " + FRESH_UNRECORDED
    if not fresh_weight:
        return ("origins whose stint has no Scored lap yet (out-laps, the start, restarts) are left out of the loss "
                "(fresh_weight 0)")
    return (f"origins whose stint has no Scored lap yet (out-laps, the start, restarts) weigh {fresh_weight:g} in the "
            "location's loss (fresh_weight; the scale's NLL counts them in full)")


def masks_record(loss: str, fresh_weight: float | None) -> dict[str, str]:
    """metrics.json's and config.json's "masks": the loss's rule (`loss`, `fresh_rule`), the
    pairs every metrics block counts (`MASKS`, as this code scores them) and the pit call's laps."""
    return {"loss": loss, "loss_fresh": fresh_rule(fresh_weight), **{f"metrics_{k}": v for k, v in MASKS.items()},
            "pit_call": PIT_EVAL_RULE}


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


# ---------------------------------------------------------------------------------------
# data


def load_laps(sources: Any) -> tuple[pd.DataFrame, Any]:
    """Read and clean lap tables: paths, a DataFrame or a FastF1 Laps (one or several).

    Raises:
        LapnetError: unreadable tables, a dict or another type that is none of these
            (`io.as_sources`), or no Scored (green, accurate) lap at all.
    """
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import as_sources, read_laps, read_many

    if isinstance(sources, (str, Path, pd.DataFrame)):
        df = read_laps(sources)
    else:
        sources = as_sources(sources)  # a dict is refused, not read as its keys
        if not sources:
            raise LapnetError("no lap tables given")
        df = read_many(sources)
    laps, report = clean_laps(df)
    if len(laps) == 0 or not laps["Scored"].any():
        raise LapnetError("no usable green laps: every lap is missing a time, inaccurate, neutralised, wet, or an in/out-lap")
    return laps, report


def race_fingerprints(laps: pd.DataFrame) -> dict[str, str]:
    """Race -> a short hash of its drivers' lap times: the same race under another file name
    (or a simulated race of another seed under the same name) is told apart by its laps."""
    import hashlib

    out = {}
    for race, g in laps.groupby("Race", sort=True):
        key = g.sort_values(["Driver", "LapNumber"])[["Driver", "LapNumber", "LapTime"]]
        text = key.assign(LapTime=key["LapTime"].round(3)).to_csv(index=False)
        out[str(race)] = hashlib.sha1(text.encode()).hexdigest()[:16]
    return out


def _tensors(seq: Sequences, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """The torch batch of sequences `idx`, trimmed to their longest length."""
    T = int(seq.lengths[idx].max())
    return {
        "x": torch.from_numpy(seq.x[idx, :T]),  # (B, T, D)
        "lengths": torch.from_numpy(seq.lengths[idx]),  # (B,)
        "target": torch.from_numpy(seq.target[idx, :T]),  # (B, T, K)
        "target_mask": torch.from_numpy(seq.target_mask[idx, :T]),
        "has_base": torch.from_numpy(np.isfinite(seq.base[idx, :T])),  # (B, T) the stint has a Scored lap
        "pit": torch.from_numpy(seq.pit[idx, :T]),  # (B, T)
        "pit_mask": torch.from_numpy(seq.pit_mask[idx, :T]),
        "phase": torch.from_numpy(seq.phase[idx, :T]),
        "phase_mask": torch.from_numpy(seq.phase_mask[idx, :T]),
    }


class SeqBatches:
    """Shuffled mini-batches of whole driver sequences; the same order for the same seed and epoch."""

    def __init__(self, seq: Sequences, idx: np.ndarray, batch_size: int, seed: int):
        self.seq, self.idx, self.bs, self.seed = seq, np.asarray(idx), max(1, int(batch_size)), seed

    def steps_per_epoch(self) -> int:
        return int(np.ceil(len(self.idx) / self.bs))

    def epoch(self, e: int):
        order = np.random.default_rng(self.seed * 100003 + e).permutation(self.idx)
        for i in range(0, len(order), self.bs):
            yield _tensors(self.seq, order[i : i + self.bs])


def _splits_races(seq: Sequences, val_races: int) -> bool:
    """True when `_split` holds out whole races, False when a share of the drivers."""
    # only races with something to score can judge early stopping
    return val_races > 0 and len({k[0] for i, k in enumerate(seq.keys) if seq.target_mask[i].any()}) >= 3


def _held_out_note(seq: Sequences, val_races: int) -> str | None:
    """A warning when `_split` holds out fewer races than `val_races` asks for, when it asks for
    several (None otherwise: the default of 1 falls back to drivers below 3 races as documented,
    and metrics.json's validation_label says which was held out)."""
    if val_races <= 1:
        return None
    n = len({k[0] for i, k in enumerate(seq.keys) if seq.target_mask[i].any()})
    if not _splits_races(seq, val_races):
        return (f"val_races {val_races}: only {n} race(s) with Scored laps (3 needed to hold out whole races): "
                "about 15% of the drivers are held out for early stopping instead")
    used = min(val_races, max(1, n // 4))
    if used < val_races:
        return (f"val_races {val_races}: {used} of the {n} races with Scored laps held out for early stopping "
                "(at most one race, or a quarter of them rounded down when there are 8 or more)")
    return None


def _split(seq: Sequences, val_races: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole races for early stopping (at most `val_races`: one race, or a quarter of them rounded down
    when there are 8 or more; 15% of drivers when there are < 3 races)."""
    races = sorted({k[0] for i, k in enumerate(seq.keys) if seq.target_mask[i].any()})
    rng = np.random.default_rng(seed)
    all_idx = np.arange(len(seq.keys))
    if _splits_races(seq, val_races):
        n_val = min(val_races, max(1, len(races) // 4))  # one race, or a quarter (rounded down) from 8 races on
        held = set(rng.choice(races, size=n_val, replace=False).tolist())
        val = np.array([i for i, k in enumerate(seq.keys) if k[0] in held])
    else:
        val = rng.choice(all_idx, size=max(1, int(round(0.15 * len(all_idx)))), replace=False)
    train = np.setdiff1d(all_idx, val)
    if len(train) == 0:
        train = val
    return train, val


def _loss_kwargs(cfg: RaceTrainConfig, head: str, pit_weight: float, forecast: bool) -> dict:
    """`race_loss`'s arguments for a net with this head trained with `cfg` (the head comes from the
    net's config, not cfg: a tagger or an old net may differ; under torchrun the net is a DDP wrapper)."""
    return {"head": head, "pit_weight": pit_weight, "phase_weight": 1.0, "forecast": forecast, "mean_loss": cfg.mean_loss,
            "scale_weight": cfg.scale_weight, "horizon_power": cfg.horizon_power, "fresh_weight": cfg.fresh_weight}


def _forecast_loss_fn(loss_kw: dict):
    def loss_fn(net, batch, carry):
        out, _ = net(batch["x"], batch["lengths"])
        return race_loss(out, batch, **loss_kw), None, int(batch["lengths"].sum())

    return loss_fn


def _eval_fn(seq: Sequences, idx: np.ndarray, loss_kw: dict):
    batch = _tensors(seq, idx)
    forecast = loss_kw["forecast"]

    def evaluate(model):
        dev = next(model.parameters()).device
        b = {k: v.to(dev) for k, v in batch.items()}  # no copy on the CPU
        out, _ = model(b["x"], b["lengths"])
        metrics = {"val_loss": float(race_loss(out, b, **loss_kw))}
        m = b["target_mask"][:, :, 0] & b["has_base"]  # origins the forecast starts from a Scored lap (as before 2026-11-27)
        if forecast and m.any():
            metrics["val_h1_abs_pct"] = float((out["mean"][:, :, 0][m] - b["target"][:, :, 0][m]).abs().mean())
        return metrics

    return evaluate


UNFINISHED = "training.incomplete"  # in a run directory while `train_race` works on it: `load_run` refuses it
INTERRUPT_HINT = "this unfinished run cannot be continued: train again with --force to overwrite it"
MIN_NET_MINUTES = 1e-4  # a net whose share of --minutes is used up still takes one step and one evaluation


class _Budget:
    """`--minutes` for the whole of `train_race`: each net still to train gets an equal share of
    the time left (what the nets before it did not use, minus simulation and fitting between them)."""

    def __init__(self, minutes: float | None, nets: int, start: float | None = None):
        start = time.perf_counter() if start is None else start  # the command's start: loading counts too
        self.deadline = None if minutes is None else start + 60.0 * minutes
        self.left = max(int(nets), 1)
        self.given: list[float] = []  # the minutes handed to each net, in order (metrics.json: train.minutes_per_net)

    def next(self) -> float | None:
        """Minutes for the next net (None: no budget)."""
        if self.deadline is None:
            return None
        share = max(self.deadline - time.perf_counter(), 0.0) / 60.0 / self.left
        self.left = max(self.left - 1, 1)
        self.given.append(round(max(share, MIN_NET_MINUTES), 6))
        return self.given[-1]


def _fit(model: RaceNet, seq: Sequences, train_idx, val_idx, cfg: RaceTrainConfig, out: Path, *, epochs: int,
         meta: dict, forecast: bool = True, describe: str = "race", budget: _Budget | None = None) -> Any:
    """Train `model` with the shared loop; leaves the best (validation) weights in `model`.

    `budget`: this net's share of --minutes (None: cfg.minutes for this net alone).

    Raises:
        KeyboardInterrupt: the fit was interrupted (Ctrl-C): the whole `race train` stops, no
            further net is trained and the run stays marked unfinished.
    """
    from lapnet.train import TorchLearner, TrainConfig, TrainingDiverged, fit

    minutes = budget.next() if budget is not None else cfg.minutes
    tcfg = TrainConfig(epochs=epochs, minutes=minutes, lr=cfg.lr, weight_decay=cfg.weight_decay, clip=1.0,
                       patience=cfg.patience, seed=cfg.seed, progress=cfg.progress, warmup_steps=10)
    torch.manual_seed(cfg.seed)
    # with a PitModel the net's pit head is never read: it must neither take capacity nor steer early stopping
    pit_weight = 0.0 if cfg.pit_caller else cfg.pit_weight
    loss_kw = _loss_kwargs(cfg, model.cfg.head, pit_weight, forecast)
    learner = TorchLearner(model, _forecast_loss_fn(loss_kw), _eval_fn(seq, val_idx, loss_kw), tcfg, device=cfg.device, find_unused_parameters=True)  # the pit and phase heads may sit idle
    try:
        result = fit(learner, SeqBatches(seq, train_idx, cfg.batch_size, cfg.seed), tcfg, out=out, meta=meta,
                     describe=describe, interrupt_hint=INTERRUPT_HINT)
    except TrainingDiverged as e:
        # fit keeps the last good checkpoint for a resume, which a race run never has: the run
        # stays marked unfinished (every command refuses it) and the resume state goes
        if distributed.rank() == 0:
            (out / "last.safetensors").unlink(missing_ok=True)
        what = str(e).split("; stopped", 1)[0]
        raise TrainingDiverged(f"{what}: stopped; a race run cannot be resumed, so {out} is left unfinished: train "
                               f"again with --force and a lower --lr (this one {cfg.lr:g})", step=e.step) from None
    if result.stopped == "interrupted":  # one Ctrl-C stops the command, not just this net
        raise KeyboardInterrupt
    distributed.barrier()  # under torchrun rank 0 wrote the best weights; the other ranks read them once it is done
    arrays, _ = load_tensors(out / "model.safetensors")
    distributed.barrier()
    if distributed.rank() == 0:  # the resume state: a race run is never resumed (retrain with --force)
        (out / "last.safetensors").unlink(missing_ok=True)
    model.to("cpu")  # the pit model, the expected gap and every prediction run on the CPU
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return result


# ---------------------------------------------------------------------------------------
# train


def train_race(sources: Any, out: str | Path, cfg: RaceTrainConfig | None = None, *, sim_laps: pd.DataFrame | None = None) -> dict:
    """Train the forecaster / pit caller (and the phase tagger when labels exist) on lap tables.

    Args:
        sources: lap tables (paths, DataFrames, FastF1 Laps) or one of them.
        out: the run directory (created; the caller checks it may be written).
        cfg: RaceTrainConfig.
        sim_laps: simulated laps to pretrain on (else `cfg.pretrain_sim` races are simulated,
            calibrated to `sources`).

    Returns:
        The metrics written to out/metrics.json.
    """
    cfg = cfg or RaceTrainConfig()
    cfg.validate()  # first: a bad config must leave an existing run in `out` as it was
    out = Path(out)
    t0 = time.perf_counter()
    laps, report = load_laps(sources)
    for race, scored in laps.groupby("Race", sort=True)["Scored"].any().items():
        if not scored:  # its laps still build sequences, but no loss and no metric counts them
            warnings.warn(f"race '{race}' has no usable green laps (every lap is missing a time, inaccurate, "
                          "neutralised, wet, or an in/out-lap): it adds nothing to the forecaster")
    for race, stops in laps.groupby("Race", sort=True)["InLap"].sum().items():
        if stops == 0:  # a sprint: no mandatory stop, so "a stop is still due" would be taught wrong
            warnings.warn(f"race '{race}' has no pit stop at all (a sprint?): the pit call learns when stops come "
                          "from races that have them; train it on Grand Prix races")
    seq = build_sequences(laps)
    held = _held_out_note(seq, cfg.val_races)
    if held:
        warnings.warn(held)
    # the input is good: only now is the directory touched (bad input is refused above)
    out.mkdir(parents=True, exist_ok=True)
    _clear_for_training(out)
    distributed.barrier()  # no rank starts writing before rank 0 has cleared the old run
    train_idx, val_idx = _split(seq, cfg.val_races, cfg.seed)
    pretraining = bool(cfg.pretrain_sim or sim_laps is not None)
    n_taggers = (1 if seq.phase_mask.any() else 2 if cfg.phase_sim > 0 else 0) if cfg.tagger else 0
    budget = _Budget(cfg.minutes, cfg.members * (2 if pretraining else 1) + n_taggers, start=t0)
    mcfg = RaceModelConfig(input_size=len(NET_FEATURES), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                           arch=cfg.arch, dropout=cfg.dropout, linear_skip=cfg.linear_skip, head=cfg.head)
    torch.manual_seed(cfg.seed)
    model = RaceNet(mcfg)
    config = {
        "kind": "lapnet-race",
        "features": list(FEATURES),
        "compounds": list(COMPOUNDS),
        "phases": list(PHASES),
        "normalisation": {
            "unit": "percent of the race's reference lap",
            "reference_lap": f"median of the race's first {REF_LAPS} Scored laps (running median before)",
            "target": "lap t+k minus the stint's last Scored lap at t (the race reference when the stint has none)",
            "horizons": HORIZONS,
            "pit_ahead": PIT_AHEAD,
        },
        "masks": masks_record(SCORED_RULE, cfg.fresh_weight),
        "model": mcfg.to_dict(),
        "train": asdict(cfg),
        "races": sorted({k[0] for k in seq.keys}),
        "race_fingerprints": race_fingerprints(laps),
        "val_races": sorted({seq.keys[i][0] for i in val_idx}),
        "phase_trained": bool(seq.phase_mask.any()),
        "tagger": None,
    }
    meta = {"config": {k: config[k] for k in ("kind", "features", "model")}}
    pre, sim_seq = None, None
    if pretraining:
        if sim_laps is None:
            sim_laps = simulate_calibrated(laps, cfg.pretrain_sim, seed=cfg.seed + 1000)
        sim_laps, _ = _load_simulated(sim_laps)
        sim_seq = build_sequences(sim_laps)
        s_train, s_val = _split(sim_seq, cfg.val_races, cfg.seed)
        pre = _fit(model, sim_seq, s_train, s_val, cfg, out / "pretrain", epochs=cfg.pretrain_epochs, meta=meta,
                   describe="pretrain (sim" + (f", member 1/{cfg.members}" if cfg.members > 1 else "") + ")", budget=budget)
        config["pretrain"] = {"sim_races": int(len({k[0] for k in sim_seq.keys})), "steps": pre.steps, "best_val": pre.best_val}
        config["phase_trained"] = config["phase_trained"] or bool(sim_seq.phase_mask.any())
    result = _fit(model, seq, train_idx, val_idx, cfg, out, epochs=cfg.epochs, meta=meta,
                  describe="race train" + (f" (member 1/{cfg.members})" if cfg.members > 1 else ""), budget=budget)
    if cfg.members > 1:
        # each member early-stops on its own validation race, which the others train on: the
        # "validation" block below scores the first member alone, on its race, to stay held out
        ens, results = _fit_members(model, seq, cfg, mcfg, out, meta, sim_seq, budget)
        config["members"] = cfg.members
        config["member_val_races"] = [config["val_races"]] + [sorted({seq.keys[i][0] for i in va}) for _, va in results]

    if cfg.fresh_start and not cfg.pit_caller:
        config["fresh_start"] = {"kept": False, "why_not": "the FreshStart rides with the pit caller (pit_caller False)"}
    if cfg.pit_caller:
        from lapnet.checkpoint import save_tensors

        pit, config["pit_caller"] = _fit_pit_caller(seq, train_idx, val_idx, cfg)
        forecaster = ens if cfg.members > 1 else model
        expected = None
        if cfg.expected_gap:
            expected, config["expected_gap"] = _fit_expected_gap(forecaster, seq, train_idx, val_idx, cfg)
            config["expected_gap"]["kept"] = expected is not None
        fresh = None
        if cfg.fresh_start:
            fresh, config["fresh_start"] = _fit_fresh_start(forecaster, seq, np.concatenate([train_idx, val_idx]), cfg)
        wrapped = WithPitCaller(forecaster, pit, expected, fresh)
        save_tensors(out / "model.safetensors", {k: v.detach().numpy() for k, v in wrapped.state_dict().items()},
                     {"config": {**meta["config"], "members": cfg.members, "pit_caller": True,
                                 "expected_gap": expected is not None, "fresh_start": fresh is not None}})
        model = WithPitCaller(model, pit, expected, fresh)  # the validation block below scores the first member with the pit caller
        # the probability from which the pit call counts as called (predict's figure; the live pit-window call)
        config["pit_threshold"] = _pit_window_threshold(model, subset_sequences(seq, np.concatenate([train_idx, val_idx])))
        config["tyre_wear"] = _tyre_wear(laps)  # pit-now carries boxing now against later to the flag with it

    tagger_result, tagger, live_tagger = None, None, None
    if cfg.tagger and seq.phase_mask.any():
        tagger, tagger_result = _fit_tagger(seq, train_idx, val_idx, mcfg, cfg, out / "tagger", bidirectional=True,
                                            budget=budget)
        config["tagger"] = tagger.cfg.to_dict()
    elif cfg.tagger and cfg.phase_sim > 0:
        try:
            (tagger, tagger_result), live_tagger, config["phase_source"] = _fit_sim_taggers(laps, mcfg, cfg, out, budget)
            config["tagger"], config["live_tagger"] = tagger.cfg.to_dict(), live_tagger.cfg.to_dict()
            if cfg.pit_caller:
                config["phase_source"]["pit_window"] = config["pit_threshold"]
        except LapnetError as e:  # the forecaster and the pit call are trained: keep them, without phases
            warnings.warn(f"no phase calls: the simulator could not be calibrated to these laps ({e})")
    write_json(out / TRAINING_LAPS, _training_laps(laps))  # eval's in-sample check, lap by lap
    write_json(out / "config.json", config)

    val_seq = subset_sequences(seq, val_idx)
    metrics = {
        "masks": config["masks"],
        "train": {"seconds": round(time.perf_counter() - t0, 2), "steps": result.steps, "epochs": result.epochs,
                  "stopped": result.stopped, "best_val_loss": result.best_val,
                  "members": cfg.members, "races": len(config["races"]), "sequences": len(train_idx),
                  "scored_laps": int(seq.origin_scored.sum()),
                  "tagger_best_val": tagger_result.best_val if tagger_result else None,
                  **({"minutes": cfg.minutes, "minutes_per_net": budget.given} if cfg.minutes is not None else {})},
        "cleaning": report.summary(),
        "validation_races": config["val_races"],
        # what the validation block was scored on: the laps early stopping watched, not races held out of training
        "validation_label": (f"validation race{'s' if len(config['val_races']) > 1 else ''} used for early stopping: "
                             f"{', '.join(config['val_races'])}" if _splits_races(seq, cfg.val_races)
                             else f"validation drivers used for early stopping ({len(val_idx)} of {len(seq.keys)} "
                                  "driver sequences, about 15%)"),
        "validation_model": "the first of the ensemble's members" if cfg.members > 1 else "the model",
        # fitted on the validation races too (their own leave-races-out folds chose them): in-sample there
        "validation_in_sample": [name for name, on in (("pit call", cfg.pit_caller),
                                                       ("fresh-start forecasts (the fresh block)", "fresh_start" in config
                                                        and config["fresh_start"].get("kept"))) if on],
        "validation": score_predictions(val_seq, *run_outputs(RaceRun(model, config, tagger, out, live_tagger), val_seq))
        if len(val_idx) else None,
    }
    write_json(out / "metrics.json", metrics)
    if distributed.rank() == 0:  # config.json, the weights and metrics.json are all written
        (out / UNFINISHED).unlink(missing_ok=True)
    return metrics


def _clear_for_training(out: Path) -> None:
    """Make `out` ready for a new run (rank 0 only): remove an older run's config.json and logs (fit
    appends to log.jsonl, so an overwritten run's rows would stay), and mark the directory
    unfinished: until `train_race` ends it must not pass for a finished run (an older run's
    config.json beside new weights would), and `load_run` refuses the marker."""
    if distributed.rank() != 0:
        return
    (out / "config.json").unlink(missing_ok=True)
    for sub in ("", "pretrain/", "members/*/", "members/*/pretrain/", "tagger/", "live_tagger/"):
        for log in out.glob(f"{sub}log.jsonl"):
            log.unlink()
    (out / UNFINISHED).write_text("lapnet race train has not finished writing this run (interrupted or failed); "
                                  "train again with --force\n", encoding="utf-8")


def _fit_members(first: RaceNet, seq: Sequences, cfg: RaceTrainConfig, mcfg: RaceModelConfig, out: Path, meta: dict,
                 sim_seq: Sequences | None = None, budget: _Budget | None = None):
    """Train members 2..M (seeds cfg.seed + m, each with its own validation race; each pretrained
    on `sim_seq` first when given, as the first was) beside `first`; write the ensemble's weights
    to out/model.safetensors.

    Returns:
        (the RaceEnsemble, [(TrainResult, validation indices) of members 2..M]).
    """
    from lapnet.checkpoint import save_tensors

    ens = RaceEnsemble(mcfg, cfg.members)
    ens.members[0].load_state_dict(first.state_dict())
    results = []
    for m in range(1, cfg.members):
        mc = RaceTrainConfig(**{**asdict(cfg), "seed": cfg.seed + m})
        tr, va = _split(seq, mc.val_races, mc.seed)
        torch.manual_seed(mc.seed)
        net = RaceNet(mcfg)
        if sim_seq is not None:
            s_train, s_val = _split(sim_seq, mc.val_races, mc.seed)
            _fit(net, sim_seq, s_train, s_val, mc, out / "members" / str(m + 1) / "pretrain", epochs=cfg.pretrain_epochs,
                 meta=meta, describe=f"pretrain (sim, member {m + 1}/{cfg.members})", budget=budget)
        results.append((_fit(net, seq, tr, va, mc, out / "members" / str(m + 1), epochs=cfg.epochs, meta=meta,
                             describe=f"race train (member {m + 1}/{cfg.members})", budget=budget), va))
        ens.members[m].load_state_dict(net.state_dict())
    ens_meta = {"config": {**meta["config"], "members": cfg.members}}
    save_tensors(out / "model.safetensors", {k: v.detach().numpy() for k, v in ens.state_dict().items()}, ens_meta)
    return ens, results


def _fit_tagger(seq: Sequences, train_idx, val_idx, mcfg: RaceModelConfig, cfg: RaceTrainConfig, out: Path, *,
                bidirectional: bool, budget: _Budget | None = None) -> tuple[RaceNet, Any]:
    """A phase tagger (a RaceNet trained on the phase loss alone): bidirectional reads the whole
    race (post-race analysis), unidirectional only the laps so far (live calls)."""
    tcfg = RaceModelConfig(**{**mcfg.to_dict(), "bidirectional": bidirectional})
    tagger = RaceNet(tcfg)
    kind = "bidirectional" if bidirectional else "live"
    result = _fit(tagger, seq, train_idx, val_idx, cfg, out, epochs=cfg.epochs,
                  meta={"config": {"kind": "lapnet-race-tagger", "features": list(FEATURES), "model": tcfg.to_dict()}},
                  forecast=False, describe=f"tagger ({kind})", budget=budget)
    return tagger, result


def _fit_sim_taggers(laps: pd.DataFrame, mcfg: RaceModelConfig, cfg: RaceTrainConfig, out: Path,
                     budget: _Budget | None = None):
    """Phase taggers for laps without Phase labels: learnt from `cfg.phase_sim` simulated races
    calibrated to `laps`, where the simulator knows each lap's phase.

    Why: real timing data records no driver's intent, so no real lap can teach push / conserve /
    pit window; the calibrated simulator has the real races' pace, degradation, stints and
    noise, and the features are normalised per race, so taggers trained there read real laps.
    What that is worth on real laps is measured by `metrics.phase_checks` (in `race eval`).

    Returns:
        ((post-race tagger, its TrainResult), live tagger, what config.json records).
    """
    sim, _ = _load_simulated(simulate_calibrated(laps, cfg.phase_sim, seed=cfg.seed + 2000))
    sim_seq = build_sequences(sim)
    tr, va = _split(sim_seq, cfg.val_races, cfg.seed)
    post = _fit_tagger(sim_seq, tr, va, mcfg, cfg, out / "tagger", bidirectional=True, budget=budget)
    live, _ = _fit_tagger(sim_seq, tr, va, mcfg, cfg, out / "live_tagger", bidirectional=False, budget=budget)
    info = {"sim_races": int(cfg.phase_sim), "calibrated_to": "the training races (lapnet race calibrate)",
            "sim_val_races": sorted({sim_seq.keys[i][0] for i in va})}
    if len(va):
        vs = subset_sequences(sim_seq, va)
        qm = vs.phase_mask
        info["sim_val_macro_f1"] = {name: macro_f1(vs.phase[qm], run_net(net, vs)["phase"].argmax(-1)[qm], len(PHASES))
                                    for name, net in (("post_race", post[0]), ("live", live))}
    return post, live, info


def _tyre_wear(laps: pd.DataFrame) -> dict | None:
    """What a lap of tyre age costs per dry compound on the training races: the simulator's
    calibration (`calibrate`: quadratic wear in TyreLife, fitted with the fuel effect, which
    stops reset TyreLife but not, apart), {compound: {"linear_s", "quad_s"}}; None when no race
    is fit to calibrate on (pit-now then carries the two new sets' mean gap instead)."""
    from lapnet.race.calibrate import calibrate

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = calibrate(laps)
    except LapnetError:
        return None
    return {c: {"linear_s": float(v.deg_linear_s), "quad_s": float(v.deg_quad_s)} for c, v in cal.compounds.items()
            if c in ("SOFT", "MEDIUM", "HARD")}


def _pit_window_threshold(model: torch.nn.Module, seq: Sequences) -> dict:
    """The pit-call probability from which the pit call counts as called (predict's figure) and
    the live phase call says pit_window (`live_phase`): the one with the best F1 of that call
    against the real stops of the training races."""
    p, y = run_net(model, seq)["pit"][seq.pit_mask], seq.pit[seq.pit_mask].astype(bool)  # (n,)
    best = (-1.0, 0.5)
    for tau in np.round(np.arange(0.05, 0.80, 0.01), 2):
        called = p >= tau
        tp = float((called & y).sum())
        f1 = 2 * tp / max(float(called.sum() + y.sum()), 1.0)
        if f1 > best[0]:
            best = (f1, float(tau))
    return {"threshold": best[1], "train_f1": best[0],
            "rule": "pit_window when the pit call's probability reaches the threshold (best F1 on the training "
                    "races' stops), else the live tagger's likelier of push and conserve"}


def live_phase(tagged: np.ndarray, pit: np.ndarray, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The live phase call of a run whose phases were learnt on calibrated simulated races.

    The simulator-taught tagger reads push against conserve on real laps as it does on
    simulated ones, but it times real stops worse than the pit call, which learnt from real
    stops (out of fold, AUC 0.711 against 0.802). So P(pit window) is the pit call's
    probability, push and conserve share the rest as the tagger splits them, and the call is
    pit_window when that probability reaches `threshold`, else the likelier of the two.

    Args:
        tagged: (..., 3) the live tagger's probabilities of push | conserve | pit_window.
        pit: (...) the pit call's probability (pits within 3 laps).
        threshold: from `_pit_window_threshold`; None: the tagger's own call.

    Returns:
        ((..., 3) probabilities, (...) the call as an index into PHASES).
    """
    if threshold is None:
        return tagged, tagged.argmax(-1)
    split = tagged[..., :2] / tagged[..., :2].sum(-1, keepdims=True)  # push | conserve, given no stop soon
    probs = np.concatenate([(1.0 - pit)[..., None] * split, pit[..., None]], axis=-1)
    return probs, np.where(pit >= threshold, PHASES.index("pit_window"), split.argmax(-1))


def _fit_pit_caller(seq: Sequences, train_idx, val_idx, cfg: RaceTrainConfig) -> tuple[PitModel, dict]:
    """Fit the pit call (a PitModel, `lapnet.race.pit`) on every race given to training (the
    nets' validation race too: the L2 strength is chosen by its own leave-races-out folds inside
    them, so the held-out races of a benchmark are never seen)."""
    from lapnet.race.pit import fit_pit_model

    idx = np.concatenate([train_idx, val_idx])
    m = seq.pit_mask[idx]  # (n_seq, T)
    x = seq.x[idx][m]  # (n, D)
    race = np.broadcast_to(np.array([seq.keys[i][0] for i in idx])[:, None], m.shape)[m]  # (n,)
    model, info = fit_pit_model(x, x[:, -len(PIT_EXTRA):], seq.pit[idx][m], race, FEATURES, l2_grid=cfg.pit_l2)
    return model, {**info, "eval_laps": PIT_EVAL_RULE}


def _fit_expected_gap(forecaster: torch.nn.Module, seq: Sequences, train_idx, val_idx,
                      cfg: RaceTrainConfig) -> tuple[ExpectedGap | None, dict]:
    """Fit an ExpectedGap on the forecaster's residuals over the training races, for each ridge
    strength in cfg.expected_ridge; keep the one with the lowest squared error of the expected
    lap on the validation race(s). With cfg.expected_gap_check, the gap is then kept only if the
    next 10 laps' total it gives beats the median forecast's there in squared error (the loss a
    mean minimises; an absolute error would favour the median by construction): its residuals
    are in-sample, and on real races that can make it worse, not better.

    Returns:
        (the gap, or None when the check drops it; what was measured, for config.json)
    """

    def rows(idx):
        if len(idx) == 0:
            return None
        sub = subset_sequences(seq, idx)
        med = run_net(forecaster, sub)["mean"]  # (n, T, K)
        m = sub.target_mask.any(-1) & np.isfinite(sub.base)  # (n, T) laps with a target, starting from a Scored lap
        full = sub.target_mask[m].all(-1) & sub.origin_scored[m]  # (r,) origins whose next K laps all count
        return (torch.from_numpy(sub.x[m]), torch.from_numpy((sub.target - med)[m]),  # (r, D), (r, K)
                torch.from_numpy(sub.target_mask[m]), torch.from_numpy(full))  # (r, K), (r,)

    train, val = rows(train_idx), rows(val_idx)
    best, scores = None, {}
    for ridge in cfg.expected_ridge:
        gap = ExpectedGap(FEATURES)
        gap.fit(*train[:3], ridge=ridge)
        if val is None:
            best = (0.0, ridge, gap)
            break
        with torch.no_grad():
            err = (val[1] - gap(val[0]).to(val[1].dtype))[val[2]]
        scores[f"{ridge:g}"] = mse = float((err**2).mean()) if len(err) else 0.0
        if best is None or mse < best[0]:
            best = (mse, ridge, gap)
    info = {"model": "ridge regression of the forecast's residuals on the lap features + tyre life buckets per compound",
            "ridge": best[1], "val_mse_by_ridge": scores, "chosen_by": "lowest squared error on the validation race(s)",
            "kept": True}
    if cfg.expected_gap_check and val is not None and bool(val[3].any()):
        with torch.no_grad():
            r, full = val[1][val[3]], val[3]  # (f, K) residuals of the median on full origins
            g = best[2](val[0][full]).to(r.dtype)  # (f, K)
        med_mse, exp_mse = float((r.sum(-1) ** 2).mean()), float(((r - g).sum(-1) ** 2).mean())
        info["val_next10_total_sq_pct"] = {"median": med_mse, "expected": exp_mse, "origins": int(full.sum())}
        info["kept"] = exp_mse < med_mse
    return (best[2] if info["kept"] else None), info


FRESH_FOLDS = 5  # leave-races-out folds inside the training races that choose and check the FreshStart


def _fit_fresh_start(forecaster: torch.nn.Module, seq: Sequences, idx: np.ndarray,
                     cfg: RaceTrainConfig) -> tuple[FreshStart | None, dict]:
    """Fit a FreshStart on the origins of the sequences `idx` whose stint has no Scored lap yet.

    Its L2 strength (cfg.fresh_ridge) is chosen by the mean absolute error over horizons on
    leave-races-out folds of those races (FRESH_FOLDS, or one per race when fewer); the folds'
    absolute errors give its 90% half-width per horizon. It is kept only if those folds beat
    the nets' own forecast on the same laps (the nets' is in-sample there, which favours them).

    Returns:
        (the model, or None when it is not kept or there are too few such laps; what was
        measured, for config.json)
    """
    sub = subset_sequences(seq, idx)
    m = sub.target_mask.any(-1) & ~np.isfinite(sub.base)  # (n, T) fresh origins with a target
    info: dict = {"model": "L1 regression of the laps ahead on the field's pace, the driver's pace against it, the "
                  "tyres and the start or restart (models.FreshStart.INPUTS), from laps whose stint has no Scored lap",
                  "origins": int(m.sum()), "kept": False}
    race = np.array([sub.keys[i][0] for i in range(len(sub.keys))])[:, None].repeat(m.shape[1], 1)[m]  # (n,)
    races = sorted(set(race))
    width = len(FreshStart.INPUTS) + 1
    if len(races) < 2 or m.sum() < 4 * width:
        info["why_not"] = f"too few laps to learn it from ({int(m.sum())} origins in {len(races)} race(s))"
        return None, info
    x, y, mask = (torch.from_numpy(sub.x[m]), torch.from_numpy(sub.target[m]).double(),
                  torch.from_numpy(sub.target_mask[m]))
    possible = FreshStart(FEATURES).possible(x)  # (n,) where it forecasts at all: some lap shows the race's pace
    info["no_forecast_origins"] = int((~possible).sum())
    mask = mask & possible[:, None]
    net = torch.from_numpy(run_net(forecaster, sub)["mean"][m]).double()  # (n, K) the nets' forecast there
    folds = np.array([races.index(r) % min(FRESH_FOLDS, len(races)) for r in race])
    scores, best = {}, None
    for ridge in cfg.fresh_ridge:
        pred = torch.zeros_like(y)
        for f in np.unique(folds):
            fs = FreshStart(FEATURES)
            tr, te = torch.from_numpy(folds != f), torch.from_numpy(folds == f)
            fs.fit(x[tr], y[tr], mask[tr], ridge)
            with torch.no_grad():
                pred[te] = fs(x[te]).double()
        err = (pred - y).abs()
        mae = float(err[mask].mean())
        scores[f"{ridge:g}"] = round(mae, 4)
        if best is None or mae < best[0]:
            best = (mae, ridge, err)
    mae, ridge, err = best
    net_mae = float((net - y).abs()[mask].mean())
    fs = FreshStart(FEATURES)
    fs.fit(x, y, mask, ridge)
    group = fs.group(x)  # (n,) FreshStart.GROUPS
    half = [[float(torch.quantile(err[mask[:, k] & (group == g), k], 0.9)) if (mask[:, k] & (group == g)).any()
             else 100.0 for k in range(y.shape[1])] for g in range(len(FreshStart.GROUPS))]  # a group never seen: wide
    fs.half90.copy_(torch.tensor(half))
    info.update({"ridge": ridge, "folds_mae_pct_by_ridge": scores, "folds_mae_pct": round(mae, 4),
                 "nets_mae_pct": round(net_mae, 4),
                 "half90_pct": {name: [round(v, 3) for v in h] for name, h in zip(FreshStart.GROUPS, half)},
                 "chosen_by": f"mean absolute error over horizons on {len(np.unique(folds))} leave-races-out folds",
                 "kept": mae < net_mae or not cfg.fresh_start_check})
    return (fs if info["kept"] else None), info


def forecast_source(has_base: bool, model: torch.nn.Module, forecast: float = 0.0, wet: bool = False) -> str:
    """Where a lap's forecast comes from (predict's `forecast_from`, live's too): "stint" (the
    nets, on the stint's last Scored lap), "fresh_start" (the stint has no Scored lap yet and the
    run has a FreshStart), "no_green_pace_yet" (the same, but no lap of the race so far was run
    under green flags: no forecast, NaN), "wet_tyres" (the same on intermediate or wet tyres,
    which the FreshStart does not forecast: NaN) or "reference_lap" (no Scored lap yet, and no
    FreshStart: the nets from the race's reference lap). `forecast`: the lap's next-lap
    forecast; `wet`: the lap is on intermediate or wet tyres."""
    if has_base:
        return "stint"
    if getattr(model, "fresh", None) is None:
        return "reference_lap"
    return "fresh_start" if math.isfinite(forecast) else "wet_tyres" if wet else "no_green_pace_yet"


def subset_sequences(seq: Sequences, idx: np.ndarray) -> Sequences:
    """The sequences `idx` of `seq`."""
    kw = {name: (getattr(seq, name)[idx] if name != "keys" else [seq.keys[i] for i in idx]) for name in Sequences.__dataclass_fields__}
    return Sequences(**kw)


def _load_simulated(sim: pd.DataFrame):
    """`load_laps` for races lapnet simulated itself: the user gave none of them, so the
    not-a-race warning (short calibrated races pit often) would only be noise."""
    from lapnet.race.io import NotARaceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotARaceWarning)
        return load_laps(sim)


def simulate_calibrated(laps: pd.DataFrame, n_races: int, seed: int = 0) -> pd.DataFrame:
    """`n_races` simulated races with the simulator calibrated to `laps` (lapnet.race.calibrate)."""
    from lapnet.race.calibrate import calibrate
    from lapnet.race.simulate import simulate

    return simulate(n_races, seed, calibration=calibrate(laps))


# ---------------------------------------------------------------------------------------
# inference


@dataclass
class RaceRun:
    """A trained run loaded from its directory."""

    model: RaceNet | RaceEnsemble | WithPitCaller
    config: dict
    tagger: RaceNet | None = None  # post-race (bidirectional) phase tagger
    path: Path = field(default_factory=Path)
    live_tagger: RaceNet | None = None  # live phase tagger of a run whose phases come from calibrated simulated races


def load_run(run: str | Path, device: str = "cpu") -> RaceRun:
    """Load a run directory written by `train_race`; refuse one trained on other features.

    `device`: where its nets run ("cpu" or "cuda"; `run_net` moves the laps there and the
    outputs back). Live mode keeps the CPU: one step per lap is too small to pay for a GPU.
    """
    if not isinstance(run, (str, Path)):
        raise LapnetError(f"cannot load a run from a {type(run).__name__}: give its directory")
    run = Path(run)
    if run.is_file():
        raise LapnetError(f"{run}: is a file, not a run directory (give the folder `lapnet race train --out` wrote)")
    if not run.is_dir():
        raise LapnetError(f"{run}: no such run directory")
    if (run / UNFINISHED).exists():
        raise CheckpointError(f"{run}: an unfinished run (lapnet race train was interrupted or failed): "
                              "train it again with --force")
    config = read_json(run / "config.json")
    if not isinstance(config, dict) or config.get("kind") != "lapnet-race":
        raise CheckpointError(f"{run}: not a lapnet race run (config.json kind is not 'lapnet-race')")
    check_features(config.get("features", []))
    where = run / "config.json"
    for key in ("model", "tagger", "live_tagger"):  # a malformed config is refused here, naming the file
        if key != "model" and not config.get(key):
            continue
        mcfg = config.get(key)
        if not isinstance(mcfg, dict):
            raise CheckpointError(f"{where}: malformed: '{key}' is " + ("missing" if key not in config else
                                  f"a {type(mcfg).__name__}, not the model's settings") + ": retrain the run")
        try:
            RaceNet(RaceModelConfig(**mcfg))  # its sizes and kinds are checked when the net is built
        except (LapnetError, TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{where}: malformed '{key}': {' '.join(str(e).split())[:150]}: retrain the run") from None
    members = config.get("members", 1)
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 1000:
        raise CheckpointError(f"{where}: malformed: 'members' is {members!r}, not a whole number from 1 to 1000")
    gap, fresh = config.get("expected_gap"), config.get("fresh_start")
    model = _load_net(run / "model.safetensors", config["model"], int(config.get("members", 1)), bool(config.get("pit_caller")),
                      isinstance(gap, dict) and bool(gap.get("kept", True)), isinstance(fresh, dict) and bool(fresh.get("kept")))
    tagger = _load_net(run / "tagger" / "model.safetensors", config["tagger"]) if config.get("tagger") else None
    live = _load_net(run / "live_tagger" / "model.safetensors", config["live_tagger"]) if config.get("live_tagger") else None
    if device != "cpu":
        model, tagger, live = (None if m is None else m.to(device) for m in (model, tagger, live))
    return RaceRun(model, config, tagger, run, live)


def _load_net(path: Path, mcfg: dict, members: int = 1, pit_caller: bool = False,
              expected_gap: bool = False, fresh_start: bool = False) -> RaceNet | RaceEnsemble | WithPitCaller:
    arrays, _ = load_tensors(path)
    net = RaceEnsemble(RaceModelConfig(**mcfg), members) if members > 1 else RaceNet(RaceModelConfig(**mcfg))
    if pit_caller:
        net = WithPitCaller(net, PitModel(FEATURES), ExpectedGap(FEATURES) if expected_gap else None,
                            FreshStart(FEATURES) if fresh_start else None)
    check_weights(arrays, net.state_dict(), path)  # an int64 or NaN tensor would load silently
    try:
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        said = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:100]  # the first mismatch, not torch's header
        raise CheckpointError(f"{path}: weights do not fit the model in config.json ({said}): a run trained by another "
                              "lapnet version? retrain it with `lapnet race train`") from None
    net.eval()
    return net


@torch.no_grad()
def run_net(model: RaceNet, seq: Sequences, batch: int = 64) -> dict[str, np.ndarray]:
    """Model outputs for every lap: mean (the location), sigma (the head's scale) and half90 (the
    half-width of the central 90% interval), all in % of ref (N, T, K); pit (N, T); phase (N, T, 3)
    probabilities; and "expected" (N, T, K), the mean lap in % of ref, when the model has an ExpectedGap."""
    model.eval()
    dev = next(model.parameters()).device  # the CPU, or the device `load_run` put the run on
    z = INTERVAL90[model.cfg.head]
    outs = {"mean": [], "sigma": [], "half90": [], "pit": [], "phase": []}
    N, T = seq.x.shape[:2]
    for i in range(0, N, batch):
        idx = np.arange(i, min(N, i + batch))
        o, _ = model(torch.from_numpy(seq.x[idx]).to(dev), torch.from_numpy(seq.lengths[idx]))  # lengths stay on the CPU (packing)
        o = {k: v.cpu() for k, v in o.items()}
        outs["mean"].append(o["mean"].numpy())
        outs["sigma"].append(np.exp(o["log_sigma"].numpy()))
        outs["half90"].append(z * outs["sigma"][-1])
        outs["pit"].append(torch.sigmoid(o["pit"]).numpy())
        outs["phase"].append(torch.softmax(o["phase"], -1).numpy())
        if "expected" in o:
            outs.setdefault("expected", []).append(o["expected"].numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def to_seconds(seq: Sequences, mean: np.ndarray, sigma: np.ndarray | None = None):
    """Turn % residuals into lap times in seconds: base + ref * pct / 100 (and sigma in s)."""
    start = np.where(np.isfinite(seq.base), seq.base, seq.ref)[:, :, None]  # (N, T, 1) the race reference when the stint has no Scored lap
    ref = seq.ref[:, :, None]
    sec = start + ref * mean / 100.0  # (N, T, K)
    return (sec, ref * sigma / 100.0) if sigma is not None else sec


def run_outputs(r: RaceRun, seq: Sequences) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """A run's outputs on every lap: the forecaster's (`run_net`), whose "phase" is the live phase
    call's probabilities and "phase_call" the call (`live_phase` with the run's live tagger when
    it has one, else the forecaster's own head when it learned phases, else both absent), and
    the post-race tagger's (None without one)."""
    o = run_net(r.model, seq)
    if r.live_tagger is not None:
        o["phase"], o["phase_call"] = live_phase(run_net(r.live_tagger, seq)["phase"], o["pit"], pit_window_threshold(r))
    elif r.config.get("phase_trained"):
        o["phase_call"] = o["phase"].argmax(-1)
    else:
        del o["phase"]  # an untrained head: no call at all rather than a random one
    return o, (run_net(r.tagger, seq) if r.tagger is not None else None)


def pit_window_threshold(r: RaceRun) -> float | None:
    """The run's threshold for the pit call (`live_phase`'s pit-window call, predict's figure):
    the best F1 on its training races' stops; None for a run without a pit caller (or trained
    before runs kept it without phase calls)."""
    kept = ((r.config.get("phase_source") or {}).get("pit_window") or r.config.get("pit_threshold") or {})
    return kept.get("threshold")


def _take(outputs: dict[str, np.ndarray] | None, idx: np.ndarray) -> dict[str, np.ndarray] | None:
    """The outputs (`run_net`) of the sequences `idx` (None stays None)."""
    return None if outputs is None else {k: v[idx] for k, v in outputs.items()}


def phase_calls(o: dict[str, np.ndarray], tagged: dict[str, np.ndarray] | None) -> tuple[dict, dict]:
    """The phase calls in a run's outputs (`run_outputs`): name ("live", "post_race") ->
    (N, T, 3) probabilities, and name -> (N, T) the call (the live one as `live_phase` made it)."""
    probs = {**({"live": o["phase"]} if "phase" in o else {}), **({"post_race": tagged["phase"]} if tagged is not None else {})}
    calls = {k: (o["phase_call"] if k == "live" and "phase_call" in o else p.argmax(-1)) for k, p in probs.items()}
    return probs, calls


def score_predictions(seq: Sequences, o: dict[str, np.ndarray], tagged: dict[str, np.ndarray] | None = None) -> dict:
    """Metrics of model outputs `o` (from `run_net`) on `seq`, beside the baselines on the same laps.

    Args:
        seq: the sequences with their targets and masks.
        o: the forecaster's outputs; `tagged`: the bidirectional tagger's (or None).
    """
    sec, half = to_seconds(seq, o["mean"], o["half90"])  # (N, T, K) seconds: the forecast and its 90% half-width
    forecasts = {"forecaster": sec, **baseline_forecasts(seq)}
    report = forecast_report(forecasts, seq, fresh_only=fresh_baselines(seq))
    m = seq.target_mask & seq.origin_scored[:, :, None]
    cov = {}
    for h in (1, 5, 10):
        mk = m[:, :, h - 1]
        cov[f"h{h}"] = coverage(seq.future[:, :, h - 1][mk], (sec - half)[:, :, h - 1][mk], (sec + half)[:, :, h - 1][mk])
    pm = seq.pit_mask
    tyre = seq.x[:, :, FEATURES.index("tyre_life")]
    pit = pit_report(seq.pit[pm], o["pit"][pm])
    pit["tyre_life_auc"] = roc_auc(seq.pit[pm], tyre[pm])
    # in-laps are easy negatives for a model that sees in_lap but hard ones for tyre life: score without them too
    nm = pm & (seq.x[:, :, FEATURES.index("in_lap")] == 0)
    pit["auc_without_in_laps"] = roc_auc(seq.pit[nm], o["pit"][nm])
    pit["tyre_life_auc_without_in_laps"] = roc_auc(seq.pit[nm], tyre[nm])
    pit["eval_laps"] = PIT_EVAL_RULE
    out = {"forecast": report, "interval90_coverage": cov, "pit_within_3": pit,
           "summary": _summary(report), "fresh_start": fresh_report(seq, sec, half)}
    # a stint plan adds laps up: the next 10 laps' total, from the median forecast and, when the
    # run has an ExpectedGap, from the expected (mean) laps, which is what sums should use
    totals = {"forecaster": sec, **({"expected": to_seconds(seq, o["expected"])} if "expected" in o else {}),
              **{k: v for k, v in forecasts.items() if k != "forecaster"}}
    out["next10_total"] = totals_report(totals, seq)
    # degradation: how much each lap of the next 10 slows, forecast (median and, with an ExpectedGap,
    # the mean) against the laps themselves
    out["stint_trend"] = stint_trend_report({k: v for k, v in totals.items() if k in ("forecaster", "expected")}, seq)
    probs, calls = phase_calls(o, tagged)
    if calls and seq.phase_mask.any():  # simulated laps: the truth is known
        qm = seq.phase_mask
        out["phase_macro_f1"] = {k: macro_f1(seq.phase[qm], c[qm], len(PHASES)) for k, c in calls.items()}
    elif calls:  # real laps: checked against what the timing data shows
        out["phase_checks"] = phase_checks(seq, probs, calls)
    return out


IMPLAUSIBLE = (1.0, 1.3)  # forecasts faster than the race's fastest Scored lap, or slower than 1.3 times it, are counted


def fresh_report(seq: Sequences, sec: np.ndarray, half: np.ndarray) -> dict:
    """The forecasts from laps whose stint has no Scored lap yet (out-laps, the start,
    restarts), beyond their MAE in the forecast's "fresh" block: how many such laps there are,
    how many got no forecast (no lap of the race so far showed its pace, or wet tyres), the 90%
    interval's coverage at 1 / 5 / 10 laps on the fresh block's pairs, and how many forecasts
    (every horizon) are faster than the race's fastest Scored lap or slower than 1.3 times it
    (IMPLAUSIBLE: racing laps outside that range are rare; a check, in hindsight).

    Args: seq; sec, half (N, T, K) the forecast and its 90% half-width in seconds (NaN: none).
    """
    valid = np.arange(seq.base.shape[1])[None, :] < seq.lengths[:, None]
    fresh = valid & ~np.isfinite(seq.base)  # (N, T)
    races = np.array([k[0] for k in seq.keys])
    fastest = np.full(len(races), np.nan)
    for r in set(races):
        mine = races == r
        times = seq.lap_time[mine][seq.origin_scored[mine]]
        fastest[mine] = times.min() if times.size else np.nan
    made = fresh[:, :, None] & np.isfinite(sec)  # (N, T, K)
    fast = made & (sec < IMPLAUSIBLE[0] * fastest[:, None, None])
    slow = made & (sec > IMPLAUSIBLE[1] * fastest[:, None, None])
    cov = {}
    for h in REPORT_HORIZONS:
        m = eval_mask(seq, "fresh")[:, :, h - 1] & np.isfinite(sec[:, :, h - 1])
        cov[f"h{h}"] = coverage(seq.future[:, :, h - 1][m], (sec - half)[:, :, h - 1][m], (sec + half)[:, :, h - 1][m])
    return {"origins": int(fresh.sum()), "no_forecast": int((fresh & ~np.isfinite(sec[:, :, 0])).sum()),
            "interval90_coverage": cov, "forecasts": int(made.sum()),
            "faster_than_fastest_lap": int(fast.sum()), "slower_than_1_3x_fastest": int(slow.sum()),
            "rule": "forecasts at every horizon against the race's fastest Scored lap; coverage on the fresh block's pairs"}


def _summary(report: dict) -> list[dict]:
    """One row per forecaster: MAE at horizons 1, 5, 10 on the Scored mask."""
    rows = []
    for name, per in report["scored"].items():
        rows.append({"forecaster": name, **{f"mae_h{h}": per[f"h{h}"]["mae"] for h in (1, 5, 10)},
                     **{f"rmse_h{h}": per[f"h{h}"]["rmse"] for h in (1, 5, 10)}, "n_h1": per["h1"]["n"]})
    return rows


def eval_race(run: str | Path, sources: Any, *, race_length: int | str = "file", device: str = "cpu") -> dict:
    """`lapnet race eval`: forecaster vs baselines by horizon and compound, pit-call quality.

    `race_length`: each race's length for the race-fraction features, as `build_sequences`
    takes it (default: the last lap in the table, right for finished races). `device`: where the
    nets run (`load_run`). With several races: "by_race", each race's headline; when some but
    not all of them were training races (`in_sample`): "held_out", the headline pooled over the
    others alone (the pooled blocks mix their in-sample scores in).
    """
    from lapnet.race.io import SAME_LAPS_SHARE, SHARED_LAPS_WARN

    r = load_run(run, device)
    laps, report = load_laps(sources)
    seq, used = race_sequences(laps, race_length)
    o, tagged = run_outputs(r, seq)
    races = sorted({k[0] for k in seq.keys})
    overlap, how = race_overlaps(r, laps)
    in_sample = _flagged(overlap)
    if in_sample:  # the numbers would measure memory, not forecasting
        said = "; ".join(f"{race}: {v['laps']} of its {v['of']} timed laps are {v['training_race']}'s "
                         f"({overlap[race]['share']:.0%} of the smaller race's)" for race, v in in_sample.items())
        warnings.warn(f"race(s) {', '.join(in_sample)} were among the run's training races ({said}): their scores "
                      "are in-sample")
    partly = {race: o for race, o in overlap.items() if not o["in_sample"] and (o["laps"] or 0) >= SHARED_LAPS_WARN}
    if partly:  # under the in-sample share, yet more laps than two different races ever share
        said = "; ".join(f"{race}: {o['laps']} of its {o['of']} timed laps are {o['training_race']}'s" for race, o in partly.items())
        warnings.warn(f"race(s) {', '.join(partly)} share laps with the run's training races ({said}; different races "
                      f"share none), under the {SAME_LAPS_SHARE:.0%} that makes them in-sample: scored as held out")
    # the pairs this eval scores (every block of today's metrics, whenever the run was trained), beside
    # the rule the run's loss was trained by (its config: the Scored rule and fresh_weight)
    masks = masks_record((r.config.get("masks") or {}).get("loss", SCORED_RULE), (r.config.get("train") or {}).get("fresh_weight"))
    metrics = {"run": str(run), "races": races, "race_length": race_length, "race_laps": used, "masks": masks,
               "in_sample": in_sample, "in_sample_check": how, "in_sample_rule": IN_SAMPLE_RULE, "in_sample_overlap": overlap,
               "baselines": list(BASELINES), **score_predictions(seq, o, tagged),
               "cleaning": report.summary()}
    pit = metrics["pit_within_3"]
    if pit["n"] and pit["base_rate"] in (0.0, 1.0):  # an AUC needs both kinds of lap
        which = f"none of these {pit['n']} laps is" if pit["base_rate"] == 0.0 else f"all {pit['n']} of these laps are"
        warnings.warn(f"{which} followed by a pit stop within 3 laps (a sprint, or stints cut short): the pit call "
                      "cannot be scored (its AUC is null)")
    if len(races) > 1:  # pooled numbers hide a race that goes badly: each race on its own too
        metrics["by_race"] = {}
        for race in races:
            idx = np.array([i for i, k in enumerate(seq.keys) if k[0] == race])
            m = score_predictions(subset_sequences(seq, idx), _take(o, idx), _take(tagged, idx))
            metrics["by_race"][race] = {**_race_row(m), "in_sample": race in in_sample}
    held = [race for race in races if race not in in_sample]
    if in_sample and held:  # the pooled numbers above mix memory with forecasting: the held-out races alone
        idx = np.array([i for i, k in enumerate(seq.keys) if k[0] in held])
        m = score_predictions(subset_sequences(seq, idx), _take(o, idx), _take(tagged, idx))
        metrics["held_out"] = {"races": held, **_race_row(m)}
    return metrics


IN_SAMPLE_RULE = ("in-sample when a training race and this race share at least half of the smaller race's timed laps "
                  "(and at least 3): lap number, lap time to the millisecond and the driver's lap before it, whatever "
                  "the drivers are called (io.lap_keys, io.same_laps: the rule that refuses two inputs holding the "
                  "same race); share = laps in common / the smaller race's timed laps")


def race_overlaps(r: RaceRun, laps: pd.DataFrame) -> tuple[dict[str, dict], str]:
    """Each race of `laps` against run `r`'s training races, told by their laps (`io.lap_keys`:
    lap number, lap time to the millisecond and the driver's lap before it), whatever the file,
    the race or its drivers are called (a run trained before those keys kept the driver's code in
    them, `io.LAP_KEY_BY_DRIVER`: its races are compared by those).

    Returns:
        (race -> its largest overlap: {"training_race" (None when it shares no lap), "laps" in
        common, "of": its timed laps, "training_of": that training race's, "share": laps / the
        smaller of the two, "in_sample": `io.lap_overlap`'s verdict}, how it was checked: "laps"
        with the run's training_laps.json; for a run trained before it existed, "whole races"
        (the run's race fingerprints: a part of a race is not caught, the share is 1 or None)).
    """
    from lapnet.race.io import LAP_KEY_BY_DRIVER, lap_keys, lap_overlap

    found: dict[str, dict] = {}
    stored = r.path / TRAINING_LAPS
    kept = read_json(stored) if stored.is_file() else {}
    keys = lap_keys(laps, by_driver=kept.get("key") == LAP_KEY_BY_DRIVER)
    if stored.is_file():
        trained = {race: np.array([int(h, 16) for h in text.split()], dtype=np.uint32)
                   for race, text in (kept.get("races") or {}).items()}
        for race, k in keys.items():
            best = (False, 0, 0.0, None, 0)  # (in-sample, laps in common, share, training race, its laps)
            for name, tk in trained.items():
                common, n, same = lap_overlap(k, tk)
                share = common / n if n else 0.0
                best = max(best, (same, common, share, name, len(tk)), key=lambda b: b[:3])
            same, common, share, name, n_train = best
            found[race] = {"training_race": name if common else None, "laps": int(common), "of": int(len(k)),
                           "training_of": int(n_train) if common else None, "share": float(share), "in_sample": bool(same)}
        return found, "laps"
    prints = {f: name for name, f in r.config.get("race_fingerprints", {}).items()}
    for race, f in race_fingerprints(laps).items():
        n = int(len(keys.get(race, ())))
        hit = prints.get(f)
        found[race] = {"training_race": hit, "laps": n if hit else None, "of": n, "training_of": n if hit else None,
                       "share": 1.0 if hit else None, "in_sample": hit is not None}
    return found, "whole races"


def _flagged(overlap: dict[str, dict]) -> dict[str, dict]:
    """eval's "in_sample": the in-sample races of `race_overlaps`, {"training_race", "laps", "of"}."""
    return {race: {k: o[k] for k in ("training_race", "laps", "of")} for race, o in overlap.items() if o["in_sample"]}


def in_sample_races(r: RaceRun, laps: pd.DataFrame) -> tuple[dict[str, dict], str]:
    """The races of `laps` that are a training race of run `r`, or a part of one, or of which a
    training race is a part (`io.lap_overlap`): a renamed copy, its first 30 laps, three drivers of
    it, or the whole race when the run trained on its first 20 laps.

    Returns:
        (race -> {"training_race", "laps": its timed laps found there, "of": its timed laps},
        how it was checked: "laps" or "whole races", see `race_overlaps`).
    """
    overlap, how = race_overlaps(r, laps)
    return _flagged(overlap), how


def _training_laps(laps: pd.DataFrame) -> dict:
    """What training_laps.json holds: each training race's lap keys (`io.lap_keys`) as hex."""
    from lapnet.race.io import LAP_KEY, lap_keys

    return {"key": LAP_KEY,
            "races": {race: " ".join(f"{int(k):08x}" for k in keys) for race, keys in lap_keys(laps).items()}}


def race_sequences(laps: pd.DataFrame, race_length: int | str = "file") -> tuple[Sequences, dict[str, int]]:
    """`build_sequences` for eval and predict, and the race length each race was featurised with.

    A length given shorter than a race's table (`--race-laps 20` on a 51-lap race) would push
    the race fraction past 1 and the laps left below 0: that race's length is raised to its last
    lap (as "file" takes it), with a warning naming the race, the given and the used lengths.

    Returns:
        (the sequences, race -> laps used: the table's last lap for "file", the given number
        (or the raised one), and for "estimate" the estimate the featuriser ended with).
    """
    from lapnet.race.features import race_laps

    race_col = laps["Race"] if "Race" in laps.columns else pd.Series("race", index=laps.index)
    last = {str(race): race_laps(g) for race, g in laps.groupby(race_col, sort=False)}
    per_race: dict[str, int | str] = {race: race_length for race in last}
    if isinstance(race_length, (int, np.integer)) and not isinstance(race_length, bool):
        for race, n in last.items():
            if n > race_length:
                warnings.warn(f"race '{race}': --race-laps {race_length} is shorter than its table ({n} laps): "
                              f"using {n}")
                per_race[race] = "file"
    seq = build_sequences(laps, per_race)
    _warn_slow_scored(seq)
    used = {}
    frac = FEATURES.index("lap_frac")
    for race in last:
        if per_race[race] == "file":
            used[race] = last[race]
        elif per_race[race] != "estimate":
            used[race] = int(per_race[race])
        else:  # the featuriser's last word: lap / lap_frac on the race's highest lap
            idx = [i for i, k in enumerate(seq.keys) if str(k[0]) == race]
            ln = np.where(np.isfinite(seq.lap_number[idx]), seq.lap_number[idx], -1.0)  # (n, T)
            i, t = np.unravel_index(int(ln.argmax()), ln.shape)
            f = float(seq.x[idx[i], t, frac])
            used[race] = int(round(ln[i, t] / f)) if f > 0 else last[race]
    return seq, used


SLOW_SCORED = 3.0  # a Scored lap this many reference laps long is warned (as `race live` warns it, lap by lap)
# A sprint is a third of a Grand Prix's distance (100 km against 305): about 30 minutes at green-flag pace (a 2023
# sprint: 24 laps of Austria's 71.4 s, 29 min), where the 15 real Grands Prix of 2023 run 74 (Monza) to 105 minutes
# (Singapore), their race length times their reference lap. A race shorter than half a Grand Prix
# (`features.RACE_SECONDS`, their median, 88 min) is taken for a sprint (`sprint_races`): no mandatory stop, so
# no two-compound rule, and a pit call learnt on Grands Prix.
SPRINT_SECONDS = RACE_SECONDS / 2


def sprint_races(seq: Sequences, used: dict[str, int]) -> dict[str, tuple[int, float]]:
    """The races of `seq` that are sprint-length (SPRINT_SECONDS): race -> (its length in laps,
    minutes at its reference lap). `used`: each race's length as `race_sequences` featurised it
    (the table's last lap, the --race-laps given, or the estimate from the race's pace, which is
    a Grand Prix's by construction)."""
    out = {}
    valid = np.arange(seq.x.shape[1])[None, :] < seq.lengths[:, None]
    for race, laps in used.items():
        idx = [i for i, k in enumerate(seq.keys) if str(k[0]) == race]
        refs = seq.ref[idx][valid[idx]]
        refs = refs[np.isfinite(refs)]
        if not len(refs):
            continue
        seconds = float(laps) * float(np.median(refs))
        if seconds < SPRINT_SECONDS:
            out[race] = (int(laps), seconds / 60.0)
    return out


def sprint_note(race: str | None, laps: int, minutes: float) -> str:
    """The note of predict, pit-now and live (`race` None: "the race") on a sprint-length race (`sprint_races`)."""
    return (f"{'the race' if race is None else f'race {race!r}'} is sprint-length ({laps} laps, {minutes:.0f} min at its reference lap; the Grands Prix of "
            f"2023 run 74 min or more): a sprint has no mandatory stop, and the pit call was learnt on Grands Prix; "
            "if this is a Grand Prix still running, give its length with --race-laps")


def _warn_slow_scored(seq: Sequences) -> None:
    """Warn once about Scored laps more than SLOW_SCORED times the race's reference lap (at that
    lap): a timing error FastF1 called accurate. They are used as `race live` uses them (the
    stint's forecasts start from them), so batch and live stay equal; the warning says where."""
    slow = seq.origin_scored & (seq.lap_time > SLOW_SCORED * seq.ref)  # (N, T); NaN compares False
    if not slow.any():
        return
    i, t = np.nonzero(slow)
    shown = ", ".join(f"{seq.keys[a][1]} lap {seq.lap_number[a, b]:g} ({seq.lap_time[a, b]:.3f} s)" for a, b in zip(i[:3], t[:3]))
    more = f" and {len(i) - 3} more" if len(i) > 3 else ""
    warnings.warn(f"{len(i)} Scored lap{'s' if len(i) > 1 else ''} more than {SLOW_SCORED:g} times the race's reference "
                  f"lap, yet IsAccurate: {shown}{more}: timing errors? used as they are (the stint's forecasts start "
                  "from them), as `lapnet race live` uses them")


def _race_row(m: dict) -> dict:
    """One race's headline numbers from its `score_predictions`: MAE at 1/5/10 laps for the
    forecaster and persistence (Scored laps), the next-lap pairs counted, the pit call's AUC."""
    sc = m["forecast"]["scored"]
    return {"n_h1": sc["forecaster"]["h1"]["n"],
            **{f"mae_h{h}": sc["forecaster"][f"h{h}"]["mae"] for h in (1, 5, 10)},
            **{f"persistence_h{h}": sc["persistence"][f"h{h}"]["mae"] for h in (1, 5, 10)},
            "pit_auc": m["pit_within_3"]["auc"], "tyre_life_auc": m["pit_within_3"]["tyre_life_auc"]}


TRAINING_LAPS = "training_laps.json"  # in a run: each training race's lap keys (`io.lap_keys`), for eval's in-sample check


def classification(laps: pd.DataFrame) -> list[tuple[str, str]]:
    """(race, driver) in the order of each race's final classification: most laps completed
    first, then the Position on the driver's last lap, then who ended that lap first (session
    Time), then the code. A table without positions falls back on laps and Time alone."""
    last = laps.sort_values("LapNumber").groupby(["Race", "Driver"], sort=False).tail(1)
    key = pd.DataFrame({"race": last["Race"].astype(str), "driver": last["Driver"].astype(str),
                        "laps": -last["LapNumber"].to_numpy(float),
                        "pos": last["Position"].fillna(np.inf).to_numpy(float) if "Position" in last else np.inf,
                        "time": last["Time"].fillna(np.inf).to_numpy(float) if "Time" in last else np.inf})
    key = key.sort_values(["race", "laps", "pos", "time", "driver"], kind="mergesort")
    return list(zip(key["race"], key["driver"]))


def predict_race(run: str | Path, sources: Any, *, driver: str | list[str] | None = None, out: str | Path | None = None,
                 race_length: int | str = "file", device: str = "cpu", force: bool = False) -> tuple[pd.DataFrame, dict]:
    """`lapnet race predict`: per-lap forecasts, intervals, pit calls and phases (+ figures in `out`).

    `driver`: None (every driver), or drivers as `io.parse_drivers` reads them ('VER',
    'ver,ham', '1,44' by FastF1's DriverNumber, or a list). `race_length` as `eval_race` takes
    it: give it (or "estimate") for a race still running, whose table's last lap is not the
    race's last. `device`: where the nets run (`load_run`).

    `out` (created if missing) receives predictions.csv, degradation.png and one
    forecast_RACE_DRIVER.png per driver drawn: every driver given, else the first MAX_FIGURES
    of each race's final classification (`classification`). They are drawn in a staging
    directory and moved in once all are drawn, when an earlier call's files there are removed (a
    previous --driver's figures would otherwise stay beside these): a call killed while drawing
    leaves the earlier call's output as it was; a file
    this call would overwrite that no earlier call wrote (`check_predict_out`: its figures
    carry a mark, its predictions.csv its header, the CLI's metrics.json records them) is
    refused unless `force`, before the nets run. Nothing else in `out` is touched (a
    forecast_*.png of the user's stays): metrics.json is written by `lapnet race predict`.

    Returns:
        (table, metrics): one row per lap of the selected drivers; metrics as `eval_race`
        computes them on those laps, with "drivers" (the codes, None for all), "race_laps"
        (race -> the length featurised), "notes" (lines for the user: figures not drawn;
        `lapnet race predict` adds the rows its summary table leaves out) and, with `out`,
        "figures" and "written" ({"by": "lapnet race predict", "files": the names written}).

    Raises:
        LapnetError: an unknown driver, or a file in `out` an earlier call did not write.
    """
    from lapnet.race.io import parse_drivers

    if out is not None:
        check_predict_out(out, force=force, metrics_json=False)  # refused before the run is read
    r = load_run(run, device)
    laps, report = load_laps(sources)
    drivers = parse_drivers(driver, laps, no_timed_lap=[d for rr in report.races for d in rr.drivers_dropped])
    chosen = None if drivers is None else set(drivers)
    drawn, per_race = [], {}  # (race, driver) of the figures: those given, else each race's top MAX_FIGURES
    for race, drv in classification(laps):
        if drv in (chosen or ()) or (chosen is None and per_race.get(race, 0) < MAX_FIGURES):
            drawn.append((race, drv))
            per_race[race] = per_race.get(race, 0) + 1
    if out is not None:  # the figures' names are known: refused before the nets run
        check_predict_out(out, force=force, metrics_json=False, figures=[forecast_figure_name(a, b) for a, b in drawn])
    seq, used = race_sequences(laps, race_length)
    o, tagged = run_outputs(r, seq)
    sec, half = to_seconds(seq, o["mean"], o["half90"])
    exp_sec = to_seconds(seq, o["expected"]) if "expected" in o else None
    phase_p = tagged["phase"] if tagged is not None else o.get("phase")  # post-race analysis: the tagger that reads the whole race
    rows = []
    for i, (race, drv) in enumerate(seq.keys):
        if chosen is not None and drv not in chosen:
            continue
        for t in range(int(seq.lengths[i])):
            lap = laps.loc[seq.row[i, t]]
            rows.append({
                "Race": race, "Driver": drv, "LapNumber": int(lap["LapNumber"]), "Stint": lap["Stint"],
                "Compound": lap["Compound"], "TyreLife": lap["TyreLife"], "LapTime": lap["LapTime"],
                "Scored": bool(lap["Scored"]), "InLap": bool(lap["InLap"]),
                **{f"forecast_h{h}": sec[i, t, h - 1] for h in (1, 5, 10)},
                **({f"expected_h{h}": exp_sec[i, t, h - 1] for h in (1, 5, 10)} if exp_sec is not None else {}),
                "lo90_h1": sec[i, t, 0] - half[i, t, 0], "hi90_h1": sec[i, t, 0] + half[i, t, 0],
                "forecast_from": forecast_source(bool(np.isfinite(seq.base[i, t])), r.model, float(sec[i, t, 0]),
                                                 COMPOUNDS[seq.compound[i, t]] in WET_COMPOUNDS),
                "pit_prob": float(o["pit"][i, t]),
                "phase": PHASES[int(phase_p[i, t].argmax())] if phase_p is not None else None,
                # what `race live` called at that lap (it reads only the laps so far)
                **({"phase_live": PHASES[int(o["phase_call"][i, t])]} if "phase_call" in o else {}),
            })
    table = pd.DataFrame(rows)
    sel = np.array([chosen is None or k[1] in chosen for k in seq.keys])
    keep = np.flatnonzero(sel)
    metrics = {"run": str(run), "driver": None if drivers is None else ",".join(drivers), "drivers": drivers,
               "race_length": race_length, "race_laps": used,
               **score_predictions(subset_sequences(seq, keep), _take(o, keep), _take(tagged, keep)),
               "cleaning": report.summary()}
    metrics["notes"] = [sprint_note(race, *v) for race, v in sprint_races(seq, used).items()]
    if drivers is not None:
        unscored = [d for d in drivers if not table.loc[table["Driver"] == d, "Scored"].any()]
        if unscored:
            metrics["notes"].append(f"{', '.join(unscored)}: no Scored lap (lap 1, in- and out-laps, neutralised, "
                                    "inaccurate and wet laps are not Scored): the figures show the laps, no MAE counts them")
    if out is not None:
        import shutil
        import tempfile

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for stale in stale_staging(out, STAGING, STAGING_STALE):  # an earlier call killed while drawing
            shutil.rmtree(stale, ignore_errors=True)
        # everything is drawn in a staging directory first and moved in once complete, so a call
        # killed while drawing (the slow part) leaves the earlier call's files as they were; its
        # name carries this process's pid, so the next call knows it is a dead call's
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=out))
        try:
            figs = _predict_files(table, metrics, drawn, drivers, per_race, r, stage)
            for old in earlier_predict_files(out):  # this call's output alone (not a previous --driver's figures)
                old.unlink()
            for f in sorted(stage.iterdir()):
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        figs = [str(out / name) for name in figs]
        metrics["figures"] = figs
        metrics["written"] = {"by": PREDICT_COMMAND, "files": ["predictions.csv", *(Path(f).name for f in figs)]}
    return table, metrics


STAGING = ".predict-staging-"  # `predict_race` draws into out/.predict-staging-XXXX, then moves the files in
STAGING_STALE = 600.0  # seconds: an older staging directory whose name has no readable pid is a killed call's, and goes with the next call


def _predict_files(table: pd.DataFrame, metrics: dict, drawn: list, drivers, per_race, r: RaceRun, out: Path) -> list[str]:
    """Write predict's predictions.csv and figures into `out`; the figures' names, in order."""
    table.to_csv(out / "predictions.csv", index=False)
    import matplotlib.pyplot as plt

    from lapnet.race.plots import plot_degradation, plot_driver

    figs = []
    groups = {key: g for key, g in table.groupby(["Race", "Driver"], sort=False)}
    if drivers is None and len(drawn) < len(groups):  # a whole grid would be 20 figures per race
        each = "" if len(per_race) == 1 else " of each race"
        metrics["notes"].append(f"figures for the first {MAX_FIGURES} of {len(groups)} drivers in the final "
                                f"classification{each} only ({', '.join(d for _, d in drawn)}): use --driver "
                                "CODE,CODE for others")
    for race, drv in (key for key in drawn if key in groups):
        fig = plot_driver(groups[(race, drv)], pit_threshold=pit_window_threshold(r))
        path = out / forecast_figure_name(race, drv)  # names from the data, made safe for a file name
        fig.savefig(path, dpi=110, metadata=PREDICT_PNG_MARK)
        plt.close(fig)  # pyplot keeps every open figure: a long-lived process would pile them up
        figs.append(path.name)
    fig = plot_degradation(table, trend=metrics.get("stint_trend"))
    fig.savefig(out / "degradation.png", dpi=110, metadata=PREDICT_PNG_MARK)
    plt.close(fig)
    figs.append("degradation.png")
    return figs
