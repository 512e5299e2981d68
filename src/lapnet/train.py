"""The one training loop, shared by every model in lapnet and by both engines.

`fit(learner, batches, cfg, out=...)` runs epochs or a wall-clock budget, schedules the
learning rate, evaluates, keeps the best and the last checkpoint, stops early, resumes,
refuses NaN/inf losses, and stops cleanly on Ctrl-C. What is engine- or model-specific
lives in two small objects:

    batches   .steps_per_epoch() -> int
              .epoch(e) -> iterator of batches; the same batches for the same seed and e,
              so a resumed run can skip to where it stopped.
    learner   .train_step(batch, carry, lr) -> (loss: float, carry, n_items)
              .evaluate() -> dict with at least "val_loss"
              .weights() -> {name: array}          (what model.safetensors holds)
              .state() -> ({name: array}, meta)    (weights + optimizer + RNG, for resume)
              .load_state(arrays, meta)

`TorchLearner` is the learner for any torch module; the NumPy engine brings its own.
`carry` is whatever a step hands to the next one within an epoch (the detached hidden
state for truncated BPTT); it starts as None at each epoch. A carry made of arrays or tensors
(one, or a tuple or list of them) is saved in `last.safetensors` with the trainer's position,
so a run resumed in the middle of an epoch continues its streams from the state they had.

Under `torchrun` (torch.distributed initialised) TorchLearner wraps the model in
DistributedDataParallel and each rank trains on its own contiguous shard of every global
batch (tensors and NumPy arrays are split along dim 0; shards differ by at most one item and
are weighted by their size); gradients are averaged, so the result equals one process on the
same global batch for a loss that is a mean over the batch's items. Only rank 0 writes files;
a carry is then not saved (each rank holds its own shard of it), so a run resumed mid-epoch
under torchrun restarts its streams from a zero state. Run directory layout: see
`lapnet.checkpoint`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from lapnet.checkpoint import json_text, load_tensors, save_tensors
from lapnet.console import console
from lapnet.errors import CheckpointError, LapnetError


class TrainingDiverged(LapnetError):
    """The loss became NaN or inf, or the optimizer's update overflowed; the last good
    checkpoint is kept. `step`: the step at which it happened (the step that failed, or the
    step whose evaluation was not finite)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


# The learning rates float32 weights can take: float32's normal range. Above LR_MAX the rate is
# not a float32 at all (torch's Adam fails converting it, and lr / (1 - beta1) must fit too:
# an lr above LR_MAX / 10 overflows there at the first step, which `fit` reports as a
# divergence); below LR_MIN it is subnormal or rounds to 0 in float32 (--lr 1e-300 trained
# nothing while looking like a run).
LR_MIN = float(np.finfo(np.float32).tiny)  # 1.18e-38
LR_MAX = float(np.finfo(np.float32).max)  # 3.40e38


def check_lr(lr: Any, name: str = "lr") -> None:
    """Refuse a learning rate that is not a positive number within float32's normal range
    [LR_MIN, LR_MAX]: the rule of every command and of `TrainConfig`. `name` starts the message
    ("lr", or the flag "--lr")."""
    if not (_is_number(lr) and lr > 0):
        raise LapnetError(f"{name} must be a finite positive number, got {lr!r}")
    if not LR_MIN <= lr <= LR_MAX:
        raise LapnetError(f"{name} must be a positive number within float32's range [{LR_MIN:.3g}, {LR_MAX:.3g}] "
                          f"(the weights are float32: {_float32_fate(lr)} there), got {lr:g}")


@dataclass
class TrainConfig:
    """How to train. `epochs`, `minutes` and `max_steps` are totals for the whole run:
    `--resume` continues until they are reached. Whichever comes first stops training."""

    epochs: int | None = 10
    minutes: float | None = None
    max_steps: int | None = None
    lr: float = 2e-3  # within float32's normal range, [LR_MIN, LR_MAX] (see check_lr)
    schedule: str = "cosine"  # "cosine" (to lr * min_lr_frac over the planned run) | "constant"
    warmup_steps: int = 0
    min_lr_frac: float = 0.1
    weight_decay: float = 0.0
    clip: float | None = 5.0  # global gradient-norm clip (None: off)
    clip_value: float | None = None  # element-wise clip, as char-rnn does (None: off)
    eval_every: int | None = None  # steps between evaluations; None: at the end of every epoch
    patience: int | None = None  # stop after this many evaluations without a better val_loss
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        """Raise LapnetError on settings that cannot train (messages name the field)."""
        if self.epochs is None and self.minutes is None and self.max_steps is None:
            raise LapnetError("give epochs, minutes or max_steps: nothing would stop training")
        for name in ("epochs", "max_steps", "eval_every", "patience"):
            _check_int(name, getattr(self, name), 1, optional=True)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("seed", self.seed, 0)
        if self.minutes is not None and not (_is_number(self.minutes) and self.minutes > 0):
            raise LapnetError(f"minutes must be a positive number, got {self.minutes!r}")
        check_lr(self.lr)
        if self.schedule not in ("cosine", "constant"):
            raise LapnetError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if not (_is_number(self.min_lr_frac) and 0 <= self.min_lr_frac <= 1):
            raise LapnetError(f"min_lr_frac must be a number in [0, 1], got {self.min_lr_frac!r}")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise LapnetError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        for name in ("clip", "clip_value"):
            v = getattr(self, name)
            if v is not None and not (_is_number(v) and v > 0):
                raise LapnetError(f"{name} must be a positive number or None (off), got {v!r}")


def _float32_fate(lr: float) -> str:
    """What float32 makes of a learning rate outside [LR_MIN, LR_MAX], in words."""
    if lr > LR_MAX:
        return "it overflows"
    return "it rounds to 0" if np.float32(lr) == 0 else "it is subnormal"


def _is_number(v: Any) -> bool:
    """A finite int or float (not a bool, not a string); an int too large for a float is not
    one (a crafted checkpoint's 400-digit "elapsed" would overflow the first sum it is in)."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _check_int(name: str, v: Any, low: int, *, optional: bool = False) -> None:
    """`v` is a whole number (an int, not 1.5 or "3") >= low, or None when `optional`."""
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise LapnetError(f"{name} must be an integer >= {low}, got {v!r}")


@dataclass
class TrainResult:
    """What happened: the stopping reason, counts, the best and last validation numbers."""

    stopped: str  # "epochs" | "minutes" | "max_steps" | "early_stop" | "interrupted" (a divergence raises)
    steps: int
    epochs: float
    seconds: float
    items_per_sec: float
    best_val: float | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


class Batches(Protocol):
    """What `fit` draws its batches from (any object with these two methods).

    steps_per_epoch() -> int: how many batches `epoch` yields.
    epoch(e) -> iterator of batches, each handed to `Learner.train_step` as it is: the same
        batches for the same seed and `e`, so a resumed run can skip to where it stopped.
    """

    def steps_per_epoch(self) -> int: ...
    def epoch(self, e: int) -> Iterator[Any]: ...


class Learner(Protocol):
    """The model-, engine- and optimizer-specific half of training (`TorchLearner` for any torch
    module; the NumPy engine brings its own). Any object with these methods:

    train_step(batch, carry, lr) -> (loss: float, carry, n_items): one optimizer step at
        learning rate `lr`. `carry` is what the previous step of the epoch handed on (the
        detached hidden state for truncated BPTT), None at each epoch's start; one array or
        tensor, or a tuple or list of them, is saved with a checkpoint so a resumed run
        continues its streams. `n_items`: what the step trained on (sequences, characters),
        counted for the items_per_sec speed.
    evaluate() -> dict with at least "val_loss" (the lowest is kept as model.safetensors).
    weights() -> {name: array}: what model.safetensors holds.
    state() -> ({name: array}, meta): weights, optimizer and RNG state, for resuming.
    load_state(arrays, meta): restore what `state` returned.
    """

    def train_step(self, batch: Any, carry: Any, lr: float) -> tuple[float, Any, int]: ...
    def evaluate(self) -> dict[str, float]: ...
    def weights(self) -> dict[str, np.ndarray]: ...
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...
    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None: ...


# ---------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)


def _dist():
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def is_rank0() -> bool:
    """True in a single process and on rank 0 of a distributed run."""
    from lapnet import distributed

    return distributed.rank() == 0


# Why a run stops, in the order the ranks of a torchrun job settle on one. Each rank decides
# from its own clock and its own signal handler: a rank whose clock has not run out yet must
# not call the stop "interrupted" (exit 130 and "continue with --resume" after a finished
# budget), so the ranks agree on the reason itself, not only on stopping. The planned steps and
# early stopping come out the same on every rank (same step count, same weights, same
# validation data); a signal beats a spent budget, and early stopping beats a signal, as they
# do in one process (an early stop is decided before the signal is looked at).
_STOP_ORDER = (None, "max_steps", "minutes", "interrupted", "early_stop")


def _agree_stop(reason: str | None) -> str | None:
    """The stop reason every rank goes on with: the latest in `_STOP_ORDER` over the ranks'
    own `reason`s (None: no rank stops). A single process gets its own reason back."""
    return _STOP_ORDER[int(_agree_max(float(_STOP_ORDER.index(reason))))]


def _agree_max(x: float) -> float:
    """The largest `x` over the ranks: values read from each rank's own clock (the time budget's
    progress, hence the learning rate) must be the same everywhere, or the weights drift apart."""
    d = _dist()
    if d is None:
        return x
    import torch

    t = torch.tensor([x], dtype=torch.float64)
    d.all_reduce(t, op=d.ReduceOp.MAX)
    return float(t.item())


def _state_mismatch(want: dict[str, tuple], got: dict[str, tuple]) -> str:
    """What keeps weights `got` (name -> shape) from loading into a model expecting `want`, in one
    line ('' when they fit): missing and unexpected names and shape mismatches, the first few each."""
    def few(items: list[str]) -> str:
        return ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")

    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    shapes = [f"{k} {got[k]} for {want[k]}" for k in want if k in got and got[k] != want[k]]
    parts = [f"{what} {few(ks)}" for what, ks in (("missing", missing), ("unexpected", extra),
                                                  ("wrong shape:", shapes)) if ks]
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------
# the torch learner


class TorchLearner:
    """Adam(W) + clipping for any torch module.

    Args:
        model: the nn.Module to train.
        loss_fn: (net, batch, carry) -> (scalar loss tensor, new carry, n_items). `net` may be
            the DistributedDataParallel wrapper: call it, don't read its attributes.
        evaluate_fn: (model) -> {"val_loss": ..., ...}; called in eval mode under no_grad.
        cfg: the TrainConfig (weight decay and clipping are read from it).
        device: "cpu" or "cuda".
        find_unused_parameters: under DDP, for a model whose loss leaves some parameters
            unused (the race net's phase head on real laps); DDP otherwise waits for their
            gradients forever. It costs a pass over the graph every step, so it is off by default.
    """

    def __init__(self, model, loss_fn: Callable, evaluate_fn: Callable, cfg: TrainConfig, device: str = "cpu", *,
                 find_unused_parameters: bool = False):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None and torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())  # torchrun: init_from_env set LOCAL_RANK's GPU
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.evaluate_fn = evaluate_fn
        self.cfg = cfg
        self._find_unused = find_unused_parameters
        self.net: Any = None
        self._wrap()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _wrap(self) -> None:
        """`self.net`: the model itself, or under torch.distributed its DistributedDataParallel
        wrapper (building one broadcasts rank 0's weights: every rank must call this together)."""
        d = _dist()
        if d is not None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=self._find_unused)
            self.rank, self.world = d.get_rank(), d.get_world_size()
        else:
            self.net, self.rank, self.world = self.model, 0, 1

    def release(self) -> None:
        """Drop the DistributedDataParallel wrapper (fit calls this when training ends).

        The wrapper's C++ Reducer holds the process group; torch 2.13 leaves the first DDP of a
        process in a reference cycle, so a wrapper still referenced here could outlive
        `distributed.shutdown()` and be torn down at interpreter exit, after the group is gone.
        Dropped, `shutdown()`'s gc.collect() frees it first. A later train_step wraps the model
        again (every rank trains together, so the rebuild's broadcast is a matched collective)."""
        if self.net is not self.model:
            self.net = None

    def _prepare(self, batch: Any) -> Any:
        """Move tensors to the device and, under DDP, keep this rank's shard of dim 0 (NumPy
        arrays become tensors first). Sets `self._share`, this rank's share of the batch's items."""
        self._share: float | None = None
        return self._shard(batch)

    def _shard(self, batch: Any) -> Any:
        t = self.torch
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
            return type(batch)(*(self._shard(b) for b in batch))
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._shard(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._shard(v) for k, v in batch.items()}
        if self.world > 1 and isinstance(batch, np.ndarray) and batch.ndim > 0:
            batch = t.from_numpy(np.ascontiguousarray(batch))  # shard it like a tensor, not copy it to every rank
        if isinstance(batch, t.Tensor):
            if self.world > 1 and batch.dim() > 0:
                n = batch.shape[0]
                mine = t.tensor_split(batch, self.world)[self.rank]  # shards differ by at most one item
                if self._share is None:
                    self._share = len(mine) / n
                if len(mine) == 0:  # fewer items than ranks: a stand-in item, weighted 0 in train_step
                    mine = batch[self.rank % n:self.rank % n + 1]
                batch = mine
            return batch.to(self.device, non_blocking=True)
        return batch

    def train_step(self, batch: Any, carry: Any, lr: float) -> tuple[float, Any, int]:
        t = self.torch
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.model.train()
        if self.net is None:  # released by an earlier fit: wrap again
            self._wrap()
        loss, carry, n_items = self.loss_fn(self.net, self._prepare(batch), carry)
        value = loss.detach()
        if self.world > 1:
            # DDP averages the ranks' gradients with equal weights; a rank's loss is the mean over
            # its shard, so weighting it by its share of the batch x world makes the update the one
            # of the whole batch's mean, also when shards are uneven (a batch of 5 on 2 ranks)
            share = self._share if self._share is not None else 1.0 / self.world
            loss = loss * (share * self.world)
            both = t.stack([value.double() * share, t.tensor(float(n_items if share > 0 else 0), dtype=t.float64, device=value.device)])
            _dist().all_reduce(both)  # every rank sees the batch's mean loss (and the same NaN verdict)
            value, n_items = both[0], int(both[1].item())
        value = float(value)
        if not math.isfinite(value):
            return value, carry, n_items  # fit() stops before any update: the weights stay good
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip_value is not None:
            t.nn.utils.clip_grad_value_(self.model.parameters(), self.cfg.clip_value)
        if self.cfg.clip is not None:
            t.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        return value, carry, n_items

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with self.torch.no_grad():
            out = self.evaluate_fn(self.model)
        self.model.train()
        return {k: float(v) for k, v in out.items()}

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        t = self.torch
        arrays = {f"model.{k}": v for k, v in self.weights().items()}
        sd = self.opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in sd["state"].items():
            for name, value in st.items():
                if isinstance(value, t.Tensor) and value.dim() > 0:
                    arrays[f"optim.{idx}.{name}"] = value.detach().cpu().numpy()
                else:
                    scalars.setdefault(str(idx), {})[name] = float(value)
        arrays["rng.torch"] = t.get_rng_state().numpy()
        if self.device.type == "cuda":  # dropout on a GPU draws from the device's own generator
            arrays["rng.cuda"] = t.cuda.get_rng_state(self.device).numpy()
        meta = {"optim_scalars": scalars, "param_groups": sd["param_groups"]}
        return arrays, meta

    def _check_optim_state(self, state: dict[int, dict[str, Any]]) -> None:
        """Refuse optimizer state AdamW could not step with: a parameter index it does not have,
        a moment missing (every parameter with state needs step, exp_avg and exp_avg_sq) or of
        another shape than its parameter."""
        params = [p for g in self.opt.param_groups for p in g["params"]]
        need = {"step", "exp_avg", "exp_avg_sq"}
        for idx, st in state.items():
            if not 0 <= idx < len(params):
                raise LapnetError(f"optimizer state for parameter {idx}, but the model has {len(params)}")
            missing = sorted(need - set(st))
            if missing:
                raise LapnetError(f"optimizer state of parameter {idx} lacks {', '.join(missing)}")
            for name in ("exp_avg", "exp_avg_sq"):
                if tuple(st[name].shape) != tuple(params[idx].shape):
                    raise LapnetError(f"optimizer state {idx}.{name} has shape {tuple(st[name].shape)}, "
                                      f"the parameter {tuple(params[idx].shape)}")
                if not st[name].is_floating_point():
                    raise LapnetError(f"optimizer state {idx}.{name} is {st[name].dtype}, not floating point")
        if state and len(state) != len(params):
            absent = [i for i in range(len(params)) if i not in state]
            raise LapnetError(f"optimizer state missing for parameter(s) {', '.join(map(str, absent[:5]))}")

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Continue from `state()`'s checkpoint: weights, optimizer moments, RNG states.

        The optimizer's hyperparameters come from the checkpoint, so the resumed run continues
        exactly: the learning rate is set at every step from the TrainConfig's schedule anyway,
        and clipping is read from the TrainConfig, but `weight_decay` stays the checkpoint's. A
        TrainConfig asking for another weight_decay gets a warning that names both values (it
        is not applied). The CUDA generator's state is restored when both the checkpoint and
        this learner are on a GPU; a GPU checkpoint resumed on the CPU does not need it.
        """
        t = self.torch
        for k, v in arrays.items():
            if k.startswith(("model.", "optim.")) and np.asarray(v).dtype.kind not in "fiu":
                raise LapnetError(f"{k} has dtype {np.asarray(v).dtype}, not a number")
            if k.startswith("model.") and np.asarray(v).dtype.kind != "f":
                raise LapnetError(f"{k} has dtype {np.asarray(v).dtype}, not floating point")
            if k.startswith(("model.", "optim.")) and not np.isfinite(np.asarray(v, dtype=np.float64)).all():
                raise LapnetError(f"{k} holds NaN or inf")
        model_sd = {k[len("model."):]: t.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("model.")}
        want = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        problems = _state_mismatch(want, {k: tuple(v.shape) for k, v in model_sd.items()})
        if problems:
            raise LapnetError(f"checkpoint does not fit this {type(self.model).__name__}: {problems}")
        self.model.load_state_dict(model_sd)
        state: dict[int, dict[str, Any]] = {}
        for k, v in arrays.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = t.from_numpy(np.array(v)).to(self.device)
        for idx, scal in meta.get("optim_scalars", {}).items():
            for name, value in scal.items():
                state.setdefault(int(idx), {})[name] = t.tensor(value)
        self._check_optim_state(state)
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        saved = sorted({g.get("weight_decay") for g in meta["param_groups"]}, key=str)
        if saved and saved != [self.cfg.weight_decay]:
            import warnings

            shown = ", ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in saved)
            warnings.warn(f"weight_decay {self.cfg.weight_decay:g} is not applied on resume: the checkpoint's "
                          f"optimizer keeps weight_decay {shown} (start a new run to change it)")
        if "rng.torch" in arrays:
            t.set_rng_state(t.from_numpy(np.array(arrays["rng.torch"], dtype=np.uint8)))
        if "rng.cuda" in arrays and self.device.type == "cuda":
            t.cuda.set_rng_state(t.from_numpy(np.array(arrays["rng.cuda"], dtype=np.uint8)), self.device)


# ---------------------------------------------------------------------------------------
# the loop


def numpy_learner_state(weights: dict[str, np.ndarray], opt, **meta: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A NumPy learner's checkpoint: weights as `model.*`, optimizer moments as `optim.*`,
    the optimizer's step (a scalar) and `meta` in the JSON metadata."""
    arrays = {f"model.{k}": v for k, v in weights.items()}
    state = opt.state_dict()
    step = int(state.pop("step"))  # a scalar: kept in the JSON meta, not as a 0-d tensor
    arrays.update({f"optim.{k}": v for k, v in state.items()})
    return arrays, {"engine": "numpy", "optim_step": step, **meta}


def split_numpy_learner_state(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> tuple[dict, dict]:
    """The inverse of `numpy_learner_state`: (weights, optimizer state_dict); refuses a torch run."""
    if meta.get("engine") != "numpy":
        raise LapnetError("--resume: this run was trained with --engine torch; resume it with --engine torch")
    weights = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    opt = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
    return weights, {**opt, "step": np.array(int(meta["optim_step"]))}


def _update_overflowed(e: RuntimeError) -> bool:
    """Whether `e` is torch's refusal to convert a number to the weights' float type, as its
    optimizers raise when a step's size overflows (`--lr 1e38`: Adam's first step is lr / 0.1)."""
    text = str(e)
    return "without overflow" in text and "cannot be converted to type" in text


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Learning rate at `step`, `progress` in [0, 1] through the planned run."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "constant":
        return cfg.lr * warm
    low = cfg.lr * cfg.min_lr_frac
    return warm * (low + 0.5 * (cfg.lr - low) * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0))))


class _StopSignal:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so a step is never cut in half."""

    def __init__(self) -> None:
        self.hit = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        from lapnet import distributed

        distributed.note_signal(signum)  # under torchrun a SIGTERM is torchrun stopping the job: said so
        if self.hit:  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, exc_type, exc, tb) -> None:
        from lapnet import distributed

        # a collective failed because another rank of the job is gone: torchrun's SIGTERM follows
        # at once, and raised as an interrupt it would replace the one line that says so (`fit`).
        # The job is over: from here a stop signal is only noted
        lost = exc is not None and distributed.lost_peer(exc) is not None
        for sig, old in self._old.items():
            signal.signal(sig, _noted if lost else old)


def _noted(signum, frame) -> None:
    from lapnet import distributed

    distributed.note_signal(signum)


def _check_disk(out: Path, learner: Learner) -> None:
    """Refuse to start when the disk cannot hold the checkpoints (best + last + temp copy)."""
    nbytes = sum(np.asarray(v).nbytes for v in learner.weights().values())
    # weights x (best; last: weights, 2 Adam moments, the replaced best of an off-schedule stop; its temp copy) + slack
    need = nbytes * 9 + (1 << 20)
    free = shutil.disk_usage(out).free
    if free < need:
        raise LapnetError(f"--out {out}: only {free / 1e6:.1f} MB free, checkpoints need about {need / 1e6:.1f} MB")


def _log_kept(path: Path, step: int) -> list[bytes] | None:
    """The log.jsonl lines a resume keeps: the rows up to the checkpoint's step (rows after it
    are trained again), as they are byte for byte; None when there is no log. Read, and checked,
    before the resume writes anything (`_trim_log` writes them back).

    Raises:
        CheckpointError: a complete line that is JSON but not a log row (an object whose
            "step" is a number), naming the file and the line.
    """
    if not path.exists():
        return None
    keep = []
    for i, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # a line cut by a crash (or not text at all): dropped, as ever
            continue
        at = row.get("step", 0) if isinstance(row, dict) else None
        if not _is_number(at):
            shown = line[:40].decode("utf-8", "replace") + ("..." if len(line) > 40 else "")
            raise CheckpointError(f"{path}: line {i} is not a log row (a JSON object with a numeric step), got "
                                  f"{shown!r}: remove that line, or the file, to resume")
        if at <= step:
            keep.append(line)
    return keep


def _trim_log(path: Path, keep: list[bytes] | None) -> None:
    """Rewrite log.jsonl with the lines `_log_kept` chose."""
    if keep is None:
        return
    from lapnet.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, b"\n".join(keep) + b"\n" if keep else b"")


def _no_follow(path: str, flags: int) -> int:
    """An `open` opener that never opens through a symlink (O_NOFOLLOW: ELOOP instead): a link
    put in place of log.jsonl after the check at the start of fit is not appended through."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def _carry_arrays(carry: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """A carry as checkpoint arrays `carry.0`, `carry.1`, ... and how to rebuild it; None when it
    is not an array, a tensor, or a tuple or list of them (it is then not saved)."""
    parts = list(carry) if isinstance(carry, (tuple, list)) else [carry]
    if carry is None or not parts:
        return None
    kinds = ["numpy" if isinstance(p, np.ndarray) else "torch" if hasattr(p, "detach") else None for p in parts]
    if None in kinds:
        return None
    arrays = {f"carry.{i}": (p if k == "numpy" else p.detach().cpu().numpy()) for i, (p, k) in enumerate(zip(parts, kinds))}
    devices = [str(p.device) if k == "torch" else None for p, k in zip(parts, kinds)]
    return arrays, {"kinds": kinds, "devices": devices, "container": type(carry).__name__ if isinstance(carry, (tuple, list)) else None}


def _carry_from(arrays: dict[str, np.ndarray], meta: dict[str, Any] | None, device: Any = None) -> Any:
    """The carry `_carry_arrays` saved, or None. Tensors go to `device` (the learner's: a carry
    saved on cuda:0 resumes on a CPU-only machine, or on another GPU); without one, to the
    device they were saved on when this machine has it, else to the CPU."""
    if not meta:
        return None
    parts = []
    for i, (kind, saved) in enumerate(zip(meta["kinds"], meta["devices"])):
        a = np.array(arrays[f"carry.{i}"])
        if kind == "torch":
            import torch

            target = device
            if target is None:
                target = saved if saved and (not str(saved).startswith("cuda") or torch.cuda.is_available()) else "cpu"
            a = torch.from_numpy(a).to(target)
        parts.append(a)
    container = {"tuple": tuple, "list": list}.get(meta.get("container") or "")
    return container(parts) if container else parts[0]


_TRAINER_INTS = ("step", "epoch", "step_in_epoch", "bad_evals", "items")
_TRAINER_SECONDS = ("elapsed", "train_time")


def check_resume_meta(m: dict[str, Any], path: Path | str) -> None:
    """Refuse, in one line, a last.safetensors whose metadata a resume cannot use: the trainer's
    position (whole counters >= 0, times >= 0, a history list, ...), the learner's state (a
    dict; for torch, param_groups as a list of dicts), the carry's description. Its checksum
    proves only that the file is as written, not that lapnet wrote those values.

    Raises:
        CheckpointError: naming the file and the first bad field.
    """
    def bad(what: str, v: Any) -> CheckpointError:
        shown = repr(v)
        return CheckpointError(f"{path}: not a resumable lapnet checkpoint ({what}, got {shown[:60]})")

    tr, le = m.get("trainer"), m.get("learner")
    if not isinstance(tr, dict):
        raise bad("'trainer' must be a JSON object", tr)
    if not isinstance(le, dict):
        raise bad("'learner' must be a JSON object", le)
    for k in _TRAINER_INTS:
        v = tr.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(f"trainer {k} must be a whole number >= 0", v)
    for k in _TRAINER_SECONDS:
        v = tr.get(k, 0.0)
        if not _is_number(v) or v < 0:
            raise bad(f"trainer {k} must be a number >= 0", v)
    if "best_val" in tr and tr["best_val"] is not None and not _is_number(tr["best_val"]):
        raise bad("trainer best_val must be a number or null", tr["best_val"])
    if not isinstance(tr.get("history", []), list) or not all(isinstance(r, dict) for r in tr.get("history", [])):
        raise bad("trainer history must be a list of objects", tr.get("history"))
    for k in ("last_metrics", "final_eval"):
        if tr.get(k) is not None and not isinstance(tr[k], dict):
            raise bad(f"trainer {k} must be an object", tr[k])
    fe = tr.get("final_eval")
    if fe and not (isinstance(fe.get("row"), dict) and isinstance(fe.get("metrics"), dict)
                   and _is_number(fe.get("val")) and isinstance(fe.get("saved_model", False), bool)):
        # what fit wrote ({row, metrics, val, saved_model}): a resume and a finished run's result read each
        raise bad("trainer final_eval must be {row: object, metrics: object, val: number, saved_model: true/false}",
                  fe)
    se = tr.get("since_eval")
    if se is not None and not (isinstance(se, dict) and _is_number(se.get("loss", 0.0))
                               and isinstance(se.get("n", 0), int) and not isinstance(se.get("n", 0), bool)
                               and se.get("n", 0) >= 0):
        raise bad("trainer since_eval must be {loss: number, n: whole number >= 0}", se)
    if "param_groups" in le and not (isinstance(le["param_groups"], list) and le["param_groups"]
                                     and all(isinstance(g, dict) for g in le["param_groups"])):
        raise bad("learner param_groups must be a list of objects", le["param_groups"])
    for g in le.get("param_groups", []):
        for k in ("lr", "eps", "weight_decay"):
            if k in g and not (_is_number(g[k]) and g[k] >= 0):
                raise bad(f"learner param_groups {k} must be a number >= 0", g[k])
        if "betas" in g and not (isinstance(g["betas"], list) and len(g["betas"]) == 2
                                 and all(_is_number(b) and 0 <= b < 1 for b in g["betas"])):
            raise bad("learner param_groups betas must be two numbers in [0, 1)", g["betas"])
    if "optim_scalars" in le and not (isinstance(le["optim_scalars"], dict) and all(
            isinstance(v, dict) and all(_is_number(x) for x in v.values()) for v in le["optim_scalars"].values())):
        raise bad("learner optim_scalars must map each parameter to numbers", le["optim_scalars"])
    if "optim_step" in le and (isinstance(le["optim_step"], bool) or not isinstance(le["optim_step"], int)
                               or le["optim_step"] < 0):
        raise bad("learner optim_step must be a whole number >= 0", le["optim_step"])
    carry = m.get("carry")
    if carry is not None and not (isinstance(carry, dict) and isinstance(carry.get("kinds"), list)
                                  and isinstance(carry.get("devices"), list)
                                  and len(carry["kinds"]) == len(carry["devices"])
                                  and all(k in ("numpy", "torch") for k in carry["kinds"])):
        raise bad("carry must describe its parts (kinds, devices)", carry)
    if m.get("model_before") is not None and not isinstance(m["model_before"], dict):
        raise bad("model_before must be an object", m["model_before"])


def finished(st: dict[str, Any], cfg: TrainConfig) -> str | None:
    """Why a restored run has nothing left to do under `cfg` ("epochs", ...), or None."""
    if cfg.epochs is not None and st["epoch"] >= cfg.epochs:
        return "epochs"
    if cfg.max_steps is not None and st["step"] >= cfg.max_steps:
        return "max_steps"
    if cfg.minutes is not None and st["elapsed"] >= cfg.minutes * 60.0:
        return "minutes"
    if cfg.patience is not None and st["bad_evals"] >= cfg.patience:
        return "early_stop"
    return None


def _with_final(history: list[dict], best: float | None, final: dict[str, Any] | None) -> tuple[list[dict], float | None]:
    """The history and best_val a run reports: the scheduled ones plus its off-schedule final
    evaluation, if it made one (see fit), which is the best when it saved the model."""
    if not final:
        return history, best
    return history + [final["row"]], final["val"] if final.get("saved_model") else best


def restored_result(st: dict[str, Any], stopped: str, spe: int) -> TrainResult:
    """The TrainResult of a finished run, from its checkpointed trainer state (the same one
    `fit` returned when it wrote that checkpoint, final off-schedule evaluation included)."""
    history = list(st["history"])
    metrics = dict(st.get("last_metrics") or {})
    if not metrics and history:  # a checkpoint from before last_metrics was saved
        skip = {"step", "epoch", "train_loss", "lr", "elapsed", "items_per_sec"}
        metrics = {k: v for k, v in history[-1].items() if k not in skip}
    final = st.get("final_eval")
    history, best = _with_final(history, st["best_val"], final)
    if final:
        metrics = dict(final["metrics"])
    return TrainResult(stopped=stopped, steps=st["step"], epochs=st["epoch"] + st["step_in_epoch"] / spe,
                       seconds=st["elapsed"], items_per_sec=st["items"] / st["train_time"] if st["train_time"] else 0.0,
                       best_val=best, last_metrics=metrics, history=history)


def fit(
    learner: Learner,
    batches: Batches,
    cfg: TrainConfig,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    describe: str = "training",
    interrupt_hint: str = "continue with --resume",
    eval_label: str = "val",
    on_resumed: Callable[[], None] | None = None,
) -> TrainResult:
    """Train `learner` on `batches` until `cfg` says stop.

    Evaluations follow a schedule: every `cfg.eval_every` steps, or at the end of every epoch.
    A run that stops between two of them (Ctrl-C, `max_steps`, `minutes`) evaluates once more
    and checkpoints, but that final evaluation is off the schedule and leaves the state a
    resume continues from as it was at the last scheduled one: best_val, the patience count,
    the history and the mean training loss since the last evaluation. So a run stopped and
    resumed evaluates at the same steps, early-stops at the same step and ends with the same
    weights and model.safetensors as one never stopped. The final evaluation still counts for
    a run that is not resumed: it is in the returned history, last_metrics and best_val, and
    when it is the best so far model.safetensors holds its weights (the scheduled best it
    replaces is kept inside last.safetensors, and a resume puts it back before going on).

    Args:
        learner: see the module docstring; TorchLearner or the NumPy engine's learner.
        batches: see the module docstring.
        cfg: the TrainConfig.
        out: run directory for model.safetensors (best), last.safetensors (resume) and
            log.jsonl; None trains without writing anything.
        resume: continue from `out/last.safetensors`.
        meta: JSON-able description saved inside every checkpoint (config, vocab, ...).
        on_eval: called as on_eval(step, metrics) after each evaluation (e.g. print a sample).
        describe: the progress bar's label.
        interrupt_hint: what the "interrupted at step N" line advises (a caller whose command
            has no --resume says what to do instead).
        eval_label: what the progress bar calls the evaluation's `val_loss` ("test MSE" for a
            task scored on a test set, "fit MSE" when there is no held-out data).
        on_resumed: with `resume`, called once the checkpoint, its trainer and learner state
            and log.jsonl have passed every check and the run has steps left, before fit
            changes any file in `out`: where a caller records the resume (a resume refused
            leaves every file as it was).

    Returns:
        TrainResult. Raises TrainingDiverged (its `step` says where) on a NaN/inf training or
        validation loss, or an update torch cannot apply (it overflows the weights' float type);
        the last good checkpoint stays.
    """
    from lapnet.run_dir import holds_run_lock, lock_run_dir, release_run_lock

    locked = None
    try:
        if out is not None and is_rank0() and not holds_run_lock(Path(out)):
            # one process trains into a run directory at a time (a second is refused in one line),
            # taken before anything there is read or cleared (the .*.tmp clean-up below)
            Path(out).mkdir(parents=True, exist_ok=True)
            lock_run_dir(Path(out))
            locked = Path(out)
        return _fit(learner, batches, cfg, out=out, resume=resume, meta=meta, on_eval=on_eval, describe=describe,
                    interrupt_hint=interrupt_hint, eval_label=eval_label, on_resumed=on_resumed)
    except RuntimeError as e:
        # under torchrun: a collective (DDP's all-reduce in backward, the loss and stop
        # all-reduces) failed because another rank died or was stopped; one line, not a gloo
        # traceback. The checkpoint rank 0 wrote last stays, as after an interrupt.
        from lapnet import distributed

        lost = distributed.lost_peer(e)
        if lost is None:
            raise
        kept = out is not None and (Path(out) / "last.safetensors").is_file()
        raise distributed.PeerLost(f"{lost}" + (f" (checkpoint in {out}); {interrupt_hint}" if kept else "")) from None
    finally:
        if locked is not None:
            release_run_lock(locked)
        if isinstance(learner, TorchLearner):
            learner.release()  # let distributed.shutdown() free the DDP wrapper before the group goes


def _fit(learner: Learner, batches: Batches, cfg: TrainConfig, *, out, resume, meta, on_eval, describe, interrupt_hint,
         eval_label, on_resumed=None) -> TrainResult:
    from lapnet.run_dir import refuse_linked_run_files

    cfg.validate()
    rank0 = is_rank0()
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        # the log is appended to, which writes through a symlink (a dangling one creates its target);
        # a resume also reads and replaces the checkpoints
        refuse_linked_run_files(out_dir, ("log.jsonl", "last.safetensors", "model.safetensors") if resume
                                else ("log.jsonl",), "--resume" if resume else "--out")
    spe = batches.steps_per_epoch()
    if spe < 1:
        raise LapnetError("no training batches: the data is shorter than one batch")
    st: dict[str, Any] = dict(step=0, epoch=0, step_in_epoch=0, best_val=None, bad_evals=0, elapsed=0.0,
                              train_time=0.0, items=0, history=[], last_metrics={}, since_eval={"loss": 0.0, "n": 0})
    resumed_carry = None
    live: dict[str, Any] = {"carry": None}  # the latest carry, for the checkpoint
    dropped_final = None  # on resume: the checkpoint's off-schedule evaluation, left out of the continued run
    if resume:
        if out_dir is None:
            raise LapnetError("--resume needs a run directory")
        arrays, m = load_tensors(out_dir / "last.safetensors")
        if not isinstance(m, dict) or "trainer" not in m or "learner" not in m:
            raise LapnetError(f"{out_dir / 'last.safetensors'}: not a resumable lapnet checkpoint")
        check_resume_meta(m, out_dir / "last.safetensors")  # a crafted or foreign meta: one line, before any use
        device = getattr(learner, "device", None)
        resumed_carry = _carry_from(arrays, m.get("carry"), device) if _dist() is None else None
        before = {k[len("model_before."):]: v for k, v in arrays.items() if k.startswith("model_before.")}
        arrays = {k: v for k, v in arrays.items() if not k.startswith(("carry.", "model_before."))}
        try:
            learner.load_state(arrays, m["learner"])
        except LapnetError as e:
            raise CheckpointError(f"{out_dir / 'last.safetensors'}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise CheckpointError(f"{out_dir / 'last.safetensors'}: its learner state does not load "
                                  f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
        st.update(m["trainer"])
        done = finished(st, cfg)
        if done is not None:  # nothing left to do: no evaluation, log row or checkpoint is added
            return restored_result(st, done, spe)
        dropped_final = st.pop("final_eval", None)
    # the off-schedule evaluation's log row goes too: the continued run evaluates on schedule
    log_kept = _log_kept(out_dir / "log.jsonl", st["step"] - (1 if dropped_final else 0)) \
        if resume and rank0 else None
    if out_dir is not None and rank0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_disk(out_dir, learner)
    if resume and on_resumed is not None:  # every check has passed: only now is anything rewritten
        on_resumed()
    if out_dir is not None and rank0:
        for stale in out_dir.glob(".*.tmp"):  # left by a run killed in the middle of a write
            stale.unlink(missing_ok=True)
        if resume:
            _trim_log(out_dir / "log.jsonl", log_kept)
            if dropped_final and dropped_final.get("saved_model") and m.get("model_before") is not None:
                # model.safetensors holds the off-schedule evaluation's weights: put back the scheduled best
                save_tensors(out_dir / "model.safetensors", before, m["model_before"])

    planned = [x for x in (cfg.max_steps, cfg.epochs * spe if cfg.epochs else None) if x]
    total_steps = min(planned) if planned else None
    budget = cfg.minutes * 60.0 if cfg.minutes else None
    eval_every = cfg.eval_every or spe
    t_start = time.perf_counter() - st["elapsed"]
    run_meta = dict(meta or {})
    # the training loss summed since the last scheduled evaluation (restored on resume)
    since_eval = st["since_eval"] = dict(st.get("since_eval") or {"loss": 0.0, "n": 0})
    last_metrics: dict[str, float] = {}
    final_eval: dict[str, Any] | None = None  # this run's off-schedule evaluation, if it made one
    shown: dict[str, Any] = st["history"][-1] if st["history"] else {}  # the evaluation the progress bar shows

    def progress_frac() -> float:
        fr = [st["step"] / total_steps] if total_steps else []
        if budget:
            fr.append((time.perf_counter() - t_start) / budget)
        return max(fr) if fr else 0.0

    def checkpoint(improved: bool, val: float, state: tuple | None = None, off: dict[str, Any] | None = None) -> None:
        """last.safetensors, and model.safetensors when `improved`. `state`: the learner's state
        taken before the evaluation; `off`: an off-schedule evaluation (see fit's docstring)."""
        if out_dir is None or not rank0:
            return
        arrays, lmeta = state if state is not None else learner.state()
        trainer = {k: v for k, v in st.items()}
        trainer["since_eval"] = dict(since_eval)
        trainer["elapsed"] = time.perf_counter() - t_start
        carry_meta = None
        if st["step_in_epoch"] > 0 and _dist() is None:  # mid-epoch: the streams' state is part of the position
            saved = _carry_arrays(live["carry"])
            if saved is not None:
                carry_arrays, carry_meta = saved
                arrays = {**arrays, **carry_arrays}
        last_meta = {**run_meta, "trainer": trainer, "learner": lmeta, "train_config": asdict(cfg), "carry": carry_meta}
        model_path = out_dir / "model.safetensors"
        model_meta = {**run_meta, "step": st["step"], "val_loss": val}
        if off is None:
            # the best weights first: a crash between the two writes leaves last.safetensors at the
            # previous evaluation, so a resume trains these steps again and writes both anew
            # (the other order would leave a checkpoint whose best_val no later evaluation beats,
            # and model.safetensors at an older best for good)
            if improved:
                save_tensors(model_path, learner.weights(), model_meta)
            save_tensors(out_dir / "last.safetensors", arrays, last_meta)
            return
        trainer["final_eval"] = off
        if improved:  # keep the scheduled best this evaluation replaces, for a resume to put back
            last_meta["model_before"] = None
            try:
                kept_arrays, kept_meta = load_tensors(model_path) if model_path.exists() else ({}, None)
            except LapnetError:  # unreadable: nothing worth keeping
                kept_arrays, kept_meta = {}, None
            if kept_meta is not None:
                arrays = {**arrays, **{f"model_before.{k}": v for k, v in kept_arrays.items()}}
                last_meta["model_before"] = kept_meta
        # here last.safetensors first: a crash between the two leaves model.safetensors at the
        # scheduled best, which is what a resume continues from
        save_tensors(out_dir / "last.safetensors", arrays, last_meta)
        if improved:
            save_tensors(model_path, learner.weights(), model_meta)

    def kept() -> str:
        """What a diverged run leaves: its last good checkpoint, if it wrote one."""
        if out_dir is not None and (out_dir / "last.safetensors").exists():
            return f"the last good checkpoint is kept in {out_dir}"
        return "no checkpoint was written yet" if out_dir is not None else "nothing was saved (no run directory)"

    def evaluate(scheduled: bool = True) -> bool:
        """Evaluate, log, checkpoint; True when early stopping says stop. An evaluation off the
        schedule (at a stop between two scheduled ones) changes no state a resume continues from."""
        nonlocal last_metrics, final_eval, shown
        # off the schedule the checkpoint holds the state before evaluating (evaluate_fn may draw
        # from the RNG, and a run never stopped does not evaluate here)
        state = learner.state() if not scheduled and out_dir is not None and rank0 else None
        # a diverging model overflows inside its evaluation too: NumPy's RuntimeWarnings would
        # show ahead of the one message below, which reports the non-finite result itself
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            metrics = learner.evaluate()
        if not isinstance(metrics, dict) or "val_loss" not in metrics:
            got = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
            raise LapnetError(f"the learner's evaluate() must return a dict with 'val_loss', got {got}")
        raw = metrics["val_loss"]
        try:  # a float, a NumPy scalar or a 0-d tensor; not None, a bool or a string
            val = None if isinstance(raw, (bool, str, bytes)) else float(raw)
        except (TypeError, ValueError):
            val = None
        if val is None:
            raise LapnetError(f"the learner's evaluate() must return a number as 'val_loss', got {raw!r}")
        if not math.isfinite(val):
            raise TrainingDiverged(f"validation loss became {val} at step {st['step']}; stopped, " + kept(),
                                   step=st["step"])
        train_loss = since_eval["loss"] / max(since_eval["n"], 1)
        row = {"step": st["step"], "epoch": round(st["epoch"] + st["step_in_epoch"] / spe, 4),
               "train_loss": train_loss, **metrics, "lr": lr_at(cfg, st["step"], progress_frac()),
               "elapsed": round(time.perf_counter() - t_start, 3),
               "items_per_sec": st["items"] / st["train_time"] if st["train_time"] else 0.0}
        improved = st["best_val"] is None or val < st["best_val"]
        last_metrics, shown = metrics, row
        if scheduled:
            since_eval.update(loss=0.0, n=0)
            st["history"].append(row)
            st["last_metrics"] = metrics
            if improved:
                st["best_val"], st["bad_evals"] = val, 0
            else:
                st["bad_evals"] += 1
        else:
            final_eval = {"row": row, "metrics": metrics, "val": val, "saved_model": improved}
        if out_dir is not None and rank0:  # log first: a crash between the two leaves no checkpoint without its log row
            log = out_dir / "log.jsonl"
            try:
                with open(log, "a", encoding="utf-8", opener=_no_follow) as f:
                    f.write(json_text(row) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:  # a full disk: name the file; --resume drops a cut row
                raise OSError(e.errno, f"cannot append to {log}: {e.strerror or e} (the last checkpoint is unchanged)") from e
        checkpoint(improved, val, state, None if scheduled else final_eval)
        if on_eval is not None and rank0:
            on_eval(st["step"], metrics)
        return scheduled and cfg.patience is not None and st["bad_evals"] >= cfg.patience

    def info(step_loss: float | None) -> str:
        """The progress bar's live numbers: the latest step's training loss, the latest
        evaluation, throughput (3 significant digits: an MSE of 2e-6 is not 0.0000)."""
        speed = st["items"] / st["train_time"] if st["train_time"] else 0.0
        parts = [] if step_loss is None else [f"step loss {step_loss:.3g}"]
        if "val_loss" in shown:
            parts.append(f"{eval_label} {shown['val_loss']:.3g}")
        if "val_bpc" in shown:  # language models: bits per character too
            bpc = shown["val_bpc"]
            parts.append(f"{bpc:.3f} bpc" if abs(bpc) < 1e4 else f"{bpc:.3g} bpc")  # a diverging run's is huge
        return "  ".join(parts + [f"{speed:,.0f}/s"])

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    show = cfg.progress and rank0
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                        console=console, disable=not show, transient=False)
    stopped = None
    # a checkpoint is only ever written after an evaluation; one made off the schedule was left
    # out above, so a resume that trains no step evaluates again
    evaluated_at = st["step"] if resume and not dropped_final else -1
    step_loss = None
    with progress, _StopSignal() as stop_signal:
        task = progress.add_task(describe, total=1000, info="")
        while stopped is None:
            if cfg.epochs is not None and st["epoch"] >= cfg.epochs:
                stopped = "epochs"
                break
            carry, resumed_carry = (resumed_carry if st["step_in_epoch"] > 0 else None), None
            for batch in islice(batches.epoch(st["epoch"]), st["step_in_epoch"], None):
                lr = lr_at(cfg, st["step"], _agree_max(progress_frac()) if budget else progress_frac())
                t0 = time.perf_counter()
                try:
                    loss, carry, n = learner.train_step(batch, carry, lr)
                except RuntimeError as e:
                    if not _update_overflowed(e):
                        raise
                    # torch's optimizer could not apply the update in the weights' float type (Adam's
                    # lr / (1 - beta1^t) overflowed float32): the weights diverge, lapnet is fine
                    raise TrainingDiverged(
                        f"the update overflowed at step {st['step'] + 1} (epoch {st['epoch'] + 1}): lr {lr:.3g} "
                        f"is too large for the weights' float type; stopped before updating, " + kept(),
                        step=st["step"] + 1) from None
                live["carry"] = carry
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss} at step {st['step'] + 1} (epoch {st['epoch'] + 1}); stopped before "
                        f"updating, " + kept(), step=st["step"] + 1)
                st["train_time"] += time.perf_counter() - t0
                st["step"] += 1
                st["step_in_epoch"] += 1
                st["items"] += n
                since_eval["loss"] += loss
                since_eval["n"] += 1
                step_loss = loss
                progress.update(task, completed=1000 * min(progress_frac(), 1.0), info=info(step_loss))
                end_of_epoch = st["step_in_epoch"] >= spe
                if st["step"] % eval_every == 0 or (cfg.eval_every is None and end_of_epoch):
                    evaluated_at = st["step"]
                    if end_of_epoch:  # record the epoch boundary before checkpointing it
                        st["epoch"] += 1
                        st["step_in_epoch"] = 0
                    if evaluate():
                        stopped = "early_stop"
                elif end_of_epoch:
                    st["epoch"] += 1
                    st["step_in_epoch"] = 0
                reason = stopped  # an early stop, or None
                if reason is None:
                    if cfg.max_steps is not None and st["step"] >= cfg.max_steps:
                        reason = "max_steps"
                    elif budget is not None and time.perf_counter() - t_start >= budget:
                        reason = "minutes"
                    if stop_signal.hit:
                        reason = "interrupted"
                stopped = _agree_stop(reason)  # all ranks stop together, for the same reason
                if stopped is not None or end_of_epoch:
                    break
            else:  # the epoch yielded fewer batches than steps_per_epoch() promised
                if st["step_in_epoch"] > 0:
                    st["epoch"] += 1
                    st["step_in_epoch"] = 0
                else:
                    raise LapnetError("the data yielded no training batches")
        if evaluated_at != st["step"]:
            evaluate(scheduled=False)  # always end on an evaluated, checkpointed state
        progress.update(task, completed=1000 if stopped != "interrupted" else progress.tasks[0].completed,
                        info=info(step_loss))

    if stopped == "interrupted" and rank0:
        where = f" (checkpoint in {out_dir})" if out_dir else ""
        console.print(f"[yellow]interrupted at step {st['step']}{where}; {interrupt_hint}[/yellow]")
    seconds = time.perf_counter() - t_start
    history, best = _with_final(list(st["history"]), st["best_val"], final_eval)
    return TrainResult(stopped=stopped or "epochs", steps=st["step"], epochs=st["epoch"] + st["step_in_epoch"] / spe,
                       seconds=seconds, items_per_sec=st["items"] / st["train_time"] if st["train_time"] else 0.0,
                       best_val=best, last_metrics=last_metrics, history=history)
