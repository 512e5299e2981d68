"""A trained run and its nets at work: what every command that reads a run shares.

    r = load_run("runs/race")  # the directory `lapnet race train` wrote
    o, tagged = run_outputs(r, seq)  # every lap's forecasts, pit call and phase calls; the post-race tagger's
    sec, half = to_seconds(seq, o["mean"], o["half90"])  # (N, T, K) lap times and 90% half-widths in seconds

`load_run` refuses a directory that is not a finished run (training.incomplete, a malformed
config.json, weights that do not fit it); `run_net` runs one net over the sequences;
`run_outputs` gives predict, eval and training's validation block the same calls, the live phase
call (`live_phase`, at the run's `pit_window_threshold`) included.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lapnet.checkpoint import HIDDEN_MAX, check_weights, load_tensors, model_layout, read_json, tensor_names
from lapnet.errors import CheckpointError, LapnetError
from lapnet.host import own_torch_state
from lapnet.models.recurrent import ARCHS
from lapnet.race.features import FEATURES, HORIZONS, PHASES, Sequences, check_features
from lapnet.race.models import INTERVAL90, ExpectedGap, FreshStart, RaceEnsemble, RaceModelConfig, RaceNet, WithPitCaller
from lapnet.race.pit import PitModel
from lapnet.run_dir import UNFINISHED


@dataclass
class RaceRun:
    """A trained run loaded from its directory."""

    model: RaceNet | RaceEnsemble | WithPitCaller
    config: dict
    tagger: RaceNet | None = None  # post-race (bidirectional) phase tagger
    path: Path = field(default_factory=Path)
    live_tagger: RaceNet | None = None  # live phase tagger of a run whose phases come from calibrated simulated races


@own_torch_state()
def load_run(run: str | Path, device: str = "cpu") -> RaceRun:
    """Load a run directory written by `train_race`; refuse one trained on other features.

    `device`: where its nets run ("cpu" or "cuda"; `run_net` moves the laps there and the
    outputs back). Live mode keeps the CPU: one step per lap is too small to pay for a GPU.
    The nets are float32, as trained, whatever the caller's default dtype, and building them
    draws nothing from the caller's torch RNG (`lapnet.host.own_torch_state`).
    """
    if not isinstance(run, (str, Path)):
        raise LapnetError(f"cannot load a run from a {type(run).__name__}: give its directory")
    run = Path(run)
    if run.is_file():
        raise LapnetError(f"{run}: is a file, not a run directory (give the folder `lapnet race train --out` wrote)")
    if not run.is_dir():
        raise LapnetError(f"{run}: no such run directory")
    if (run / UNFINISHED).exists():
        raise CheckpointError(f"{run}: an unfinished run (lapnet race train was interrupted or failed): "
                              "train it again with --force")
    config = read_json(run / "config.json")
    if not isinstance(config, dict) or config.get("kind") != "lapnet-race":
        raise CheckpointError(f"{run}: not a lapnet race run (config.json kind is not 'lapnet-race')")
    where = run / "config.json"
    try:
        check_features(config.get("features", []))
    except LapnetError as e:
        raise CheckpointError(f"{where}: {e}") from None
    # every field a command reads is checked here, naming the file: a run shared by someone else
    # is input like any other (a NaN dropout, a threshold "x" crashed deep inside torch or NumPy)
    cfgs = {key: _model_config(where, key, config.get(key), key in config)
            for key in ("model", "tagger", "live_tagger") if key == "model" or config.get(key)}
    members = config.get("members", 1)
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 1000:
        raise CheckpointError(f"{where}: malformed: 'members' is {short_repr(members)}, not a whole number from 1 to 1000")
    _check_fields(where, config)
    gap, fresh = config.get("expected_gap"), config.get("fresh_start")
    model = _load_net(run / "model.safetensors", cfgs["model"], members, bool(config.get("pit_caller")),
                      isinstance(gap, dict) and bool(gap.get("kept", True)), isinstance(fresh, dict) and bool(fresh.get("kept")))
    tagger = _load_net(run / "tagger" / "model.safetensors", cfgs["tagger"]) if "tagger" in cfgs else None
    live = _load_net(run / "live_tagger" / "model.safetensors", cfgs["live_tagger"]) if "live_tagger" in cfgs else None
    if device != "cpu":
        model, tagger, live = (None if m is None else m.to(device) for m in (model, tagger, live))
    return RaceRun(model, config, tagger, run, live)


def short_repr(v: object) -> str:
    """A config value in a message: its repr, cut short (a 4000-digit integer is one line, not 4000 characters)."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v: object) -> bool:
    """A real number a float can hold: not NaN or infinite, nor an integer of 400 digits (float() overflows)."""
    return _is_real(v) and abs(v) <= sys.float_info.max


def _model_config(where: Path, key: str, mcfg: object, present: bool) -> RaceModelConfig:
    """config.json's settings of one net ("model", "tagger", "live_tagger") as a RaceModelConfig,
    every field checked before anything is built: sizes are whole numbers in range (a float
    would be truncated by torch, 12,000 hidden units took 4.8 GB before the weights were even
    compared), the dropout a probability, the kinds known.

    Raises:
        CheckpointError: one line naming the file, the net and every bad field.
    """
    if not isinstance(mcfg, dict):
        raise CheckpointError(f"{where}: malformed: '{key}' is " + ("missing" if not present else
                              f"a {type(mcfg).__name__}, not the model's settings") + ": retrain the run")
    try:
        cfg = RaceModelConfig(**mcfg)
    except (LapnetError, TypeError) as e:  # a field unknown or missing, a head lapnet does not have
        raise CheckpointError(f"{where}: malformed '{key}': {' '.join(str(e).split())[:150]}: retrain the run") from None
    problems = []
    for name, low, high in (("input_size", 1, len(FEATURES)), ("hidden_size", 1, HIDDEN_MAX), ("num_layers", 1, None),
                            ("horizons", HORIZONS, HORIZONS)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            problems.append(f"{name} is {short_repr(v)}, not a whole number " + (f"from {low} to {high}" if high != low else
                            f"{low}" if high is not None else f">= {low}"))
    if not (isinstance(cfg.arch, str) and cfg.arch.lower() in ARCHS):
        problems.append(f"arch is {short_repr(cfg.arch)}, not one of {', '.join(ARCHS)}")
    for name in ("bidirectional", "linear_skip"):
        if not isinstance(getattr(cfg, name), bool):
            problems.append(f"{name} is {short_repr(getattr(cfg, name))}, not true or false")
    if not (_is_real(cfg.dropout) and 0 <= cfg.dropout < 1):  # NaN fails both comparisons
        problems.append(f"dropout is {short_repr(cfg.dropout)}, not a number in [0, 1)")
    if problems:
        raise CheckpointError(f"{where}: malformed '{key}': {'; '.join(problems)}: retrain the run")
    return cfg


def _check_fields(where: Path, config: dict) -> None:
    """The fields of config.json outside the nets' settings that predict, eval and live read:
    each absent, or of the kind `train_race` writes.

    Raises:
        CheckpointError: one line naming the file and the first bad field.
    """
    def bad(field: str, v: object, want: str) -> CheckpointError:
        return CheckpointError(f"{where}: malformed: '{field}' is {short_repr(v)}, not {want}: retrain the run")

    for field in ("phase_source", "pit_threshold", "expected_gap", "fresh_start", "masks", "train", "race_fingerprints"):
        if config.get(field) is not None and not isinstance(config[field], dict):
            raise bad(field, config[field], "an object")
    _threshold(where, config)
    loss = (config.get("masks") or {}).get("loss")
    if loss is not None and not isinstance(loss, str):
        raise bad("masks.loss", loss, "a text")
    fresh_weight = (config.get("train") or {}).get("fresh_weight")
    if fresh_weight is not None and not (_is_finite(fresh_weight) and fresh_weight >= 0):
        raise bad("train.fresh_weight", fresh_weight, "a number >= 0")
    prints = config.get("race_fingerprints") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in prints.items()):
        raise bad("race_fingerprints", prints, "race names with their fingerprints (texts)")
    wear = config.get("tyre_wear")  # anything else but numbers is read as no tyre wear (`whatif.tyre_wear`)
    for compound, fit in (wear.items() if isinstance(wear, dict) else ()):
        for name, v in (fit.items() if isinstance(fit, dict) else ()):
            if _is_real(v) and not _is_finite(v):
                raise bad(f"tyre_wear.{compound}.{name}", v, "a finite number")


def _threshold(where: Path, config: dict) -> float | None:
    """The pit-window threshold config.json keeps ("phase_source" -> "pit_window", or for runs
    without simulated phases "pit_threshold"), or None; refused unless a probability."""
    kept = ((config.get("phase_source") or {}).get("pit_window") or config.get("pit_threshold") or {})
    field = "phase_source.pit_window" if (config.get("phase_source") or {}).get("pit_window") else "pit_threshold"
    if not isinstance(kept, dict):
        raise CheckpointError(f"{where}: malformed: '{field}' is {short_repr(kept)}, not an object: retrain the run")
    t = kept.get("threshold")
    if t is not None and not (_is_real(t) and 0 <= t <= 1):  # NaN fails both: a pit window never called
        raise CheckpointError(f"{where}: malformed: '{field}.threshold' is {short_repr(t)}, not a probability "
                              "from 0 to 1: retrain the run")
    return None if t is None else float(t)


def _load_net(path: Path, cfg: RaceModelConfig, members: int = 1, pit_caller: bool = False,
              expected_gap: bool = False, fresh_start: bool = False) -> RaceNet | RaceEnsemble | WithPitCaller:
    def build() -> RaceNet | RaceEnsemble | WithPitCaller:
        net = RaceEnsemble(cfg, members) if members > 1 else RaceNet(cfg)
        if pit_caller:
            net = WithPitCaller(net, PitModel(FEATURES), ExpectedGap(FEATURES) if expected_gap else None,
                                FreshStart(FEATURES) if fresh_start else None)
        return net

    retrain = "a run trained by another lapnet version? retrain it with `lapnet race train`"
    # the weights' names and shapes (the file's header) are compared with the nets config.json
    # describes before anything is allocated or read: a few bytes of JSON asking for 10**5 layers
    # hung here, and a 2.4 GB tensor was read whole before it was refused
    names = tensor_names(path)
    if cfg.num_layers * members > len(names):  # each layer of each member holds tensors of its own
        raise CheckpointError(f"{path}: weights do not fit the model config.json describes (num_layers {cfg.num_layers}"
                              f"{f' x {members} members' if members > 1 else ''}, but the file holds only {len(names)} "
                              f"tensors): {retrain}")
    try:
        layout = model_layout(build)
    except CheckpointError as e:
        raise CheckpointError(f"{path.parent / 'config.json'}: {e}: retrain the run") from None
    arrays, _ = load_tensors(path, layout, hint=retrain)
    net = build()
    check_weights(arrays, net.state_dict(), path)  # an int64 or NaN tensor would load silently
    try:
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        said = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:100]  # the first mismatch, not torch's header
        raise CheckpointError(f"{path}: weights do not fit the model config.json describes ({said}): {retrain}") from None
    net.eval()
    return net


@torch.no_grad()
def run_net(model: RaceNet, seq: Sequences, batch: int = 64) -> dict[str, np.ndarray]:
    """Model outputs for every lap: mean (the location), sigma (the head's scale) and half90 (the
    half-width of the central 90% interval), all in % of ref (N, T, K); pit (N, T); phase (N, T, 3)
    probabilities; and "expected" (N, T, K), the mean lap in % of ref, when the model has an ExpectedGap."""
    model.eval()
    dev = next(model.parameters()).device  # the CPU, or the device `load_run` put the run on
    z = INTERVAL90[model.cfg.head]
    outs = {"mean": [], "sigma": [], "half90": [], "pit": [], "phase": []}
    N, T = seq.x.shape[:2]
    for i in range(0, N, batch):
        idx = np.arange(i, min(N, i + batch))
        o, _ = model(torch.from_numpy(seq.x[idx]).to(dev), torch.from_numpy(seq.lengths[idx]))  # lengths stay on the CPU (packing)
        o = {k: v.cpu() for k, v in o.items()}
        outs["mean"].append(o["mean"].numpy())
        outs["sigma"].append(np.exp(o["log_sigma"].numpy()))
        outs["half90"].append(z * outs["sigma"][-1])
        outs["pit"].append(torch.sigmoid(o["pit"]).numpy())
        outs["phase"].append(torch.softmax(o["phase"], -1).numpy())
        if "expected" in o:
            outs.setdefault("expected", []).append(o["expected"].numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def to_seconds(seq: Sequences, mean: np.ndarray, sigma: np.ndarray | None = None):
    """Turn % residuals into lap times in seconds: base + ref * pct / 100 (and sigma in s)."""
    start = np.where(np.isfinite(seq.base), seq.base, seq.ref)[:, :, None]  # (N, T, 1) the race reference when the stint has no Scored lap
    ref = seq.ref[:, :, None]
    sec = start + ref * mean / 100.0  # (N, T, K)
    return (sec, ref * sigma / 100.0) if sigma is not None else sec


def run_outputs(r: RaceRun, seq: Sequences) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """A run's outputs on every lap: the forecaster's (`run_net`), whose "phase" is the live phase
    call's probabilities and "phase_call" the call (`live_phase` with the run's live tagger when
    it has one, else the forecaster's own head when it learned phases, else both absent), and
    the post-race tagger's (None without one)."""
    o = run_net(r.model, seq)
    if r.live_tagger is not None:
        o["phase"], o["phase_call"] = live_phase(run_net(r.live_tagger, seq)["phase"], o["pit"], pit_window_threshold(r))
    elif r.config.get("phase_trained"):
        o["phase_call"] = o["phase"].argmax(-1)
    else:
        del o["phase"]  # an untrained head: no call at all rather than a random one
    return o, (run_net(r.tagger, seq) if r.tagger is not None else None)


def live_phase(tagged: np.ndarray, pit: np.ndarray, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The live phase call of a run whose phases were learnt on calibrated simulated races.

    The simulator-taught tagger reads push against conserve on real laps as it does on
    simulated ones, but it times real stops worse than the pit call, which learnt from real
    stops (out of fold, AUC 0.711 against 0.802). So P(pit window) is the pit call's
    probability, push and conserve share the rest as the tagger splits them, and the call is
    pit_window when that probability reaches `threshold`, else the likelier of the two.

    Args:
        tagged: (..., 3) the live tagger's probabilities of push | conserve | pit_window.
        pit: (...) the pit call's probability (pits within 3 laps).
        threshold: from `training._pit_window_threshold`; None: the tagger's own call.

    Returns:
        ((..., 3) probabilities, (...) the call as an index into PHASES).
    """
    if threshold is None:
        return tagged, tagged.argmax(-1)
    split = tagged[..., :2] / tagged[..., :2].sum(-1, keepdims=True)  # push | conserve, given no stop soon
    probs = np.concatenate([(1.0 - pit)[..., None] * split, pit[..., None]], axis=-1)
    return probs, np.where(pit >= threshold, PHASES.index("pit_window"), split.argmax(-1))


def pit_window_threshold(r: RaceRun) -> float | None:
    """The run's threshold for the pit call (`live_phase`'s pit-window call, predict's figure):
    the best F1 on its training races' stops; None for a run without a pit caller (or trained
    before runs kept it without phase calls)."""
    return _threshold(r.path / "config.json", r.config)


def take(outputs: dict[str, np.ndarray] | None, idx: np.ndarray) -> dict[str, np.ndarray] | None:
    """The outputs (`run_net`) of the sequences `idx` (None stays None)."""
    return None if outputs is None else {k: v[idx] for k, v in outputs.items()}


def phase_calls(o: dict[str, np.ndarray], tagged: dict[str, np.ndarray] | None) -> tuple[dict, dict]:
    """The phase calls in a run's outputs (`run_outputs`): name ("live", "post_race") ->
    (N, T, 3) probabilities, and name -> (N, T) the call (the live one as `live_phase` made it)."""
    probs = {**({"live": o["phase"]} if "phase" in o else {}), **({"post_race": tagged["phase"]} if tagged is not None else {})}
    calls = {k: (o["phase_call"] if k == "live" and "phase_call" in o else p.argmax(-1)) for k, p in probs.items()}
    return probs, calls


def forecast_source(has_base: bool, model: torch.nn.Module, forecast: float = 0.0, wet: bool = False) -> str:
    """Where a lap's forecast comes from (predict's `forecast_from`, live's too): "stint" (the
    nets, on the stint's last Scored lap), "fresh_start" (the stint has no Scored lap yet and the
    run has a FreshStart), "no_green_pace_yet" (the same, but no lap of the race so far was run
    under green flags: no forecast, NaN), "wet_tyres" (the same on intermediate or wet tyres,
    which the FreshStart does not forecast: NaN) or "reference_lap" (no Scored lap yet, and no
    FreshStart: the nets from the race's reference lap). `forecast`: the lap's next-lap
    forecast; `wet`: the lap is on intermediate or wet tyres."""
    if has_base:
        return "stint"
    if getattr(model, "fresh", None) is None:
        return "reference_lap"
    return "fresh_start" if math.isfinite(forecast) else "wet_tyres" if wet else "no_green_pace_yet"
