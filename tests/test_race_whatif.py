"""Pit now: the laps on new tyres after a stop called at lap t, against staying out (lapnet.race.whatif)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES, HORIZONS, build_sequences
from lapnet.race.schema import COMPOUNDS
from lapnet.race.whatif import (ANY, CHOICES, LATER, STOP_LAPS, PitNow, pit_now, pool_stop_errors, rejoin, rule_sets,
                                stop_check, stop_errors, stop_vector)

IX = {n: j for j, n in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """A tiny run with a FreshStart (kept whatever its check says) trained on 4 simulated races,
    and one more simulated race's lap table (its own seed) to ask it about."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
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
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.simulate import simulate

    out = tmp_path_factory.mktemp("plain") / "run"
    train_race(simulate(2, seed=5), out, RaceTrainConfig(hidden_size=4, epochs=1, members=1, progress=False, tagger=False,
                                                         fresh_start=False))
    return out


@pytest.fixture(scope="module")
def asked(sim_run):
    """(run, seq, stay-out forecast, the what-if) on the held-out simulated race."""
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import load_run, run_net, to_seconds

    run = load_run(sim_run[0])
    seq = build_sequences(load_laps(sim_run[1])[0])
    stay = to_seconds(seq, run_net(run.model, seq)["mean"])
    return run, seq, stay, pit_now(run.model, seq, stay, CHOICES)


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
    """The new-tyre laps are the FreshStart on the stop's out-lap vector, up to the flag; the
    stop is the stay-out laps plus the race's stop loss (the neutralised one under a safety car
    or VSC); the summary's numbers, recomputed lap by lap, are what the docstring says."""
    run, seq, stay, what = asked
    ref, x, K = seq.ref, seq.x, HORIZONS
    assert what.compounds == (ANY, "SOFT", "MEDIUM", "HARD") and what.new.shape == (4, *stay.shape)
    assert what.later.shape == (4, LATER, *stay.shape)
    p = what.possible
    valid = np.arange(x.shape[1])[None] < seq.lengths[:, None]
    assert p.sum() > 0.7 * seq.lengths.sum()
    left = np.round(x[..., IX["laps_left"]] * 30)
    ahead = np.arange(1, K + 1)
    # the two-compound rule, from each driver's compounds so far: while he has run one dry compound only (and no wet
    # tyre), ANY is the mean over the other two; once it is met, over all three
    dry = ("SOFT", "MEDIUM", "HARD")
    weight = np.ones((3, *p.shape))
    for i in range(len(seq.lengths)):
        for t in range(int(seq.lengths[i])):
            ran = {COMPOUNDS[k] for k in seq.compound[i, : t + 1]}
            if COMPOUNDS[seq.compound[i, t]] in dry and not ran & {"INTERMEDIATE", "WET"} and len(ran & set(dry)) == 1:
                weight[[dry.index(c) for c in ran & set(dry)], i, t] = 0.0
    assert (weight[:, p].sum(0) == 2).sum() > 100 and (weight[:, p].sum(0) == 3).sum() > 100
    np.testing.assert_array_equal(what.allowed, weight > 0)
    for c, name in enumerate(what.compounds):
        for laps_on, got in ((2, what.new[c]), *((2 + j, what.later[c, j - 1]) for j in range(1, LATER + 1))):
            with torch.no_grad():  # ANY: the mean of the dry compounds the rule allows
                per = np.stack([run.model.fresh(torch.from_numpy(stop_vector(x, seq.lap_number, one, laps_on))).double().numpy()
                                for one in dry])  # (3, N, T, K)
            pct = (per * weight[..., None]).sum(0) / weight.sum(0)[..., None] if name == ANY else per[dry.index(name)]
            inside = p[..., None] & (ahead + laps_on <= left[..., None])  # lap t+laps_on+k is run before the flag
            np.testing.assert_allclose(got[inside], (ref[..., None] * (1 + pct / 100))[inside], rtol=1e-12)
            assert np.isnan(got[~inside]).all() and (~inside & p[..., None]).any()
    neutral = (x[..., IX["safety_car"]] > 0) | (x[..., IX["vsc"]] > 0)
    assert (p & neutral).any() and (p & ~neutral).any()
    loss = np.where(neutral, seq.stop_loss_neutral, seq.stop_loss)
    np.testing.assert_allclose(what.in_out[p], (stay[..., 0] + stay[..., 1] + loss)[p])
    assert np.isfinite(seq.stop_loss[valid]).all() and (seq.stop_loss[valid] > 0.09 * ref[valid]).all()
    # no what-if on an in-lap, with fewer than 3 laps to the flag, or before another car's Scored lap (lap 1)
    assert not p[valid & (x[..., IX["in_lap"]] > 0)].any()
    assert not p[valid & (left < 3)].any() and (valid & (left < 3)).any()
    assert not p[valid & (x[..., IX["has_field_pace_any"]] == 0)].any() and not p[:, 0].any()
    # the summary, lap by lap, at 150 origins (among them the last 10 laps before the flag)
    s = what.summary()
    origins = np.argwhere(p)
    rng = np.random.default_rng(0)
    pick = [*origins[rng.choice(len(origins), 120, replace=False)], *origins[left[p] < 10][:30]]
    for i, t in pick:
        E = int(min(K, left[i, t]))
        for c in range(4):
            new = what.new[c, i, t]
            stop_plan = what.in_out[i, t] + sum(new[k - 3] for k in range(3, E + 1))
            stay_plan = sum(stay[i, t, k - 1] for k in range(1, E + 1))
            assert s["delta"][c, i, t] == pytest.approx(stop_plan - stay_plan, abs=1e-9)
            gains = [stay[i, t, k - 1] - new[k - 3] for k in range(3, E + 1)]
            assert s["gain_per_lap"][c, i, t] == pytest.approx(np.mean(gains), abs=1e-9)
            g = s["gain_per_lap"][c, i, t]
            assert (s["payback_laps"][c, i, t] == pytest.approx(loss[i, t] / g)) if g > 0 else np.isnan(s["payback_laps"][c, i, t])
            for j in range(1, LATER + 1):
                if E < j + 3:  # no lap on the later set before the flag
                    assert np.isnan(s["now_vs_later"][c, j - 1, i, t])
                    continue
                later_plan = (sum(stay[i, t, k - 1] for k in range(1, j + 3)) + loss[i, t]
                              + sum(what.later[c, j - 1, i, t, k - j - 3] for k in range(j + 3, E + 1)))
                assert s["now_vs_later"][c, j - 1, i, t] == pytest.approx(stop_plan - later_plan, abs=1e-9)
                # carried to the flag: the two new sets' mean gap per lap (laps t+j+3 .. t+E) times the laps after t+E
                gaps = [new[k - 3] - what.later[c, j - 1, i, t, k - j - 3] for k in range(j + 3, E + 1)]
                want = stop_plan - later_plan + np.mean(gaps) * max(left[i, t] - K, 0)
                assert s["now_vs_later_to_flag"][c, j - 1, i, t] == pytest.approx(want, abs=1e-9)
    # seconds, not percent: a lap on new tyres is within 10% of the race's reference lap
    assert np.nanmax(np.abs(what.new / ref[None, ..., None] - 1)) < 0.1


def test_to_the_flag_carries_the_runs_tyre_wear(asked):
    """With the run's tyre wear (its calibration on the training races), boxing j laps later is
    carried to the flag as what j more laps of age cost the early set on every lap after t+K:
    w(a) - w(a-j), w(a) = linear a + quad a^2, the out-lap being age 1; ANY's curve is the mean
    of the compounds it averages. Without it, the sets' mean gap is carried (the test above)."""
    from lapnet.race.whatif import tyre_wear

    run, seq, stay, plain = asked
    wear = tyre_wear(run.config)
    assert set(wear) == {"SOFT", "MEDIUM", "HARD"} and all(np.isfinite(v).all() for v in wear.values())
    kept = run.config["tyre_wear"]
    for bad in (None, [], {"SOFT": kept["SOFT"]}, {**kept, "HARD": None}, {**kept, "HARD": {"linear_s": None, "quad_s": 0}},
                {**kept, "MEDIUM": {"linear_s": "x", "quad_s": 0}}, {**kept, "SOFT": {"linear_s": float("nan"), "quad_s": 0}}):
        assert tyre_wear({"tyre_wear": bad}) is None  # not what train_race writes: the mean gap is carried
    what = pit_now(run.model, seq, stay, CHOICES, wear)
    s, s0, K = what.summary(), plain.summary(), HORIZONS
    np.testing.assert_array_equal(s["now_vs_later"], s0["now_vs_later"])  # only the carry changes
    dry = ("SOFT", "MEDIUM", "HARD")
    origins = np.argwhere(what.possible & (what.laps_left > K + 3))
    assert len(origins) > 100
    for i, t in origins[:: max(1, len(origins) // 60)]:
        n = int(what.laps_left[i, t]) - K
        for c, name in enumerate(what.compounds):
            ok = [k for k in range(3) if what.allowed[k, i, t]] if name == ANY else [dry.index(name)]
            lin = np.mean([wear[dry[k]][0] for k in ok])
            quad = np.mean([wear[dry[k]][1] for k in ok])
            for j in range(1, LATER + 1):
                carry = sum(lin * j + quad * (a * a - (a - j) ** 2) for a in range(K, K + n))
                assert s["now_vs_later_to_flag"][c, j - 1, i, t] == pytest.approx(s["now_vs_later"][c, j - 1, i, t] + carry,
                                                                                 abs=1e-9)


def test_a_run_without_phase_calls_keeps_its_pit_threshold(sim_run):
    """The pit call's threshold (best F1 on the training races' stops) is kept by every run with
    a pit caller, tagger or not: predict's figure draws the call from it, not from 0.5."""
    from lapnet.race.runs import load_run, pit_window_threshold

    run = load_run(sim_run[0])
    kept = run.config["pit_threshold"]
    assert "phase_source" not in run.config and pit_window_threshold(run) == kept["threshold"]
    assert 0.05 <= kept["threshold"] < 0.8 and 0.0 < kept["train_f1"] <= 1.0


def test_the_two_compound_rule_binds_until_a_second_dry_compound_or_a_wet_tyre():
    bit = {c: 1 << COMPOUNDS.index(c) for c in COMPOUNDS}
    used = np.array([bit["MEDIUM"], bit["MEDIUM"] | bit["HARD"], bit["INTERMEDIATE"] | bit["MEDIUM"], bit["SOFT"],
                     bit["SOFT"] | bit["SOFT"], bit["HARD"]])
    dry_now = np.array([True, True, True, True, True, False])
    open_, allowed = rule_sets(used, dry_now)
    assert open_.tolist() == [True, False, False, True, True, False]  # the last: on inters now (a wet race)
    assert allowed.T.tolist() == [[True, False, True], [True] * 3, [True] * 3, [False, True, True], [False, True, True],
                                  [True] * 3]
    assert allowed.shape == (3, 6)
    o2, a2 = rule_sets(used.reshape(2, 3), dry_now.reshape(2, 3))  # any leading shape
    assert (o2.ravel() == open_).all() and (a2.reshape(3, 6) == allowed).all()


def test_sequences_carry_the_compounds_each_driver_has_run(asked):
    _, seq, _, _ = asked
    for i in range(len(seq.lengths)):
        L = int(seq.lengths[i])
        want = np.bitwise_or.accumulate([1 << int(k) for k in seq.compound[i, :L]])
        np.testing.assert_array_equal(seq.tyres_used[i, :L], want)
        assert (seq.tyres_used[i, L:] == 0).all()


def test_rejoin_counts_no_red_flag_tyre_change_and_flags_neutralised_gaps(f1_data):
    """Where a stop puts him, on real races: at Sao Paulo every car went through the pit lane at
    the lap-1 red flag (in-lap 1, out-lap 2 under the red): no stop; the same counts come from a
    live featuriser's lap_ends (`rejoin_live`). At Mexico the restart's gaps (lap 35 under the
    safety car) are flagged as neutralised, a green lap's are not."""
    from lapnet.race.features import RaceFeaturizer, race_laps, session_order
    from lapnet.race.inputs import load_laps, race_sequences
    from lapnet.race.whatif import rejoin_live

    for race, lap, neutral in (("sao_paulo", 6, False), ("mexico_city", 36, True), ("mexico_city", 45, False)):
        laps = load_laps(f1_data / f"2023_{race}_R.csv")[0]
        seq, _ = race_sequences(laps, "file")
        i = next(k for k, key in enumerate(seq.keys) if key[1] == "VER")
        t = int(np.flatnonzero(seq.lap_number[i] == lap)[0])
        back = rejoin(seq, i, t, 30.0)
        assert back["gaps_after_lap"] == lap - 1 and back["neutralised"] is neutral and len(back["passed_by"]) >= 3
        pitted = laps[laps["InLap"] & (laps["LapNumber"] <= lap - 1) & ~laps["TrackStatus"].astype(str).str.contains("5")]
        if race == "sao_paulo":  # lap 1's in-laps (their out-laps ran under the red flag) and lap 2's (under it)
            assert all(c["stops"] == 0 for c in back["passed_by"]) and len(pitted) > 10
        # the same from the featuriser, lap by lap, as `race live` has it when VER's lap ends
        fz = RaceFeaturizer(race_laps(laps))
        rec = laps.to_dict("index")
        for r in session_order(laps):
            f = fz.step(rec[r])
            if rec[r]["Driver"] == "VER" and rec[r]["LapNumber"] == lap:
                live = rejoin_live(fz.lap_ends, "VER", lap, float(rec[r]["Time"]), 30.0, f.x)
                break
        assert live == back


def test_pit_now_refuses_a_run_without_a_fresh_start_and_wet_compounds(asked):
    run, seq, stay, _ = asked
    with pytest.raises(LapnetError, match="no FreshStart.*config.json 'fresh_start' says why"):
        pit_now(run.model.forecaster, seq, stay)
    with pytest.raises(LapnetError, match="INTERMEDIATE: choose from ANY, SOFT, MEDIUM, HARD"):
        pit_now(run.model, seq, stay, ("SOFT", "INTERMEDIATE"))


def test_no_what_if_under_a_red_flag_and_why(asked):
    """Under a red flag tyres are changed in the pit lane: no what-if, and the reason says so
    first, even on a lap that is also an in-lap."""
    from lapnet.race.whatif import _why_not, what_if

    run, seq, stay, what = asked
    x = seq.x.copy()
    red = what.possible & (np.arange(x.shape[1])[None] % 7 == 0)
    x[red, IX["red"]] = 1.0
    valid = np.arange(x.shape[1])[None] < seq.lengths[:, None]
    again = what_if(run.model, x, seq.lap_number, seq.ref, seq.stop_loss, seq.stop_loss_neutral, stay, valid, CHOICES,
                    seq.stop_stops)
    assert red.sum() > 20 and not again.possible[red].any() and (again.possible == (what.possible & ~red)).all()
    i, t = np.argwhere(red)[0]
    v = x[i, t].copy()
    v[IX["in_lap"]] = 1.0
    assert _why_not(v, 90.0, 30.0).startswith("a red flag")
    green = seq.x[i, t].copy()
    green[IX["in_lap"]] = 1.0
    assert _why_not(green, 90.0, 30.0).startswith("this lap is an in-lap")


def test_stop_errors_pair_every_real_stop_with_its_laps(asked):
    """A what-if that is the laps run plus 0.5 s (the other compounds plus 2 s), and a stop cost
    1 s above the stop's (green: in + out minus the two stay-out laps; called under a safety car
    or VSC: minus the other cars' median laps), score exactly that on every stop in the table."""
    _, seq, stay, what = asked
    x = seq.x
    fake_new = np.full_like(what.new, np.nan)
    loss = np.full_like(what.stop_loss, np.nan)
    fake_later = np.full_like(what.later, np.nan)  # boxing 1 lap later, seen from the lap before the call: laps run + 0.25
    stops, kinds = [], set()
    neutral = np.zeros_like(what.neutral)  # every other stop taken as called under a safety car (either branch runs)
    for i in range(len(seq.lengths)):
        for t in range(int(seq.lengths[i]) - 2):
            if not (x[i, t + 1, IX["in_lap"]] and x[i, t + 2, IX["out_lap"]] and what.possible[i, t]):
                continue
            stops.append((i, t))
            c = what.compounds.index(("SOFT", "MEDIUM", "HARD")[int(seq.compound[i, t + 2])])
            fake_new[:, i, t] = seq.future[i, t + 2] + 2.0  # ANY and the compounds not fitted
            fake_new[c, i, t] = seq.future[i, t + 2] + 0.5
            if t >= 1 and what.possible[i, t - 1] and not x[i, t, IX["in_lap"]]:
                fake_later[c, 0, i, t - 1] = seq.future[i, t + 2] + 0.25
            run = seq.lap_time[i, t + 1] + seq.lap_time[i, t + 2]
            neutral[i, t] = len(stops) % 2 == 0
            if neutral[i, t]:
                # staying out: the 2 cars whose lap t ended nearest his and that ran laps t+1, t+2 without stopping
                n = seq.lap_number[i, t]
                cands = []
                for j in range(len(seq.lengths)):
                    at = {seq.lap_number[j, u]: u for u in range(int(seq.lengths[j]))}
                    if j == i or not all(m in at for m in (n, n + 1, n + 2)):
                        continue
                    u0, u1, u2 = at[n], at[n + 1], at[n + 2]
                    if any(x[j, u, IX["in_lap"]] or x[j, u, IX["out_lap"]] or not np.isfinite(seq.lap_time[j, u]) for u in (u1, u2)):
                        continue
                    cands.append((abs(seq.time[j, u0] - seq.time[i, t]), seq.lap_time[j, u1] + seq.lap_time[j, u2]))
                loss[i, t] = run - np.median([c for _, c in sorted(cands)[:2]]) + 1.0
                kinds.add("neutral")
            elif x[i, t + 1, IX["green"]] and x[i, t + 2, IX["green"]]:
                loss[i, t] = run - stay[i, t, 0] - stay[i, t, 1] + 1.0
                kinds.add("green")
    assert len(stops) >= 20 and kinds == {"green", "neutral"}
    # the stops taken as called under a safety car ran their in- and out-lap under it too
    from dataclasses import replace

    xs = x.copy()
    for i, t in zip(*np.nonzero(neutral)):
        xs[i, t + 1 : t + 3, IX["safety_car"]] = 1.0
    seq = replace(seq, x=xs)
    fake = PitNow(what.compounds, what.stay, fake_new, what.new_half90, fake_later, loss, what.stop_stops, what.in_out, neutral,
                  what.laps_left, what.possible, what.rule_open, what.allowed)
    errors = stop_errors(seq, fake, np.where(np.isfinite(seq.future), seq.future, 0.0))
    assert errors["stops"] == len(stops)
    res = stop_check(pool_stop_errors([errors, errors]))  # two folds pool as one
    assert res["stops"] == 2 * len(stops)
    h1 = res["laps"]["what_if_at_lap_t"]["h1"]
    assert h1["mae"] == pytest.approx(0.5) and h1["bias"] == pytest.approx(0.5) and h1["n"] > len(stops)
    assert res["laps"]["what_if_any_compound"]["h1"]["bias"] == pytest.approx(2.0)
    assert stop_errors(seq, PitNow(what.compounds[1:], *(getattr(fake, f) for f in PitNow.__dataclass_fields__ if f != "compounds")),
                       np.zeros_like(seq.future))["stops"] == 0  # without ANY nothing to compare the compound with
    assert res["laps"]["at_the_out_lap"]["h1"]["mae"] == pytest.approx(0.0)
    early = res["called_earlier"]
    assert early["by_1"]["h1"]["bias"] == pytest.approx(0.25) and early["by_1"]["h1"]["n"] > 20 and early["by_2"]["h1"]["n"] == 0
    for kind in ("green", "safety_car_or_vsc"):
        assert res["stop_cost"][kind]["bias"] == pytest.approx(1.0) and res["stop_cost"][kind]["n"] > 0
    assert sum(r["h1"]["n"] for r in res["what_if_by_compound"].values()) == h1["n"]
    assert sum(r["h1"]["n"] for r in res["what_if_by_call"].values()) == h1["n"]


# ------------------------------------------------------------------------------------ the CLI


def _lap_for(path, run) -> tuple[str, int]:
    """A driver and a lap of the race file where a what-if can be made."""
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import load_run, run_net, to_seconds

    r = load_run(run)
    seq = build_sequences(load_laps(path)[0])
    what = pit_now(r.model, seq, to_seconds(seq, run_net(r.model, seq)["mean"]))
    i, t = np.argwhere(what.possible)[len(np.argwhere(what.possible)) // 2]
    return seq.keys[i][1], int(seq.lap_number[i, t])


def test_cli_pit_now_json_and_table(sim_run, run_cli):
    run, race = sim_run
    drv, lap = _lap_for(race, run)
    code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv.lower(), "--lap", lap, "--json", "--compound", "all")
    assert code == 0, err
    res = json.loads(out)
    assert res["driver"] == drv and res["lap"] == lap and res["laps_to_flag"] >= HORIZONS + STOP_LAPS
    rows = res["laps"]
    assert [r["LapNumber"] for r in rows] == list(range(lap + 1, lap + HORIZONS + STOP_LAPS + 1))
    assert [rows[0]["HARD"], rows[1]["HARD"]] == ["in-lap", "out-lap"]
    assert rows[-1]["stay_out"] is None and isinstance(rows[-1]["SOFT"], float)  # the nets forecast 10 laps, not 12
    assert res["in_out_s"] == pytest.approx(rows[0]["stay_out"] + rows[1]["stay_out"] + res["stop_cost_s"])
    for p in res["compounds"]:
        name = p["compound"]
        stop_plan = res["in_out_s"] + sum(r[name] for r in rows[STOP_LAPS:HORIZONS])
        assert p["delta"] == pytest.approx(stop_plan - sum(r["stay_out"] for r in rows[:HORIZONS]), abs=1e-6)
        assert p["first_lap"] == rows[STOP_LAPS][name] and p["first_lap_half90"] > 0
        assert len(p["now_vs_later"]) == LATER and all(isinstance(v, float) for v in p["now_vs_later"])
    # on the road: the cars behind him after lap N-1 (ended by the end of his lap N), by less than the stop's cost
    from lapnet.race.inputs import load_laps

    clean = load_laps(race)[0]
    at = clean.set_index(["Driver", "LapNumber"])["Time"]
    t0, t1 = at[(drv, lap - 1.0)], at[(drv, lap + 0.0)]
    prev = clean[(clean["LapNumber"] == lap - 1) & (clean["Driver"] != drv) & (clean["Time"] > t0) & (clean["Time"] <= t1)]
    gaps = sorted((float(g - t0), d) for g, d in zip(prev["Time"], prev["Driver"]))
    back = res["rejoin"]
    assert back["gaps_after_lap"] == lap - 1 and len(gaps) >= 3  # cars close behind: the check is not empty
    assert [c["driver"] for c in back["passed_by"]] == [d for g, d in gaps if g < res["stop_cost_s"]]
    rest = [(g, d) for g, d in gaps if g >= res["stop_cost_s"]]
    assert (back["ahead_of"] is None) if not rest else (
        back["ahead_of"]["driver"] == rest[0][1] and back["ahead_of"]["margin_s"] == pytest.approx(rest[0][0] - res["stop_cost_s"], abs=2e-3))
    in_laps = clean[clean["InLap"] & (clean["LapNumber"] <= lap - 1)].groupby("Driver").size()
    assert all(c["stops"] == int(in_laps.get(c["driver"], 0)) for c in back["passed_by"])
    # the two-compound rule, from the file: at this lap and at the driver's first lap in his first stint with a what-if
    first = next(n for n in range(2, 60) if run_cli("race", "pit-now", run, race, "--driver", drv, "--lap", n, "--json")[0] == 0)
    binds = 0
    for n in (lap, first):
        code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv, "--lap", n, "--json", "--compound", "all")
        got = json.loads(out)
        ran = set(clean[(clean["Driver"] == drv) & (clean["LapNumber"] <= n)]["Compound"].str.upper())
        dry = ["SOFT", "MEDIUM", "HARD"]
        needs = [c for c in dry if c not in ran] if len(ran & set(dry)) == 1 and not ran - set(dry) else None
        assert got["rule_needs"] == needs
        assert [p["meets_rule"] for p in got["compounds"]] == [True, *(needs is None or c in needs for c in dry)]
        if needs is not None:  # a new set: the mean of the two the rule allows
            binds += 1
            at3 = {p["compound"]: p["first_lap"] for p in got["compounds"]}
            assert at3["ANY"] == pytest.approx(np.mean([at3[c] for c in needs]), abs=1e-9)
            code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv, "--lap", n, "--compound", "all")
            assert code == 0 and "the two-compound rule" in err and "leave the rule to another stop" in err
    assert binds >= 1
    code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv, "--lap", lap, "--compound", "hard,soft")
    assert code == 0, err
    assert f"boxes on lap {lap + 1}, called after lap {lap}" in err and "HARD" in err and "MEDIUM" not in err and "payback" in err
    code, out, err = run_cli("race", "pit-now", run, race, "--driver", drv, "--lap", lap)
    assert code == 0 and "new set" in err and "HARD" not in err and "SOFT" not in err


@pytest.mark.parametrize("args, says", [
    (("--compound", "wet"), "--compound 'wet': choose from any, soft, medium, hard or all"),
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
    assert code == 2 and "holds 2 races (r1, r2): pick one with --race (e.g. --race r1)" in err
    code, _, err = run_cli("race", "pit-now", plain_run, race, "--driver", a, "--lap", "10")
    assert code == 2 and "no FreshStart" in err and len(err.strip().splitlines()) == 1


def test_live_pit_now_equals_the_batch_what_if(sim_run, run_cli, asked):
    """`race live --pit-now` carries each driver's state one lap at a time and gives, at every lap,
    the what-if `pit_now` gives on the whole race (null where that makes none)."""
    from lapnet.race.whatif import tyre_wear

    run, race = sim_run
    r, seq, stay, _ = asked
    what = pit_now(r.model, seq, stay, CHOICES, tyre_wear(r.config))  # live carries to the flag by the run's wear
    code, out, err = run_cli("race", "live", run, race, "--pit-now")
    assert code == 0, err
    recs = {(r["driver"], r["lap"]): r["pit_now"] for r in map(json.loads, out.splitlines())}
    s = what.summary()
    checked = nulls = binding = rejoins = 0
    for i, (_, drv) in enumerate(seq.keys):
        for t in range(int(seq.lengths[i])):
            got = recs[(drv, int(seq.lap_number[i, t]))]
            if not what.possible[i, t]:
                assert got is None
                nulls += 1
                continue
            assert got["in_out_s"] == pytest.approx(what.in_out[i, t], abs=2e-3)
            assert got["stop_cost_s"] == pytest.approx(what.stop_loss[i, t], abs=2e-3)
            assert got["in_lap"] == seq.lap_number[i, t] + 1 and got["under_safety_car"] == bool(what.neutral[i, t])
            for c, name in enumerate(what.compounds):
                new = what.new[c, i, t]
                np.testing.assert_allclose(got[name]["laps"], new[np.isfinite(new)], atol=2e-3)  # to the flag
                assert got[name]["first_lap_number"] == seq.lap_number[i, t] + 3
                assert got[name]["delta"] == pytest.approx(s["delta"][c, i, t], abs=2e-2)
                for key in ("now_vs_later", "now_vs_later_to_flag"):  # None (past the flag) reads as NaN
                    np.testing.assert_allclose(np.array(got[name][key], float), s[key][c, :, i, t], atol=5e-2)
            assert got["stop_cost_stops"] == what.stop_stops[i, t] and got["laps_to_flag"] == what.laps_left[i, t]
            back = rejoin(seq, i, t, float(what.stop_loss[i, t]))  # where he rejoins: as pit-now says
            if back is None:
                assert got["rejoin"] is None
            else:
                assert got["rejoin"]["gaps_after_lap"] == back["gaps_after_lap"]
                assert [(c["driver"], c["stops"]) for c in got["rejoin"]["passed_by"]] == [
                    (c["driver"], c["stops"]) for c in back["passed_by"]]
                np.testing.assert_allclose([c["gap_s"] for c in got["rejoin"]["passed_by"]],
                                           [c["gap_s"] for c in back["passed_by"]], atol=1e-3)
                assert (got["rejoin"]["ahead_of"] or {}).get("driver") == (back["ahead_of"] or {}).get("driver")
                rejoins += len(back["passed_by"])
            needs = [c for k, c in enumerate(("SOFT", "MEDIUM", "HARD")) if what.allowed[k, i, t]]
            assert got["rule_needs"] == (needs if what.rule_open[i, t] else None)
            assert got["to_flag_by"] == "tyre_wear"
            binding += bool(what.rule_open[i, t])
            checked += 1
    assert checked > 500 and nulls > 20 and 100 < binding < checked and rejoins > 500
    code, out, err = run_cli("race", "live", run, race)
    assert code == 0 and "pit_now" not in out.splitlines()[0]


def test_live_pit_now_needs_a_fresh_start(run_cli, plain_run, sim_run):
    code, out, err = run_cli("race", "live", plain_run, sim_run[1], "--pit-now")
    assert code == 2 and out == "" and "no FreshStart" in err and len(err.strip().splitlines()) == 1
