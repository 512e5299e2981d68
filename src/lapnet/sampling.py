"""Sampling text from a character model, shared by both engines.

An engine supplies a *stepper* with two methods:

    prime(ids (B, P)) -> (logits (B, V), state)   one forward pass over the priming text
    step(ids (B,), state) -> (logits (B, V), state)   one character further

The hidden state is carried from step to step, so the prefix is encoded exactly once: making
N characters costs N steps, not N^2/2 as re-running the model on the growing text would.
Choosing the next character (temperature, top-k, top-p) happens here in NumPy on the (B, V)
logits, the same code for both engines, and B = num_samples streams run in one batch.

Temperature 0 means greedy decoding: always the most likely character (argmax), and so does
any temperature below GREEDY_BELOW, the limit T -> 0 (see there).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from lapnet.data.text import Vocab
from lapnet.errors import LapnetError
from lapnet.scratch.blas import engine_threads

GREEDY_BELOW = 1e-6
# Temperatures below this decode greedily, their T -> 0 limit, instead of dividing by T: far
# below it 1 / T overflows float32 (below ~3e-39) and the logits become inf/NaN (warnings,
# garbage text). Why 1e-6: the runner-up's probability is at most exp(-gap / T), below float32
# resolution (2^-24) once gap > 17 T = 1.7e-5 nats, while the logits themselves carry ~1e-6 of
# rounding noise (the torch and NumPy engines' logits of one run differ by 6e-7). So at 1e-6
# sampling is already argmax except between characters the model cannot tell apart. 1e-3
# would not do: measured on a char LSTM trained on Hamlet, the characters other than the
# argmax still held more than 2^-24 of the mass at 1.4% of positions at T = 1e-3 (up to 27%:
# top-two gaps go down to 0.001 nats), and at none at T = 1e-5.


class Stepper(Protocol):
    def prime(self, ids: np.ndarray) -> tuple[np.ndarray, Any]: ...
    def step(self, ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...


@dataclass
class SampleConfig:
    """How to pick each next character."""

    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None

    @property
    def greedy(self) -> bool:
        """Argmax decoding: temperature 0, or so small that it is the same (GREEDY_BELOW)."""
        return self.temperature < GREEDY_BELOW

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Refuse settings that would sample from something else than asked (a top_k of 0 or
        a top_p above 1 would filter nothing).

        Args:
            flags: field -> the command-line flag that set it (`lapnet text sample` passes
                {"top_k": "--top-k", ...}), for errors that name the flag; by default they
                name the field, e.g. "top_k must be at least 1, got 0".
        """
        flags = flags or {}
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not (t >= 0 and np.isfinite(t)):
            raise LapnetError(f"{flags.get('temperature', 'temperature')} must be a finite number, 0 (greedy) or "
                              f"positive, got {t!r}")
        if self.top_k is not None:
            if isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral):
                raise LapnetError(f"{flags.get('top_k', 'top_k')} must be a whole number (or None: no limit), "
                                  f"got {self.top_k!r}")
            if self.top_k < 1:
                raise LapnetError(f"{flags.get('top_k', 'top_k')} must be at least 1, got {self.top_k}")
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(self.top_p, numbers.Real)
                                       or not 0.0 < self.top_p <= 1.0):  # NaN fails the range
            raise LapnetError(f"{flags.get('top_p', 'top_p')} must be in (0, 1], got {self.top_p!r}")


def filter_probs(logits: np.ndarray, cfg: SampleConfig) -> np.ndarray:
    """The distribution sampling draws from, after temperature, top-k and top-p.

    Args:
        logits: (B, V) unnormalised log-probabilities.
        cfg: temperature, top-k, top-p; a greedy temperature (`SampleConfig.greedy`) gives
            all the mass to the argmax.

    Returns:
        (B, V) float64 probabilities summing to 1 per row, zero outside the kept set.
    """
    cfg.validate()  # a top_k of 0 or a top_p of 1.5 would quietly filter nothing
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] < 1:
        hint = " (one row: logits[None])" if logits.ndim == 1 else ""
        raise LapnetError(f"logits must be (B, V) = (streams, vocabulary), got shape {logits.shape}{hint}")
    if cfg.greedy:  # the T -> 0 limit; dividing by a tiny T would overflow
        p = np.zeros(logits.shape, np.float64)
        np.put_along_axis(p, logits.argmax(axis=1)[:, None], 1.0, axis=1)
        return p
    z = logits.astype(np.float64) / cfg.temperature  # (B, V)
    if cfg.top_k is not None and cfg.top_k < z.shape[1]:
        kth = np.partition(z, -cfg.top_k, axis=1)[:, -cfg.top_k][:, None]  # (B, 1) k-th largest
        z = np.where(z >= kth, z, -np.inf)  # ties at the threshold are all kept
    z -= z.max(axis=1, keepdims=True)  # exp cannot overflow
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if cfg.top_p is not None and cfg.top_p < 1.0:
        order = np.argsort(-p, axis=1, kind="stable")  # (B, V) most likely first
        sorted_p = np.take_along_axis(p, order, axis=1)
        before = np.cumsum(sorted_p, axis=1) - sorted_p  # mass of the strictly more likely ones
        keep_sorted = before < cfg.top_p  # the smallest prefix whose mass reaches top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    return p


class Chooser:
    """Picks the next character of every stream from (B, V) logits.

    Plain sampling (no top-k / top-p) uses the Gumbel-max trick: argmax(z / T + g), with g
    standard Gumbel noise, is an exact draw from softmax(z / T). The noise is drawn ahead in
    blocks of rows, so a step is a multiply, an add and an argmax: no exponentials, no
    normalisation, no cumulative sum. Rows are consumed in order, one per stream per step, so
    B = 1 gives the same characters through `one` and through the batched call. With top-k
    or top-p the kept distribution is built explicitly (`filter_probs`) and sampled by
    inverse CDF. Everything is reproducible from `seed`.
    """

    GUMBEL_BLOCK = 256  # rows of noise drawn at once

    def __init__(self, cfg: SampleConfig, seed: int | None = None):
        cfg.validate()
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self._plain = cfg.top_k is None and (cfg.top_p is None or cfg.top_p >= 1.0)
        self._greedy = cfg.greedy
        self._inv_t = 0.0 if self._greedy else 1.0 / cfg.temperature
        self._g = np.empty((0, 0), np.float32)  # (rows, V) Gumbel noise drawn ahead
        self._gnext = 0
        self._u = np.empty(0)  # uniforms for inverse-CDF sampling, drawn in blocks
        self._next = 0

    def _draw(self, n: int, V: int) -> None:
        u = self.rng.random((max(self.GUMBEL_BLOCK, n), V))
        with np.errstate(divide="ignore"):  # u == 0 gives -inf: that character is never picked
            self._g, self._gnext = (-np.log(-np.log(u))).astype(np.float32), 0

    def _gumbel(self, n: int, V: int) -> np.ndarray:
        """The next n rows of (n, V) float32 Gumbel noise."""
        if self._gnext + n > len(self._g) or self._g.shape[1] != V:
            self._draw(n, V)
        g = self._g[self._gnext: self._gnext + n]
        self._gnext += n
        return g

    @property
    def fused(self) -> bool:
        """Plain sampling or greedy: a stepper's fused loop (`stream`) can do the choosing."""
        return self._plain or self._greedy

    @property
    def scale(self) -> float:
        """What a fused loop multiplies the logits by before adding a row: 1 / T (1 for greedy)."""
        return self._inv_t or 1.0

    def next_rows(self, V: int) -> np.ndarray:
        """For a fused loop: every row of noise left in the current block (a fresh block when
        none is left), all counted as consumed; rows of zeros for greedy decoding. The rows
        come in the order `one` would use them, so the draws are the same."""
        if self._greedy:
            return np.zeros((self.GUMBEL_BLOCK, V), np.float32)
        if self._gnext >= len(self._g) or self._g.shape[1] != V:
            self._draw(self.GUMBEL_BLOCK, V)
        rows = self._g[self._gnext:]
        self._gnext = len(self._g)
        return rows

    def _uniforms(self, n: int) -> np.ndarray:
        if self._next + n > len(self._u):
            self._u, self._next = self.rng.random(max(4096, n) // n * n), 0
        u = self._u[self._next: self._next + n]
        self._next += n
        return u

    def one(self, z: np.ndarray) -> int:
        """(V,) logits of one stream -> the next id: the single-stream sampler's hot path."""
        if self._greedy:
            return int(z.argmax())
        if not self._plain:
            return int(self(z[None])[0])
        t = z * self._inv_t  # (V,)
        t += self._gumbel(1, len(z))[0]
        return int(t.argmax())

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """(B, V) logits -> (B,) int64 ids."""
        if self._greedy:
            return logits.argmax(axis=1)
        if self._plain:
            t = logits * self._inv_t  # (B, V)
            t += self._gumbel(len(logits), logits.shape[1])
            return t.argmax(axis=1)
        p = filter_probs(logits, self.cfg)
        cdf = np.cumsum(p, axis=1)  # (B, V)
        u = self._uniforms(len(cdf)) * cdf[:, -1]  # (B,)
        ids = (cdf <= u[:, None]).sum(axis=1)  # first index whose cdf exceeds u
        return np.minimum(ids, cdf.shape[1] - 1)


def start_ids(vocab: Vocab, prime: str, num_samples: int, rng: np.random.Generator, *,
              what: str = "prime") -> np.ndarray:
    """The (B, P) ids every stream starts from: the prime, or for an empty prime one random
    character per stream drawn from `rng` (the model needs one input to predict the next).
    `generate` draws it first from np.random.default_rng(seed), so the same call reproduces it.
    `what` names the prime in the error about characters outside the vocabulary."""
    if prime:
        return np.tile(vocab.encode(prime, what=what), (num_samples, 1))  # (B, P)
    return rng.integers(0, len(vocab), size=(num_samples, 1))  # (B, 1)


def generate(
    stepper: Stepper,
    vocab: Vocab,
    *,
    prime: str,
    length: int,
    cfg: SampleConfig,
    num_samples: int = 1,
    seed: int | None = None,
    on_chars: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """Continue `prime` by `length` characters, `num_samples` streams in one batch.

    Args:
        stepper: the engine's stepper (see the module docstring).
        vocab: the model's vocabulary; `prime` must use only its characters.
        prime: the text to start from. Empty: start from a random character of the
            vocabulary chosen by `seed` (the model needs one input to predict the next).
        length: how many characters to make (> 0), not counting the prime.
        cfg: temperature / top-k / top-p.
        num_samples: B, independent samples made side by side.
        seed: makes the samples reproducible.
        on_chars: called with the B start texts, then with the B new characters after every
            step (for streaming output).

    Returns:
        B strings, each prime + its continuation.
    """
    cfg.validate()
    if length <= 0:
        raise LapnetError(f"length must be positive, got {length}")
    if num_samples < 1:
        raise LapnetError(f"num_samples must be at least 1, got {num_samples}")
    choose = Chooser(cfg, seed)
    B = num_samples
    start = start_ids(vocab, prime, B, choose.rng)  # (B, P)
    texts = [vocab.decode(row) for row in start]
    if on_chars is not None:
        on_chars(texts)  # the start text first, so a stream shows it before the new characters
    with engine_threads():  # single-threaded BLAS, as the engine runs: a woken second OpenBLAS
        logits, state = stepper.prime(start)  # thread would spin on the other core for ~0.1 s
    # (B, V): the prefix is encoded once, here
    if B == 1 and hasattr(stepper, "step_one"):
        with engine_threads():  # matrix-vector products: one BLAS thread is faster (see scratch.blas)
            return [texts[0] + _one_stream(stepper, choose, logits[0], state, length, list(vocab.chars), on_chars)]
    chars = np.array(list(vocab.chars))
    pieces: list[np.ndarray] = []
    for i in range(length):
        ids = choose(logits)  # (B,)
        new = chars[ids]
        pieces.append(new)
        if on_chars is not None:
            on_chars(new.tolist())
        if i + 1 < length:
            logits, state = stepper.step(ids, state)  # one step on, the state carried
    made = np.stack(pieces, axis=1)  # (B, length)
    return [t + "".join(row) for t, row in zip(texts, made)]


def _one_stream(stepper, choose: Chooser, z: np.ndarray, state, length: int, chars: list[str],
                on_chars: Callable[[list[str]], None] | None) -> str:
    """The single-stream loop on plain ints: the same draws and characters as the batched
    loop with B = 1, without its per-step array bookkeeping (at ~40 us per character, a few
    microseconds of (1,)-shaped arrays and fancy indexing are a sizeable share)."""
    made: list[str] = []
    j = choose.one(z)
    made.append(chars[j])
    if on_chars is not None:
        on_chars([chars[j]])
    if length > 1 and choose.fused and hasattr(stepper, "stream"):  # the LSTM's fused loop
        V = len(z)
        emit = None if on_chars is None else (lambda i: on_chars([chars[i]]))
        ids = stepper.stream(j, state, length - 1, choose.scale, lambda: choose.next_rows(V), emit)
        if ids is not None:
            return made[0] + "".join([chars[i] for i in ids])
    for _ in range(length - 1):
        z, state = stepper.step_one(j, state)  # (V,): one step on, the state carried
        j = choose.one(z)
        made.append(chars[j])
        if on_chars is not None:
            on_chars([chars[j]])
    return "".join(made)
