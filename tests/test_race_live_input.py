"""The input side of `lapnet race live` in the library: one duration parser (shared with
`read_laps`), one race-length rule, a finished file replayed in the order laps ended."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest


@pytest.mark.parametrize("text, seconds", [
    ("", math.nan), (" NaT ", math.nan), ("nan", math.nan), ("<NA>", math.nan),
    ("97.167", 97.167), ("1:37.167", 97.167), (" 1:37.167 ", 97.167),
    ("0 days 00:01:37.167000", 97.167), ("1 days 00:00:01", 86401.0),
    ("00:01:37.5", 97.5),  # H:MM:SS through pandas
    ("-0 days 00:01:30", -90.0), ("-00:01:30", -90.0), ("-1 days +23:58:30", -90.0),  # negative, then refused
])
def test_parse_duration(text, seconds):
    from lapnet.race.io import parse_duration

    got = parse_duration(text)
    assert (math.isnan(got) and math.isnan(seconds)) or got == pytest.approx(seconds, abs=1e-9)


def test_parse_duration_refuses_text_and_read_laps_names_it():
    from lapnet.errors import LapnetError
    from lapnet.race.io import parse_duration, read_laps

    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("fast")
    frame = pd.DataFrame({"Driver": ["AAA", "AAA"], "LapNumber": [1, 2], "LapTime": ["1:37.1", "fast"]})
    with pytest.raises(LapnetError, match="LapTime.*unparseable time"):
        read_laps(frame)
    assert read_laps(frame.iloc[:1])["LapTime"].iloc[0] == pytest.approx(97.1)


def test_last_timed_lap_on_raw_text_and_parsed_laps_is_one_rule(tmp_path):
    """A finished file's last timed lap: FastF1's generated row after the flag (lap 4, untimed)
    never counts, whether the table is raw text (`race live` on a file) or parsed (batch)."""
    from lapnet.race.features import last_timed_lap, race_laps
    from lapnet.race.io import read_laps
    from lapnet.race.live import file_lines, file_race_laps

    rows = pd.DataFrame({"Driver": ["AAA"] * 4 + ["BBB"] * 3, "LapNumber": [1, 2, 3, 4, 1, 2, 3],
                         "LapTime": ["0 days 00:01:40", "0 days 00:01:30", "0 days 00:01:31", "",
                                     "0 days 00:01:41", "0 days 00:01:32", ""],
                         "FastF1Generated": [False, False, False, True, False, False, True]})
    path = tmp_path / "laps.csv"
    rows.to_csv(path, index=False)
    raw = pd.read_csv(path, dtype=str)
    header = list(rows.columns)
    with open(path, encoding="utf-8-sig") as f:  # as `follow_race` reads a finished file
        f.readline()
        lines, cells = file_lines(f)
    assert [n for n, _ in lines] == list(range(2, 9)) and cells[3] == ["AAA", "4", "", "True"]
    assert last_timed_lap(raw) == last_timed_lap(read_laps(path)) == race_laps(read_laps(path)) == 3
    assert file_race_laps(cells, header) == 3
    assert last_timed_lap(raw.assign(LapTime=np.nan)) is None and race_laps(read_laps(path).assign(LapTime=np.nan)) == 4
    assert file_race_laps([[c[0], c[1], "", c[3]] for c in cells], header) is None  # no timed lap
    assert file_race_laps(cells, ["Driver", "LapNumber", "Time", "FastF1Generated"]) is None  # no LapTime column
    assert file_race_laps([], header) is None


def test_replay_order_sorts_a_file_listed_driver_by_driver():
    from lapnet.race.live import file_lines, replay_order

    header = ["Driver", "LapNumber", "Time"]
    body = "AAA,1,100\nAAA,2,190\nBBB,1,101\nBBB,2,192\n"  # FastF1's to_csv: one driver after another
    lines, moved = replay_order(*file_lines(io.StringIO(body)), header)
    assert moved and [n for n, _ in lines] == [2, 4, 3, 5] and lines[0][1] == "AAA,1,100"
    lines, moved = replay_order(*file_lines(io.StringIO("AAA,1,100\nBBB,1,101\n\nAAA,2,190\n")), header)
    assert not moved and [n for n, _ in lines] == [2, 3, 5]  # already in session order: kept, blank line skipped
    lines, moved = replay_order(*file_lines(io.StringIO(body)), ["Driver", "LapNumber", "Stint"])
    assert moved and [n for n, _ in lines] == [2, 4, 3, 5]  # no Time column: lap by lap, as batch orders it
    lines, moved = replay_order(*file_lines(io.StringIO("AAA,1,1\nBBB,1,1\nAAA,2,1\n")), ["Driver", "LapNumber", "Stint"])
    assert not moved and [n for n, _ in lines] == [2, 3, 4]  # already in that order: kept


@pytest.mark.parametrize("value, number", [
    ("1", "1"), (" 1 ", "1"), ("01", "1"), (1, "1"), (1.0, "1"), ("1.0", "1"), (np.float64(44.0), "44"),
    ("", None), ("nan", None), (math.nan, None), (None, None), ("<NA>", None),
    ("A1", "A1"), ("1.5", "1.5"),
])
def test_car_number_is_one_form_for_the_column_and_driver(value, number):
    from lapnet.race.io import car_number

    assert car_number(value) == number


def test_driver_numbers_match_across_the_forms_a_table_holds_them_in():
    """`--driver 1` finds the car whether DriverNumber reads '1', '01' or 1.0 (a column pandas read
    as float because a cell is empty): `race predict` (parse_drivers) and `race live` (DriverFilter,
    LiveRace.number_of) use `io.car_number` both."""
    from lapnet.race.io import parse_drivers
    from lapnet.race.live import DriverFilter

    for column in (["1", "44"], ["01", "44"], [1.0, 44.0], ["1.0", "44"]):
        laps = pd.DataFrame({"Driver": ["VER", "HAM"], "DriverNumber": column})
        assert parse_drivers("1,44", laps) == ["VER", "HAM"] and parse_drivers("01", laps) == ["VER"]
    assert DriverFilter("01,ver").tokens == ["1", "VER"] and DriverFilter("01,ver").numbers == {"1"}


def test_follow_refuses_a_file_rewritten_in_place(tmp_path):
    """`cp other.csv FILE` while followed: the same inode, larger, another race: the next line is
    refused in one line, not read from the old offset mid-line; a file only appended to reads on."""
    from lapnet.errors import LapnetError
    from lapnet.race.live import FollowReader

    path = tmp_path / "feed.csv"
    path.write_bytes(b"Driver,LapNumber,LapTime\nVER,1,95.1\nHAM,1,96.2\n")
    inode = path.stat().st_ino
    reader = FollowReader(path)
    assert [reader.readline() for _ in range(3)] == ["Driver,LapNumber,LapTime\n", "VER,1,95.1\n", "HAM,1,96.2\n"]
    assert reader.readline() == ""
    with open(path, "ab") as f:
        f.write(b"VER,2,91.0\n")
    assert reader.readline() == "VER,2,91.0\n"
    with open(path, "r+b") as f:  # rewritten in place, as cp does: another race, longer
        f.write(b"Driver,LapNumber,LapTime\nLEC,1,99.9\nSAI,1,99.8\nLEC,2,90.1\nSAI,2,90.2\nLEC,3,90.3\n")
    assert path.stat().st_ino == inode
    with pytest.raises(LapnetError, match=r"feed.csv was rewritten in place while followed \(its header or line 4"):
        reader.readline()
    reader.close()
    path.write_bytes(b"Driver,LapNumber,LapTime\nVER,1,95.1\n")
    reader = FollowReader(path)
    reader.readline(), reader.readline()
    path.write_bytes(b"Driver,LapNumber,LapTime\n")  # truncated in place: said as such
    with pytest.raises(LapnetError, match="was truncated"):
        reader.readline()
    reader.close()
