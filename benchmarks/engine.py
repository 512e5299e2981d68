"""Speed of the NumPy engine against torch on the CPU: forward + backward, float32.

Both sides run in this one process, with the same thread count for torch and for
NumPy's BLAS (OpenBLAS), the same weights, inputs and upstream gradients; runs of the two
alternate so that both see the same machine load. Each run is timed twice: process CPU
time (the headline: on a shared machine it does not count the time other processes hold
the core) and wall-clock time. Prints medians and the ratio engine / torch (below 1.0: the
engine is faster).

    .venv/bin/python benchmarks/engine.py               # all sizes, 1 thread
    .venv/bin/python benchmarks/engine.py --threads 2 --repeats 30
"""

from __future__ import annotations

import argparse
import os
import sys
import time

SIZES = {  # name: (B, D, H, L, T)
    "tiny": (1, 1, 8, 1, 50),
    "notebook": (64, 32, 128, 2, 40),
    "larger": (64, 256, 256, 2, 100),
}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="threads for torch and for OpenBLAS (default 1)")
    ap.add_argument("--repeats", type=int, default=0, help="timed runs per case (default: by size)")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--kinds", nargs="+", default=["rnn", "lstm", "gru"], choices=["rnn", "lstm", "gru"])
    return ap.parse_args()


ARGS = parse()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before numpy and torch load their BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lapnet import scratch  # noqa: E402

torch.set_num_threads(ARGS.threads)


def openblas_threads() -> str:
    """Ask the OpenBLAS that numpy loaded how many threads it uses (best effort)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return "unknown"
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for fn in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, fn):
                return str(getattr(lib, fn)())
    return f"unknown (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})"


def make_case(kind: str, B: int, D: int, H: int, L: int, T: int):
    torch.manual_seed(0)
    ctor = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    mod = ctor(D, H, L, batch_first=True)
    eng = scratch.from_torch(mod)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    dout = rng.standard_normal((B, T, H)).astype(np.float32)
    xt, dt_ = torch.from_numpy(x), torch.from_numpy(dout)

    def run_torch():
        xg = xt.detach().requires_grad_(True)  # the engine also returns dL/dx
        out, _ = mod(xg)
        torch.autograd.backward(out, dt_)

    def run_engine():
        out, _, cache = eng.forward(x)
        eng.backward(dout, None, cache)

    return run_torch, run_engine


def timed(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def python_call_cost() -> float:
    """Seconds per small in-place NumPy call: the floor of the engine's per-step cost."""
    a, b = np.ones((1, 32), np.float32), np.ones((1, 32), np.float32)
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        np.multiply(a, b, out=a)
    return (time.perf_counter() - t0) / n


def main() -> None:
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"threads: torch {torch.get_num_threads()}, OpenBLAS {openblas_threads()}; float32; forward + backward "
          f"(incl. dL/dx); medians of repeats; torch and engine runs interleaved")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine load average {load:.1f} on {os.cpu_count()} cores (wall times suffer when it is high; CPU times less)")
    rows = []
    for size in ARGS.sizes:
        B, D, H, L, T = SIZES[size]
        repeats = ARGS.repeats or {"tiny": 300, "notebook": 40, "larger": 9}[size]
        for kind in ARGS.kinds:
            run_torch, run_engine = make_case(kind, B, D, H, L, T)
            for _ in range(3):  # warm up caches, allocator, BLAS buffers
                run_torch()
                run_engine()
            tt, te = [], []
            for _ in range(repeats):
                tt.append(timed(run_torch))
                te.append(timed(run_engine))
            ct, wt = (float(np.median(v)) for v in zip(*tt))
            ce, we = (float(np.median(v)) for v in zip(*te))
            rows.append((size, f"B={B} D={D} H={H} L={L} T={T}", kind, ct, ce, ce / ct, we / wt))
            print(f"  {size:9s} {kind:5s} CPU: torch {ct * 1e3:8.3f} ms  engine {ce * 1e3:8.3f} ms  ratio {ce / ct:5.2f}"
                  f"   (wall ratio {we / wt:5.2f})", flush=True)
    print()
    print("| size | shape | kind | torch ms | engine ms | engine/torch | wall engine/torch |")
    print("|---|---|---|---:|---:|---:|---:|")
    for size, shape, kind, ct, ce, r, rw in rows:
        print(f"| {size} | {shape} | {kind} | {ct * 1e3:.3f} | {ce * 1e3:.3f} | **{r:.2f}** | {rw:.2f} |")
    cost = python_call_cost()
    print(f"\nper-call cost of a small in-place NumPy op here: {cost * 1e6:.2f} us; one LSTM time step costs the engine "
          f"16 such calls (10 forward, 6 backward), while torch runs its whole CPU LSTM in one fused (oneDNN) kernel")


if __name__ == "__main__":
    main()
