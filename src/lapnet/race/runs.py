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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lapnet.checkpoint import check_weights, load_tensors, read_json
from lapnet.errors import CheckpointError, LapnetError
from lapnet.race.features import FEATURES, PHASES, Sequences, check_features
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


def load_run(run: str | Path, device: str = "cpu") -> RaceRun:
    """Load a run directory written by `train_race`; refuse one trained on other features.

    `device`: where its nets run ("cpu" or "cuda"; `run_net` moves the laps there and the
    outputs back). Live mode keeps the CPU: one step per lap is too small to pay for a GPU.
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
    check_features(config.get("features", []))
    where = run / "config.json"
    for key in ("model", "tagger", "live_tagger"):  # a malformed config is refused here, naming the file
        if key != "model" and not config.get(key):
            continue
        mcfg = config.get(key)
        if not isinstance(mcfg, dict):
            raise CheckpointError(f"{where}: malformed: '{key}' is " + ("missing" if key not in config else
                                  f"a {type(mcfg).__name__}, not the model's settings") + ": retrain the run")
        try:
            RaceNet(RaceModelConfig(**mcfg))  # its sizes and kinds are checked when the net is built
        except (LapnetError, TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{where}: malformed '{key}': {' '.join(str(e).split())[:150]}: retrain the run") from None
    members = config.get("members", 1)
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 1000:
        raise CheckpointError(f"{where}: malformed: 'members' is {members!r}, not a whole number from 1 to 1000")
    gap, fresh = config.get("expected_gap"), config.get("fresh_start")
    model = _load_net(run / "model.safetensors", config["model"], int(config.get("members", 1)), bool(config.get("pit_caller")),
                      isinstance(gap, dict) and bool(gap.get("kept", True)), isinstance(fresh, dict) and bool(fresh.get("kept")))
    tagger = _load_net(run / "tagger" / "model.safetensors", config["tagger"]) if config.get("tagger") else None
    live = _load_net(run / "live_tagger" / "model.safetensors", config["live_tagger"]) if config.get("live_tagger") else None
    if device != "cpu":
        model, tagger, live = (None if m is None else m.to(device) for m in (model, tagger, live))
    return RaceRun(model, config, tagger, run, live)


def _load_net(path: Path, mcfg: dict, members: int = 1, pit_caller: bool = False,
              expected_gap: bool = False, fresh_start: bool = False) -> RaceNet | RaceEnsemble | WithPitCaller:
    arrays, _ = load_tensors(path)
    net = RaceEnsemble(RaceModelConfig(**mcfg), members) if members > 1 else RaceNet(RaceModelConfig(**mcfg))
    if pit_caller:
        net = WithPitCaller(net, PitModel(FEATURES), ExpectedGap(FEATURES) if expected_gap else None,
                            FreshStart(FEATURES) if fresh_start else None)
    check_weights(arrays, net.state_dict(), path)  # an int64 or NaN tensor would load silently
    try:
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        said = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:100]  # the first mismatch, not torch's header
        raise CheckpointError(f"{path}: weights do not fit the model in config.json ({said}): a run trained by another "
                              "lapnet version? retrain it with `lapnet race train`") from None
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
    kept = ((r.config.get("phase_source") or {}).get("pit_window") or r.config.get("pit_threshold") or {})
    return kept.get("threshold")


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
