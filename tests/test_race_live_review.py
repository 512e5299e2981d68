"""`lapnet race live` from an F1 analyst's review, through the CLI: one race at a time (a Race
column), drivers who join late, feeds that join mid-race and gaps, a UTF-8 BOM, Parquet, an
unknown --driver refused once the grid is known, parse warnings naming the line only, the
routine skips of a finished race summarised, and --driver by code in any case or by number."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

TINY = dict(hidden_size=8, epochs=1, members=1, phase_sim=0, progress=False)


@pytest.fixture(scope="module")
def live_sim(tmp_path_factory, sim_races):
    """A tiny run trained on simulated races 0 and 1; race 2's laps in the order they ended."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    table, parts = sim_races
    d = tmp_path_factory.mktemp("live_review")
    train_race(parts[:2], d / "run", RaceTrainConfig(**TINY))
    laps = pd.read_csv(parts[2], dtype=str, keep_default_na=False)
    laps = laps.iloc[pd.to_numeric(laps["Time"]).argsort(kind="mergesort")].reset_index(drop=True)
    return {"run": d / "run", "table": table, "parts": parts, "laps": laps}


def _first(laps: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rows of laps 1..n (in the order they ended)."""
    return laps[laps["LapNumber"].astype(float) <= n]


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _preds(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def _warnings(err: str, words: str) -> list[str]:
    return [ln for ln in err.splitlines() if words in ln]


# 3. one race at a time ------------------------------------------------------------------


def test_a_table_of_two_races_is_refused_and_race_picks_one(live_sim, run_cli, tmp_path, monkeypatch):
    run, table = live_sim["run"], live_sim["table"]
    both = pd.read_csv(table, dtype=str, keep_default_na=False)
    both = both[both["Race"].isin(["sim_0001", "sim_0002"]) & (both["LapNumber"].astype(float) <= 6)]
    path = _write(both, tmp_path / "two.csv")
    code, out, err = run_cli("race", "live", run, path)
    assert code == 2 and out == "", err
    assert err.strip() == (f"lapnet: error: {path} holds 2 races (Race column: sim_0001, sim_0002): live follows one "
                           "race: pick one with --race (e.g. --race sim_0001)")

    # --race picks one (any case): the same lines as that race alone, its own length
    code, out, err = run_cli("race", "live", run, path, "--race", "SIM_0002")
    assert code == 0, err
    assert "race length 6 laps, the last lap of race sim_0002" in err
    alone = _write(both[both["Race"] == "sim_0002"].drop(columns=["Race"]), tmp_path / "alone.csv")
    code, out_alone, err = run_cli("race", "live", run, alone)
    assert code == 0, err
    assert out == out_alone and len(out.splitlines()) == 6 * 20
    code, _, err = run_cli("race", "live", run, path, "--race", "sim_0009")
    assert code == 2 and err.strip() == f"lapnet: error: --race sim_0009: no such race in {path} (races: sim_0001, sim_0002)"
    code, _, err = run_cli("race", "live", run, alone, "--race", "sim_0002")
    assert code == 2 and "has no Race column" in err and len(err.strip().splitlines()) == 1

    # a feed whose Race changes stops at the first lap of the second race
    feed = pd.concat([_first(live_sim["laps"], 2).assign(Race="sim_0002"), both[both["Race"] == "sim_0001"]])
    monkeypatch.setattr("sys.stdin", io.StringIO(feed.to_csv(index=False)))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 52)
    assert code == 2 and len(out.splitlines()) == 40  # race sim_0002's two laps, then the refusal
    assert err.strip().splitlines()[-1] == ("lapnet: error: stdin, line 42: a lap of race 'sim_0001' after laps of race "
                                            "'sim_0002': live follows one race: feed one, or pick it with --race NAME")


def test_a_feed_filtered_by_race_names_the_race_it_followed(live_sim, tmp_path, monkeypatch):
    """On stdin, --race passes the other races' lines over and the result names the race followed
    (by its name in the feed), as a finished file's replay does."""
    from lapnet.errors import LapnetError
    from lapnet.race.live import follow_race

    both = pd.read_csv(live_sim["table"], dtype=str, keep_default_na=False)
    both = both[both["Race"].isin(["sim_0001", "sim_0002"]) & (both["LapNumber"].astype(float) <= 3)]
    feed = both.iloc[pd.to_numeric(both["Time"]).argsort(kind="mergesort")].to_csv(index=False)  # races interleaved
    preds, said = [], []
    monkeypatch.setattr("sys.stdin", io.StringIO(feed))
    result = follow_race(live_sim["run"], "-", race_laps=52, race="SIM_0002", emit=preds.append, say=said.append)
    assert result == {"laps": 3 * 20, "drivers": sorted(both["Driver"].unique()), "missing": [], "race": "sim_0002",
                      "stopped": "end"}
    assert said == []  # nothing to warn about: the other race's lines are passed over quietly

    alone = _write(both[both["Race"] == "sim_0002"].drop(columns=["Race"]), tmp_path / "alone.csv")
    want = []
    result = follow_race(live_sim["run"], alone, race_laps=52, emit=want.append, say=said.append)
    assert preds == want and result["race"] is None  # the same laps as the race alone (no Race column: no name)
    result = follow_race(live_sim["run"], _write(both, tmp_path / "both.csv"), race_laps=52, race="SIM_0002",
                         emit=[].append, say=said.append)
    assert result["race"] == "sim_0002"  # a finished file names it the same way

    monkeypatch.setattr("sys.stdin", io.StringIO(feed))
    with pytest.raises(LapnetError, match=r"^--race sim_0009: no lap of this race in stdin \(races: sim_0001, sim_0002\)$"):
        follow_race(live_sim["run"], "-", race_laps=52, race="sim_0009", emit=preds.append, say=said.append)


# 5. drivers who join late, feeds that join mid-race, gaps -------------------------------


def test_a_driver_without_lap_1_joins_and_gives_batch_numbers(live_sim, run_cli, tmp_path, monkeypatch):
    """A driver whose first rows are missing joins at their first lap (one warning saying what is
    unknown), as batch commands start them there: the same numbers as `race predict`."""
    run = live_sim["run"]
    laps = _first(live_sim["laps"], 8)
    cut = laps[~((laps["Driver"] == "VER") & (laps["LapNumber"].astype(float) <= 3))]
    path = _write(cut, tmp_path / "no_ver_1_3.csv")
    monkeypatch.setattr("sys.stdin", io.StringIO(path.read_text()))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 52, "--driver", "VER")
    assert code == 0, err
    preds = _preds(out)
    assert [p["lap"] for p in preds] == [4, 5, 6, 7, 8] and {p["driver"] for p in preds} == {"VER"}
    joins = _warnings(err, "first seen")
    assert len(joins) == 1 and "VER first seen at lap 4 (laps 1-3 missing or skipped): joins the race" in joins[0]
    assert "stops and tyres before lap 4 are unknown" in joins[0]
    assert "skipped lap" not in err and "unknown driver" not in err
    # the grid lacked a car (positions show it): --driver VER was waited for, not refused
    assert len(_warnings(err, "--driver VER: no lap in the stream yet")) == 1

    code, _, err = run_cli("race", "predict", run, path, "--race-laps", 52, "--driver", "VER", "--out", tmp_path / "p",
                           "--quiet")
    assert code == 0, err
    batch = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert batch["LapNumber"].tolist() == [4, 5, 6, 7, 8]
    assert [p["forecast"]["h1"] for p in preds] == pytest.approx(batch["forecast_h1"].tolist(), abs=5.1e-5)
    assert [p["pit_within_3"] for p in preds] == pytest.approx(batch["pit_prob"].tolist(), abs=5.1e-5)


def test_a_feed_joining_mid_race_and_gaps_warn_once_each(live_sim, run_cli, tmp_path, monkeypatch):
    run = live_sim["run"]
    laps = _first(live_sim["laps"], 12)
    lap = laps["LapNumber"].astype(float)
    late = laps[lap >= 5]
    late = late[~((late["Driver"] == "HAM") & late["LapNumber"].astype(float).between(7, 8))]  # a gap of two laps
    late = late[~((late["Driver"] == "LEC") & (late["LapNumber"].astype(float) == 10))]  # and one of one lap
    monkeypatch.setattr("sys.stdin", io.StringIO(late.to_csv(index=False)))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 52)
    assert code == 0, err
    assert len(out.splitlines()) == len(late)  # every lap predicted
    starts = _warnings(err, "the feed starts at lap")
    assert len(starts) == 1 and starts[0].startswith("lapnet: warning: line 2: the feed starts at lap 5, not lap 1")
    assert "unknown to the model" in starts[0]
    gaps = _warnings(err, "missing or skipped")
    assert len(gaps) == 2, err
    assert "HAM laps 7-8 missing or skipped (lap 9 follows lap 6): stepped over" in gaps[0]
    assert "LEC lap 10 missing or skipped (lap 11 follows lap 9)" in gaps[1]
    assert "first seen" not in err  # the field seen on the feed's first lap is the grid: nobody joins


# 6. a UTF-8 byte-order mark --------------------------------------------------------------


def test_a_byte_order_mark_reads_as_without(live_sim, run_cli, tmp_path, monkeypatch):
    run = live_sim["run"]
    plain = _write(_first(live_sim["laps"], 3), tmp_path / "plain.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    code, want, err = run_cli("race", "live", run, plain, "--race-laps", 52)
    assert code == 0, err
    code, got, err = run_cli("race", "live", run, bom, "--race-laps", 52)
    assert code == 0 and got == want and "warning" not in err, err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(bom.read_bytes()), encoding="utf-8"))
    code, got, err = run_cli("race", "live", run, "-", "--race-laps", 52)
    assert code == 0 and got == want and "warning" not in err, err


# 13. Parquet -------------------------------------------------------------------------------


def test_parquet_is_refused_with_the_way_to_convert_it(live_sim, run_cli, tmp_path, monkeypatch):
    run = live_sim["run"]
    src = _write(_first(live_sim["laps"], 3), tmp_path / "laps.csv")
    pq = tmp_path / "laps.parquet"
    pd.read_csv(src).to_parquet(pq)
    code, out, err = run_cli("race", "live", run, pq)
    assert code == 2 and out == ""
    assert err.strip() == (f"lapnet: error: {pq}: a Parquet file: live reads CSV lines (a feed, header first): convert "
                           f"it first, e.g. lapnet race clean {pq} --out laps.csv")
    for errors in ("strict", "surrogateescape"):  # what Python's stdin does with bytes that are not UTF-8
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(pq.read_bytes()), encoding="utf-8", errors=errors))
        code, out, err = run_cli("race", "live", run, "-")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "stdin: a Parquet file" in err and "lapnet race clean X.parquet --out X.csv" in err
    # the conversion it names works, and gives the CSV's numbers
    code, _, err = run_cli("race", "clean", pq, "--out", tmp_path / "converted.csv")
    assert code == 0, err
    code, got, err = run_cli("race", "live", run, tmp_path / "converted.csv", "--race-laps", 52)
    assert code == 0, err
    code, want, err = run_cli("race", "live", run, src, "--race-laps", 52)
    assert code == 0 and got == want and len(got.splitlines()) == 60, err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Driver,LapNumber,LapTime\nP\xc9R,1,90\n"),
                                                      encoding="utf-8", errors="surrogateescape"))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 5)
    assert code == 2 and err.strip() == "lapnet: error: stdin: not UTF-8 text (invalid byte: b'\\xc9')", err


# 14. an unknown --driver is refused once the grid is known ----------------------------------


def test_an_unknown_driver_is_refused_after_the_first_lap_even_when_following(live_sim, run_cli, tmp_path,
                                                                               monkeypatch):
    run = live_sim["run"]
    grow = _write(_first(live_sim["laps"], 5), tmp_path / "grow.csv")

    def no_wait(seconds):  # --follow waits only at the end of the file: the refusal must come before
        raise AssertionError("live --follow waited for more lines: --driver XYZ was not refused at lap 2")

    # never hang the suite, however slow the machine: a wait fails the test at once (exit 1, the message)
    monkeypatch.setattr("lapnet.race.live.feed.time", SimpleNamespace(sleep=no_wait))
    code, out, err = run_cli("race", "live", run, grow, "--follow", "--race-laps", 52, "--poll", 0.05,
                             "--driver", "XYZ")
    drivers = ", ".join(sorted(live_sim["laps"]["Driver"].unique()))
    assert code == 2 and out == "", err
    assert err.strip() == f"lapnet: error: --driver XYZ: no lap in the stream: not on the grid (drivers: {drivers})"

    # one of several unknown: said once, when the grid is known, and the others printed
    code, out, err = run_cli("race", "live", run, grow, "--race-laps", 52, "--driver", "VER,XYZ")
    assert code == 0 and {p["driver"] for p in _preds(out)} == {"VER"} and len(out.splitlines()) == 5
    said = _warnings(err, "--driver")
    assert len(said) == 1 and said[0].startswith("lapnet: warning: --driver XYZ: no lap in the stream: not on the grid")
    assert said[0].endswith("printing VER only")


# 16. parse warnings name the line, not "row 1" ----------------------------------------------


def test_a_parse_warning_names_the_input_line_only(live_sim, run_cli, tmp_path):
    run = live_sim["run"]
    laps = _first(live_sim["laps"], 2).copy()
    laps.loc[laps.index[1], "Time"] = "garbage"
    path = _write(laps, tmp_path / "bad.csv")
    code, out, err = run_cli("race", "live", run, path, "--race-laps", 52)
    assert code == 0 and len(out.splitlines()) == 39, err
    skipped = _warnings(err, "skipped lap")
    assert skipped == ["lapnet: warning: line 3: skipped lap: column Time: unparseable time ('garbage')"]


# 17. the routine skips of a finished race: one line each ------------------------------------


def test_rows_after_the_flag_and_non_starters_are_summarised(live_sim, run_cli, tmp_path):
    run = live_sim["run"]
    laps = _first(live_sim["laps"], 5)
    end = pd.to_numeric(laps["Time"]).max()
    row = laps.iloc[0].to_dict()

    def generated(driver, number, lap, t):
        return {**row, "Driver": driver, "DriverNumber": number, "LapNumber": f"{lap:.1f}", "Time": f"{t:.3f}",
                "LapTime": "", "FastF1Generated": "True", "IsAccurate": "False", "Position": ""}

    after = [generated(d, "0", 6, end + 5 + k) for k, d in enumerate(["VER", "HAM", "LEC"])]
    dns = [generated("DNS", "99", 1, float(laps["Time"].iloc[0]) + 1)]
    table = pd.concat([laps.iloc[:1], pd.DataFrame(dns), laps.iloc[1:], laps.iloc[30:31], pd.DataFrame(after)])
    path = _write(table, tmp_path / "finished.csv")
    code, out, err = run_cli("race", "live", run, path)
    assert code == 0, err
    assert len(out.splitlines()) == len(laps)
    lines = err.strip().splitlines()
    assert "lapnet: 3 laps after the chequered flag skipped (rows FastF1 generates without a lap time; batch cleaning " \
           f"drops them too; first: line {len(table) - 1})" in lines
    assert any(ln.startswith("lapnet: 1 row of DNS skipped: no timed lap (did not start, or out on lap 1") and ln.endswith("first: line 3)")
               for ln in lines), err
    per_line = _warnings(err, "skipped lap")  # a real problem still gets its own line
    assert len(per_line) == 1 and per_line[0].startswith(f"lapnet: warning: line {len(table) - 2}: skipped lap: ")
    assert "duplicate lap" in per_line[0]


def test_real_monza_replay_summarises_its_routine_skips_and_takes_a_driver_number(live_sim, run_cli, f1_data):
    code, out, err = run_cli("race", "live", live_sim["run"], f1_data / "2023_italian_R.csv", "--driver", "1")
    assert code == 0, err
    preds = _preds(out)
    assert {p["driver"] for p in preds} == {"VER"} and len(preds) == 51
    assert "skipped lap" not in err
    assert any(ln.startswith("lapnet: 18 laps after the chequered flag skipped") for ln in err.splitlines()), err
    assert any(ln.startswith("lapnet: 1 row of TSU skipped: no timed lap") for ln in err.splitlines()), err


# 12. --driver as predict takes it: any case, numbers through DriverNumber ---------------------


def test_driver_codes_in_any_case_and_driver_numbers(live_sim, run_cli, tmp_path, monkeypatch):
    run = live_sim["run"]
    laps = _first(live_sim["laps"], 3)
    path = _write(laps, tmp_path / "laps.csv")
    number = {d: n for d, n in zip(laps["Driver"], laps["DriverNumber"])}
    code, by_code, err = run_cli("race", "live", run, path, "--race-laps", 52, "--driver", "ver, alb")
    assert code == 0, err
    assert {p["driver"] for p in _preds(by_code)} == {"VER", "ALB"} and len(by_code.splitlines()) == 6
    code, by_number, err = run_cli("race", "live", run, path, "--race-laps", 52, "--driver",
                                   f"{number['VER']},{number['ALB']}")
    assert code == 0 and by_number == by_code, err
    code, mixed, err = run_cli("race", "live", run, path, "--race-laps", 52, "--driver", f"{number['ALB']},VER")
    assert code == 0 and mixed == by_code, err
    code, _, err = run_cli("race", "live", run, path, "--race-laps", 52, "--driver", "98")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("lapnet: error: --driver 98: no lap in the stream: not on the grid (drivers: ")
    assert f"VER ({number['VER']})" in err  # the numbers the grid has
    no_numbers = _write(laps.drop(columns=["DriverNumber"]), tmp_path / "no_numbers.csv")
    code, out, err = run_cli("race", "live", run, no_numbers, "--race-laps", 52, "--driver", "1")
    assert code == 2 and out == "" and err.strip() == (
        f"lapnet: error: --driver 1: a car number, but {no_numbers} has no DriverNumber column: give the driver's code "
        "(e.g. VER)")


# hostile review: one absurd session Time, values batch refuses, a duplicate header column ------------


def _no_wait(seconds):  # --follow at the end of a finished file: stop as Ctrl-C does
    raise KeyboardInterrupt


def test_one_absurd_session_time_is_skipped_and_the_stream_goes_on(live_sim, run_cli, tmp_path, monkeypatch):
    """A lap whose Time is an hour and more beyond the latest lap read (a corrupted clock) is
    skipped like a lap number far ahead: the race-switch check is not fooled, and every other
    lap is predicted as in the feed without that row (stdin and --follow alike)."""
    run, laps = live_sim["run"], _first(live_sim["laps"], 12).reset_index(drop=True)
    k = int(laps.index[laps["LapNumber"].astype(float) == 8][0])
    bad = laps.copy()
    bad.loc[k, "Time"] = str(float(bad.loc[k, "Time"]) + 5000.0)
    code, want, err = run_cli("race", "live", run, _write(laps.drop(index=k), tmp_path / "without.csv"),
                              "--race-laps", 52)
    assert code == 0, err
    path = _write(bad, tmp_path / "bad.csv")
    monkeypatch.setattr("sys.stdin", io.StringIO(path.read_text()))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 52)
    assert code == 0 and out == want and len(out.splitlines()) == len(laps) - 1, err
    skipped = _warnings(err, "skipped lap")
    assert len(skipped) == 1 and skipped[0].startswith(
        f"lapnet: warning: line {k + 2}: skipped lap: {laps.loc[k, 'Driver']} lap 8: implausible session Time (")
    assert "switched races" not in err
    monkeypatch.setattr("lapnet.race.live.feed.time", SimpleNamespace(sleep=_no_wait))
    code, out, err = run_cli("race", "live", run, path, "--follow", "--race-laps", 52, "--poll", 0.05)
    assert code == 0 and out == want and len(_warnings(err, "implausible session Time")) == 1, err

    # the whole field later by over 30 minutes (a suspension longer than any seen): the first lap is
    # skipped, the second car's confirms the clock, and the race goes on
    late = laps.copy()
    after = late["LapNumber"].astype(float) >= 8
    late.loc[after, "Time"] = (late.loc[after, "Time"].astype(float) + 4000.0).astype(str)
    code, out, err = run_cli("race", "live", run, _write(late, tmp_path / "late.csv"), "--race-laps", 52)
    assert code == 0 and len(out.splitlines()) == len(laps) - 1, err
    assert len(_warnings(err, "implausible session Time")) == 1


@pytest.mark.parametrize("col, value, why", [
    ("LapTime", "0", "negative or zero lap time (0.0)"),
    ("LapTime", "1e20", "a lap time over 6 hours (1e+20)"),
    ("LapTime", "-0 days 00:01:30", "negative or zero lap time (-90.0)"),
    ("Position", "-3", "positions are whole numbers from 1 to 40 (-3.0)"),
    ("TyreLife", "-1", "tyre life is 0 to 200 laps (-1.0)"),
    ("Stint", "1e308", "stints are whole numbers from 1 to 30 (1e+308)"),
])
def test_a_lap_batch_refuses_is_skipped_live_with_the_same_reason(live_sim, run_cli, tmp_path, col, value, why):
    from lapnet.errors import LapnetError
    from lapnet.race.io import read_laps

    laps = _first(live_sim["laps"], 2).copy()
    laps.loc[laps.index[3], col] = value
    path = _write(laps, tmp_path / "bad.csv")
    with pytest.raises(LapnetError) as e:
        read_laps(path)
    assert str(e.value) == f"{path}: column {col}, line 5: {why}"
    code, out, err = run_cli("race", "live", live_sim["run"], path, "--race-laps", 52)
    assert code == 0 and len(out.splitlines()) == len(laps) - 1, err
    assert _warnings(err, "skipped lap") == [f"lapnet: warning: line 5: skipped lap: column {col}: {why}"]


def test_a_duplicate_header_column_is_one_error_at_the_header(live_sim, run_cli, tmp_path, monkeypatch):
    laps = _first(live_sim["laps"], 2)
    text = _write(laps, tmp_path / "ok.csv").read_text().splitlines()
    path = tmp_path / "dup.csv"
    path.write_text("\n".join([text[0] + ",Time"] + [ln + ",1" for ln in text[1:]]) + "\n")
    want = "lapnet: error: live: header: column 'Time' appears twice (line 1 names the columns once each)"
    for follow in ((), ("--follow", "--poll", 0.05)):
        monkeypatch.setattr("lapnet.race.live.feed.time", SimpleNamespace(sleep=_no_wait))
        code, out, err = run_cli("race", "live", live_sim["run"], path, "--race-laps", 52, *follow)
        assert code == 2 and out == "" and err.strip() == want, err
