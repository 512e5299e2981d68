"""Speed of the NumPy engine against torch on the CPU: forward + backward, float32.

Both sides run in this one process, with the same thread count for torch and for
NumPy's BLAS (OpenBLAS), the same weights, inputs and upstream gradients. Blocks of runs
of the two alternate (five of each, three for few repeats) so that both see the same
machine load while each side's memory behaves as in a training loop that uses only it:
with single runs alternating (--interleave), each side reuses the memory the other just
freed, which moves page faults from one to the other (thousands per run at the notebook
size). Each run is timed twice: process CPU time (the headline: on a shared machine it
does not count the time other processes hold the core) and wall-clock time. Prints
medians, the ratio engine / torch (below 1.0: the engine is faster) and the page faults
per run of each side (fresh memory from the operating system costs a fault per 4 KiB
page; the engine recycles its big arrays).

At the tiny size the cost is Python's per-call overhead, not arithmetic, so the script
also splits each side's time into a fixed part and a per-step part (runs at T=1 and T=50)
and prints the measured cost of one small NumPy call: the engine's per-step time is about
(NumPy calls per step) x (cost per call), while torch runs a whole step inside one fused
kernel. At the notebook size it prints what NumPy's exp and tanh alone cost per forward,
and what the engine's matrix products alone cost in NumPy's BLAS (OpenBLAS) and in torch's BLAS
(the one `torch.__config__.show()` names as BLAS_INFO: Intel MKL in the PyPI CPU wheels; the
script prints it).

    .venv/bin/python benchmarks/engine.py               # all sizes, 1 thread
    .venv/bin/python benchmarks/engine.py --threads 2 --repeats 30
    .venv/bin/python benchmarks/engine.py --interleave  # alternate single runs instead of blocks
    .venv/bin/python benchmarks/engine.py --reference   # also time the readable cells (scratch/reference.py)

With --reference, a third side runs the same forward + backward through
`lapnet.scratch.reference`, the cells written as the equations read (one step at a time,
layers stacked by hand): what the fast kernels' arrangement of the same arithmetic buys.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time

SIZES = {  # name: (B, D, H, L, T)
    "tiny": (1, 1, 8, 1, 50),
    "notebook": (64, 32, 128, 2, 40),
    "larger": (64, 256, 256, 2, 100),
}
REPEATS = {"tiny": 300, "notebook": 40, "larger": 9}  # timed runs per case when --repeats is not given


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="threads for torch and for OpenBLAS (default 1)")
    ap.add_argument("--repeats", type=int, default=0, help="timed runs per case (default: by size)")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--kinds", nargs="+", default=["rnn", "lstm", "gru"], choices=["rnn", "lstm", "gru"])
    ap.add_argument("--interleave", action="store_true",
                    help="alternate single runs of torch and the engine instead of blocks of runs (each side then "
                         "recycles memory the other just freed, which moves page faults from one side to the other)")
    ap.add_argument("--reference", action="store_true",
                    help="also time the readable cells of lapnet.scratch.reference (same weights, inputs, gradients)")
    return ap.parse_args()


ARGS = parse()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before numpy and torch load their BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lapnet import scratch  # noqa: E402

torch.set_num_threads(ARGS.threads)


def openblas_threads() -> str:
    """How many threads the OpenBLAS that numpy loaded uses (`lapnet.scratch.blas` asks it)."""
    from lapnet.scratch.blas import blas_threads

    n = blas_threads()
    return str(n) if n is not None else f"unknown (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})"


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

    return run_torch, run_engine, make_reference(kind, mod, x, dout)


def make_reference(kind: str, mod, x: np.ndarray, dout: np.ndarray):
    """Forward + backward of the stacked layers through lapnet.scratch.reference (float32)."""
    from lapnet.scratch import reference as ref

    L, H = mod.num_layers, mod.hidden_size
    w = [[getattr(mod, f"{n}_l{k}").detach().numpy().copy() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
         for k in range(L)]
    B = x.shape[0]
    zero = np.zeros((B, H), np.float32)
    fwd = {"rnn": lambda a, wk: ref.rnn_forward(a, zero, *wk),
           "lstm": lambda a, wk: ref.lstm_forward(a, zero, zero, *wk),
           "gru": lambda a, wk: ref.gru_forward(a, zero, *wk)}[kind]
    bwd = {"rnn": lambda d, c: ref.rnn_backward(d, zero, c),
           "lstm": lambda d, c: ref.lstm_backward(d, zero, zero, c),
           "gru": lambda d, c: ref.gru_backward(d, zero, c)}[kind]

    def run_reference():
        a, caches = x, []
        for wk in w:  # layer k reads layer k-1's hidden states
            a, _, cache = fwd(a, wk)
            caches.append(cache)
        d = dout
        for cache in reversed(caches):
            d = bwd(d, cache)[0]  # dL/d(this layer's input) is the gradient on the layer below's outputs

    return run_reference


def timed(fn) -> tuple[float, float, int]:
    """(CPU seconds of this process, wall seconds, minor page faults) of one call."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    c1, w1 = time.process_time(), time.perf_counter()
    return c1 - c0, w1 - w0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def side_by_side(runs, repeats: int) -> list[list[float]]:
    """Medians (CPU s, wall s, faults) of each side's runs (torch first), alternating, after a warm-up."""
    for _ in range(3):  # warm up caches, allocator, BLAS buffers
        for run in runs:
            run()
    times = [[] for _ in runs]
    if ARGS.interleave:
        for _ in range(repeats):
            for run, ts in zip(runs, times):
                ts.append(timed(run))
    else:  # blocks: between its own runs, no side sees memory another freed
        blocks = 5 if repeats >= 10 else 3
        for _ in range(blocks):
            for run, ts in zip(runs, times):
                ts += [timed(run) for _ in range(max(1, repeats // blocks))]
    return [[float(np.median(v)) for v in zip(*ts)] for ts in times]


def python_call_cost() -> float:
    """CPU seconds per small in-place NumPy call (median of 7 rounds): the unit of the
    engine's per-step cost at tiny sizes."""
    a, b = np.ones((1, 32), np.float32), np.ones((1, 32), np.float32)
    mul, n, rounds = np.multiply, 20000, []
    for _ in range(7):
        t0 = time.process_time()
        for _ in range(n):
            mul(a, b, a)
        rounds.append((time.process_time() - t0) / n)
    return float(np.median(rounds))


# NumPy calls per time step in the engine's small-slab kernels (B*H < 512), forward + backward
CALLS_PER_STEP = {"rnn": None, "lstm": (8, 5), "gru": None}


def tiny_breakdown(kind: str, repeats: int) -> None:
    """Fixed and per-step cost of each side at the tiny size, from runs at T=1 and T=50."""
    B, D, H, L, T = SIZES["tiny"]
    res = {}
    for t in (1, T):
        run_torch, run_engine, _ = make_case(kind, B, D, H, L, t)
        res[t] = side_by_side([run_torch, run_engine], repeats)
    cost = python_call_cost()
    print(f"\ntiny {kind}: fixed cost per forward+backward call and cost per time step (CPU, T=1 and T={T} runs):")
    for side, k in (("torch", 0), ("engine", 1)):
        one, many = res[1][k][0], res[T][k][0]
        step = (many - one) / (T - 1)
        print(f"  {side:6s} fixed {(one - step) * 1e6:7.1f} us   per step {step * 1e6:6.2f} us   total at T={T}: "
              f"{many * 1e6:7.1f} us")
    calls = CALLS_PER_STEP.get(kind)
    if calls:
        print(f"  one small NumPy call costs {cost * 1e6:.2f} us here; the engine's {kind} step makes {sum(calls)} "
              f"({calls[0]} forward, {calls[1]} backward): {sum(calls) * cost * 1e6:.1f} us of calls per step; the "
              f"rest is the Python loop and the two small matrix products, dearer than a simple call")


def main() -> None:
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"threads: torch {torch.get_num_threads()}, OpenBLAS {openblas_threads()}; float32; forward + backward "
          f"(incl. dL/dx); medians of repeats; torch and engine "
          f"{'runs interleaved' if ARGS.interleave else 'in alternating blocks of runs'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine load average {load:.1f} on {os.cpu_count()} cores "
          f"(wall times suffer when it is high; CPU times less)")
    rows = []
    for size in ARGS.sizes:
        B, D, H, L, T = SIZES[size]
        repeats = ARGS.repeats or REPEATS[size]
        for kind in ARGS.kinds:
            run_torch, run_engine, run_reference = make_case(kind, B, D, H, L, T)
            runs = [run_torch, run_engine] + ([run_reference] if ARGS.reference else [])
            (ct, wt, ft), (ce, we, fe), *more = side_by_side(runs, repeats)
            cr = more[0][0] if more else None
            rows.append((size, f"B={B} D={D} H={H} L={L} T={T}", kind, ct, ce, ce / ct, we / wt, cr))
            ref = f"  reference {cr * 1e3:8.3f} ms ({cr / ct:5.2f} x torch)" if cr else ""
            print(f"  {size:9s} {kind:5s} CPU: torch {ct * 1e3:8.3f} ms  engine {ce * 1e3:8.3f} ms  "
                  f"ratio {ce / ct:5.2f}"
                  f"   (wall ratio {we / wt:5.2f}; page faults per run: torch {ft:.0f}, engine {fe:.0f}){ref}", flush=True)
    print()
    extra = (" reference ms | reference/torch |", "---:|---:|") if ARGS.reference else ("", "")
    print(f"| size | shape | kind | torch ms | engine ms | engine/torch | wall engine/torch |{extra[0]}")
    print(f"|---|---|---|---:|---:|---:|---:|{extra[1]}")
    for size, shape, kind, ct, ce, r, rw, cr in rows:
        ref = f" {cr * 1e3:.3f} | {cr / ct:.2f} |" if cr else ""
        print(f"| {size} | {shape} | {kind} | {ct * 1e3:.3f} | {ce * 1e3:.3f} | **{r:.2f}** | {rw:.2f} |{ref}")
    if "tiny" in ARGS.sizes and "lstm" in ARGS.kinds:
        tiny_breakdown("lstm", ARGS.repeats or REPEATS["tiny"])
    if "notebook" in ARGS.sizes and "lstm" in ARGS.kinds:
        transcendental_floor()
        product_floor(ARGS.repeats or REPEATS["notebook"])


def transcendental_floor() -> None:
    """What NumPy's exp and tanh alone cost for one notebook-size LSTM forward pass.

    Every LSTM unit needs five of them per step (three sigmoids, tanh(g), tanh(c)). How fast
    NumPy evaluates them depends on the CPU: it has AVX-512 loops for both, and slower ones
    without it (1.4 and 2.7 ns per element on the project's earlier AVX2 machine)."""
    B, D, H, L, T = SIZES["notebook"]
    a = np.random.default_rng(0).standard_normal(3 * B * H).astype(np.float32)
    out = np.empty_like(a)
    per = {}
    for name, fn in (("exp", np.exp), ("tanh", np.tanh)):
        rounds = []
        for _ in range(50):
            t0 = time.process_time()
            fn(a, out)
            rounds.append(time.process_time() - t0)
        per[name] = float(np.median(rounds)) / a.size
    n = B * H * T * L  # unit-steps in one forward pass
    floor = n * (3 * per["exp"] + 2 * per["tanh"])
    print(f"\nnotebook lstm: float32 exp costs {per['exp'] * 1e9:.2f} ns and tanh {per['tanh'] * 1e9:.2f} ns "
          f"per element here; 5 per unit per step over {n} unit-steps = {floor * 1e3:.1f} ms of each forward "
          f"pass in exp/tanh alone")


def lstm_products(B: int, D: int, H: int, L: int, T: int):
    """The matrix products of one notebook-size LSTM forward + backward, as the engine's
    big-slab kernel makes them: (operand shapes, output shape, calls, what it is)."""
    ops = []
    for layer in range(L):
        d = D if layer == 0 else H
        ops += [(((T, 1, B, d), (4, d, H)), (T, 4, B, H), 1, f"layer {layer} input projection, all steps"),
                (((B, H), (4, H, H)), (4, B, H), T, f"layer {layer} recurrent product, per step"),
                (((B, 4 * H), (4 * H, H)), (B, H), T, f"layer {layer} dh through W_hh, per step"),
                (((T * B, 4 * H), (4 * H, d)), (T * B, d), 1, f"layer {layer} dx"),
                (((4 * H, T * B), (T * B, d)), (4 * H, d), 1, f"layer {layer} dW_ih (transposed operand)"),
                (((4 * H, T * B), (T * B, H)), (4 * H, H), 1, f"layer {layer} dW_hh (transposed operand)")]
    return ops


def torch_blas() -> str:
    """The BLAS torch was built with, as `torch.__config__.show()` names it (BLAS_INFO=mkl: Intel MKL)."""
    found = re.search(r"\bBLAS_INFO=([^,\s]+)", torch.__config__.show())
    if found is None:
        return "unknown"
    return "MKL" if found.group(1).lower() == "mkl" else found.group(1)


def product_floor(repeats: int) -> None:
    """The engine's matrix products alone, in NumPy's BLAS (OpenBLAS) and in torch's BLAS
    (`torch_blas`: MKL in the PyPI CPU wheels), same shapes.

    What the engine cannot go below with NumPy's BLAS, beside what the same products cost
    in the BLAS torch links: where the two libraries differ, no rearrangement in Python closes it.
    Each product is timed max(5, 5 * repeats // calls) times (the median counts): at the default
    40 repeats, 200 rounds of a product made once per pass, 5 of one made 40 times (per step)."""
    B, D, H, L, T = SIZES["notebook"]
    rng = np.random.default_rng(0)
    total = {"numpy": 0.0, "torch": 0.0}
    ops = lstm_products(B, D, H, L, T)
    rounds_of = {calls: max(5, 5 * repeats // calls) for _, _, calls, _ in ops}
    for (sa, sb), so, calls, _ in ops:
        transposed = sa[0] == 4 * H and len(sa) == 2 and sa[1] == T * B
        a = rng.standard_normal(sa[::-1] if transposed else sa).astype(np.float32)
        a = a.T if transposed else a  # dG.T @ x: the first operand is a transposed view, as in the engine
        b = rng.standard_normal(sb).astype(np.float32)
        out = np.empty(so, np.float32)
        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out.copy())
        for side, fn in (("numpy", lambda: np.matmul(a, b, out=out)), ("torch", lambda: torch.matmul(ta, tb, out=tout))):
            rounds = []
            for _ in range(rounds_of[calls]):
                t0 = time.process_time()
                fn()
                rounds.append(time.process_time() - t0)
            total[side] += float(np.median(rounds)) * calls
    print(f"notebook lstm: the engine's matrix products alone (forward + backward, both layers, same shapes and "
          f"calls) take {total['numpy'] * 1e3:.1f} ms in NumPy's OpenBLAS and {total['torch'] * 1e3:.1f} ms in "
          f"torch's BLAS ({torch_blas()}); compare torch's whole forward + backward in the table above "
          f"(medians of {min(rounds_of.values())} to {max(rounds_of.values())} timed calls per product)")


if __name__ == "__main__":
    main()
