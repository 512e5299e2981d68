"""Fixes from an F1 analyst's review of the race commands on real FastF1 exports (items 4, 7, 11,
12, 15, 18): the same race twice, missing FastF1 columns, an empty legend, --driver, several
sessions in one table. No trained run here: the commands that need one are tested in
test_race_model_cli.py, on its small runs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.race.io import MissingContextWarning, lap_keys, parse_drivers, read_laps, read_many

TINY = Path(__file__).parent / "data" / "race_tiny.csv"


def _one_error(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lapnet: error:"), err
    return lines[0]


# ---------------------------------------------------------------------------------------
# 4. the same race twice, under another name or cut short, is refused naming both files


def test_the_same_race_in_two_files_is_refused_naming_both(run_cli, sim_races, tmp_path):
    _, parts = sim_races
    copy = tmp_path / "copy.csv"
    copy.write_bytes(parts[0].read_bytes())
    line = _one_error(*run_cli("race", "clean", parts[0], copy)[::2])
    assert f"{parts[0]} (race '{parts[0].stem}') and {copy} (race 'copy') hold the same race's laps" in line
    df = pd.read_csv(parts[0], dtype={"TrackStatus": str})
    n = int(df["LapTime"].notna().sum())
    assert f"({n} of the {n} timed laps of '{parts[0].stem}' are in both)" in line
    # a part of it (its first 20 laps, or three of its drivers) is the same race too
    first = tmp_path / "first20.csv"
    df[df["LapNumber"] <= 20].to_csv(first, index=False)
    three = tmp_path / "three.csv"
    df[df["Driver"].isin(sorted(df["Driver"].unique())[:3])].to_csv(three, index=False)
    for part in (first, three):
        line = _one_error(*run_cli("race", "clean", parts[1], part, parts[0])[::2])
        assert str(part) in line and str(parts[0]) in line and str(parts[1]) not in line
    # train refuses before it makes --out; other races pass
    out = tmp_path / "run"
    line = _one_error(*run_cli("race", "train", parts[0], copy, "--out", out, "--epochs", 1)[::2])
    assert "hold the same race's laps" in line and not out.exists()
    code, _, err = run_cli("race", "clean", *parts)
    assert code == 0, err


def test_different_races_share_almost_no_laps(sim_races):
    """The rule's margin: distinct races share a lap or two by chance, a copy all of them."""
    table, _ = sim_races
    keys = lap_keys(read_laps(table))
    names = sorted(keys)
    shared = [np.intersect1d(keys[a], keys[b]).size for i, a in enumerate(names) for b in names[i + 1:]]
    assert max(shared) <= 2 and min(len(k) for k in keys.values()) > 500


def test_real_races_share_no_laps(f1_data):
    files = sorted(f1_data.glob("2023_*_R.csv"))[:6]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        laps = read_many(files)  # no two of them refused
    keys = lap_keys(laps)
    names = sorted(keys)
    assert max(np.intersect1d(keys[a], keys[b]).size for i, a in enumerate(names) for b in names[i + 1:]) <= 2


# ---------------------------------------------------------------------------------------
# 7. Time, IsAccurate and Deleted missing: one warning each, saying what is lost


def test_missing_time_accuracy_and_deletion_columns_warn(run_cli, tmp_path):
    raw = pd.read_csv(TINY, dtype=str)
    full = tmp_path / "full.csv"
    raw.to_csv(full, index=False)
    _, out, err = run_cli("race", "clean", full, "--json")
    assert "warning" not in err
    scored_full = json.loads(out)["scored"]
    cut = tmp_path / "cut.csv"
    raw.drop(columns=["Time", "IsAccurate", "Deleted"]).to_csv(cut, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # pytest's configuration hides MissingContextWarning
        code, out, err = run_cli("race", "clean", cut, "--json")
    assert code == 0, err
    warns = [ln for ln in err.splitlines() if ln.startswith("lapnet: warning:")]
    assert len(warns) == 3, err
    assert "no Time column" in warns[0] and "gap to the car ahead" in warns[0] and "in lap order" in warns[0]
    assert "no IsAccurate column, so every timed lap counts as accurate" in warns[1]
    assert "no Deleted column, so no lap counts as deleted" in warns[2]
    assert json.loads(out)["scored"] > scored_full  # the laps FastF1 could not vouch for now count
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_laps(raw.drop(columns=["Deleted"]))
    assert [str(w.message) for w in caught if issubclass(w.category, MissingContextWarning)] == [
        "DataFrame: no Deleted column, so no lap counts as deleted (laps deleted for track limits would not be Scored)"]


# ---------------------------------------------------------------------------------------
# 11. a driver without Scored laps: no empty legend (matplotlib's warning) on the degradation figure


def test_degradation_figure_without_scored_laps_has_no_legend():
    import matplotlib.pyplot as plt

    from lapnet.race.plots import plot_degradation

    table = pd.DataFrame({"Race": "r", "Driver": "PER", "Stint": 1.0, "Compound": "MEDIUM", "TyreLife": [1.0, 2.0],
                          "LapTime": [103.4, 99.0], "forecast_h1": [90.4, 90.3], "Scored": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "No artists with labels found to put in legend" would raise
        fig = plot_degradation(table)
    assert fig.axes[0].get_legend() is None
    assert any("no Scored laps" in t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)
    fig = plot_degradation(table.assign(Scored=True))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["MEDIUM"]
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# 12, 15. --driver: a comma list, any case, car numbers; true words for an unknown or dropped driver


def test_parse_drivers_reads_codes_and_numbers():
    laps = pd.DataFrame({"Driver": ["VER", "HAM", "LEC"], "DriverNumber": ["1", "44", "16"]})
    assert parse_drivers(None, laps) is None
    assert parse_drivers("VER,HAM", laps) == ["VER", "HAM"]
    assert parse_drivers(" ham , ver ", laps) == ["HAM", "VER"]
    assert parse_drivers("1", laps) == ["VER"] and parse_drivers("44,lec,16", laps) == ["HAM", "LEC"]
    assert parse_drivers(["ver", "1"], laps) == ["VER"]  # the same driver twice is once
    assert parse_drivers("ver,01") == ["VER", "1"]  # no table yet (a live feed): normalised for the caller
    with pytest.raises(LapnetError, match=r"^--driver ' , ': give driver codes such as VER or VER,HAM, or car numbers"):
        parse_drivers(" , ", laps)
    with pytest.raises(LapnetError, match=r"^--driver 99: no car with that number in the lap table \(numbers: 1 VER, 16 LEC, 44 HAM\)$"):
        parse_drivers("VER,99", laps)
    with pytest.raises(LapnetError, match="a car number, but the lap table has no DriverNumber column"):
        parse_drivers("44", laps.drop(columns=["DriverNumber"]))


def test_unknown_and_dropped_drivers_are_named_truly():
    laps = pd.DataFrame({"Driver": ["VER", "LEC"], "DriverNumber": ["1", "16"]})
    with pytest.raises(LapnetError) as e:
        parse_drivers("XYZ", laps, no_timed_lap=["TSU"])
    assert str(e.value) == "--driver XYZ: not in the lap table (drivers: LEC, VER; without a timed lap: TSU)"
    with pytest.raises(LapnetError) as e:
        parse_drivers("ham", laps, no_timed_lap=["HAM"])
    assert str(e.value).startswith("--driver HAM: HAM has no laps after cleaning: not one timed lap (retired on lap 1, "
                                   "or did not start)")
    assert "non-starter" not in str(e.value)


def test_real_drivers_out_on_lap_1_or_not_started(f1_data):
    """Qatar 2023: HAM started and retired on lap 1 (no timed lap); Monza 2023: TSU did not start.
    Neither is called a non-starter only, and an unknown code's list names TSU too."""
    from lapnet.race.inputs import load_laps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for race, code in (("2023_qatar_R", "HAM"), ("2023_italian_R", "TSU")):
            laps, report = load_laps(f1_data / f"{race}.csv")
            gone = report.races[0].drivers_dropped
            assert gone == [code]
            with pytest.raises(LapnetError, match=rf"^--driver {code}: {code} has no laps after cleaning: not one timed "
                                                  r"lap \(retired on lap 1, or did not start\)"):
                parse_drivers(code.lower(), laps, no_timed_lap=gone)
            with pytest.raises(LapnetError, match=rf"^--driver XYZ: not in the lap table \(drivers: ALB, .*; without a "
                                                  rf"timed lap: {code}\)$"):
                parse_drivers("XYZ", laps, no_timed_lap=gone)
        assert parse_drivers("1,44", laps) == ["VER", "HAM"]  # FastF1's DriverNumber


# ---------------------------------------------------------------------------------------
# 18. several FastF1 sessions in one table, without a Race column: told apart by EventName


def test_sessions_told_apart_by_event_name(run_cli, sim_races, tmp_path):
    _, parts = sim_races
    a, b = (pd.read_csv(p, dtype={"TrackStatus": str}) for p in parts[:2])
    a["EventName"], b["EventName"] = "Miami Grand Prix", "Japanese Grand Prix"
    both = tmp_path / "season.csv"
    pd.concat([a, b]).to_csv(both, index=False)
    laps = read_laps(both)
    assert sorted(laps["Race"].unique()) == ["japanese_grand_prix", "miami_grand_prix"]
    a["Year"], b["Year"] = 2023, 2023
    b["EventName"] = "Miami Grand Prix"
    b["Year"] = 2024  # one event, two seasons
    pd.concat([a, b]).to_csv(both, index=False)
    code, out, err = run_cli("race", "clean", both, "--json")
    assert code == 0, err
    assert sorted(json.loads(out)["by_race"]) == ["2023_miami_grand_prix", "2024_miami_grand_prix"]
    # one session: its file name stays the label
    a.to_csv(tmp_path / "one.csv", index=False)
    assert set(read_laps(tmp_path / "one.csv")["Race"]) == {"one"}
    # without EventName the refusal names what would tell them apart
    pd.concat([a, b]).drop(columns=["EventName"]).to_csv(both, index=False)
    line = _one_error(*run_cli("race", "clean", both)[::2])
    assert "add a Race column that tells them apart (or FastF1's EventName" in line
    b["EventName"] = np.nan
    pd.concat([a, b]).to_csv(both, index=False)
    line = _one_error(*run_cli("race", "clean", both)[::2])
    assert f"column EventName, line {len(a) + 2}: missing EventName" in line
