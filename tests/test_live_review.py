"""`lapnet race live` from a pit-wall engineer's review, through the CLI: a corrupted lap number far
ahead refused (2), a feed running into another race stopped (3), a header line mid-stream and a
line with the wrong field count (4), --follow reading whole UTF-8 lines (5), a truncated or
replaced file (6), --poll checked (7), FastF1's rows after the flag without --race-laps as batch
drops them (8), an accurate lap 10x too slow warned (9), the lap's own facts in the JSON line
(10), a changed re-send named (11), a line cut short at Ctrl-C (13), drivers without a timed lap
named truly (14)."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TINY = dict(hidden_size=8, epochs=1, members=1, phase_sim=0, progress=False)


@pytest.fixture(scope="module")
def sim(tmp_path_factory, sim_races):
    """A tiny run trained on simulated races 0 and 1; race 2's laps (52 laps, 20 drivers) and
    race 1's, each in the order they ended, as raw text cells."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    table, parts = sim_races
    d = tmp_path_factory.mktemp("live_review_pitwall")
    train_race(parts[:2], d / "run", RaceTrainConfig(**TINY))

    def by_time(path: Path) -> pd.DataFrame:
        laps = pd.read_csv(path, dtype=str, keep_default_na=False)
        return laps.iloc[pd.to_numeric(laps["Time"]).argsort(kind="mergesort")].reset_index(drop=True)

    return {"run": d / "run", "laps": by_time(parts[2]), "other": by_time(parts[1])}


def _first(laps: pd.DataFrame, n: int) -> pd.DataFrame:
    return laps[laps["LapNumber"].astype(float) <= n].reset_index(drop=True)


def _csv(df: pd.DataFrame, header: bool = True) -> str:
    return df.to_csv(index=False, header=header)


def _preds(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def _lines(err: str, words: str) -> list[str]:
    return [ln for ln in err.splitlines() if words in ln]


def _row(laps: pd.DataFrame, driver: str, lap: int) -> int:
    """The index of a driver's lap in `laps` (its input line is this + 2)."""
    hit = laps.index[(laps["Driver"] == driver) & (laps["LapNumber"].astype(float) == lap)]
    assert len(hit) == 1
    return int(hit[0])


# 2. a lap number implausibly far ahead ---------------------------------------------------------


def test_a_corrupted_lap_number_far_ahead_is_refused_and_changes_nothing(sim, run_cli, monkeypatch):
    """VER's lap 5 sent as 61: refused with the line named; every JSON line is what the feed without
    that line gives (VER's lap 6 follows his lap 4, the race stays 52 laps long)."""
    laps = _first(sim["laps"], 8)
    i = _row(laps, "VER", 5)
    top = int(laps["LapNumber"].iloc[:i].astype(float).max())  # the field's lap when VER's lap 5 ends
    bad = laps.copy()
    bad.loc[i, "LapNumber"] = "61.0"
    without = laps.drop(index=i)
    for length in (["--race-laps", "52"], []):
        _stdin(monkeypatch, _csv(without))
        code, want, want_err = run_cli("race", "live", sim["run"], "-", *length)
        assert code == 0, want_err
        _stdin(monkeypatch, _csv(bad))
        code, out, err = run_cli("race", "live", sim["run"], "-", *length)
        assert code == 0, err
        assert out == want  # the refused line changed no state: the same numbers for everyone
        assert _lines(err, "skipped lap") == [
            f"lapnet: warning: line {i + 2}: skipped lap: VER lap 61: implausibly far ahead (the field's highest lap so "
            f"far is {top}; a lap number more than 2 beyond the field's next lap is taken for a corrupted LapNumber): "
            "VER's laps go on from the last one read"]
        rest = err.replace(_lines(err, "skipped lap")[0] + "\n", "")  # the same warnings (one line later)
        assert re.sub(r"line \d+", "line N", rest) == re.sub(r"line \d+", "line N", want_err)
        preds = _preds(out)
        assert [p["lap"] for p in preds if p["driver"] == "VER"] == [1, 2, 3, 4, 6, 7, 8]
        assert max(p["race_laps"] for p in preds) < 61
    assert len(_lines(want_err, "VER lap 5 missing or skipped (lap 6 follows lap 4)")) == 1


def test_a_lap_number_the_driver_could_not_have_reached_is_refused(sim, run_cli, monkeypatch):
    """VER's lap 5 sent as 7: within the field's margin, but 3 laps in one lap's session Time
    cannot be run: refused, and every JSON line is what the feed without that line gives. The
    same lap a minute later than 2 laps' time (a feed that lost VER's laps 5-6) is taken."""
    laps = _first(sim["laps"], 8)
    i = _row(laps, "VER", 5)
    bad = laps.copy()
    bad.loc[i, "LapNumber"] = "7.0"
    bad = bad.drop(index=_row(laps, "VER", 7))  # the real lap 7 would be a duplicate
    without = laps.drop(index=[i, _row(laps, "VER", 7)])
    _stdin(monkeypatch, _csv(without))
    code, want, _ = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0
    _stdin(monkeypatch, _csv(bad))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0, err
    assert out == want
    said = _lines(err, "skipped lap")
    assert len(said) == 1 and said[0].startswith(f"lapnet: warning: line {i + 2}: skipped lap: VER lap 7: implausible "
                                                 "(3 laps after lap 4 in ")
    assert "at least 50 s a lap; taken for a corrupted LapNumber): VER's laps go on from the last one read" in said[0]

    lost = laps.drop(index=[i, _row(laps, "VER", 6)])  # VER's laps 5 and 6 lost: lap 7 comes 3 laps after lap 4
    _stdin(monkeypatch, _csv(lost))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and "implausible" not in err and len(out.splitlines()) == len(lost), err


def test_the_first_laps_and_a_feed_that_lost_laps_are_not_refused(sim, run_cli, monkeypatch):
    """The first lines set the field's lap (a feed joining at lap 5 is taken); before any lap, only a
    lap far beyond --race-laps is refused. A feed that lost laps 4-6 of every car goes on at lap 7:
    the session Time shows the laps could have been run; without a Time column, a second car's
    lap 7 vouches for the first's (which was refused)."""
    laps = _first(sim["laps"], 8)
    late = laps[laps["LapNumber"].astype(float) >= 5]
    _stdin(monkeypatch, _csv(late))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and len(out.splitlines()) == len(late) and "implausibly" not in err, err

    first = laps.iloc[[0]].assign(LapNumber="61.0")
    _stdin(monkeypatch, _csv(pd.concat([first, laps])))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and len(out.splitlines()) == len(laps), err
    assert _lines(err, "skipped lap") == [
        f"lapnet: warning: line 2: skipped lap: {first['Driver'].iloc[0]} lap 61: implausibly far ahead (the race "
        "length given is 52 laps; a lap number more than 2 beyond the field's next lap is taken for a corrupted "
        f"LapNumber): {first['Driver'].iloc[0]}'s laps go on from the last one read"]

    lost = laps[~laps["LapNumber"].astype(float).between(4, 6)]
    _stdin(monkeypatch, _csv(lost))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and len(out.splitlines()) == len(lost) and "implausibly" not in err, err
    assert len(_lines(err, "laps 4-6 missing or skipped (lap 7 follows lap 3)")) == 20

    no_time = lost.drop(columns=["Time"])
    _stdin(monkeypatch, _csv(no_time))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0, err
    refused = _lines(err, "implausibly far ahead")
    assert len(refused) == 1 and len(out.splitlines()) == len(no_time) - 1
    k = int((no_time["LapNumber"].astype(float) == 7).to_numpy().argmax())  # the first lap 7
    assert refused[0].startswith(f"lapnet: warning: line {k + 2}: skipped lap: {no_time['Driver'].iloc[k]} lap 7: "
                                 "implausibly far ahead (the field's highest lap so far is 3;")


# 3. a feed that runs into another race -------------------------------------------------------


def test_a_feed_running_into_another_race_stops_with_one_error(sim, run_cli, monkeypatch, tmp_path):
    """Race 2's first 8 laps, then race 1's (FastF1 feeds without a Race column, `cat` together,
    its header line included): the laps of race 2 are printed, then one error line; none of
    race 1's laps is printed or warned about."""
    a, b = _first(sim["laps"], 8), _first(sim["other"], 3)
    header = _csv(a.iloc[:0])
    _stdin(monkeypatch, _csv(a) + header + _csv(b, header=False))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 2 and len(out.splitlines()) == len(a)
    start = len(a) + 3  # header, race 2's lines, race 1's header again
    assert err.strip().splitlines() == [
        f"lapnet: error: stdin, line {start + 10}: the feed switched races: 11 of the 20 drivers went back to lap 1-2, "
        "or their session Time by over 5 minutes, after the field had reached lap 8 (from line "
        f"{start}): live follows one race: give each race its own file or feed, or a Race column and --race NAME"]

    both = tmp_path / "both.csv"
    both.write_text(_csv(a) + _csv(b, header=False))
    code, out, err = run_cli("race", "live", sim["run"], both)
    assert code == 2 and out == ""
    assert err.strip() == (f"lapnet: error: {both}, line {len(a) + 2}: another race's laps follow the first's (20 of "
                           "the 20 drivers go back to lap 1-2 after lap 5): live follows one race: give each race its "
                           "own file, or a Race column and --race NAME")


def test_a_feed_listed_driver_by_driver_is_no_race_switch(sim, run_cli, monkeypatch):
    """FastF1's to_csv order on stdin (each driver's laps in turn: laps 1-2 and session Times far
    back after the first driver's lap 8) is warned as out of order, as before, and every lap is
    predicted in the order given."""
    laps = _first(sim["laps"], 8)
    by_driver = laps.sort_values(["Driver", "LapNumber"], kind="mergesort")
    _stdin(monkeypatch, _csv(by_driver))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0, err
    assert [(p["driver"], p["lap"]) for p in _preds(out)] == [
        (d, int(float(n))) for d, n in zip(by_driver["Driver"], by_driver["LapNumber"])]
    assert len(_lines(err, "laps must come in the order they end")) == 1 and "switched" not in err
    assert "skipped" not in err


# 4. a header line mid-stream, a line with another field count --------------------------------


def test_a_header_again_is_skipped_and_other_columns_stop_the_stream(sim, run_cli, monkeypatch, tmp_path):
    laps = _first(sim["laps"], 3)
    header = _csv(laps.iloc[:0])
    _stdin(monkeypatch, _csv(laps))
    code, want, want_err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and "warning: line" not in want_err, want_err
    _stdin(monkeypatch, _csv(laps.iloc[:20]) + header + _csv(laps.iloc[20:], header=False))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and out == want and err == want_err, err  # files concatenated: silently the same

    other = header.replace("TyreLife", "TyreAge")
    _stdin(monkeypatch, _csv(laps.iloc[:20]) + other + _csv(laps.iloc[20:], header=False))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 2 and out == "".join(want.splitlines(keepends=True)[:20])
    assert err.replace(want_err, "").strip() == (
        "lapnet: error: stdin, line 22: a header line with other columns than line 1's (new: TyreAge; gone: TyreLife): "
        "the columns changed mid-stream, and the laps after it cannot be read by the first header: give each table its "
        "own file or feed")

    # a finished FILE: the same header again is dropped before the replay, another refused up front
    path = tmp_path / "twice.csv"
    path.write_text(_csv(laps.iloc[:20]) + header + _csv(laps.iloc[20:], header=False))
    code, out, err = run_cli("race", "live", sim["run"], path, "--race-laps", "52")
    assert code == 0 and out == want, err
    path.write_text(_csv(laps.iloc[:20]) + other + _csv(laps.iloc[20:], header=False))
    code, out, err = run_cli("race", "live", sim["run"], path, "--race-laps", "52")
    assert code == 2 and out == "" and err.startswith(f"lapnet: error: {path}, line 22: a header line with other "
                                                      "columns than line 1's (new: TyreAge; gone: TyreLife)")


def test_a_line_with_another_field_count_is_skipped_naming_both_counts(sim, run_cli, monkeypatch):
    laps = _first(sim["laps"], 2)
    lines = _csv(laps).splitlines(keepends=True)
    n = len(laps.columns)
    lines[5] = "0," + lines[5]  # an extra first field (pandas would have taken it as an index)
    lines[8] = lines[8].rsplit(",", 1)[0] + "\n"  # one field short
    _stdin(monkeypatch, "".join(lines))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and len(out.splitlines()) == len(laps) - 2, err
    assert _lines(err, "skipped lap") == [f"lapnet: warning: line 6: skipped lap: {n + 1} fields, the header has {n}",
                                          f"lapnet: warning: line 9: skipped lap: {n - 1} fields, the header has {n}"]


# 5, 6, 13. --follow: whole UTF-8 lines, a truncated or replaced file, a line cut short at Ctrl-C ---


def _follow(run_cli, args, steps, timeout=60.0):
    """Run `race live ... --follow` in-process while `steps` (callables taking the stdout read so
    far, returning True when done) run in a thread; then Ctrl-C, unless the command ended first."""
    import _thread

    done = threading.Event()

    def writer():
        try:
            for step in steps:
                deadline = time.monotonic() + timeout
                while not step(sys.stdout.getvalue()) and not done.is_set():
                    assert time.monotonic() < deadline, "live --follow did not get there in time"
                    time.sleep(0.02)
                if done.is_set():
                    return
        finally:
            if not done.is_set():
                time.sleep(0.3)  # a few polls: live sees what was written last
                if not done.is_set():
                    _thread.interrupt_main()  # Ctrl-C: how a --follow session ends

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        return run_cli(*args)
    finally:
        done.set()
        t.join(5)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_follow_waits_for_a_character_split_by_the_writer_and_says_a_cut_line(sim, run_cli, tmp_path):
    laps = _first(sim["laps"], 1).copy()
    laps.loc[3, "Team"] = "Ästön Märtin"  # a multi-byte character, flushed in two halves
    raw = [ln.encode() for ln in _csv(laps).splitlines(keepends=True)]
    cut = raw[4].index("Ä".encode()) + 1
    grow = tmp_path / "grow.csv"
    grow.write_bytes(b"")

    def write(data, wait_for):
        def step(out):
            if not getattr(step, "written", False):
                _append(grow, data)
                step.written = True
                time.sleep(0.3)  # a few polls with the file as it is now
            return out.count("\n") >= wait_for
        return step

    steps = [write(b"".join(raw[:4]) + raw[4][:cut], 3),
             write(raw[4][cut:] + b"".join(raw[5:8]) + raw[8][:20], 7)]
    code, out, err = _follow(run_cli, ("race", "live", sim["run"], grow, "--follow", "--race-laps", "52",
                                       "--poll", "0.02"), steps)
    assert code == 130, err  # Ctrl-C ends a --follow session: exit 130, as every interrupted command
    assert [p["driver"] for p in _preds(out)] == laps["Driver"].iloc[:7].tolist()
    assert err.strip().splitlines() == ["lapnet: warning: line 9 is incomplete (no line end yet) and was not read",
                                        "lapnet: error: interrupted"]


@pytest.mark.parametrize("how", ["truncated", "replaced"])
def test_follow_refuses_a_file_truncated_or_replaced(sim, run_cli, tmp_path, how):
    laps = _first(sim["laps"], 1)
    text = _csv(laps)
    lines = text.splitlines(keepends=True)
    grow = tmp_path / "grow.csv"
    grow.write_text("".join(lines[:11]))

    def rewrite(out):
        if out.count("\n") < 10:
            return False
        if how == "truncated":
            grow.write_text("".join(lines[:4]))
        else:
            new = tmp_path / "new.csv"
            new.write_text(text)
            os.replace(new, grow)
        return True

    code, out, err = _follow(run_cli, ("race", "live", sim["run"], grow, "--follow", "--race-laps", "52",
                                       "--poll", "0.02"), [rewrite, lambda out: False], timeout=20)
    assert code == 2 and len(out.splitlines()) == 10, err  # what was printed stays
    size = len("".join(lines[:11]).encode())
    assert err.strip().splitlines() == [
        f"lapnet: error: {grow} was truncated (now {len(''.join(lines[:4]).encode())} bytes; {size} had been read): a "
        "file rewritten under --follow cannot be followed on (the laps read so far are in every driver's state): "
        "start lapnet race live again to read it from its start" if how == "truncated" else
        f"lapnet: error: {grow} was replaced by another file (renamed over it) while followed: the laps read so far "
        "are in every driver's state: start lapnet race live again to read the new one"]


def test_a_pipe_is_read_as_it_comes_like_stdin(sim, run_cli, monkeypatch, tmp_path):
    """A FIFO or a process substitution <(...) is a stream: read once as it comes, the same
    lines as the same laps on stdin; --follow on it is refused (it is for a growing file), and
    batch commands, which read a table more than once, say it is not a regular file."""
    import os
    import threading

    text = _csv(_first(sim["laps"], 3))
    _stdin(monkeypatch, text)
    code, want, err = run_cli("race", "live", sim["run"])
    assert code == 0 and len(_preds(want)) > 40, err
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(text), daemon=True)
    writer.start()
    code, out, err = run_cli("race", "live", sim["run"], fifo)
    writer.join(timeout=60)
    assert code == 0 and out == want, err
    code, out, err = run_cli("race", "live", sim["run"], fifo, "--follow")
    assert code == 2 and out == "" and "a pipe is read as it comes, like stdin" in err
    code, out, err = run_cli("race", "predict", sim["run"], fifo)
    assert code == 2 and "not a regular file" in err


# 7. --poll ---------------------------------------------------------------------------------


@pytest.mark.parametrize("poll, shown", [("-1", "-1"), ("0", "0"), ("0.001", "0.001"), ("nan", "nan"), ("inf", "inf"),
                                         ("1e300", "1e+300"), ("3601", "3601")])
def test_poll_must_be_a_finite_number_of_at_least_a_hundredth(sim, run_cli, tmp_path, poll, shown):
    path = tmp_path / "laps.csv"
    path.write_text(_csv(_first(sim["laps"], 1)))
    code, out, err = run_cli("race", "live", sim["run"], path, "--follow", f"--poll={poll}")
    assert code == 2 and out == ""
    assert err.strip() == ("lapnet: error: --poll: seconds between reads of a growing file, a finite number of at "
                           f"least 0.01, at most 3600, got {shown}")


# 8. FastF1's rows after the flag without --race-laps -----------------------------------------


def _generated(row: pd.Series, lap: int, t: float) -> dict:
    return {**row.to_dict(), "LapNumber": f"{lap:.1f}", "Time": f"{t:.3f}", "LapTime": "", "FastF1Generated": "True",
            "IsAccurate": "False", "Position": "", "TrackStatus": "", "PitInTime": "", "PitOutTime": "",
            "LapStartTime": row["Time"]}


def test_rows_after_the_flag_without_a_length_are_skipped_as_batch_drops_them(sim, run_cli, monkeypatch, tmp_path):
    """A 6-lap race that ends (FastF1's untimed rows for lap 7 a minute and more after the last car
    finished) and a car that stopped on lap 4 (its untimed row, mid-race): without --race-laps,
    live prints exactly the laps `race predict --race-laps estimate` does, with its numbers."""
    laps = _first(sim["laps"], 6)
    t = pd.to_numeric(laps["Time"])
    stopped = laps.iloc[(laps["LapNumber"].astype(float) == 3).to_numpy().argmax()]
    keep = laps[~((laps["Driver"] == stopped["Driver"]) & (laps["LapNumber"].astype(float) >= 4))]
    mid = pd.DataFrame([_generated(stopped, 4, float(stopped["Time"]) + 40)])
    last = keep[keep["LapNumber"].astype(float) == 6]
    pace = float(pd.to_numeric(laps["LapTime"]).median())  # FastF1's rows come a minute or more after the last car
    after = pd.DataFrame([_generated(r, 7, t.max() + pace + 3 * k) for k, (_, r) in enumerate(last.iterrows())])
    table = pd.concat([keep, mid, after])
    table = table.iloc[pd.to_numeric(table["Time"]).argsort(kind="mergesort")]
    path = tmp_path / "ended.csv"
    path.write_text(_csv(table))
    _stdin(monkeypatch, _csv(table))
    code, out, err = run_cli("race", "live", sim["run"], "-")
    assert code == 0, err
    first = 2 + int(np.flatnonzero(table["LapNumber"].astype(float).to_numpy() == 7)[0])
    assert (f"lapnet: {len(after)} laps after the chequered flag skipped (rows FastF1 generates without a lap time; "
            f"batch cleaning drops them too; first: line {first})") in err.splitlines()
    live = pd.DataFrame([{"Driver": p["driver"], "LapNumber": p["lap"], "h1": p["forecast"]["h1"],
                          "pit": p["pit_within_3"]} for p in _preds(out)])
    assert len(live) == len(keep) + 1 and (stopped["Driver"], 4) in set(zip(live["Driver"], live["LapNumber"]))

    code, _, err = run_cli("race", "predict", sim["run"], path, "--race-laps", "estimate", "--out", tmp_path / "p",
                           "--quiet")
    assert code == 0, err
    batch = pd.read_csv(tmp_path / "p" / "predictions.csv")
    both = batch.merge(live, on=["Driver", "LapNumber"])
    assert len(both) == len(batch) == len(live)
    np.testing.assert_allclose(both["h1"], both["forecast_h1"], atol=5.1e-5)
    np.testing.assert_allclose(both["pit"], both["pit_prob"], atol=5.1e-5)


@pytest.mark.parametrize("race, lines, kept", [("2023_italian_R", 948, None), ("2023_singapore_R", 1087, ("RUS", 62))])
def test_real_races_without_a_length_keep_the_laps_batch_keeps(sim, run_cli, monkeypatch, f1_data, race, lines, kept):
    """Monza 2023's 18 rows after the flag (lap 52 of 51: within the estimated 61 laps) are skipped,
    and Singapore's RUS, who crashed on the last lap, keeps his row: on stdin without --race-laps
    live predicts exactly the laps batch cleaning keeps."""
    from lapnet.race.io import read_laps
    from lapnet.race.inputs import load_laps

    raw = pd.read_csv(f1_data / f"{race}.csv", dtype=str, keep_default_na=False)
    order = np.argsort(read_laps(f1_data / f"{race}.csv")["Time"].to_numpy(), kind="mergesort")
    _stdin(monkeypatch, _csv(raw.iloc[order]))
    code, out, err = run_cli("race", "live", sim["run"], "-")
    assert code == 0, err
    got = {(p["driver"], p["lap"]) for p in _preds(out)}
    cleaned, _ = load_laps(f1_data / f"{race}.csv")
    assert len(out.splitlines()) == len(got) == lines
    assert got == set(zip(cleaned["Driver"], cleaned["LapNumber"].astype(int)))
    assert kept is None or kept in got
    assert "skipped lap" not in err


# 9. an accurate lap far too slow ----------------------------------------------------------------


def test_an_accurate_lap_ten_times_the_reference_is_warned_and_used_as_batch_does(sim, run_cli, monkeypatch, tmp_path):
    laps = _first(sim["laps"], 6)
    clean = ((laps["LapNumber"].astype(float) == 5) & (laps["IsAccurate"] == "True") & (laps["PitInTime"] == "")
             & (laps["PitOutTime"] == "") & ~laps["TrackStatus"].str.contains("[4567]") & (laps["Deleted"] == "False"))
    assert clean.any()
    i = int(clean.to_numpy().argmax())  # a lap 5 that is Scored
    drv = laps.loc[i, "Driver"]
    slow = laps.copy()
    slow.loc[i, "LapTime"] = str(float(laps.loc[i, "LapTime"]) * 10)
    _stdin(monkeypatch, _csv(slow))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and len(out.splitlines()) == len(laps), err
    lap = next(p for p in _preds(out) if p["driver"] == drv and p["lap"] == 5)
    assert lap["scored"] and lap["lap_time"] == round(float(slow.loc[i, "LapTime"]), 4)  # Scored, as batch scores it
    said = _lines(err, "reference lap")
    assert len(said) == 1, err
    m = re.fullmatch(rf"lapnet: warning: line {i + 2}: {drv} lap 5: lap time {float(slow.loc[i, 'LapTime']):.3f} s is "
                     r"(\d+\.\d) times the race's reference lap \((\d+\.\d{3}) s\), yet IsAccurate \(Scored\): a timing "
                     r"error\? it is used as batch commands use it \(the stint's forecasts start from it\)", said[0])
    assert m is not None, said[0]
    assert 9.0 < float(m.group(1)) < 11.0 and float(m.group(2)) == pytest.approx(float(laps.loc[i, "LapTime"]), rel=0.1)
    # eval and predict warn about the same lap, once, and score it as live does
    feed = tmp_path / "slow.csv"
    slow.to_csv(feed, index=False)
    for cmd in (("eval", sim["run"], feed, "--json", "--quiet"), ("predict", sim["run"], feed, "--quiet", "--out", tmp_path / "p")):
        code, out, err = run_cli("race", *cmd)
        assert code == 0, err
        said = _lines(err, "times the race's reference lap")
        assert said == [f"lapnet: warning: 1 Scored lap more than 3 times the race's reference lap, yet IsAccurate: {drv} "
                        f"lap 5 ({float(slow.loc[i, 'LapTime']):.3f} s): timing errors? used as they are (the stint's "
                        "forecasts start from them), as `lapnet race live` uses them"], err


# 10. the lap's own facts in the JSON line ----------------------------------------------------


def test_the_json_line_carries_the_laps_time_status_position_tyres_and_stint(sim, run_cli, monkeypatch):
    laps = _first(sim["laps"], 2).copy()
    laps.loc[1, ["Position", "TrackStatus", "Compound", "TyreLife", "Stint"]] = ""
    laps.loc[2, "TrackStatus"] = "24"
    _stdin(monkeypatch, _csv(laps))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0, err
    preds = _preds(out)
    assert list(preds[0]) == ["driver", "lap", "lap_time", "scored", "time", "track_status", "position", "compound",
                              "tyre_life", "stint", "forecast", "forecast_next10", "interval90_h1", "forecast_from", "pit_within_3",
                              "phase", "race_laps", "race_laps_estimated", "expected_next10"]
    row = laps.iloc[0]
    assert preds[0]["time"] == round(float(row["Time"]), 3) and preds[0]["track_status"] == row["TrackStatus"]
    assert preds[0]["position"] == int(float(row["Position"])) and preds[0]["compound"] == row["Compound"]
    assert preds[0]["tyre_life"] == int(float(row["TyreLife"])) and preds[0]["stint"] == int(float(row["Stint"]))
    assert {k: preds[1][k] for k in ("position", "track_status", "compound", "tyre_life", "stint")} == dict.fromkeys(
        ("position", "track_status", "compound", "tyre_life", "stint"))
    assert preds[2]["track_status"] == "24"


# 11. a re-send whose content changed ----------------------------------------------------------


def test_a_changed_re_send_is_named_and_an_identical_one_is_a_duplicate(sim, run_cli, monkeypatch):
    laps = _first(sim["laps"], 2)
    i = _row(laps, "VER", 2)
    changed = laps.loc[[i]].assign(Deleted="True", Position="25.0")
    lines = _csv(laps).splitlines(keepends=True)
    feed = lines[:i + 2] + [_csv(changed, header=False), lines[i + 1]] + lines[i + 2:]
    _stdin(monkeypatch, "".join(feed))
    code, out, err = run_cli("race", "live", sim["run"], "-", "--race-laps", "52")
    assert code == 0 and len(out.splitlines()) == len(laps), err
    assert _lines(err, "skipped lap") == [
        f"lapnet: warning: line {i + 3}: skipped lap: VER lap 2: a changed re-send of lap 2, ignored (Position: "
        f"{float(laps.loc[i, 'Position']):g} -> 25, Deleted: False -> True; the lap as first read stands: a step "
        "cannot be taken back)",
        f"lapnet: warning: line {i + 4}: skipped lap: VER lap 2: duplicate lap"]


# 14. drivers without a timed lap ----------------------------------------------------------------


def test_a_driver_without_a_timed_lap_is_not_called_a_non_starter_only(sim, run_cli, tmp_path):
    laps = _first(sim["laps"], 3)
    row = laps.iloc[0]
    out_on_1 = pd.DataFrame([{**_generated(row, 1, float(row["Time"]) + 1), "Driver": "DNF", "DriverNumber": "99"}])
    path = tmp_path / "laps.csv"
    path.write_text(_csv(pd.concat([laps.iloc[:1], out_on_1, laps.iloc[1:]])))
    code, out, err = run_cli("race", "live", sim["run"], path)
    assert code == 0 and len(out.splitlines()) == len(laps), err
    assert ("lapnet: 1 row of DNF skipped: no timed lap (did not start, or out on lap 1: FastF1 generates such rows "
            "without a lap time; batch cleaning drops them too; first: line 3)") in err.splitlines()
    code, out, err = run_cli("race", "live", sim["run"], path, "--driver", "DNF")
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("lapnet: error: --driver DNF: no lap in the stream (DNF: no timed "
                                                   "lap: did not start, or out on lap 1): not on the grid (drivers: ")
