"""Scale out with `torchrun`: the same commands, only the launcher changes.

`torchrun --nproc_per_node=2 -m lapnet text train ...` sets RANK, WORLD_SIZE, MASTER_ADDR
and MASTER_PORT; `init_from_env()` (called by the CLI before `text train` and `race train`,
the only commands that run under torchrun) then joins the process group: gloo on CPUs, NCCL
on GPUs. From there `lapnet.train.TorchLearner` wraps the model in DistributedDataParallel
and gives each rank its own shard of every global batch, and only rank 0 writes files (`lapnet.checkpoint` skips writes on other ranks of a joined group).
"""

from __future__ import annotations

import gc
import os
import re
import sys

from lapnet.errors import LapnetError

# How long a rank waits for the others to join the process group (rank 0 for the others to
# connect; another rank tries twice to reach rank 0, each try this long). Under torchrun the workers
# start together once torchrun's own rendezvous has gathered every node (its --rdzv timeout
# covers nodes that start minutes apart), so joining waits only for the slowest worker's
# imports: seconds, a minute from a slow shared file system. torch's default (30 minutes with
# gloo) kept a process with WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT set by hand and no
# other rank waiting for half an hour, deaf to SIGTERM (the wait is in C++). Once joined, the
# collectives get torch's default back: a rank may rightly wait long for another (rank 0
# writing a big checkpoint, a slow node reading its data before the first batch).
JOIN_MINUTES = 5.0


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


def joined() -> bool:
    """Whether this process is in a torch.distributed process group (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    try:
        return dist is not None and dist.is_available() and dist.is_initialized()
    except AttributeError:  # a torch whose import a Ctrl-C cut short: half a module, and no group
        return False


def launch_rank() -> int:
    """This process's rank for what it prints: the group's rank once joined; before that (or in
    a command that never joins), RANK as the launcher set it when WORLD_SIZE > 1; else 0. Only
    for messages: files and locks follow `rank()`, the joined group."""
    if joined():
        return rank()
    if world_size() <= 1:
        return 0
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


_LAUNCHED_BY = ("launch with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT), or unset WORLD_SIZE "
                "to run one process")


def check_launch_env() -> None:
    """Refuse, in one line naming the variable, a launch environment the process group cannot
    be joined with: WORLD_SIZE set by hand without RANK, MASTER_ADDR or MASTER_PORT gave torch's
    ValueError as an internal error, or a wait for peers that never come.

    Raises:
        LapnetError: a variable missing or malformed.
    """
    raw = os.environ.get("WORLD_SIZE")
    if raw is None:
        return
    try:
        world = int(raw)
    except ValueError:
        raise LapnetError(f"WORLD_SIZE={raw!r} is not a whole number: {_LAUNCHED_BY}") from None
    if world < 1:
        raise LapnetError(f"WORLD_SIZE={world} must be at least 1: {_LAUNCHED_BY}")
    if world == 1:
        return
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise LapnetError(f"WORLD_SIZE={world} but {name} is not set: {_LAUNCHED_BY}")
    try:
        me = int(os.environ["RANK"])
    except ValueError:
        me = None
    if me is None or not 0 <= me < world:
        raise LapnetError(f"RANK={os.environ['RANK']!r} is not a rank of WORLD_SIZE={world} (0 to {world - 1}): "
                          f"{_LAUNCHED_BY}")
    port = os.environ["MASTER_PORT"]
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise LapnetError(f"MASTER_PORT={port!r} is not a port number (1 to 65535): {_LAUNCHED_BY}")


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group when launched by torchrun; True if distributed.

    Waits at most `JOIN_MINUTES` for the other ranks.

    Args:
        backend: "gloo" or "nccl"; by default NCCL when CUDA is available, else gloo.

    Raises:
        LapnetError: the launch environment is incomplete (`check_launch_env`), or the group
            could not be joined in time (no other rank came, MASTER_ADDR unreachable, the port taken).
    """
    if world_size() <= 1:
        return False
    check_launch_env()
    import datetime

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=JOIN_MINUTES))
    except dist.DistError as e:  # DistStoreError (no peer came), DistNetworkError (unreachable, port in use)
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise LapnetError(f"rank {os.environ['RANK']} of {world_size()} could not join the job at {where} "
                          f"(MASTER_ADDR:MASTER_PORT): {_why(e).rstrip('.')}; start every rank with torchrun, which "
                          f"sets these") from None
    try:  # joined: the collectives get torch's own timeout back (see JOIN_MINUTES)
        from torch.distributed import distributed_c10d as c10d

        default = c10d._get_default_timeout(backend)
        c10d._set_pg_timeout(default)
        c10d._get_default_store().set_timeout(default)
    except (AttributeError, RuntimeError, ValueError):  # a torch without these: the join's timeout stays
        pass
    return True


# what torch.distributed says when a collective fails because a rank is gone or stopped answering
# (gloo's are plain RuntimeErrors naming its transport; NCCL's and the store's are DistErrors)
_LOST = re.compile(r"gloo/transport|connection (?:closed|reset) by peer|broken pipe|timed out", re.IGNORECASE)


def _why(e: BaseException) -> str:
    """The gist of a torch.distributed error, one line: gloo's source file and line, and its
    advice ("This is typically caused by ...") left out ("Connection closed by peer [127.0.0.1]:29500.")."""
    text = " ".join(str(e).split())
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text)
    text = re.sub(r"\s*This is typically caused by.*$", "", text)
    return text[:160] or type(e).__name__


def lost_peer(e: BaseException, when: str = "during training") -> "PeerLost | None":
    """`e` as a PeerLost when it is a collective failing because another rank of the joined
    group died, left or stopped answering (DDP's all-reduce in backward, an all-reduce, a
    barrier), else None. That rank's own output says why; here it is one line, not a gloo
    traceback reported as an internal error."""
    if not isinstance(e, RuntimeError) or not joined():
        return None
    dist = sys.modules["torch.distributed"]
    if not (isinstance(e, getattr(dist, "DistError", ())) or _LOST.search(str(e))):
        return None
    return PeerLost(f"rank {rank()} stopped: another rank of the job left {when} ({_why(e)}); "
                    f"see that rank's own output for why")


# the last stop signal this process took (SIGINT or SIGTERM), noted by the CLI's and fit's handlers
_signal_taken: int | None = None


def note_signal(signum: int) -> None:
    """Remember the stop signal just received (`stop_message` words the stop after it)."""
    global _signal_taken
    _signal_taken = signum


def stop_message() -> str:
    """What `lapnet: error:` says of a command stopped by a signal. Under torchrun a SIGTERM is
    most often torchrun stopping the job: another rank failed (torchrun then SIGTERMs the
    others; "interrupted" read as if someone had pressed Ctrl-C) or torchrun itself got one; a
    Ctrl-C reaches the workers as SIGINT, and stays "interrupted"."""
    import signal

    if _signal_taken == signal.SIGTERM and world_size() > 1:
        return ("stopped by SIGTERM: under torchrun, torchrun sends it when another rank of the job failed (see "
                "that rank's error) or when torchrun itself was stopped")
    return "interrupted"


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
            raise PeerLost(f"rank {dist.get_rank()} stopped: another rank of the job left before the ranks met "
                           f"({_why(e)}); see that rank's own output for why") from None


class PeerLost(LapnetError):
    """Another rank left the process group (it died, or torchrun stopped it) while this rank
    waited for it: in a barrier, in a training step's collective (`lost_peer`), or at the final
    barrier of `shutdown`, after this rank's own work was done."""


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
            lost = _why(e)
    me = dist.get_rank()
    try:
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - a group already broken by the lost peer
        if lost is None:
            raise
    if lost is not None:
        raise PeerLost(f"rank {me} finished its work, but another rank of the job had already left when the ranks "
                       f"met to end ({lost}); see that rank's own output for why") from None
