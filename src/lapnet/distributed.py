"""Scale out with `torchrun`: the same commands, only the launcher changes.

`torchrun --nproc_per_node=2 -m lapnet text train ...` sets RANK, WORLD_SIZE, MASTER_ADDR
and MASTER_PORT; `init_from_env()` (called by the CLI before any command) then joins the
process group: gloo on CPUs, NCCL on GPUs. From there `lapnet.train.TorchLearner` wraps
the model in DistributedDataParallel and gives each rank its own shard of every global
batch, and only rank 0 writes files (`lapnet.checkpoint` skips writes on other ranks of a joined group).
"""

from __future__ import annotations

import os
import sys


def world_size() -> int:
    """WORLD_SIZE from the launcher's environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def rank() -> int:
    """This process's rank in the process group; 0 when no group was joined (a RANK variable
    alone, set by some other launcher, does not make a process a follower that writes nothing)."""
    dist = sys.modules.get("torch.distributed")  # never imports torch: the NumPy side calls this too
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group when launched by torchrun; True if distributed.

    Args:
        backend: "gloo" or "nccl"; by default NCCL when CUDA is available, else gloo.
    """
    if world_size() <= 1:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def barrier() -> None:
    """Wait until every rank gets here (a no-op when not distributed): other ranks must not read a
    file rank 0 is still writing."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (a no-op when not distributed).

    After success every rank waits for the others first. Called while an error or a non-zero
    exit propagates (the CLI calls it in a `finally`), it leaves without waiting: the other
    ranks may be stuck in a collective this rank will never join, and a barrier would hang the
    whole job until gloo's timeout (30 minutes); leaving lets torchrun see the failure and stop
    the other ranks.
    """
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        exc = sys.exc_info()[1]
        failed = exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
        if not failed:
            dist.barrier()
        dist.destroy_process_group()
