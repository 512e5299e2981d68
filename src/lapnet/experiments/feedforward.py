"""Notebook section 1, measured: a fixed-window feedforward net beside an RNN.

The notebook's table says feedforward networks fail on sequences: fixed input size, no
memory, no parameter sharing. Here both models learn the same task from sequences of
lengths min_len..N and are then tested on lengths they never saw, shorter and longer:

    RNN   Exercise 2's classifier (`experiments.trend.build_trend_model`): an LSTM (or RNN,
          GRU) reads any length, packed, and a linear head reads its final state.
    MLP   one hidden tanh layer on a window of N steps: the values (zero-padded) and a 0/1
          mask of which steps are real, 2N inputs. A shorter sequence is padded; a longer
          one must be cut to N steps, its first N ("first") or its last N ("last").

Two tasks, binary, 50/50:

    trend   Exercise 2's data: slope * t + N(0, 0.3^2) noise, up or down.
    spike   N(0, 0.3^2) noise; half the sequences have +2 added at one random step
            (a pit stop's lap-time jump somewhere in the stint): was there one?

The MLP trains for more epochs than the RNN (500 against the notebook's 50), enough to fit
its training set, so that what it lacks is not training. Accuracies are measured on 500 fresh
sequences of each test length. Measured (`lapnet feedforward`, LSTM, seed 42, N = 20):

    trend   the window loses nothing (any 20 steps of a trend show it): the MLP ties the
            LSTM at lengths 10 to 160 and beats it on 3-step sequences (0.80 against 0.75).
    spike   the LSTM keeps 0.94 to 0.99 at every length; the MLP falls towards a coin flip
            as the spike moves out of its window (0.53 / 0.56 at 160 steps) and is behind
            inside it too (0.79 against 0.98 at 20 steps, a training length): it must learn
            the spike at each of its 20 positions apart, from the few training sequences
            long enough to have one there, where the LSTM learns it once for every step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from lapnet.data.synthetic import trend_sequences
from lapnet.errors import LapnetError
from lapnet.experiments.batches import FullBatch
from lapnet.experiments.result import INTERRUPT_HINT, ExperimentResult, stop_if_interrupted
from lapnet.host import own_torch_state
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, fit

TASKS = ("trend", "spike")
KEEP = ("first", "last")  # which N steps of a longer sequence the MLP is given
TIE = 0.02  # |RNN - best MLP| at most this is a tie: on 500 sequences an accuracy near 0.9 has a standard error of 0.013


@dataclass
class FeedforwardConfig:
    """Both models, both tasks. `max_len` is N, the longest training length and the MLP's window."""

    tasks: tuple[str, ...] = TASKS
    arch: str = "lstm"
    hidden: int = 32
    mlp_hidden: int = 32
    n_train: int = 500
    n_test: int = 500  # fresh sequences per test length
    min_len: int = 5
    max_len: int = 20
    test_lengths: tuple[int, ...] = (3, 10, 20, 40, 80, 160)
    epochs: int = 50  # the RNN's, Exercise 2's
    mlp_epochs: int = 500
    lr: float = 0.01
    seed: int = 42

    def validate(self) -> "FeedforwardConfig":
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise LapnetError(f"tasks must be among {', '.join(TASKS)}, got {', '.join(map(str, self.tasks)) or 'none'}")
        if self.arch not in ARCHS:
            raise LapnetError(f"unknown architecture {self.arch!r}: expected one of {', '.join(ARCHS)}")
        for name, v in (("hidden", self.hidden), ("mlp_hidden", self.mlp_hidden), ("n_train", self.n_train),
                        ("n_test", self.n_test), ("min_len", self.min_len), ("max_len", self.max_len),
                        ("epochs", self.epochs), ("mlp_epochs", self.mlp_epochs)):
            if v < 1:
                raise LapnetError(f"{name} must be at least 1, got {v}")
        if self.min_len > self.max_len:
            raise LapnetError(f"min_len {self.min_len} is longer than max_len {self.max_len}")
        if not self.test_lengths or min(self.test_lengths) < 1:
            raise LapnetError(f"test lengths must be at least 1, got {', '.join(map(str, self.test_lengths))}")
        if not 0 < self.lr < float("inf"):
            raise LapnetError(f"lr must be a positive number, got {self.lr}")
        return self


def spike_sequences(n: int, seq_len: int, *, min_len: int | None = None, noise: float = 0.3, spike: float = 2.0,
                    seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N(0, noise^2) sequences; half of them (label 1) get `spike` added at one random real step.

    With `min_len`, each sequence gets a random length in [min_len, seq_len], zero-padded
    after its end (as `trend_sequences` pads).

    Returns:
        x (n, seq_len, 1) float32, y (n,) float32 labels, lengths (n,) int64.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if min_len is None:
        lengths = np.full(n, seq_len, dtype=np.int64)
    else:
        lengths = rng.integers(min_len, seq_len + 1, n).astype(np.int64)
    x = rng.standard_normal((n, seq_len)) * noise  # (n, T)
    y = rng.random(n) < 0.5
    where = (rng.random(n) * lengths).astype(np.int64)  # a uniform real step of each sequence
    x[np.flatnonzero(y), where[y]] += spike
    x[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0.0  # padding
    return x[..., None].astype(np.float32), y.astype(np.float32), lengths


def _sequences(task: str, n: int, seq_len: int, min_len: int | None, seed) -> tuple[np.ndarray, ...]:
    make = trend_sequences if task == "trend" else spike_sequences
    x, y, lengths = make(n, seq_len, min_len=min_len, seed=seed)
    return x, y[:, None], lengths  # (n, T, 1) (n, 1) (n,)


def to_window(x: np.ndarray, lengths: np.ndarray, window: int, keep: str = "first") -> np.ndarray:
    """What a fixed-window MLP can be fed: `window` steps of each sequence and a mask.

    Args:
        x: (B, T, 1) zero-padded sequences.
        lengths: (B,) real lengths.
        window: N, the MLP's input steps.
        keep: for a sequence longer than N, "first" keeps steps 0..N-1, "last" its last N.

    Returns:
        (B, 2N) float32: the N values (zero after a short sequence's end), then N 0/1 flags
        saying which of them are real steps.
    """
    B, T = x.shape[:2]
    start = np.maximum(lengths - window, 0) if keep == "last" else np.zeros(B, dtype=np.int64)  # (B,)
    steps = start[:, None] + np.arange(window)[None, :]  # (B, N) indices into each sequence
    real = np.arange(window)[None, :] < np.minimum(lengths, window)[:, None]  # (B, N)
    values = np.take_along_axis(x[:, :, 0], np.minimum(steps, T - 1), axis=1) * real  # (B, N)
    return np.concatenate([values, real], axis=1).astype(np.float32)  # (B, 2N)


def window_mlp(window: int, hidden: int) -> nn.Module:
    """(B, 2N) -> one logit (B, 1): N values and N mask flags, one tanh hidden layer."""
    return nn.Sequential(nn.Linear(2 * window, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(((logits > 0) == (y > 0.5)).mean())


def _train_rnn(cfg: FeedforwardConfig, data: dict, tcfg: TrainConfig):
    """Exercise 2's classifier, trained as `lapnet trend --variable-length` trains it."""
    from lapnet.experiments.trend import TrendConfig, build_trend_model

    tc = TrendConfig(arch=cfg.arch, hidden=cfg.hidden, seq_len=cfg.max_len, min_len=cfg.min_len,
                     epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    y_val = torch.from_numpy(data["valid"][1])

    def evaluate(logits) -> dict[str, float]:
        return {"val_loss": float(bce(torch.from_numpy(logits("valid")), y_val))}

    learner, batches, logits = build_trend_model(tc, data, evaluate, tcfg)
    stop_if_interrupted(fit(learner, batches, tcfg, describe=f"{cfg.arch} (any length)", eval_label="valid BCE",
                            interrupt_hint=INTERRUPT_HINT))
    return learner.model, logits


def _train_mlp(cfg: FeedforwardConfig, data: dict, tcfg: TrainConfig) -> nn.Module:
    torch.manual_seed(cfg.seed)
    mlp = window_mlp(cfg.max_len, cfg.mlp_hidden)
    x_tr, y_tr, len_tr = data["train"]
    x_va, y_va, len_va = data["valid"]
    train = FullBatch(torch.from_numpy(to_window(x_tr, len_tr, cfg.max_len)), torch.from_numpy(y_tr))
    x_val, y_val = torch.from_numpy(to_window(x_va, len_va, cfg.max_len)), torch.from_numpy(y_va)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def loss_fn(net, batch, carry):
        xb, yb = batch
        return bce(net(xb), yb), carry, len(xb)

    learner = TorchLearner(mlp, loss_fn, lambda m: {"val_loss": float(bce(m(x_val), y_val))}, tcfg)
    stop_if_interrupted(fit(learner, train, tcfg, describe=f"MLP (window {cfg.max_len})", eval_label="valid BCE",
                            interrupt_hint=INTERRUPT_HINT))
    return learner.model


def _verdict(d: float) -> str:
    return "rnn" if d > TIE else "mlp" if d < -TIE else "tie"


def run_task(task: str, cfg: FeedforwardConfig, progress: bool = False) -> dict:
    """Train both models on one task and test them at every test length.

    Returns:
        {"train_accuracy": {"rnn", "mlp"}, "rows": one per test length {length, in_training
        ("yes", "shorter" or "longer"), rnn, mlp_first, mlp_last, rnn_minus_best_mlp, winner
        ("rnn", "mlp" or "tie": within TIE)}, "rnn_params", "mlp_params"}.
    """
    seeds = np.random.SeedSequence([cfg.seed, TASKS.index(task)]).spawn(2 + len(cfg.test_lengths))
    gen = [np.random.default_rng(s) for s in seeds]
    data = {"train": _sequences(task, cfg.n_train, cfg.max_len, cfg.min_len, gen[0]),
            "valid": _sequences(task, cfg.n_test, cfg.max_len, cfg.min_len, gen[1])}  # the training lengths, held out
    for L, g in zip(cfg.test_lengths, gen[2:]):
        data[f"length {L}"] = _sequences(task, cfg.n_test, L, None, g)  # every sequence exactly L steps
    rnn_cfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="constant", clip=None, seed=cfg.seed, progress=progress)
    mlp_cfg = TrainConfig(epochs=cfg.mlp_epochs, lr=cfg.lr, schedule="constant", clip=None, seed=cfg.seed,
                          progress=progress)
    rnn, rnn_logits = _train_rnn(cfg, data, rnn_cfg)
    mlp = _train_mlp(cfg, data, mlp_cfg)

    def mlp_accuracy(split: str, keep: str) -> float:
        x, y, lengths = data[split]
        with torch.no_grad():
            return _accuracy(mlp(torch.from_numpy(to_window(x, lengths, cfg.max_len, keep))).numpy(), y)

    rows = []
    for L in cfg.test_lengths:
        split = f"length {L}"
        acc = {"rnn": _accuracy(rnn_logits(split), data[split][1]),
               **{f"mlp_{k}": mlp_accuracy(split, k) for k in KEEP}}
        d = acc["rnn"] - max(acc["mlp_first"], acc["mlp_last"])
        seen = "shorter" if L < cfg.min_len else "longer" if L > cfg.max_len else "yes"
        rows.append({"length": L, "in_training": seen, **acc, "rnn_minus_best_mlp": d, "winner": _verdict(d)})
    return {
        "train_accuracy": {"rnn": _accuracy(rnn_logits("train"), data["train"][1]),
                           "mlp": mlp_accuracy("train", "first")},
        "rows": rows,
        "rnn_params": sum(p.numel() for p in rnn.parameters()),
        "mlp_params": sum(p.numel() for p in mlp.parameters()),
    }


def mlp_param_count(window: int, hidden: int) -> int:
    """Linear(2N, H) + Linear(H, 1): the count grows with the window N."""
    return 2 * window * hidden + hidden + hidden + 1


@own_torch_state()
def run_feedforward(cfg: FeedforwardConfig | None = None, *, progress: bool = False) -> ExperimentResult:
    """Both tasks of `cfg.tasks`; metrics only (no figures).

    Returns:
        ExperimentResult "feedforward" with metrics {"config", "tasks": {task: run_task(...)},
        "params": {"rnn", "mlp", "mlp_window", "mlp_for_longest_test", "longest_test"}, "seconds"}.

    Ctrl-C (SIGINT, or SIGTERM) stops the model in training at its next step and raises
    KeyboardInterrupt: nothing is returned and nothing written.
    """
    cfg = (cfg or FeedforwardConfig()).validate()
    t0 = time.perf_counter()
    tasks = {task: run_task(task, cfg, progress) for task in cfg.tasks}
    first = next(iter(tasks.values()))
    longest = max(cfg.test_lengths)
    metrics = {
        "experiment": "feedforward",
        "config": asdict(cfg),
        "tie_within": TIE,
        "tasks": tasks,
        "params": {"rnn": first["rnn_params"], "mlp": first["mlp_params"], "mlp_window": cfg.max_len,
                   "longest_test": longest, "mlp_for_longest_test": mlp_param_count(longest, cfg.mlp_hidden)},
        "seconds": time.perf_counter() - t0,
    }
    return ExperimentResult("feedforward", metrics)


def _lengths(rows: list[dict], winner: str) -> str:
    return ", ".join(str(r["length"]) for r in rows if r["winner"] == winner) or "none"


def format_feedforward(metrics: dict) -> str:
    """The screen text of `lapnet feedforward`: a table per task, a verdict, the parameter counts."""
    cfg, p = metrics["config"], metrics["params"]
    A, N = cfg["arch"].upper(), cfg["max_len"]
    lines = [f"A fixed-window MLP beside an {A} (H={cfg['hidden']}): trained on lengths {cfg['min_len']}..{N}, "
             f"tested on {cfg['n_test']} fresh sequences per length",
             f"MLP input: the first or the last {N} steps (zero-padded) and a mask of the real ones; "
             f"{A} {cfg['epochs']} epochs, MLP {cfg['mlp_epochs']}"]
    about = {"trend": "Exercise 2's data: trending up or down?", "spike": "a +2 spike at one random step: was there one?"}
    for task, r in metrics["tasks"].items():
        lines += ["", f"task {task}: {about[task]}",
                  f"  length  in training  {A:>5}  MLP first {N}  MLP last {N}  {A} - best MLP"]
        for row in r["rows"]:
            lines.append(f"  {row['length']:>6}  {row['in_training']:<11}  {row['rnn']:>5.3f}  {row['mlp_first']:>11.3f}"
                         f"  {row['mlp_last']:>10.3f}  {row['rnn_minus_best_mlp']:>+{len(A) + 11}.3f}")
        rows = r["rows"]
        lines.append(f"  train accuracy: {A} {r['train_accuracy']['rnn']:.3f}, MLP {r['train_accuracy']['mlp']:.3f}")
        if any(row["winner"] == "rnn" for row in rows):
            lines.append(f"  the {A} wins at lengths {_lengths(rows, 'rnn')}; ties (within {metrics['tie_within']}) at "
                         f"{_lengths(rows, 'tie')}; the MLP wins at {_lengths(rows, 'mlp')}")
        else:
            lines.append(f"  the {A} does not win at any length here: ties (within {metrics['tie_within']}) at "
                         f"{_lengths(rows, 'tie')}; the MLP wins at {_lengths(rows, 'mlp')}")
    lines += ["", f"parameters: {A} {p['rnn']:,} at any length (one set of weights applied at every step); "
                  f"MLP {p['mlp']:,} for a {N}-step window,",
              f"  {p['mlp_for_longest_test']:,} for a window as long as the longest test ({p['longest_test']} steps): "
              f"each position has weights of its own."]
    return "\n".join(lines)
