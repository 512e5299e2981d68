"""`lapnet ARGS` with a fault on rank 1 of a torchrun job.

Usage: torchrun --nproc_per_node=2 rank_fault.py clock FACTOR lapnet-args...
       torchrun --nproc_per_node=2 rank_fault.py kill STEP lapnet-args...

clock: rank 1's clock runs FACTOR times as fast as rank 0's (a busier node, or one whose clock
       reads later): rank 1 meets a --minutes budget first, while rank 0 has time left.
kill:  rank 1 kills itself with SIGKILL on its training step STEP (a node lost mid-training).
"""

import os
import signal
import sys
import time

from lapnet.cli import main

mode, value, args = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
if os.environ.get("RANK", "0") == "1":
    if mode == "clock":
        _real = time.perf_counter
        time.perf_counter = lambda: _real() * value
    elif mode == "kill":
        from lapnet.train import TorchLearner

        _step, _count = TorchLearner.train_step, [0]

        def _train_step(self, *a, **kw):
            _count[0] += 1
            if _count[0] >= value:
                os.kill(os.getpid(), signal.SIGKILL)
            return _step(self, *a, **kw)

        TorchLearner.train_step = _train_step
    else:
        sys.exit(f"rank_fault.py: unknown mode {mode!r}")
main(args)
