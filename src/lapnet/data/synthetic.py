"""Synthetic sequence tasks from the notebook and the RNN literature.

- sine windows (notebook section 6): 20 steps of a sine wave -> the next value;
- trend sequences (Exercise 2): a noisy line going up (label 1) or down (label 0),
  optionally with random lengths for packed sequences;
- the adding problem (Hochreiter and Schmidhuber 1997; Le, Jaitly and Hinton 2015):
  two channels, random values and two markers; the target is the sum of the two
  marked values, so predicting the mean (1.0) scores the variance 2/12 = 0.167;
- the copy task: remember a short symbol string across a long blank gap.

Every generator takes a `numpy.random.Generator` (or a seed) so a dataset is a pure
function of its seed. Arrays are float32, batch-first: x (B, T, D).
"""

from __future__ import annotations

import numpy as np

from lapnet.errors import LapnetError

ADDING_BASELINE_MSE = 2.0 / 12.0  # Var(U1 + U2) for independent U(0, 1): the "predict 1.0" score


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise LapnetError(f"{name} must be at least 1, got {value}")
    return int(value)


def sine_wave(n_points: int = 200, periods: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's wave: sin(t) on `n_points` evenly spaced t in [0, 2*pi*periods].

    Returns:
        t (n_points,) and sin(t) (n_points,), float32. The default is [0, 8*pi].
    """
    t = np.linspace(0.0, 2.0 * np.pi * periods, _positive("n_points", n_points)).astype(np.float32)
    return t, np.sin(t).astype(np.float32)


def sine_windows(series: np.ndarray, window: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows: `window` values -> the next value.

    Args:
        series: (N,) values.
        window: steps per input window.

    Returns:
        x (N - window, window, 1) and y (N - window, 1).
    """
    window = _positive("window", window)
    series = np.asarray(series, dtype=np.float32)
    if series.ndim != 1 or len(series) <= window:
        raise LapnetError(f"sine_windows: need a 1-D series longer than the window ({window}), got shape {series.shape}")
    idx = np.arange(len(series) - window)[:, None] + np.arange(window)[None, :]  # (N-w, w)
    return series[idx][..., None], series[window:, None]  # (N-w, w, 1), (N-w, 1)


def trend_sequences(
    n: int,
    seq_len: int = 20,
    *,
    min_len: int | None = None,
    noise: float = 0.3,
    seed: int | np.random.Generator = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exercise 2's data: slope * arange(T) + N(0, noise^2); up (label 1) or down (0).

    Slopes are U(0.05, 0.2) going up and U(-0.2, -0.05) going down, as in the notebook.
    With `min_len`, each sequence gets a random length in [min_len, seq_len]; steps past
    the end are zero padding (use `lengths` to pack them away).

    Returns:
        x (n, seq_len, 1) float32, y (n,) float32 labels, lengths (n,) int64.
    """
    n, seq_len = _positive("n", n), _positive("seq_len", seq_len)
    rng = _rng(seed)
    up = rng.random(n) > 0.5
    slope = np.where(up, rng.uniform(0.05, 0.2, n), rng.uniform(-0.2, -0.05, n))  # (n,)
    x = slope[:, None] * np.arange(seq_len)[None, :] + rng.standard_normal((n, seq_len)) * noise  # (n, T)
    if min_len is None:
        lengths = np.full(n, seq_len, dtype=np.int64)
    else:
        if not 1 <= min_len <= seq_len:
            raise LapnetError(f"min_len must be in [1, {seq_len}], got {min_len}")
        lengths = rng.integers(min_len, seq_len + 1, n).astype(np.int64)
        x[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0.0  # padding
    return x[..., None].astype(np.float32), up.astype(np.float32), lengths


def adding_problem(n: int, seq_len: int, *, seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem: sum the two marked values of a long random sequence.

    Channel 0 holds U(0, 1) values, channel 1 the markers: one 1 in the first half and
    one in the second half (Le et al. 2015), so the two relevant inputs are on average
    T/2 steps apart and the last one up to T/2 steps before the answer is due.

    Returns:
        x (n, seq_len, 2) float32 and y (n, 1) float32.
    """
    n, seq_len = _positive("n", n), _positive("seq_len", seq_len)
    if seq_len < 2:
        raise LapnetError(f"adding problem: seq_len must be at least 2, got {seq_len}")
    rng = _rng(seed)
    half = seq_len // 2
    values = rng.random((n, seq_len)).astype(np.float32)  # (n, T)
    first = rng.integers(0, half, n)
    second = rng.integers(half, seq_len, n)
    markers = np.zeros((n, seq_len), dtype=np.float32)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]  # (n,)
    return np.stack([values, markers], axis=-1), y[:, None].astype(np.float32)  # (n, T, 2), (n, 1)


def copy_task(
    n: int, n_symbols: int = 8, copy_len: int = 10, delay: int = 50, *, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The copy task: read `copy_len` symbols, wait `delay` blanks, then reproduce them.

    Token ids: 0 blank, 1..n_symbols the symbols, n_symbols + 1 the "go" marker placed
    one step before the answer starts. Total length T = 2 * copy_len + delay.

    Returns:
        x (n, T) int64 input tokens and y (n, T) int64 targets (blank except the last
        `copy_len` steps, which hold the copied symbols).
    """
    n, n_symbols = _positive("n", n), _positive("n_symbols", n_symbols)
    copy_len, delay = _positive("copy_len", copy_len), _positive("delay", delay)
    rng = _rng(seed)
    T = 2 * copy_len + delay
    symbols = rng.integers(1, n_symbols + 1, (n, copy_len))  # (n, copy_len)
    x = np.zeros((n, T), dtype=np.int64)
    y = np.zeros((n, T), dtype=np.int64)
    x[:, :copy_len] = symbols
    x[:, copy_len + delay - 1] = n_symbols + 1  # go marker
    y[:, -copy_len:] = symbols
    return x, y
