"""One factory for torch's recurrent layers, and one way to run them on padded batches.

Shapes (batch-first everywhere): x (B, T, D) -> out (B, T, dirs*H); h (L*dirs, B, H),
and for an LSTM the state is the pair (h, c).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lapnet.errors import LapnetError

ARCHS = ("rnn", "lstm", "gru")


def check_size(name: str, v) -> int:
    """A positive integer size (not a bool, not a float such as 2.5 that torch would truncate)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise LapnetError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def check_lengths(lengths, B: int, T: int) -> torch.Tensor:
    """`lengths` (a list, array or tensor of B integers in [1, T]) as a CPU int64 tensor.

    Raises LapnetError naming the problem, where torch's packing would fail deep inside
    (length 0, a length past T) or on a plain list.
    """
    if isinstance(lengths, torch.Tensor):
        a = lengths.detach().cpu().numpy()
    else:
        try:
            a = np.asarray(lengths)
        except (TypeError, ValueError):
            a = np.asarray([None])
    if B == 0:  # packing needs a sequence; NumPy's min() below would fail on none
        raise LapnetError("an empty batch (B=0 sequences) cannot be packed: give at least one sequence")
    if a.shape != (B,):
        raise LapnetError(f"lengths must have shape ({B},) (one per sequence), got {tuple(a.shape)}")
    if not (a.dtype.kind in "iu" or (a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0))):
        raise LapnetError(f"lengths must be integers (one per sequence), got {a.dtype} values {a[:4].tolist()}")
    if a.min() < 1 or a.max() > T:
        raise LapnetError(f"lengths must be between 1 and T={T}, got min {a.min():g} and max {a.max():g}")
    return torch.from_numpy(a.astype(np.int64))


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
    if not isinstance(arch, str) or arch.lower() not in ARCHS:
        raise LapnetError(f"unknown architecture {arch!r}: expected one of {', '.join(ARCHS)}")
    arch = arch.lower()
    input_size, hidden_size, num_layers = (check_size("input_size", input_size),
                                           check_size("hidden_size", hidden_size), check_size("num_layers", num_layers))
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.integer, np.floating)) \
            or not 0.0 <= dropout < 1.0:
        raise LapnetError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if bidirectional not in (True, False):
        raise LapnetError(f"bidirectional must be True or False, got {bidirectional!r}")
    if nonlinearity not in ("tanh", "relu"):
        raise LapnetError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if nonlinearity != "tanh" and arch != "rnn":
        raise LapnetError(f"nonlinearity={nonlinearity!r} applies to the vanilla RNN only; an {arch.upper()}'s "
                          "gates are fixed (sigmoid and tanh)")
    kwargs = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        batch_first=True,
        bidirectional=bool(bidirectional),
        dropout=float(dropout) if num_layers > 1 else 0.0,  # torch warns about dropout on a single layer
    )
    if arch == "rnn":
        return nn.RNN(nonlinearity=nonlinearity, **kwargs)
    return (nn.LSTM if arch == "lstm" else nn.GRU)(**kwargs)


def run_recurrent(rnn: nn.RNNBase, x: torch.Tensor, lengths=None, state=None):
    """Run `rnn` on a padded batch; with `lengths` the padding is packed away.

    Args:
        x: (B, T, D) padded inputs.
        lengths: (B,) true lengths, integers in [1, T] (a tensor, array or list), or None
            when every sequence has length T.
        state: initial state as torch takes it, or None for zeros.

    Returns:
        out (B, T, dirs*H) with zeros past each sequence's end, and the final state as torch
        lays it out, (L*dirs, B, H) (LSTM: the pair (h, c)): the forward direction's is taken
        at each sequence's own last step (lengths - 1, not the padded step T - 1); a
        bidirectional module's reverse direction reads each sequence from its own end back
        to the start, so its final state is the one at step 0 (out[:, 0, H:]).
    """
    if not getattr(rnn, "batch_first", True):
        raise LapnetError(f"run_recurrent takes batch-first modules (x is (B, T, D)); this {type(rnn).__name__} has "
                          "batch_first=False (build it with make_recurrent, or with batch_first=True)")
    if not isinstance(x, torch.Tensor):
        raise LapnetError(f"x must be a padded (B, T, D) tensor, got a {type(x).__name__} (pass lengths instead of "
                          "packing it yourself)")
    if lengths is None:
        return rnn(x, state)
    if x.dim() != 3:
        raise LapnetError(f"x must be (B, T, D) = (batch, time, features), got shape {tuple(x.shape)}")
    B, T = x.shape[0], x.shape[1]
    lengths = check_lengths(lengths, B, T)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, dirs*H)
    return out, state
