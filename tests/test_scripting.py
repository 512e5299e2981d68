"""lapnet in scripts and CI: exit codes and signals, one process per --out, stdout against
stderr, and stderr lines a log grep can find (a scripting user's review)."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

TINY_RACE = dict(hidden_size=8, epochs=1, members=1, phase_sim=0, progress=False)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    if "COLUMNS" not in extra:
        env.pop("COLUMNS", None)
    return env


def _lapnet(*args: object) -> list[str]:
    """The `lapnet` command line as a console script runs it: main() without argv."""
    return [sys.executable, "-m", "lapnet", *map(str, args)]


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, sim_races):
    """A tiny race run (simulated races 0 and 1) and race 2's laps in the order they ended, as CSV lines."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    _, parts = sim_races
    d = tmp_path_factory.mktemp("scripting_live")
    train_race(parts[:2], d / "run", RaceTrainConfig(**TINY_RACE))
    laps = pd.read_csv(parts[2], dtype=str, keep_default_na=False)
    laps = laps.iloc[pd.to_numeric(laps["Time"]).argsort(kind="mergesort")].reset_index(drop=True)
    return d / "run", laps.to_csv(index=False).splitlines(keepends=True)


# ---------------------------------------------------------------------------------------
# 1. race live stopped by a signal: exit 130 and one line, as every other command


class _FeedThenCtrlC(io.StringIO):
    """Standard input giving `lines`, then a real SIGINT (to this process) where the next line
    would be read: Ctrl-C while live waits for the feed."""

    def readline(self, *args) -> str:
        line = super().readline(*args)
        if not line:
            os.kill(os.getpid(), signal.SIGINT)
        return line


@pytest.mark.parametrize("n_laps", [0, 30])
def test_live_stopped_by_ctrl_c_exits_130_keeping_its_lines(live_run, run_cli, monkeypatch, n_laps):
    run, lines = live_run
    monkeypatch.setattr("sys.stdin", _FeedThenCtrlC("".join(lines[: 1 + n_laps])))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 52)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "lapnet: error: interrupted" and "Traceback" not in err
    assert len([json.loads(line) for line in out.splitlines()]) == n_laps  # the lines printed stay


def test_live_stopped_by_sigterm_exits_130_in_one_line(live_run):
    run, lines = live_run
    proc = subprocess.Popen(_lapnet("race", "live", run, "-", "--race-laps", 52), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        proc.stdin.write("".join(lines[:21]))
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "race live printed no line in 120 s"
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "lapnet: error: interrupted" and "Traceback" not in err
    assert [json.loads(line)["lap"] for line in [first, *out.splitlines()]]


def test_sigterm_stops_any_command_as_ctrl_c_does(tmp_path):
    """SIGTERM during a command that has no handler of its own: `lapnet: error: interrupted`, 130
    (it died at once, exit -15, leaving its temporary files)."""
    script = textwrap.dedent("""
        import os, signal, sys
        import lapnet.diagnostics.param_count as pc
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGTERM)
            return {}
        pc.param_table = killed
        sys.argv = ["lapnet", "params"]
        from lapnet.cli import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "lapnet: error: interrupted\n" and proc.stdout == ""


# ---------------------------------------------------------------------------------------
# 2. a Ctrl-C after the work is done changes nothing


def test_sigint_during_shutdown_is_ignored():
    """A SIGINT landing after main() finished (here: from an atexit hook, run at the
    interpreter's shutdown) is ignored: the exit code stays 0 and nothing is said."""
    script = textwrap.dedent("""
        import atexit, os, signal, sys
        def late():
            ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            print("ignored" if ignored else "caught", file=sys.stderr)
        atexit.register(late)
        sys.argv = ["lapnet", "params"]
        from lapnet.cli import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0 and proc.stderr == "ignored\n", proc.stderr
    assert proc.stdout.strip()  # the table was printed


def test_main_called_with_argv_leaves_the_callers_sigint_handler(run_cli):
    before = signal.getsignal(signal.SIGINT)
    code, out, _ = run_cli("params")
    assert code == 0 and out
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------------------
# 3. one lapnet process per --out


@pytest.mark.parametrize("args", [
    ("sine", "--epochs", "2", "--hidden", "2", "--arch", "rnn", "--quiet"),
    ("trend", "--epochs", "1", "--hidden", "2", "--train", "8", "--test", "4", "--quiet"),
    ("diagrams", "--dpi", "20"),
    ("hidden", "--points", "10", "--hidden", "2", "--dpi", "20"),
    ("text", "train", "--epochs", "1", "--hidden", "8", "--quiet"),
])
def test_an_out_in_use_is_refused_before_anything_is_written(held_lock, run_cli, args):
    run, pid = held_lock
    code, out, err = run_cli(*args, "--out", run)
    assert code == 2 and out == "", err
    assert err.strip().splitlines() == [f"lapnet: error: --out {run} is in use by another lapnet process (pid {pid}): "
                                        "wait for it to end, or give another --out"]
    assert [p.name for p in run.iterdir()] == [".lapnet.lock"]  # the other's lock only: nothing written


def _other_process(out: Path, *, hold: bool) -> subprocess.Popen:
    """Another lapnet process that makes `out`, writes a config.json there, and (with `hold`)
    keeps its lock until its stdin closes; without, it has finished (lock dropped)."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from lapnet.run_dir import lock_run_dir, release_run_locks
        out = Path({str(out)!r})
        out.mkdir()
        lock_run_dir(out)
        (out / "config.json").write_text('{{"kind": "charlm", "theirs": true}}')
        if not {hold!r}:
            release_run_locks()
        print("ready", flush=True)
        sys.stdin.read()
        release_run_locks()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=_env())
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("force", [False, True])
def test_text_train_never_writes_into_a_run_made_meanwhile(run_cli, tmp_path, monkeypatch, force):
    """`text train` given a new --out: another process makes the same directory while this one
    reads its text and builds its model. Without --force it has finished there: refused (both
    used to exit 0, their log.jsonl mixed). With --force it still holds it: refused as in use,
    and its files stay (they were deleted before the lock was even asked for)."""
    from lapnet import text_runs

    out = tmp_path / "run"
    text = tmp_path / "t.txt"
    text.write_text("To be or not to be, that is the question. " * 30)
    others: list[subprocess.Popen] = []
    build = text_runs.build_model

    def build_meanwhile(*args, **kwargs):
        others.append(_other_process(out, hold=force))
        return build(*args, **kwargs)

    monkeypatch.setattr(text_runs, "build_model", build_meanwhile)
    try:
        code, _, err = run_cli("text", "train", text, "--out", out, "--epochs", "1", "--hidden", "8", "--quiet",
                               *(["--force"] if force else []))
    finally:
        for p in others:
            p.stdin.close()
            p.wait(timeout=30)
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    if force:
        assert line == (f"lapnet: error: --out {out} is in use by another lapnet process (pid {others[0].pid}): "
                        "wait for it to end, or give another --out")
    else:
        assert line == (f"lapnet: error: --out {out}: another process created it meanwhile and wrote into it: give "
                        "another --out (or --force to overwrite it)")
    assert json.loads((out / "config.json").read_text()) == {"kind": "charlm", "theirs": True}
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_the_lock_file_is_not_named_as_what_the_directory_holds(run_cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli("text", "train", "--out", out, "--epochs", "1", "--quiet")
    assert code == 2 and "is not empty (1 file: notes.txt)" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------
# 4. an interrupted experiment says what it saved, and no --resume


def _ctrl_c_at_once(monkeypatch):
    from lapnet import train

    def hit(self):  # the flag fit's SIGINT handler sets, set up front
        self.hit = True
        return self

    monkeypatch.setattr(train._StopSignal, "__enter__", hit)


@pytest.mark.parametrize("args", [
    ("sine", "--epochs", "5", "--hidden", "2", "--arch", "rnn"),
    ("adding", "--lengths", "5", "--max-steps", "5", "--hidden", "2", "--arch", "rnn"),
    ("trend", "--epochs", "2", "--hidden", "2", "--train", "8", "--test", "4"),
])
def test_an_interrupted_experiment_does_not_advise_resume(run_cli, tmp_path, monkeypatch, args):
    _ctrl_c_at_once(monkeypatch)
    out = tmp_path / "exp"
    code, _, err = run_cli(*args, "--quiet", "--out", out)
    assert code == 130, err
    flat = " ".join(err.split())
    assert "interrupted at step 1; nothing was written (the experiments have no --resume): run the command again" in flat
    assert "continue with --resume" not in flat
    assert err.strip().splitlines()[-1] == "lapnet: error: interrupted"
    assert not out.exists()  # what the hint says: nothing was written (the empty --out is taken back)


def test_an_interrupted_series_run_is_saved_scored_and_exits_130(run_cli, tmp_path, monkeypatch):
    """series train cut short by Ctrl-C or SIGTERM wrote its run and exited 0, so a script took
    the cut run for a finished one (every other trainer exits 130)."""
    import numpy as np

    _ctrl_c_at_once(monkeypatch)
    data = tmp_path / "s.csv"
    data.write_text("v\n" + "\n".join(f"{x:.4f}" for x in 5 + np.sin(np.arange(80) / 3) + np.arange(80) / 40) + "\n")
    out = tmp_path / "run"
    code, _, err = run_cli("series", "train", data, "--epochs", "50", "--out", out, "--quiet")
    assert code == 130 and err.strip().splitlines()[-1] == "lapnet: error: interrupted", err
    assert json.loads((out / "metrics.json").read_text())["train"]["stopped"] == "interrupted"


# ---------------------------------------------------------------------------------------
# 5. a group without a command: its help, once


@pytest.mark.parametrize("args", [(), ("race",), ("text",)])
def test_a_group_alone_prints_its_help_once(args):
    proc = subprocess.run(_lapnet(*args), capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.count("Usage:") == 1 and proc.stdout.count("Commands") == 1, proc.stdout


# ---------------------------------------------------------------------------------------
# 6. a lap table given as - where standard input is not read


def test_race_commands_that_read_files_say_so_for_stdin(run_cli, live_run, tmp_path):
    run, _ = live_run
    for args in (("clean", "-"), ("predict", run, "-"), ("eval", run, "-"),
                 ("calibrate", "-", "--out", tmp_path / "c.json")):
        code, out, err = run_cli("race", *args)
        assert code == 2 and out == "", err
        assert err == ("lapnet: error: -: this command does not read standard input: give the lap table as a CSV or "
                       "Parquet file (- reads standard input in race live, text train, text eval, series train and "
                       "series forecast only)\n")
    assert not (tmp_path / "c.json").exists()


# ---------------------------------------------------------------------------------------
# 8. report into a run directory it cannot write


def test_report_in_a_read_only_run_is_refused_before_the_work(run_cli, tmp_path, monkeypatch):
    import lapnet.report

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"a": 1}')
    if os.geteuid() == 0:  # root writes anywhere: the directory is read-only as os.access sees it
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == run and mode & os.W_OK
                            else real(p, mode, **k))
    else:
        run.chmod(0o555)
    rendered = []
    monkeypatch.setattr(lapnet.report, "render_report", lambda *a, **k: rendered.append(1) or "")
    try:
        code, out, err = run_cli("report", run)
    finally:
        run.chmod(0o755)
    assert code == 2 and out == "", err
    assert err == (f"lapnet: error: --out {run / 'report.html'}: {run} is not writable; give --out a file in a "
                   "writable place (the default is RUN/report.html)\n")
    assert not rendered and sorted(p.name for p in run.iterdir()) == ["metrics.json"]


# ---------------------------------------------------------------------------------------
# 9. matplotlib's remarks as one lapnet line


def test_an_unusable_matplotlib_config_dir_is_one_warning_line(tmp_path):
    not_a_dir = tmp_path / "mpl"
    not_a_dir.write_text("")  # MPLCONFIGDIR naming a file: matplotlib cannot use it
    proc = subprocess.run(_lapnet("diagrams", "--dpi", "20", "--out", tmp_path / "d"), capture_output=True, text=True,
                          env=_env(MPLCONFIGDIR=str(not_a_dir)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"lapnet: warning: matplotlib's config and cache directory {not_a_dir} cannot be used (file exists): it "
        "uses a temporary one for this run and rebuilds its caches each time; set MPLCONFIGDIR to a writable "
        "directory to keep them"]


# ---------------------------------------------------------------------------------------
# 10. a line naming paths is never wrapped


def test_a_long_path_stays_on_its_line(run_cli, tmp_path):
    run = tmp_path / ("a long directory name for a CI log grep " * 2).strip() / "sine3"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"a": 1}')
    code, out, err = run_cli("report", run)
    assert code == 0, err
    assert f"report written: {run / 'report.html'} (" in err.splitlines()[0]  # one line, as long as it takes
    assert out == f"{run / 'report.html'}\n"


def test_tables_still_fit_the_console():
    from rich.table import Table

    from lapnet.console import console

    table = Table("a", "b")
    table.add_row("x " * 60, "y")
    with console.capture() as cap:
        console.print(table)
    assert max(len(line) for line in cap.get().splitlines()) <= console.width
