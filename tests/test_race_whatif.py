"""Pit now: the laps on new tyres after a stop called at lap t, against staying out (lapnet.race.whatif)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES, HORIZONS, build_sequences
from lapnet.race.whatif import STOP_LAPS, PitNow, pit_now, pool_stop_errors, stop_check, stop_errors, stop_vector

IX = {n: j for j, n in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """A tiny run with a FreshStart (kept whatever its check says) trained on 4 simulated races,
    and one more simulated race's lap table (its own seed) to ask it about."""
    from lapnet.race.pipeline import RaceTrainConfig, train_race
    from lapnet.race.simulate import simulate

    d = tmp_path_factory.mktemp("whatif")
    cfg = RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False, fresh_start_check=False)
    train_race(simulate(4, seed=3), d / "run", cfg)
    laps = simulate(1, seed=11).drop(columns=["Race"])
    laps.to_csv(d / "race.csv", index=False)
    return d / "run", d / "race.csv"


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A tiny run trained without a FreshStart."""
    from lapnet.race.pipeline import RaceTrainConfig, train_race
    from lapnet.race.simulate import simulate

    out = tmp_path_factory.mktemp("plain") / "run"
    train_race(simulate(2, seed=5), out, RaceTrainConfig(hidden_size=4, epochs=1, members=1, progress=False, tagger=False,
                                                         fresh_start=False))
    return out


@pytest.fixture(scope="module")
def asked(sim_run):
    """(run, seq, stay-out forecast, the what-if) on the held-out simulated race."""
    from lapnet.race.pipeline import load_laps, load_run, run_net, to_seconds

    run = load_run(sim_run[0])
    seq = build_sequences(load_laps(sim_run[1])[0])
    stay = to_seconds(seq, run_net(run.model, seq)["mean"])
    return run, seq, stay, pit_now(run.model, seq, stay)


def _a_lap(seq, compound: str):
    """(i, t) of a lap on `compound` in the driver's first stint, 15 laps into the race or more."""
    c = ("SOFT", "MEDIUM", "HARD").index(compound)
    for i in range(len(seq.lengths)):
        for t in range(15, int(seq.lengths[i]) - 5):
            x = seq.x[i, t]
            if seq.compound[i, t] == c and x[IX["stint"]] == 0 and x[IX["in_lap"]] == 0 and x[IX["two_compounds"]] == 0:
                return i, t
    raise AssertionError(f"no first-stint {compound} lap")


def test_stop_vector_moves_the_lap_two_laps_on_into_a_new_stint(asked):
    _, seq, _, _ = asked
    i, t = _a_lap(seq, "MEDIUM")
    x, n = seq.x[i, t], seq.lap_number[i, t]
    v = stop_vector(x, n, "HARD")
    assert v[IX["out_lap"]] == 1 and v[IX["in_lap"]] == 0 and v[IX["has_base"]] == 0 and v[IX["n_scored"]] == 0
    assert [v[IX[f"compound_{c}"]] for c in ("soft", "medium", "hard", "intermediate", "wet", "unknown")] == [0, 0, 1, 0, 0, 0]
    assert v[IX["tyre_life"]] == pytest.approx(1 / 30) and v[IX["laps_in_stint"]] == pytest.approx(1 / 30)
    assert v[IX["fresh_tyre"]] == 1 and v[IX["stint"]] == pytest.approx(x[IX["stint"]] + 1 / 3)
    assert v[IX["lap_frac"]] == pytest.approx(x[IX["lap_frac"]] * (n + 2) / n)
    assert v[IX["laps_left"]] == pytest.approx(x[IX["laps_left"]] - 2 / 30)
    assert v[IX["pits_done"]] == pytest.approx(x[IX["pits_done"]] + 1 / 3)
    assert v[IX["two_compounds"]] == 1  # medium, then hard: the rule is met
    assert stop_vector(x, n, "MEDIUM")[IX["two_compounds"]] == 0  # medium again: not yet
    for kept in ("field_pace", "field_pace_any", "has_field_pace_any", "field_tyre", "own_pace", "has_own_pace", "pit_loss",
                 "position", "green_seen", "safety_car"):
        assert v[IX[kept]] == x[IX[kept]], kept  # what the pit wall knows now stays
    assert x[IX["out_lap"]] == 0 and x[IX["compound_medium"]] == 1  # the input is not touched
    with pytest.raises(LapnetError, match="a stop onto 'WET'.*SOFT, MEDIUM, HARD"):
        stop_vector(x, n, "WET")


def test_pit_now_numbers_follow_their_definitions(asked):
    run, seq, stay, what = asked
    ref = seq.ref
    assert what.compounds == ("SOFT", "MEDIUM", "HARD") and what.new.shape == (3, *stay.shape)
    p = what.possible
    valid = np.arange(seq.x.shape[1])[None] < seq.lengths[:, None]
    assert p.sum() > 0.7 * seq.lengths.sum()
    for c, name in enumerate(what.compounds):
        with torch.no_grad():
            pct = run.model.fresh(torch.from_numpy(stop_vector(seq.x, seq.lap_number, name))).double().numpy()
        np.testing.assert_allclose(what.new[c][p], (ref[..., None] * (1 + pct / 100))[p], rtol=1e-12)
        assert np.isnan(what.new[c][~p]).all()
    np.testing.assert_allclose(what.in_out[p], (stay[..., 0] + stay[..., 1] + seq.stop_loss)[p])
    assert np.isfinite(seq.stop_loss[valid]).all() and (seq.stop_loss[valid] > 0.09 * ref[valid]).all()
    # no what-if on an in-lap (the stop is under way) nor with fewer than 3 laps to the flag
    assert not p[valid & (seq.x[..., IX["in_lap"]] > 0)].any()
    last = seq.lengths - 1
    assert not p[np.arange(len(last)), last].any() and not p[np.arange(len(last)), last - 2].any()
    s = what.summary()
    K = HORIZONS
    stop_plan = what.in_out[None] + what.new[..., : K - STOP_LAPS].sum(-1)  # laps t+1 .. t+K if he stops now
    np.testing.assert_allclose(s["delta"][:, p], (stop_plan - stay.sum(-1)[None])[:, p], rtol=1e-9)
    np.testing.assert_allclose(s["stop_cost"][:, p], (what.in_out - stay[..., 0] - stay[..., 1])[None].repeat(3, 0)[:, p])
    gain = s["gain_per_lap"]
    pos = p[None] & (gain > 0)
    np.testing.assert_allclose(s["payback_laps"][pos], (s["stop_cost"] / gain)[pos])
    assert np.isnan(s["payback_laps"][p[None] & (gain <= 0)]).all()
    # seconds, not percent: a lap on new tyres is within 10% of the race's reference lap
    assert np.nanmax(np.abs(what.new / ref[None, ..., None] - 1)) < 0.1


def test_pit_now_refuses_a_run_without_a_fresh_start_and_wet_compounds(asked):
    run, seq, stay, _ = asked
    with pytest.raises(LapnetError, match="no FreshStart.*retrain"):
        pit_now(run.model.forecaster, seq, stay)
    with pytest.raises(LapnetError, match="INTERMEDIATE: choose from SOFT, MEDIUM, HARD"):
        pit_now(run.model, seq, stay, ("SOFT", "INTERMEDIATE"))


def test_stop_errors_pair_every_real_stop_with_its_laps(asked):
    """A what-if that is the laps run plus 0.5 s, and a stop forecast 1 s long, score exactly
    that on every stop the lap table holds (counted from its InLap / OutLap columns)."""
    _, seq, _, what = asked
    fake_new = np.full_like(what.new, np.nan)
    in_out = np.full_like(what.in_out, np.nan)
    stops = []
    for i in range(len(seq.lengths)):
        for t in range(int(seq.lengths[i]) - 2):
            x1, x2 = seq.x[i, t + 1], seq.x[i, t + 2]
            if x1[IX["in_lap"]] and x2[IX["out_lap"]] and what.possible[i, t]:
                stops.append((i, t))
                c = int(seq.compound[i, t + 2])
                fake_new[c, i, t] = seq.future[i, t + 2] + 0.5
                in_out[i, t] = seq.lap_time[i, t + 1] + seq.lap_time[i, t + 2] + 1.0
    assert len(stops) >= 20
    fake = PitNow(what.compounds, what.stay, fake_new, what.new_half90, in_out, what.possible)
    errors = stop_errors(seq, fake, np.where(np.isfinite(seq.future), seq.future, 0.0))
    assert errors["stops"] == len(stops)
    res = stop_check(pool_stop_errors([errors, errors]))  # two folds pool as one
    assert res["stops"] == 2 * len(stops)
    h1 = res["laps"]["what_if_at_lap_t"]["h1"]
    assert h1["mae"] == pytest.approx(0.5) and h1["bias"] == pytest.approx(0.5) and h1["n"] > len(stops)
    assert res["laps"]["at_the_out_lap"]["h1"]["mae"] == pytest.approx(0.0)
    assert res["stop"]["bias"] == pytest.approx(1.0) and res["stop"]["n"] > 0
    assert sum(r["h1"]["n"] for r in res["what_if_by_compound"].values()) == h1["n"]


# ------------------------------------------------------------------------------------ the CLI


def _lap_for(path, run) -> tuple[str, int]:
    """A driver and a lap of the race file where a what-if can be made."""
    from lapnet.race.pipeline import load_laps, load_run, run_net, to_seconds

    r = load_run(run)
    seq = build_sequences(load_laps(path)[0])
    what = pit_now(r.model, seq, to_seconds(seq, run_net(r.model, seq)["mean"]))
    i, t = np.argwhere(what.possible)[len(np.argwhere(what.possible)) // 2]
    return seq.keys[i][1], int(seq.lap_number[i, t])


def test_cli_pit_now_json_and_table(sim_run, run_cli):
    run, race = sim_run
    drv, lap = _lap_for(race, run)
    code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv.lower(), "--lap", lap, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["driver"] == drv and res["lap"] == lap and len(res["laps"]) == HORIZONS + STOP_LAPS
    rows = res["laps"]
    assert [r["LapNumber"] for r in rows] == list(range(lap + 1, lap + HORIZONS + STOP_LAPS + 1))
    assert [rows[0]["HARD"], rows[1]["HARD"]] == ["in-lap", "out-lap"]
    assert rows[-1]["stay_out"] is None and isinstance(rows[-1]["SOFT"], float)  # the nets forecast 10 laps, not 12
    for p in res["compounds"]:
        name = p["compound"]
        stop_plan = res["in_out_s"] + sum(r[name] for r in rows[STOP_LAPS:HORIZONS])
        assert p["delta"] == pytest.approx(stop_plan - sum(r["stay_out"] for r in rows[:HORIZONS]), abs=1e-6)
        assert p["first_lap"] == rows[STOP_LAPS][name]
    code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv, "--lap", lap, "--compound", "hard,soft")
    assert code == 0, err
    assert f"boxes on lap {lap + 1}, called after lap {lap}" in err and "HARD" in err and "MEDIUM" not in err and "payback" in err


@pytest.mark.parametrize("args, says", [
    (("--compound", "wet"), "--compound 'wet': choose from SOFT, MEDIUM, HARD"),
    (("--lap", "0"), "--lap must be at least 1"),
    (("--lap", "400"), "has no lap 400 in the table"),
    ((), "no pit-now forecast for .* at lap .*the driver's last lap in the table.*laps to the flag"),
])
def test_cli_pit_now_bad_input(sim_run, run_cli, args, says):
    run, race = sim_run
    drv, lap = _lap_for(race, run)
    if "--lap" not in args and "--compound" in args:
        args = (*args, "--lap", str(lap))
    code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv, *args)
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    import re

    assert re.search(says, lines[0]), lines[0]


def test_cli_pit_now_refuses_two_drivers_several_races_and_a_run_without_fresh_start(sim_run, plain_run, run_cli, tmp_path):
    run, race = sim_run
    laps = pd.read_csv(race)
    a, b = sorted(laps["Driver"].unique())[:2]
    code, _, err = run_cli("race", "pit-now", run, race, "--driver", f"{a},{b}", "--lap", "10")
    assert code == 2 and "give one driver, not 2" in err
    two = pd.concat([laps.assign(Race="r1"), laps.assign(Race="r2")])
    two.to_csv(tmp_path / "two.csv", index=False)
    code, _, err = run_cli("race", "pit-now", run, tmp_path / "two.csv", "--driver", a, "--lap", "10")
    assert code == 2 and "holds 2 races: give one race's laps" in err
    code, _, err = run_cli("race", "pit-now", plain_run, race, "--driver", a, "--lap", "10")
    assert code == 2 and "no FreshStart" in err and len(err.strip().splitlines()) == 1


def test_live_pit_now_equals_the_batch_what_if(sim_run, run_cli, asked):
    """`race live --pit-now` carries each driver's state one lap at a time and gives, at every lap,
    the what-if `pit_now` gives on the whole race (null where that makes none)."""
    run, race = sim_run
    _, seq, _, what = asked
    code, out, err = run_cli("race", "live", run, race, "--pit-now")
    assert code == 0, err
    recs = {(r["driver"], r["lap"]): r["pit_now"] for r in map(json.loads, out.splitlines())}
    s = what.summary()
    checked = nulls = 0
    for i, (_, drv) in enumerate(seq.keys):
        for t in range(int(seq.lengths[i])):
            got = recs[(drv, int(seq.lap_number[i, t]))]
            if not what.possible[i, t]:
                assert got is None
                nulls += 1
                continue
            assert got["in_out"] == pytest.approx(what.in_out[i, t], abs=2e-3)
            for c, name in enumerate(what.compounds):
                np.testing.assert_allclose(got[name]["laps"], what.new[c, i, t], atol=2e-3)
                assert got[name]["delta_next10"] == pytest.approx(s["delta"][c, i, t], abs=2e-2)
            checked += 1
    assert checked > 500 and nulls > 20
    code, out, err = run_cli("race", "live", run, race)
    assert code == 0 and "pit_now" not in out.splitlines()[0]


def test_live_pit_now_needs_a_fresh_start(run_cli, plain_run, sim_run):
    code, out, err = run_cli("race", "live", plain_run, sim_run[1], "--pit-now")
    assert code == 2 and out == "" and "no FreshStart" in err and len(err.strip().splitlines()) == 1
