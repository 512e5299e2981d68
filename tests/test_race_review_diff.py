"""Fixes from a review of the day's race changes: `race eval` of a race without Scored pairs;
the in-sample check in both directions (io's rule: a share of the smaller race's laps) and its
overlap in metrics.json; race_loss's origins without a Scored lap in their stint (has_base
required, fresh_weight 0 and 1 by hand); RaceTrainConfig.fresh_weight reaching the loss; eval's
masks record; summary_table(wide=); a stop the Stint column does not show still ends the stint."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.race.training import train_race
from lapnet.race.training_config import RaceTrainConfig

TINY = dict(hidden_size=8, epochs=1, members=1, phase_sim=0, progress=False)


@pytest.fixture(scope="module")
def part_run(tmp_path_factory, sim_races):
    """A tiny run trained on the first 20 laps of race 0 (first20.csv) and the whole of race 1."""
    _, parts = sim_races
    d = tmp_path_factory.mktemp("review_diff")
    df = pd.read_csv(parts[0], dtype={"TrackStatus": str})
    first20 = d / "first20.csv"
    df[df["LapNumber"] <= 20].to_csv(first20, index=False)
    with warnings.catch_warnings():  # first20 may have no stop yet: the sprint warning
        warnings.simplefilter("ignore")
        train_race([first20, parts[1]], d / "run", RaceTrainConfig(**TINY))
    return d / "run", parts, first20


# ---------------------------------------------------------------------------------------
# 1. a race without Scored pairs


def test_eval_of_a_race_without_scored_pairs(run_cli, part_run, tmp_path):
    """Every lap of one race behind the safety car: eval exits 0 (it raised KeyError
    'forecaster'), that race's row has n_h1 0 and no MAE, the other race is scored."""
    from lapnet.race.baselines import BASELINES, FRESH_BASELINES
    from lapnet.race.simulate import simulate_to_file

    run, _, _ = part_run
    sim = tmp_path / "s.csv"
    simulate_to_file(sim, 2, seed=3)
    df = pd.read_csv(sim, dtype={"TrackStatus": str})
    neutral, green = sorted(df["Race"].unique())
    df.loc[df["Race"] == neutral, "TrackStatus"] = "4"
    nosc = tmp_path / "nosc.csv"
    df.to_csv(nosc, index=False)
    code, out, err = run_cli("race", "eval", run, nosc, "--json", "--out", tmp_path / "ev1")
    assert code == 0, err
    assert "Traceback" not in err and "internal error" not in err
    m = json.loads(out)
    row = m["by_race"][neutral]
    assert row["n_h1"] == 0 and row["in_sample"] is False
    assert [row[f"mae_h{h}"] for h in (1, 5, 10)] == [None] * 3
    assert [row[f"persistence_h{h}"] for h in (1, 5, 10)] == [None] * 3
    assert m["by_race"][green]["n_h1"] > 100 and m["by_race"][green]["mae_h1"] > 0
    assert set(m["forecast"]["scored"]) == {"forecaster", *BASELINES}
    # no lap-based baseline has a lap to start from there: the reference lap and the field's pace do
    assert set(m["forecast"]["fresh"]) == {"forecaster", *FRESH_BASELINES}
    table = next(ln for ln in err.splitlines() if ln.startswith("│") and f" {neutral} " in ln)
    assert table.split("│")[2].strip() == "0" and "-/-" in table


# ---------------------------------------------------------------------------------------
# 4. the in-sample check: a share of the smaller race's laps, as io refuses two inputs


def test_a_run_trained_on_part_of_a_race_knows_the_whole_race(run_cli, part_run, tmp_path):
    """Trained on laps 1-20 of a race, evaluated on the whole of it: in-sample (it was not: the
    20 laps are under half of the whole race's). io refuses the same two tables as one race
    given twice: one rule. metrics.json records each race's largest overlap and its share."""
    from lapnet.race.io import read_many

    run, parts, first20 = part_run
    with pytest.raises(LapnetError, match="hold the same race's laps"):
        read_many([first20, parts[0]])
    code, out, err = run_cli("race", "eval", run, parts[0], parts[2], "--json", "--quiet", "--out", tmp_path / "ev")
    assert code == 0, err
    m = json.loads(out)
    df = pd.read_csv(parts[0])
    n20, n = int(df.loc[df["LapNumber"] <= 20, "LapTime"].notna().sum()), int(df["LapTime"].notna().sum())
    assert n20 < n / 2  # the eval race's own share would not flag it
    assert m["in_sample"] == {parts[0].stem: {"training_race": "first20", "laps": n20, "of": n}}
    assert f"race(s) {parts[0].stem} were among the run's training races" in err
    over = m["in_sample_overlap"]
    assert over[parts[0].stem] == {"training_race": "first20", "laps": n20, "of": n, "training_of": n20, "share": 1.0,
                                   "in_sample": True}
    other = over[parts[2].stem]
    assert other["in_sample"] is False and other["share"] < 0.5
    assert "smaller race" in m["in_sample_rule"]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["in_sample_overlap"] == over


def test_in_sample_races_by_hand(sim_races, tmp_path):
    """The library call: both directions, and another race not at all."""
    from lapnet.race.evaluation import in_sample_races, training_laps
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import RaceRun

    _, parts = sim_races
    whole, _ = load_laps(parts[0])
    part = whole[whole["LapNumber"] <= 20]
    for trained, evaluated in ((part, whole), (whole, part)):
        (tmp_path / "training_laps.json").write_text(json.dumps(training_laps(trained)))
        found, how = in_sample_races(RaceRun(None, {}, path=tmp_path), evaluated)
        assert how == "laps" and set(found) == {parts[0].stem}
        assert found[parts[0].stem]["laps"] == int(np.isfinite(part["LapTime"]).sum())
    other, _ = load_laps(parts[2])
    assert in_sample_races(RaceRun(None, {}, path=tmp_path), other)[0] == {}


# ---------------------------------------------------------------------------------------
# 5, 15. race_loss and the origins without a Scored lap in their stint


def _out_batch(seed=0, B=3, T=6, K=10):
    g = torch.Generator().manual_seed(seed)
    out = {"mean": torch.randn(B, T, K, generator=g, dtype=torch.float64, requires_grad=True),
           "log_sigma": (0.3 * torch.randn(B, T, K, generator=g, dtype=torch.float64)).requires_grad_()}
    has_base = torch.rand(B, T, generator=g) < 0.6
    has_base[0, 0], has_base[0, 1] = False, True  # both kinds of origin
    batch = {"target": torch.randn(B, T, K, generator=g, dtype=torch.float64),
             "target_mask": torch.rand(B, T, K, generator=g) < 0.7, "has_base": has_base,
             "pit_mask": torch.zeros(B, T, dtype=torch.bool), "phase_mask": torch.zeros(B, T, dtype=torch.bool)}
    return out, batch


def _by_hand(out, batch, fresh_weight, scale_weight=0.1):
    """The Laplace head's L1 + scale loss lap by lap: origins without a base weigh fresh_weight
    in the location's L1 (left out, scale term too, at 0), horizon k weighs 1/k^2."""
    B, T, K = batch["target"].shape
    w_k = [1.0 / (k + 1) ** 2 for k in range(K)]
    w_k = [w / (sum(w_k) / K) for w in w_k]
    num = den = scale = 0.0
    n = 0
    for b in range(B):
        for t in range(T):
            based = bool(batch["has_base"][b, t])
            if not based and fresh_weight == 0:
                continue
            for k in range(K):
                if not batch["target_mask"][b, t, k]:
                    continue
                y, mu, ls = (float(v[b, t, k].detach()) for v in (batch["target"], out["mean"], out["log_sigma"]))
                w = w_k[k] * (1.0 if based else fresh_weight)
                num += w * abs(y - mu)
                den += w
                scale += ls + abs(y - mu) / math.exp(ls)
                n += 1
    return num / den + scale_weight * scale / n


@pytest.mark.parametrize("fresh_weight", [0.0, 0.1, 1.0])
def test_race_loss_fresh_weight_by_hand(fresh_weight):
    from lapnet.race.models import race_loss

    out, batch = _out_batch(seed=4)
    assert (~batch["has_base"][:, :, None] & batch["target_mask"]).any()  # fresh targets exist
    got = race_loss(out, batch, head="laplace", pit_weight=0.0, phase_weight=0.0, fresh_weight=fresh_weight)
    assert got.item() == pytest.approx(_by_hand(out, batch, fresh_weight), rel=1e-12)
    if fresh_weight == 0.0:  # exactly the loss of the hand-masked batch in which every origin has a base
        masked = {**batch, "target_mask": batch["target_mask"] & batch["has_base"][:, :, None],
                  "has_base": torch.ones_like(batch["has_base"])}
        assert got.item() == race_loss(out, masked, head="laplace", pit_weight=0.0, phase_weight=0.0).item()
    if fresh_weight == 1.0:  # every origin alike: the loss of the batch with every origin based
        alike = {**batch, "has_base": torch.ones_like(batch["has_base"])}
        assert got.item() == pytest.approx(race_loss(out, alike, head="laplace", pit_weight=0.0, phase_weight=0.0,
                                                     fresh_weight=0.0).item(), rel=1e-12)


def test_race_loss_needs_has_base_for_the_forecast():
    """A batch without has_base would train the fresh origins at full weight, whatever
    fresh_weight says: refused by name. The taggers' loss (forecast=False) does not need it."""
    from lapnet.race.models import race_loss

    out, batch = _out_batch(seed=1)
    del batch["has_base"]
    with pytest.raises(LapnetError, match="has_base"):
        race_loss(out, batch, head="laplace")
    phase = {**batch, "phase": torch.zeros(3, 6, dtype=torch.int64), "phase_mask": torch.ones(3, 6, dtype=torch.bool)}
    out["phase"] = torch.zeros(3, 6, 3, dtype=torch.float64)
    assert race_loss(out, phase, head="laplace", forecast=False).item() == pytest.approx(math.log(3.0))


# ---------------------------------------------------------------------------------------
# 6. RaceTrainConfig.fresh_weight reaches the loss and the run's record


def test_fresh_weight_reaches_the_loss_and_config(sim_races, tmp_path, monkeypatch):
    import lapnet.race.training as training

    _, parts = sim_races
    seen = []
    real = training.race_loss

    def spy(out, batch, **kw):
        seen.append((kw["forecast"], kw.get("fresh_weight")))
        return real(out, batch, **kw)

    monkeypatch.setattr(training, "race_loss", spy)
    with pytest.raises(LapnetError, match="fresh_weight must be a number >= 0, got -1"):
        RaceTrainConfig(fresh_weight=-1).validate()
    train_race(parts[:1], tmp_path / "run", RaceTrainConfig(**{**TINY, "fresh_weight": 0.25}))
    assert seen and {fw for _, fw in seen} == {0.25}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["fresh_weight"] == 0.25
    assert "weigh 0.25" in config["masks"]["loss_fresh"]
    assert training._loss_kwargs(RaceTrainConfig(), "laplace", 0.0, True)["fresh_weight"] == 0.0


# ---------------------------------------------------------------------------------------
# 17. eval's masks: what this eval scored, and the run's loss rule


def test_eval_masks_describe_this_eval_for_an_older_run(run_cli, part_run, tmp_path):
    """A run whose config.json predates the "fresh" block (and fresh_weight): eval's masks say
    what eval scored now (every metrics.MASKS block) and that the loss's rule was not recorded."""
    from lapnet.race.metrics import MASKS
    from lapnet.race.evaluation import PIT_EVAL_RULE, SCORED_RULE

    run, parts, _ = part_run
    code, out, err = run_cli("race", "eval", run, parts[2], "--json", "--quiet", "--out", tmp_path / "new")
    assert code == 0, err
    masks = json.loads(out)["masks"]
    assert masks == {"loss": SCORED_RULE, "loss_fresh": masks["loss_fresh"], "pit_call": PIT_EVAL_RULE,
                     **{f"metrics_{k}": v for k, v in MASKS.items()}}
    assert "left out" in masks["loss_fresh"]
    old = tmp_path / "old"
    shutil.copytree(run, old)
    config = json.loads((old / "config.json").read_text())
    del config["masks"]["metrics_fresh"], config["masks"]["loss_fresh"], config["train"]["fresh_weight"]
    (old / "config.json").write_text(json.dumps(config))
    code, out, err = run_cli("race", "eval", old, parts[2], "--json", "--quiet", "--out", tmp_path / "ev_old")
    assert code == 0, err
    m = json.loads(out)
    assert m["masks"]["metrics_fresh"] == MASKS["fresh"] and "fresh" in m["forecast"]
    assert "not recorded" in m["masks"]["loss_fresh"]


# ---------------------------------------------------------------------------------------
# 13. summary_table(wide=True) replaces cli.race._wide_table


def test_summary_table_wide_prints_every_column_whole(capsys):
    from lapnet.cli import race as race_cli
    from lapnet.cli.common import summary_table

    assert not hasattr(race_cli, "_wide_table")
    row = {f"column_{i}": 0.123456 for i in range(12)}
    summary_table("wide", [{**row, "none": None}], wide=True)
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "column_0" in ln)
    assert all(f"column_{i}" in line for i in range(12)) and "…" not in err  # whole, one line, not squeezed into 80
    assert err.count("0.1235") == 12 and "None" not in err and " - " in err
    summary_table("narrow", [{**row, "none": None}])  # as before: squeezed, None printed as such
    assert "…" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# 15. nothing crosses a stop, even one the Stint column does not show


def test_the_out_lap_ends_the_stint_without_a_stint_change():
    """test_race_model_features.py's `not seq.target_mask[c, 4, 1:].any()` holds there because
    laps 7-9 are another Stint anyway; here the Stint column stays 1 across the stop and the
    out-lap alone must end the stint: no target, no 'future' lap crosses it."""
    from lapnet.race.clean import clean_laps
    from lapnet.race.features import build_sequences
    from lapnet.race.io import read_laps

    rows, t = [], 3000.0
    for n in range(1, 10):
        lt = 90.0 + 0.05 * n + (20.0 if n == 6 else 15.0 if n == 7 else 0.0)
        t += lt
        rows.append({"Driver": "CCC", "LapNumber": float(n), "LapTime": lt, "Time": t, "Stint": 1.0,
                     "Compound": "MEDIUM", "TyreLife": float(n), "TrackStatus": "1", "IsAccurate": True,
                     "Position": 1.0, "PitInTime": t - 15 if n == 6 else np.nan,
                     "PitOutTime": t - lt + 10 if n == 7 else np.nan})
    laps, _ = clean_laps(read_laps(pd.DataFrame(rows), race="one"))
    seq = build_sequences(laps)
    assert seq.stint_id[0, 6] == seq.stint_id[0, 4] + 1  # the out-lap starts a stint
    assert seq.target_mask[0, 3, 0] and seq.target_mask[0, 7, 0]  # within each stint, targets exist
    assert not seq.target_mask[0, 4, 1:].any() and not np.isfinite(seq.future[0, 4, 1:]).any()
    for j in range(6):  # no origin of the first stint reaches past the in-lap (lap 6)
        k_max = 6 - (j + 1)
        assert not np.isfinite(seq.future[0, j, k_max:]).any()
