"""The race simulator: determinism, schema, physics sanity, noise floor, phases and strategies."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.clean import clean_laps
from lapnet.race.io import read_laps
from lapnet.race.simulate import PIT_WINDOW_LAPS, SimParams, simulate


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return simulate(6, seed=11)


def test_deterministic_for_a_seed(sim):
    pd.testing.assert_frame_equal(simulate(6, seed=11), sim)
    other = simulate(6, seed=12)
    assert not np.allclose(other["LapTime"].to_numpy()[:500], sim["LapTime"].to_numpy()[:500])


def test_schema_and_shape(sim):
    assert list(sim["Race"].unique()) == [f"sim_{i:04d}" for i in range(6)]
    assert sim.groupby("Race")["Driver"].nunique().eq(20).all()
    for col, kind in S.SCHEMA.items():
        if col.startswith("Sector"):
            continue  # the simulator times whole laps only
        assert col in sim.columns, col
        assert (sim[col].dtype == object) if kind == "str" else str(sim[col].dtype) == kind, col
    assert set(sim["Phase"]) == set(S.PHASES)
    assert set(sim["Compound"]) <= set(S.DRY_COMPOUNDS)
    assert sim["TrackStatus"].map(lambda t: set(t) <= set("1234567") and len(t) > 0).all()
    # the loader takes it unchanged, sorted by race, driver, lap
    back = read_laps(sim)
    pd.testing.assert_frame_equal(back, sim)
    keys = sim[["Race", "Driver", "LapNumber"]]
    assert keys.equals(keys.sort_values(["Race", "Driver", "LapNumber"]))
    # Time = LapStartTime + LapTime; positions are a permutation per lap
    np.testing.assert_allclose(sim["Time"], sim["LapStartTime"] + sim["LapTime"])
    pos = sim.groupby(["Race", "LapNumber"])["Position"].apply(lambda p: sorted(p) == list(range(1, len(p) + 1)))
    assert pos.all()


def test_bad_arguments():
    for n in (0, -1, 2.5, True):
        with pytest.raises(LapnetError, match="n_races"):
            simulate(n, seed=0)
    with pytest.raises(LapnetError, match="seed"):
        simulate(1, seed=-3)


def _green(df: pd.DataFrame) -> pd.Series:
    return ~df["TrackStatus"].str.contains("[4567]") & df["PitInTime"].isna() & df["PitOutTime"].isna() & (df["LapNumber"] > 1)


def test_fuel_makes_cars_slower():
    p0 = replace(SimParams(), dirty_air_s=0.0, fuel_s_per_kg=0.0)
    p1 = replace(p0, fuel_s_per_kg=0.03)
    a, b = simulate(2, seed=3, params=p0), simulate(2, seed=3, params=p1)
    g = _green(a).to_numpy()
    diff = (b["OracleLapTime"] - a["OracleLapTime"]).to_numpy()[g]
    np.testing.assert_allclose(diff, 0.03 * a["FuelLoad"].to_numpy()[g], atol=1e-9)
    assert (diff > 0).all()
    assert a["FuelLoad"].iloc[0] == pytest.approx(110.0)
    # 1.7 kg a lap, or less where 110 kg must last a longer race
    for _, f in a[a.Driver == "VER"].groupby("Race"):
        laps = a.loc[a.Race == f.Race.iloc[0], "LapNumber"].max()
        assert np.median(np.diff(f["FuelLoad"].to_numpy())) == pytest.approx(-min(1.7, 110 / (laps + 1)))
        assert f["FuelLoad"].iloc[-1] > 0


def test_degradation_grows_with_tyre_life(sim):
    for _, g in sim.groupby(["Race", "Driver", "Stint"]):
        d = g["TrueDegradation"].to_numpy()
        assert (np.diff(d) >= -1e-12).all()
    assert sim[["TyreLife", "TrueDegradation"]].corr().iloc[0, 1] > 0.5
    tl = sim.groupby(["Race", "Driver", "Stint"])["TyreLife"].apply(lambda t: np.all(np.diff(t.to_numpy()) == 1))
    assert tl.all()


def test_pit_and_safety_car_laps_are_slower(sim):
    med = sim[_green(sim)].groupby("Race")["LapTime"].transform("median")
    rel = (sim["LapTime"] - sim["Race"].map(sim[_green(sim)].groupby("Race")["LapTime"].median())).to_numpy()
    green = _green(sim).to_numpy()
    in_lap = sim["PitInTime"].notna().to_numpy() & ~sim["TrackStatus"].str.contains("[46]").to_numpy()
    out_lap = sim["PitOutTime"].notna().to_numpy() & ~sim["TrackStatus"].str.contains("[46]").to_numpy()
    sc = sim["TrackStatus"].str.contains("4").to_numpy()
    assert len(med) > 0 and abs(np.median(rel[green])) < 0.01
    assert 3.0 < np.median(rel[in_lap]) < 8.0
    assert 12.0 < np.median(rel[out_lap]) < 25.0
    assert sc.any() and np.median(rel[sc]) > 25.0


def test_oracle_mae_is_the_noise_floor():
    p = SimParams()
    df = simulate(4, seed=2)
    mae = float(np.mean(np.abs(df["LapTime"] - df["OracleLapTime"])))
    assert mae == pytest.approx(p.noise_std * np.sqrt(2 / np.pi), rel=0.05)


def test_phases_are_where_the_docs_say(sim):
    for _, g in sim.groupby(["Race", "Driver"]):
        phase = g["Phase"].to_numpy()
        in_laps = np.flatnonzero(g["PitInTime"].notna().to_numpy())
        expect = np.zeros(len(g), bool)
        for i in in_laps:
            expect[max(0, i - PIT_WINDOW_LAPS) : i + 1] = True
        np.testing.assert_array_equal(phase == "pit_window", expect)
    neutral = sim["TrackStatus"].str.contains("[4567]") & (sim["Phase"] != "pit_window")
    assert (sim.loc[neutral, "Phase"] == "conserve").all()


def test_push_is_faster_and_wears_more(sim):
    laps, _ = clean_laps(read_laps(sim))
    s = laps[laps["Scored"]].copy()
    s["dev"] = s["LapTime"] - s["OracleLapTime"] + s["OracleLapTime"] - s.groupby(["Race", "Driver", "Stint"])["OracleLapTime"].transform("mean")
    push, cons = s[s.Phase == "push"], s[s.Phase == "conserve"]
    # the same stint, push laps are faster: compare within (race, driver, stint)
    both = s.groupby(["Race", "Driver", "Stint", "Phase"])["dev"].mean().unstack()
    gap = (both["conserve"] - both["push"]).dropna()
    assert gap.median() > 0.2
    wear_push = push.groupby(["Race", "Driver", "Stint"])["TrueDegradation"].diff().median()
    wear_cons = cons.groupby(["Race", "Driver", "Stint"])["TrueDegradation"].diff().median()
    assert wear_push > wear_cons
    shares = sim["Phase"].value_counts(normalize=True)
    assert 0.05 < shares["pit_window"] < 0.2 and shares["push"] > 0.3 and shares["conserve"] > 0.3


def test_strategies_use_two_dry_compounds(sim):
    laps = sim.groupby(["Race", "Driver"])
    n_stops = laps["PitInTime"].count()
    compounds = laps["Compound"].nunique()
    finished = laps["LapNumber"].max() == sim.groupby("Race")["LapNumber"].transform("max").groupby([sim.Race, sim.Driver]).first()
    assert set(n_stops[finished]) <= {1, 2} and {1, 2} <= set(n_stops[finished])
    assert (compounds[finished & (n_stops >= 1)] >= 2).all()
    # a stint is one compound, and Stint counts the stops
    assert sim.groupby(["Race", "Driver", "Stint"])["Compound"].nunique().eq(1).all()
    assert (laps["Stint"].max() == n_stops + 1).all()


def test_calibrated_extras_slow_laps_and_drift():
    p = replace(SimParams(), slow_prob=0.1, slow_mean_s=1.0, drift_std=0.3, drift_rho=0.9)
    df = simulate(3, seed=8, params=p)
    green = _green(df).to_numpy()
    noise = (df["LapTime"] - df["OracleLapTime"]).to_numpy()[green]
    assert np.mean(noise) == pytest.approx(0.1 * 1.0, abs=0.03)  # slow laps are noise, one-sided
    assert np.mean(noise > 2.0) > 0.005 and np.mean(noise < -1.0) == 0.0
    # the drift lives in the oracle: neighbouring laps share it
    base = simulate(3, seed=8, params=replace(p, drift_std=0.0, slow_prob=0.0))
    assert not np.allclose(df["OracleLapTime"], base["OracleLapTime"])
