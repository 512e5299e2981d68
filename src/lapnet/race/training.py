"""Train race models: the library behind `lapnet race train`.

    metrics = train_race(["2023_miami_R.csv", ...], "runs/race")

Every lap is context for the model; the loss and the metrics count only Scored laps (see
`lapnet.race.clean`). The nets train through the shared loop (`lapnet.train.fit`), early-stopped
on held-out races; with a pit caller, `side_fits` adds the pit call, the expected gap and the
fresh start after them. A run directory holds model.safetensors (the forecaster), config.json
(features, normalisation, architecture, masks), metrics.json, log.jsonl, and tagger/ (the
bidirectional phase tagger) when the training laps carried Phase labels (simulated races).
While `train_race` works on a directory it holds training.incomplete, which `load_run`
refuses: an interrupted or failed run never passes for a finished one.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lapnet import distributed
from lapnet.checkpoint import load_tensors, write_json
from lapnet.errors import LapnetError
from lapnet.host import own_torch_state
from lapnet.race.evaluation import SCORED_RULE, TRAINING_LAPS, masks_record, race_fingerprints, score_predictions, training_laps
from lapnet.race.features import (
    COMPOUNDS,
    FEATURES,
    HORIZONS,
    NET_FEATURES,
    PHASES,
    PIT_AHEAD,
    REF_LAPS,
    Sequences,
    build_sequences,
)
from lapnet.race.inputs import load_laps, subset_sequences
from lapnet.race.metrics import macro_f1
from lapnet.race.models import RaceEnsemble, RaceModelConfig, RaceNet, WithPitCaller, race_loss
from lapnet.race.runs import UNFINISHED, RaceRun, run_net, run_outputs
from lapnet.race.side_fits import fit_expected_gap, fit_fresh_start, fit_pit_caller
from lapnet.race.training_config import RaceTrainConfig


def _tensors(seq: Sequences, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """The torch batch of sequences `idx`, trimmed to their longest length."""
    T = int(seq.lengths[idx].max())
    return {
        "x": torch.from_numpy(seq.x[idx, :T]),  # (B, T, D)
        "lengths": torch.from_numpy(seq.lengths[idx]),  # (B,)
        "target": torch.from_numpy(seq.target[idx, :T]),  # (B, T, K)
        "target_mask": torch.from_numpy(seq.target_mask[idx, :T]),
        "has_base": torch.from_numpy(np.isfinite(seq.base[idx, :T])),  # (B, T) the stint has a Scored lap
        "pit": torch.from_numpy(seq.pit[idx, :T]),  # (B, T)
        "pit_mask": torch.from_numpy(seq.pit_mask[idx, :T]),
        "phase": torch.from_numpy(seq.phase[idx, :T]),
        "phase_mask": torch.from_numpy(seq.phase_mask[idx, :T]),
    }


class SeqBatches:
    """Shuffled mini-batches of whole driver sequences; the same order for the same seed and epoch."""

    def __init__(self, seq: Sequences, idx: np.ndarray, batch_size: int, seed: int):
        self.seq, self.idx, self.bs, self.seed = seq, np.asarray(idx), max(1, int(batch_size)), seed

    def steps_per_epoch(self) -> int:
        return int(np.ceil(len(self.idx) / self.bs))

    def epoch(self, e: int):
        order = np.random.default_rng(self.seed * 100003 + e).permutation(self.idx)
        for i in range(0, len(order), self.bs):
            yield _tensors(self.seq, order[i : i + self.bs])


def _splits_races(seq: Sequences, val_races: int) -> bool:
    """True when `_split` holds out whole races, False when a share of the drivers."""
    # only races with something to score can judge early stopping
    return val_races > 0 and len({k[0] for i, k in enumerate(seq.keys) if seq.target_mask[i].any()}) >= 3


def _held_out_note(seq: Sequences, val_races: int) -> str | None:
    """A warning when `_split` holds out fewer races than `val_races` asks for, when it asks for
    several (None otherwise: the default of 1 falls back to drivers below 3 races as documented,
    and metrics.json's validation_label says which was held out)."""
    if val_races <= 1:
        return None
    n = len({k[0] for i, k in enumerate(seq.keys) if seq.target_mask[i].any()})
    if not _splits_races(seq, val_races):
        return (f"val_races {val_races}: only {n} race(s) with Scored laps (3 needed to hold out whole races): "
                "about 15% of the drivers are held out for early stopping instead")
    used = min(val_races, max(1, n // 4))
    if used < val_races:
        return (f"val_races {val_races}: {used} of the {n} races with Scored laps held out for early stopping "
                "(at most one race, or a quarter of them rounded down when there are 8 or more)")
    return None


def _split(seq: Sequences, val_races: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole races for early stopping (at most `val_races`: one race, or a quarter of them rounded down
    when there are 8 or more; 15% of drivers when there are < 3 races)."""
    races = sorted({k[0] for i, k in enumerate(seq.keys) if seq.target_mask[i].any()})
    rng = np.random.default_rng(seed)
    all_idx = np.arange(len(seq.keys))
    if _splits_races(seq, val_races):
        n_val = min(val_races, max(1, len(races) // 4))  # one race, or a quarter (rounded down) from 8 races on
        held = set(rng.choice(races, size=n_val, replace=False).tolist())
        val = np.array([i for i, k in enumerate(seq.keys) if k[0] in held])
    else:
        val = rng.choice(all_idx, size=max(1, int(round(0.15 * len(all_idx)))), replace=False)
    train = np.setdiff1d(all_idx, val)
    if len(train) == 0:
        train = val
    return train, val


def _loss_kwargs(cfg: RaceTrainConfig, head: str, pit_weight: float, forecast: bool) -> dict:
    """`race_loss`'s arguments for a net with this head trained with `cfg` (the head comes from the
    net's config, not cfg: a tagger or an old net may differ; under torchrun the net is a DDP wrapper)."""
    return {"head": head, "pit_weight": pit_weight, "phase_weight": 1.0, "forecast": forecast, "mean_loss": cfg.mean_loss,
            "scale_weight": cfg.scale_weight, "horizon_power": cfg.horizon_power, "fresh_weight": cfg.fresh_weight}


def _forecast_loss_fn(loss_kw: dict):
    def loss_fn(net, batch, carry):
        out, _ = net(batch["x"], batch["lengths"])
        return race_loss(out, batch, **loss_kw), None, int(batch["lengths"].sum())

    return loss_fn


def _eval_fn(seq: Sequences, idx: np.ndarray, loss_kw: dict):
    batch = _tensors(seq, idx)
    forecast = loss_kw["forecast"]

    def evaluate(model):
        dev = next(model.parameters()).device
        b = {k: v.to(dev) for k, v in batch.items()}  # no copy on the CPU
        out, _ = model(b["x"], b["lengths"])
        metrics = {"val_loss": float(race_loss(out, b, **loss_kw))}
        m = b["target_mask"][:, :, 0] & b["has_base"]  # origins the forecast starts from a Scored lap (as before 2026-11-27)
        if forecast and m.any():
            metrics["val_h1_abs_pct"] = float((out["mean"][:, :, 0][m] - b["target"][:, :, 0][m]).abs().mean())
        return metrics

    return evaluate


INTERRUPT_HINT = "this unfinished run cannot be continued: train again with --force to overwrite it"
MIN_NET_MINUTES = 1e-4  # a net whose share of --minutes is used up still takes one step and one evaluation


class _Budget:
    """`--minutes` for the whole of `train_race`: each net still to train gets an equal share of
    the time left (what the nets before it did not use, minus simulation and fitting between them)."""

    def __init__(self, minutes: float | None, nets: int, start: float | None = None):
        start = time.perf_counter() if start is None else start  # the command's start: loading counts too
        self.deadline = None if minutes is None else start + 60.0 * minutes
        self.left = max(int(nets), 1)
        self.given: list[float] = []  # the minutes handed to each net, in order (metrics.json: train.minutes_per_net)

    def next(self) -> float | None:
        """Minutes for the next net (None: no budget)."""
        if self.deadline is None:
            return None
        share = max(self.deadline - time.perf_counter(), 0.0) / 60.0 / self.left
        self.left = max(self.left - 1, 1)
        self.given.append(round(max(share, MIN_NET_MINUTES), 6))
        return self.given[-1]


def _fit(model: RaceNet, seq: Sequences, train_idx, val_idx, cfg: RaceTrainConfig, out: Path, *, epochs: int,
         meta: dict, forecast: bool = True, describe: str = "race", budget: _Budget | None = None) -> Any:
    """Train `model` with the shared loop; leaves the best (validation) weights in `model`.

    `budget`: this net's share of --minutes (None: cfg.minutes for this net alone).

    Raises:
        KeyboardInterrupt: the fit was interrupted (Ctrl-C): the whole `race train` stops, no
            further net is trained and the run stays marked unfinished.
    """
    from lapnet.train import TorchLearner, TrainConfig, TrainingDiverged, fit

    minutes = budget.next() if budget is not None else cfg.minutes
    tcfg = TrainConfig(epochs=epochs, minutes=minutes, lr=cfg.lr, weight_decay=cfg.weight_decay, clip=1.0,
                       patience=cfg.patience, seed=cfg.seed, progress=cfg.progress, warmup_steps=10)
    torch.manual_seed(cfg.seed)
    # with a PitModel the net's pit head is never read: it must neither take capacity nor steer early stopping
    pit_weight = 0.0 if cfg.pit_caller else cfg.pit_weight
    loss_kw = _loss_kwargs(cfg, model.cfg.head, pit_weight, forecast)
    learner = TorchLearner(model, _forecast_loss_fn(loss_kw), _eval_fn(seq, val_idx, loss_kw), tcfg, device=cfg.device, find_unused_parameters=True)  # the pit and phase heads may sit idle
    try:
        result = fit(learner, SeqBatches(seq, train_idx, cfg.batch_size, cfg.seed), tcfg, out=out, meta=meta,
                     describe=describe, interrupt_hint=INTERRUPT_HINT)
    except TrainingDiverged as e:
        # fit keeps the last good checkpoint for a resume, which a race run never has: the run
        # stays marked unfinished (every command refuses it) and the resume state goes
        if distributed.rank() == 0:
            (out / "last.safetensors").unlink(missing_ok=True)
        what = str(e).split("; stopped", 1)[0]
        raise TrainingDiverged(f"{what}: stopped; a race run cannot be resumed, so {out} is left unfinished: train "
                               f"again with --force and a lower --lr (this one {cfg.lr:g})", step=e.step) from None
    if result.stopped == "interrupted":  # one Ctrl-C stops the command, not just this net
        raise KeyboardInterrupt
    distributed.barrier()  # under torchrun rank 0 wrote the best weights; the other ranks read them once it is done
    arrays, _ = load_tensors(out / "model.safetensors")
    distributed.barrier()
    if distributed.rank() == 0:  # the resume state: a race run is never resumed (retrain with --force)
        (out / "last.safetensors").unlink(missing_ok=True)
    model.to("cpu")  # the pit model, the expected gap and every prediction run on the CPU
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return result


@own_torch_state()
def train_race(sources: Any, out: str | Path, cfg: RaceTrainConfig | None = None, *, sim_laps: pd.DataFrame | None = None) -> dict:
    """Train the forecaster / pit caller (and the phase tagger when labels exist) on lap tables.

    Args:
        sources: lap tables (paths, DataFrames, FastF1 Laps) or one of them.
        out: the run directory (created; the caller checks it may be written).
        cfg: RaceTrainConfig.
        sim_laps: simulated laps to pretrain on (else `cfg.pretrain_sim` races are simulated,
            calibrated to `sources`).

    Returns:
        The metrics written to out/metrics.json: `train` ({"stopped", "steps", "epochs",
        "best_val_loss", "seconds", "members", "races", "sequences", "scored_laps",
        "tagger_best_val"}, of the forecaster, or of the ensemble's first member), `validation`
        (`evaluation.score_predictions` on the early-stopping laps, the model's and the
        baselines' errors, the pit and phase calls; None without such laps) with
        `validation_label`, `validation_model`, `validation_races` and `validation_in_sample`
        saying what it was scored on, `masks` (the laps that count) and `cleaning` (the laps
        read, kept and dropped, in total and by race).

    Raises:
        KeyboardInterrupt: Ctrl-C (SIGINT, or SIGTERM) stops the net in training at its next
            step and ends the whole training: no further net is trained, and `out` stays
            marked unfinished (training.incomplete), so no command loads it; train again
            into it with force.
    """
    cfg = cfg or RaceTrainConfig()
    cfg.validate()  # first: a bad config must leave an existing run in `out` as it was
    out = Path(out)
    t0 = time.perf_counter()
    laps, report = load_laps(sources)
    for race, scored in laps.groupby("Race", sort=True)["Scored"].any().items():
        if not scored:  # its laps still build sequences, but no loss and no metric counts them
            warnings.warn(f"race '{race}' has no usable green laps (every lap is missing a time, inaccurate, "
                          "neutralised, wet, or an in/out-lap): it adds nothing to the forecaster")
    for race, stops in laps.groupby("Race", sort=True)["InLap"].sum().items():
        if stops == 0:  # a sprint: no mandatory stop, so "a stop is still due" would be taught wrong
            warnings.warn(f"race '{race}' has no pit stop at all (a sprint?): the pit call learns when stops come "
                          "from races that have them; train it on Grand Prix races")
    seq = build_sequences(laps)
    held = _held_out_note(seq, cfg.val_races)
    if held:
        warnings.warn(held)
    # the input is good: only now is the directory touched (bad input is refused above); under
    # torchrun every rank must have read its input first, or one rank's bad file would cost the old run
    distributed.barrier()
    out.mkdir(parents=True, exist_ok=True)
    _clear_for_training(out)
    distributed.barrier()  # no rank starts writing before rank 0 has cleared the old run
    train_idx, val_idx = _split(seq, cfg.val_races, cfg.seed)
    pretraining = bool(cfg.pretrain_sim or sim_laps is not None)
    n_taggers = (1 if seq.phase_mask.any() else 2 if cfg.phase_sim > 0 else 0) if cfg.tagger else 0
    budget = _Budget(cfg.minutes, cfg.members * (2 if pretraining else 1) + n_taggers, start=t0)
    mcfg = RaceModelConfig(input_size=len(NET_FEATURES), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                           arch=cfg.arch, dropout=cfg.dropout, linear_skip=cfg.linear_skip, head=cfg.head)
    torch.manual_seed(cfg.seed)
    model = RaceNet(mcfg)
    config = {
        "kind": "lapnet-race",
        "features": list(FEATURES),
        "compounds": list(COMPOUNDS),
        "phases": list(PHASES),
        "normalisation": {
            "unit": "percent of the race's reference lap",
            "reference_lap": f"median of the race's first {REF_LAPS} Scored laps (running median before)",
            "target": "lap t+k minus the stint's last Scored lap at t (the race reference when the stint has none)",
            "horizons": HORIZONS,
            "pit_ahead": PIT_AHEAD,
        },
        "masks": masks_record(SCORED_RULE, cfg.fresh_weight),
        "model": mcfg.to_dict(),
        "train": asdict(cfg),
        "races": sorted({k[0] for k in seq.keys}),
        "race_fingerprints": race_fingerprints(laps),
        "val_races": sorted({seq.keys[i][0] for i in val_idx}),
        "phase_trained": bool(seq.phase_mask.any()),
        "tagger": None,
    }
    meta = {"config": {k: config[k] for k in ("kind", "features", "model")}}
    pre, sim_seq = None, None
    if pretraining:
        if sim_laps is None:
            sim_laps = simulate_calibrated(laps, cfg.pretrain_sim, seed=cfg.seed + 1000)
        sim_laps, _ = _load_simulated(sim_laps)
        sim_seq = build_sequences(sim_laps)
        s_train, s_val = _split(sim_seq, cfg.val_races, cfg.seed)
        pre = _fit(model, sim_seq, s_train, s_val, cfg, out / "pretrain", epochs=cfg.pretrain_epochs, meta=meta,
                   describe="pretrain (sim" + (f", member 1/{cfg.members}" if cfg.members > 1 else "") + ")", budget=budget)
        config["pretrain"] = {"sim_races": int(len({k[0] for k in sim_seq.keys})), "steps": pre.steps, "best_val": pre.best_val}
        config["phase_trained"] = config["phase_trained"] or bool(sim_seq.phase_mask.any())
    result = _fit(model, seq, train_idx, val_idx, cfg, out, epochs=cfg.epochs, meta=meta,
                  describe="race train" + (f" (member 1/{cfg.members})" if cfg.members > 1 else ""), budget=budget)
    if cfg.members > 1:
        # each member early-stops on its own validation race, which the others train on: the
        # "validation" block below scores the first member alone, on its race, to stay held out
        ens, results = _fit_members(model, seq, cfg, mcfg, out, meta, sim_seq, budget)
        config["members"] = cfg.members
        config["member_val_races"] = [config["val_races"]] + [sorted({seq.keys[i][0] for i in va}) for _, va in results]

    if cfg.fresh_start and not cfg.pit_caller:
        config["fresh_start"] = {"kept": False, "why_not": "the FreshStart rides with the pit caller (pit_caller False)"}
    if cfg.pit_caller:
        from lapnet.checkpoint import save_tensors

        pit, config["pit_caller"] = fit_pit_caller(seq, train_idx, val_idx, cfg)
        forecaster = ens if cfg.members > 1 else model
        expected = None
        if cfg.expected_gap:
            expected, config["expected_gap"] = fit_expected_gap(forecaster, seq, train_idx, val_idx, cfg)
            config["expected_gap"]["kept"] = expected is not None
        fresh = None
        if cfg.fresh_start:
            fresh, config["fresh_start"] = fit_fresh_start(forecaster, seq, np.concatenate([train_idx, val_idx]), cfg)
        wrapped = WithPitCaller(forecaster, pit, expected, fresh)
        save_tensors(out / "model.safetensors", {k: v.detach().numpy() for k, v in wrapped.state_dict().items()},
                     {"config": {**meta["config"], "members": cfg.members, "pit_caller": True,
                                 "expected_gap": expected is not None, "fresh_start": fresh is not None}})
        model = WithPitCaller(model, pit, expected, fresh)  # the validation block below scores the first member with the pit caller
        # the probability from which the pit call counts as called (predict's figure; the live pit-window call)
        config["pit_threshold"] = _pit_window_threshold(model, subset_sequences(seq, np.concatenate([train_idx, val_idx])))
        config["tyre_wear"] = _tyre_wear(laps)  # pit-now carries boxing now against later to the flag with it

    tagger_result, tagger, live_tagger = None, None, None
    if cfg.tagger and seq.phase_mask.any():
        tagger, tagger_result = _fit_tagger(seq, train_idx, val_idx, mcfg, cfg, out / "tagger", bidirectional=True,
                                            budget=budget)
        config["tagger"] = tagger.cfg.to_dict()
    elif cfg.tagger and cfg.phase_sim > 0:
        try:
            (tagger, tagger_result), live_tagger, config["phase_source"] = _fit_sim_taggers(laps, mcfg, cfg, out, budget)
            config["tagger"], config["live_tagger"] = tagger.cfg.to_dict(), live_tagger.cfg.to_dict()
            if cfg.pit_caller:
                config["phase_source"]["pit_window"] = config["pit_threshold"]
        except LapnetError as e:  # the forecaster and the pit call are trained: keep them, without phases
            warnings.warn(f"no phase calls: the simulator could not be calibrated to these laps ({e})")
    write_json(out / TRAINING_LAPS, training_laps(laps))  # eval's in-sample check, lap by lap
    write_json(out / "config.json", config)

    val_seq = subset_sequences(seq, val_idx)
    metrics = {
        "masks": config["masks"],
        "train": {"seconds": round(time.perf_counter() - t0, 2), "steps": result.steps, "epochs": result.epochs,
                  "stopped": result.stopped, "best_val_loss": result.best_val,
                  "members": cfg.members, "races": len(config["races"]), "sequences": len(train_idx),
                  "scored_laps": int(seq.origin_scored.sum()),
                  "tagger_best_val": tagger_result.best_val if tagger_result else None,
                  **({"minutes": cfg.minutes, "minutes_per_net": budget.given} if cfg.minutes is not None else {})},
        "cleaning": report.summary(),
        "validation_races": config["val_races"],
        # what the validation block was scored on: the laps early stopping watched, not races held out of training
        "validation_label": (f"validation race{'s' if len(config['val_races']) > 1 else ''} used for early stopping: "
                             f"{', '.join(config['val_races'])}" if _splits_races(seq, cfg.val_races)
                             else f"validation drivers used for early stopping ({len(val_idx)} of {len(seq.keys)} "
                                  "driver sequences, about 15%)"),
        "validation_model": "the first of the ensemble's members" if cfg.members > 1 else "the model",
        # fitted on the validation races too (their own leave-races-out folds chose them): in-sample there
        "validation_in_sample": [name for name, on in (("pit call", cfg.pit_caller),
                                                       ("fresh-start forecasts (the fresh block)", "fresh_start" in config
                                                        and config["fresh_start"].get("kept"))) if on],
        "validation": score_predictions(val_seq, *run_outputs(RaceRun(model, config, tagger, out, live_tagger), val_seq))
        if len(val_idx) else None,
    }
    write_json(out / "metrics.json", metrics)
    if distributed.rank() == 0:  # config.json, the weights and metrics.json are all written
        (out / UNFINISHED).unlink(missing_ok=True)
    return metrics


def _clear_for_training(out: Path) -> None:
    """Make `out` ready for a new run (rank 0 only): remove an older run's config.json and logs (fit
    appends to log.jsonl, so an overwritten run's rows would stay), and mark the directory
    unfinished: until `train_race` ends it must not pass for a finished run (an older run's
    config.json beside new weights would), and `load_run` refuses the marker."""
    if distributed.rank() != 0:
        return
    (out / "config.json").unlink(missing_ok=True)
    for sub in ("", "pretrain/", "members/*/", "members/*/pretrain/", "tagger/", "live_tagger/"):
        for log in out.glob(f"{sub}log.jsonl"):
            log.unlink()
    (out / UNFINISHED).write_text("lapnet race train has not finished writing this run (interrupted or failed); "
                                  "train again with --force\n", encoding="utf-8")


def _fit_members(first: RaceNet, seq: Sequences, cfg: RaceTrainConfig, mcfg: RaceModelConfig, out: Path, meta: dict,
                 sim_seq: Sequences | None = None, budget: _Budget | None = None):
    """Train members 2..M (seeds cfg.seed + m, each with its own validation race; each pretrained
    on `sim_seq` first when given, as the first was) beside `first`; write the ensemble's weights
    to out/model.safetensors.

    Returns:
        (the RaceEnsemble, [(TrainResult, validation indices) of members 2..M]).
    """
    from lapnet.checkpoint import save_tensors

    ens = RaceEnsemble(mcfg, cfg.members)
    ens.members[0].load_state_dict(first.state_dict())
    results = []
    for m in range(1, cfg.members):
        mc = RaceTrainConfig(**{**asdict(cfg), "seed": cfg.seed + m})
        tr, va = _split(seq, mc.val_races, mc.seed)
        torch.manual_seed(mc.seed)
        net = RaceNet(mcfg)
        if sim_seq is not None:
            s_train, s_val = _split(sim_seq, mc.val_races, mc.seed)
            _fit(net, sim_seq, s_train, s_val, mc, out / "members" / str(m + 1) / "pretrain", epochs=cfg.pretrain_epochs,
                 meta=meta, describe=f"pretrain (sim, member {m + 1}/{cfg.members})", budget=budget)
        results.append((_fit(net, seq, tr, va, mc, out / "members" / str(m + 1), epochs=cfg.epochs, meta=meta,
                             describe=f"race train (member {m + 1}/{cfg.members})", budget=budget), va))
        ens.members[m].load_state_dict(net.state_dict())
    ens_meta = {"config": {**meta["config"], "members": cfg.members}}
    save_tensors(out / "model.safetensors", {k: v.detach().numpy() for k, v in ens.state_dict().items()}, ens_meta)
    return ens, results


def _fit_tagger(seq: Sequences, train_idx, val_idx, mcfg: RaceModelConfig, cfg: RaceTrainConfig, out: Path, *,
                bidirectional: bool, budget: _Budget | None = None) -> tuple[RaceNet, Any]:
    """A phase tagger (a RaceNet trained on the phase loss alone): bidirectional reads the whole
    race (post-race analysis), unidirectional only the laps so far (live calls)."""
    tcfg = RaceModelConfig(**{**mcfg.to_dict(), "bidirectional": bidirectional})
    tagger = RaceNet(tcfg)
    kind = "bidirectional" if bidirectional else "live"
    result = _fit(tagger, seq, train_idx, val_idx, cfg, out, epochs=cfg.epochs,
                  meta={"config": {"kind": "lapnet-race-tagger", "features": list(FEATURES), "model": tcfg.to_dict()}},
                  forecast=False, describe=f"tagger ({kind})", budget=budget)
    return tagger, result


def _fit_sim_taggers(laps: pd.DataFrame, mcfg: RaceModelConfig, cfg: RaceTrainConfig, out: Path,
                     budget: _Budget | None = None):
    """Phase taggers for laps without Phase labels: learnt from `cfg.phase_sim` simulated races
    calibrated to `laps`, where the simulator knows each lap's phase.

    Why: real timing data records no driver's intent, so no real lap can teach push / conserve /
    pit window; the calibrated simulator has the real races' pace, degradation, stints and
    noise, and the features are normalised per race, so taggers trained there read real laps.
    What that is worth on real laps is measured by `metrics.phase_checks` (in `race eval`).

    Returns:
        ((post-race tagger, its TrainResult), live tagger, what config.json records).
    """
    sim, _ = _load_simulated(simulate_calibrated(laps, cfg.phase_sim, seed=cfg.seed + 2000))
    sim_seq = build_sequences(sim)
    tr, va = _split(sim_seq, cfg.val_races, cfg.seed)
    post = _fit_tagger(sim_seq, tr, va, mcfg, cfg, out / "tagger", bidirectional=True, budget=budget)
    live, _ = _fit_tagger(sim_seq, tr, va, mcfg, cfg, out / "live_tagger", bidirectional=False, budget=budget)
    info = {"sim_races": int(cfg.phase_sim), "calibrated_to": "the training races (lapnet race calibrate)",
            "sim_val_races": sorted({sim_seq.keys[i][0] for i in va})}
    if len(va):
        vs = subset_sequences(sim_seq, va)
        qm = vs.phase_mask
        info["sim_val_macro_f1"] = {name: macro_f1(vs.phase[qm], run_net(net, vs)["phase"].argmax(-1)[qm], len(PHASES))
                                    for name, net in (("post_race", post[0]), ("live", live))}
    return post, live, info


def _tyre_wear(laps: pd.DataFrame) -> dict | None:
    """What a lap of tyre age costs per dry compound on the training races: the simulator's
    calibration (`calibrate`: quadratic wear in TyreLife, fitted with the fuel effect, which
    stops reset TyreLife but not, apart), {compound: {"linear_s", "quad_s"}}; None when no race
    is fit to calibrate on (pit-now then carries the two new sets' mean gap instead)."""
    from lapnet.race.calibrate import calibrate

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = calibrate(laps)
    except LapnetError:
        return None
    return {c: {"linear_s": float(v.deg_linear_s), "quad_s": float(v.deg_quad_s)} for c, v in cal.compounds.items()
            if c in ("SOFT", "MEDIUM", "HARD")}


def _pit_window_threshold(model: torch.nn.Module, seq: Sequences) -> dict:
    """The pit-call probability from which the pit call counts as called (predict's figure) and
    the live phase call says pit_window (`live_phase`): the one with the best F1 of that call
    against the real stops of the training races."""
    p, y = run_net(model, seq)["pit"][seq.pit_mask], seq.pit[seq.pit_mask].astype(bool)  # (n,)
    best = (-1.0, 0.5)
    for tau in np.round(np.arange(0.05, 0.80, 0.01), 2):
        called = p >= tau
        tp = float((called & y).sum())
        f1 = 2 * tp / max(float(called.sum() + y.sum()), 1.0)
        if f1 > best[0]:
            best = (f1, float(tau))
    return {"threshold": best[1], "train_f1": best[0],
            "rule": "pit_window when the pit call's probability reaches the threshold (best F1 on the training "
                    "races' stops), else the live tagger's likelier of push and conserve"}


def _load_simulated(sim: pd.DataFrame):
    """`load_laps` for races lapnet simulated itself: the user gave none of them, so the
    not-a-race warning (short calibrated races pit often) would only be noise."""
    from lapnet.race.io import NotARaceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotARaceWarning)
        return load_laps(sim)


def simulate_calibrated(laps: pd.DataFrame, n_races: int, seed: int = 0) -> pd.DataFrame:
    """`n_races` simulated races with the simulator calibrated to `laps` (lapnet.race.calibrate)."""
    from lapnet.race.calibrate import calibrate
    from lapnet.race.simulate import simulate

    return simulate(n_races, seed, calibration=calibrate(laps))
