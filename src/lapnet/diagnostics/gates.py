"""The true gate activations of a torch LSTM or GRU, recomputed from its weights.

The notebook's Exercise 3 only plots the hidden state; it hints that the gates live in
`weight_ih_l0` as [W_ii | W_if | W_ig | W_io]. Here the gates are recomputed step by step,
in float64, from exactly those weights (torch's layout and equations), by the readable
cells of `lapnet.scratch.reference`:

    LSTM  i = s(W_ii x + b_ii + W_hi h + b_hi)     f = s(W_if x + b_if + W_hf h + b_hf)
          g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = s(W_io x + b_io + W_ho h + b_ho)
          c' = f * c + i * g                       h' = o * tanh(c')
    GRU   r = s(W_ir x + b_ir + W_hr h + b_hr)     z = s(W_iz x + b_iz + W_hz h + b_hz)
          n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
          h' = (1 - z) * n + z * h
    RNN   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)   (no gates: hidden states only)

and then checked against the module's own output: `trace_gates` raises if the recomputed
hidden states differ from what torch computed (so the heatmaps show the model's real gates,
not an approximation).

Shapes: x (B, T, D); every returned array is (B, T, H) float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lapnet.errors import LapnetError
from lapnet.scratch import reference as ref


@dataclass
class GateTrace:
    """What `trace_gates` found.

    Attributes:
        kind: "rnn" | "lstm" | "gru".
        layers: one dict per layer: gate name -> (B, T, H), plus "h" (and "c" for the LSTM).
        max_abs_diff: largest |recomputed - torch| over the outputs and final hidden states, and
            over the final cell states relative to max(1, |c|).
    """

    kind: str
    layers: list[dict[str, np.ndarray]]
    max_abs_diff: float

GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ()}
SIGMOID_GATES = {"i", "f", "o", "r", "z"}  # values in [0, 1]; g and n are tanh, in [-1, 1]


def _kind(rnn: nn.RNNBase) -> str:
    mode = rnn.mode  # "LSTM" | "GRU" | "RNN_TANH" | "RNN_RELU"
    return "rnn" if mode.startswith("RNN") else mode.lower()


def _layer_trace(kind: str, x: np.ndarray, W_ih, W_hh, b_ih, b_hh, relu: bool = False) -> dict[str, np.ndarray]:
    """One layer, one direction, from zero state, through the readable cells of
    `lapnet.scratch.reference` (each step's gates are in their cache).

    x (B, T, D) -> {gate: (B, T, H), "h", ["c"]}."""
    B, H = x.shape[0], W_hh.shape[1]
    zero = np.zeros((B, H))
    if kind == "lstm":
        hs, _, cache = ref.lstm_forward(x, zero, zero, W_ih, W_hh, b_ih, b_hh)
    elif kind == "gru":
        hs, _, cache = ref.gru_forward(x, zero, W_ih, W_hh, b_ih, b_hh)  # torch's form
    else:
        hs, _, _ = ref.rnn_forward(x, zero, W_ih, W_hh, b_ih, b_hh, nonlinearity="relu" if relu else "tanh")
        return {"h": hs}
    names = (*GATE_NAMES[kind], *(("c",) if kind == "lstm" else ()))
    rec = {k: np.stack([s[k] for s in cache["steps"]], axis=1) for k in names}  # T x (B, H) -> (B, T, H)
    return {**{k: rec[k] for k in GATE_NAMES[kind]}, "h": hs, **({"c": rec["c"]} if kind == "lstm" else {})}


def trace_gates(rnn: nn.RNNBase, x: torch.Tensor, *, atol: float = 1e-4) -> GateTrace:
    """Recompute every layer's gates and states from the weights and check them against
    the module's own forward pass.

    Args:
        rnn: a batch-first, one-direction torch RNN/LSTM/GRU (any number of layers),
            evaluated as in eval mode (no dropout between layers).
        x: (B, T, D) the layer's input.
        atol: largest allowed |recomputed h - torch's h| (float32 weights: ~1e-6 typical).

    Returns:
        GateTrace (per layer: gate name -> (B, T, H), plus "h", and "c" for the LSTM).

    Raises:
        LapnetError: x not a (B, T, D) tensor of the module's dtype and input_size,
            bidirectional layers (not traced), or a mismatch with the model's output.
    """
    if not isinstance(x, torch.Tensor):
        raise LapnetError(f"x must be a (B, T, D) torch tensor, got a {type(x).__name__} (convert it with "
                          f"torch.as_tensor(x, dtype={rnn.weight_ih_l0.dtype}))")
    if x.dim() != 3 or 0 in x.shape:
        raise LapnetError(f"x must be (B, T, D) with B, T, D >= 1, got {tuple(x.shape)}")
    if x.shape[-1] != rnn.input_size or x.dtype != rnn.weight_ih_l0.dtype:
        raise LapnetError(f"x must be (B, T, {rnn.input_size}) of {rnn.weight_ih_l0.dtype}, as the module's "
                          f"input_size and weights, got {tuple(x.shape)} of {x.dtype}")
    if rnn.bidirectional:
        raise LapnetError("gate tracing supports one-direction recurrent layers")
    if not getattr(rnn, "batch_first", False):
        raise LapnetError("gate tracing expects a batch_first recurrent layer")
    kind = _kind(rnn)
    relu = rnn.mode == "RNN_RELU"
    inp = x.detach().double().cpu().numpy()  # (B, T, D)
    layers = []
    for l in range(rnn.num_layers):
        p = {n: getattr(rnn, f"{n}_l{l}").detach().double().cpu().numpy()
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        rec = _layer_trace(kind, inp, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], relu)
        layers.append(rec)
        inp = rec["h"]  # (B, T, H): the next layer's input
    was_training = rnn.training
    rnn.eval()
    with torch.no_grad():
        out, state = rnn(x)  # (B, T, H), the model's own computation
    rnn.train(was_training)
    h_n = (state[0] if isinstance(state, tuple) else state).double().cpu().numpy()  # (L, B, H)
    diff = float(np.abs(layers[-1]["h"] - out.double().cpu().numpy()).max())
    diff = max(diff, *(float(np.abs(layers[l]["h"][:, -1] - h_n[l]).max()) for l in range(rnn.num_layers)))
    if kind == "lstm":
        # the cell state is unbounded (|c| reaches 60+ when a forget gate stays open on a repeated
        # input) and float32 keeps ~7 significant digits of it: compared relative to max(1, |c|)
        c_n = state[1].double().cpu().numpy()
        diff = max(diff, *(float((np.abs(layers[l]["c"][:, -1] - c_n[l]) / np.maximum(1.0, np.abs(c_n[l]))).max())
                           for l in range(rnn.num_layers)))
    if not diff <= atol:
        raise LapnetError(f"recomputed gates do not reproduce the model's hidden states (max diff {diff:.3g})")
    return GateTrace(kind, layers, diff)


def saturation(values: np.ndarray, gate: str) -> dict[str, float]:
    """Share of a gate's values near its limits: below 0.1 / above 0.9 for the sigmoid
    gates (closed / open), |v| above 0.9 for the tanh candidates g and n."""
    v = np.asarray(values)
    if gate in SIGMOID_GATES:
        low, high = float(np.mean(v < 0.1)), float(np.mean(v > 0.9))
        return {"mean": float(v.mean()), "share_below_0.1": low, "share_above_0.9": high,
                "share_saturated": low + high}
    sat = float(np.mean(np.abs(v) > 0.9))
    return {"mean": float(v.mean()), "mean_abs": float(np.abs(v).mean()), "share_abs_above_0.9": sat,
            "share_saturated": sat}
