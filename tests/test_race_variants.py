"""Valid FastF1 exports that differ from the usual one (an F1 analyst's review): a race listed
newest first or without Time replayed by `race live` as `predict` reads it, the same race with
car numbers for codes, missing Time said as such, missing model inputs warned, two parts of one
race warned, C-number compounds (a guess warned; `live FILE` relabels as batch does), a sprint,
`pit-now --race`, `calibrate` without Compound, and car numbers listed in numeric order."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lapnet.errors import LapnetError

TINY = Path(__file__).parent / "data" / "race_tiny.csv"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, sim_races):
    """A tiny run with a FreshStart (kept whatever its check says: pit-now needs one) trained on
    simulated races 0 and 1; race 2 is asked about."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    table, parts = sim_races
    d = tmp_path_factory.mktemp("variants")
    cfg = RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False, phase_sim=0,
                          fresh_start_check=False)
    train_race(parts[:2], d / "run", cfg)
    return {"run": d / "run", "table": table, "parts": parts}


def _text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _by_time(df: pd.DataFrame) -> pd.DataFrame:
    return df.iloc[pd.to_numeric(df["Time"]).argsort(kind="mergesort")]


def _live(run_cli, run, path, *args) -> tuple[list[dict], str]:
    code, out, err = run_cli("race", "live", run, path, *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()], err


def _agree(preds: list[dict], table: pd.DataFrame) -> None:
    """`race live`'s lines against `predict_race`'s table: the same laps, forecasts and pit calls
    to the output's rounding (4 decimals)."""
    live = pd.DataFrame([{"Driver": p["driver"], "LapNumber": p["lap"], "h1": p["forecast"]["h1"],
                          "h10": p["forecast"]["h10"], "pit": p["pit_within_3"]} for p in preds])
    both = table.merge(live, on=["Driver", "LapNumber"], how="outer", indicator=True)
    assert (both["_merge"] == "both").all() and len(both) == len(table) == len(live)
    for a, b in (("forecast_h1", "h1"), ("forecast_h10", "h10"), ("pit_prob", "pit")):
        x, y = both[a].to_numpy(float), both[b].to_numpy(float)
        assert (np.isnan(x) == np.isnan(y)).all()
        assert np.nanmax(np.abs(x - y)) <= 5e-5 + 1e-9, a


def _quiet_lap(df: pd.DataFrame, lap: int) -> str:
    """A driver whose laps lap-1 .. lap+1 are green, on his first set, with no stop."""
    for drv, g in df.groupby("Driver"):
        g = g.set_index(g["LapNumber"].astype(float))
        rows = g.loc[[lap - 1, lap, lap + 1]] if {lap - 1, lap, lap + 1} <= set(g.index) else None
        if (rows is not None and (rows["TrackStatus"].astype(str) == "1").all() and rows["PitInTime"].isna().all()
                and rows["PitOutTime"].isna().all() and (rows["Stint"].astype(float) == 1).all()):
            return str(drv)
    raise AssertionError(f"no quiet lap {lap}")


# 1. a race listed newest first is one race ---------------------------------------------------


def test_live_replays_a_race_listed_newest_first(ctx, run_cli, tmp_path):
    laps = _text(ctx["parts"][2])
    ordered = _write(_by_time(laps), tmp_path / "ordered.csv")
    newest = _write(_by_time(laps).iloc[::-1], tmp_path / "newest.csv")
    key = laps.assign(_n=laps["LapNumber"].astype(float))
    down = _write(key.sort_values(["Driver", "_n"], ascending=[True, False]).drop(columns="_n"), tmp_path / "down.csv")
    want, _ = _live(run_cli, ctx["run"], ordered)
    for path in (newest, down):
        got, err = _live(run_cli, ctx["run"], path)
        assert got == want and "replayed by session Time" in err
    # two races one after the other (no Race column) are still two races, in either order
    a, b = _text(ctx["parts"][0]), _text(ctx["parts"][1])
    for both in (pd.concat([a, b]), pd.concat([a.iloc[::-1], b.iloc[::-1]])):
        code, out, err = run_cli("race", "live", ctx["run"], _write(both, tmp_path / "both.csv"))
        assert code == 2 and out == "" and "another race's laps follow the first's" in err


# 2. without Time, live replays the laps in predict's order ----------------------------------


def test_live_without_time_agrees_with_predict(ctx, run_cli, tmp_path):
    from lapnet.race.prediction import predict_race

    laps = _text(ctx["parts"][2]).drop(columns=["Time"])  # listed driver by driver, as FastF1 writes it
    path = _write(laps, tmp_path / "notime.csv")
    preds, err = _live(run_cli, ctx["run"], path)
    assert "has no session Time: replayed lap by lap (drivers by name within a lap)" in err
    assert "laps are taken in lap order" in err
    assert [(p["lap"], p["driver"]) for p in preds[:3]] == [(1, d) for d in sorted(laps["Driver"].unique())[:3]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, _ = predict_race(ctx["run"], path)
    _agree(preds, table)


# 3. the same race, drivers named by car number ----------------------------------------------


def test_the_same_race_by_car_numbers_is_the_same_race(ctx, tmp_path):
    from lapnet.race.io import read_many
    from lapnet.race.evaluation import eval_race

    race0 = ctx["parts"][0]
    df = pd.read_csv(race0, dtype={"TrackStatus": str})
    numbers = df.assign(Driver=df["DriverNumber"].astype(int).astype(str))
    with_col = _write(numbers, tmp_path / "with_col.csv")
    only = _write(numbers.drop(columns=["DriverNumber"]), tmp_path / "numbers.csv")
    for other in (with_col, only):
        with pytest.raises(LapnetError, match=r"hold the same race's laps \(\d+ of the \d+ timed laps"):
            read_many([race0, other])
    # the run trained on race 0 by codes: race 0 by numbers is in-sample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = eval_race(ctx["run"], [only, ctx["parts"][2]])
    n = int(df["LapTime"].notna().sum())
    assert m["in_sample"] == {"numbers": {"training_race": race0.stem, "laps": n, "of": n}}
    assert m["in_sample_overlap"][ctx["parts"][2].stem]["laps"] == 0


def test_a_run_trained_with_driver_keys_is_still_read(ctx, tmp_path):
    """A run trained before (training_laps.json keyed on the driver's code) is compared by those keys."""
    from lapnet.race.io import LAP_KEY_BY_DRIVER, lap_keys
    from lapnet.race.evaluation import in_sample_races
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import RaceRun

    whole, _ = load_laps(ctx["parts"][0])
    old = {"key": LAP_KEY_BY_DRIVER,
           "races": {r: " ".join(f"{int(k):08x}" for k in v) for r, v in lap_keys(whole, by_driver=True).items()}}
    (tmp_path / "training_laps.json").write_text(json.dumps(old))
    part = whole[whole["LapNumber"] <= 30].assign(Race="cut")
    found, how = in_sample_races(RaceRun(None, {}, path=tmp_path), part)
    assert how == "laps" and found == {"cut": {"training_race": ctx["parts"][0].stem,
                                               "laps": int(np.isfinite(part["LapTime"]).sum()),
                                               "of": int(np.isfinite(part["LapTime"]).sum())}}


def test_real_races_share_no_lap_key_and_warn_nothing(f1_data):
    from lapnet.race.io import SharedLapsWarning, lap_keys, read_many

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        laps = read_many(sorted(f1_data.glob("2023_*_R.csv")))
    assert not [w for w in caught if issubclass(w.category, SharedLapsWarning)]
    keys = lap_keys(laps)
    assert len(keys) == 15
    names = sorted(keys)
    assert max(np.intersect1d(keys[a], keys[b]).size for i, a in enumerate(names) for b in names[i + 1:]) == 0


# 4. no Time: the true reason ---------------------------------------------------------------


def test_pit_now_without_time_or_alone_says_why(ctx, tmp_path):
    from lapnet.race.io import MissingContextWarning, read_laps
    from lapnet.race.whatif import pit_now_race

    df = pd.read_csv(ctx["parts"][2], dtype={"TrackStatus": str})
    drv = _quiet_lap(df, 15)
    full = pit_now_race(ctx["run"], ctx["parts"][2], driver=drv, lap=15)  # a what-if there, with Time
    assert full["lap"] == 15
    notime = _write(df.drop(columns=["Time"]), tmp_path / "notime.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(LapnetError, match=f"no pit-now forecast for {drv} at lap 15: the table has no session "
                                              "Time, so the field's pace cannot be placed in time"):
            pit_now_race(ctx["run"], notime, driver=drv, lap=15)
        read_laps(notime)
    said = [str(w.message) for w in caught if issubclass(w.category, MissingContextWarning) and "no Time" in str(w.message)]
    assert said and "out-laps, the start and restarts get no forecast" in said[0] and "pit-now none" in said[0]
    alone = _write(df[df["Driver"] == drv], tmp_path / "alone.csv")
    with pytest.raises(LapnetError, match="the table holds one car alone"):
        pit_now_race(ctx["run"], alone, driver=drv, lap=15)


# 5. missing model inputs: one warning line -------------------------------------------------


def test_missing_model_inputs_warn_in_one_line():
    from lapnet.race.io import MissingContextWarning, read_laps

    raw = pd.read_csv(TINY, dtype=str)

    def said(df: pd.DataFrame) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read_laps(df)
        return [str(w.message) for w in caught if issubclass(w.category, MissingContextWarning)]

    assert said(raw) == []
    assert said(raw.drop(columns=["LapStartTime", "DriverNumber"])) == []  # columns the model never reads
    lines = said(raw.drop(columns=["FreshTyre", "Position", "Team", "TyreLife"]))
    assert lines == ["DataFrame: no TyreLife, FreshTyre, Position, Team columns, which the model reads (tyre age is "
                     "counted from each stint's first lap in the table; every set is taken as used; every car is taken "
                     "as 10th, with no car known ahead or behind; no teammate's stop is seen): forecasts and pit calls "
                     "may shift from what a full FastF1 export gives"]
    assert said(raw.drop(columns=["Stint"])) == ["DataFrame: no Stint column, which the model reads (stints are counted "
                                                 "from the pit stops): forecasts and pit calls may shift from what a "
                                                 "full FastF1 export gives"]


# 6. two parts of one race: warned ----------------------------------------------------------


def test_two_parts_of_one_race_are_warned(ctx, tmp_path):
    from lapnet.race.io import SharedLapsWarning, read_many

    df = pd.read_csv(ctx["parts"][0], dtype={"TrackStatus": str})
    five = sorted(df["Driver"].unique())[:5]
    first = _write(df[df["LapNumber"] <= 20], tmp_path / "first20.csv")
    cars = _write(df[df["Driver"].isin(five)], tmp_path / "five.csv")
    shared = int(df.loc[(df["LapNumber"] <= 20) & df["Driver"].isin(five), "LapTime"].notna().sum())
    n = int(df.loc[df["Driver"].isin(five), "LapTime"].notna().sum())
    assert shared < n / 2  # not the same race by the rule
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        both = read_many([first, cars])
    said = [str(w.message) for w in caught if issubclass(w.category, SharedLapsWarning)]
    assert said == [f"{first} (race 'first20') and {cars} (race 'five') share {shared} identical laps "
                    f"({shared / n:.0%} of the {n} timed laps of 'five'; different races share none): parts of one "
                    "race? both are used, those laps twice (at least 50% shared is refused as the same race)"]
    assert len(both) == len(df[df["LapNumber"] <= 20]) + len(df[df["Driver"].isin(five)])
    with warnings.catch_warnings(record=True) as caught:  # three different simulated races: no warning
        warnings.simplefilter("always")
        read_many(ctx["parts"])
    assert not [w for w in caught if issubclass(w.category, SharedLapsWarning)]


def test_eval_warns_a_race_sharing_some_laps_with_a_training_race(ctx, tmp_path):
    """Under the in-sample share, yet laps no two different races share: eval says so, and scores it as held out."""
    from lapnet.race.evaluation import eval_race

    train0 = pd.read_csv(ctx["parts"][0], dtype={"TrackStatus": str})
    five = sorted(train0["Driver"].unique())[:5]
    borrowed = train0[train0["Driver"].isin(five) & (train0["LapNumber"] <= 10)]
    borrowed = borrowed.assign(Driver=borrowed["Driver"].map({d: f"X{k}" for k, d in enumerate(five)}))
    mixed = _write(pd.concat([pd.read_csv(ctx["parts"][2], dtype={"TrackStatus": str}), borrowed]), tmp_path / "mixed.csv")
    shared = int(borrowed["LapTime"].notna().sum())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = eval_race(ctx["run"], mixed)
    assert m["in_sample"] == {} and m["in_sample_overlap"]["mixed"]["laps"] == shared >= 20
    said = [str(w.message) for w in caught if "share laps with the run's training races" in str(w.message)]
    assert len(said) == 1 and f"mixed: {shared} of its " in said[0] and "scored as held out" in said[0]


# 7. two C-numbers: the mapping is a guess, said with how to change it ---------------------------


def test_two_absolute_compounds_warn_that_the_mapping_is_a_guess():
    from lapnet.race.io import CompoundNamesWarning, read_laps

    two = pd.DataFrame({"Driver": "AAA", "LapNumber": [1, 2, 3, 4], "LapTime": [95.0, 90.0, 90.2, 90.1],
                        "Compound": ["C4", "C4", "C3", "C3"]})
    def said(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = read_laps(df)
        return out, [str(w.message) for w in caught if issubclass(w.category, CompoundNamesWarning)]

    df, lines = said(two)
    assert df["Compound"].tolist() == ["MEDIUM", "MEDIUM", "HARD", "HARD"] and len(lines) == 1
    assert "(C4 -> MEDIUM, C3 -> HARD)" in lines[0] and "is a guess" in lines[0]
    assert "rename the Compound values" in lines[0] and "lapnet race clean FILE --out X.csv" in lines[0]
    _, lines = said(two.assign(Compound=["C5", "C4", "C3", "C3"]))
    assert len(lines) == 1 and "(C5 -> SOFT, C4 -> MEDIUM, C3 -> HARD)" in lines[0] and "guess" not in lines[0]


# 8. live FILE with C-numbers relabels as batch does ----------------------------------------


def test_live_file_with_c_numbers_relabels_as_batch(ctx, run_cli, tmp_path, monkeypatch):
    laps = _by_time(_text(ctx["parts"][2]))
    named = _write(laps, tmp_path / "named.csv")
    c = laps.assign(Compound=laps["Compound"].map({"SOFT": "C5", "MEDIUM": "C4", "HARD": "C3"}).fillna(laps["Compound"]))
    assert set(c["Compound"]) == {"C5", "C4", "C3"}
    cfile = _write(c, tmp_path / "c.csv")
    want, _ = _live(run_cli, ctx["run"], named)
    got, err = _live(run_cli, ctx["run"], cfile)
    assert got == want
    assert f"lapnet: warning: {cfile}: race 'c' names its tyres by Pirelli's absolute compounds: relabelled by their " \
           "order in the race (C5 -> SOFT, C4 -> MEDIUM, C3 -> HARD)" in err
    assert "a stream cannot know" not in err
    # a stream cannot see the race's compounds: unknown dry ones, as before
    feed = c[c["LapNumber"].astype(float) <= 3]
    monkeypatch.setattr("sys.stdin", io.StringIO(feed.to_csv(index=False)))
    code, out, err = run_cli("race", "live", ctx["run"], "-", "--race-laps", "52")
    assert code == 0 and "a stream cannot know" in err
    assert {json.loads(line)["compound"] for line in out.splitlines()} == {None}


# 9. a sprint: no two-compound rule, and a note -----------------------------------------------


def test_a_sprint_has_no_two_compound_rule_and_a_note(ctx, tmp_path):
    from lapnet.race.prediction import predict_race
    from lapnet.race.whatif import pit_now_race

    df = pd.read_csv(ctx["parts"][2], dtype={"TrackStatus": str})
    sprint = _write(df[df["LapNumber"] <= 20], tmp_path / "sprint.csv")
    drv = _quiet_lap(df, 12)
    gp = pit_now_race(ctx["run"], ctx["parts"][2], driver=drv, lap=12)
    assert gp["rule_needs"] is not None and not gp.get("sprint")  # one dry compound run: the rule binds
    assert not any("sprint" in n for n in gp["notes"])
    res = pit_now_race(ctx["run"], sprint, driver=drv, lap=12)
    assert res["rule_needs"] is None and res["sprint"] is True
    assert all(p["meets_rule"] for p in res["compounds"])
    assert any(n.startswith("race 'sprint' is sprint-length (20 laps, ") and "learnt on Grands Prix" in n
               for n in res["notes"])
    # the rule: race laps times the reference lap under half a Grand Prix (88 min), between a 2023 sprint
    # (29 min) and the shortest Grand Prix of 2023 (Monza, 74 min)
    from lapnet.race.inputs import SPRINT_SECONDS

    assert 29 * 60 < SPRINT_SECONDS < 74 * 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, m = predict_race(ctx["run"], sprint)
        _, full = predict_race(ctx["run"], ctx["parts"][2])
    assert any("is sprint-length" in n for n in m["notes"]) and not any("sprint" in n for n in full["notes"])
    # a Grand Prix still running, its length given: no sprint
    assert pit_now_race(ctx["run"], sprint, driver=drv, lap=12, race_length=52)["sprint"] is False


def test_live_pit_now_drops_the_rule_on_a_sprint_as_pit_now_does(ctx, tmp_path, run_cli):
    from lapnet.race.whatif import pit_now_race

    df = pd.read_csv(ctx["parts"][2], dtype={"TrackStatus": str})
    sprint = _write(df[df["LapNumber"] <= 20], tmp_path / "sprint.csv")
    drv = _quiet_lap(df, 12)
    batch = pit_now_race(ctx["run"], sprint, driver=drv, lap=12)
    for extra, is_sprint in ((), True), (("--race-laps", "52"), False):
        lines, err = _live(run_cli, ctx["run"], sprint, "--pit-now", *extra)
        got = next(p["pit_now"] for p in lines if p["driver"] == drv and p["lap"] == 12)
        assert got["sprint"] is is_sprint
        assert (got["rule_needs"] is None) is is_sprint  # one dry compound run: the rule binds in a Grand Prix
        assert (err.count("is sprint-length (20 laps, ") == 1) is is_sprint  # said once, not per lap
    lines, _ = _live(run_cli, ctx["run"], sprint, "--pit-now")
    got = next(p["pit_now"] for p in lines if p["driver"] == drv and p["lap"] == 12)
    assert batch["rule_needs"] is None and batch["sprint"] is True  # as pit-now says
    from lapnet.race.whatif import ANY

    want = next(c for c in batch["compounds"] if c["compound"] == ANY)
    assert got[ANY]["delta"] == pytest.approx(want["delta"], abs=2e-3)  # the same set priced (the mean of all three)


# 10. pit-now --race --------------------------------------------------------------------------


def test_pit_now_race_picks_one_race_of_a_table(ctx, run_cli):
    df = pd.read_csv(ctx["parts"][2], dtype={"TrackStatus": str})
    drv = _quiet_lap(df, 15)
    args = ("--driver", drv, "--lap", "15", "--json")
    code, alone, err = run_cli("race", "pit-now", ctx["run"], ctx["parts"][2], *args)
    assert code == 0, err
    code, picked, err = run_cli("race", "pit-now", ctx["run"], ctx["table"], *args, "--race", "SIM_0002")
    assert code == 0, err
    a, b = json.loads(alone), json.loads(picked)
    assert b["race"] == "sim_0002" and a["compounds"] == b["compounds"] and a["laps"] == b["laps"]
    assert b["cleaning"]["by_race"].keys() == {"sim_0002"}
    code, out, err = run_cli("race", "pit-now", ctx["run"], ctx["table"], *args)
    assert code == 2 and out == "" and err.strip() == ("lapnet: error: the table holds 3 races (sim_0000, sim_0001, "
                                                       "sim_0002): pick one with --race (e.g. --race sim_0000)")
    code, out, err = run_cli("race", "pit-now", ctx["run"], ctx["table"], *args, "--race", "monza")
    assert code == 2 and "--race monza: no such race in the table (races: sim_0000, sim_0001, sim_0002)" in err


# 11. calibrate without Compound ---------------------------------------------------------------


def test_calibrate_without_compound_says_it_needs_one(ctx, run_cli, tmp_path):
    df = pd.read_csv(ctx["parts"][0], dtype={"TrackStatus": str})
    path = _write(df.drop(columns=["Compound"]), tmp_path / "nocomp.csv")
    code, out, err = run_cli("race", "calibrate", path, "--out", tmp_path / "c.json")
    lines = [ln for ln in err.splitlines() if ln.startswith("lapnet: error:")]
    assert code == 2 and lines == ["lapnet: error: calibrate needs a Compound column: it fits each dry compound's "
                                   "wear, and no Scored lap names its compound (a table without one is cleaned as "
                                   "dry, on an unknown compound)"]
    assert not (tmp_path / "c.json").exists()


# 12. car numbers in numeric order ----------------------------------------------------------------


def test_driver_error_lists_car_numbers_in_numeric_order(ctx):
    from lapnet.race.io import parse_drivers

    df = pd.read_csv(ctx["parts"][0], dtype={"TrackStatus": str})
    laps = df.assign(Driver=df["DriverNumber"].astype(int).astype(str)).drop(columns=["DriverNumber"])
    numbers = sorted(laps["Driver"].unique(), key=int)
    assert numbers != sorted(numbers)  # text order would differ
    with pytest.raises(LapnetError) as e:
        parse_drivers("XYZ", laps)
    assert f"(drivers: {', '.join(numbers)})" in str(e.value)
    from lapnet.race.io import driver_order

    assert driver_order(["VER", "44", "4", "ALO", "10"]) == ["ALO", "VER", "4", "10", "44"]
