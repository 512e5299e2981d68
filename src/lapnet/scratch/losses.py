"""Losses that return (value, gradient): softmax cross-entropy and mean squared error."""

from __future__ import annotations

from typing import Any

import numpy as np

from lapnet.errors import LapnetError
from lapnet.scratch.activations import log_softmax


def softmax_cross_entropy(logits: Any, targets: Any, *, mask: Any = None, ignore_index: int | None = None):
    """Mean negative log-likelihood of `targets` under softmax(`logits`), and its gradient.

    Stable for any finite logits (1e4 included): log-softmax shifts by the row maximum.
    Positions where `mask` is False, or whose target equals `ignore_index`, count for
    nothing (as torch's ignore_index); the mean is over the counted positions.

    Args:
        logits: (..., V) scores.
        targets: (...) integer classes in [0, V).
        mask: (...) bool, optional.
        ignore_index: a target value to skip, optional.

    Returns:
        loss: float, mean nats per counted position (0.0 when none counts).
        dlogits: (..., V) gradient of the loss.
    """
    logits, targets = np.asarray(logits), np.asarray(targets)
    if logits.ndim < 1 or targets.shape != logits.shape[:-1]:
        raise LapnetError(f"targets shape {targets.shape} must equal logits shape {logits.shape} without the last axis")
    if not np.issubdtype(targets.dtype, np.integer):
        raise LapnetError(f"targets must be integer class ids, got dtype {targets.dtype}")
    V = logits.shape[-1]
    keep = np.ones(targets.shape, bool) if mask is None else np.asarray(mask, bool)
    if keep.shape != targets.shape:
        raise LapnetError(f"mask shape {keep.shape} must equal targets shape {targets.shape}")
    if ignore_index is not None:
        keep = keep & (targets != ignore_index)
    t = np.where(keep, targets, 0)
    if t.size and (t.min() < 0 or t.max() >= V):
        raise LapnetError(f"targets must be in [0, {V}), got min {t.min()} and max {t.max()}")
    if not np.isfinite(logits).all():
        raise LapnetError("logits contain NaN or infinite values")
    logp = log_softmax(logits)  # (..., V)
    picked = np.take_along_axis(logp, t[..., None], axis=-1)[..., 0]  # (...)
    n = int(keep.sum())
    if n == 0:
        return 0.0, np.zeros_like(logits)
    loss = float(-(picked * keep).sum() / n)
    grad = np.exp(logp)  # softmax
    np.put_along_axis(grad, t[..., None], np.take_along_axis(grad, t[..., None], axis=-1) - 1.0, axis=-1)
    grad *= (keep / n)[..., None].astype(logits.dtype)
    return loss, grad


def mse_loss(pred: Any, target: Any):
    """Mean squared error over every element, and its gradient (as torch's MSELoss).

    pred and target must be numeric arrays of the same shape with at least one element
    (a mean over nothing is undefined: torch returns nan, this refuses).

    Returns:
        loss: float.  dpred: same shape as pred, in the inputs' common float dtype (float64 for ints).
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise LapnetError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    if pred.dtype.kind not in "biuf" or target.dtype.kind not in "biuf":
        raise LapnetError(f"mse_loss needs numeric arrays, got dtypes {pred.dtype} (pred) and {target.dtype} (target)")
    if pred.size == 0:
        raise LapnetError(f"mse_loss needs at least one element, got empty arrays of shape {pred.shape}")
    dt = np.result_type(pred.dtype, target.dtype)
    dt = dt if dt.kind == "f" else np.dtype(np.float64)  # float inputs keep their dtype; ints and bools: float64
    diff = pred.astype(dt, copy=False) - target.astype(dt, copy=False)
    return float(np.mean(diff * diff)), diff * (2.0 / diff.size)
