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

    Returns:
        loss: float.  dpred: same shape as pred.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise LapnetError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    diff = pred - target
    return float(np.mean(diff * diff)), diff * (2.0 / diff.size)
