"""Embedding and Linear: the layers around a recurrent core (char LM, forecaster heads).

Same conventions as the recurrent layers: torch's parameter names (`weight`, `bias`) and
shapes, `forward` returns (y, cache), `backward` takes the cache, nothing is remembered.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lapnet.errors import LapnetError
from lapnet.scratch.recurrent import all_finite, as_numpy, check_dtype, check_param, check_seed, check_size


def _check_dy(dy: Any, shape: tuple[int, ...], layer: str, dtype: np.dtype) -> np.ndarray:
    """The upstream gradient as an array of `dtype`: shaped like the layer's output, numeric, finite."""
    dy = as_numpy(dy, f"{layer} backward: dy")
    if dy.shape != shape:
        raise LapnetError(f"{layer} backward: dy must have shape {shape} like the output, got {dy.shape}")
    if dy.dtype.kind not in "biuf":
        raise LapnetError(f"{layer} backward: dy must be numeric, got dtype {dy.dtype}")
    dy = dy.astype(dtype, copy=False)
    if not all_finite(dy):
        raise LapnetError(f"{layer} backward: dy contains NaN or infinite values")
    return dy


class _Module:
    """Parameter bookkeeping shared by Embedding and Linear."""

    _params: dict[str, np.ndarray]
    dtype: np.dtype

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays (an optimizer updates them in place)."""
        return self._params

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy numpy arrays or torch tensors into the parameters; keys and shapes must match.

        Copied into the existing arrays (as torch does), so an optimizer built earlier from
        `parameters()` keeps training this layer; all checks run before anything is copied.
        """
        if not isinstance(state, Mapping):
            raise LapnetError(f"state_dict must be a mapping of name -> array, got {type(state).__name__}")
        if set(state) != set(self._params):
            raise LapnetError(f"state_dict keys {sorted(state)} do not match {sorted(self._params)} of {type(self).__name__}")
        arrays = {k: check_param(state[k], k, v.shape) for k, v in self._params.items()}
        for k, a in arrays.items():
            np.copyto(self._params[k], a, casting="unsafe")  # in place: optimizers hold these arrays


class Embedding(_Module):
    """Lookup table, like torch.nn.Embedding: token ids (...) -> vectors (..., D).

    Args:
        num_embeddings: V, the vocabulary size.  embedding_dim: D.
        dtype: float32 or float64.  seed: initial weights, N(0, 1) as torch.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: Any = np.float32, seed: int | None = 0):
        self.num_embeddings = check_size("num_embeddings", num_embeddings)
        self.embedding_dim = check_size("embedding_dim", embedding_dim)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(check_seed(seed))
        self._params = {"weight": rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)}

    def forward(self, ids: Any):
        """ids (...) ints in [0, V) -> (vectors (..., D), cache)."""
        ids = as_numpy(ids, "Embedding input")
        if not np.issubdtype(ids.dtype, np.integer):
            raise LapnetError(f"Embedding input must be integer token ids, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise LapnetError(f"token ids must be in [0, {self.num_embeddings}), got min {ids.min()} and max {ids.max()}")
        return self._params["weight"][ids], ids  # (..., D)

    __call__ = forward

    def backward(self, dy: np.ndarray, cache: np.ndarray) -> dict[str, np.ndarray]:
        """dy (..., D) -> {'weight': (V, D)}: rows of repeated ids accumulate."""
        ids = cache
        if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu":
            raise LapnetError("Embedding backward needs the cache forward returned (the token ids)")
        dy = _check_dy(dy, ids.shape + (self.embedding_dim,), "Embedding", self.dtype)
        dy = dy.reshape(-1, self.embedding_dim)  # (N, D)
        dw = np.zeros_like(self._params["weight"])
        np.add.at(dw, ids.ravel(), dy)
        return {"weight": dw}


class Linear(_Module):
    """Affine map, like torch.nn.Linear: y = x W^T + b, x (..., D_in) -> y (..., D_out).

    Args:
        in_features, out_features: D_in, D_out.  dtype, seed: as above; weights and bias
        start U(-1/sqrt(D_in), 1/sqrt(D_in)) as torch's.
    """

    def __init__(self, in_features: int, out_features: int, *, dtype: Any = np.float32, seed: int | None = 0):
        self.in_features = check_size("in_features", in_features)
        self.out_features = check_size("out_features", out_features)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(check_seed(seed))
        k = 1.0 / np.sqrt(self.in_features)
        self._params = {
            "weight": rng.uniform(-k, k, (self.out_features, self.in_features)).astype(self.dtype),
            "bias": rng.uniform(-k, k, self.out_features).astype(self.dtype),
        }

    def forward(self, x: Any):
        """x (..., D_in) -> (y (..., D_out), cache)."""
        x = as_numpy(x, "Linear input")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise LapnetError(f"Linear input must end with {self.in_features} features, got shape {x.shape}")
        if x.dtype.kind not in "biuf":  # bool, ints, floats
            raise LapnetError(f"Linear input must be numeric, got dtype {x.dtype}")
        x = x.astype(self.dtype, copy=False)
        if not all_finite(x):  # as the recurrent layers: refused before any work
            raise LapnetError("Linear input contains NaN or infinite values")
        y = x @ self._params["weight"].T  # (..., D_out)
        y += self._params["bias"]
        return y, x

    __call__ = forward

    def backward(self, dy: np.ndarray, cache: np.ndarray):
        """dy (..., D_out) -> (dx (..., D_in), {'weight', 'bias'})."""
        x = cache
        if not isinstance(x, np.ndarray) or x.shape[-1:] != (self.in_features,):
            raise LapnetError("Linear backward needs the cache forward returned (its input x)")
        dy = _check_dy(dy, x.shape[:-1] + (self.out_features,), "Linear", self.dtype)
        dy2 = dy.reshape(-1, self.out_features)  # (N, D_out)
        grads = {"weight": dy2.T @ x.reshape(-1, self.in_features), "bias": dy2.sum(axis=0)}
        return dy @ self._params["weight"], grads  # (..., D_in)
