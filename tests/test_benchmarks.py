"""Every script in benchmarks/ still runs, at toy sizes (marked slow: `pytest -m slow`, about
6 minutes; `make test` skips them). The numbers they print are not checked here (at these
sizes they mean nothing); that each script runs to the end and writes its results is.

Why: a benchmark is run by hand, rarely, so a change in the library can break one silently
(pit_explore.py crashed for a while after the lap vector grew its PIT_EXTRA columns)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_engine():
    out = run("engine.py", "--sizes", "tiny", "notebook", "--kinds", "lstm", "gru", "--repeats", "10", "--reference")
    assert "| tiny |" in out and "engine/torch" in out and "per step" in out
    assert "matrix products alone" in out
    # torch's BLAS named as torch.__config__.show() names it; the product timings follow --repeats (10: 50 rounds
    # of a product made once per pass, 5 of one made per step), not a fixed 200
    assert re.search(r"in torch's BLAS \([\w.-]+\);", out), out[-600:]
    assert "(medians of 5 to 50 timed calls per product)" in out
    assert "reference/torch" in out and out.count("x torch)") == 4  # the readable cells timed for every case


def test_simulate():
    out = run("simulate.py", "--races", "10", "--repeats", "3")
    assert "oracle MAE" in out


def test_race(tmp_path):
    run("race.py", "--train", "4", "--test", "2", "--epochs", "2", "--out", tmp_path / "race.json")
    got = json.loads((tmp_path / "race.json").read_text())
    assert got  # the results the README's tables come from


def test_adding(tmp_path):
    out = run("adding.py", "--archs", "rnn,lstm", "--lengths", "10", "--max-steps", "30", "--out", tmp_path / "adding")
    assert "LSTM" in out and "RNN" in out


def test_text(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 3000)
    out = run("text.py", corpus, "--minutes", "0.05")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {"torch", "numpy"} <= {r.get("engine") for r in rows}


def test_race_real(f1_data, tmp_path):
    run("race_real.py", "--folds", "3", "--epochs", "1", "--members", "1", "--phase-sim", "0", "--skip-train-all",
        "--hidden", "8", "--jobs", "2", "--out", tmp_path / "race_real.json")
    got = json.loads((tmp_path / "race_real.json").read_text())
    assert got


def test_race_length(f1_data):
    out = run("race_length.py", "--impact", "--epochs", "1", "--members", "1", "--hidden", "8")
    assert out.count("\n| ") >= 15 + 3  # a row per race, a row per way of knowing the length
    assert "race left out" in out and "| estimate |" in out and "| fixed 60 |" in out


def test_pit_explore(f1_data):
    """Every candidate, at toy size (5 races, two settings per grid; about 40 s of CPU)."""
    out = run("pit_explore.py", "--toy")
    names = ("tyre", "lr", "lr+", "lr++", "lean+", "pitmodel", "factored", "lr+next", "gbt", "gbt+", "mlp+", "gru",
             "lr+ & gbt+", "lean+ & gru", "lean+ & mlp+")  # the blends last
    for name in names:
        assert f"\n{name:<10} outer pooled AUC" in out, name
