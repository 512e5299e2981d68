"""Truncated backpropagation through time.

A long sequence is cut into chunks of `chunk` steps. The final state of one chunk is
the initial state of the next, carried as a constant: the forward pass sees the whole
history, but gradients stop at the chunk boundary (what `hidden.detach()` does in
pytorch/examples' word_language_model). The activation caches backward needs are
O(chunk), not O(T): a chunk's cache is released once the next chunk replaces it; the input
gradient dx is still returned for all T steps (B, T, D).

In NumPy nothing tracks a graph, so nothing has to be cut: truncation is done by dropping
each chunk's dL/d(initial state) (`dstate0`) instead of passing it to the chunk before.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from lapnet.errors import LapnetError
from lapnet.scratch.recurrent import check_size


def detach(state: Any) -> Any:
    """A copy of a state (h, or (h, c)), named after torch's `hidden.detach()`.

    In NumPy a copy stops no gradient: there is no graph to cut. Truncation comes from
    `truncated_bptt` dropping the dL/dstate0 each chunk's backward returns; the copy only
    keeps the carried state from sharing memory with an array the caller holds.
    """
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(np.array(s) for s in state)
    return np.array(state)


def chunks(T: int, chunk: int) -> Iterator[slice]:
    """Time slices [0:chunk], [chunk:2*chunk], ... covering T steps (the last may be shorter)."""
    chunk = check_size("chunk", chunk)
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)) or T < 0:
        raise LapnetError(f"T must be an integer >= 0, got {T!r}")
    return (slice(t0, min(T, t0 + chunk)) for t0 in range(0, T, chunk))  # checked at the call, not when iterated


def truncated_bptt(layer, x: np.ndarray, chunk: int, loss_grad: Callable, state: Any = None, *,
                   lengths: Any = None):
    """Forward and backward over `x` chunk by chunk, gradients summed over chunks.

    Args:
        layer: a scratch recurrent layer (unidirectional: a reverse direction cannot carry
            its state from one chunk to the next, since it reads each chunk from its end).
        x: (B, T, D) the whole sequence.
        chunk: steps per chunk, a positive integer.
        loss_grad: f(out_chunk (B, t, H), time_slice) -> (loss float, dout_chunk (B, t, H)).
        state: initial state or None.
        lengths: (B,) true lengths 1..T, or None (all T). As in `layer.forward`, outputs past
            a sequence's end are zero and get no gradient, and its state stops at its own
            last step: a chunk runs only the sequences that have not ended before it.

    Returns:
        total loss (sum over chunks), grads summed over chunks (keyed like state_dict),
        dx (B, T, D) within-chunk input gradients, and the final state.
    """
    chunk = check_size("chunk", chunk)
    if not callable(loss_grad):
        raise LapnetError(f"loss_grad must be a function (out_chunk, time_slice) -> (loss, dout_chunk), "
                          f"got {type(loss_grad).__name__}")
    x = np.asarray(x)
    if x.ndim != 3:
        raise LapnetError(f"truncated_bptt input must be (B, T, D), got shape {x.shape}")
    if getattr(layer, "num_directions", 1) != 1:
        raise LapnetError("truncated_bptt needs a unidirectional layer: a reverse direction reads each chunk "
                          "from its end, so no state can carry from one chunk to the next")
    B, T, _ = x.shape
    if lengths is not None:
        lengths, _, _ = layer._check_lengths(lengths, B, T)  # validated as forward does; (B,) int64
        if state is None:  # zeros to scatter the live rows' states into
            h0 = np.zeros((layer.num_layers, B, layer.hidden_size), layer.dtype)
            state = (h0, h0.copy()) if layer.kind == "lstm" else h0
    total, grads, dxs = 0.0, None, []
    for sl in chunks(T, chunk):
        rows = slice(None) if lengths is None else np.flatnonzero(lengths > sl.start)  # sequences not yet ended
        if lengths is not None and rows.size == 0:  # every sequence ended before this chunk: nothing to run
            t = sl.stop - sl.start
            total += float(loss_grad(np.zeros((B, t, layer.hidden_size), layer.dtype), sl)[0])
            dxs.append(np.zeros((B, t, x.shape[2]), layer.dtype))
            continue
        part = None if lengths is None else np.minimum(lengths[rows] - sl.start, sl.stop - sl.start)
        out, new_state, cache = layer.forward(x[rows, sl], _rows(state, rows), lengths=part)
        if lengths is not None:
            full = np.zeros((B,) + out.shape[1:], out.dtype)  # (B, t, H): ended sequences output zeros
            full[rows] = out
            out = full
        loss, dout = loss_grad(out, sl)
        dx, _, g = layer.backward(np.asarray(dout)[rows], None, cache)  # the boundary's dstate0 is dropped: truncation
        if lengths is not None:
            full = np.zeros((B,) + dx.shape[1:], dx.dtype)  # (B, t, D)
            full[rows] = dx
            dx = full
        total += float(loss)
        grads = g if grads is None else {k: grads[k] + g[k] for k in grads}
        dxs.append(dx)
        state = detach(new_state) if lengths is None else _scatter(state, rows, new_state)
    return total, grads, np.concatenate(dxs, axis=1), state


def _rows(state: Any, rows) -> Any:
    """The batch rows `rows` of a state h (L, B, H) or (h, c)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(np.asarray(s)[:, rows] for s in state)
    return np.asarray(state)[:, rows]


def _scatter(state: Any, rows, new: Any) -> Any:
    """A detached copy of `state` with the batch rows `rows` replaced by `new`."""
    if isinstance(state, tuple):
        return tuple(_scatter(s, rows, n) for s, n in zip(state, new))
    out = np.array(state)
    out[:, rows] = new
    return out
