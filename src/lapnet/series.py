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
- an honest check: the last `holdout` of the windows is held out in time order (never
  shuffled into training); the model is early-stopped on its first half and scored on its
  second, which neither training nor early stopping has seen, in the series' own units,
  beside the baselines any forecast must beat on the same values: persistence (the last value)
  and, with `season`, the seasonal naive forecast (the value one season earlier);
- a forecast past the end: `Forecaster.rollout` feeds each prediction back in as an input.

A window of `window` values (or changes) predicts the next one: x (B, W, 1) -> y (B, 1),
batch-first.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from lapnet.checkpoint import HIDDEN_MAX, check_weights, load_tensors, model_layout, read_json, tensor_names, write_json
from lapnet.errors import CheckpointError, LapnetError
from lapnet.experiments.batches import Shuffled
from lapnet.host import own_torch_state
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, check_lr, fit

KIND = "lapnet-series"
FIGURE = "forecast.png"


# --- reading a series ----------------------------------------------------------------------


def read_series(source: Any, column: str | None = None, *, prefer: str | None = None) -> tuple[np.ndarray, str]:
    """One column of numbers, in file order.

    Args:
        source: a CSV path (with a header row, or headerless columns of numbers, named 1, 2, ...;
            `.csv.gz` too; "-" reads standard input), a pandas DataFrame or Series, or a 1-D array.
        column: the column to read; may be left out when the table has one numeric column.
            Spaces around it and around the header's names do not count.
        prefer: without `column`, the column to read if the table has it (a run's own column);
            when it has not, the column read instead is named in a warning.

    Returns:
        (values (N,) float64, the column's name).

    Raises:
        LapnetError: no such file or column, several numeric columns and no `column`, a cell
            that is not a number or is empty (named by its line in a CSV), numbers written with
            decimal commas or thousands separators, rows with more fields than the header, two
            header names alike but for spaces, or no values.

    Warns (UserWarning): `prefer` is not in the table; a date column runs newest first; a
    headerless file of two integer columns might be one column of decimal commas.
    """
    frame, where, first_line, facts = _frame(source)
    if facts.get("decimal_commas") == "sure":
        raise LapnetError(f"{where}: {facts['why']}{DECIMAL_COMMA_HINT}")
    column = column.strip() if isinstance(column, str) else column
    prefer = prefer.strip() if isinstance(prefer, str) else prefer
    if facts.get("headerless") and len(frame.columns) == 1:  # runs saved before 2026-11-28 named it "value"
        column, prefer = ("1" if c == "value" else c for c in (column, prefer))
    wanted = None
    if column is None and prefer is not None:
        if prefer in frame.columns:
            column = prefer
        else:
            wanted = prefer
    if column is None:
        numeric = [c for c in frame.columns if pd.to_numeric(frame[c], errors="coerce").notna().any()]
        commas = [c for c in frame.columns if c not in numeric and _comma_numbers(frame[c])]
        if len(frame.columns) == 1:
            column = frame.columns[0]
        elif commas:  # quoted "98,45" or "1,040": never a silent pick of another column
            example = next(str(v).strip() for v in frame[commas[0]] if str(v).strip())
            count = ("no numeric column" if not numeric
                     else f"{len(numeric)} numeric column(s) ({', '.join(map(str, numeric[:6]))})")
            raise LapnetError(f"{where}: {count}, and column {commas[0]!r} holds numbers written with commas "
                              f"({example!r}){COMMA_HINT}")
        elif len(numeric) == 1:
            column = numeric[0]
        elif not numeric:
            raise LapnetError(f"{where}: no column of numbers (columns: {', '.join(map(str, frame.columns[:8]))})")
        else:
            hint = f"; {facts['why']}{DECIMAL_COMMA_HINT}" if facts.get("decimal_commas") else ""
            raise LapnetError(f"{where}: {len(numeric)} numeric columns ({', '.join(map(str, numeric[:6]))}): "
                              f"choose one with --column{hint}")
        if wanted is not None:
            warnings.warn(f"{where} has no column {wanted!r}, the run's; reading {column!r}")
    elif facts.get("decimal_commas"):
        warnings.warn(f"{where}: {facts['why']}, read as two integer columns{DECIMAL_COMMA_HINT}")
    if column not in frame.columns:
        raise LapnetError(f"{where}: no column {column!r} (columns: {', '.join(map(str, frame.columns[:8]))})")
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if not bad.size and not pd.api.types.is_numeric_dtype(raw):  # pandas' parser can be 1 ulp off: float() is exact
        try:
            values = raw.astype(np.float64).to_numpy()
        except (ValueError, TypeError):  # a form pandas reads and float() does not: keep pandas' numbers
            pass
    if bad.size:
        i = int(bad[0])
        at = f"line {i + first_line}" if first_line else f"row {i + 1}"
        cell = raw.iloc[i]
        what = "is empty" if pd.isna(cell) or str(cell).strip() == "" else f"is not a finite number ({str(cell)[:30]!r})"
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        if any(sep in str(column) for sep in ";\t|"):
            hint = f": the header {str(column)[:30]!r} looks split by another separator; lapnet reads comma-separated CSV"
        elif _comma_numbers(raw.iloc[bad]):
            hint = COMMA_HINT
        elif bad.size > max(3, len(values) // 10):
            hint = ": is this the column of numbers? (--column)"
        else:
            hint = ": fill or drop missing values first"
        raise LapnetError(f"{where}: column {column}, {at} {what}{more}{hint}")
    if values.size == 0:
        raise LapnetError(f"{where}: no values")
    _say_newest_first(frame, column, where)
    return values, str(column)


COMMA_HINT = (": decimal commas or thousands separators? lapnet reads plain numbers with a decimal point "
              "(98.45, 1040): convert the column (or choose another with --column)")
DECIMAL_COMMA_HINT = ("; lapnet reads decimal points: convert them (98.45), or, if these really are two integer "
                      "columns, add a header row")
_COMMA_NUMBER = r"[+-]?(\d{1,3}(,\d{3})+(\.\d+)?|\d+,\d+)"  # 1,040 or 1,040.5 (thousands); 98,45 (a decimal comma)
_ISO_DATE = r"\d{4}-\d{1,2}(-\d{1,2})?([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"


def _comma_numbers(cells: pd.Series) -> bool:
    """Whether every non-blank cell is a number written with a comma (and there is one)."""
    text = cells.astype(str).str.strip()
    text = text[text != ""]
    return len(text) > 0 and bool(text.str.fullmatch(_COMMA_NUMBER).all())


def _say_newest_first(frame: pd.DataFrame, column: Any, where: str) -> None:
    """Warn when a column of ISO dates decreases from row to row: rows are read in file order, so a
    newest-first file would be forecast past its oldest row. Nothing is reordered."""
    for c in frame.columns:
        if c == column or len(frame) < 2:
            continue
        text = frame[c].astype(str).str.strip()
        if not text.str.fullmatch(_ISO_DATE).all():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            when = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if when.notna().all() and (np.diff(when.to_numpy().astype("datetime64[ns]").astype(np.int64)) < 0).all():
            warnings.warn(f"{where}: column {c!r} runs newest first ({text.iloc[0]} down to {text.iloc[-1]}); "
                          "lapnet reads rows in file order, so the forecast would continue before the oldest row: "
                          "sort the file oldest first")
            return


def _frame(source: Any) -> tuple[pd.DataFrame, str, int, dict[str, Any]]:
    """(table, how to name it, the file line of its first row or 0 when it is not a file, facts:
    "headerless" for a CSV without a header row; "decimal_commas" ("sure" or "maybe") and "why"
    for a headerless file of two integer columns that look like one of decimal commas)."""
    if isinstance(source, pd.Series):
        return source.to_frame(name=source.name if source.name is not None else "value"), "series", 0, {}
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), "table", 0, {}
    if isinstance(source, (np.ndarray, list, tuple)):
        a = np.asarray(source)
        if a.ndim != 1:
            raise LapnetError(f"a series is one-dimensional, got shape {a.shape}")
        return pd.DataFrame({"value": a}), "array", 0, {}
    if not isinstance(source, (str, Path)):
        raise LapnetError(f"cannot read a series from a {type(source).__name__}: give a CSV path or a DataFrame")
    where: Any
    if str(source) == "-":  # standard input, as `lapnet text train -`
        import sys

        path: Any = "standard input"
        stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        raw = stream.read(MAX_STREAM_BYTES + 1) if stream is not None else sys.stdin.read().encode("utf-8")
        if len(raw) > MAX_STREAM_BYTES:
            raise LapnetError(f"{path}: a stream of more than {MAX_STREAM_BYTES >> 20} MiB: give a file")
        where = raw
    else:
        path = Path(source)
        if path.is_dir() or not path.exists():
            raise LapnetError(f"{path}: " + ("is a directory, not a CSV file" if path.is_dir() else "no such file"))
        where = path
    if isinstance(where, Path) and not path.is_file():  # a pipe or <(...): read once (it is parsed twice), bounded
        import stat

        if stat.S_ISCHR(path.stat().st_mode) or stat.S_ISBLK(path.stat().st_mode):
            raise LapnetError(f"{path}: is a device, not a CSV file (it may never end)")
        with open(path, "rb") as f:
            raw = f.read(MAX_STREAM_BYTES + 1)
        if len(raw) > MAX_STREAM_BYTES:
            raise LapnetError(f"{path}: a stream of more than {MAX_STREAM_BYTES >> 20} MiB: give a file")
        where = raw

    def read(**kw) -> pd.DataFrame:
        import io

        try:
            return pd.read_csv(io.BytesIO(where) if isinstance(where, bytes) else where, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig", **kw)
        except pd.errors.EmptyDataError:
            raise LapnetError(f"{path}: empty file") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise LapnetError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:100]})") from None

    frame, first_line, facts = read(), 2, {}
    if all(_is_number(c) for c in frame.columns):  # columns of numbers without a header row
        frame, first_line, facts = read(header=None), 1, {"headerless": True}
        frame.columns = [str(i + 1) for i in range(len(frame.columns))]
    if not isinstance(frame.index, pd.RangeIndex):  # pandas made the first field an index: a field too many
        raise LapnetError(f"{path}: rows have more fields than the header (decimal commas, or a ';' separator? "
                          "lapnet reads comma-separated CSV with decimal points)")
    if not facts:  # spaces around the header's names ("month, units") are not part of them
        names = [str(c).strip() for c in frame.columns]
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise LapnetError(f"{path}: the header names {twice!r} twice (spaces around names do not count): "
                              "rename one")
        frame.columns = names
    blank = frame.apply(lambda c: c.astype(str).str.strip() == "").all(axis=1).to_numpy()
    end = len(frame) - int(np.argmin(blank[::-1])) if not blank.all() else 0  # trailing blank lines are no values
    frame = frame.iloc[:end]
    if facts and len(frame.columns) == 2 and len(frame):
        facts.update(_decimal_commas(frame))
    return frame, str(path), first_line, facts


def _decimal_commas(frame: pd.DataFrame) -> dict[str, str]:
    """Whether a headerless two-column file of integers (`98,45`, `107,20`, `94,07`) looks like one
    column of decimal commas: "sure" when the second field has the same number of digits on every
    row and a leading zero on some (`07`: no integer column is written so); "maybe" when it has the
    same number of digits on every row but no leading zero (two integer columns look so too)."""
    first, second = (frame[c].astype(str).str.strip() for c in frame.columns)
    if not (first.str.fullmatch(r"[+-]?\d+").all() and second.str.fullmatch(r"\d+").all()):
        return {}
    widths = second.str.len()
    if widths.nunique() != 1:
        return {}
    example = f"{first.iloc[0]},{second.iloc[0]}"
    zero = second[second.str.startswith("0")] if widths.iloc[0] > 1 else second.iloc[:0]
    if len(zero):
        z = zero.index[0]
        return {"decimal_commas": "sure",
                "why": f"rows like {example!r} and {first[z] + ',' + second[z]!r} look like one column of numbers "
                       f"with decimal commas (the second field always has {widths.iloc[0]} digits, and leading zeros)"}
    return {"decimal_commas": "maybe",
            "why": f"rows like {example!r} may be one column of numbers with decimal commas (the second field "
                   f"always has {widths.iloc[0]} digit{'s' if widths.iloc[0] > 1 else ''})"}


MAX_STREAM_BYTES = 1 << 30  # a series read from a pipe is held in memory whole


def _is_number(text: Any) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


# --- training ------------------------------------------------------------------------------


@dataclass
class SeriesConfig:
    """How to train a series forecaster (the notebook's section 6 defaults where it has them).

    CPU threads are the caller's, as for the other library entry points: `lapnet series train`
    calls `lapnet.cli.common.set_threads(--threads)`, 1 by default; call it (or
    `torch.set_num_threads(1)`) before `train_series`, or torch uses all its threads, which on a
    machine shared with other jobs is often several times slower for models this small.
    """

    arch: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    window: int = 20  # values in, the next one out (the notebook's 20)
    epochs: int = 200
    minutes: float | None = None
    lr: float = 0.01  # the notebook's Adam rate
    batch_size: int = 64
    holdout: float = 0.3  # the last windows, in time order: the first half early-stops, the second is scored (0: none)
    patience: int | None = 20  # evaluations without a better early-stopping MSE before stopping
    season: int | None = None  # a seasonal period (12 for monthly data): adds the seasonal naive baseline
    difference: bool = True  # model the changes between values (trends); False: the values themselves, as the notebook
    horizon: int = 20  # values forecast past the end of the series for the figure and metrics.json
    seed: int = 42
    device: str = "cpu"
    progress: bool = True

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Check the fields, and normalise `arch` to lower case (as make_recurrent takes it).

        Args:
            flags: field -> the command-line flag that set it (`lapnet series train` passes
                {"hidden_size": "--hidden", ...}), for errors that name the flag; by default
                they name the field, e.g. "window must be a positive integer, got 0".
        """
        flags = flags or {}

        def name(field: str) -> str:
            return flags.get(field, field)

        arch = self.arch.lower() if isinstance(self.arch, str) else self.arch
        if arch not in ARCHS:
            shown = f"{flags['arch']} {self.arch!r}" if "arch" in flags else f"arch={self.arch!r}"
            raise LapnetError(f"{shown}: expected one of {', '.join(ARCHS)}")
        self.arch = arch
        for field in ("hidden_size", "num_layers", "window", "epochs", "batch_size", "horizon"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise LapnetError(f"{name(field)} must be a positive integer, got {v!r}")
        if not (isinstance(self.holdout, (int, float)) and 0 <= self.holdout < 1):
            raise LapnetError(f"{name('holdout')} must be in [0, 1), got {self.holdout!r}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise LapnetError(f"{name('minutes')} must be a finite positive number, got {self.minutes!r}")
        check_lr(self.lr, name("lr"))  # float32's normal range, as every command
        if self.season is not None and (isinstance(self.season, bool) or not isinstance(self.season, int) or self.season < 1):
            raise LapnetError(f"{name('season')} must be a positive integer, got {self.season!r}")
        if self.patience is not None and self.patience < 1:
            raise LapnetError(f"{name('patience')} must be at least 1, got {self.patience!r}")


def windows(z: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of `window` values and the value after it: (M, W, 1) and (M, 1), M = N - W."""
    idx = np.arange(len(z) - window)[:, None] + np.arange(window)[None, :]  # (M, W)
    return z[idx][..., None], z[window:, None]  # (M, W, 1), (M, 1)


def split(n_values: int, cfg: SeriesConfig) -> tuple[int, int, int]:
    """(training, early-stopping, scored) windows for a series of `n_values`, in time order: the
    last `holdout` of the windows are held out, their first half for early stopping and their
    second half, which nothing in training has seen, for the scores (at least one each)."""
    m = n_values - cfg.window - int(cfg.difference)  # differencing costs one value
    n_hold = max(2, round(cfg.holdout * m)) if cfg.holdout > 0 else 0
    n_test = (n_hold + 1) // 2
    if m - n_hold < 1:
        need = cfg.window + 1 + n_hold + int(cfg.difference)
        raise LapnetError(f"the series has {n_values} values: a window of {cfg.window} and {n_hold} held-out "
                          f"value(s) need at least {need} (shorten --window or lower --holdout)")
    return m - n_hold, n_hold - n_test, n_test


def as_values(values: Any) -> np.ndarray:
    """`values` as a (N,) float64 array of finite numbers, or one clear LapnetError.

    What `train_series`, `check_series` and `forecast_series` take: the array of `read_series`
    (which returns `(values, column)`: pass its first item), a list or tuple of numbers, or a
    1-D NumPy array or pandas Series.
    """
    if (isinstance(values, tuple) and len(values) == 2 and isinstance(values[1], str)
            and isinstance(values[0], (np.ndarray, list, tuple, pd.Series))):
        raise LapnetError("got a (values, column) pair, as read_series returns: pass its values, "
                          "e.g. values, column = read_series(path)")
    if isinstance(values, (str, bytes, dict, set)) or values is None:
        raise LapnetError(f"a series is a 1-D array of numbers, got a {type(values).__name__}")
    try:
        a = np.asarray(values)
    except (ValueError, TypeError):  # ragged nesting
        raise LapnetError(f"a series is a 1-D array of numbers, got a {type(values).__name__} "
                          "that is not one") from None
    if a.ndim != 1:
        raise LapnetError(f"a series is a 1-D array of numbers, got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.number) or a.dtype == object):
        raise LapnetError(f"a series is a 1-D array of numbers, got dtype {a.dtype}")
    try:
        a = a.astype(np.float64)
    except (ValueError, TypeError):
        raise LapnetError("a series is a 1-D array of numbers: some entries are not numbers") from None
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise LapnetError(f"a series is a 1-D array of finite numbers: entry {int(bad[0])} is {a[bad[0]]}"
                          + (f" (and {bad.size - 1} more)" if bad.size > 1 else ""))
    huge = np.flatnonzero(np.abs(a) > MAX_ABS)
    if huge.size:  # its spread, squared errors and scaled values would overflow to inf mid-training
        raise LapnetError(f"a series' values must lie within +-{MAX_ABS:g}: entry {int(huge[0])} is {a[huge[0]]:g}"
                          + (f" (and {huge.size - 1} more)" if huge.size > 1 else "") + ": rescale it (other units)")
    top = float(np.abs(a).max()) if a.size else 0.0
    if 0 < top < MIN_ABS:  # squared errors (the MSE, RMSE) would underflow to 0
        raise LapnetError(f"a series' values must not all lie within +-{MIN_ABS:g}: the largest is {top:g}: "
                          "rescale it (other units)")
    return a


MAX_ABS = 1e150  # the largest |value| `as_values` takes: squares (the MSE) stay finite
MIN_ABS = 1e-150  # the largest |value| must reach it: squares of the changes stay above float64's smallest
REL_TOL = 1e-13  # an sd below this share of the values' size is rounding, not a signal (about 450 float64 epsilons)


def check_series(values: np.ndarray, cfg: SeriesConfig) -> None:
    """Refuse a series `train_series` cannot learn from, before anything is written: not a 1-D
    array of finite numbers, too short for the window and the held-out part, or a training part
    with nothing to learn."""
    values = as_values(values)
    n_train, _, _ = split(len(values), cfg)
    _scaling(values, n_train, cfg)


def _scaling(values: np.ndarray, n_train: int, cfg: SeriesConfig) -> tuple[np.ndarray, float, float]:
    """(what the model reads and predicts: the changes or the values, its training mean, sd).

    Refuses a training part with nothing to learn: constant, or (modelling changes) a straight
    line. The test is relative, so it does not depend on the series' units: an sd of at most
    REL_TOL times the largest |value| is float64 rounding.
    """
    lag = int(cfg.difference)
    series = np.diff(values) if cfg.difference else values
    seen = series[:cfg.window + n_train]  # everything the training windows and targets touch
    mean, sd = float(seen.mean()), float(seen.std())
    if not (np.isfinite(mean) and np.isfinite(sd)):
        raise LapnetError(f"the training part of the series is too spread out to scale (mean {mean:g}, sd {sd:g}): "
                          "rescale it (other units)")
    size = float(np.abs(values[:cfg.window + n_train + lag]).max())
    if sd <= REL_TOL * size:
        if not cfg.difference or abs(mean) <= REL_TOL * size:
            raise LapnetError(f"the training part of the series is constant (every value is {values[0]:g}): "
                              "nothing to learn (its forecast is that value)")
        raise LapnetError(f"the training part of the series is a straight line (every change is {mean:+g}): the "
                          f"drift forecast (the last value {mean:+g} per step) is exact, and there is nothing for a "
                          "model to learn")
    return series, mean, sd


@own_torch_state()
def train_series(values: np.ndarray, cfg: SeriesConfig, out: str | Path, *, column: str = "value",
                 source: str | None = None) -> dict[str, Any]:
    """Train a forecaster on `values`, score it on the held-out end, write the run into `out`.

    Args:
        values: (N,) the series: a 1-D array of finite numbers (the first item of what
            `read_series` returns).
        cfg: the SeriesConfig.
        out: the run directory (fit writes model.safetensors, the best weights by the
            early-stopping MSE, last.safetensors and log.jsonl; this writes config.json,
            metrics.json and forecast.png; an earlier run's files there are replaced).
        column, source: recorded in config.json.

    Returns:
        The metrics (also in metrics.json): MAE and RMSE on the scored values of the model and of
        the baselines in the series' units, the model's skill against the best baseline,
        training facts.

    Ctrl-C (SIGINT, or SIGTERM) stops training at the next step; the run is then finished
    from the best weights so far (config.json, metrics.json, forecast.png written) and the
    metrics returned, with `train.stopped` == "interrupted" (there is no resume: train again
    to finish). A second Ctrl-C before training has stopped raises KeyboardInterrupt:
    config.json, metrics.json and forecast.png are then not written.

    Raises:
        LapnetError: `values` is not a 1-D array of finite numbers (e.g. the whole `(values,
            column)` pair of `read_series`), the series is too short, or has nothing to learn.
    """
    cfg.validate()
    values = as_values(values)
    out = Path(out)
    n_train, n_stop, n_test = split(len(values), cfg)
    lag = int(cfg.difference)
    series, mean, sd = _scaling(values, n_train, cfg)
    x, y = (torch.from_numpy(a).float() for a in windows((series - mean) / sd, cfg.window))  # (M, W, 1), (M, 1)
    x_tr, y_tr = x[:n_train], y[:n_train]
    x_st, y_st = (x[n_train:n_train + n_stop], y[n_train:n_train + n_stop]) if n_stop else (x_tr, y_tr)

    torch.manual_seed(cfg.seed)
    model = Forecaster(cfg.arch, 1, cfg.hidden_size, 1, cfg.num_layers)
    mse = torch.nn.functional.mse_loss

    def loss_fn(net, batch, carry):
        xb, yb = batch
        return mse(net(xb)[0], yb), carry, len(xb)

    def evaluate(m):  # the early-stopping block; with no held-out part, the fit itself (as the notebook)
        dev = next(m.parameters()).device
        return {"val_loss": mse(m(x_st.to(dev))[0], y_st.to(dev))}

    config = {"kind": KIND, "column": column, "source": source, "n_values": len(values), "mean": mean, "sd": sd,
              **{k: v for k, v in asdict(cfg).items() if k not in ("progress", "device")}}
    tcfg = TrainConfig(epochs=cfg.epochs, minutes=cfg.minutes, lr=cfg.lr, patience=cfg.patience if n_stop else None,
                       seed=cfg.seed, progress=cfg.progress)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("log.jsonl", "last.safetensors"):  # an earlier run's: fit appends to the log
        (out / stale).unlink(missing_ok=True)
    result = fit(TorchLearner(model, loss_fn, evaluate, tcfg, cfg.device), Shuffled(x_tr, y_tr, batch_size=cfg.batch_size,
                 seed=cfg.seed), tcfg, out=out, meta={"config": config}, describe=f"series {cfg.arch}-{cfg.hidden_size}",
                 eval_label="stop MSE" if n_stop else "fit MSE", interrupt_hint="train again to finish")
    write_json(out / "config.json", config)
    model = load_series_run(out)[0]  # the best weights, as `forecast` will load them

    with torch.no_grad():
        fitted = model(x)[0][:, 0].numpy().astype(np.float64) * sd + mean  # (M,) one-step predictions
    t_all = np.arange(cfg.window + lag, len(values))  # (M,) the targets' positions in the series
    if lag:
        fitted = values[t_all - 1] + fitted  # a predicted change, added to the value before it
    scored = slice(len(t_all) - n_test, None) if n_test else slice(0, None)
    t, pred, actual = t_all[scored], fitted[scored], values[t_all[scored]]
    scores = {"model": _errors(pred, actual), "persistence": _errors(values[t - 1], actual)}
    notes = []
    if cfg.season is not None:
        ok = t - cfg.season >= 0  # the seasonal naive forecast needs a value one season back
        if ok.any():
            scores["seasonal_naive"] = _errors(values[t[ok] - cfg.season], actual[ok])
            if not ok.all():
                notes.append(f"seasonal_naive is scored on the last {int(ok.sum())} of the {plural(len(t), 'value')} "
                             f"(the others have no value one season of {cfg.season} back)")
        else:
            notes.append(f"no scored value has a value one season of {cfg.season} back: seasonal_naive not scored")
    if len(t) < 10:
        notes.append(f"scored on {plural(len(t), 'value')} only: these numbers say little "
                     "(a longer series or a larger --holdout)")
    best_base = min(v["mae"] for k, v in scores.items() if k != "model")
    ahead = forecast_values(model, values, mean, sd, cfg.window, cfg.horizon, difference=cfg.difference)
    metrics = {
        "kind": KIND,
        "scored_on": (f"the last {plural(n_test, 'value', bare=True)}, held out from training and from early stopping"
                      if n_test
                      else "the training values (--holdout 0: nothing held out)"),
        "n_values": len(values), "train_windows": n_train, "stop_windows": n_stop, "scored_windows": len(t),
        "scores": scores,
        "skill_vs_best_baseline": 1 - scores["model"]["mae"] / best_base if best_base > 0 else None,
        "notes": notes,
        "forecast": ahead.tolist(),
        "train": {"stopped": result.stopped, "steps": result.steps, "epochs": round(result.epochs, 2),
                  "seconds": round(result.seconds, 2), "best_stop_mse_scaled": result.best_val},
        "figures": [FIGURE],
    }
    for note in notes:
        warnings.warn(note)
    from lapnet.plots import save_figure

    save_figure(_plot(values, t, pred, ahead, column, cfg, n_stop), out / FIGURE, dpi=110)  # atomic
    write_json(out / "metrics.json", metrics)
    return metrics


def plural(n: int, word: str, *, bare: bool = False) -> str:
    """"3 values", "1 value"; `bare`: "value" alone for one ("the last value", not "the last 1 values")."""
    return word if bare and n == 1 else f"{n} {word}{'' if n == 1 else 's'}"


def _errors(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = pred - actual
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


def _plot(values, t, pred, ahead, column, cfg, n_stop):
    from lapnet.plots import new_figure

    fig, ax = new_figure(figsize=(9, 3.8))
    n = len(values)
    few = {"marker": "."} if len(t) < 10 else {}
    ax.plot(np.arange(n), values, color="0.55", lw=1.2, label=column)
    held = cfg.holdout > 0
    ax.plot(t, pred, color="C0", lw=1.4, label="one step ahead (scored, held out)" if held else "one step ahead (fit)", **few)
    ax.plot(np.arange(n - 1, n + len(ahead)), np.r_[values[-1], ahead], color="C3", lw=1.4, ls="--",
            label=f"forecast, {len(ahead)} steps")
    if held:
        ax.axvspan(t.min() - n_stop - 0.5, t.min() - 0.5, color="0.5", alpha=0.08, lw=0, label="early stopping")
        ax.axvspan(t.min() - 0.5, n - 0.5, color="C0", alpha=0.08, lw=0, label="scored")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("position in the series")
    ax.set_ylabel(column)
    ax.set_title(f"{cfg.arch.upper()}-{cfg.hidden_size}, windows of {cfg.window} {'changes' if cfg.difference else 'values'}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


# --- using a run ---------------------------------------------------------------------------


@own_torch_state()
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
        got = got if isinstance(got, str) and len(got) <= 40 else None  # a kind of lapnet's is a short name
        raise LapnetError(f"{run}: a {got or 'non-lapnet'} run, not a series run")
    where = run / "model.safetensors"
    arch, hidden, layers, window, mean, sd, difference = _checked_config(run / "config.json", config, len(tensor_names(where)))
    layout = model_layout(lambda: Forecaster(arch, 1, hidden, 1, layers))  # no memory allocated: the shapes alone
    arrays, _ = load_tensors(where, layout, hint="retrain it with lapnet series train")
    model = Forecaster(arch, 1, hidden, 1, layers)
    want = model.state_dict()
    check_weights(arrays, want, where)  # int64 or NaN weights would load silently
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    model.eval()
    config.update(arch=arch, hidden_size=hidden, num_layers=layers, window=window, mean=mean, sd=sd, difference=difference)
    return model, config


INT_MAX = 2**31 - 1  # the bound of every integer option but --hidden (cli.common.INT_MAX)


def _checked_config(where: Path, config: Mapping[str, Any], n_tensors: int) -> tuple[str, int, int, int, float, float, bool]:
    """config.json's model fields, each checked as `train_series` writes them, before anything is
    built: (arch, hidden_size, num_layers, window, mean, sd, difference). A run shared by someone
    else is input like any other: "8" or 8.9 hidden units passed int(), 20,000 layers hung while
    the model was built, and a NaN, infinite, zero or 1e308 mean or sd gave a NaN or infinite
    forecast with exit code 0.

    `n_tensors`: the tensors model.safetensors holds; each layer holds some of its own, so a
    config asking for more layers does not fit it (said before the model is described at all).

    Raises:
        CheckpointError: one line naming the file and every bad field.
    """
    def shown(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    def whole(v: Any, high: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high

    def real(v: Any) -> bool:  # a finite number; an integer of 400 digits is compared, never made a float
        return isinstance(v, (int, float)) and not isinstance(v, bool) and -math.inf < v < math.inf

    missing = [k for k in ("arch", "hidden_size", "num_layers", "window", "mean", "sd", "difference") if k not in config]
    if missing:
        raise CheckpointError(f"{where}: malformed (no {', '.join(missing)}): retrain the run with lapnet series train")
    problems = []
    arch = config["arch"]
    if not (isinstance(arch, str) and arch.lower() in ARCHS):
        problems.append(f"arch is {shown(arch)}, not one of {', '.join(ARCHS)}")
    for name, high in (("hidden_size", HIDDEN_MAX), ("num_layers", INT_MAX), ("window", INT_MAX)):
        if not whole(config[name], high):
            problems.append(f"{name} is {shown(config[name])}, not a whole number from 1 to {high}")
    if whole(config["num_layers"], INT_MAX) and config["num_layers"] > n_tensors:
        problems.append(f"num_layers is {config['num_layers']}, but model.safetensors holds only {n_tensors} tensors")
    # the scaling `_scaling` stored: the training part's mean and sd, of values within +-MAX_ABS
    # (`as_values`), and an sd it found above rounding: anything else was never written by it
    mean, sd = config["mean"], config["sd"]
    if not (real(mean) and abs(mean) <= 2 * MAX_ABS):
        problems.append(f"mean is {shown(mean)}, not a finite number within +-{2 * MAX_ABS:g}")
    if not (real(sd) and REL_TOL * MIN_ABS <= sd <= 2 * MAX_ABS):
        problems.append(f"sd is {shown(sd)}, not a positive number from {REL_TOL * MIN_ABS:g} to {2 * MAX_ABS:g}")
    if not isinstance(config["difference"], bool):
        problems.append(f"difference is {shown(config['difference'])}, not true or false")
    column = config.get("column")
    if column is not None and not isinstance(column, str):
        problems.append(f"column is {shown(column)}, not a column's name")
    if problems:
        raise CheckpointError(f"{where}: malformed: {'; '.join(problems)}: retrain the run with lapnet series train")
    return (arch.lower(), config["hidden_size"], config["num_layers"], config["window"], float(mean), float(sd),
            config["difference"])


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


@own_torch_state()
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
    values = as_values(values)
    model, config = load_series_run(run)
    _say_far_outside(values, config)
    return forecast_values(model, values, config["mean"], config["sd"], config["window"], int(steps),
                           difference=config["difference"])


FAR = 10  # training sds from the training mean, in the model's units: beyond this, the window is another series


def _say_far_outside(values: np.ndarray, config: Mapping[str, Any]) -> None:
    """Warn when the last window the forecast starts from lies more than FAR training sds from the
    training mean, in the model's units (the changes, or with --levels the values): another
    column, other units, or another series; the model never saw anything like it."""
    window, difference = config["window"], config["difference"]
    series = np.diff(values) if difference else values
    if len(series) < window:
        return  # forecast_values refuses it
    z = np.abs(series[-window:] - config["mean"]) / config["sd"]
    if z.max() > FAR:
        what = "changes" if difference else "values"
        warnings.warn(f"the series' last {window} {what} lie up to {z.max():.3g} training sds from the training "
                      f"mean (more than {FAR}; the model's {what} had mean {config['mean']:.6g}, sd {config['sd']:.6g}): "
                      "far outside what it trained on, so the forecast is an extrapolation: is this the same series, "
                      "in the same units?")
