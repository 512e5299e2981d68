"""The layer objects `RNN`, `LSTM`, `GRU`: stacked, bidirectional, variable lengths.

Each object holds only its parameters, named and shaped exactly as torch's
(`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `..._reverse`), so a
state_dict moves between lapnet.scratch and torch.nn.RNN/LSTM/GRU unchanged. Nothing
is remembered between calls: `forward` returns a cache and `backward` takes it.

Shapes (batch-first, as torch with batch_first=True):
    x (B, T, D) -> out (B, T, dirs*H);  state h (L*dirs, B, H), or (h, c) for the LSTM.
Stacking: layer l+1 reads layer l's output (both directions concatenated); with
`dropout` > 0 and `forward(..., train=True, rng=...)`, dropout sits between layers.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from lapnet.errors import LapnetError
from lapnet.scratch import gru as _gru
from lapnet.scratch import workspace
from lapnet.scratch.blas import engine_threads
from lapnet.scratch import lstm as _lstm
from lapnet.scratch import rnn as _rnn

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# torch.nn's positional arguments after num_layers, which the engine takes by keyword only
TORCH_POSITIONAL = {
    "RNN": ("nonlinearity", "bias", "batch_first", "dropout", "bidirectional"),
    "LSTM": ("bias", "batch_first", "dropout", "bidirectional", "proj_size"),
    "GRU": ("bias", "batch_first", "dropout", "bidirectional"),
}


def check_no_positional(cls_name: str, extra: tuple) -> None:
    """Refuse arguments after num_layers given by position, naming what torch would read them as.

    torch.nn.LSTM(3, 4, 2, True) means bias=True; accepting it by position could quietly mean
    something else here, so everything after num_layers is keyword-only, with one clear line.
    """
    if not extra:
        return
    names = TORCH_POSITIONAL.get(cls_name, TORCH_POSITIONAL["GRU"])
    as_torch = ", ".join(f"{n}={v!r}" for n, v in zip(names, extra))
    if len(extra) > len(names):
        as_torch += f", and {len(extra) - len(names)} more"
    raise LapnetError(f"{cls_name}: {len(extra)} positional argument(s) after num_layers, which torch.nn.{cls_name} "
                      f"would read as {as_torch}: pass {', '.join(names[:4])}, ... by keyword "
                      f"(e.g. {cls_name}(3, 4, 2, bidirectional=True))")


def as_numpy(v: Any, what: str = "the input", fix: str = "give it values first") -> np.ndarray:
    """An ndarray from a numpy array, a torch tensor (duck-typed: no torch import) or nested
    lists; `what` names the argument and `fix` says what to do with a meta tensor, in the error."""
    if hasattr(v, "detach"):
        if getattr(v, "is_meta", False):  # a shape without data: .cpu() would raise NotImplementedError
            raise LapnetError(f"{what} has no data (meta device): {fix}")
        try:
            v = v.detach().cpu().numpy()
        except TypeError:  # bfloat16 and other dtypes NumPy lacks
            raise LapnetError(f"a torch tensor of dtype {v.dtype} has no NumPy equivalent: "
                              f"only float32 and float64 are supported (convert with .float())") from None
    try:
        return np.asarray(v)
    except ValueError:  # NumPy: "inhomogeneous shape"
        raise LapnetError(f"{what} is not a regular array: its nested lists have rows of different lengths "
                          f"(ragged), so it has no one shape") from None
    except TypeError:
        raise LapnetError(f"{what} must be an array or tensor of numbers, got {type(v).__name__}") from None


def check_seed(seed: Any) -> Any:
    """A seed np.random.default_rng takes: None (fresh entropy), a non-negative integer or a
    sequence of them, a SeedSequence, a BitGenerator or a Generator; refused in one line (as
    a LapnetError) where NumPy would raise its own error: a bool, a negative or a fractional number."""
    if seed is None or isinstance(seed, (np.random.SeedSequence, np.random.BitGenerator, np.random.Generator)):
        return seed
    items = list(seed) if isinstance(seed, (list, tuple, np.ndarray)) else [seed]
    ok = len(items) > 0 and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0
                                for v in items)
    if not ok:
        shown = repr(seed).replace("\n", " ")
        raise LapnetError(f"seed must be None, a non-negative integer (or a sequence of them), a SeedSequence or a "
                          f"numpy Generator, as np.random.default_rng takes it; got {shown[:80]}")
    return seed if len(items) > 1 or isinstance(seed, (list, tuple, np.ndarray)) else int(seed)


def check_size(name: str, v: Any) -> int:
    """A positive integer size (not a bool, not a float), as an int."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise LapnetError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def all_finite(a: np.ndarray) -> bool:
    """No NaN or infinite entry. For big arrays a finite sum proves it in one pass without
    a temporary (NaN and inf propagate through a sum); only if it overflows is every entry tested."""
    if a.size < 4096:
        return bool(np.isfinite(a).all())
    return bool(np.isfinite(np.add.reduce(a, axis=None))) or bool(np.isfinite(a).all())


def check_param(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One state_dict entry as an ndarray: an array or tensor of a float dtype, of `shape`, finite."""
    if not (hasattr(value, "detach") or isinstance(value, np.ndarray)):
        raise LapnetError(f"state_dict[{name!r}] must be a numpy array or a torch tensor, got {type(value).__name__}")
    a = as_numpy(value, f"state_dict[{name!r}]", "load or initialise its weights first")
    if a.dtype.kind != "f":
        raise LapnetError(f"state_dict[{name!r}] must have a float dtype, got {a.dtype}")
    if a.shape != shape:
        raise LapnetError(f"state_dict[{name!r}] has shape {a.shape}, expected {shape}")
    if not all_finite(a):
        raise LapnetError(f"state_dict[{name!r}] contains NaN or infinite values")
    return a


def check_dtype(dtype: Any) -> np.dtype:
    """float32 or float64 (as a numpy dtype, a string or a torch dtype); None is the default,
    float32, as in torch."""
    if dtype is None:
        return DTYPES[0]
    name = str(dtype).replace("torch.", "")
    try:
        dt = np.dtype(name if name in ("float32", "float64") else dtype)
    except (TypeError, ValueError):  # 'bogus', [1, 2], ...: not a dtype at all
        dt = None
    # `is None` first: NumPy's `None in (float32, float64)` is True (np.dtype(None) is float64)
    if dt is None or dt not in DTYPES:
        raise LapnetError(f"dtype {dtype!r}: the engine supports float32 and float64")
    return dt


def _describe(kind: str, num_layers: int, num_directions: int) -> str:
    dirs = "bidirectional" if num_directions == 2 else "unidirectional"
    return f"a {num_layers}-layer {dirs} {kind.upper()}"


_uids = itertools.count(1)


@dataclass
class RecurrentCache:
    """Everything `backward` needs from one `forward` call (nothing lives in the layer)."""

    kernels: list  # [layer][direction] kernel cache
    B: int
    T: int
    mask: np.ndarray | None  # (T, B, 1) bool, live steps
    lengths: np.ndarray | None  # (B,)
    drop_masks: list = field(default_factory=list)  # per layer below the top: (T, B, dirs*H) or None
    kind: str = ""  # what made it ("rnn" | "lstm" | "gru"), checked by backward
    num_layers: int = 0
    num_directions: int = 0
    owner: int = 0  # the `_uid` of the layer object whose forward made it

    def describe(self) -> str:
        """'a 1-layer unidirectional LSTM', for error messages."""
        return _describe(self.kind, self.num_layers, self.num_directions)

    def gates(self, layer: int = 0, direction: int = 0) -> dict[str, np.ndarray]:
        """Gate activations of one layer and direction, batch-first (B, T, H) arrays
        (LSTM: i, f, g, o and the cell c; GRU: r, z, n; RNN: none).

        With `lengths`, every entry past a sequence's end is 0, as the output `out` is
        there: those steps are padding, not part of the sequence (the kernels compute
        throwaway values at them). Select the live steps with `t < lengths[b]` before taking
        statistics: a 0 there is no real gate value.
        """
        for name, v, n in (("layer", layer, len(self.kernels)), ("direction", direction, len(self.kernels[0]))):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
                raise LapnetError(f"gates: {name} must be an integer in [0, {n}) for {self.describe()}, got {v!r}")
        k = self.kernels[layer][direction]
        if self.mask is None:
            return {name: np.ascontiguousarray(a.transpose(1, 0, 2)) for name, a in k.gates().items()}
        # (T, B, H) where (T, B, 1) live steps, else 0; then batch-first
        return {name: np.ascontiguousarray(np.where(self.mask, a, a.dtype.type(0)).transpose(1, 0, 2))
                for name, a in k.gates().items()}


class Recurrent:
    """Shared machinery of RNN, LSTM and GRU; use one of those."""

    kind = ""
    _kernel: Any = None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *extra: Any,
        bias: bool = True,
        batch_first: bool = True,
        bidirectional: bool = False,
        dropout: float = 0.0,
        dtype: Any = np.float32,
        seed: int | None = 0,
    ) -> None:
        # Everything after num_layers is keyword-only: torch's 4th positional argument is
        # `bias` (RNN: `nonlinearity`), so LSTM(3, 4, 2, True) must not quietly mean bidirectional.
        check_no_positional(type(self).__name__, extra)
        self.input_size, self.hidden_size, self.num_layers = (
            check_size("input_size", input_size), check_size("hidden_size", hidden_size),
            check_size("num_layers", num_layers))
        if not (isinstance(bias, (bool, np.bool_)) and bias):
            raise LapnetError(f"bias={bias!r} is not supported: the engine's layers always have biases "
                              f"(bias_ih, bias_hh; set them to zero for none)")
        if not (isinstance(batch_first, (bool, np.bool_)) and batch_first):
            raise LapnetError(f"batch_first={batch_first!r} is not supported: the engine is always batch-first, "
                              f"x (B, T, D); pass x.transpose(1, 0, 2)")
        if bidirectional not in (True, False):
            raise LapnetError(f"bidirectional must be True or False, got {bidirectional!r}")
        if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, (int, float, np.floating, np.integer)) \
                or not 0.0 <= float(dropout) < 1.0:
            raise LapnetError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        self.dropout = float(dropout)
        self.dtype = check_dtype(dtype)
        if self.dropout > 0 and self.num_layers == 1:  # as torch.nn.RNN/LSTM/GRU warn
            # point at the caller's line: LSTM() runs this directly, RNN() and GRU() via their own __init__
            warnings.warn(f"dropout={self.dropout} has no effect with num_layers=1: dropout sits between stacked "
                          f"layers (after every layer but the last), so it needs num_layers > 1", UserWarning,
                          stacklevel=2 + (type(self).__init__ is not Recurrent.__init__))
        self._uid = next(_uids)  # names this object in its caches (backward refuses another's)
        rng = np.random.default_rng(check_seed(seed))
        k = 1.0 / np.sqrt(self.hidden_size)  # torch's init: U(-1/sqrt(H), 1/sqrt(H)) for every tensor
        self._params = {n: rng.uniform(-k, k, s).astype(self.dtype) for n, s in self.shapes().items()}

    # --- parameters -------------------------------------------------------------------

    @property
    def gate_size(self) -> int:
        return self._kernel.GATES * self.hidden_size

    @staticmethod
    @lru_cache(maxsize=256)
    def _names(layer: int, direction: int) -> dict[str, str]:
        """Kernel argument -> torch parameter name, for one layer and direction."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        return {"w_ih": f"weight_ih{sfx}", "w_hh": f"weight_hh{sfx}", "b_ih": f"bias_ih{sfx}", "b_hh": f"bias_hh{sfx}"}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape, in torch's order."""
        G, H = self.gate_size, self.hidden_size
        out = {}
        for l in range(self.num_layers):
            d_in = self.input_size if l == 0 else H * self.num_directions
            for d in range(self.num_directions):
                n = self._names(l, d)
                out.update({n["w_ih"]: (G, d_in), n["w_hh"]: (G, H), n["b_ih"]: (G,), n["b_hh"]: (G,)})
        return out

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays (an optimizer updates them in place)."""
        return self._params

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, torch's names and shapes."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy numpy arrays or torch tensors into the parameters; every key and shape must match.

        The values are copied into the existing arrays (as torch does), so an optimizer
        built earlier from `parameters()` keeps training this layer. Everything is checked
        before anything is copied: a bad state_dict leaves the layer unchanged.
        """
        if not isinstance(state, Mapping):
            raise LapnetError(f"state_dict must be a mapping of name -> array, got {type(state).__name__}")
        shapes = self.shapes()
        missing = [k for k in shapes if k not in state]
        extra = [k for k in state if k not in shapes]
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
            raise LapnetError(f"state_dict does not fit {self!r}: {'; '.join(parts)}")
        arrays = {k: check_param(state[k], k, shape) for k, shape in shapes.items()}
        for k, a in arrays.items():
            np.copyto(self._params[k], a, casting="unsafe")  # in place: optimizers hold these arrays

    def _config(self) -> dict[str, Any]:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    bidirectional=self.bidirectional, dropout=self.dropout)

    def astype(self, dtype: Any) -> "Recurrent":
        """A copy of this layer with parameters (and computation) in `dtype`."""
        new = _quietly(type(self), **self._config(), dtype=dtype)  # the dropout warning was given once already
        new.load_state_dict(self._params)
        return new

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self._extra().items())
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}{extra}, dtype={self.dtype.name})")

    def _extra(self) -> dict[str, Any]:
        return {}

    # --- torch interop (torch is imported lazily, only here) ----------------------------

    @classmethod
    def from_torch(cls, module: Any) -> "Recurrent":
        """Build the engine twin of a torch.nn.RNN/LSTM/GRU (same weights, same dtype).

        The engine is always batch-first; a module built with batch_first=False has the
        same weights, so only the axis order of x and out differs.
        """
        if cls is Recurrent:
            return from_torch(module)
        got = _TORCH_MODES.get(getattr(module, "mode", None))  # by name: torch is never imported here
        if got is not cls:
            what = got.__name__ if got is not None else type(module).__name__
            a = "an" if what.startswith(("LSTM", "RNN")) or what[:1] in "AEIOU" else "a"  # an LSTMCell
            raise LapnetError(f"{cls.__name__}.from_torch got {a} {what}: it builds the twin of a "
                              f"torch.nn.{cls.__name__} (scratch.from_torch(module) picks the class itself)")
        if getattr(module, "proj_size", 0) or not getattr(module, "bias", True):
            raise LapnetError("from_torch: projections (proj_size) and bias=False are not supported")
        if any(getattr(p, "is_meta", False) for p in module.parameters()):
            raise LapnetError(f"from_torch: the {type(module).__name__} has no data (meta device): load or "
                              f"initialise its weights first")
        dtype = str(module.weight_hh_l0.dtype).replace("torch.", "")
        if dtype not in ("float32", "float64"):
            raise LapnetError(f"from_torch: the module's parameters are {dtype}; only float32 and float64 are "
                              f"supported (convert it with module.float() or module.double())")
        extra = {"nonlinearity": "relu" if module.mode == "RNN_RELU" else "tanh"} if cls is RNN else {}
        layer = _quietly(cls, module.input_size, module.hidden_size, module.num_layers,  # torch warned already
                         bidirectional=module.bidirectional, dropout=float(module.dropout), dtype=dtype, **extra)
        layer.load_state_dict(module.state_dict())
        return layer

    def to_torch(self):
        """A batch-first torch.nn module with these weights: always batch-first, the engine's own
        layout, even when `from_torch` read them from a batch_first=False module."""
        import torch  # lazily: the engine itself never needs torch

        ctor = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[self.kind]
        kw = {"nonlinearity": self.nonlinearity} if self.kind == "rnn" else {}
        module = ctor(self.input_size, self.hidden_size, self.num_layers, batch_first=True,
                      bidirectional=self.bidirectional, dropout=self.dropout if self.num_layers > 1 else 0.0,
                      dtype=getattr(torch, self.dtype.name), **kw)
        module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self._params.items()})
        return module

    # --- input checks (all before any work) ---------------------------------------------

    def _check_x(self, x: Any) -> np.ndarray:
        x = as_numpy(x, f"{self.kind} input")
        if x.ndim != 3:
            raise LapnetError(f"{self.kind} input must be (B, T, D) = (batch, time, features), got shape {x.shape}")
        B, T, D = x.shape
        if B < 1 or T < 1:
            raise LapnetError(f"{self.kind} input is empty: shape {x.shape}")
        if D != self.input_size:
            raise LapnetError(f"{self.kind} input has D={D} features per step but input_size is {self.input_size}")
        if x.dtype.kind not in "biuf":  # bool, ints, floats
            raise LapnetError(f"{self.kind} input must be numeric, got dtype {x.dtype}")
        x = x.astype(self.dtype, copy=False)
        if not all_finite(x):
            raise LapnetError(f"{self.kind} input contains NaN or infinite values")
        return x

    def _check_lengths(self, lengths: Any, B: int, T: int):
        if lengths is None:
            return None, None, None
        lengths = as_numpy(lengths, "lengths")
        if lengths.shape != (B,):
            raise LapnetError(f"lengths must have shape ({B},) (one per sequence), got {lengths.shape}")
        # integers, or floats holding whole numbers; not bools, strings or objects
        if not (lengths.dtype.kind in "iu" or (lengths.dtype.kind == "f" and np.all(np.mod(lengths, 1) == 0))):
            raise LapnetError(f"lengths must be integers (one per sequence), got {lengths.dtype} values "
                              f"{lengths[:4].tolist()}")
        lengths = lengths.astype(np.int64)
        if lengths.min() < 1 or lengths.max() > T:
            raise LapnetError(f"lengths must be between 1 and T={T}, got min {lengths.min()} and max {lengths.max()}")
        if lengths.min() == T:
            return lengths, None, None
        mask = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]  # (T, B, 1) live steps
        partial = ~mask.all(axis=(1, 2))  # (T,)
        return lengths, mask, partial

    def _check_state(self, state: Any, B: int, what: str = "state"):
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if self.kind == "lstm":
            if state is None:
                return None, None
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise LapnetError(f"LSTM {what} must be a pair (h, c), each of shape {shape}")
            return tuple(self._check_one(s, shape, f"{what} {n}") for s, n in zip(state, "hc"))
        return self._check_one(state, shape, what), None

    def _check_one(self, s: Any, shape: tuple, what: str):
        if s is None:
            return None
        s = as_numpy(s, what)
        if s.shape != shape:
            raise LapnetError(f"{what} must have shape {shape} = (layers*directions, B, H), got {s.shape}")
        s = s.astype(self.dtype, copy=False)
        if not all_finite(s):
            raise LapnetError(f"{what} contains NaN or infinite values")
        return s

    # --- forward / backward ---------------------------------------------------------------

    def _run(self, x, p, h0, c0, mask, partial, reverse):
        """One layer, one direction: -> (y, h_n, c_n, cache)."""
        raise NotImplementedError

    def _back(self, dy, dh_n, dc_n, cache):
        """-> (dx, dh0, dc0, grads)."""
        raise NotImplementedError

    def forward(self, x: Any, state: Any = None, lengths: Any = None, *, train: bool = False,
                rng: np.random.Generator | None = None):
        """Run the stacked (bi)directional layer over a batch.

        Args:
            x: (B, T, D) inputs.
            state: initial h (L*dirs, B, H), or (h, c) for the LSTM; None means zeros.
            lengths: (B,) true lengths, 1..T (packed-sequence semantics), or None.
            train: apply dropout between layers (needs `rng` and dropout > 0).
            rng: numpy Generator for the dropout masks.

        Returns:
            out: (B, T, dirs*H) top layer's hidden states, zero past each sequence's end.
            state: final h (L*dirs, B, H), or (h, c), each sequence's own last step.
            cache: RecurrentCache for `backward` (and `cache.gates()` for diagnostics).
        """
        with engine_threads():  # per-step products are too small to share across threads
            return self._forward(x, state, lengths, train, rng)

    __call__ = forward

    def _forward(self, x, state, lengths, train, rng):
        x = self._check_x(x)
        B, T, _ = x.shape
        lengths, mask, partial = self._check_lengths(lengths, B, T)
        h0, c0 = self._check_state(state, B)
        if train and self.dropout > 0 and self.num_layers > 1 and rng is None:
            raise LapnetError("forward(train=True) with dropout needs an rng (np.random.default_rng(seed))")
        if rng is not None and not callable(getattr(rng, "random", None)):  # a Generator (or a legacy RandomState)
            raise LapnetError(f"rng must be a numpy Generator, np.random.default_rng(seed), got {type(rng).__name__}")
        L, dirs, H = self.num_layers, self.num_directions, self.hidden_size
        dt = self.dtype
        zeros = np.zeros((B, H), dt)
        h_n = np.empty((L * dirs, B, H), dt)
        c_n = np.empty((L * dirs, B, H), dt) if self.kind == "lstm" else None
        X = workspace.contiguous(x.transpose(1, 0, 2), dt)  # (T, B, D) time-major inside; recycled buffer
        kernels, drop_masks = [], []
        for l in range(L):
            Y = np.empty((T, B, dirs * H), dt) if dirs > 1 else None
            row = []
            for d in range(dirs):
                i = l * dirs + d
                p = {k: self._params[n] for k, n in self._names(l, d).items()}
                y, hn, cn, kc = self._run(X, p, zeros if h0 is None else h0[i], zeros if c0 is None else c0[i],
                                          mask, partial, bool(d))
                row.append(kc)
                h_n[i] = hn
                if c_n is not None:
                    c_n[i] = cn
                if dirs > 1:
                    Y[:, :, d * H:(d + 1) * H] = y  # (T, B, 2H)
                else:
                    Y = y  # (T, B, H)
            kernels.append(row)
            if mask is not None:
                Y = Y * mask  # outputs past a sequence's end are zero
            if train and self.dropout > 0 and l < L - 1:
                keep = (rng.random(Y.shape) >= self.dropout).astype(dt) / dt.type(1.0 - self.dropout)
                drop_masks.append(keep)
                Y = Y * keep  # inverted dropout: scale at train time, identity at eval
            elif l < L - 1:
                drop_masks.append(None)
            X = Y
        out = X.transpose(1, 0, 2).copy()  # (B, T, dirs*H)
        state_out = (h_n, c_n) if self.kind == "lstm" else h_n
        return out, state_out, RecurrentCache(kernels, B, T, mask, lengths, drop_masks, self.kind, L, dirs, self._uid)

    def backward(self, dout: Any, dstate: Any, cache: RecurrentCache):
        """Backpropagate through time, through every layer and direction.

        Args:
            dout: (B, T, dirs*H) gradient on `out` (entries past a sequence's end are
                ignored), or None.
            dstate: gradient on the final state: h (L*dirs, B, H), or (h, c), or None.
            cache: from `forward`.

        Returns:
            dx: (B, T, D) gradient on the input.
            dstate0: gradient on the initial state, shaped like the state.
            grads: parameter name -> gradient, same names and shapes as state_dict().
        """
        with engine_threads():
            return self._backward(dout, dstate, cache)

    def _backward(self, dout, dstate, cache):
        if not isinstance(cache, RecurrentCache):
            raise LapnetError("backward needs the cache returned by forward")
        this = _describe(self.kind, self.num_layers, self.num_directions)
        if (cache.kind, cache.num_layers, cache.num_directions) != (self.kind, self.num_layers, self.num_directions):
            raise LapnetError(f"backward: cache from {cache.describe()}, this is {this}")
        if cache.owner != self._uid:
            raise LapnetError(f"backward: cache from another layer object (same shape); pass the cache this "
                              f"layer's forward returned")
        B, T = cache.B, cache.T
        L, dirs, H = self.num_layers, self.num_directions, self.hidden_size
        dt = self.dtype
        dY = None
        if dout is not None:
            dout = as_numpy(dout, "dout")
            if dout.shape != (B, T, dirs * H):
                raise LapnetError(f"dout must have shape {(B, T, dirs * H)} like the output, got {dout.shape}")
            if not all_finite(dout):
                raise LapnetError("dout contains NaN or infinite values")
            dY = workspace.contiguous(dout.transpose(1, 0, 2), dt)  # (T, B, dirs*H)
            if cache.mask is not None:
                dY = dY * cache.mask  # no gradient past a sequence's end
        dh_n, dc_n = self._check_state(dstate, B, "dstate")
        dh0 = np.zeros((L * dirs, B, H), dt)
        dc0 = np.zeros((L * dirs, B, H), dt) if self.kind == "lstm" else None
        grads: dict[str, np.ndarray] = {}
        for l in range(L - 1, -1, -1):
            dX = None
            for d in range(dirs):
                i = l * dirs + d
                dy = None if dY is None else (dY[:, :, d * H:(d + 1) * H] if dirs > 1 else dY)
                dx, dh, dc, g = self._back(dy, None if dh_n is None else dh_n[i],
                                           None if dc_n is None else dc_n[i], cache.kernels[l][d])
                dh0[i] = dh
                if dc0 is not None:
                    dc0[i] = dc
                for k, n in self._names(l, d).items():
                    grads[n] = g[k]
                dX = dx if dX is None else dX + dx  # (T, B, D_l)
            if l > 0:
                if cache.drop_masks and cache.drop_masks[l - 1] is not None:
                    dX *= cache.drop_masks[l - 1]
                if cache.mask is not None:
                    dX *= cache.mask
            dY = dX
        dx = dY.transpose(1, 0, 2).copy()  # (B, T, D)
        grads = {n: grads[n] for n in self._params}  # torch's order
        return dx, ((dh0, dc0) if self.kind == "lstm" else dh0), grads


class RNN(Recurrent):
    """Elman RNN, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), like torch.nn.RNN.

    Args:
        input_size: D.  hidden_size: H.  num_layers: L.  Everything after num_layers is
        keyword-only (torch's 4th positional argument is `nonlinearity`/`bias`):
        nonlinearity: "tanh" or "relu".  bidirectional: two directions.
        dropout: between layers, in training only.
        dtype: float32 (default, as torch) or float64.  seed: initial weights, None or an
            integer >= 0 (as np.random.default_rng).
        bias, batch_first: accepted for torch compatibility, only as True (the engine always
            has biases and is batch-first); False is refused.
    """

    kind = "rnn"
    _kernel = _rnn

    def __init__(self, input_size, hidden_size, num_layers=1, *extra, nonlinearity: str = "tanh", bias=True,
                 batch_first=True, bidirectional=False, dropout=0.0, dtype=np.float32, seed=0):
        check_no_positional(type(self).__name__, extra)
        if nonlinearity not in ("tanh", "relu"):
            raise LapnetError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype, seed=seed)

    def _config(self):
        return {**super()._config(), "nonlinearity": self.nonlinearity}

    def _extra(self):
        return {"nonlinearity": repr(self.nonlinearity)}

    def _run(self, x, p, h0, c0, mask, partial, reverse):
        y, h_n, cache = _rnn.forward(x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], h0, mask, partial, reverse,
                                     self.nonlinearity)
        return y, h_n, None, cache

    def _back(self, dy, dh_n, dc_n, cache):
        dx, dh0, g = _rnn.backward(dy, dh_n, cache)
        return dx, dh0, None, g


class LSTM(Recurrent):
    """Long short-term memory, like torch.nn.LSTM (gate order i, f, g, o); state (h, c).

    Args: as RNN, without nonlinearity, plus
        proj_size: accepted for torch compatibility, only as 0: the engine's LSTM has no
            projections (h has hidden_size units); any other value is refused.
    """

    kind = "lstm"
    _kernel = _lstm

    def __init__(self, input_size, hidden_size, num_layers=1, *extra, bias=True, batch_first=True,
                 bidirectional=False, dropout=0.0, proj_size: int = 0, dtype=np.float32, seed=0):
        check_no_positional(type(self).__name__, extra)
        if isinstance(proj_size, (bool, np.bool_)) or proj_size != 0:
            raise LapnetError(f"proj_size={proj_size!r} is not supported: the engine's LSTM has no projections "
                              f"(h has hidden_size units; leave proj_size at 0)")
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype, seed=seed)

    def _run(self, x, p, h0, c0, mask, partial, reverse):
        return _lstm.forward(x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], h0, c0, mask, partial, reverse)

    def _back(self, dy, dh_n, dc_n, cache):
        return _lstm.backward(dy, dh_n, dc_n, cache)


class GRU(Recurrent):
    """Gated recurrent unit, like torch.nn.GRU (gate order r, z, n).

    Args: as RNN, without nonlinearity, plus
        gru_form: "pytorch" (default; n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
            matches torch.nn.GRU) or "textbook" (n = tanh(W_in x + b_in + W_hn (r * h) + b_hn),
            Cho et al.; same weights, different hidden states). Both update
            h = (1 - z) * n + z * h_prev (torch's z). The notebook's Exercise 1 is the textbook
            form with z flipped (h = (1 - z) h_prev + z h~) and one matrix on [h, x]:
            `scratch.gru_weights_from_notebook` maps its weights onto gru_form="textbook"
            exactly; no torch.nn.GRU reproduces it.
    """

    kind = "gru"
    _kernel = _gru

    def __init__(self, input_size, hidden_size, num_layers=1, *extra, gru_form: str = "pytorch", bias=True,
                 batch_first=True, bidirectional=False, dropout=0.0, dtype=np.float32, seed=0):
        check_no_positional(type(self).__name__, extra)
        if gru_form not in ("pytorch", "textbook"):
            raise LapnetError(f"gru_form must be 'pytorch' or 'textbook', got {gru_form!r}")
        self.gru_form = gru_form
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype, seed=seed)

    def _config(self):
        return {**super()._config(), "gru_form": self.gru_form}

    def _extra(self):
        return {"gru_form": repr(self.gru_form)} if self.gru_form != "pytorch" else {}

    def to_torch(self):
        if self.gru_form != "pytorch":
            raise LapnetError("to_torch: torch.nn.GRU implements only the 'pytorch' form, not the textbook one")
        return super().to_torch()

    def _run(self, x, p, h0, c0, mask, partial, reverse):
        y, h_n, cache = _gru.forward(x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], h0, mask, partial, reverse,
                                     self.gru_form)
        return y, h_n, None, cache

    def _back(self, dy, dh_n, dc_n, cache):
        dx, dh0, g = _gru.backward(dy, dh_n, cache)
        return dx, dh0, None, g


KINDS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
GATE_BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}  # H-row blocks stacked in weight_ih/weight_hh: (i, f, g, o), (r, z, n)
_TORCH_MODES = {"RNN_TANH": RNN, "RNN_RELU": RNN, "LSTM": LSTM, "GRU": GRU}  # torch's `module.mode` -> class


def _quietly(cls, *args, **kwargs) -> Recurrent:
    """cls(*args, **kwargs) without the one-layer dropout warning (for copies of a layer that had it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"dropout=.* has no effect", category=UserWarning)
        return cls(*args, **kwargs)


def from_torch(module: Any) -> Recurrent:
    """The engine twin of any torch.nn.RNN / LSTM / GRU module (weights copied)."""
    cls = _TORCH_MODES.get(getattr(module, "mode", None))
    if cls is None:
        raise LapnetError(f"from_torch: expected torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    return cls.from_torch(module)
