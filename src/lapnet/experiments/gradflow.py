"""Notebook sections 3 and 4, measured: how the gradient dL_T/dh_t fades with distance.

For each architecture a model is built for the adding problem at length T, and
||dL_T/dh_t|| is measured for every t, at initialisation and after `steps` training
steps, by torch autograd and by the NumPy engine (the two must agree). Beside the
measured curves the notebook's analytic factor^k curves are drawn for contrast. Also
measured: the spectrum of W_hh (init vs trained), and global-norm against element-wise
gradient clipping on a vanilla RNN whose W_hh is scaled to make gradients explode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from lapnet.data.synthetic import adding_problem
from lapnet.diagnostics.clipping import GradientRecorder
from lapnet.diagnostics.gradflow import decay_rate, norms_by_distance, state_grads_scratch, state_grads_torch
from lapnet.diagnostics.spectrum import spectrum_stats, whh_blocks
from lapnet.errors import LapnetError
from lapnet.experiments.adding import AddingConfig, train_adding
from lapnet.experiments.batches import Fresh
from lapnet.experiments.result import INTERRUPT_HINT, ExperimentResult, stop_if_interrupted
from lapnet.host import own_torch_state
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, TrainingDiverged, check_lr, fit

ENGINES = ("torch", "numpy", "both")
CLIP_OPTIMIZERS = ("adam", "sgd")
ANALYTIC = (0.95, 0.9, 0.7)  # the notebook's illustrative per-step factors


@dataclass
class GradflowConfig:
    """What to measure. `steps` trains each model on the adding problem at `length`."""

    archs: tuple[str, ...] = ("rnn", "lstm", "gru")
    hidden: int = 32
    length: int = 50
    steps: int = 600
    batch_size: int = 64
    lr: float = 0.01
    n_measure: int = 32  # sequences the gradient norms are averaged over
    engine: str = "both"  # torch autograd, the NumPy engine, or both (and compare)
    clip_steps: int = 200  # steps of the clipping comparison (0: skip it)
    clip_radius: float = 3.0  # W_hh spectral radius of the exploding RNN
    clip_norm: float = 1.0
    clip_value: float = 0.05
    clip_optimizer: str = "adam"  # the clipping comparison's optimizer: "adam" or "sgd" (plain, no momentum)
    clip_lr: float | None = None  # its learning rate (None: `lr`)
    seed: int = 0

    def validate(self) -> None:
        for a in self.archs:
            if a not in ARCHS:
                raise LapnetError(f"unknown architecture {a!r}: expected one of {', '.join(ARCHS)}")
        if not self.archs:
            raise LapnetError("gradflow: give at least one architecture")
        if self.hidden < 1:
            raise LapnetError(f"hidden size must be at least 1, got {self.hidden}")
        if self.length < 2:
            raise LapnetError(f"length must be at least 2, got {self.length}")
        if self.steps < 0 or self.clip_steps < 0 or self.n_measure < 1 or self.batch_size < 1:
            raise LapnetError("steps must be >= 0; n_measure and batch size >= 1")
        if self.engine not in ENGINES:
            raise LapnetError(f"--engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.clip_optimizer not in CLIP_OPTIMIZERS:
            raise LapnetError(f"--clip-optimizer {self.clip_optimizer!r}: expected one of {', '.join(CLIP_OPTIMIZERS)}")
        check_lr(self.lr, "--lr")
        if self.clip_lr is not None:
            check_lr(self.clip_lr, "--clip-lr")


def measure_gradients(model: Forecaster, x: np.ndarray, y: np.ndarray, engine: str = "both") -> dict:
    """||dL_T/dh_t|| (and, for an LSTM, ||dL_T/dc_t||) by distance for `model` on (x, y);
    L_T = squared error of the last step.

    Returns:
        {"norms": [...] (by distance, from autograd unless engine == "numpy"),
         "norms_numpy": [...] (when the engine ran), "max_abs_diff": float (both),
         "max_rel_diff": float (both, over h and c)}; an LSTM adds "norms_cell" (and
         "norms_cell_numpy"): ||dL_T/dc_t|| by distance, whose k = 0 entry is 0 (the loss
         reads h_T only, so the cell path starts at k = 1).
    """
    from lapnet import scratch

    model = model.double().eval()  # float64 so the two engines can be compared tightly
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    out: dict = {}
    g_torch = g_np = None
    if engine in ("torch", "both"):
        g_torch = state_grads_torch(model.rnn, model.head, xt, lambda p: ((p - yt) ** 2).sum(-1))
        out["norms"] = norms_by_distance(g_torch[0]).tolist()
        if g_torch[1] is not None:
            out["norms_cell"] = norms_by_distance(g_torch[1]).tolist()
    if engine in ("numpy", "both"):
        W = model.head.weight.detach().numpy()  # (1, H)
        b = model.head.bias.detach().numpy()
        yn = yt.numpy()
        g_np = state_grads_scratch(scratch.from_torch(model.rnn), xt.numpy(),
                                   lambda h: 2.0 * ((h @ W.T + b) - yn) @ W)  # d/dh of (W h + b - y)^2
        out["norms_numpy"] = norms_by_distance(g_np[0]).tolist()
        out.setdefault("norms", out["norms_numpy"])
        if g_np[1] is not None:
            out["norms_cell_numpy"] = norms_by_distance(g_np[1]).tolist()
            out.setdefault("norms_cell", out["norms_cell_numpy"])
    if g_torch is not None and g_np is not None:
        pairs = [(a, b) for a, b in zip(g_torch, g_np) if a is not None]
        diff = max(float(np.abs(a - b).max()) for a, b in pairs)
        scale = max(float(np.abs(a).max()) for a, _ in pairs)
        out["max_abs_diff"] = diff
        out["max_rel_diff"] = float(diff / max(scale, 1e-300))
    model.float()
    return out


def cell_summary(norms_cell: np.ndarray, norms: np.ndarray) -> dict:
    """How the LSTM's cell path fades, beside the h path (`decay_summary`).

    Args:
        norms_cell: (T,) ||dL_T/dc_t|| by distance; k = 0 is 0 (the loss reads h_T only), so
            the cell path runs from k = 1 (c_{T-1}) to k = T - 1 (c_1).
        norms: (T,) ||dL_T/dh_t|| by distance, the same model and batch.

    Returns:
        {"cell_ratio_first_to_last": ||dL/dc_1|| / ||dL/dc_{T-1}||, "cell_decay_per_step":
        that ratio ** (1 / (T - 2)), the geometric mean factor per step over the same span;
        "cell_over_hidden_at_1": ||dL/dc_1|| / ||dL/dh_1||, how much more (or less) gradient
        reaches the first step through the cell than through h}. None where a norm it reads
        is 0, or for T < 3 (the cell path has one point).
    """
    c = np.asarray(norms_cell, dtype=np.float64)
    h = np.asarray(norms, dtype=np.float64)
    ok = len(c) > 2 and c[1] > 0 and c[-1] > 0
    ratio = float(c[-1] / c[1]) if ok else None
    return {"cell_ratio_first_to_last": ratio,
            "cell_decay_per_step": float(ratio ** (1.0 / (len(c) - 2))) if ok else None,
            "cell_over_hidden_at_1": float(c[-1] / h[-1]) if len(c) > 1 and c[-1] > 0 and h[-1] > 0 else None}


def decay_summary(norms: np.ndarray) -> dict:
    """How a gradient-norm curve fades, in numbers that agree with each other.

    Args:
        norms: (T,) ||dL_T/dh_t|| by distance k = T - t (k = 0: the last step).

    Returns:
        {"ratio_first_to_last": ||dL/dh_1|| / ||dL/dh_T||, "decay_per_step": the geometric
        mean factor per step, ratio ** (1 / (T - 1)), so that decay_per_step ** (T - 1) is
        the ratio; "first_step_factor": ||dL/dh_{T-1}|| / ||dL/dh_T||; "decay_fit_beyond_first":
        exp(least-squares slope of log norm over k = 1..T-1)}. The last two describe the
        shape, which one factor cannot: the trained LSTM at T=50 keeps 43% after one step
        back and 3% after four, then 1.5-9% for the next 45 steps (a flat tail: fitted 0.99
        per step past the first, while the ratio is 0.04 and the mean factor 0.936). Each is
        None where a norm it reads is 0 (a log or a ratio of 0 says nothing about a rate), and
        the fit also where fewer than two norms lie past the first (T < 3): no fit is possible.
    """
    norms = np.asarray(norms, dtype=np.float64)
    ok = norms[0] > 0 and norms[-1] > 0
    ratio = float(norms[-1] / norms[0]) if ok else None
    beyond = norms[1:]  # k = 1..T-1
    return {"ratio_first_to_last": ratio,
            "decay_per_step": float(ratio ** (1.0 / (len(norms) - 1))) if ok and len(norms) > 1 else None,
            "first_step_factor": float(norms[1] / norms[0]) if len(norms) > 1 and norms[0] > 0 and norms[1] > 0
            else None,
            "decay_fit_beyond_first": decay_rate(norms, skip=1) if len(beyond) >= 2 and bool(np.all(beyond > 0))
            else None}


def _spectrum(model: Forecaster, kind: str) -> dict:
    w = model.rnn.weight_hh_l0.detach().double().numpy()
    return {gate: {**spectrum_stats(b), "eigenvalues": [[float(e.real), float(e.imag)] for e in np.linalg.eigvals(b)]}
            for gate, b in whh_blocks(kind, w).items()}


def clipping_comparison(cfg: GradflowConfig, *, progress: bool = False) -> dict:
    """Train the same exploding vanilla RNN three ways (no clipping, global norm, element-wise)
    on the same batches; record the raw gradient norm of every step and what each clipping
    rule would do to its direction.

    The optimizer is `cfg.clip_optimizer`: Adam (the default), whose per-coordinate step is
    bounded by the learning rate whatever the gradient's size, or plain SGD, whose step is
    lr x gradient, so a gradient of 1e5 moves the weights by 1e5 x lr: the notebook's
    "training diverges, loss becomes NaN". A run whose loss stops being finite is stopped
    there, not crashed: "diverged_at_step" is the step (1-based) and "diverged_in" which loss
    showed it: "training loss" (step s's batch, before step s's update) or "test loss" (the
    evaluation after step s's update; evaluations come every clip_steps // 20 steps, so the
    same run can report step 28 in the training loss at 200 steps and step 27 in the test
    loss at 60). "diverged" is the training loop's message. All three are None for a run
    that stayed finite.
    """
    T = cfg.length
    lr = cfg.clip_lr if cfg.clip_lr is not None else cfg.lr
    x_te, y_te = map(torch.from_numpy, adding_problem(256, T, seed=[cfg.seed, 11]))
    runs = {}
    for name, clip, clip_value in (("none", None, None), ("global norm", cfg.clip_norm, None),
                                   ("element-wise", None, cfg.clip_value)):
        torch.manual_seed(cfg.seed)
        model = Forecaster("rnn", 2, cfg.hidden, 1)
        with torch.no_grad():  # scale W_hh to the chosen spectral radius: the exploding regime
            w = model.rnn.weight_hh_l0
            w.mul_(cfg.clip_radius / np.abs(np.linalg.eigvals(w.double().numpy())).max())
        rec = GradientRecorder(model, max_norm=cfg.clip_norm, clip_value=cfg.clip_value)
        mse = torch.nn.functional.mse_loss
        curve = []
        seen = {"step": 0, "bad": None, "where": None}  # steps taken; where the loss first was not finite

        def loss_fn(net, batch, carry):
            xb, yb = batch
            seen["step"] += 1
            loss = mse(net(xb)[0], yb)
            if seen["bad"] is None and not bool(torch.isfinite(loss)):  # step s's loss, before its update
                seen["bad"], seen["where"] = seen["step"], "training loss"
            return loss, carry, len(xb)

        def evaluate(m):
            v = float(mse(m(x_te)[0], y_te))
            if seen["bad"] is None and not np.isfinite(v):  # the test loss after step s's update
                seen["bad"], seen["where"] = seen["step"], "test loss"
            curve.append(v)
            return {"val_loss": v}

        tcfg = TrainConfig(epochs=1, max_steps=cfg.clip_steps, lr=lr, schedule="constant", clip=clip,
                           clip_value=clip_value, eval_every=max(1, cfg.clip_steps // 20), seed=cfg.seed,
                           progress=progress)
        learner = TorchLearner(model, loss_fn, evaluate, tcfg)
        if cfg.clip_optimizer == "sgd":  # the learner's Adam replaced by plain SGD; clipping stays the learner's
            learner.opt = torch.optim.SGD(model.parameters(), lr=lr)
        make = lambda n, rng: adding_problem(n, T, seed=rng)  # noqa: E731
        diverged = None
        try:
            stop_if_interrupted(fit(learner, Fresh(make, cfg.batch_size, cfg.clip_steps, cfg.seed + 5), tcfg,
                                    describe=f"clipping: {name}", interrupt_hint=INTERRUPT_HINT))
        except TrainingDiverged as e:
            diverged = str(e)
        rec.remove()
        norms = np.array(rec.norms)
        finite = norms[np.isfinite(norms)]
        cos_v, cos_n = np.array(rec.cos_value), np.array(rec.cos_norm)
        last = next((v for v in reversed(curve) if np.isfinite(v)), None)  # the last finite test MSE
        runs[name] = {"raw_grad_norm": norms.tolist(), "test_mse": curve, "diverged": diverged,
                      "diverged_at_step": seen["bad"] if diverged else None,
                      "diverged_in": seen["where"] if diverged else None,
                      "steps_run": len(norms),
                      "final_test_mse": None if diverged else (curve[-1] if curve else None),
                      "last_finite_test_mse": last,
                      "median_raw_grad_norm": float(np.median(finite)) if len(finite) else None,
                      "max_raw_grad_norm": float(finite.max()) if len(finite) else None,  # of the finite ones
                      "nonfinite_grad_steps": int(len(norms) - len(finite)),
                      "share_steps_clipped_by_norm": float(np.mean(norms > cfg.clip_norm)) if len(norms) else None,
                      "mean_cosine_value_clip": _mean_finite(cos_v),
                      "min_cosine_value_clip": float(np.nanmin(cos_v)) if np.isfinite(cos_v).any() else None,
                      "mean_cosine_norm_clip": _mean_finite(cos_n)}
    return {"radius": cfg.clip_radius, "clip_norm": cfg.clip_norm, "clip_value": cfg.clip_value,
            "optimizer": cfg.clip_optimizer, "lr": lr,
            "eval_every": max(1, cfg.clip_steps // 20), "runs": runs}


def _mean_finite(v: np.ndarray) -> float | None:
    ok = v[np.isfinite(v)]
    return float(ok.mean()) if len(ok) else None


def spectrum_figure(per_arch: dict[str, dict], phases: list[str]):
    """spectrum.png: with an RNN among the architectures, the eigenvalues of its W_hh (left,
    per phase, with the unit circle) beside the spectral radius of every gate block of W_hh
    (right); without one, the spectral radii alone, in one panel (no empty axis).

    Args:
        per_arch: arch -> {phase: {"spectrum": {block: {"spectral_radius", "eigenvalues"}}}},
            as `run_gradflow` measures it.
        phases: the phases measured ("init", and "trained" when the models were trained).
    """
    from lapnet import plots

    radii = {a: {p: {g: s["spectral_radius"] for g, s in e[p]["spectrum"].items()} for p in phases}
             for a, e in per_arch.items()}
    if "rnn" not in per_arch:
        fig, ax = plots.new_figure(figsize=(7, 5.2), layout="constrained")
        plots.spectral_radii(radii, ax=ax)
        return fig
    fig, sax = plots.new_figure(1, 2, figsize=(11, 5.2), layout="constrained")
    eig = {f"RNN {p}": np.array([complex(*e) for e in per_arch["rnn"][p]["spectrum"]["h"]["eigenvalues"]])
           for p in phases}
    plots.eigenvalues(eig, ax=sax[0], title="Eigenvalues of the RNN's W_hh")
    plots.spectral_radii(radii, ax=sax[1])
    return fig


@own_torch_state()
def run_gradflow(cfg: GradflowConfig | None = None, *, progress: bool = False) -> ExperimentResult:
    """Measure gradient flow, W_hh spectra and the clipping comparison.

    Returns:
        ExperimentResult; metrics["archs"][arch]["init" | "trained"] hold the norms by
        distance, the ratio ||dL/dh_1|| / ||dL/dh_T|| and the per-step factors of
        `decay_summary` (decay_per_step ** (T - 1) is the ratio), for the LSTM also the
        cell path (norms_cell and `cell_summary`), the engines' agreement and the W_hh
        spectrum; metrics["clipping"] the comparison.
        Figures "gradflow", "spectrum" and (when clip_steps > 0) "clipping".

    Ctrl-C (SIGINT, or SIGTERM) stops the model in training at its next step and raises
    KeyboardInterrupt: nothing is returned and nothing written (the figures and metrics.json
    come from `ExperimentResult.save`, once every model has trained).
    """
    from lapnet import plots

    cfg = cfg or GradflowConfig()
    cfg.validate()
    x, y = adding_problem(cfg.n_measure, cfg.length, seed=[cfg.seed, 3])
    acfg = AddingConfig(hidden=cfg.hidden, batch_size=cfg.batch_size, max_steps=max(cfg.steps, 1),
                        eval_every=max(1, cfg.steps), lr=cfg.lr, stop_when_solved=False, seed=cfg.seed)
    per_arch: dict[str, dict] = {}
    for arch in cfg.archs:
        torch.manual_seed(cfg.seed)
        model = Forecaster(arch, 2, cfg.hidden, 1)
        entry: dict = {}
        for phase in ("init", "trained"):
            if phase == "trained":
                if cfg.steps == 0:
                    break
                _, tr = train_adding(arch, cfg.length, acfg, progress=progress, model=model)
                entry["train_test_mse"] = tr["final_test_mse"]
            m = measure_gradients(model, x, y, cfg.engine)
            norms = np.asarray(m["norms"])
            m.update(decay_summary(norms))
            if "norms_cell" in m:
                m.update(cell_summary(np.asarray(m["norms_cell"]), norms))
            m["spectrum"] = _spectrum(model, arch)
            entry[phase] = m
        per_arch[arch] = entry

    phases = ["init"] + (["trained"] if cfg.steps else [])
    fig, axes = plots.new_figure(1, len(phases), figsize=(6.5 * len(phases), 4.8), layout="constrained", squeeze=False)
    for ax, phase in zip(axes[0], phases):
        curves, styles, divide_by = {}, {}, {}
        for arch, e in per_arch.items():
            extra = f", test MSE {e['train_test_mse']:.3f}" if phase == "trained" else ""
            curves[f"{arch.upper()} h_t (measured{extra})"] = e[phase]["norms"]
            if "norms_cell" in e[phase]:  # the LSTM's cell path: from k = 1, on the scale of its dL/dh_T
                label = f"{arch.upper()} cell c_t (measured)"
                curves[label] = [float("nan")] + e[phase]["norms_cell"][1:]
                styles[label] = "-."
                divide_by[label] = e[phase]["norms"][0]
        title = "at initialisation" if phase == "init" else f"after {cfg.steps} training steps"
        plots.gradient_flow(curves, ax=ax, analytic=ANALYTIC, styles=styles, divide_by=divide_by,
                            title=f"Gradient flow, adding problem T={cfg.length}, {title}")
    figures = {"gradflow": fig, "spectrum": spectrum_figure(per_arch, phases)}
    metrics = {"experiment": "gradflow", "config": asdict(cfg), "analytic_factors": list(ANALYTIC),
               "archs": per_arch}
    if cfg.clip_steps > 0:
        clip = clipping_comparison(cfg, progress=progress)
        metrics["clipping"] = clip
        figures["clipping"] = plots.clipping_figure(clip)
    agree = [e[p].get("max_rel_diff") for e in per_arch.values() for p in phases if "max_rel_diff" in e[p]]
    if agree:
        metrics["engines_max_rel_diff"] = float(max(agree))
    return ExperimentResult("gradflow", metrics, figures)
