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
    from lapnet.race.live import file_race_laps

    rows = pd.DataFrame({"Driver": ["AAA"] * 4 + ["BBB"] * 3, "LapNumber": [1, 2, 3, 4, 1, 2, 3],
                         "LapTime": ["0 days 00:01:40", "0 days 00:01:30", "0 days 00:01:31", "",
                                     "0 days 00:01:41", "0 days 00:01:32", ""],
                         "FastF1Generated": [False, False, False, True, False, False, True]})
    path = tmp_path / "laps.csv"
    rows.to_csv(path, index=False)
    raw = pd.read_csv(path, dtype=str)
    assert last_timed_lap(raw) == last_timed_lap(read_laps(path)) == race_laps(read_laps(path)) == file_race_laps(path) == 3
    assert last_timed_lap(raw.assign(LapTime=np.nan)) is None and race_laps(read_laps(path).assign(LapTime=np.nan)) == 4
    assert file_race_laps(tmp_path / "missing.csv") is None


def test_replay_order_sorts_a_file_listed_driver_by_driver():
    from lapnet.race.live import replay_order

    header = ["Driver", "LapNumber", "Time"]
    body = "AAA,1,100\nAAA,2,190\nBBB,1,101\nBBB,2,192\n"  # FastF1's to_csv: one driver after another
    lines, moved = replay_order(io.StringIO(body), header)
    assert moved and [n for n, _ in lines] == [2, 4, 3, 5] and lines[0][1] == "AAA,1,100"
    lines, moved = replay_order(io.StringIO("AAA,1,100\nBBB,1,101\n\nAAA,2,190\n"), header)
    assert not moved and [n for n, _ in lines] == [2, 3, 5]  # already in session order: kept, blank line skipped
