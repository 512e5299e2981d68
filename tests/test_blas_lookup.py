"""The engine finds NumPy's OpenBLAS without /proc (macOS has none), so `--threads` still reaches it."""

import builtins

import pytest

from lapnet.scratch import blas


@pytest.fixture
def fresh_lookup(monkeypatch):
    monkeypatch.setattr(blas, "_API", False)  # looked up again in the test, restored after
    yield


def test_found_through_proc_maps(fresh_lookup):
    paths = blas._openblas_paths()
    assert paths and all("openblas" in p.lower() for p in paths)
    assert blas.blas_api() is not None


def test_found_without_proc(fresh_lookup, monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    paths = blas._openblas_paths()
    assert paths and all("numpy" in p for p in paths)  # NumPy's bundled copy, beside the package
    before = blas.blas_threads()
    assert before is not None
    try:
        assert blas.set_blas_threads(1) == 1
        assert blas.blas_threads() == 1
    finally:
        blas.set_blas_threads(before)
