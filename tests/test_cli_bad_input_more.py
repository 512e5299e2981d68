"""Bad input found by a hostile tester: closed stdin/stdout, integers beyond 64 bits, pipes and
devices as inputs, huge series values, unfinished runs. Each is one line on stderr, exit 2,
no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIG = "99999999999999999999"
SEED = str(2**64)


def _refused(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lapnet: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _lapnet(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lapnet", *args], capture_output=False, text=True,
                          stderr=subprocess.PIPE, timeout=120, **kw)


def test_closed_stdout_is_refused(tmp_path):
    r = _lapnet(["params"], stdout=subprocess.DEVNULL, pass_fds=(), preexec_fn=lambda: os.close(1), cwd=tmp_path)
    assert "standard output is closed" in _refused(r.returncode, r.stderr)


def test_closed_stdin_is_refused_when_read(tmp_path):
    r = _lapnet(["text", "train", "-", "--out", str(tmp_path / "t"), "--epochs", "1"], stdout=subprocess.DEVNULL,
                preexec_fn=lambda: os.close(0), cwd=tmp_path)
    assert "standard input is closed" in _refused(r.returncode, r.stderr)
    assert not (tmp_path / "t").exists()


def test_closed_stdin_unread_is_harmless(tmp_path):
    r = _lapnet(["params", "--json"], stdout=subprocess.PIPE, preexec_fn=lambda: os.close(0), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().startswith("{"), r.stderr


@pytest.mark.parametrize("args, needle", [
    (("text", "train", "--seed", SEED), "--seed"),
    (("text", "train", "--hidden", BIG), "--hidden"),
    (("text", "train", "--threads", "100000"), "--threads"),
    (("sine", "--threads", "100000"), "--threads"),
    (("race", "train", "x.csv", "--threads", "100000"), "--threads"),
    (("trend", "--train", BIG), "--train"),
    (("gradflow", "--length", BIG), "--length"),
    (("hidden", "--points", BIG), "--points"),
    (("hidden", "--dpi", "1"), "--dpi"),
    (("diagrams", "--dpi", "2"), "--dpi"),
    (("adding", "--lengths", f"50,{BIG}"), "--lengths"),
    (("sine", "--hidden", f"8,{BIG}"), "--hidden"),
    (("series", "forecast", "r", "f.csv", "--steps", "100000000"), "--steps"),
    (("race", "live", "r", "f.csv", "--follow", "--poll", "1e300"), "--poll"),
])
def test_out_of_range_options(run_cli, tmp_path, args, needle):
    out = tmp_path / "o"
    extra = ("--out", str(out)) if args[0] == "text" else ()
    line = _refused(*run_cli(*args, *extra)[::2])
    assert needle in line
    assert not out.exists()


def test_device_text_is_refused(run_cli, tmp_path):
    line = _refused(*run_cli("text", "train", "/dev/zero", "--out", tmp_path / "t")[::2])
    assert "is a device" in line and not (tmp_path / "t").exists()


def test_pipe_lap_table_says_not_a_regular_file(run_cli, tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    line = _refused(*run_cli("race", "eval", tmp_path / "run", fifo)[::2])  # race live streams a pipe (test_live_review)
    assert "not a regular file" in line and "no such file" not in line


def test_series_from_a_pipe_and_huge_values(run_cli, tmp_path):
    from lapnet.series import read_series

    values = np.sin(np.arange(60) / 5)
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    text = "value\n" + "\n".join(f"{v:.6f}" for v in values) + "\n"
    import threading

    t = threading.Thread(target=lambda: fifo.write_text(text), daemon=True)
    t.start()
    got, column = read_series(fifo)
    t.join(timeout=60)
    assert column == "value" and np.allclose(got, values, atol=1e-6)

    huge = tmp_path / "huge.csv"
    huge.write_text("value\n" + "\n".join(f"{float(v) * 1e300!r}" for v in values) + "\n")
    line = _refused(*run_cli("series", "train", huge, "--out", tmp_path / "rh")[::2])
    assert "+-1e+150" in line and not (tmp_path / "rh").exists()


def test_report_refuses_an_unfinished_run(run_cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "training.incomplete").write_text("")
    (run / "log.jsonl").write_text("{}\n")
    line = _refused(*run_cli("report", run)[::2])
    assert "unfinished run" in line and not (run / "report.html").exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.pop("model"), "'model' is missing"),
    (lambda c: c["model"].__setitem__("hidden_size", "8"), "hidden_size"),
])
def test_race_run_with_malformed_config(tmp_path, edit, needle):
    import json

    from lapnet.errors import LapnetError
    from lapnet.race.features import FEATURES
    from lapnet.race.runs import load_run

    run = tmp_path / "run"
    run.mkdir()
    config = {"kind": "lapnet-race", "features": list(FEATURES), "model": {"input_size": 4, "hidden_size": 4}}
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(LapnetError) as e:
        load_run(run)
    assert str(run / "config.json") in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("command, other", [
    (("race", "train", "LAPS", "--epochs", "1", "--hidden", "4", "--phase-sim", "0"), "charlm"),
    (("text", "train", "TEXT", "--epochs", "1", "--hidden", "4"), "lapnet-race"),
    (("series", "train", "SERIES", "--epochs", "1"), "charlm"),
])
def test_force_does_not_overwrite_a_run_of_another_kind(run_cli, tmp_path, request, command, other):
    """--force overwrites a run of the command's own kind; another kind's files would stay beside
    the new run's (and the report would show both): refused, the directory untouched."""
    import json

    laps = str(request.getfixturevalue("f1_data") / "2023_miami_R.csv") if command[0] == "race" else None
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 20)
    series = tmp_path / "s.csv"
    series.write_text("value\n" + "\n".join(str(np.sin(k / 5)) for k in range(200)) + "\n")
    args = [{"LAPS": laps, "TEXT": str(text), "SERIES": str(series)}.get(a, a) for a in command]
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"kind": other}))
    (out / "keep.txt").write_text("theirs")
    line = _refused(*run_cli(*args, "--out", out, "--force")[::2])
    assert f"config.json kind {other!r}" in line and "of the same kind only" in line
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "keep.txt"]
    assert json.loads((out / "config.json").read_text()) == {"kind": other}
