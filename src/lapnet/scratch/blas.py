"""How many threads NumPy's BLAS may use while the engine runs.

A recurrent layer makes two small matrix products per time step ((B, H) x (H, 4H) for an
LSTM). Shared across threads, each product costs more in hand-offs than it saves, and on a
busy machine the threads wait for each other: on a shared 2-core box an OpenBLAS product
of (180, 32) x (32, 128) took 1.8 ms with two threads and 0.07 ms with one. So the engine
runs its BLAS calls single-threaded by default and restores the previous setting after
each forward or backward call. `set_engine_threads(None)` leaves BLAS alone.

Works with the OpenBLAS that NumPy wheels bundle (found through the loaded libraries, no
extra dependency); with another BLAS (Apple's Accelerate, MKL) it does nothing.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from lapnet.errors import LapnetError

_ENGINE_THREADS: int | None = 1
_API: tuple | None | bool = False  # False: not looked up yet; None: no OpenBLAS found


def set_engine_threads(n: int | None) -> None:
    """BLAS threads while the engine runs (default 1); None: do not touch BLAS threads."""
    global _ENGINE_THREADS
    if n is not None and int(n) < 1:
        raise LapnetError(f"engine threads must be at least 1 (or None), got {n}")
    _ENGINE_THREADS = None if n is None else int(n)


def blas_api():
    """(get, set) thread-count functions of the OpenBLAS that NumPy loaded, or None.

    NumPy has no API for this and threadpoolctl is not a dependency, so the library is found
    in the process's memory map and its symbols looked up by name: NumPy wheels bundle it as
    `scipy_openblas` with a `64_` suffix (64-bit integers), other builds as plain `openblas`.
    Looked up once; every BLAS thread setting in lapnet goes through here.
    """
    global _API
    if _API is not False:
        return _API
    _API = None
    import numpy  # noqa: F401  (makes sure its BLAS is loaded)

    for path in _openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            get, set_ = f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}"
            if hasattr(lib, get) and hasattr(lib, set_):
                g, s = getattr(lib, get), getattr(lib, set_)
                g.restype, s.argtypes = ctypes.c_int, [ctypes.c_int]
                _API = (g, s)
                return _API
    return None


def _openblas_paths() -> list[str]:
    """Files of the OpenBLAS NumPy loaded: from /proc/self/maps on Linux; elsewhere (macOS has no
    /proc) the copies NumPy's wheels bundle beside it (`numpy/.dylibs` on macOS, `numpy.libs` on
    Linux and Windows), which dlopen hands back already loaded."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({p[-1] for p in (line.split() for line in f)
                           if len(p) >= 6 and "openblas" in p[-1].lower() and ".so" in p[-1]})
    except OSError:
        pass
    import numpy

    root = Path(numpy.__file__).resolve().parent
    found = []
    for folder in (root / ".dylibs", root.parent / "numpy.libs"):
        if folder.is_dir():
            found += sorted(str(f) for f in folder.iterdir()
                            if "openblas" in f.name.lower() and f.suffix in (".so", ".dylib", ".dll"))
    return found


def blas_threads() -> int | None:
    """Threads NumPy's OpenBLAS uses now (None when it cannot be told)."""
    api = blas_api()
    return None if api is None else int(api[0]())


def set_blas_threads(n: int) -> int | None:
    """Let NumPy's OpenBLAS use `n` threads from now on, in the whole process.

    Returns:
        the count now in force, or None when OpenBLAS cannot be reached (nothing changed).
    """
    if int(n) < 1:
        raise LapnetError(f"BLAS threads must be at least 1, got {n}")
    api = blas_api()
    if api is None:
        return None
    api[1](int(n))
    return int(api[0]())


class _EngineThreads:
    """Run the enclosed BLAS calls with the engine's thread count, then restore.

    A plain class rather than @contextmanager: it is entered twice per training step, and
    at tiny sizes a generator-based context costs as much as a few time steps.
    """

    __slots__ = ("before",)

    def __enter__(self) -> None:
        api = _API if _API is not False else blas_api()
        self.before = None
        if api is not None and _ENGINE_THREADS is not None:
            before = api[0]()
            if before != _ENGINE_THREADS:
                api[1](_ENGINE_THREADS)
                self.before = before

    def __exit__(self, *exc) -> None:
        if self.before is not None:
            _API[1](self.before)


def engine_threads() -> _EngineThreads:
    """Context manager: the engine's BLAS thread count inside, the previous one restored after."""
    return _EngineThreads()
