"""Shared test set-up: headless plots, one torch thread per worker, the CLI in-process, real F1 data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

try:  # two xdist workers on two cores: one thread each avoids oversubscription
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parents[1]

# Ctrl-C as a user sends it, whatever launched the suite: a shell's background job (`make test &`)
# starts with SIGINT ignored, and then neither `_thread.interrupt_main()` (how the `race live
# --follow` tests end a session) nor a SIGINT sent to a child process (test_crash_safety) has any
# effect: a --follow test waited forever. Python's own handler back in place restores both (a
# child started with the signal caught, not ignored, gets the default again).
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _find_f1_data() -> Path:
    """LAPNET_F1_DATA, else shared/data/f1 beside the repository or beside any folder above it."""
    if os.environ.get("LAPNET_F1_DATA"):
        return Path(os.environ["LAPNET_F1_DATA"])
    for parent in REPO.parents:
        candidate = parent / "shared" / "data" / "f1"
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data" / "f1"


F1_DATA = _find_f1_data()


@pytest.fixture
def f1_data() -> Path:
    """The 15 real 2023 races (../shared/data/f1); tests skip when the folder is absent."""
    if not F1_DATA.is_dir() or not any(F1_DATA.glob("*.csv")):
        pytest.skip(f"real F1 data not found at {F1_DATA} (set LAPNET_F1_DATA)")
    return F1_DATA


@pytest.fixture
def run_cli(capsys):
    """Run `lapnet ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from lapnet.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def sim_races(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Three simulated races (seed 6): the whole lap table (with its Race column) and each race
    alone in its own file (without it), made once per worker; read them, never write into them."""
    import pandas as pd

    from lapnet.race.simulate import simulate_to_file

    d = tmp_path_factory.mktemp("sim_races")
    table = d / "sim.csv"
    simulate_to_file(table, 3, seed=6)
    df = pd.read_csv(table, dtype={"TrackStatus": str})
    parts = []
    for r in sorted(df["Race"].unique()):
        parts.append(d / f"{r}.csv")
        df[df["Race"] == r].drop(columns=["Race"]).to_csv(parts[-1], index=False)
    return table, parts


@pytest.fixture
def held_lock(tmp_path):
    """Another lapnet process holding the lock on the empty directory tmp_path/run, as a command
    writing there (a training) does: (run, its pid)."""
    run = tmp_path / "run"
    run.mkdir()
    code = textwrap.dedent(f"""
        import sys
        from lapnet.run_dir import lock_run_dir
        lock_run_dir({str(run)!r})
        print("locked", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run, proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
