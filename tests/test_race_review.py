"""Fixes from a new user's review of `lapnet race train|predict|eval|calibrate` (issues 5 and 10)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from lapnet.race.pipeline import RaceTrainConfig, train_race

TINY = dict(hidden_size=8, epochs=1, members=1, progress=False)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Three simulated races: one table with a Race column, each race alone, and a tiny run on races 0 and 1."""
    from lapnet.race.simulate import simulate_to_file

    d = tmp_path_factory.mktemp("review")
    laps = d / "sim.csv"
    simulate_to_file(laps, 3, seed=6)
    df = pd.read_csv(laps, dtype={"TrackStatus": str})
    parts = []
    for r in sorted(df["Race"].unique()):
        parts.append(d / f"{r}.csv")
        df[df["Race"] == r].drop(columns=["Race"]).to_csv(parts[-1], index=False)
    run = d / "run"
    train_race(parts[:2], run, RaceTrainConfig(**TINY))
    return {"table": laps, "parts": parts, "run": run}


def _record_fits(monkeypatch) -> list:
    """Wrap lapnet.train.fit: returns the list of (describe, TrainConfig) of every net trained."""
    import lapnet.train as train_mod

    calls, real = [], train_mod.fit

    def fit(learner, batches, cfg, **kw):
        calls.append((kw.get("describe"), cfg))
        return real(learner, batches, cfg, **kw)

    monkeypatch.setattr(train_mod, "fit", fit)
    return calls


# ---------------------------------------------------------------------------------------
# 1. Ctrl-C stops the whole `race train`


def test_an_interrupt_stops_the_whole_race_train(run_cli, sim, tmp_path, monkeypatch):
    import lapnet.train as train_mod

    enter = train_mod._StopSignal.__enter__

    def ctrl_c_at_once(self):  # as if Ctrl-C came during the first step
        guard = enter(self)
        guard.hit = True
        return guard

    monkeypatch.setattr(train_mod._StopSignal, "__enter__", ctrl_c_at_once)
    calls = _record_fits(monkeypatch)
    out = tmp_path / "run"
    code, _, err = run_cli("race", "train", sim["table"], "--out", out, "--hidden", "8", "--epochs", "2", "--quiet")
    assert code == 130  # (Typer turns KeyboardInterrupt into a silent exit 130; the advice line below says what happened)
    assert len(calls) == 1  # the first member only: no further member, no tagger
    err = " ".join(err.split())  # rich wraps the line to the terminal's width
    assert "interrupted at step 1" in err and "--resume" not in err and "--force" in err
    assert not (out / "config.json").exists() and not (out / "members").exists()
    # what is left does not pass for a run
    code, _, err = run_cli("race", "eval", out, sim["parts"][2], "--quiet")
    assert code == 2 and err.count("\n") == 1 and "unfinished run" in err and "--force" in err
    from lapnet.errors import LapnetError
    from lapnet.race.pipeline import load_run

    with pytest.raises(LapnetError, match="unfinished run"):
        load_run(out)
    # without --force the directory is refused; with it, training starts again and finishes
    code, _, err = run_cli("race", "train", sim["table"], "--out", out, "--hidden", "8", "--epochs", "1", "--quiet")
    assert code == 2 and "--force" in err
    monkeypatch.setattr(train_mod._StopSignal, "__enter__", enter)
    calls.clear()
    code, _, err = run_cli("race", "train", sim["table"], "--out", out, "--hidden", "8", "--epochs", "1", "--quiet", "--force")
    assert code == 0, err
    assert len(calls) == 4  # three members and the tagger (simulated laps carry Phase labels)
    assert load_run(out).config["members"] == 3
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the interrupted run's rows are gone: one run's log


def test_fit_default_interrupt_advice_is_unchanged(monkeypatch, capsys):
    """fit's own advice (other commands have --resume) stays; only race train changes it."""
    import numpy as np

    import lapnet.train as train_mod

    class Learner:
        def train_step(self, batch, carry, lr):
            return 1.0, None, 1

        def evaluate(self):
            return {"val_loss": 1.0}

        def weights(self):
            return {"w": np.zeros(1)}

        def state(self):
            return {"w": np.zeros(1)}, {}

        def load_state(self, arrays, meta):
            pass

    class Batches:
        def steps_per_epoch(self):
            return 5

        def epoch(self, e):
            return iter(range(5))

    enter = train_mod._StopSignal.__enter__

    def hit(self):
        g = enter(self)
        g.hit = True
        return g

    monkeypatch.setattr(train_mod._StopSignal, "__enter__", hit)
    cfg = train_mod.TrainConfig(epochs=1, progress=False)
    assert train_mod.fit(Learner(), Batches(), cfg).stopped == "interrupted"
    assert "continue with --resume" in capsys.readouterr().err
    train_mod.fit(Learner(), Batches(), cfg, interrupt_hint="do something else")
    err = capsys.readouterr().err
    assert "do something else" in err and "--resume" not in err


# ---------------------------------------------------------------------------------------
# 2. --minutes is a budget for the whole command


def test_minutes_is_one_budget_split_between_the_nets(sim, tmp_path, monkeypatch):
    calls = _record_fits(monkeypatch)
    minutes = 0.03
    cfg = RaceTrainConfig(hidden_size=8, epochs=50, members=3, patience=None, minutes=minutes, progress=False)
    m = train_race([sim["table"]], tmp_path / "run", cfg)
    given = [c.minutes for _, c in calls]
    assert len(given) == 4  # three members and the tagger
    assert sum(given) <= minutes + 1e-9
    assert given[0] == pytest.approx(m["train"]["minutes_per_net"][0]) and m["train"]["minutes"] == minutes
    assert 0 < given[0] <= minutes / 4  # the first net's share: a quarter of what was left


def test_budget_shares_what_is_left():
    import time

    from lapnet.race.pipeline import MIN_NET_MINUTES, _Budget

    b = _Budget(1.0, 4, start=time.perf_counter() - 30.0)  # half the minute already spent (loading)
    first = b.next()
    assert first == pytest.approx(0.5 / 4, rel=0.02)
    assert _Budget(None, 3).next() is None
    spent = _Budget(0.01, 2, start=time.perf_counter() - 60.0)
    assert spent.next() == MIN_NET_MINUTES  # nothing left: one step and one evaluation
