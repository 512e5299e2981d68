"""The engine tour behind `lapnet demo`: the NumPy engine agrees with torch, its gradients
agree with finite differences, and a NumPy LSTM learns the notebook's sine wave.

Each piece is a library function that returns plain rows and numbers, so the CLI only
presents them and a later, longer tour can reuse them:

    parity_table()     max |engine - torch| for outputs, final states and every gradient, the
                       layer objects and the readable cells (scratch/reference.py)
    gradcheck_table()  worst relative error of backward against central differences
    train_sine()       a NumPy LSTM + Linear head, Adam, MSE, trained by lapnet.train.fit
    run_tour()         all three (quick: toy sizes), optionally saved under a run directory

It lives beside the experiments, not in `lapnet.scratch`: it compares the engine with torch
and trains through lapnet.train (torch too), while the engine itself never imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lapnet.data.synthetic import sine_wave, sine_windows
from lapnet.errors import LapnetError
from lapnet.experiments.batches import FullBatch
from lapnet.experiments.numpy_models import NumpySequenceLearner, NumpySequenceModel
from lapnet.host import own_torch_state
from lapnet.scratch.gradcheck import gradcheck
from lapnet.scratch.losses import mse_loss
from lapnet.scratch.recurrent import GRU, KINDS, from_torch

NAMES = {"rnn": "RNN (tanh)", "lstm": "LSTM", "gru": "GRU"}


def parity_table(*, seed: int = 0, B: int = 4, T: int = 7, D: int = 3, H: int = 5) -> list[dict[str, Any]]:
    """Run torch and the engine on the same weights, inputs and upstream gradients (float64).

    Each layer is 2-layer and bidirectional, with variable lengths (torch side: a packed
    sequence) and random non-zero biases, initial states and upstream gradients on both
    the outputs and the final state.

    Returns:
        one row per kind: the largest |difference| in output, final state, dL/dx,
        dL/d(initial state) and over every weight and bias gradient.
    """
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    rows = []
    for kind in ("rnn", "lstm", "gru"):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
            D, H, 2, batch_first=True, bidirectional=True, dtype=torch.float64)
        with torch.no_grad():
            for p in mod.parameters():
                p.normal_(0.0, 0.5)
        eng = from_torch(mod)
        lengths = np.array([T, max(1, T // 2), max(1, T - 2), 1][:B])
        n_state = 2 if kind == "lstm" else 1
        x = rng.standard_normal((B, T, D))
        state = [rng.standard_normal((4, B, H)) for _ in range(n_state)]
        dout = rng.standard_normal((B, T, 2 * H)) * (np.arange(T)[None, :, None] < lengths[:, None, None])
        dstate = [rng.standard_normal((4, B, H)) for _ in range(n_state)]

        xt = torch.tensor(x, requires_grad=True)
        st = [torch.tensor(s, requires_grad=True) for s in state]
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        out_p, s_t = mod(packed, tuple(st) if kind == "lstm" else st[0])
        out_t, _ = pad_packed_sequence(out_p, batch_first=True, total_length=T)
        s_t = s_t if isinstance(s_t, tuple) else (s_t,)
        loss = (out_t * torch.tensor(dout)).sum() + sum((a * torch.tensor(g)).sum() for a, g in zip(s_t, dstate))
        loss.backward()

        pick = (lambda v: tuple(v)) if kind == "lstm" else (lambda v: v[0])
        out, s_e, cache = eng.forward(x, pick(state), lengths)
        dx, ds0, grads = eng.backward(dout, pick(dstate), cache)
        s_e = s_e if kind == "lstm" else (s_e,)
        ds0 = ds0 if kind == "lstm" else (ds0,)

        def err(a, b) -> float:
            return float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))

        rows.append({
            "layer": NAMES[kind],
            "output": err(out, out_t),
            "final state": max(err(a, b) for a, b in zip(s_e, s_t)),
            "dL/dx": err(dx, xt.grad),
            "dL/d state0": max(err(a, b.grad) for a, b in zip(ds0, st)),
            "dL/d weights": max(err(grads[n], p.grad) for n, p in mod.named_parameters()),
            "tensors": len(grads),
        })
    return rows + _reference_rows(seed=seed, B=B, T=T, D=D, H=H)


def _reference_rows(*, seed: int, B: int, T: int, D: int, H: int) -> list[dict[str, Any]]:
    """The readable cells (scratch/reference.py) against torch: one layer, one direction,
    float64, random non-zero biases, initial states and upstream gradients."""
    import torch

    from lapnet.scratch import reference as ref

    rows = []
    for kind in ("rnn", "lstm", "gru"):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed + 1)
        mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](D, H, batch_first=True,
                                                                                     dtype=torch.float64)
        with torch.no_grad():
            for p in mod.parameters():
                p.normal_(0.0, 0.5)
        w = [p.detach().numpy() for p in (mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0)]
        n_state = 2 if kind == "lstm" else 1
        x = rng.standard_normal((B, T, D))
        state = [rng.standard_normal((B, H)) for _ in range(n_state)]
        dout = rng.standard_normal((B, T, H))
        dstate = [rng.standard_normal((B, H)) for _ in range(n_state)]

        xt = torch.tensor(x, requires_grad=True)
        st = [torch.tensor(s[None], requires_grad=True) for s in state]  # (1, B, H)
        out_t, s_t = mod(xt, tuple(st) if kind == "lstm" else st[0])
        s_t = s_t if isinstance(s_t, tuple) else (s_t,)
        loss = (out_t * torch.tensor(dout)).sum() + sum((a[0] * torch.tensor(g)).sum() for a, g in zip(s_t, dstate))
        loss.backward()

        if kind == "lstm":
            out, s_e, cache = ref.lstm_forward(x, *state, *w)
            dx, ds0, g = ref.lstm_backward(dout, *dstate, cache)
        else:
            fwd, bwd = (ref.rnn_forward, ref.rnn_backward) if kind == "rnn" else (ref.gru_forward, ref.gru_backward)
            out, h, cache = fwd(x, state[0], *w)
            dx, dh0, g = bwd(dout, dstate[0], cache)
            s_e, ds0 = (h,), (dh0,)

        def err(a, b) -> float:
            return float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))

        torch_grads = (mod.weight_ih_l0.grad, mod.weight_hh_l0.grad, mod.bias_ih_l0.grad, mod.bias_hh_l0.grad)
        rows.append({
            "layer": f"{NAMES[kind].split()[0]} ref",  # short: the demo table fits 80 columns
            "output": err(out, out_t),
            "final state": max(err(a, b[0]) for a, b in zip(s_e, s_t)),
            "dL/dx": err(dx, xt.grad),
            "dL/d state0": max(err(a, b.grad[0]) for a, b in zip(ds0, st)),
            "dL/d weights": max(err(g[k], t) for k, t in zip(("w_ih", "w_hh", "b_ih", "b_hh"), torch_grads)),
            "tensors": len(g),
        })
    return rows


def gradcheck_table(*, seed: int = 0, samples: int = 4) -> list[dict[str, Any]]:
    """Finite-difference checks (float64) of each kind, 2 layers, bidirectional, variable lengths.

    Returns:
        one row per kind: tensors checked, entries sampled, the worst relative error.
    """
    rows = []
    x = np.random.default_rng(seed).standard_normal((3, 5, 3))
    for kind in ("rnn", "lstm", "gru"):
        layer = KINDS[kind](3, 4, 2, bidirectional=True, dtype="float64", seed=seed)
        res = gradcheck(layer, x, lengths=[5, 2, 4], samples=samples, seed=seed)
        rows.append({"layer": NAMES[kind], "tensors": len(res.rows),
                     "entries": sum(r["checked"] for r in res.rows), "max rel error": res.max_rel_error,
                     "ok (< 1e-6)": "yes" if res.ok() else "NO"})
    layer = GRU(3, 4, gru_form="textbook", dtype="float64", seed=seed)
    res = gradcheck(layer, x, lengths=[5, 2, 4], samples=samples, seed=seed)
    rows.append({"layer": "GRU (textbook form)", "tensors": len(res.rows), "entries": sum(r["checked"] for r in res.rows),
                 "max rel error": res.max_rel_error, "ok (< 1e-6)": "yes" if res.ok() else "NO"})
    return rows


# --- the sine wave ------------------------------------------------------------------------


@dataclass
class SineDemoConfig:
    """The notebook's sine task (section 6): 200 points of sin(t) on [0, 8*pi], windows of 20
    values -> the next value, full-batch Adam at lr 0.01, MSE."""

    hidden: int = 32
    epochs: int = 200
    lr: float = 0.01
    n_points: int = 200
    window: int = 20
    clip: float | None = 1.0
    seed: int = 42
    dtype: str = "float32"


@dataclass
class SineResult:
    """Training MSE of every epoch, held-out MSE at each evaluation, and the time taken."""

    config: SineDemoConfig
    train_loss: list[float] = field(default_factory=list)  # epoch e+1 at index e
    val_epochs: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


def sine_data(cfg: SineDemoConfig):
    """Training windows of the notebook's wave (`data.synthetic`), and held-out windows of the
    same wave shifted by half a radian (values it never saw in that order).

    Returns:
        (x (N, window, 1), y (N, 1)) for training and the same for the held-out wave.
    """
    if cfg.n_points <= cfg.window + 1:
        raise LapnetError(f"sine demo: n_points ({cfg.n_points}) must exceed window + 1 ({cfg.window + 1})")
    t, wave = sine_wave(cfg.n_points)  # (n_points,) on [0, 8*pi]
    pairs = (sine_windows(wave, cfg.window), sine_windows(np.sin(t + 0.5), cfg.window))
    return tuple((x.astype(cfg.dtype), y.astype(cfg.dtype)) for x, y in pairs)


def sine_learner(cfg: SineDemoConfig, x_val: np.ndarray, y_val: np.ndarray,
                 train_losses: list[float] | None = None) -> NumpySequenceLearner:
    """The NumPy LSTM -> last hidden state -> Linear -> next value, as the learner of
    lapnet.train.fit (Adam, global-norm clip `cfg.clip`, MSE); each step's training loss is
    appended to `train_losses`."""
    model = NumpySequenceModel("lstm", 1, cfg.hidden, 1, dtype=cfg.dtype, seed=cfg.seed)
    tcfg = _train_config(cfg, progress=False)
    return NumpySequenceLearner(model, "mse", lambda m: {"val_loss": mse_loss(m.forward(x_val)[0], y_val)[0]}, tcfg,
                                on_loss=None if train_losses is None else train_losses.append)


def _train_config(cfg: SineDemoConfig, *, progress: bool):
    from lapnet.train import TrainConfig

    # about 20 evaluations (each one also writes the checkpoints when `out` is given)
    return TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="constant", clip=cfg.clip, seed=cfg.seed,
                       progress=progress, eval_every=max(1, cfg.epochs // 20))


def train_sine(cfg: SineDemoConfig | None = None, *, out: str | Path | None = None,
               progress: bool = False) -> SineResult:
    """Train the NumPy LSTM on the sine windows with lapnet.train.fit (one full batch per epoch)."""
    from lapnet.experiments.result import stop_if_interrupted
    from lapnet.train import fit  # the one training loop

    cfg = cfg or SineDemoConfig()
    if cfg.hidden < 1 or cfg.epochs < 1 or cfg.window < 1 or cfg.n_points <= cfg.window + 1:
        raise LapnetError("sine demo: hidden, epochs and window must be positive and n_points > window + 1")
    (x, y), (x_val, y_val) = sine_data(cfg)
    train_losses: list[float] = []  # one per step = one per epoch (full batch)
    learner = sine_learner(cfg, x_val, y_val, train_losses)
    res = fit(learner, FullBatch(x, y), _train_config(cfg, progress=progress), out=out,
              meta={"model": "scratch LSTM sine", "config": asdict(cfg)}, describe="NumPy LSTM on the sine wave",
              interrupt_hint="the demo has no --resume: run it again (with --force over what it left)")
    stop_if_interrupted(res)  # Ctrl-C stops the whole tour, not this fit alone
    return SineResult(cfg, train_losses, [int(r["step"]) for r in res.history],
                      [r["val_loss"] for r in res.history], res.seconds)


def plot_sine_loss(result: SineResult, ax=None):
    """Training and held-out MSE per epoch, log scale. Returns the figure."""
    from lapnet.plots import new_figure

    if ax is None:
        fig, ax = new_figure(figsize=(6, 3.5))
    else:
        fig = ax.figure
    epochs = np.arange(1, len(result.train_loss) + 1)
    ax.semilogy(epochs, result.train_loss, label="training MSE")
    ax.semilogy(result.val_epochs, result.val_loss, "o-", ms=3, label="held-out MSE (shifted wave)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(f"NumPy LSTM (H={result.config.hidden}) learns sin(t)")
    ax.legend()
    fig.tight_layout()
    return fig


@own_torch_state()
def run_tour(*, quick: bool = False, seed: int = 0, out: str | Path | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Parity table, gradient checks and the sine LSTM; with `out`, save metrics.json, the
    loss figure (sine_loss.png) and the sine run (out/sine).

    Returns:
        {"parity": rows, "gradcheck": rows, "sine": SineResult, "figure": path or None}

    Ctrl-C (SIGINT, or SIGTERM) stops the sine LSTM's training at its next step and raises
    KeyboardInterrupt (its checkpoints in out/sine stay; nothing else is written).
    """
    sine_cfg = SineDemoConfig(hidden=16, epochs=50) if quick else SineDemoConfig()
    result: dict[str, Any] = {
        "parity": parity_table(seed=seed),
        "gradcheck": gradcheck_table(seed=seed, samples=3 if quick else 6),
    }
    out = Path(out) if out is not None else None
    result["sine"] = sine = train_sine(sine_cfg, out=None if out is None else out / "sine", progress=progress)
    result["figure"] = None
    if out is not None:
        from lapnet.checkpoint import write_json

        fig = plot_sine_loss(sine)
        result["figure"] = out / "sine_loss.png"
        fig.savefig(result["figure"], dpi=120)
        write_json(out / "metrics.json", {
            "parity": result["parity"], "gradcheck": result["gradcheck"],
            "sine": {"config": asdict(sine.config), "train_loss": sine.train_loss, "val_epochs": sine.val_epochs,
                     "val_loss": sine.val_loss, "seconds": sine.seconds},
        })
    return result
