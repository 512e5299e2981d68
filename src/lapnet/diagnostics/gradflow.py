"""Gradient flow through time, measured: dL_T/dh_t for every step t of a real model.

The notebook's section 3 writes

    dL_T/dh_t = dL_T/dh_T * prod_{k=t+1..T} dh_k/dh_{k-1}

and then simulates the product with random numbers. Here the product is the real one:
the loss L_T is read from the last hidden state h_T through the model's own head, and
the gradient on every earlier h_t is computed twice:

- by torch autograd, stepping the torch module one step at a time and keeping each
  step's state tensor (`hidden_grads_torch`);
- by the NumPy engine `lapnet.scratch`, with its public API only: the suffix x_{t+1..T}
  is run from the state the full forward pass reached at step t, and `backward` with the
  loss gradient at the last step returns dL_T/d(state_t) as `dstate0`
  (`hidden_grads_scratch`).

For an LSTM, "h_t" is the hidden state with the cell c_t held fixed (the partial
derivative on the h tensor), and the cell path carries its own gradient, dL_T/dc_t with
h_t held fixed (`state_grads_torch`, `state_grads_scratch`). That is the notebook's
section 4 "gradient highway": c_{t+1} = f_{t+1} * c_t + i_{t+1} * g_{t+1}, so
dc_{t+1}/dc_t = f_{t+1} directly, with no weight matrix and no tanh' on the way. Both
engines give it from the pass that gives dL_T/dh_t: autograd keeps the grad of each
step's c tensor beside h's, and the engine's `backward` returns (dh0, dc0) as dstate0.
dL_T/dc_T is 0: the loss reads h_T only (the head is on h).

Shapes: x (B, T, D); the returned gradients are (B, T, H), index t = step t + 1's
state, so [:, -1] is dL_T/dh_T. Only single-layer, one-direction layers are supported.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from lapnet.errors import LapnetError


def _check_layer(rnn) -> None:
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise LapnetError("gradient flow is measured on one-layer, one-direction recurrent layers")


def state_grads_torch(rnn: nn.RNNBase, head: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
    """dL_T/dh_t and, for an LSTM, dL_T/dc_t for every t, by autograd.

    Args:
        rnn: a batch-first torch RNN/LSTM/GRU (one layer).
        head: maps h_T (B, H) to predictions.
        x: (B, T, D) inputs.
        loss_fn: predictions -> per-example losses (B,); their SUM is differentiated, so each
            row of the result is that example's own gradient.

    Returns:
        (dh, dc): (B, T, H) float64 arrays; dc is None for an RNN or a GRU (no cell), and
        its last step dc[:, -1] is 0 (the loss reads h_T only).
    """
    _check_layer(rnn)
    state = None
    hs, cs = [], []
    for t in range(x.shape[1]):
        _, state = rnn(x[:, t : t + 1], state)  # one step; the module's own kernel
        h = state[0] if isinstance(state, tuple) else state  # (1, B, H)
        h.retain_grad()
        hs.append(h)
        if isinstance(state, tuple):  # the LSTM's cell, a separate output of the same step
            state[1].retain_grad()
            cs.append(state[1])
    loss = loss_fn(head(hs[-1][0])).sum()  # from the state tensor, so h_T's grad is dL/dh_T
    loss.backward()
    dh = torch.stack([h.grad[0] for h in hs], dim=1).detach().double().numpy()  # (B, T, H)
    if not cs:
        return dh, None
    dc = torch.stack([c.grad[0] if c.grad is not None else torch.zeros_like(c[0]) for c in cs], dim=1)
    return dh, dc.detach().double().numpy()  # c_T feeds nothing: its grad is None, written as 0


def hidden_grads_torch(rnn: nn.RNNBase, head: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """dL_T/dh_t for every t, by autograd: (B, T, H) float64 (`state_grads_torch`'s dh)."""
    return state_grads_torch(rnn, head, x, loss_fn)[0]


def state_grads_scratch(layer, x: np.ndarray,
                        dloss_dhT: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """dL_T/dh_t and, for an LSTM, dL_T/dc_t for every t, by the NumPy engine (public API only).

    Args:
        layer: a `lapnet.scratch` RNN/LSTM/GRU (one layer).
        x: (B, T, D) inputs.
        dloss_dhT: h_T (B, H) -> dL_T/dh_T (B, H), the head's and loss's gradient.

    Returns:
        (dh, dc): (B, T, H) float64 arrays; dc is None for an RNN or a GRU, and dc[:, -1] is 0.
    """
    _check_layer(layer)
    x = np.asarray(x, dtype=layer.dtype)
    B, T, _ = x.shape
    out, _, cache = layer.forward(x)  # (B, T, H)
    cells = cache.gates()["c"] if layer.kind == "lstm" else None  # (B, T, H): c_t for the LSTM state
    g_T = dloss_dhT(out[:, -1])  # (B, H)
    grads = np.empty(out.shape, dtype=np.float64)
    grads[:, -1] = g_T
    cgrads = np.zeros(out.shape, dtype=np.float64) if cells is not None else None
    for t in range(T - 1):
        h_t = out[None, :, t]  # (1, B, H)
        state = (h_t, cells[None, :, t]) if cells is not None else h_t
        suffix = x[:, t + 1 :]  # (B, T-t-1, D)
        _, _, c = layer.forward(suffix, state)
        dout = np.zeros((B, T - t - 1, layer.hidden_size), layer.dtype)
        dout[:, -1] = g_T  # the loss sees only the last step
        _, dstate0, _ = layer.backward(dout, None, c)
        grads[:, t] = (dstate0[0] if isinstance(dstate0, tuple) else dstate0)[0]
        if cgrads is not None:  # the same backward pass returns (dh0, dc0)
            cgrads[:, t] = dstate0[1][0]
    return grads, cgrads


def hidden_grads_scratch(layer, x: np.ndarray, dloss_dhT: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """dL_T/dh_t for every t, by the NumPy engine: (B, T, H) float64 (`state_grads_scratch`'s dh)."""
    return state_grads_scratch(layer, x, dloss_dhT)[0]


def norms_by_distance(grads: np.ndarray) -> np.ndarray:
    """(B, T, H) gradients -> (T,) mean over the batch of ||dL_T/dh_t||, indexed by the
    distance k = T - t (k = 0 is the last step)."""
    return np.linalg.norm(grads, axis=-1).mean(axis=0)[::-1].copy()


def decay_rate(norms: np.ndarray, skip: int = 1) -> float:
    """Geometric mean factor per step of a gradient-norm curve: exp(slope of log norm)."""
    k = np.arange(len(norms))[skip:]
    y = np.log(np.maximum(norms[skip:], 1e-300))
    if len(k) < 2:
        return float("nan")
    return float(np.exp(np.polyfit(k, y, 1)[0]))
