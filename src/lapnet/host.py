"""What a library call leaves of the process that made it: the host's torch settings as it found them.

lapnet runs inside other people's processes, a notebook kernel above all, where one process
lives for hours and every cell after a call sees what the call left behind. Two of torch's
settings are global to the process, and lapnet's results depend on both:

    the global RNG      the experiments and trainings seed it (`torch.manual_seed`) so that a
                        run repeats bit for bit; done in place, that reset the host's own
                        generator: after run_sine, `torch.rand(1)` was the same whatever seed
                        the user had set
    the default dtype   models and tensors built without a dtype take it; a notebook's
                        `torch.set_default_dtype(torch.float64)` made the models float64 while
                        the data stayed float32, and run_sine, train_race, eval_race ... failed

`own_torch_state()` runs a block (or, as a decorator, a library entry point) on a fork of the
global generators (CPU, and every CUDA device once CUDA is in use: what exercise1.py does for
its one seed) and under float32, lapnet's dtype; both go back to the host's on the way out,
returned, raised or interrupted. Inside, every call seeds itself as before, so results are
bit-identical to a call made in a fresh float32 process.

The default dtype is one setting for the whole process, not per thread: a thread of the host
that builds tensors while a lapnet call runs in another sees float32 meanwhile.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def own_torch_state() -> Iterator[None]:
    """Run the block on a fork of torch's global RNG and under the float32 default dtype; the
    host's generator state and default dtype are back when it ends, however it ends.

    Usable as a decorator (`@own_torch_state()`): each call of the function gets its own fork.
    """
    import torch

    # CUDA's generators are forked only once CUDA is initialised: getting their state would
    # otherwise start CUDA (seconds, and memory on every GPU) for calls that run on the CPU
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=devices):
        torch.set_default_dtype(torch.float32)
        try:
            yield
        finally:
            torch.set_default_dtype(dtype)
