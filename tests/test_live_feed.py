"""`lapnet race live` fed like a timing feed, from a race engineer's replays: laps a little out of
order (--reorder, and the warning without it), a lap re-sent once FastF1 filled its LapTime, a
race length left to estimate (named), a restarted --follow process (--catch-up), the JSON line's
stable key set and pit-now's names, and --follow started before its file exists."""

from __future__ import annotations

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
from test_live_review import _csv, _first, _follow, _lines, _preds, _row, _stdin


@pytest.fixture(scope="module")
def feed(tmp_path_factory, sim_races):
    """A tiny run trained on simulated races 0 and 1 that keeps its FreshStart (pit-now) and its
    ExpectedGap, one that has no ExpectedGap, and race 2's laps (52 laps, 20 drivers) as raw text
    cells in the order they ended, batch's (`features.session_order`)."""
    from lapnet.race.features import session_order
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    _, parts = sim_races
    d = tmp_path_factory.mktemp("live_feed")
    tiny = dict(hidden_size=8, epochs=1, members=1, phase_sim=0, progress=False)
    train_race(parts[:2], d / "run", RaceTrainConfig(**tiny, fresh_start_check=False, expected_gap_check=False))
    train_race(parts[:2], d / "nogap", RaceTrainConfig(**tiny, expected_gap=False))
    return {"run": d / "run", "nogap": d / "nogap", "laps": _by_time(pd.read_csv(parts[2], dtype=str, keep_default_na=False))}


def _seconds(laps: pd.DataFrame) -> np.ndarray:
    t = laps["Time"]
    numeric = pd.to_numeric(t, errors="coerce")
    return (numeric if numeric.notna().all() else pd.to_timedelta(t).dt.total_seconds()).to_numpy(float)


def _by_time(laps: pd.DataFrame) -> pd.DataFrame:
    from lapnet.race.features import session_order

    frame = pd.DataFrame({"Driver": laps["Driver"], "LapNumber": laps["LapNumber"].astype(float), "Time": _seconds(laps)})
    return laps.iloc[session_order(frame)].reset_index(drop=True)


def _jitter(laps: pd.DataFrame, seconds: float, seed: int = 1) -> tuple[pd.DataFrame, float]:
    """`laps` (in the order they ended) as a feed delivers them up to `seconds` late: each lap's
    arrival is its Time plus U(0, seconds); and the largest lag of a lap behind one before it."""
    t = _seconds(laps)
    order = np.argsort(t + np.random.default_rng(seed).uniform(0, seconds, len(t)), kind="mergesort")
    late = float((np.maximum.accumulate(t[order]) - t[order]).max())
    return laps.iloc[order].reset_index(drop=True), late


# 1. laps a little out of order ------------------------------------------------------------------------


def test_reorder_gives_a_jittered_feed_the_ordered_feeds_lines(feed, run_cli, monkeypatch):
    """Laps up to 2 s late: with --reorder 3 every JSON line is the ordered feed's, nothing warned;
    without it the calls move and one warning says so, naming --reorder, with a count at the end."""
    laps = _first(feed["laps"], 10)
    jittered, late = _jitter(laps, 2.0)
    assert 0.5 < late < 3.0
    _stdin(monkeypatch, _csv(laps))
    code, want, want_err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")
    assert code == 0 and "before a lap already processed" not in want_err, want_err
    _stdin(monkeypatch, _csv(jittered))
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52", "--reorder", "3")
    assert code == 0 and out == want and err == want_err, err

    _stdin(monkeypatch, _csv(jittered))
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")
    assert code == 0 and out != want and len(out.splitlines()) == len(laps), err
    said = _lines(err, "before a lap already processed")
    assert len(said) == 2, err  # the first such lap, and the count when the stream ends
    assert re.match(r"lapnet: warning: line \d+: [A-Z]{3} lap \d+ ended \d\.\d{3} s of session Time before a lap "
                    r"already processed: .*--reorder SECONDS \(a little more than the feed's worst lag\) holds each lap",
                    said[0]), said[0]
    m = re.fullmatch(r"lapnet: warning: (\d+) laps in all ended before a lap already processed \(by up to (\d\.\d{3}) s of "
                     r"session Time\): their calls, and those of the laps around them, read the field out of order; "
                     r"--reorder SECONDS puts laps up to that late in order", said[1])
    assert m is not None and int(m.group(1)) > 1 and float(m.group(2)) == pytest.approx(late, abs=1e-3), said[1]

    _stdin(monkeypatch, _csv(jittered))  # a window too short: the laps later than it are said, as without
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52", "--reorder", "0.2")
    assert code == 0 and "a larger --reorder holds laps longer" in err and "a larger --reorder than 0.2 s" in err, err


def test_reorder_on_a_real_race_jittered_by_a_second(feed, run_cli, monkeypatch, f1_data):
    """Monza 2023 (948 lines) delivered up to 1 s late: --reorder 1.5 gives the ordered feed's lines."""
    laps = _by_time(pd.read_csv(f1_data / "2023_italian_R.csv", dtype=str, keep_default_na=False))
    jittered, late = _jitter(laps, 1.0)
    assert 0.3 < late < 1.5
    _stdin(monkeypatch, _csv(laps))
    code, want, _ = run_cli("race", "live", feed["run"], "-", "--race-laps", "51")
    assert code == 0 and len(want.splitlines()) == 948
    _stdin(monkeypatch, _csv(jittered))
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "51", "--reorder", "1.5")
    assert code == 0 and out == want and "before a lap already processed" not in err, err


def test_reorder_lets_the_laps_it_holds_go_when_the_feed_is_idle(feed, run_cli, tmp_path, monkeypatch):
    """The last laps of a feed have no later lap to release them: once the input has been quiet for
    the window (wall seconds) they are processed, from a followed FILE and from a pipe on stdin."""
    laps = _first(feed["laps"], 3)
    jittered, late = _jitter(laps, 0.4)
    _stdin(monkeypatch, _csv(laps))
    code, want, _ = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")
    assert code == 0
    n = len(laps)

    grow = tmp_path / "grow.csv"
    grow.write_text(_csv(jittered))
    code, out, err = _follow(run_cli, ("race", "live", feed["run"], grow, "--follow", "--race-laps", "52", "--poll",
                                       "0.02", "--reorder", "0.5"), [lambda out: out.count("\n") >= n])
    assert code == 130 and out == want, err

    r, w = os.pipe()
    monkeypatch.setattr("sys.stdin", os.fdopen(r, encoding="utf-8"))
    seen = {}

    def writer():
        with os.fdopen(w, "w") as f:
            f.write(_csv(jittered))
            f.flush()
            deadline = time.monotonic() + 60
            while sys.stdout.getvalue().count("\n") < n and time.monotonic() < deadline:
                time.sleep(0.02)
            seen["lines"] = sys.stdout.getvalue().count("\n")  # before the input ends

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52", "--reorder", "0.5")
    t.join(10)
    assert code == 0 and out == want and seen["lines"] == n, err


# 1e-9: a pipe waits for input --reorder seconds at a time, so a near-zero value spun a core while the feed was quiet
@pytest.mark.parametrize("value, shown", [("-1", "-1"), ("nan", "nan"), ("601", "601"), ("1e-9", "1e-09")])
def test_reorder_must_be_a_number_of_seconds(feed, run_cli, tmp_path, value, shown):
    path = tmp_path / "laps.csv"
    path.write_text(_csv(_first(feed["laps"], 1)))
    code, out, err = run_cli("race", "live", feed["run"], path, f"--reorder={value}")
    assert code == 2 and out == ""
    assert err.strip() == ("lapnet: error: --reorder: seconds of session Time a lap is held to be put in the order laps "
                           f"ended, 0 (off) or a finite number from 0.01 to 600, got {shown}")


# 2. a lap re-sent once FastF1 filled its LapTime ------------------------------------------------------


def _untimed(laps: pd.DataFrame, i: int) -> pd.DataFrame:
    """Row i as FastF1 first sends a lap whose time it has not filled yet."""
    return laps.loc[[i]].assign(LapTime="", IsAccurate="False")


def test_a_re_send_after_the_drivers_next_lap_is_named_a_re_send(feed, run_cli, monkeypatch):
    """VER's lap 2 first without its LapTime, then again with it after his lap 3: said as a changed
    re-send of lap 2, ignored (not 'out of order'), the lines those of the feed without it; the
    same re-send unchanged is a duplicate."""
    laps = _first(feed["laps"], 4)
    i, j = _row(laps, "VER", 2), _row(laps, "VER", 3)
    first = laps.copy()
    first.loc[[i]] = _untimed(laps, i)
    without = _csv(first)
    _stdin(monkeypatch, without)
    code, want, _ = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")
    assert code == 0
    lines = without.splitlines(keepends=True)
    for resend, said in ((laps.loc[[i]], "a changed re-send of lap 2, ignored ("), (first.loc[[i]], "duplicate lap (")):
        _stdin(monkeypatch, "".join(lines[:j + 2] + [_csv(resend, header=False)] + lines[j + 2:]))
        code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")
        assert code == 0 and out == want, err
        skipped = _lines(err, "skipped lap")
        assert len(skipped) == 1 and skipped[0].startswith(f"lapnet: warning: line {j + 3}: skipped lap: VER lap 2: {said}")
        assert "out of order" not in err
    lap_time = f"{float(laps.loc[i, 'LapTime']):.3f}".rstrip("0").rstrip(".")
    assert skipped[0].endswith("duplicate lap (a re-send of lap 2, after lap 3)")
    _stdin(monkeypatch, "".join(lines[:j + 2] + [_csv(laps.loc[[i]], header=False)] + lines[j + 2:]))
    err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")[2]
    assert _lines(err, "skipped lap") == [
        f"lapnet: warning: line {j + 3}: skipped lap: VER lap 2: a changed re-send of lap 2, ignored (LapTime: missing -> "
        f"{lap_time}, IsAccurate: False -> True; the lap as first read stands: a step cannot be taken back, and VER's "
        "lap 3 has been read since)"]


def test_reorder_takes_a_correction_that_comes_while_the_lap_is_held(feed, run_cli, monkeypatch):
    """With --reorder, VER's lap 2 re-sent with its LapTime two lines later replaces the untimed one
    still held: the lines are those of the feed that had the lap timed from the start (as the
    finished race's table has it); an unchanged re-send while held is a duplicate."""
    laps = _first(feed["laps"], 4)
    i = _row(laps, "VER", 2)
    t = _seconds(laps)
    assert t[i + 2] - t[i] < 10  # the re-send comes within the window
    _stdin(monkeypatch, _csv(laps))
    code, want, _ = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")
    assert code == 0
    lines = _csv(laps).splitlines(keepends=True)
    sent = lines[:i + 1] + [_csv(_untimed(laps, i), header=False)] + lines[i + 2:i + 4] + [lines[i + 1]] + lines[i + 4:]
    _stdin(monkeypatch, "".join(sent))
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52", "--reorder", "10")
    assert code == 0 and out == want, err
    lap_time = f"{float(laps.loc[i, 'LapTime']):.3f}".rstrip("0").rstrip(".")
    assert _lines(err, "VER lap 2") == [
        f"lapnet: warning: line {i + 5}: VER lap 2: a changed re-send of lap 2 (line {i + 2}) while --reorder held it: "
        f"this one is used (LapTime: missing -> {lap_time}, IsAccurate: False -> True)"]
    _stdin(monkeypatch, "".join(lines[:i + 4] + [lines[i + 1]] + lines[i + 4:]))
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52", "--reorder", "10")
    assert code == 0 and out == want
    assert _lines(err, "skipped lap") == [f"lapnet: warning: line {i + 5}: skipped lap: VER lap 2: duplicate lap"]


# 3. a race length left to estimate --------------------------------------------------------------------


def test_an_estimated_race_length_is_named_once_with_what_depends_on_it(feed, run_cli, monkeypatch):
    laps = _first(feed["laps"], 3)
    _stdin(monkeypatch, _csv(laps))
    code, out, err = run_cli("race", "live", feed["run"], "-")
    assert code == 0, err
    said = _lines(err, "--race-laps not given")
    assert len(said) == 1, err
    m = re.match(r"lapnet: warning: line (\d+): --race-laps not given: estimating the race length from its green-flag "
                 r"pace: (\d+) laps \(from the race's first Scored lap", said[0])
    assert m is not None, said[0]
    preds = _preds(out)
    k = int(m.group(1)) - 2  # every line predicted: input line k + 2 is JSON line k
    assert preds[k]["scored"] and not any(p["scored"] for p in preds[:k])  # said at the first lap that set the pace
    assert preds[k]["race_laps"] == int(m.group(2)) and preds[k]["race_laps_estimated"]
    assert "pit-now (none with fewer than 3 laps to go) and its laps_to_flag depend on it: give --race-laps N" in said[0]

    _stdin(monkeypatch, _csv(_first(feed["laps"], 1)))  # lap 1 alone: no lap is Scored, the default is used
    code, out, err = run_cli("race", "live", feed["run"], "-")
    assert code == 0, err
    said = _lines(err, "--race-laps not given")
    assert len(said) == 1 and said[0].startswith("lapnet: warning: --race-laps not given: estimating the race length "
                                                 "from its green-flag pace: 60 laps (no lap was Scored"), err


# 4. a restarted --follow process ---------------------------------------------------------------------


def test_catch_up_marks_or_skips_the_laps_already_in_the_file(feed, run_cli, tmp_path):
    """A --follow process started on a file that already holds laps 1-2 (a restart): with --catch-up
    mark every line says "catch_up" (true on those laps), with skip they are read but not printed;
    one line says when the process has caught up; the laps after are the same either way."""
    laps = _first(feed["laps"], 3)
    old = laps[laps["LapNumber"].astype(float) <= 2]
    n_old = len(old)
    runs = {}
    for how in ("mark", "skip"):
        grow = tmp_path / f"{how}.csv"
        grow.write_text(_csv(old))

        def append(out, grow=grow):
            with open(grow, "a") as f:
                f.write(_csv(laps.iloc[n_old:], header=False))
            return True

        printed = n_old if how == "mark" else 0
        code, out, err = _follow(run_cli, ("race", "live", feed["run"], grow, "--follow", "--race-laps", "52", "--poll",
                                           "0.02", "--catch-up", how),
                                 [lambda out: "caught up with" in sys.stderr.getvalue(), append,
                                  lambda out, k=printed + len(laps) - n_old: out.count("\n") >= k])
        assert code == 130, err
        runs[how] = _preds(out)
        tail = ("(their JSON lines say \"catch_up\": true)" if how == "mark" else ", not printed (--catch-up skip)")
        assert (f"lapnet: caught up with {grow}: the {n_old} lap lines already in it when live started (lines "
                f"2-{n_old + 1}) were read{' ' if how == 'mark' else ''}{tail}; from here on, laps as they come") in err.splitlines()
    marked = runs["mark"]
    assert [p["catch_up"] for p in marked] == [True] * n_old + [False] * (len(laps) - n_old)
    assert [{k: v for k, v in p.items() if k != "catch_up"} for p in marked[n_old:]] == runs["skip"]
    assert all("catch_up" not in p for p in runs["skip"])


def test_catch_up_is_for_follow_only(feed, run_cli, tmp_path):
    path = tmp_path / "laps.csv"
    path.write_text(_csv(_first(feed["laps"], 1)))
    code, out, err = run_cli("race", "live", feed["run"], path, "--catch-up", "skip")
    assert code == 2 and out == "" and err.strip() == (
        "lapnet: error: --catch-up skip: for --follow (the laps already in the followed FILE when live started); stdin "
        "and a finished FILE have no such laps to tell apart")
    code, out, err = run_cli("race", "live", feed["run"], path, "--follow", "--catch-up", "some")
    assert code == 2 and err.strip() == "lapnet: error: --catch-up: one of print, mark, skip, got 'some'"


# 5. the JSON line: one key set per run, pit-now's names ----------------------------------------------


def test_expected_next10_is_always_there_null_without_the_runs_gap(feed, run_cli, monkeypatch):
    text = _csv(_first(feed["laps"], 3))
    for run, kept in ((feed["nogap"], False), (feed["run"], True)):
        _stdin(monkeypatch, text)
        code, out, err = run_cli("race", "live", run, "-", "--race-laps", "52")
        assert code == 0, err
        preds = _preds(out)
        assert {tuple(p) for p in preds} == {tuple(preds[0])} and "expected_next10" in preds[0]
        if kept:
            assert all(len(p["expected_next10"]) == 10 for p in preds if p["forecast_from"] == "stint")
        else:
            assert all(p["expected_next10"] is None for p in preds)


def test_no_green_pace_yet_keeps_the_shapes_with_nulls(feed, run_cli, monkeypatch):
    """A feed without session Time cannot place the field's pace: the forecast, its interval and the
    mean laps are nulls in the shapes a line with numbers has (as docs/guide/race.md shows)."""
    _stdin(monkeypatch, _csv(_first(feed["laps"], 1).drop(columns=["Time"])))
    code, out, err = run_cli("race", "live", feed["run"], "-", "--race-laps", "52")
    assert code == 0, err
    p = next(p for p in _preds(out) if p["forecast_from"] == "no_green_pace_yet")
    assert p["forecast"] == {"h1": None, "h5": None, "h10": None} and p["forecast_next10"] == [None] * 10
    assert p["interval90_h1"] == [None, None] and p["expected_next10"] == [None] * 10


def test_live_pit_now_uses_the_names_of_pit_now_json(feed, run_cli, monkeypatch, tmp_path):
    """The fields `race live --pit-now` and `race pit-now --json` share have the same names and
    numbers: stop_cost_s and in_out_s (not stop_cost / in_out), and each set's summary."""
    laps = _first(feed["laps"], 12)
    path = tmp_path / "laps.csv"
    path.write_text(_csv(laps))
    code, out, err = run_cli("race", "live", feed["run"], path, "--race-laps", "52", "--pit-now")
    assert code == 0, err
    live = next(p["pit_now"] for p in _preds(out) if p["driver"] == "VER" and p["lap"] == 10)
    code, out, err = run_cli("race", "pit-now", feed["run"], path, "--driver", "VER", "--lap", "10", "--race-laps", "52",
                             "--json")
    assert code == 0, err
    batch = json.loads(out)
    assert "stop_cost" not in live and "in_out" not in live
    assert {k for k in batch if k in live} == {"laps_to_flag", "under_safety_car", "stop_cost_s", "stop_cost_stops",
                                               "in_out_s", "rule_needs", "to_flag_by", "rejoin", "sprint"}
    for k in ("stop_cost_s", "in_out_s"):
        assert live[k] == pytest.approx(batch[k], abs=2e-3)
    for k in ("laps_to_flag", "under_safety_car", "stop_cost_stops", "rule_needs", "to_flag_by", "sprint"):
        assert live[k] == batch[k], k
    any_set = next(c for c in batch["compounds"] if c["compound"] == "ANY")
    shared = {k for k in any_set if k in live["ANY"]}
    assert shared == {"gain_per_lap", "delta", "payback_laps", "now_vs_later", "now_vs_later_to_flag"}
    for k in shared:
        np.testing.assert_allclose(np.array(live["ANY"][k], float), np.array(any_set[k], float), atol=5e-2)


# 6. --follow started before the feed's file exists -----------------------------------------------------


def test_follow_waits_for_a_file_that_does_not_exist_yet(feed, run_cli, tmp_path):
    laps = _first(feed["laps"], 1)
    path = tmp_path / "later.csv"
    notice = f"lapnet: {path} does not exist yet: waiting for it to appear (--follow; Ctrl-C to stop)"

    def appear(out):
        if "does not exist yet" not in sys.stderr.getvalue():
            return False
        time.sleep(0.2)  # a few polls without the file
        tmp = tmp_path / "writing.csv"
        tmp.write_text(_csv(laps))
        os.replace(tmp, path)
        return True

    code, out, err = _follow(run_cli, ("race", "live", feed["run"], path, "--follow", "--race-laps", "52", "--poll", "0.02"),
                             [appear, lambda out: out.count("\n") >= len(laps)])
    assert code == 130 and len(_preds(out)) == len(laps), err
    assert err.strip().splitlines() == [notice, "lapnet: error: interrupted"]

    never = tmp_path / "never.csv"
    code, out, err = _follow(run_cli, ("race", "live", feed["run"], never, "--follow", "--poll", "0.02"),
                             [lambda out: "does not exist yet" in sys.stderr.getvalue()])
    assert code == 130 and out == ""  # Ctrl-C while waiting: exit 130 as any interrupted stream
    assert err.strip().splitlines() == [notice.replace(str(path), str(never)), "lapnet: error: interrupted"]

    nowhere = tmp_path / "no_such_folder" / "feed.csv"
    code, out, err = run_cli("race", "live", feed["run"], nowhere, "--follow")
    assert code == 2 and out == "" and err.strip() == (
        f"lapnet: error: {nowhere}: no such file, and no folder {nowhere.parent} for it to appear in")
    code, out, err = run_cli("race", "live", feed["run"], nowhere)  # not followed: no such file, as before
    assert code == 2 and err.strip() == f"lapnet: error: {nowhere}: no such file"
