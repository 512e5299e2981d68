"""Notebook section 7's temperature figure, and real samples at several temperatures.

    P(c) = exp(z_c / T) / sum_j exp(z_j / T)

Low T sharpens the distribution toward the most likely character, high T flattens it
toward uniform. Without a run, the figure uses the notebook's eight illustrative logits.
Given a run (`lapnet text train`), it also shows the model's real next-character
distribution after a prime at each temperature, and samples text at several temperatures
with `lapnet.sampling` (the same code as `lapnet text sample`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lapnet.errors import LapnetError
from lapnet.experiments.result import ExperimentResult
from lapnet.host import own_torch_state

NOTEBOOK_LOGITS = (2.0, 1.5, 0.5, 0.2, -0.5, -1.0, -1.5, -2.0)
NOTEBOOK_LABELS = tuple("abcdefgh")
DEFAULT_PRIME = "To be or not to b"


@dataclass
class TemperatureConfig:
    """Temperatures for the figure and for the samples; the prime and sample length."""

    figure_temperatures: tuple[float, ...] = (0.2, 1.0, 2.0)
    sample_temperatures: tuple[float, ...] = (0.2, 0.5, 0.8, 1.0, 1.5)
    # None: DEFAULT_PRIME, or (for a model lacking one of its characters) the longest end of
    # it the model knows, with a warning; empty: one random character chosen by seed, as `text sample`
    prime: str | None = None
    length: int = 120
    top: int = 10  # characters shown of the model's distribution
    seed: int = 0
    checkpoint: str = "best"  # the run's model.safetensors, or "last": its final step's weights

    def validate(self) -> None:
        for t in (*self.figure_temperatures, *self.sample_temperatures):
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t >= 0 and np.isfinite(t)):
                raise LapnetError(f"temperatures must be finite numbers, 0 (greedy) or positive, got {t}")
        if not self.figure_temperatures:
            raise LapnetError("give at least one temperature")
        if self.length < 1:
            raise LapnetError(f"--length must be at least 1, got {self.length}")


def known_ending(vocab, default: str) -> tuple[str, list[str]]:
    """The longest ending of `default` made of characters `vocab` knows (all of it when it
    knows them all, "" when it lacks the last one), and the characters it lacks, sorted.
    How `lapnet temperature` and `lapnet gates` fit their default text to a run."""
    unknown = sorted(set(vocab.unknown(default)))
    if not unknown:
        return default, []
    cut = max(default.rfind(c) for c in unknown) + 1
    return default[cut:], unknown


def warn_default_replaced(flag: str, default: str, unknown: list[str], instead: str, chooses: str) -> None:
    """The one warning for a default text a run cannot read: "the default --prime 'To be
    or not to b' has characters this model never saw ('T'): starting from 'o be or not to b'
    instead; --prime chooses the start"."""
    import warnings

    from lapnet.data.text import show_chars

    warnings.warn(f"the default {flag} {default!r} has characters this model never saw ({show_chars(unknown)}): "
                  f"{instead} instead; {flag} chooses {chooses}")


def known_default_prime(vocab) -> str:
    """DEFAULT_PRIME when the model knows all its characters; otherwise its longest ending
    made of characters the model knows (empty: a random start), with a warning."""
    start, unknown = known_ending(vocab, DEFAULT_PRIME)
    if unknown:
        warn_default_replaced("--prime", DEFAULT_PRIME, unknown,
                              f"starting from {repr(start) if start else 'a random character'}", "the start")
    return start


def softmax_t(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) of a (V,) vector in float64, exactly the distribution `lapnet.sampling`
    draws from (`filter_probs` without top-k/top-p); below GREEDY_BELOW its T -> 0 limit,
    all the mass on the argmax (as the sampler decodes greedily there)."""
    from lapnet.sampling import SampleConfig, filter_probs

    return filter_probs(np.asarray(logits)[None], SampleConfig(temperature=temperature))[0]  # (1, V) -> (V,)


def entropy_bits(p: np.ndarray) -> float:
    """Shannon entropy of a distribution, in bits."""
    p = np.asarray(p)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@own_torch_state()
def run_temperature(run: str | Path | None = None, cfg: TemperatureConfig | None = None, *,
                    device: str = "cpu") -> ExperimentResult:
    """The softmax-temperature figure, and with a run, its real distribution and samples.

    Returns:
        ExperimentResult; metrics["notebook"][T] = {"probs", "entropy_bits", "top_prob"};
        with a run also metrics["model"][T] (top characters and probabilities after the
        prime, entropy), metrics["start"] (the prime, or for an empty prime the random
        character chosen by the seed) and metrics["samples"][T] (the sampled text). Figures
        "temperature" and, with a run, "temperature_model".
    """
    from lapnet import plots

    cfg = cfg or TemperatureConfig()
    cfg.validate()
    notebook = {}
    probs = {}
    for t in cfg.figure_temperatures:
        p = softmax_t(np.array(NOTEBOOK_LOGITS), t)
        probs[t] = p
        notebook[str(t)] = {"probs": p.tolist(), "entropy_bits": entropy_bits(p), "top_prob": float(p.max())}
    figures = {"temperature": plots.temperature_bars(
        probs, NOTEBOOK_LABELS, title="Softmax of the notebook's logits (2.0, 1.5, 0.5, ..., -2.0) at three temperatures")}
    metrics = {"experiment": "temperature", "config": asdict(cfg), "logits": list(NOTEBOOK_LOGITS),
               "notebook": notebook}
    if run is None:
        return ExperimentResult("temperature", metrics, figures)

    from lapnet.sampling import SampleConfig, generate, start_ids
    from lapnet.text_runs import load_run

    loaded = load_run(run, engine="torch", device=device, checkpoint=cfg.checkpoint)
    vocab = loaded.vocab
    prime = cfg.prime if cfg.prime is not None else known_default_prime(vocab)
    # (1, P); unknown characters -> named error. An empty prime starts, as in `text sample`,
    # from a random character chosen by the seed: the same one every sample below starts from.
    ids = start_ids(vocab, prime, 1, np.random.default_rng(cfg.seed), what="--prime")
    start = vocab.decode(ids[0])
    logits, _ = loaded.stepper().prime(ids)  # (1, V): the model's real next-character logits
    logits = np.asarray(logits, dtype=np.float64)[0]
    order = np.argsort(-logits)[: min(cfg.top, len(vocab))]
    labels = [vocab.chars[i] for i in order]
    model_probs, model_metrics = {}, {}
    for t in cfg.figure_temperatures:
        p = softmax_t(logits, t)
        model_probs[t] = p[order]
        model_metrics[str(t)] = {"entropy_bits": entropy_bits(p), "top": [[c, float(q)] for c, q in zip(labels, p[order])]}
    after = repr(start) if prime else f"{start!r} (a random start)"
    figures["temperature_model"] = plots.temperature_bars(
        model_probs, labels, entropies={t: model_metrics[str(t)]["entropy_bits"] for t in cfg.figure_temperatures},
        title=f"The model's next character after {after} (top {len(labels)} of {len(vocab)} shown; "
              f"entropy of the full distribution)")
    samples = {}
    for t in cfg.sample_temperatures:
        text = generate(loaded.stepper(), vocab, prime=prime, length=cfg.length,
                        cfg=SampleConfig(temperature=t), seed=cfg.seed)[0]
        samples[str(t)] = text
    metrics.update({"run": str(run), "checkpoint": cfg.checkpoint, "step": loaded.step, "prime": prime, "start": start,
                    "model": model_metrics, "samples": samples})
    return ExperimentResult("temperature", metrics, figures)
