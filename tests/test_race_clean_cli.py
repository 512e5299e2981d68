"""`lapnet race clean`: the per-race cleaning report from the command line, the cleaned table
it writes, the report in train / eval / predict's metrics.json, and the warnings for tables
that lack the columns the masks and the pit call need."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lapnet.race.clean import clean_laps, headline
from lapnet.race.io import MissingContextWarning, NotARaceWarning, missing_context, read_laps, read_many

TINY = Path(__file__).parent / "data" / "race_tiny.csv"


def _two_races(tmp_path: Path) -> list[Path]:
    """The tiny race under two labels, as two files; the second without AAA's laps and every lap
    1 ms slower: another race (two inputs holding the same race's laps are refused)."""
    a = tmp_path / "alpha.csv"
    b = tmp_path / "beta.csv"
    df = pd.read_csv(TINY, dtype={"TrackStatus": str})
    df.to_csv(a, index=False)
    beta = df[df["Driver"] != "AAA"].copy()
    beta["LapTime"] = pd.to_timedelta(beta["LapTime"]) + pd.Timedelta(milliseconds=1)
    beta.to_csv(b, index=False)
    return [a, b]


def test_clean_json_is_the_report_per_race(run_cli, tmp_path):
    paths = _two_races(tmp_path)
    code, out, err = run_cli("race", "clean", *paths, "--json")
    assert code == 0, err
    got = json.loads(out)
    _, rep = clean_laps(read_many(paths))
    assert got == json.loads(json.dumps(rep.summary()))
    assert list(got["by_race"]) == ["alpha", "beta"]
    alpha, beta = got["by_race"]["alpha"], got["by_race"]["beta"]
    # by hand (tests/test_race_data_clean.py): 26 rows, 24 laps, 13 Scored. Beta lacks AAA's 9
    # rows (8 laps and a generated lap 9) and so its 5 Scored laps: 17 rows, 16 laps, 8 Scored
    assert (alpha["rows_in"], alpha["rows_out"], alpha["scored"]) == (26, 24, 13)
    assert (beta["rows_in"], beta["rows_out"], beta["scored"]) == (17, 16, 8)
    assert beta["dropped"] == {"no_lap_number": 0, "after_flag": 0, "non_starter": 1}
    for key in ("rows_in", "rows_out", "scored"):
        assert got[key] == alpha[key] + beta[key]
    assert got["masked"]["in_lap"] == alpha["masked"]["in_lap"] + beta["masked"]["in_lap"] == 5
    # the human table names each race, and the last line sums up
    assert "alpha" in err and "beta" in err and "non_starter" in err
    assert headline(got) in err and "2 races: 43 rows -> 40 laps, 21 Scored" in err


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_clean_out_writes_the_cleaned_table(run_cli, tmp_path, ext):
    paths = _two_races(tmp_path)
    dest = tmp_path / f"clean.{ext}"
    code, _, err = run_cli("race", "clean", *paths, "--out", dest)
    assert code == 0, err
    written = pd.read_csv(dest, dtype={"TrackStatus": str}) if ext == "csv" else pd.read_parquet(dest)
    laps, _ = clean_laps(read_many(paths))
    assert len(written) == len(laps) == 40
    for col in ("Scored", "InLap", "OutLap", "Neutralised", "Restart", "Wet", "HasTime", "Accurate"):
        assert written[col].astype(bool).tolist() == laps[col].tolist(), col
    np.testing.assert_allclose(written["LapTime"].to_numpy(float), laps["LapTime"].to_numpy(float), equal_nan=True)
    # the cleaned table reads and cleans again to the same laps and masks (the Race column kept);
    # without its generated row, the tiny race's 3 stops in 24 laps pass the not-a-race bar
    with pytest.warns(NotARaceWarning, match="alpha"):
        again, rep = clean_laps(read_laps(dest))
    assert again["Scored"].tolist() == laps["Scored"].tolist()
    assert [r.race for r in rep.races] == ["alpha", "beta"] and sum(r.scored for r in rep.races) == 21


def test_clean_out_refusals_change_nothing(run_cli, tmp_path):
    paths = _two_races(tmp_path)
    dest = tmp_path / "clean.csv"
    dest.write_text("keep me\n")
    code, out, err = run_cli("race", "clean", *paths, "--out", dest)
    assert code == 2 and err.startswith("lapnet: error:") and "already exists" in err and err.count("\n") == 1
    assert dest.read_text() == "keep me\n" and out == ""
    code, _, err = run_cli("race", "clean", *paths, "--out", dest, "--force")
    assert code == 0 and len(pd.read_csv(dest)) == 40
    for bad, why in ((tmp_path / "clean.txt", "write a .csv or .parquet"), (tmp_path / "nope" / "c.csv", "does not exist"),
                     (tmp_path, "write a .csv or .parquet")):
        code, _, err = run_cli("race", "clean", *paths, "--out", bad, "--force")
        assert code == 2 and why in err and "Traceback" not in err, err
    assert not (tmp_path / "nope").exists()


def test_clean_bad_tables_one_line(run_cli, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli("race", "clean", empty)
    assert code == 2 and err == f"lapnet: error: {empty}: empty file\n"
    noisy = tmp_path / "noisy.csv"
    noisy.write_text("Driver,LapNumber,LapTime\nAAA,1,abc\n")
    code, _, err = run_cli("race", "clean", noisy)
    assert code == 2 and "LapTime" in err and err.count("lapnet: error:") == 1
    # readable but without a single Scored lap: a report and a warning, not a failure
    only_sc = tmp_path / "sc.csv"
    pd.DataFrame({"Driver": ["AAA"] * 3, "LapNumber": [1, 2, 3], "LapTime": [100.0, 120.0, 121.0],
                  "TrackStatus": ["4", "4", "4"], "PitInTime": np.nan, "PitOutTime": np.nan,
                  "Compound": "SOFT"}).to_csv(only_sc, index=False)
    code, out, err = run_cli("race", "clean", only_sc, "--json")
    assert code == 0 and json.loads(out)["scored"] == 0
    assert "lapnet: warning: race 'sc' has no Scored lap" in err


def test_missing_context_columns_warn_once_each():
    assert missing_context(pd.read_csv(TINY, nrows=1).columns) == []
    df = pd.DataFrame({"Driver": ["AAA"] * 3, "LapNumber": [1, 2, 3], "LapTime": [95.0, 90.0, 90.2]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_laps(df)
    msgs = [str(w.message) for w in caught if issubclass(w.category, MissingContextWarning)]
    assert len(msgs) == 7
    assert "PitInTime / PitOutTime" in msgs[0] and "pit stops cannot be seen" in msgs[0]
    assert "TrackStatus" in msgs[1] and "Compound" in msgs[2]
    assert [m.split(",")[0] for m in msgs[3:6]] == ["DataFrame: no Time column", "DataFrame: no IsAccurate column",
                                                    "DataFrame: no Deleted column"]
    # the model's other inputs, in one line
    assert msgs[6].startswith("DataFrame: no Stint, TyreLife, FreshTyre, Position, Team columns, which the model reads")
    # one of the two pit columns is enough to see stops; a FastF1 export warns nothing
    assert missing_context(["Driver", "LapNumber", "LapTime", "Time", "PitInTime", "TrackStatus", "Compound",
                            "IsAccurate", "Deleted", "Stint", "TyreLife", "FreshTyre", "Position", "Team"]) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_laps(TINY)


def test_train_eval_predict_carry_the_report_per_race(run_cli, tmp_path):
    from lapnet.race.simulate import simulate

    laps = tmp_path / "sim.csv"
    simulate(3, seed=5).to_csv(laps, index=False)
    run = tmp_path / "run"
    code, _, err = run_cli("race", "train", laps, "--out", run, "--epochs", "1", "--hidden", "8", "--phase-sim", "0")
    assert code == 0, err
    _, rep = clean_laps(read_laps(laps))
    want = json.loads(json.dumps(rep.summary()))
    assert f"cleaning: {headline(want)}" in err
    assert json.loads((run / "metrics.json").read_text())["cleaning"] == want
    assert len(want["by_race"]) == 3
    code, _, err = run_cli("race", "eval", run, laps, "--out", tmp_path / "ev")
    assert code == 0 and f"cleaning: {headline(want)}" in err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["cleaning"] == want
    code, _, err = run_cli("race", "predict", run, laps, "--out", tmp_path / "pr", "--quiet")
    assert code == 0 and "cleaning:" not in err
    assert json.loads((tmp_path / "pr" / "metrics.json").read_text())["cleaning"] == want
