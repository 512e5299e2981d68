"""Scale out with `torchrun`: the same commands, only the launcher changes.

`torchrun --nproc_per_node=2 -m lapnet text train ...` sets RANK, WORLD_SIZE, MASTER_ADDR
and MASTER_PORT; `init_from_env()` (called by the CLI before any command) then joins the
process group: gloo on CPUs, NCCL on GPUs. From there `lapnet.train.TorchLearner` wraps
the model in DistributedDataParallel and gives each rank its own shard of every global
batch, and only rank 0 writes files (`lapnet.checkpoint` skips writes on other ranks of a joined group).
"""

from __future__ import annotations

import gc
import os
import sys

from lapnet.errors import LapnetError


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
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except AttributeError:  # a torch whose import a Ctrl-C cut short: half a module, and no group
        pass
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
        try:
            dist.barrier()
        except RuntimeError as e:  # gloo: "Connection closed by peer": a rank failed (bad input) or died
            why = " ".join(str(e).split())[:160] or type(e).__name__
            raise PeerLost(f"rank {dist.get_rank()} stopped: another rank of the job left before the ranks met "
                           f"({why}); see that rank's own output for why") from None


class PeerLost(LapnetError):
    """Another rank left the process group (it died, or torchrun stopped it) before this rank's
    final barrier; this rank's own work was done."""


def shutdown() -> None:
    """Leave the process group (a no-op when not distributed).

    After success every rank waits for the others first. Called while an error or a non-zero
    exit propagates (the CLI calls it in a `finally`), it leaves without waiting: the other
    ranks may be stuck in a collective this rank will never join, and a barrier would hang the
    whole job until gloo's timeout (30 minutes); leaving lets torchrun see the failure and stop
    the other ranks.

    It first collects garbage: torch 2.13 leaves the first DistributedDataParallel of a process
    in a reference cycle, and its C++ Reducer holds the process group; collected only at
    interpreter exit, after the group is destroyed, its teardown can abort the process.

    Raises:
        PeerLost: the success-path barrier failed because another rank is gone (one line; the
            group is still left). This rank's results are complete.
    """
    dist = sys.modules.get("torch.distributed")  # never imports torch: a group needs it imported already
    if dist is None:
        return
    try:
        joined = dist.is_available() and dist.is_initialized()
    except Exception:  # a torch whose import a Ctrl-C cut short: half a module, and no group
        return
    if not joined:
        return
    gc.collect()
    exc = sys.exc_info()[1]
    failed = exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
    lost = None
    if not failed:
        try:
            dist.barrier()
        except Exception as e:  # gloo: "Connection closed by peer" and the like, from a rank that died
            lost = " ".join(str(e).split())[:160] or type(e).__name__
    me = dist.get_rank()
    try:
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - a group already broken by the lost peer
        if lost is None:
            raise
    if lost is not None:
        raise PeerLost(f"rank {me} finished its work, but another rank of the job had already left when the ranks "
                       f"met to end ({lost}); see that rank's own output for why") from None
