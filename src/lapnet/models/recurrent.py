"""One factory for torch's recurrent layers, and one way to run them on padded batches.

Shapes (batch-first everywhere): x (B, T, D) -> out (B, T, dirs*H); h (L*dirs, B, H),
and for an LSTM the state is the pair (h, c).
"""

from __future__ import annotations

import warnings

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
        num_layers: L stacked layers; `dropout` applies between them (torch's rule: with
            num_layers=1 it has no effect, and a UserWarning says so, as torch's does).
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
        raise LapnetError(f"nonlinearity={nonlinearity!r} applies to the vanilla RNN only; "
                          f"{'an LSTM' if arch == 'lstm' else 'a GRU'}'s gates are fixed (sigmoid and tanh)")
    if dropout > 0 and num_layers == 1:  # as torch.nn.RNN/LSTM/GRU (and lapnet.scratch) warn
        warnings.warn(f"dropout={float(dropout)} has no effect with num_layers=1: dropout sits between stacked "
                      f"layers (after every layer but the last), so it needs num_layers > 1", UserWarning, stacklevel=2)
    kwargs = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        batch_first=True,
        bidirectional=bool(bidirectional),
        dropout=float(dropout) if num_layers > 1 else 0.0,  # warned above; torch would warn a second time
    )
    if arch == "rnn":
        return nn.RNN(nonlinearity=nonlinearity, **kwargs)
    return (nn.LSTM if arch == "lstm" else nn.GRU)(**kwargs)


def check_batch(x, what: str = "x", short: str = "(B, T, D)",
                full: str = "(B, T, D) = (batch, time, features)") -> None:
    """`x` is a batched tensor with the axes of `short`.

    torch's recurrent layers also take an unbatched input, one axis fewer; the models read the
    batch axis (out[:, -1], h_n[-1] per sequence), where such an input would quietly mean
    something else: refused, with the fix for one sequence.
    """
    if not isinstance(x, torch.Tensor):
        raise LapnetError(f"{what} must be a {short} tensor, got a {type(x).__name__} "
                          "(convert it with torch.as_tensor)")
    dims = short.count(",") + 1
    if x.dim() != dims:
        hint = " (one sequence: add the batch axis with x[None])" if x.dim() == dims - 1 else ""
        raise LapnetError(f"{what} must be {full}, got shape {tuple(x.shape)}{hint}")


def check_input(rnn: nn.RNNBase, x: torch.Tensor, state=None) -> None:
    """`x` (B, T, D) (or torch's unbatched (T, D)) and `state` fit `rnn`: checked here, where
    torch would fail deep inside (a matrix product, the packing's indices) or not at all."""
    shape = tuple(x.shape)
    if x.dim() not in (2, 3):
        raise LapnetError(f"x must be (B, T, D) = (batch, time, features), got shape {shape}")
    if not isinstance(rnn, nn.RNNBase):  # another module with torch's interface: it checks its own input
        return
    w = rnn.weight_ih_l0
    if w.is_meta:
        raise LapnetError(f"the {type(rnn).__name__} has no data (meta device): load or initialise its weights first")
    if x.shape[-2] < 1:
        raise LapnetError(f"x has no time steps: shape {shape}, T=0 (give every sequence at least one step)")
    if x.shape[-1] != rnn.input_size:
        raise LapnetError(f"x has D={x.shape[-1]} features per step but the {type(rnn).__name__}'s input_size is "
                          f"{rnn.input_size}: shape {shape}")
    if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):  # autocast casts it itself
        raise LapnetError(f"x is {x.dtype} but the {type(rnn).__name__}'s weights are {w.dtype}: convert x with "
                          f"x.to({w.dtype}) (or the model with .to(dtype))")
    if x.device != w.device:
        raise LapnetError(f"x is on {x.device} but the {type(rnn).__name__} is on {w.device}: move x with "
                          f"x.to('{w.device}')")
    if state is None:
        return
    rows = rnn.num_layers * (2 if rnn.bidirectional else 1)
    batch = (x.shape[0],) if x.dim() == 3 else ()
    h_size = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    is_lstm = isinstance(rnn, nn.LSTM)
    if is_lstm and not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise LapnetError(f"an LSTM's state must be a pair (h, c) of shapes {(rows, *batch, h_size)} and "
                          f"{(rows, *batch, rnn.hidden_size)} = (layers*directions, B, H), got a {type(state).__name__}")
    expected = (("h", state[0], (rows, *batch, h_size)), ("c", state[1], (rows, *batch, rnn.hidden_size))) \
        if is_lstm else (("state", state, (rows, *batch, rnn.hidden_size)),)
    for name, s, want in expected:
        if not isinstance(s, torch.Tensor):
            raise LapnetError(f"{name} must be a tensor of shape {want}, got a {type(s).__name__}")
        if tuple(s.shape) != want:
            raise LapnetError(f"{name} must have shape {want} = (layers*directions, B, H), got {tuple(s.shape)}")


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
    if lengths is not None and x.dim() != 3:
        raise LapnetError(f"x must be (B, T, D) = (batch, time, features), got shape {tuple(x.shape)}")
    check_input(rnn, x, state)
    if lengths is None:
        return rnn(x, state)
    B, T = x.shape[0], x.shape[1]
    lengths = check_lengths(lengths, B, T)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, dirs*H)
    return out, state
