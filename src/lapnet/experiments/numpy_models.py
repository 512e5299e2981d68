"""The trend and adding experiments on the NumPy engine (`--engine numpy`): model and learner.

    x (B, T, D) -> scratch.RNN/LSTM/GRU -> final state (B, dirs*H) -> scratch.Linear -> (B, K)

`NumpySequenceModel` is the NumPy twin of both `lapnet.models.Classifier` and
`lapnet.models.Forecaster` (for one layer, one direction, the Forecaster's last output
is the final state): the same parameter names (`rnn.weight_ih_l0`, ..., `head.bias`), so
weights move between the engines unchanged. Variable lengths use the engine's
`lengths=` (packed-sequence semantics: each sequence's final state is taken at its own
last step; the backward direction's at step 0).

`NumpySequenceLearner` is the `lapnet.train.fit` learner for it: the same step as TorchLearner
(loss, backward, element-wise then global-norm clipping, Adam at the scheduled lr).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lapnet import scratch
from lapnet.errors import LapnetError
from lapnet.scratch.recurrent import all_finite
from lapnet.train import numpy_learner_state, split_numpy_learner_state

_LAYERS = {"rnn": scratch.RNN, "lstm": scratch.LSTM, "gru": scratch.GRU}


class NumpySequenceModel:
    """Recurrent encoder + linear head on the final hidden state, in NumPy.

    Args:
        arch: "rnn", "lstm" or "gru".
        input_size: D.
        hidden_size: H.
        output_size: K, the head's outputs (1 logit for the trend, 1 value for adding).
        bidirectional: the head reads [forward h at the last step, backward h at step 0].
        dtype: float32 (training) or float64 (parity tests).
        seed: initial weights (the engine's own U(-1/sqrt(H), 1/sqrt(H)), as torch's rule).
    """

    def __init__(self, arch: str, input_size: int, hidden_size: int, output_size: int = 1, *,
                 bidirectional: bool = False, dtype: Any = np.float32, seed: int = 0):
        if arch not in _LAYERS:
            raise LapnetError(f"unknown architecture {arch!r}: expected one of {', '.join(_LAYERS)}")
        self.arch = arch
        self.rnn = _LAYERS[arch](input_size, hidden_size, 1, bidirectional=bidirectional, dtype=dtype, seed=seed)
        dirs = 2 if bidirectional else 1
        self.head = scratch.Linear(dirs * hidden_size, output_size, dtype=dtype, seed=seed + 1)
        self.dtype = self.rnn.dtype

    def _parts(self):
        return (("rnn.", self.rnn), ("head.", self.head))

    def parameters(self) -> dict[str, np.ndarray]:
        """The live arrays under torch's names (the optimizer updates them in place)."""
        return {prefix + k: v for prefix, part in self._parts() for k, v in part.parameters().items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the weights, named as the torch model's state_dict."""
        return {k: v.copy() for k, v in self.parameters().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load torch-named weights (numpy arrays or torch tensors) into the live arrays in
        place, so an optimizer holding them stays bound to them."""
        live = self.parameters()
        missing, extra = sorted(set(live) - set(state)), sorted(set(state) - set(live))
        if missing or extra:
            raise LapnetError(f"weights do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
        for k, v in live.items():
            a = np.asarray(state[k].detach().cpu().numpy() if hasattr(state[k], "detach") else state[k])
            if a.shape != v.shape:
                raise LapnetError(f"weight {k!r} has shape {a.shape}, expected {v.shape}")
            v[...] = a

    def forward(self, x: Any, lengths: Any = None):
        """x (B, T, D), lengths (B,) or None -> (outputs (B, K), cache for `backward`)."""
        _, state, rcache = self.rnn.forward(x, lengths=lengths)
        h_n = state[0] if self.arch == "lstm" else state  # (dirs, B, H)
        feat = np.concatenate([h_n[0], h_n[1]], axis=-1) if self.rnn.bidirectional else h_n[0]  # (B, dirs*H)
        if not all_finite(feat):  # diverged weights: NaN outputs, so that fit reports the divergence (Linear refuses NaN)
            return np.full((feat.shape[0], self.head.out_features), np.nan, feat.dtype), None
        y, hcache = self.head.forward(feat)  # (B, K)
        return y, (h_n.shape, rcache, hcache)

    __call__ = forward

    def backward(self, dy: np.ndarray, cache) -> dict[str, np.ndarray]:
        """dy (B, K) -> gradients keyed like `parameters()`."""
        shape, rcache, hcache = cache
        dfeat, g_head = self.head.backward(dy, hcache)  # (B, dirs*H)
        H = shape[-1]
        dh_n = dfeat.reshape(shape[1], shape[0], H).transpose(1, 0, 2)  # (dirs, B, H): [fwd | bwd] halves
        # only the final state feeds the head: no gradient on the per-step outputs
        dstate = (dh_n, None) if self.arch == "lstm" else dh_n
        _, _, g_rnn = self.rnn.backward(None, dstate, rcache)
        return {**{f"rnn.{k}": v for k, v in g_rnn.items()}, **{f"head.{k}": v for k, v in g_head.items()}}


def bce_with_logits(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of labels y in {0, 1} under sigmoid(z), and dL/dz (as
    torch's BCEWithLogitsLoss). Stable for any finite z: log(1 + e^z) = max(z, 0) + log1p(e^-|z|)."""
    z, y = np.asarray(z), np.asarray(y, dtype=np.asarray(z).dtype)
    if z.shape != y.shape:
        raise LapnetError(f"logits shape {z.shape} differs from labels shape {y.shape}")
    loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    p = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
    return float(loss.mean()), (p - y) / z.size


LOSSES: dict[str, Callable] = {"mse": scratch.mse_loss, "bce_with_logits": bce_with_logits}


class NumpySequenceLearner:
    """The `lapnet.train.fit` learner for a NumpySequenceModel.

    Batches are tuples (x, y) or (x, y, lengths), numpy arrays or CPU torch tensors.

    Args:
        model: the model to train (updated in place).
        loss: "mse" or "bce_with_logits", or a function (pred, y) -> (loss, dpred).
        evaluate_fn: (model) -> {"val_loss": ..., ...}.
        cfg: lapnet.train.TrainConfig (lr, clip, clip_value; weight decay is not supported).
        on_loss: called with each step's loss before its update (the notebook's loss curves).
    """

    def __init__(self, model: NumpySequenceModel, loss: str | Callable, evaluate_fn: Callable, cfg,
                 on_loss: Callable[[float], None] | None = None):
        if cfg.weight_decay:
            raise LapnetError("--engine numpy does not support weight decay (AdamW); use --engine torch")
        self.model, self.evaluate_fn, self.cfg, self.on_loss = model, evaluate_fn, cfg, on_loss
        self.loss = LOSSES[loss] if isinstance(loss, str) else loss
        self.opt = scratch.Adam(model.parameters(), lr=cfg.lr)

    def train_step(self, batch, carry, lr: float):
        x, y, *rest = (np.asarray(b) for b in batch)
        lengths = rest[0] if rest else None
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported by fit, once
            pred, cache = self.model.forward(x, lengths)  # (B, K)
            if not np.isfinite(pred).all():
                return float("nan"), carry, len(x)  # fit() stops before any update
            loss, dpred = self.loss(pred, y.astype(pred.dtype, copy=False))
            if self.on_loss is not None:
                self.on_loss(loss)
            if not np.isfinite(loss):
                return loss, carry, len(x)
            grads = self.model.backward(dpred, cache)
            if not all(np.isfinite(g).all() for g in grads.values()):  # overflowed: fit() stops before any update
                return float("nan"), carry, len(x)
            if self.cfg.clip_value is not None:
                scratch.clip_grad_value(grads, self.cfg.clip_value)
            if self.cfg.clip is not None:
                scratch.clip_grad_norm(grads, self.cfg.clip)
            self.opt.step(grads, lr)
        return loss, carry, len(x)

    def evaluate(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.evaluate_fn(self.model).items()}

    def weights(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return numpy_learner_state(self.weights(), self.opt)

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        weights, opt = split_numpy_learner_state(arrays, meta)
        self.model.load_state_dict(weights)
        self.opt.load_state_dict(opt)
