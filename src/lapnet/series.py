"""Forecast your own series: the notebook's sine forecaster (section 6) on any column of numbers.

    lapnet series train sales.csv --column units --season 12 --out runs/sales
    lapnet series forecast runs/sales sales.csv --column units --steps 24

The notebook trains on a clean sine wave and scores the fit on the data it trained on. A real
series needs more, and this module does it:

- scaling: values are standardised with the mean and sd of the training part only (raw values
  around 17 or 17,000 train badly); both are stored in config.json and undone on output;
- trends: by default the model reads and predicts the changes from one value to the next
  (`difference`), so a series that keeps rising never leaves the range it was trained on (a
  window of levels beyond that range saturates a tanh network, and its forecast flattens);
- an honest check: the last `val_frac` of the windows is held out in time order (never
  shuffled into training), the model is early-stopped on it, and it is scored there, in the
  series' own units, beside the baselines any forecast must beat on the same targets:
  persistence (the last value) and, with `season`, the seasonal naive forecast (the value one
  season earlier);
- a forecast past the end: `Forecaster.rollout` feeds each prediction back in as an input.

A window of `window` values (or changes) predicts the next one: x (B, W, 1) -> y (B, 1),
batch-first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lapnet.checkpoint import load_tensors, read_json, write_json
from lapnet.errors import CheckpointError, LapnetError
from lapnet.experiments.batches import Shuffled
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, fit

KIND = "lapnet-series"
FIGURE = "forecast.png"


# --- reading a series ----------------------------------------------------------------------


def read_series(source: Any, column: str | None = None) -> tuple[np.ndarray, str]:
    """One column of numbers, in file order.

    Args:
        source: a CSV path (with a header row, or a single headerless column of numbers), a
            pandas DataFrame or Series, or a 1-D array.
        column: the column to read; may be left out when the table has one numeric column.

    Returns:
        (values (N,) float64, the column's name).

    Raises:
        LapnetError: no such file or column, several numeric columns and no `column`, a cell
            that is not a number or is empty (named by its line in a CSV), or no values.
    """
    frame, where, first_line = _frame(source)
    if column is None:
        numeric = [c for c in frame.columns if pd.to_numeric(frame[c], errors="coerce").notna().any()]
        if len(frame.columns) == 1:
            column = frame.columns[0]
        elif len(numeric) == 1:
            column = numeric[0]
        else:
            raise LapnetError(f"{where}: {len(numeric)} numeric columns ({', '.join(map(str, numeric[:6]))}): "
                              "choose one with --column")
    if column not in frame.columns:
        raise LapnetError(f"{where}: no column {column!r} (columns: {', '.join(map(str, frame.columns[:8]))})")
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        at = f"line {i + first_line}" if first_line else f"row {i + 1}"
        cell = raw.iloc[i]
        what = "is empty" if pd.isna(cell) or str(cell).strip() == "" else f"is not a finite number ({str(cell)[:30]!r})"
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise LapnetError(f"{where}: column {column}, {at} {what}{more}: fill or drop missing values first")
    if values.size == 0:
        raise LapnetError(f"{where}: no values")
    return values, str(column)


def _frame(source: Any) -> tuple[pd.DataFrame, str, int]:
    """(table, how to name it, the file line of its first row or 0 when it is not a file)."""
    if isinstance(source, pd.Series):
        return source.to_frame(name=source.name if source.name is not None else "value"), "series", 0
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), "table", 0
    if isinstance(source, (np.ndarray, list, tuple)):
        a = np.asarray(source)
        if a.ndim != 1:
            raise LapnetError(f"a series is one-dimensional, got shape {a.shape}")
        return pd.DataFrame({"value": a}), "array", 0
    if not isinstance(source, (str, Path)):
        raise LapnetError(f"cannot read a series from a {type(source).__name__}: give a CSV path or a DataFrame")
    path = Path(source)
    if not path.is_file():
        raise LapnetError(f"{path}: " + ("is a directory, not a CSV file" if path.is_dir() else "no such file"))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise LapnetError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LapnetError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:100]})") from None
    if len(frame.columns) == 1 and _is_number(frame.columns[0]):  # a bare column of numbers: no header
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, header=None, names=["value"], skip_blank_lines=False)
        return frame, str(path), 1
    return frame, str(path), 2


def _is_number(text: Any) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


# --- training ------------------------------------------------------------------------------


@dataclass
class SeriesConfig:
    """How to train a series forecaster (the notebook's section 6 defaults where it has them)."""

    arch: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    window: int = 20  # values in, the next one out (the notebook's 20)
    epochs: int = 200
    minutes: float | None = None
    lr: float = 0.01  # the notebook's Adam rate
    batch_size: int = 64
    val_frac: float = 0.2  # the last windows, held out in time order (0: train on all, as the notebook)
    patience: int | None = 20  # evaluations without a better validation MSE before stopping
    season: int | None = None  # a seasonal period (12 for monthly data): adds the seasonal naive baseline
    difference: bool = True  # model the changes between values (trends); False: the values themselves, as the notebook
    horizon: int = 20  # values forecast past the end of the series for the figure
    seed: int = 42
    device: str = "cpu"
    progress: bool = True

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise LapnetError(f"--arch {self.arch!r}: expected one of {', '.join(ARCHS)}")
        for name in ("hidden_size", "num_layers", "window", "epochs", "batch_size", "horizon"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise LapnetError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.val_frac, (int, float)) and 0 <= self.val_frac < 1):
            raise LapnetError(f"--val-frac must be in [0, 1), got {self.val_frac!r}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise LapnetError(f"--minutes must be positive, got {self.minutes!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LapnetError(f"--lr must be positive, got {self.lr!r}")
        if self.season is not None and (isinstance(self.season, bool) or not isinstance(self.season, int) or self.season < 1):
            raise LapnetError(f"--season must be a positive integer, got {self.season!r}")
        if self.patience is not None and self.patience < 1:
            raise LapnetError(f"--patience must be at least 1, got {self.patience!r}")


def windows(z: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of `window` values and the value after it: (M, W, 1) and (M, 1), M = N - W."""
    idx = np.arange(len(z) - window)[:, None] + np.arange(window)[None, :]  # (M, W)
    return z[idx][..., None], z[window:, None]  # (M, W, 1), (M, 1)


def split(n_values: int, cfg: SeriesConfig) -> tuple[int, int]:
    """(training windows, validation windows) for a series of `n_values`: the last `val_frac`
    of the windows are held out, at least one when val_frac > 0."""
    m = n_values - cfg.window - int(cfg.difference)  # differencing costs one value
    n_val = max(1, round(cfg.val_frac * m)) if cfg.val_frac > 0 else 0
    if m - n_val < 1:
        need = cfg.window + 1 + n_val + int(cfg.difference)
        raise LapnetError(f"the series has {n_values} values: a window of {cfg.window} and {n_val} held-out "
                          f"value(s) need at least {need} (shorten --window or lower --val-frac)")
    return m - n_val, n_val


def train_series(values: np.ndarray, cfg: SeriesConfig, out: str | Path, *, column: str = "value",
                 source: str | None = None) -> dict[str, Any]:
    """Train a forecaster on `values`, score it on the held-out end, write the run into `out`.

    Args:
        values: (N,) the series (`read_series`).
        cfg: the SeriesConfig.
        out: the run directory (created by the caller; fit writes model.safetensors, the best
            weights by validation MSE, last.safetensors and log.jsonl; this writes
            config.json, metrics.json and forecast.png).
        column, source: recorded in config.json.

    Returns:
        The metrics (also in metrics.json): validation MAE and RMSE of the model and of the
        baselines in the series' units, the model's skill against persistence, training facts.
    """
    cfg.validate()
    values = np.asarray(values, np.float64)
    out = Path(out)
    n_train, n_val = split(len(values), cfg)
    lag = int(cfg.difference)
    series = np.diff(values) if lag else values  # what the model reads and predicts
    seen = series[:cfg.window + n_train]  # everything the training windows and targets touch
    mean, sd = float(seen.mean()), float(seen.std())
    if not sd > 0:
        what = "changes by the same amount every step" if lag else "is constant"
        raise LapnetError(f"the training part of the series {what} ({mean:g}): nothing to learn")
    x, y = (torch.from_numpy(a).float() for a in windows((series - mean) / sd, cfg.window))  # (M, W, 1), (M, 1)
    x_tr, y_tr, x_va, y_va = x[:n_train], y[:n_train], x[n_train:], y[n_train:]

    torch.manual_seed(cfg.seed)
    model = Forecaster(cfg.arch, 1, cfg.hidden_size, 1, cfg.num_layers)
    mse = torch.nn.functional.mse_loss

    def loss_fn(net, batch, carry):
        xb, yb = batch
        return mse(net(xb)[0], yb), carry, len(xb)

    def evaluate(m):
        xs, ys = (x_va, y_va) if n_val else (x_tr, y_tr)  # no held-out part: the fit itself, as the notebook
        dev = next(m.parameters()).device
        return {"val_loss": mse(m(xs.to(dev))[0], ys.to(dev))}

    config = {"kind": KIND, "column": column, "source": source, "n_values": len(values), "mean": mean, "sd": sd,
              **{k: v for k, v in asdict(cfg).items() if k not in ("progress", "device")}}
    tcfg = TrainConfig(epochs=cfg.epochs, minutes=cfg.minutes, lr=cfg.lr, patience=cfg.patience if n_val else None,
                       seed=cfg.seed, progress=cfg.progress)
    result = fit(TorchLearner(model, loss_fn, evaluate, tcfg, cfg.device), Shuffled(x_tr, y_tr, batch_size=cfg.batch_size,
                 seed=cfg.seed), tcfg, out=out, meta={"config": config}, describe=f"series {cfg.arch}-{cfg.hidden_size}")
    write_json(out / "config.json", config)
    model = load_series_run(out)[0]  # the best weights, as `forecast` will load them

    with torch.no_grad():
        fitted = model(x)[0][:, 0].numpy().astype(np.float64) * sd + mean  # (M,) one-step predictions
    t_all = np.arange(cfg.window + lag, len(values))  # (M,) the targets' positions in the series
    if lag:
        fitted = values[t_all - 1] + fitted  # a predicted change, added to the value before it
    targets = values[t_all]
    held = slice(n_train, None) if n_val else slice(0, None)
    t = t_all[held]
    scores = {"model": _errors(fitted[held], targets[held]), "persistence": _errors(values[t - 1], targets[held])}
    if cfg.season is not None and t.min() - cfg.season >= 0:
        scores["seasonal_naive"] = _errors(values[t - cfg.season], targets[held])
    best_base = min(v["mae"] for k, v in scores.items() if k != "model")
    ahead = forecast_values(model, values, mean, sd, cfg.window, cfg.horizon, difference=cfg.difference)
    metrics = {
        "kind": KIND,
        "scored_on": "validation" if n_val else "training (no held-out part: --val-frac 0)",
        "n_values": len(values), "train_windows": n_train, "val_windows": n_val,
        "scores": scores,
        "skill_vs_best_baseline": 1 - scores["model"]["mae"] / best_base if best_base > 0 else None,
        "beats_baselines": all(scores["model"]["mae"] < v["mae"] for k, v in scores.items() if k != "model"),
        "forecast": ahead.tolist(),
        "train": {"stopped": result.stopped, "steps": result.steps, "epochs": round(result.epochs, 2),
                  "seconds": round(result.seconds, 2), "best_val_mse_scaled": result.best_val},
        "figures": [FIGURE],
    }
    _plot(values, t, fitted[held], ahead, column, cfg).savefig(out / FIGURE, dpi=110)
    write_json(out / "metrics.json", metrics)
    return metrics


def _errors(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = pred - actual
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


def _plot(values, t, pred, ahead, column, cfg):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    n = len(values)
    ax.plot(np.arange(n), values, color="0.55", lw=1.2, label=column)
    ax.plot(t, pred, color="C0", lw=1.4, label="one step ahead (held out)" if cfg.val_frac > 0 else "one step ahead (fit)")
    ax.plot(np.arange(n, n + len(ahead)), ahead, color="C3", lw=1.4, ls="--", label=f"forecast, {len(ahead)} steps")
    if cfg.val_frac > 0:
        ax.axvspan(t.min() - 0.5, n - 0.5, color="C0", alpha=0.07, lw=0)
    ax.set_xlabel("position in the series")
    ax.set_ylabel(column)
    ax.set_title(f"{cfg.arch.upper()}-{cfg.hidden_size}, windows of {cfg.window} {'changes' if cfg.difference else 'values'}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- using a run ---------------------------------------------------------------------------


def load_series_run(run: str | Path) -> tuple[Forecaster, dict[str, Any]]:
    """The forecaster a `train_series` run saved (its best weights) and its config; no pickle."""
    run = Path(run)
    if not run.is_dir():
        raise LapnetError(f"{run}: " + ("is a file, not a run directory" if run.exists() else "no such run directory"))
    if not (run / "config.json").is_file():
        raise LapnetError(f"{run}: no config.json: not a series run (train one with lapnet series train)")
    config = read_json(run / "config.json")
    if not isinstance(config, dict) or config.get("kind") != KIND:
        got = config.get("kind") if isinstance(config, dict) else None
        raise LapnetError(f"{run}: a {got or 'non-lapnet'} run, not a series run")
    try:
        model = Forecaster(config["arch"], 1, int(config["hidden_size"]), 1, int(config["num_layers"]))
        window, mean, sd = int(config["window"]), float(config["mean"]), float(config["sd"])
        difference = bool(config["difference"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run}/config.json: malformed ({e.__class__.__name__}: {e})") from None
    arrays, _ = load_tensors(run / "model.safetensors")
    want = model.state_dict()
    if set(arrays) != set(want) or any(tuple(arrays[k].shape) != tuple(want[k].shape) for k in want):
        raise CheckpointError(f"{run}/model.safetensors: does not fit the model config.json describes")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    model.eval()
    config.update(window=window, mean=mean, sd=sd, difference=difference)
    return model, config


def forecast_values(model: Forecaster, values: np.ndarray, mean: float, sd: float, window: int, steps: int, *,
                    difference: bool) -> np.ndarray:
    """(steps,) values past the end of `values`, each prediction fed back in (in the series' units)."""
    values = np.asarray(values, np.float64)
    series = np.diff(values) if difference else values
    if len(series) < window:
        need = window + int(difference)
        raise LapnetError(f"the series has {len(values)} values: the model reads windows of {window} "
                          f"{'changes' if difference else 'values'} (give at least {need})")
    last = torch.from_numpy((series[-window:] - mean) / sd).float()[None, :, None]  # (1, W, 1)
    ahead = model.rollout(last, steps)[0, :, 0].numpy().astype(np.float64) * sd + mean  # (steps,)
    return values[-1] + np.cumsum(ahead) if difference else ahead


def forecast_series(run: str | Path, values: np.ndarray, steps: int) -> np.ndarray:
    """The next `steps` values after `values`, forecast by the run's model.

    Args:
        run: a `train_series` run directory.
        values: (N,) the series so far, N >= the run's window (the same series it was trained
            on, or the same kind of series continued).
        steps: how many values to forecast.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise LapnetError(f"--steps must be a positive integer, got {steps!r}")
    model, config = load_series_run(run)
    return forecast_values(model, values, config["mean"], config["sd"], config["window"], int(steps),
                           difference=config["difference"])
