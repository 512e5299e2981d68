"""Finite-difference gradient check of a recurrent layer, torch-free.

The loss is a fixed random projection of everything the layer returns,
L = sum(out * R) + sum(h_n * S) (+ sum(c_n * U) for an LSTM), so every output and the
final state carry a gradient. For sampled entries of every parameter, of the input and
of the initial state(s), the analytic gradient from `backward` is compared with the
central difference (L(w + eps) - L(w - eps)) / (2 eps), in float64 (eps = 1e-5
balances truncation error, O(eps^2), against rounding, O(1e-16 / eps)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lapnet.errors import LapnetError


@dataclass
class GradcheckResult:
    """Per checked tensor: how many entries were sampled and the worst relative error."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max((r["max_rel_error"] for r in self.rows), default=0.0)

    def ok(self, tol: float = 1e-6) -> bool:
        return self.max_rel_error < tol


def _rel(a: float, n: float) -> float:
    # relative error; gradients below 1e-6 (e.g. exactly zero past a sequence's end) are
    # compared in absolute terms, where finite differences have no relative precision
    return abs(a - n) / max(abs(a), abs(n), 1e-6)


def gradcheck(layer, x, state=None, lengths=None, *, samples: int = 6, eps: float = 1e-5, seed: int = 0) -> GradcheckResult:
    """Compare `layer.backward` with central differences on sampled entries.

    Args:
        layer: scratch.RNN / LSTM / GRU (any dtype; checked on a float64 copy).
        x: (B, T, D) input.  state: initial state or None (then a random one is used, so
            that dL/dh0 is checked too).  lengths: (B,) or None.
        samples: entries sampled per tensor.  eps: finite-difference step.  seed: sampling.

    Returns:
        GradcheckResult with one row per parameter, "input", "h0" (and "c0").
    """
    layer = layer.astype(np.float64)
    rng = np.random.default_rng(seed)
    x = np.array(x, np.float64)
    B = x.shape[0] if x.ndim == 3 else 0
    shape = (layer.num_layers * layer.num_directions, B, layer.hidden_size)
    lstm = layer.kind == "lstm"
    if state is None:
        state = (rng.standard_normal(shape), rng.standard_normal(shape)) if lstm else rng.standard_normal(shape)
    state = tuple(np.array(s, np.float64) for s in state) if lstm else np.array(state, np.float64)
    out, st, cache = layer.forward(x, state, lengths)  # validates everything once
    R = rng.standard_normal(out.shape)
    S = [rng.standard_normal(s.shape) for s in (st if lstm else (st,))]

    def outputs() -> list[np.ndarray]:
        o, s, _ = layer.forward(x, state, lengths)
        return [o, *(s if lstm else (s,))]

    def slope(up: list[np.ndarray], down: list[np.ndarray]) -> float:
        # project the output differences, not two large totals: no cancellation
        return float(sum(((u - d) * w).sum() for u, d, w in zip(up, down, [R, *S]))) / (2 * eps)

    dx, ds0, grads = layer.backward(R, tuple(S) if lstm else S[0], cache)
    targets = [(n, p, grads[n]) for n, p in layer.parameters().items()]
    targets.append(("input", x, dx))
    if lstm:
        targets += [("h0", state[0], ds0[0]), ("c0", state[1], ds0[1])]
    else:
        targets.append(("h0", state, ds0))
    result = GradcheckResult()
    for name, arr, analytic in targets:
        flat = arr.reshape(-1)  # a view: perturbing it perturbs the tensor forward reads
        idx = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
        worst = 0.0
        for j in idx:
            old = flat[j]
            flat[j] = old + eps
            up = outputs()
            flat[j] = old - eps
            down = outputs()
            flat[j] = old
            worst = max(worst, _rel(float(analytic.reshape(-1)[j]), slope(up, down)))
        result.rows.append({"tensor": name, "checked": int(len(idx)), "max_rel_error": worst})
    if not np.isfinite(result.max_rel_error):
        raise LapnetError("gradcheck produced a non-finite error")
    return result
