"""Scale out with `torchrun`: the same commands, only the launcher changes.

`torchrun --nproc_per_node=2 -m lapnet text train ...` sets RANK, WORLD_SIZE, MASTER_ADDR
and MASTER_PORT; `init_from_env()` (called by the CLI before any command) then joins the
process group: gloo on CPUs, NCCL on GPUs. From there `lapnet.train.TorchLearner` wraps
the model in DistributedDataParallel and gives each rank its own shard of every global
batch, and only rank 0 writes files (`lapnet.checkpoint` skips writes on other ranks).
"""

from __future__ import annotations

import os


def world_size() -> int:
    """WORLD_SIZE from the launcher's environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
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
    """Leave the process group (a no-op when not distributed)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
