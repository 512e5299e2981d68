"""Text for character-level language models: reading, the vocabulary, the split, TBPTT batches.

Shapes: ids (N,) int64 over a vocabulary of V characters; a training chunk is x, y (B, T)
with y the same characters shifted one step to the left (predict the next character).

Truncated back-propagation through time (TBPTT) needs *contiguous* batches: the text is cut
into B streams laid side by side, and chunk k+1 of row b starts exactly where chunk k of row b
ended, so the hidden state that row b ends chunk k with is the right state to start chunk k+1
with. Shuffling windows (as the notebook does) would throw that state away at every step.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from lapnet.errors import LapnetError

BUNDLED = "hamlet.txt"  # the notebook's passage, shipped as package data
BOM = "\ufeff"  # a byte-order mark some editors put first in a UTF-8 file: not part of the text


def decode_text(raw: bytes, name: str) -> str:
    """UTF-8 bytes -> text, without a leading byte-order mark (`utf-8-sig`): the mark says how
    the file is encoded, it is not a character of the text (left in, it would become a
    vocabulary entry, the prime of samples.txt, and an invisible "unknown character" when a
    file without it is scored).

    What is refused names what the bytes look like: UTF-16 or UTF-32 (by their byte-order
    mark, or for UTF-16 without one, by every other byte being NUL: ASCII text in UTF-16 is
    valid UTF-8 byte for byte, and was learnt as `h\\0e\\0l\\0...`), with the `iconv` command
    that converts it; another 8-bit encoding, with the Latin-1 conversion; binary data (more
    than MAX_NUL_SHARE of the characters are NUL). A byte-order mark *inside* the text (files
    joined with `cat`) is kept, as a character of the text, with a warning.

    Raises:
        LapnetError: not UTF-8, binary, or empty (a file holding only a BOM is empty too).
    """
    wide = _wide_encoding(raw)
    if wide is not None:
        encoding, why = wide
        raise LapnetError(f"{name}: not UTF-8 text: {why}; convert it with {_iconv(encoding, name)}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        where = f"byte 0x{raw[e.start]:02x} at offset {e.start}"
        if b"\0" in raw:
            raise LapnetError(f"{name}: not UTF-8 text ({where}), and it holds NUL bytes: binary data, not a "
                              f"text file") from None
        raise LapnetError(f"{name}: not UTF-8 text ({where}); if it is Latin-1 (ISO-8859-1), convert it with "
                          f"{_iconv('latin1', name)}") from None
    if not text:
        raise LapnetError(f"{name}: empty file (no text to read)" if name != "standard input"
                          else "standard input: empty (no text to read)")
    nul = text.count("\0")
    if nul > MAX_NUL_SHARE * len(text):
        raise LapnetError(f"{name}: binary data, not text ({nul / len(text):.0%} of its {len(text):,} characters "
                          f"are NUL bytes)")
    inner = text.count(BOM)
    if inner:
        import warnings

        warnings.warn(f"{name}: {inner} byte-order mark{'s' if inner > 1 else ''} (U+FEFF) inside the text, not "
                      f"at its start (files joined with cat?): kept as {'characters' if inner > 1 else 'a character'} "
                      f"of the text")
    return text


MAX_NUL_SHARE = 0.10  # more NUL characters than this share of a text: binary data, refused

# byte-order marks of the encodings that are not UTF-8, longest first (UTF-32LE's starts with UTF-16LE's)
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32", "UTF-32LE"), (b"\x00\x00\xfe\xff", "utf-32", "UTF-32BE"),
              (b"\xff\xfe", "utf-16", "UTF-16LE"), (b"\xfe\xff", "utf-16", "UTF-16BE"))


def _wide_encoding(raw: bytes) -> tuple[str, str] | None:
    """(iconv's name, why) when `raw` is UTF-16 or UTF-32 by its byte-order mark, or UTF-16
    without one: NUL in at least 40% of the odd bytes (little-endian; the even ones for
    big-endian) and in under 5% of the others, as ASCII and Latin text in UTF-16 is. None
    otherwise (UTF-16 of CJK text has few NULs: it fails as UTF-8 and is named by its byte)."""
    for bom, iconv, label in _WIDE_BOMS:
        if raw.startswith(bom):
            return iconv, f"it starts with the {label} byte-order mark ({bom.hex(' ')})"
    head = raw[:1 << 20]  # the first MB tells
    if len(head) < 4 or b"\0" not in head:
        return None
    even, odd = head[0::2], head[1::2]
    share_even, share_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    for zeros, others, label in ((share_odd, share_even, "UTF-16LE"), (share_even, share_odd, "UTF-16BE")):
        if zeros >= 0.4 and others < 0.05:
            return label.lower(), (f"it looks like {label} without a byte-order mark ({zeros:.0%} of its "
                                   f"{'odd' if label.endswith('LE') else 'even'} bytes are NUL)")
    return None


def _iconv(encoding: str, name: str) -> str:
    """The iconv command that converts the input `name` from `encoding` to UTF-8."""
    import shlex

    if name == "standard input":
        return f"`iconv -f {encoding} -t utf-8` before the pipe"
    p = Path(name)
    target = p.with_name(p.stem + ".utf8" + p.suffix)
    return f"`iconv -f {encoding} -t utf-8 {shlex.quote(name)} > {shlex.quote(str(target))}`"


def show_char(ch: str) -> str:
    """A character as a message shows it: repr() for a visible one ('a', 'é', ' '); a
    combining mark, an invisible or a control character by its code point and Unicode name
    (`U+0301 COMBINING ACUTE ACCENT`, `U+200D ZERO WIDTH JOINER`), or with its repr when it
    has no name (`U+000A '\\n'`): quoted alone, a combining mark lands on the quote."""
    if ch.isprintable() and not unicodedata.category(ch).startswith("M"):
        return repr(ch)
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}" if name else f"U+{ord(ch):04X} {ch!r}"


def show_chars(chars, limit: int = 10) -> str:
    """The first `limit` of `chars`, each by `show_char`, comma-separated (" ..." for more)."""
    chars = list(chars)
    return ", ".join(show_char(ch) for ch in chars[:limit]) + (" ..." if len(chars) > limit else "")


def bundled_text() -> str:
    """The notebook's Hamlet passage (the default training text)."""
    return resources.files("lapnet.data").joinpath(BUNDLED).read_text(encoding="utf-8")


def read_text(path: str | os.PathLike | None) -> str:
    """Read a UTF-8 text file (None: the bundled Hamlet passage); a leading byte-order mark
    is dropped (see `decode_text`).

    Raises:
        LapnetError: the file is missing, unreadable, a directory, not UTF-8, or empty.
    """
    if path is None:
        return bundled_text()
    p = Path(path)
    if not p.exists():
        raise LapnetError(f"{p}: no such file")
    if p.is_dir():
        raise LapnetError(f"{p}: is a directory, expected a text file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise LapnetError(f"{p}: cannot read ({e.strerror or e.__class__.__name__})") from None
    return decode_text(raw, str(p))


@dataclass(frozen=True)
class Vocab:
    """The characters a model knows, in a fixed order (index = position in `chars`)."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        """Every distinct character of `text`, sorted by code point."""
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.chars)}

    def unknown(self, text: str) -> list[str]:
        """The characters of `text` that are not in the vocabulary, in order of appearance."""
        known = set(self.chars)
        return list(dict.fromkeys(ch for ch in text if ch not in known))

    def unknown_message(self, text: str, bad: list[str], what: str = "text", advice: str = "") -> str:
        """"`what` has N character(s) the model never saw: ..." for the characters `bad` of
        `text` (`show_chars`), then `advice` in brackets. When they include combining marks,
        or precomposed letters the model saw decomposed, it says which Unicode normal form
        (NFC or NFD) would fit the vocabulary, or that the forms may differ."""
        line = f"{what} has {len(bad)} character(s) the model never saw: {show_chars(bad)}"
        hint = self._normal_form_hint(text, bad)
        notes = [n for n in (hint, advice) if n]
        return line + (f" ({'; '.join(notes)})" if notes else "")

    def _normal_form_hint(self, text: str, bad: list[str]) -> str:
        marks = any(unicodedata.category(ch).startswith("M") for ch in bad)
        for form, spelled in (("NFC", "accents composed"), ("NFD", "accents as combining marks")):
            if not self.unknown(unicodedata.normalize(form, text)):
                return (f"normalised to Unicode {form}, {spelled}, it fits the model's vocabulary: "
                        f"unicodedata.normalize('{form}', text) in Python")
        if marks:
            return ("combining marks: the model's text may have been in another Unicode normal form (NFC "
                    "composes accents, NFD splits them off)")
        return ""

    def encode(self, text: str, *, what: str = "text") -> np.ndarray:
        """Text -> ids (N,) int64; characters outside the vocabulary are named in the error
        (`unknown_message`)."""
        bad = self.unknown(text)
        if bad:
            raise LapnetError(self.unknown_message(text, bad, what))
        lut = self.index
        return np.fromiter((lut[ch] for ch in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        """ids (N,) -> text."""
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"chars": list(self.chars)}  # a list: one entry per character survives any JSON tool

    @classmethod
    def from_json(cls, obj, where: str = "vocab.json") -> "Vocab":
        """The vocabulary saved by `to_json`; `where` names the file in the error.

        JSON's "\\ud800" is a lone surrogate in Python, a code point no text holds: refused, or
        the run would load and crash printing a sample that drew it (UTF-8 cannot encode it)."""
        try:
            chars = obj["chars"]
            if not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise LapnetError(f"{where}: expected {{\"chars\": [one distinct character per entry]}}") from None
        for i, ch in enumerate(chars, 1):
            if "\ud800" <= ch <= "\udfff":
                raise LapnetError(f"{where}: entry {i} is U+{ord(ch):04X}, a lone surrogate, not a character: the file "
                                  "was altered or not written by lapnet (train the run again)")
        return cls("".join(chars))


def split_ids(ids: np.ndarray, val_frac: float, what: str = "text") -> tuple[np.ndarray, np.ndarray]:
    """Train on the beginning, validate on the END of the text (never shuffled: no leakage
    of neighbouring characters from the validation text into training). `what` names the
    text in the errors (`lapnet text train` gives the file's name).

    Returns:
        train (N_train,), val (N_val,), with N_val = round(val_frac * N), at least 2 when
        val_frac > 0 (one input and one target).
    """
    if not 0.0 <= val_frac < 1.0:
        raise LapnetError(f"val_frac must be in [0, 1), got {val_frac}")
    n = len(ids)
    if n < 2:
        raise LapnetError(f"{what} has {n} character{'' if n == 1 else 's'}: too short to train on at all (a "
                          f"model needs at least 2 characters, an input and its target)")
    n_val = 0 if val_frac == 0 else max(2, int(round(val_frac * n)))
    if n - n_val < 2:
        raise LapnetError(f"{what} has {n} characters: too short to split off {val_frac:.0%} for validation "
                          f"(val_frac=0 trains on all of it)")
    return ids[: n - n_val], ids[n - n_val:]


class TextBatches:
    """Contiguous TBPTT chunks over `ids`, the batches object `lapnet.train.fit` consumes.

    The text is laid out as B streams of L = N // B characters each. Each epoch starts every
    stream at the same random offset in [0, T) (seeded by seed and epoch), so successive epochs
    cut the text at different places while chunk k+1 still continues chunk k row by row; the
    price is one chunk per stream per epoch left out (a short text keeps all its chunks).

    Args:
        ids: (N,) int64 training text.
        batch: B, the number of parallel streams; reduced (never below 1) when the text is too
            short to give every stream one window; see `self.batch`.
        seq_len: T, characters per chunk (the BPTT truncation length).
        seed: with the epoch number, fixes the offsets.
    """

    def __init__(self, ids: np.ndarray, batch: int, seq_len: int, seed: int = 0):
        if seq_len < 1 or batch < 1:
            raise LapnetError(f"seq_len and batch must be at least 1, got {seq_len} and {batch}")
        n = len(ids)
        if n < seq_len + 1:
            fix = f"seq_len={n - 1} or less" if n >= 2 else "a longer text"
            raise LapnetError(f"training text has {n} characters, shorter than one training window "
                              f"(seq_len {seq_len} + 1): give {fix}")
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.seq_len = seq_len
        self.batch = min(batch, n // (seq_len + 1))  # every stream holds at least one window
        self.seed = seed
        self.stream_len = n // self.batch  # L
        L, T = self.stream_len, seq_len
        if (L - T) // T >= 1:  # long enough to give up one chunk for offsets anywhere in [0, T)
            self._max_offset = T - 1
            self._steps = (L - T) // T
        else:  # a short text: every full chunk counts, offsets only within the slack
            self._steps = (L - 1) // T
            self._max_offset = min(T - 1, (L - 1) - self._steps * T)

    def steps_per_epoch(self) -> int:
        return self._steps

    def chars_per_epoch(self) -> int:
        return self._steps * self.seq_len * self.batch

    def epoch(self, e: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks (x, y), each (B, T) int64 with y = x shifted one character on."""
        B, T, L = self.batch, self.seq_len, self.stream_len
        rng = np.random.default_rng([self.seed, e])
        offset = int(rng.integers(0, self._max_offset + 1))
        streams = self.ids[: B * L].reshape(B, L)  # (B, L): row b continues where row b-1 ends
        for k in range(self._steps):
            s = offset + k * T
            yield streams[:, s: s + T], streams[:, s + 1: s + T + 1]  # (B, T), (B, T)


def eval_streams(n: int, max_streams: int = 32, min_len: int = 2048) -> int:
    """How many parallel streams to cut a text of n scored characters into.

    One stream would be exact but serial (a 100 kB text = 100k sequential steps); S streams run
    S times fewer steps, and each cold start costs only its first few characters' context.
    """
    return int(max(1, min(max_streams, n // min_len)))


def check_streams(streams: object) -> None:
    """Refuse a `streams` (`lapnet text eval --streams`) that is not None or an integer >= 1."""
    if streams is not None and (isinstance(streams, bool) or not isinstance(streams, (int, np.integer)) or streams < 1):
        raise LapnetError(f"--streams must be an integer >= 1, got {streams!r}")


def eval_layout(ids: np.ndarray, max_streams: int = 32, streams: int | None = None) -> np.ndarray:
    """Lay a text to score out as S contiguous streams (S, L+1): every stream's inputs are
    row[:-1], targets row[1:], and row s+1 starts on the character row s ends with.

    S = `streams` if given (at most one per scored character), else `eval_streams` (one per
    2048 characters, at most `max_streams`); L = (N - 1) // S. The N - 1 - S*L (< S)
    characters after the last row are not in `rows`: `eval_tail` gives them, to be scored as
    the continuation of the last stream, so that every character but the first is scored.
    """
    n = len(ids)
    if n < 2:
        raise LapnetError(f"validation text has {n} character(s): need at least 2 (an input and a target)")
    check_streams(streams)
    S = eval_streams(n - 1, max_streams) if streams is None else int(min(streams, n - 1))
    L = (n - 1) // S
    rows = np.stack([ids[b * L: b * L + L + 1] for b in range(S)])  # (S, L+1), rows overlap by one char
    return rows


def eval_tail(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The characters of `ids` after `eval_layout`'s rows, with the last row's final character
    first (it is the input that predicts the first of them): (R+1,) with R = N - 1 - S*L < S,
    scored from the state the last stream ends in. R = 0: just that one character."""
    S, L1 = rows.shape
    return ids[S * (L1 - 1):]
