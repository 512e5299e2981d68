"""One factory for torch's recurrent layers, and one way to run them on padded batches.

Shapes (batch-first everywhere): x (B, T, D) -> out (B, T, dirs*H); h (L*dirs, B, H),
and for an LSTM the state is the pair (h, c).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lapnet.errors import LapnetError

ARCHS = ("rnn", "lstm", "gru")


def make_recurrent(
    arch: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    nonlinearity: str = "tanh",
) -> nn.RNNBase:
    """Build a batch-first torch.nn.RNN / LSTM / GRU.

    Args:
        arch: "rnn", "lstm" or "gru".
        input_size: D, features per step.
        hidden_size: H.
        num_layers: L stacked layers; `dropout` applies between them (torch's rule).
        bidirectional: a second layer reads the sequence backwards; outputs concatenate.
        nonlinearity: "tanh" or "relu" (vanilla RNN only).
    """
    arch = arch.lower()
    if arch not in ARCHS:
        raise LapnetError(f"unknown architecture {arch!r}: expected one of {', '.join(ARCHS)}")
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if int(v) < 1:
            raise LapnetError(f"{name} must be at least 1, got {v}")
    if not 0.0 <= dropout < 1.0:
        raise LapnetError(f"dropout must be in [0, 1), got {dropout}")
    kwargs = dict(
        input_size=int(input_size),
        hidden_size=int(hidden_size),
        num_layers=int(num_layers),
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,  # torch warns about dropout on a single layer
    )
    if arch == "rnn":
        return nn.RNN(nonlinearity=nonlinearity, **kwargs)
    return (nn.LSTM if arch == "lstm" else nn.GRU)(**kwargs)


def run_recurrent(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
    """Run `rnn` on a padded batch; with `lengths` the padding is packed away.

    Args:
        x: (B, T, D) padded inputs.
        lengths: (B,) true lengths, or None when every sequence has length T.
        state: initial state as torch takes it, or None for zeros.

    Returns:
        out (B, T, dirs*H) with zeros past each sequence's end, and the final state taken
        at each sequence's own last step.
    """
    if lengths is None:
        return rnn(x, state)
    T = x.shape[1]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, dirs*H)
    return out, state
