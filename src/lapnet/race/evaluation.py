"""Score a run on lap tables: the library behind `lapnet race eval`.

    metrics = eval_race("runs/race", ["2023_italian_R.csv"])

The metrics count only Scored laps (see `lapnet.race.clean`); `masks_record` says which pairs
each block counts and which rule the run's loss trained by. `score_predictions` scores a run's
outputs (`runs.run_outputs`) beside the baselines on the same laps: training's validation block
and predict's metrics are scored by it too. A race the run trained on, or a part of one, is found
by its laps (`race_overlaps`, the run's training_laps.json) and its scores are flagged in-sample.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lapnet.checkpoint import read_json
from lapnet.errors import CheckpointError
from lapnet.race.baselines import BASELINES, baseline_forecasts, fresh_baselines
from lapnet.race.features import FEATURES, PHASES, Sequences
from lapnet.race.inputs import check_race_length, load_laps, race_sequences, subset_sequences
from lapnet.race.metrics import (MASKS, REPORT_HORIZONS, coverage, eval_mask, forecast_report, macro_f1, phase_checks, pit_report, roc_auc,
                                 stint_trend_report, totals_report)
from lapnet.race.runs import RaceRun, load_run, phase_calls, run_outputs, short_repr, take, to_seconds

PIT_EVAL_RULE = "every lap after which the driver has another lap (in- and out-laps, neutralised laps included); label: an in-lap among the next 3 laps"
SCORED_RULE = ("Scored = timed, IsAccurate, not deleted, no SC/VSC/red (TrackStatus 4-7), not an in-, out- or lap-1, "
               "not a restart after a red flag (laps up to the first timed one), dry compound")
FRESH_UNRECORDED = ("not recorded (a run trained before fresh_weight was a setting: such runs left these origins "
                    "out, but for those trained on 2026-11-27 before race_loss(fresh_weight=0), which weighed them 1)")


def fresh_rule(fresh_weight: float | None) -> str:
    """How the forecast loss treats origins whose stint has no Scored lap yet (`race_loss`'s
    fresh_weight; None: a run that did not record it)."""
    if fresh_weight is None:
        return "origins whose stint has no Scored lap yet (out-laps, the start, restarts): " + FRESH_UNRECORDED
    if not fresh_weight:
        return ("origins whose stint has no Scored lap yet (out-laps, the start, restarts) are left out of the loss "
                "(fresh_weight 0)")
    return (f"origins whose stint has no Scored lap yet (out-laps, the start, restarts) weigh {fresh_weight:g} in the "
            "location's loss (fresh_weight; the scale's NLL counts them in full)")


def masks_record(loss: str, fresh_weight: float | None) -> dict[str, str]:
    """metrics.json's and config.json's "masks": the loss's rule (`loss`, `fresh_rule`), the
    pairs every metrics block counts (`MASKS`, as this code scores them) and the pit call's laps."""
    return {"loss": loss, "loss_fresh": fresh_rule(fresh_weight), **{f"metrics_{k}": v for k, v in MASKS.items()},
            "pit_call": PIT_EVAL_RULE}


def score_predictions(seq: Sequences, o: dict[str, np.ndarray], tagged: dict[str, np.ndarray] | None = None) -> dict:
    """Metrics of model outputs `o` (from `run_net`) on `seq`, beside the baselines on the same laps.

    Args:
        seq: the sequences with their targets and masks.
        o: the forecaster's outputs; `tagged`: the bidirectional tagger's (or None).
    """
    sec, half = to_seconds(seq, o["mean"], o["half90"])  # (N, T, K) seconds: the forecast and its 90% half-width
    forecasts = {"forecaster": sec, **baseline_forecasts(seq)}
    report = forecast_report(forecasts, seq, fresh_only=fresh_baselines(seq))
    m = seq.target_mask & seq.origin_scored[:, :, None]
    cov = {}
    for h in (1, 5, 10):
        mk = m[:, :, h - 1]
        cov[f"h{h}"] = coverage(seq.future[:, :, h - 1][mk], (sec - half)[:, :, h - 1][mk], (sec + half)[:, :, h - 1][mk])
    pm = seq.pit_mask
    tyre = seq.x[:, :, FEATURES.index("tyre_life")]
    pit = pit_report(seq.pit[pm], o["pit"][pm])
    pit["tyre_life_auc"] = roc_auc(seq.pit[pm], tyre[pm])
    # in-laps are easy negatives for a model that sees in_lap but hard ones for tyre life: score without them too
    nm = pm & (seq.x[:, :, FEATURES.index("in_lap")] == 0)
    pit["auc_without_in_laps"] = roc_auc(seq.pit[nm], o["pit"][nm])
    pit["tyre_life_auc_without_in_laps"] = roc_auc(seq.pit[nm], tyre[nm])
    pit["eval_laps"] = PIT_EVAL_RULE
    out = {"forecast": report, "interval90_coverage": cov, "pit_within_3": pit,
           "summary": _summary(report), "fresh_start": fresh_report(seq, sec, half)}
    # a stint plan adds laps up: the next 10 laps' total, from the median forecast and, when the
    # run has an ExpectedGap, from the expected (mean) laps, which is what sums should use
    totals = {"forecaster": sec, **({"expected": to_seconds(seq, o["expected"])} if "expected" in o else {}),
              **{k: v for k, v in forecasts.items() if k != "forecaster"}}
    out["next10_total"] = totals_report(totals, seq)
    # degradation: how much each lap of the next 10 slows, forecast (median and, with an ExpectedGap,
    # the mean) against the laps themselves
    out["stint_trend"] = stint_trend_report({k: v for k, v in totals.items() if k in ("forecaster", "expected")}, seq)
    probs, calls = phase_calls(o, tagged)
    if calls and seq.phase_mask.any():  # simulated laps: the truth is known
        qm = seq.phase_mask
        out["phase_macro_f1"] = {k: macro_f1(seq.phase[qm], c[qm], len(PHASES)) for k, c in calls.items()}
    elif calls:  # real laps: checked against what the timing data shows
        out["phase_checks"] = phase_checks(seq, probs, calls)
    return out


IMPLAUSIBLE = (1.0, 1.3)  # forecasts faster than the race's fastest Scored lap, or slower than 1.3 times it, are counted


def fresh_report(seq: Sequences, sec: np.ndarray, half: np.ndarray) -> dict:
    """The forecasts from laps whose stint has no Scored lap yet (out-laps, the start,
    restarts), beyond their MAE in the forecast's "fresh" block: how many such laps there are,
    how many got no forecast (no lap of the race so far showed its pace, or wet tyres), the 90%
    interval's coverage at 1 / 5 / 10 laps on the fresh block's pairs, and how many forecasts
    (every horizon) are faster than the race's fastest Scored lap or slower than 1.3 times it
    (IMPLAUSIBLE: racing laps outside that range are rare; a check, in hindsight).

    Args: seq; sec, half (N, T, K) the forecast and its 90% half-width in seconds (NaN: none).
    """
    valid = np.arange(seq.base.shape[1])[None, :] < seq.lengths[:, None]
    fresh = valid & ~np.isfinite(seq.base)  # (N, T)
    races = np.array([k[0] for k in seq.keys])
    fastest = np.full(len(races), np.nan)
    for r in set(races):
        mine = races == r
        times = seq.lap_time[mine][seq.origin_scored[mine]]
        fastest[mine] = times.min() if times.size else np.nan
    made = fresh[:, :, None] & np.isfinite(sec)  # (N, T, K)
    fast = made & (sec < IMPLAUSIBLE[0] * fastest[:, None, None])
    slow = made & (sec > IMPLAUSIBLE[1] * fastest[:, None, None])
    cov = {}
    for h in REPORT_HORIZONS:
        m = eval_mask(seq, "fresh")[:, :, h - 1] & np.isfinite(sec[:, :, h - 1])
        cov[f"h{h}"] = coverage(seq.future[:, :, h - 1][m], (sec - half)[:, :, h - 1][m], (sec + half)[:, :, h - 1][m])
    return {"origins": int(fresh.sum()), "no_forecast": int((fresh & ~np.isfinite(sec[:, :, 0])).sum()),
            "interval90_coverage": cov, "forecasts": int(made.sum()),
            "faster_than_fastest_lap": int(fast.sum()), "slower_than_1_3x_fastest": int(slow.sum()),
            "rule": "forecasts at every horizon against the race's fastest Scored lap; coverage on the fresh block's pairs"}


def _summary(report: dict) -> list[dict]:
    """One row per forecaster: MAE at horizons 1, 5, 10 on the Scored mask."""
    rows = []
    for name, per in report["scored"].items():
        rows.append({"forecaster": name, **{f"mae_h{h}": per[f"h{h}"]["mae"] for h in (1, 5, 10)},
                     **{f"rmse_h{h}": per[f"h{h}"]["rmse"] for h in (1, 5, 10)}, "n_h1": per["h1"]["n"]})
    return rows


def eval_race(run: str | Path, sources: Any, *, race_length: int | str = "file", device: str = "cpu") -> dict:
    """`lapnet race eval`: forecaster vs baselines by horizon and compound, pit-call quality.

    `race_length`: each race's length for the race-fraction features, as `build_sequences`
    takes it (default: the last lap in the table, right for finished races): "file", "estimate"
    or a whole number of laps, at least 1 (anything else: LapnetError, `check_race_length`).
    `device`: where the nets run (`load_run`). With several races: "by_race", each race's
    headline; when some but not all of them were training races (`in_sample`): "held_out", the
    headline pooled over the others alone (the pooled blocks mix their in-sample scores in).
    """
    from lapnet.race.io import SAME_LAPS_SHARE, SHARED_LAPS_WARN

    check_race_length(race_length)  # before the run and the laps are read
    r = load_run(run, device)
    laps, report = load_laps(sources)
    seq, used = race_sequences(laps, race_length)
    o, tagged = run_outputs(r, seq)
    races = sorted({k[0] for k in seq.keys})
    overlap, how = race_overlaps(r, laps)
    in_sample = _flagged(overlap)
    if in_sample:  # the numbers would measure memory, not forecasting
        said = "; ".join(f"{race}: {v['laps']} of its {v['of']} timed laps are {v['training_race']}'s "
                         f"({overlap[race]['share']:.0%} of the smaller race's)" for race, v in in_sample.items())
        warnings.warn(f"race(s) {', '.join(in_sample)} were among the run's training races ({said}): their scores "
                      "are in-sample")
    partly = {race: o for race, o in overlap.items() if not o["in_sample"] and (o["laps"] or 0) >= SHARED_LAPS_WARN}
    if partly:  # under the in-sample share, yet more laps than two different races ever share
        said = "; ".join(f"{race}: {o['laps']} of its {o['of']} timed laps are {o['training_race']}'s" for race, o in partly.items())
        warnings.warn(f"race(s) {', '.join(partly)} share laps with the run's training races ({said}; different races "
                      f"share none), under the {SAME_LAPS_SHARE:.0%} that makes them in-sample: scored as held out")
    # the pairs this eval scores (every block of today's metrics, whenever the run was trained), beside
    # the rule the run's loss was trained by (its config: the Scored rule and fresh_weight)
    masks = masks_record((r.config.get("masks") or {}).get("loss", SCORED_RULE), (r.config.get("train") or {}).get("fresh_weight"))
    metrics = {"run": str(run), "races": races, "race_length": race_length, "race_laps": used, "masks": masks,
               "in_sample": in_sample, "in_sample_check": how, "in_sample_rule": IN_SAMPLE_RULE, "in_sample_overlap": overlap,
               "baselines": list(BASELINES), **score_predictions(seq, o, tagged),
               "cleaning": report.summary()}
    pit = metrics["pit_within_3"]
    if pit["n"] and pit["base_rate"] in (0.0, 1.0):  # an AUC needs both kinds of lap
        which = f"none of these {pit['n']} laps is" if pit["base_rate"] == 0.0 else f"all {pit['n']} of these laps are"
        warnings.warn(f"{which} followed by a pit stop within 3 laps (a sprint, or stints cut short): the pit call "
                      "cannot be scored (its AUC is null)")
    if len(races) > 1:  # pooled numbers hide a race that goes badly: each race on its own too
        metrics["by_race"] = {}
        for race in races:
            idx = np.array([i for i, k in enumerate(seq.keys) if k[0] == race])
            m = score_predictions(subset_sequences(seq, idx), take(o, idx), take(tagged, idx))
            metrics["by_race"][race] = {**_race_row(m), "in_sample": race in in_sample}
    held = [race for race in races if race not in in_sample]
    if in_sample and held:  # the pooled numbers above mix memory with forecasting: the held-out races alone
        idx = np.array([i for i, k in enumerate(seq.keys) if k[0] in held])
        m = score_predictions(subset_sequences(seq, idx), take(o, idx), take(tagged, idx))
        metrics["held_out"] = {"races": held, **_race_row(m)}
    return metrics


def _race_row(m: dict) -> dict:
    """One race's headline numbers from its `score_predictions`: MAE at 1/5/10 laps for the
    forecaster and persistence (Scored laps), the next-lap pairs counted, the pit call's AUC."""
    sc = m["forecast"]["scored"]
    return {"n_h1": sc["forecaster"]["h1"]["n"],
            **{f"mae_h{h}": sc["forecaster"][f"h{h}"]["mae"] for h in (1, 5, 10)},
            **{f"persistence_h{h}": sc["persistence"][f"h{h}"]["mae"] for h in (1, 5, 10)},
            "pit_auc": m["pit_within_3"]["auc"], "tyre_life_auc": m["pit_within_3"]["tyre_life_auc"]}


IN_SAMPLE_RULE = ("in-sample when a training race and this race share at least half of the smaller race's timed laps "
                  "(and at least 3): lap number, lap time to the millisecond and the driver's lap before it, whatever "
                  "the drivers are called (io.lap_keys, io.same_laps: the rule that refuses two inputs holding the "
                  "same race); share = laps in common / the smaller race's timed laps")


def race_overlaps(r: RaceRun, laps: pd.DataFrame) -> tuple[dict[str, dict], str]:
    """Each race of `laps` against run `r`'s training races, told by their laps (`io.lap_keys`:
    lap number, lap time to the millisecond and the driver's lap before it), whatever the file,
    the race or its drivers are called (a run trained before those keys kept the driver's code in
    them, `io.LAP_KEY_BY_DRIVER`: its races are compared by those).

    Returns:
        (race -> its largest overlap: {"training_race" (None when it shares no lap), "laps" in
        common, "of": its timed laps, "training_of": that training race's, "share": laps / the
        smaller of the two, "in_sample": `io.lap_overlap`'s verdict}, how it was checked: "laps"
        with the run's training_laps.json; for a run trained before it existed, "whole races"
        (the run's race fingerprints: a part of a race is not caught, the share is 1 or None)).
    """
    from lapnet.race.io import LAP_KEY_BY_DRIVER, lap_keys, lap_overlap

    found: dict[str, dict] = {}
    stored = r.path / TRAINING_LAPS
    key, trained = read_training_laps(stored) if stored.is_file() else (None, {})
    keys = lap_keys(laps, by_driver=key == LAP_KEY_BY_DRIVER)
    if stored.is_file():
        for race, k in keys.items():
            best = (False, 0, 0.0, None, 0)  # (in-sample, laps in common, share, training race, its laps)
            for name, tk in trained.items():
                common, n, same = lap_overlap(k, tk)
                share = common / n if n else 0.0
                best = max(best, (same, common, share, name, len(tk)), key=lambda b: b[:3])
            same, common, share, name, n_train = best
            found[race] = {"training_race": name if common else None, "laps": int(common), "of": int(len(k)),
                           "training_of": int(n_train) if common else None, "share": float(share), "in_sample": bool(same)}
        return found, "laps"
    prints = {f: name for name, f in (r.config.get("race_fingerprints") or {}).items()}  # checked by load_run
    for race, f in race_fingerprints(laps).items():
        n = int(len(keys.get(race, ())))
        hit = prints.get(f)
        found[race] = {"training_race": hit, "laps": n if hit else None, "of": n, "training_of": n if hit else None,
                       "share": 1.0 if hit else None, "in_sample": hit is not None}
    return found, "whole races"


def _flagged(overlap: dict[str, dict]) -> dict[str, dict]:
    """eval's "in_sample": the in-sample races of `race_overlaps`, {"training_race", "laps", "of"}."""
    return {race: {k: o[k] for k in ("training_race", "laps", "of")} for race, o in overlap.items() if o["in_sample"]}


def in_sample_races(r: RaceRun, laps: pd.DataFrame) -> tuple[dict[str, dict], str]:
    """The races of `laps` that are a training race of run `r`, or a part of one, or of which a
    training race is a part (`io.lap_overlap`): a renamed copy, its first 30 laps, three drivers of
    it, or the whole race when the run trained on its first 20 laps.

    Returns:
        (race -> {"training_race", "laps": its timed laps found there, "of": its timed laps},
        how it was checked: "laps" or "whole races", see `race_overlaps`).
    """
    overlap, how = race_overlaps(r, laps)
    return _flagged(overlap), how


TRAINING_LAPS = "training_laps.json"  # in a run: each training race's lap keys (`io.lap_keys`), for eval's in-sample check


def training_laps(laps: pd.DataFrame) -> dict:
    """What training_laps.json holds: each training race's lap keys (`io.lap_keys`) as hex."""
    from lapnet.race.io import LAP_KEY, lap_keys

    return {"key": LAP_KEY,
            "races": {race: " ".join(f"{int(k):08x}" for k in keys) for race, keys in lap_keys(laps).items()}}


def read_training_laps(path: Path) -> tuple[str | None, dict[str, np.ndarray]]:
    """A run's training_laps.json (`training_laps`): (how its keys were made, race -> its lap keys).

    Raises:
        CheckpointError: one line naming the file and what is not as `training_laps` writes it
            (a run shared by someone else is input like any other: `[1]`, `"zz"` or a key of 40
            hex digits crashed eval deep inside).
    """
    kept = read_json(path)

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed: {what}: retrain the run (or delete the file: eval then "
                               "knows a training race only whole, by the run's race_fingerprints)")

    if not isinstance(kept, dict):
        raise bad(f"it holds {short_repr(kept)}, not an object")
    key, races = kept.get("key"), kept.get("races")
    if key is not None and not isinstance(key, str):
        raise bad(f"'key' is {short_repr(key)}, not a text")
    if races is not None and not isinstance(races, dict):
        raise bad(f"'races' is {short_repr(races)}, not an object")
    trained = {}
    for race, text in (races or {}).items():
        if not isinstance(text, str) or not _HEX_KEYS.fullmatch(text):
            raise bad(f"the laps of race {short_repr(race)} are not lap keys (8 hex digits each, separated by spaces)")
        trained[race] = np.unique(np.array([int(h, 16) for h in text.split()], dtype=np.uint32))
    return key, trained


_HEX_KEYS = re.compile(r"\s*(?:[0-9a-fA-F]{1,8}(?:\s+|$))*")  # `training_laps`' text: 32-bit keys in hex


def race_fingerprints(laps: pd.DataFrame) -> dict[str, str]:
    """Race -> a short hash of its drivers' lap times: the same race under another file name
    (or a simulated race of another seed under the same name) is told apart by its laps."""
    import hashlib

    out = {}
    for race, g in laps.groupby("Race", sort=True):
        key = g.sort_values(["Driver", "LapNumber"])[["Driver", "LapNumber", "LapTime"]]
        text = key.assign(LapTime=key["LapTime"].round(3)).to_csv(index=False)
        out[str(race)] = hashlib.sha1(text.encode()).hexdigest()[:16]
    return out
