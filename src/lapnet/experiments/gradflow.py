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
from lapnet.diagnostics.gradflow import decay_rate, hidden_grads_scratch, hidden_grads_torch, norms_by_distance
from lapnet.diagnostics.spectrum import spectrum_stats, whh_blocks
from lapnet.errors import LapnetError
from lapnet.experiments.adding import AddingConfig, train_adding
from lapnet.experiments.batches import Fresh
from lapnet.experiments.result import ExperimentResult, stop_if_interrupted
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import ARCHS
from lapnet.train import TorchLearner, TrainConfig, TrainingDiverged, fit

ENGINES = ("torch", "numpy", "both")
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


def measure_gradients(model: Forecaster, x: np.ndarray, y: np.ndarray, engine: str = "both") -> dict:
    """||dL_T/dh_t|| by distance for `model` on (x, y); L_T = squared error of the last step.

    Returns:
        {"norms": [...] (by distance, from autograd unless engine == "numpy"),
         "norms_numpy": [...] (when the engine ran), "max_abs_diff": float (both),
         "max_rel_diff": float (both)}
    """
    from lapnet import scratch

    model = model.double().eval()  # float64 so the two engines can be compared tightly
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    out: dict = {}
    g_torch = g_np = None
    if engine in ("torch", "both"):
        g_torch = hidden_grads_torch(model.rnn, model.head, xt, lambda p: ((p - yt) ** 2).sum(-1))
        out["norms"] = norms_by_distance(g_torch).tolist()
    if engine in ("numpy", "both"):
        W = model.head.weight.detach().numpy()  # (1, H)
        b = model.head.bias.detach().numpy()
        yn = yt.numpy()
        g_np = hidden_grads_scratch(scratch.from_torch(model.rnn), xt.numpy(),
                                    lambda h: 2.0 * ((h @ W.T + b) - yn) @ W)  # d/dh of (W h + b - y)^2
        out["norms_numpy"] = norms_by_distance(g_np).tolist()
        out.setdefault("norms", out["norms_numpy"])
    if g_torch is not None and g_np is not None:
        diff = np.abs(g_torch - g_np)
        out["max_abs_diff"] = float(diff.max())
        out["max_rel_diff"] = float(diff.max() / max(np.abs(g_torch).max(), 1e-300))
    model.float()
    return out


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
    rule would do to its direction."""
    T = cfg.length
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

        def loss_fn(net, batch, carry):
            xb, yb = batch
            return mse(net(xb)[0], yb), carry, len(xb)

        def evaluate(m):
            v = float(mse(m(x_te)[0], y_te))
            curve.append(v)
            return {"val_loss": v}

        tcfg = TrainConfig(epochs=1, max_steps=cfg.clip_steps, lr=cfg.lr, schedule="constant", clip=clip,
                           clip_value=clip_value, eval_every=max(1, cfg.clip_steps // 20), seed=cfg.seed,
                           progress=progress)
        make = lambda n, rng: adding_problem(n, T, seed=rng)  # noqa: E731
        diverged = None
        try:
            stop_if_interrupted(fit(TorchLearner(model, loss_fn, evaluate, tcfg),
                                    Fresh(make, cfg.batch_size, cfg.clip_steps, cfg.seed + 5), tcfg,
                                    describe=f"clipping: {name}"))
        except TrainingDiverged as e:
            diverged = str(e)
        rec.remove()
        norms = np.array(rec.norms)
        runs[name] = {"raw_grad_norm": norms.tolist(), "test_mse": curve, "diverged": diverged,
                      "final_test_mse": curve[-1] if curve else None,
                      "median_raw_grad_norm": float(np.median(norms)), "max_raw_grad_norm": float(norms.max()),
                      "share_steps_clipped_by_norm": float(np.mean(norms > cfg.clip_norm)),
                      "mean_cosine_value_clip": float(np.mean(rec.cos_value)),
                      "min_cosine_value_clip": float(np.min(rec.cos_value)),
                      "mean_cosine_norm_clip": float(np.mean(rec.cos_norm))}
    return {"radius": cfg.clip_radius, "clip_norm": cfg.clip_norm, "clip_value": cfg.clip_value,
            "eval_every": max(1, cfg.clip_steps // 20), "runs": runs}


def spectrum_figure(per_arch: dict[str, dict], phases: list[str]):
    """spectrum.png: with an RNN among the architectures, the eigenvalues of its W_hh (left,
    per phase, with the unit circle) beside the spectral radius of every gate block of W_hh
    (right); without one, the spectral radii alone, in one panel (no empty axis).

    Args:
        per_arch: arch -> {phase: {"spectrum": {block: {"spectral_radius", "eigenvalues"}}}},
            as `run_gradflow` measures it.
        phases: the phases measured ("init", and "trained" when the models were trained).
    """
    import matplotlib.pyplot as plt

    from lapnet import plots

    radii = {a: {p: {g: s["spectral_radius"] for g, s in e[p]["spectrum"].items()} for p in phases}
             for a, e in per_arch.items()}
    if "rnn" not in per_arch:
        fig, ax = plt.subplots(figsize=(7, 5.2), layout="constrained")
        plots.spectral_radii(radii, ax=ax)
        return fig
    fig, sax = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
    eig = {f"RNN {p}": np.array([complex(*e) for e in per_arch["rnn"][p]["spectrum"]["h"]["eigenvalues"]])
           for p in phases}
    plots.eigenvalues(eig, ax=sax[0], title="Eigenvalues of the RNN's W_hh")
    plots.spectral_radii(radii, ax=sax[1])
    return fig


def run_gradflow(cfg: GradflowConfig | None = None, *, progress: bool = False) -> ExperimentResult:
    """Measure gradient flow, W_hh spectra and the clipping comparison.

    Returns:
        ExperimentResult; metrics["archs"][arch]["init" | "trained"] hold the norms by
        distance, the ratio ||dL/dh_1|| / ||dL/dh_T|| and the per-step factors of
        `decay_summary` (decay_per_step ** (T - 1) is the ratio), the engines' agreement
        and the W_hh spectrum; metrics["clipping"] the comparison.
        Figures "gradflow", "spectrum" and (when clip_steps > 0) "clipping".
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
            m["spectrum"] = _spectrum(model, arch)
            entry[phase] = m
        per_arch[arch] = entry

    phases = ["init"] + (["trained"] if cfg.steps else [])
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(phases), figsize=(6.5 * len(phases), 4.8), layout="constrained", squeeze=False)
    for ax, phase in zip(axes[0], phases):
        curves = {}
        for arch, e in per_arch.items():
            extra = f", test MSE {e['train_test_mse']:.3f}" if phase == "trained" else ""
            curves[f"{arch.upper()} (measured{extra})"] = e[phase]["norms"]
        title = "at initialisation" if phase == "init" else f"after {cfg.steps} training steps"
        plots.gradient_flow(curves, ax=ax, analytic=ANALYTIC,
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
