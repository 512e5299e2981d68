"""Truncated backpropagation through time.

A long sequence is cut into chunks of `chunk` steps. The final state of one chunk is
the initial state of the next, carried as a constant: the forward pass sees the whole
history, but gradients stop at the chunk boundary (what `hidden.detach()` does in
pytorch/examples' word_language_model). Memory is O(chunk), not O(T).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from lapnet.errors import LapnetError


def detach(state: Any) -> Any:
    """A copy of a state that no later backward can reach (h, or (h, c))."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(np.array(s) for s in state)
    return np.array(state)


def chunks(T: int, chunk: int) -> Iterator[slice]:
    """Time slices [0:chunk], [chunk:2*chunk], ... covering T steps (the last may be shorter)."""
    if chunk < 1:
        raise LapnetError(f"chunk length must be at least 1, got {chunk}")
    for t0 in range(0, T, chunk):
        yield slice(t0, min(T, t0 + chunk))


def truncated_bptt(layer, x: np.ndarray, chunk: int, loss_grad: Callable, state: Any = None):
    """Forward and backward over `x` chunk by chunk, gradients summed over chunks.

    Args:
        layer: a scratch recurrent layer.
        x: (B, T, D) the whole sequence.
        chunk: steps per chunk.
        loss_grad: f(out_chunk (B, t, H'), time_slice) -> (loss float, dout_chunk).
        state: initial state or None.

    Returns:
        total loss (sum over chunks), grads summed over chunks (keyed like state_dict),
        dx (B, T, D) within-chunk input gradients, and the final state.
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise LapnetError(f"truncated_bptt input must be (B, T, D), got shape {x.shape}")
    total, grads, dxs = 0.0, None, []
    for sl in chunks(x.shape[1], chunk):
        out, new_state, cache = layer.forward(x[:, sl], state)
        loss, dout = loss_grad(out, sl)
        dx, _, g = layer.backward(dout, None, cache)  # the boundary's dstate0 is dropped: truncation
        total += float(loss)
        grads = g if grads is None else {k: grads[k] + g[k] for k in grads}
        dxs.append(dx)
        state = detach(new_state)
    return total, grads, np.concatenate(dxs, axis=1), state
