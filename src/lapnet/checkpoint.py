"""One checkpoint format for both engines: safetensors weights plus JSON, written atomically.

A run directory holds:

    config.json        model + training config (JSON, human readable)
    vocab.json         the character vocabulary (text runs only)
    model.safetensors  the best weights so far (what `sample`, `eval`, `predict` load)
    last.safetensors   the latest weights + optimizer state + trainer state (what `--resume` loads)
    metrics.json       the run's final numbers;  log.jsonl  one JSON line per evaluation

Every file is written to a temporary name in the same directory, flushed to disk and then
renamed over the old one (`os.replace` is atomic on POSIX), so a crash or SIGKILL at any
moment leaves either the old complete file or the new complete file, never half of one.
Nothing is ever unpickled: safetensors holds only raw arrays and a string-to-string header.

Every .safetensors file written by this version carries a SHA-256, in its header, of the JSON
metadata text and of every array's name, dtype, shape and bytes (as stored: little-endian).
`load_tensors` recomputes it and refuses a mismatch, so a changed byte in the weights or in the
metadata (a bad disk, a copy gone wrong) is refused instead of loading as a silently different
model or a different step. The metadata also carries a format marker ("lapnet_format": 2): a
file with the marker but no checksum (its key renamed or dropped) is refused too. Not covered:
files written before 2026-11-27 (no marker, no checksum), which load unchecked as before.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from lapnet import distributed
from lapnet.errors import CheckpointError, LapnetError

META_KEY = "lapnet"  # the safetensors header field that holds our JSON metadata
DIGEST_KEY = "lapnet_sha256"  # and the one that holds the SHA-256 of meta + arrays (see `_digest`)
FORMAT_KEY = "lapnet_format"  # inside the JSON metadata: the checkpoint format's version
FORMAT = 2  # 2: checksum over meta + arrays, required; no marker: older files (see `load_tensors`)
HIDDEN_MAX = 65_536  # the most hidden units a run's config.json may ask for: --hidden's bound (cli.common.HIDDEN_MAX)


def _to_numpy(value: Any) -> np.ndarray:
    """Accept numpy arrays and torch tensors (without importing torch here)."""
    if hasattr(value, "detach"):  # a torch.Tensor
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            raise LapnetError("a bfloat16 tensor cannot go into a lapnet checkpoint (NumPy dtypes only): "
                              "convert the model with .float() before saving")
        value = value.detach().cpu().numpy()
    return np.array(value, order="C", copy=None)  # keeps 0-d scalars 0-d (ascontiguousarray would not)


_UMASK_STATUS = "/proc/self/status"  # where Linux (4.7 on) says a process's umask: read, never set
_UMASK_LOCK = threading.Lock()
_fallback_umask: int | None = None  # elsewhere: read once per process, by setting it (`process_umask`)


def process_umask() -> int:
    """The process's umask, read without changing it: from /proc/self/status on Linux, each call
    (a kernel's user may change it). Elsewhere the only way is to set it and put it back: done
    once per process, under a lock, setting 077 for that instant, so that a file another thread
    creates meanwhile is its owner's alone. umask(0) there made such a file 0666, anyone's to
    write, in a long-lived process (a Jupyter kernel) whose other threads create files."""
    global _fallback_umask
    try:
        with open(_UMASK_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        if _fallback_umask is None:
            _fallback_umask = os.umask(0o077)
            os.umask(_fallback_umask)
        return _fallback_umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes | tuple) -> None:
    """Write `data` (bytes, or a tuple of bytes-like parts written one after the other) to
    `path` atomically: temp file in the same dir, fsync, rename.

    Under torchrun only rank 0 writes run files; on the other ranks of a joined process group
    this is a no-op.
    """
    if distributed.rank() != 0:
        return
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp makes 0600; a run's files are as readable as any other
        with os.fdopen(fd, "wb") as f:
            for part in data if isinstance(data, tuple) else (data,):
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno is not None:  # a full disk, a quota: name the file, same errno
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e} ({kept})") from e
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def check_weights(arrays: Mapping[str, Any], want: Mapping[str, Any], where: str | os.PathLike) -> None:
    """Refuse weights that would load silently wrong into a model whose state_dict is `want`:
    an integer (or bool, or string) array where the model holds floats (torch casts it on
    load), and NaN or infinity in any of them (every forecast would be NaN).

    Raises:
        CheckpointError: one line naming the file and the first bad tensor.
    """
    for name, target in want.items():
        if name not in arrays:
            continue  # the loader names missing and unexpected tensors itself
        a = np.asarray(arrays[name])
        is_float = target.is_floating_point() if hasattr(target, "is_floating_point") else np.asarray(target).dtype.kind == "f"
        if is_float and a.dtype.kind != "f":
            raise CheckpointError(f"{where}: {name} has dtype {a.dtype}, the model's weights are floating point "
                                  "(a file altered after training?)")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise CheckpointError(f"{where}: {name} holds NaN or inf")


def check_replaceable(paths: Iterable[str | os.PathLike]) -> None:
    """Refuse, before anything is written, when a file about to be (re)written is a directory.

    The atomic rename onto a directory fails, but only when that file's turn comes: by then the
    files written before it are already replaced, and the run is left half old, half new.
    """
    for path in map(Path, paths):
        if path.is_dir():
            raise LapnetError(f"{path}: is a directory where a file is to be written (move it away)")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as pretty JSON, atomically (NaN and infinities as null: see `json_text`)."""
    atomic_write_bytes(path, (json_text(obj, indent=2) + "\n").encode())


def json_text(obj: Any, *, indent: int | None = None, default=None) -> str:
    """`obj` as strict JSON: NumPy scalars and arrays as numbers and lists, paths as strings, and
    every NaN or infinity as null (an AUC of one class, an empty bucket). JSON has no NaN
    (RFC 8259): Python would write a bare `NaN`, which JavaScript, Go and most parsers refuse."""
    return json.dumps(_finite(obj), indent=indent, sort_keys=False, default=default or _json_default, allow_nan=False)


def _finite(o: Any) -> Any:
    if isinstance(o, float) or isinstance(o, np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning every failure into a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError, an integer too long
        raise CheckpointError(f"{path}: not valid JSON ({_json_problem(e)})") from None


def _json_problem(e: BaseException) -> str:
    """Why `json.loads` refused a text, in a few words. Beyond malformed text it refuses two
    things a file from someone else may hold on purpose: arrays or objects nested thousands
    deep (RecursionError) and an integer of more than 4300 digits (Python's limit on
    converting one, a ValueError)."""
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
        return e.__class__.__name__
    return "a number with too many digits" if "digits" in str(e) else e.__class__.__name__


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
    """Save named arrays (numpy or torch) and JSON-able `meta` to one safetensors file, atomically.

    The file carries the format marker in its metadata and a checksum of metadata and arrays
    (see the module docstring); `load_tensors` gives `meta` back without the marker.
    """
    from safetensors.numpy import save

    meta = dict(meta or {})
    if FORMAT_KEY in meta:
        raise ValueError(f"'{FORMAT_KEY}' is reserved in checkpoint metadata")
    arrays = {k: _to_numpy(v) for k, v in tensors.items()}
    meta_text = json_text({**meta, FORMAT_KEY: FORMAT})  # strict JSON: NaN and inf become null
    header = {META_KEY: meta_text, DIGEST_KEY: _digest(arrays, meta_text)}
    atomic_write_bytes(path, _sorted_metadata(save(arrays, metadata=header)))


def _sorted_metadata(data: bytes) -> tuple[bytes, memoryview]:
    """A safetensors file's bytes with its header's "__metadata__" first and its keys sorted.

    safetensors writes the metadata from a hash map whose order changes from one process to
    the next, so two identical trainings wrote checkpoints that differed byte for byte (the
    keys "lapnet" and "lapnet_sha256" swapped). The header is written again, in the format's
    own rules: 8 bytes of little-endian length, then the JSON padded with spaces to a multiple
    of 8; the tensors keep their entries, order and offsets, and the data is not touched (it is
    handed back as a view, to be written after the new header without a copy). The
    checksum (`_digest`) covers the metadata text and the arrays, not the header's layout, so
    it holds either way, and files written before keep loading as they are.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | header
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, memoryview(data)[8 + n:]


def _digest(arrays: Mapping[str, np.ndarray], meta_text: str) -> str:
    """SHA-256 over the metadata text, then every array's name, dtype, shape and bytes, in name order.

    safetensors checks the file's layout (a truncated file fails to open) but not its
    contents: a flipped bit in the weights or in the metadata would load as a silently
    different model. `load_tensors` recomputes this and refuses a mismatch. The bytes hashed
    are the little-endian ones safetensors stores, so a big-endian array hashes the same when
    saved as when loaded back; an empty array contributes its name, dtype and shape only.
    """
    h = hashlib.sha256()
    meta_bytes = meta_text.encode("utf-8")
    h.update(f"meta|{len(meta_bytes)}|".encode())
    h.update(meta_bytes)
    for k in sorted(arrays):
        a = arrays[k]
        a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # a no-op for native little-endian
        name = k.encode("utf-8")
        h.update(f"|{len(name)}|".encode() + name + f"|{a.dtype.str}|{a.shape}|".encode())
        if a.size:
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


Layout = Mapping[str, tuple[int, ...]]  # tensor name -> shape


def model_layout(build: Callable[[], Any]) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the state_dict of the torch module `build()` makes, built on
    torch's meta device: no memory is allocated, however large the sizes (a config.json asking
    for 12,000 hidden units costs nothing here, where building it took 4.8 GB).

    Raises:
        CheckpointError: the sizes are too large for torch to describe at all.
    """
    import torch

    try:
        with torch.device("meta"):
            module = build()
    except RuntimeError as e:  # "Storage size calculation overflowed": sizes beyond any tensor
        raise CheckpointError(f"sizes beyond any model ({' '.join(str(e).split())[:100]})") from None
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def layout_mismatch(have: Layout, want: Layout) -> str | None:
    """The first way the tensors `have` (a file's) differ from those `want` (a model's), in a
    few words, or None when they are the same names with the same shapes."""
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    if missing or extra:
        said = [f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}" if extra else ""]
        return "; ".join(x for x in said if x)
    for k, shape in want.items():
        if tuple(have[k]) != tuple(shape):
            return f"{k} is {_shape(have[k])} in the file, {_shape(shape)} in the model"
    return None


def _shape(shape: Iterable[int]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def tensor_names(path: str | os.PathLike) -> list[str]:
    """The names of the arrays in a safetensors file, from its header alone (no array is read):
    how many tensors a file holds bounds the sizes of the model it can fit, before the model is
    even described (`model_layout` of a config asking for 10**5 layers took minutes).

    Raises:
        CheckpointError: the file is missing or not safetensors.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint missing")
    try:
        with safe_open(str(path), framework="numpy") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own error types for every corruption
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({str(e).splitlines()[0][:80]})") from None


def load_tensors(path: str | os.PathLike, expect: Layout | None = None, *,
                 hint: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a file written by `save_tensors`: (arrays, meta). Never unpickles anything.

    `meta` comes back as it was given to `save_tensors` (without the format marker).

    Args:
        expect: the names and shapes the model to load them into holds (`model_layout`):
            checked against the file's header before any array is read, so a file that does
            not fit (a 2.4 GB tensor where the model holds 24 numbers) costs nothing to refuse.
        hint: what to do about a file that does not fit (the end of the message).

    Raises:
        CheckpointError: the file is missing, truncated, not safetensors (a pickle, say),
            was not written by lapnet, does not fit `expect`, does not match its checksum,
            or carries the format marker without a checksum (see the module docstring).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint missing")
    try:
        arrays: dict[str, np.ndarray] = {}
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            if expect is not None:  # the header alone (names, shapes): no array read yet
                said = layout_mismatch({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, expect)
                if said is not None:
                    raise CheckpointError(f"{path}: weights do not fit the model config.json describes ({said})"
                                          + (f": {hint}" if hint else ""))
            for k in f.keys():
                arrays[k] = f.get_tensor(k)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for every corruption
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({str(e).splitlines()[0][:80]})") from None
    if META_KEY not in header:
        raise CheckpointError(f"{path}: not a lapnet checkpoint (no '{META_KEY}' metadata)")
    meta_text, digest = header[META_KEY], header.get(DIGEST_KEY)
    if digest is not None and digest != _digest(arrays, meta_text):
        raise CheckpointError(f"{path}: corrupt checkpoint (its weights or metadata do not match "
                              "the checksum written with them)")
    try:
        meta = json.loads(meta_text)
    except (ValueError, RecursionError):  # malformed, nested thousands deep, an integer of 5000 digits
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt lapnet metadata")
    version = meta.pop(FORMAT_KEY, None)
    if digest is None and version is not None:  # a key renamed or dropped must not turn the check off
        raise CheckpointError(f"{path}: corrupt checkpoint (it has no checksum, but its format "
                              f"({FORMAT_KEY} {version!r}) requires one)")
    if digest is not None and version != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is not one this lapnet reads "
                              f"(it reads {FORMAT}: written by a newer lapnet?)")
    return arrays, meta
