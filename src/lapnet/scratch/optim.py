"""Optimizers and gradient clipping over dicts of NumPy arrays.

Each optimizer holds references to the live parameter arrays (name -> ndarray, e.g.
`layer.parameters()`) and updates them in place from a dict of gradients with the same
names. The update rules and the defaults are torch's (torch.optim.SGD lr=0.001,
Adagrad lr=0.01 eps=1e-10, Adam lr=0.001 betas=(0.9, 0.999) eps=1e-8, momentum and
weight_decay 0; checked against the installed torch by tests/test_scratch_reference.py), so
a NumPy run can mirror a torch run step for step. Not implemented: SGD's dampening, Adagrad's
lr_decay and initial_accumulator_value, Adam's amsgrad, and maximize.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from lapnet.errors import LapnetError
from lapnet.scratch.recurrent import all_finite


def _number(name: str, v: Any, *, positive: bool = False) -> float:
    """`v` as a finite float, > 0 (`positive`) or >= 0; else a LapnetError naming `name`."""
    try:
        f = math.nan if isinstance(v, (str, bytes)) else float(v)
    except (TypeError, ValueError):
        f = math.nan
    if isinstance(v, (bool, np.bool_)) or not math.isfinite(f) or (f <= 0 if positive else f < 0):
        raise LapnetError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")
    return f


def _float_arrays(what: str, arrays: Any, role: str, updated: str) -> dict[str, np.ndarray]:
    """`arrays` as a dict of writable float ndarrays (they are `updated` in place), else a
    LapnetError naming the first offender."""
    if not isinstance(arrays, Mapping):
        example = "layer.parameters()" if role == "parameter" else "the grads backward returns"
        raise LapnetError(f"{what} needs a dict of name -> {role} array ({example}), got {type(arrays).__name__}")
    for k, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            got = f"an array of dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise LapnetError(f"{what}: {role} {k!r} must be a float numpy array ({updated} in place), got {got}")
        if not a.flags.writeable:
            raise LapnetError(f"{what}: {role} {k!r} is a read-only array; it is {updated} in place")
    return dict(arrays)


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`.

    Same rule as torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6)),
    the norm summed in float64 (as torch on the CPU), so finite float32 gradients never
    overflow it. Returns the norm before clipping.

    A gradient containing NaN or inf is refused with a LapnetError naming it, and nothing
    is changed, as torch's clip_grad_norm_(..., error_if_nonfinite=True) does: such a norm
    cannot be clipped to anything meaningful, and the run has diverged (torch's default,
    error_if_nonfinite=False, scales every gradient by NaN instead).
    """
    max_norm = _number("max_norm", max_norm, positive=True)
    grads = _float_arrays("clip_grad_norm", grads, "gradient", "scaled")
    bad = [k for k, g in grads.items() if not all_finite(g)]
    if bad:
        many = len(bad) > 1
        raise LapnetError(f"clip_grad_norm: gradient{'s' * many} {', '.join(map(repr, bad))} "
                          f"contain{'s' * (not many)} NaN or infinite values (nothing was changed): "
                          f"the run has diverged; lower the learning rate")
    total = math.sqrt(sum(float(np.vdot(a, a)) for a in (g.astype(np.float64, copy=False) for g in grads.values())))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= coef
    return total


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> None:
    """Clip every gradient element to [-clip_value, clip_value] in place (char-rnn's rule;
    as torch's clip_grad_value_, inf becomes +-clip_value and NaN stays NaN)."""
    clip_value = _number("clip_value", clip_value, positive=True)
    for g in _float_arrays("clip_grad_value", grads, "gradient", "clipped").values():
        np.clip(g, -clip_value, clip_value, out=g)


class Optimizer:
    """Base: parameter references, a step counter, and a flat state for checkpoints."""

    _slots: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, np.ndarray], lr: float) -> None:
        self.lr = _number("lr", lr, positive=True)
        self.params = _float_arrays(type(self).__name__, params, "parameter", "updated")
        if not self.params:
            raise LapnetError(f"{type(self).__name__} got an empty dict of parameters")
        self.t = 0
        self.state = {s: {k: np.zeros_like(p) for k, p in self.params.items()} for s in self._slots}

    def _check(self, grads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The gradients as arrays of their parameters' dtypes; every check before any update."""
        if not isinstance(grads, Mapping):
            raise LapnetError(f"step needs a dict of name -> gradient array, got {type(grads).__name__}")
        missing = [k for k in self.params if k not in grads]
        if missing:
            raise LapnetError(f"no gradient for parameter(s) {', '.join(missing)}")
        out = {}
        for k, p in self.params.items():
            g = np.asarray(grads[k])
            if g.shape != p.shape:
                raise LapnetError(f"gradient {k!r} has shape {g.shape}, parameter {p.shape}")
            if g.dtype.kind not in "biuf":
                raise LapnetError(f"gradient {k!r} must be numeric, got dtype {g.dtype}")
            out[k] = g.astype(p.dtype, copy=False)
        return out

    def step(self, grads: Mapping[str, np.ndarray], lr: float | None = None) -> None:
        """Update every parameter in place; `lr` overrides the rate for this step (schedules)."""
        grads = self._check(grads)
        lr = self.lr if lr is None else _number("lr", lr)  # a schedule may reach 0
        self.t += 1
        for k, p in self.params.items():
            self._update(k, p, grads[k], lr)

    def _update(self, k: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays for a checkpoint: '<slot>.<param>' plus 'step'."""
        out = {f"{s}.{k}": v.copy() for s, d in self.state.items() for k, v in d.items()}
        out["step"] = np.array(self.t, np.int64)
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        if not isinstance(state, Mapping):
            raise LapnetError(f"optimizer state must be a dict of name -> array, got {type(state).__name__}")
        want = {f"{s}.{k}" for s in self._slots for k in self.params} | {"step"}
        if set(state) != want:
            raise LapnetError(f"optimizer state does not match: missing {sorted(want - set(state))}, "
                              f"unexpected {sorted(set(state) - want)}")
        for s in self._slots:
            for k, p in self.params.items():
                a = np.asarray(state[f"{s}.{k}"])
                if a.shape != p.shape:
                    raise LapnetError(f"optimizer state {s}.{k} has shape {a.shape}, expected {p.shape}")
                self.state[s][k] = a.astype(p.dtype)
        self.t = int(state["step"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (torch.optim.SGD, dampening 0).

    buf = momentum * buf + g (buf = g on the first step); p -= lr * buf
    (nesterov: p -= lr * (g + momentum * buf)); weight_decay adds wd * p to g.
    """

    _slots = ("momentum",)

    def __init__(self, params, lr: float = 0.001, momentum: float = 0.0, *, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum, self.nesterov = _number("momentum", momentum), bool(nesterov)
        self.weight_decay = _number("weight_decay", weight_decay)
        if self.nesterov and not self.momentum:
            raise LapnetError("nesterov=True needs momentum > 0")

    def _update(self, k, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = self.state["momentum"][k]
            if self.t == 1:
                buf[...] = g
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= lr * g


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad): sum += g^2; p -= lr * g / (sqrt(sum) + eps)."""

    _slots = ("sum",)

    def __init__(self, params, lr: float = 0.01, *, eps: float = 1e-10, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.eps, self.weight_decay = _number("eps", eps), _number("weight_decay", weight_decay)

    def _update(self, k, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = self.state["sum"][k]
        s += g * g
        p -= lr * g / (np.sqrt(s) + self.eps)


class Adam(Optimizer):
    """Adam (torch.optim.Adam, L2 weight decay added to the gradient as torch does).

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    _slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 *, weight_decay: float = 0.0):
        super().__init__(params, lr)
        try:
            b1, b2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            b1 = b2 = math.nan
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise LapnetError(f"Adam betas must be two numbers in [0, 1), got {betas!r}")
        self.b1, self.b2 = b1, b2
        self.eps, self.weight_decay = _number("eps", eps), _number("weight_decay", weight_decay)

    def _update(self, k, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        m, v = self.state["exp_avg"][k], self.state["exp_avg_sq"][k]
        m *= self.b1
        m += (1.0 - self.b1) * g
        v *= self.b2
        v += (1.0 - self.b2) * (g * g)
        bc1 = 1.0 - self.b1 ** self.t
        bc2_sqrt = np.sqrt(1.0 - self.b2 ** self.t)
        denom = np.sqrt(v) / bc2_sqrt
        denom += self.eps
        p -= (lr / bc1) * (m / denom)
