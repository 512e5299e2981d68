"""lapnet as a library in a long-lived process (a Jupyter kernel), and text from data on stderr:
an interrupt ends `follow_race` on a quiet pipe promptly (1); a caller's mistakes are one
LapnetError, and `follow_race` says it was interrupted (2); writing a checkpoint leaves the
process's umask alone (3); control characters from data never reach the terminal raw (4); a
vocab.json entry that is not a Unicode character is refused (5)."""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from lapnet.errors import LapnetError

TINY = dict(hidden_size=8, epochs=1, members=1, phase_sim=0, progress=False)
SRC = str(Path(__file__).resolve().parents[1] / "src")
HOSTILE = "\x1b]0;PWNED\x07"  # an OSC sequence: retitles the terminal when printed raw
SHOWN = "\\x1b]0;PWNED\\x07"  # what a message shows instead


@pytest.fixture(scope="module")
def live(tmp_path_factory, sim_races):
    """A tiny race run (simulated races 0 and 1) and race 2's laps in the order they ended, as CSV lines."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    _, parts = sim_races
    d = tmp_path_factory.mktemp("library_errors")
    train_race(parts[:2], d / "run", RaceTrainConfig(**TINY))
    laps = pd.read_csv(parts[2], dtype=str, keep_default_na=False)
    laps = laps.iloc[pd.to_numeric(laps["Time"]).argsort(kind="mergesort")].reset_index(drop=True)
    return d / "run", laps.to_csv(index=False).splitlines(keepends=True), parts[2]


def _quiet_writer(fifo: Path, text: str, release: threading.Event, hold: float) -> threading.Thread:
    """A feed that sends `text`, then goes quiet with its pipe still open (a live timing feed
    between laps) until `release` (or `hold` seconds: a test that would hang ends anyway)."""

    def write() -> None:
        with open(fifo, "w") as f:
            f.write(text)
            f.flush()
            release.wait(hold)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lapnet-live-reader"]


# ---------------------------------------------------------------------------------------
# 1. an interrupt ends follow_race on a quiet FIFO with --reorder at once


def test_an_interrupt_ends_follow_race_on_a_quiet_pipe_with_reorder_promptly(live, tmp_path):
    """The reader thread that --reorder needs on a pipe sat in readline() holding the file's lock:
    closing the stream at Ctrl-C waited on that lock until the feed's writer spoke or closed
    (21 s after SIGTERM in the review). The stream is now the thread's to close."""
    from lapnet.race.live import follow_race

    run, lines, _ = live
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    release = threading.Event()
    writer = _quiet_writer(fifo, "".join(lines[:61]), release, hold=20)
    got: list[dict] = []
    said: list[str] = []
    stopped_at: list[float] = []

    def ctrl_c() -> None:
        deadline = time.monotonic() + 60
        while len(got) < 40 and time.monotonic() < deadline:  # the laps sent are through
            time.sleep(0.05)
        time.sleep(0.3)
        stopped_at.append(time.monotonic())
        _thread.interrupt_main()

    threading.Thread(target=ctrl_c, daemon=True).start()
    before = set(_readers())
    try:
        res = follow_race(run, fifo, reorder=1.0, race_laps=52, emit=got.append, say=said.append)
        returned = time.monotonic()
        assert stopped_at, "follow_race returned before it was interrupted"
        assert returned - stopped_at[0] < 5.0, f"follow_race took {returned - stopped_at[0]:.1f} s to stop"
        assert res["stopped"] == "interrupted" and res["laps"] == len(got) >= 40
        reader = [t for t in _readers() if t not in before]
        assert len(reader) == 1, "the reader thread still waits on the quiet feed"
    finally:
        release.set()  # the writer closes: the reader's read returns, it closes the stream and ends
    writer.join(10)
    reader[0].join(10)
    assert not reader[0].is_alive(), "the reader thread outlived its feed"
    if os.path.isdir("/proc/self/fd"):  # and it closed the pipe
        assert os.path.realpath(fifo) not in {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}


def test_race_live_on_a_quiet_pipe_with_reorder_exits_130_soon_after_sigterm(live, tmp_path):
    run, lines, _ = live
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    release = threading.Event()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "lapnet", "race", "live", str(run), str(fifo), "--reorder", "1",
                             "--race-laps", "52"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    writer = _quiet_writer(fifo, "".join(lines[:61]), release, hold=40)
    try:
        first = proc.stdout.readline()  # a lap through: the stream is read
        assert first, proc.stderr.read()
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        release.set()
    writer.join(10)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "lapnet: error: interrupted" and "Traceback" not in err
    assert took < 10.0, f"exited {took:.1f} s after SIGTERM"
    assert json.loads(first)["lap"] >= 1


# ---------------------------------------------------------------------------------------
# 2. a library caller's mistakes: one LapnetError each; follow_race says how it stopped


def test_follow_race_refuses_a_missing_file_or_a_directory_in_one_line(live, tmp_path):
    from lapnet.race.live import follow_race

    run, _, _ = live
    missing = tmp_path / "missing.csv"
    with pytest.raises(LapnetError) as e:
        follow_race(run, missing, emit=lambda d: None, say=lambda s: None)
    assert str(e.value) == f"{missing}: no such file"
    with pytest.raises(LapnetError) as e:
        follow_race(run, tmp_path, emit=lambda d: None, say=lambda s: None)
    assert str(e.value) == f"{tmp_path}: is a directory, not a lap table (live reads a CSV file)"


def test_follow_race_to_the_end_of_its_input_has_no_stopped_flag(live, tmp_path):
    from lapnet.race.live import follow_race

    run, lines, _ = live
    feed = tmp_path / "laps.csv"
    feed.write_text("".join(lines[:41]))
    got: list[dict] = []
    res = follow_race(run, feed, race_laps=52, emit=got.append, say=lambda s: None)
    assert res["stopped"] == "end" and res["laps"] == len(got) == 40


def test_predict_race_refuses_an_out_that_is_a_file_before_the_nets_run(live, tmp_path, monkeypatch):
    from lapnet.race import prediction

    run, _, laps = live
    out = tmp_path / "notes.txt"
    out.write_text("mine\n")
    monkeypatch.setattr(prediction, "run_outputs", lambda *a, **k: pytest.fail("the nets ran"))
    with pytest.raises(LapnetError) as e:
        prediction.predict_race(run, laps, driver="VER", out=out)
    assert str(e.value) == (f"out {out}: is a file, not a folder: predict_race writes predictions.csv and its figures "
                            "into a folder (created if missing): give a folder's path")
    assert out.read_text() == "mine\n"


def test_clean_laps_reads_a_path_and_refuses_what_is_not_a_table(live):
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import read_laps

    _, _, laps = live
    by_path, report = clean_laps(str(laps))
    by_table, report2 = clean_laps(read_laps(laps))
    pd.testing.assert_frame_equal(by_path, by_table)
    assert report.summary() == report2.summary() and report.summary()["rows_in"] == len(read_laps(laps))
    pd.testing.assert_frame_equal(clean_laps(Path(laps))[0], by_table)
    with pytest.raises(LapnetError) as e:
        clean_laps(42)
    assert str(e.value) == ("clean_laps: got a int: give a lap table read with lapnet.race.io.read_laps (a DataFrame) "
                            "or the path of a CSV or Parquet file")


@pytest.mark.parametrize("length", [True, False, 2.5, 0, -3, "x", None])
def test_eval_and_predict_refuse_a_race_length_that_is_not_a_whole_number_of_laps(live, length):
    """True was taken as 1 lap (a bool is an int), -3 as the table's last lap (with a warning)."""
    from lapnet.race.evaluation import eval_race
    from lapnet.race.prediction import predict_race

    run, _, laps = live
    want = f"race_length: a whole number of laps (at least 1), 'file' or 'estimate', got {length!r}"
    with pytest.raises(LapnetError) as e:
        eval_race(run, [laps], race_length=length)
    assert str(e.value) == want
    with pytest.raises(LapnetError) as e:
        predict_race(run, laps, race_length=length)
    assert str(e.value) == want


def test_a_race_length_of_numpy_laps_or_a_word_is_taken(live):
    import numpy as np

    from lapnet.race.inputs import check_race_length

    for ok in (1, 52, np.int64(52), "file", "estimate"):
        check_race_length(ok)  # no error
    from lapnet.race.evaluation import eval_race

    run, _, laps = live
    assert eval_race(run, [laps], race_length=np.int64(60))["race_laps"] == {"sim_0002": 60}


# ---------------------------------------------------------------------------------------
# 3. the umask is read, never set


def test_an_atomic_write_never_changes_the_process_umask(tmp_path, monkeypatch):
    """umask(0) then umask(old) left a window in which a file another thread of a kernel created
    got mode 0666: the umask is read from /proc on Linux."""
    from lapnet import checkpoint

    old = os.umask(0o027)
    try:
        calls: list[int] = []
        real = os.umask
        monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
        checkpoint.atomic_write_bytes(tmp_path / "a.bin", b"x")
        assert (tmp_path / "a.bin").read_bytes() == b"x"
        assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
        if sys.platform.startswith("linux"):
            assert calls == []  # read from /proc/self/status, never set
    finally:
        os.umask(old)


def test_the_umask_fallback_never_opens_files_up(monkeypatch):
    """Where /proc cannot tell, the umask is read by setting it (once per process, under a lock) to
    077 for the instant: a file made meanwhile is the owner's alone, never everyone's."""
    from lapnet import checkpoint

    old = os.umask(0o022)
    try:
        monkeypatch.setattr(checkpoint, "_UMASK_STATUS", "/nonexistent/status")
        monkeypatch.setattr(checkpoint, "_fallback_umask", None)
        seen: list[int] = []
        real = os.umask
        monkeypatch.setattr(os, "umask", lambda m: seen.append(m) or real(m))
        assert checkpoint.process_umask() == 0o022
        assert checkpoint.process_umask() == 0o022  # cached: set once per process
        assert seen == [0o077, 0o022]
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------
# 4. control characters from data on stderr


def _hostile_table(laps: Path, tmp_path: Path, **cols: str) -> Path:
    df = pd.read_csv(laps, dtype=str, keep_default_na=False)
    for c, v in cols.items():
        df[c] = v
    path = tmp_path / "hostile.csv"
    df.to_csv(path, index=False)
    return path


def test_race_clean_shows_a_hostile_race_name_escaped(live, tmp_path, run_cli):
    _, _, laps = live
    path = _hostile_table(laps, tmp_path, Race=HOSTILE, IsAccurate="False")  # no Scored lap: a warning names it
    code, _, err = run_cli("race", "clean", path)
    assert code == 0, err
    assert "\x1b" not in err and "\x07" not in err
    assert f"lapnet: warning: race '{SHOWN}' has no Scored lap" in err
    assert "\\x1b]0;PWNED" in err.split("\n", 1)[1]  # the table's row (rich itself drops the BEL)


def test_library_warnings_of_race_data_commands_are_escaped(capsys):
    import warnings

    from lapnet.cli.race_data import _warnings_as_lines

    with _warnings_as_lines():
        warnings.warn(f"race '{HOSTILE}' has\nno Scored lap")
    assert capsys.readouterr().err == f"lapnet: warning: race '{SHOWN}' has no Scored lap\n"


def test_race_fetch_shows_what_fastf1_said_escaped(run_cli, tmp_path, monkeypatch):
    from lapnet.race import fetch

    info = {"out": str(tmp_path / "x.csv"), "event": f"Grand Prix {HOSTILE}", "laps": 3,
            "warnings": [f"driver {HOSTILE} has no laps"], "hint": f"next: {HOSTILE}", "note": f"{HOSTILE} note"}
    monkeypatch.setattr(fetch, "fetch_race", lambda *a, **k: dict(info))
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "x.csv")
    assert code == 0, err
    assert "\x1b" not in err and "\x07" not in err
    assert f"lapnet: warning: driver {SHOWN} has no laps\n" in err
    assert f"\nnext: {SHOWN}\n" in err and f"\nnote: {SHOWN} note\n" in err
    assert "Grand Prix \\x1b]0;PWNED" in err


def test_race_live_warnings_show_a_hostile_driver_escaped(live, tmp_path, run_cli):
    """A duplicate lap of a driver named with an escape sequence: the warning naming him."""
    _, lines, _ = live
    run = live[0]
    head, body = lines[0], lines[1:41]
    cells = head.rstrip("\n").split(",")
    drv = cells.index("Driver")
    first = body[0].rstrip("\n").split(",")
    first[drv] = HOSTILE
    hostile = ",".join(first) + "\n"
    feed = tmp_path / "feed.csv"
    feed.write_text(head + hostile + "".join(body[1:]) + hostile)
    code, _, err = run_cli("race", "live", run, feed, "--race-laps", "52")
    assert "\x1b" not in err and "\x07" not in err, err
    assert SHOWN in err


def test_follow_race_default_say_escapes_control_characters(capsys):
    from lapnet.race.live.follow import _print_err

    _print_err(f"lapnet: warning: line 3: skipped lap: {HOSTILE} lap 2: duplicate lap")
    assert capsys.readouterr().err == f"lapnet: warning: line 3: skipped lap: {SHOWN} lap 2: duplicate lap\n"


def test_text_lines_on_stderr_are_escaped(tmp_path, monkeypatch, capsys):
    from lapnet import text_runs
    from lapnet.cli import text

    text._say_saved({"saved_model": {"step": HOSTILE}, "validation": False})
    assert capsys.readouterr().err == f"lapnet: saved model: step {SHOWN}, the last (--val-frac 0: no validation)\n"

    def refuse(run, result):
        raise OSError(13, f"Permission {HOSTILE} denied")

    monkeypatch.setattr(text_runs, "save_eval", refuse)
    run = tmp_path / "run"
    text._store_eval(run, {})
    assert capsys.readouterr().err == (f"lapnet: warning: the result was not stored in {run / 'metrics.json'} "
                                       f"(Permission {SHOWN} denied): {run} is unchanged\n")


def test_summary_tables_and_console_lines_show_control_characters_escaped(capsys):
    from lapnet.cli.common import summary_table
    from lapnet.console import console

    summary_table(f"title {HOSTILE}", {f"key {HOSTILE}": f"value {HOSTILE}"})
    summary_table("rows", [{f"col \x1b[2J": f"cell \x9b31m", "n": 1}], wide=True)
    console.print(f"note: {HOSTILE} [bold]x[/bold]")
    err = capsys.readouterr().err
    assert not any(c in err for c in "\x1b\x07\x9b"), repr(err)
    for s in ("title \\x1b]0;PWNED", "key \\x1b]0;PWNED", "value \\x1b]0;PWNED", "col \\x1b[2J", "cell \\x9b31m",
              "note: \\x1b]0;PWNED x"):
        assert s in err, (s, err)


def test_the_cleaning_table_shows_race_names_as_text(capsys):
    """A race named '[/x]' crashed the cleaning table (rich markup); one with ESC drove the terminal."""
    from lapnet.console import console
    from lapnet.race.clean import CleanReport, RaceCleanReport

    races = [RaceCleanReport(race=name, rows_in=3, rows_out=3, scored=1) for name in ("a[/x]", "b\x1b[2J")]
    console.print(CleanReport(races=races).table())
    err = capsys.readouterr().err
    assert "a[/x]" in err and "b\\x1b[2J" in err and "\x1b" not in err


# ---------------------------------------------------------------------------------------
# 5. vocab.json: characters only


@pytest.mark.parametrize("entry, shown", [("\ud800", "U+D800"), ("\udfff", "U+DFFF")])
def test_a_vocab_with_a_lone_surrogate_is_refused_in_one_line(entry, shown):
    from lapnet.data.text import Vocab

    with pytest.raises(LapnetError) as e:
        Vocab.from_json({"chars": ["a", entry, "b"]}, "runs/x/vocab.json")
    assert str(e.value) == (f"runs/x/vocab.json: entry 2 is {shown}, a lone surrogate, not a character: the file was "
                            "altered or not written by lapnet (train the run again)")
    assert Vocab.from_json({"chars": ["a", "\U0001F600", "b"]}).chars == "a\U0001F600b"


def test_text_sample_refuses_a_vocab_with_a_lone_surrogate(tmp_path, run_cli):
    run = tmp_path / "run"
    code, _, err = run_cli("text", "train", "--hidden", "8", "--embed", "4", "--seq-len", "16", "--batch", "4",
                           "--epochs", "1", "--out", run, "--quiet")
    assert code == 0, err
    vocab = json.loads((run / "vocab.json").read_text())
    vocab["chars"][3] = "\ud800"
    (run / "vocab.json").write_text(json.dumps(vocab))
    code, out, err = run_cli("text", "sample", run, "--length", "20")
    assert code == 2 and out == "", err
    assert err.strip().splitlines() == [f"lapnet: error: {run / 'vocab.json'}: entry 4 is U+D800, a lone surrogate, not a "
                                        "character: the file was altered or not written by lapnet (train the run again)"]
