"""How well `race live` knows the race's length when it is not told (--race-laps not given).

A lap's features read the race's length (race fraction, laps left, a tyre's life against the
race). A finished race's file says it (its last lap); a live feed does not. lapnet then
estimates it lap by lap as RACE_SECONDS / ref (`lapnet.race.features.estimate_race_laps`):
a Grand Prix is about 305 km, which takes about 88 minutes at green-flag pace.

    .venv/bin/python benchmarks/race_length.py              # the estimate, race by race (~20 s)
    .venv/bin/python benchmarks/race_length.py --impact     # + what it is worth: 5-fold eval (~6 min)

Part 1, for each of the 15 real races: its length, the reference lap once it is fixed and
after the first Scored lap (what the estimate has on lap 2), the estimate with RACE_SECONDS
and with a constant fitted on the other 14 races (the honest error for a race never seen),
against a fixed 60 laps and the median length of the other races.

Part 2 (--impact): the forecaster and pit call of race_real.py's 5 folds (races sorted, race i
held out in fold i % 5; trained as `lapnet race train --phase-sim 0`, the phase taggers play
no part here), each evaluated on its held-out races three ways: the length from the file (as
`race eval` does), estimated lap by lap (as `race live` does without --race-laps), and a
fixed 60 laps (what `race live` assumed before). MAE pooled over the folds' laps; pit AUC
pooled over the folds' laps too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _folds import outer_folds  # benchmarks/_folds.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LAPNET_F1_DATA", REPO.parent / "shared" / "data" / "f1"))
FOLDS = 5


def race_refs(paths: list[Path]) -> list[dict]:
    """Per race: its length, its reference lap after the first Scored lap and once fixed."""
    from lapnet.race.features import RaceFeaturizer, race_laps, session_order
    from lapnet.race.inputs import load_laps

    rows = []
    for p in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            laps, _ = load_laps(p)
        fz = RaceFeaturizer(None)
        first = None
        records = laps.to_dict("index")
        for i in session_order(laps):
            fz.step(records[i])
            if first is None and fz.ref_pool:
                first = (fz.ref, int(records[i]["LapNumber"]))
        rows.append({"race": p.stem.replace("2023_", "").replace("_R", ""), "laps": race_laps(laps),
                     "ref_first": first[0], "lap_first": first[1], "ref": fz.ref})
    return rows


def part1(rows: list[dict]) -> None:
    from lapnet.race.features import DEFAULT_RACE_LAPS, RACE_SECONDS, estimate_race_laps

    n = np.array([r["laps"] for r in rows], float)
    ref = np.array([r["ref"] for r in rows])
    seconds = n * ref
    print(f"RACE_SECONDS in lapnet: {RACE_SECONDS:.0f} s; median of laps x reference lap over these races: "
          f"{np.median(seconds):.0f} s ({np.median(seconds) / 60:.1f} min)")
    print("| race | laps | minutes | ref after 1st Scored lap (lap) | estimate then | ref fixed | estimate | "
          "estimate, race left out | error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    errs = {"shipped constant": [], "race left out": [], "after the first Scored lap, left out": [],
            f"fixed {DEFAULT_RACE_LAPS} laps": [], "median length of the other races": []}
    for i, r in enumerate(rows):
        others = np.arange(len(rows)) != i
        c_loo = float(np.median(seconds[others]))
        est, loo = estimate_race_laps(r["ref"]), max(1, round(c_loo / r["ref"]))
        loo_first = max(1, round(c_loo / r["ref_first"]))
        errs["shipped constant"].append(est / r["laps"] - 1)
        errs["race left out"].append(loo / r["laps"] - 1)
        errs["after the first Scored lap, left out"].append(loo_first / r["laps"] - 1)
        errs[f"fixed {DEFAULT_RACE_LAPS} laps"].append(DEFAULT_RACE_LAPS / r["laps"] - 1)
        errs["median length of the other races"].append(float(np.median(n[others])) / r["laps"] - 1)
        print(f"| {r['race']} | {r['laps']} | {seconds[i] / 60:.1f} | {r['ref_first']:.1f} ({r['lap_first']}) | "
              f"{estimate_race_laps(r['ref_first'])} | {r['ref']:.1f} | {est} | {loo} | {(loo / r['laps'] - 1) * 100:+.1f}% |")
    print()
    for name, e in errs.items():
        a = np.abs(np.array(e))
        laps_off = float(np.mean(a * n))
        print(f"{name:40s} mean |error| {a.mean() * 100:5.1f}% ({laps_off:.1f} laps), worst {a.max() * 100:5.1f}%")


def part2(paths: list[Path], runs: Path, cfg_args: dict) -> None:
    import torch

    from lapnet.race.features import DEFAULT_RACE_LAPS, build_sequences
    from lapnet.race.metrics import roc_auc
    from lapnet.race.evaluation import score_predictions
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import load_run, run_outputs
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    torch.set_num_threads(1)
    ways = {"file": "file", "estimate": "estimate", f"fixed {DEFAULT_RACE_LAPS}": DEFAULT_RACE_LAPS}
    sums = {w: {h: [0.0, 0] for h in (1, 5, 10)} for w in ways}
    pits = {w: ([], []) for w in ways}
    for f, held in enumerate(outer_folds(paths, FOLDS)):
        out = runs / f"fold{f}"
        if not (out / "model.safetensors").is_file():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                train_race([p for p in paths if p not in held], out, RaceTrainConfig(phase_sim=0, progress=False, **cfg_args))
            print(f"fold {f}: trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        run = load_run(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            laps, _ = load_laps(held)
        for w, length in ways.items():
            seq = build_sequences(laps, length)
            o, _ = run_outputs(run, seq)
            m = score_predictions(seq, o)
            for h in (1, 5, 10):
                cell = m["forecast"]["scored"]["forecaster"][f"h{h}"]
                sums[w][h][0] += cell["mae"] * cell["n"]
                sums[w][h][1] += cell["n"]
            pits[w][0].append(seq.pit[seq.pit_mask])
            pits[w][1].append(o["pit"][seq.pit_mask])
        print(f"fold {f} ({', '.join(p.stem for p in held)}) evaluated", file=sys.stderr)
    print("\n| race length | MAE 1 lap (s) | 5 laps | 10 laps | pit AUC |")
    print("|---|---:|---:|---:|---:|")
    for w in ways:
        mae = [sums[w][h][0] / sums[w][h][1] for h in (1, 5, 10)]
        auc = roc_auc(np.concatenate(pits[w][0]), np.concatenate(pits[w][1]))
        print(f"| {w} | {mae[0]:.4f} | {mae[1]:.4f} | {mae[2]:.4f} | {auc:.4f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impact", action="store_true", help="also train the 5 folds and evaluate the three ways")
    ap.add_argument("--runs", type=Path, default=None, help="keep the fold runs here (reused when present)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: race train's)")
    ap.add_argument("--members", type=int, default=None, help="nets per run (default: race train's)")
    ap.add_argument("--hidden", type=int, default=None, help="hidden units (default: race train's)")
    args = ap.parse_args(argv)
    cfg_args = {k: v for k, v in (("epochs", args.epochs), ("members", args.members), ("hidden_size", args.hidden))
                if v is not None}
    paths = sorted(DATA.glob("*.csv"))
    if not paths:
        print(f"skipped: real F1 data not found at {DATA} (set LAPNET_F1_DATA)")
        return 0  # as race_real.py and pit_explore.py: `make bench` goes on without the data
    part1(race_refs(paths))
    if args.impact:
        if args.runs is not None:
            args.runs.mkdir(parents=True, exist_ok=True)
            part2(paths, args.runs, cfg_args)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                part2(paths, Path(tmp), cfg_args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
