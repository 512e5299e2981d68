"""Fixes from a new user's review of `lapnet race train|predict|eval|calibrate` (issues 5 and 10)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from lapnet.race.training import train_race
from lapnet.race.training_config import RaceTrainConfig

TINY = dict(hidden_size=8, epochs=1, members=1, progress=False)


@pytest.fixture(scope="module")
def sim(tmp_path_factory, sim_races):
    """Three simulated races: one table with a Race column, each race alone, and a tiny run on races 0 and 1."""
    laps, parts = sim_races
    run = tmp_path_factory.mktemp("review") / "run"
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
    assert code == 130 and err.strip().splitlines()[-1] == "lapnet: error: interrupted", err
    assert len(calls) == 1  # the first member only: no further member, no tagger
    err = " ".join(err.split())  # rich wraps the line to the terminal's width
    assert "interrupted at step 1" in err and "--resume" not in err and "--force" in err
    assert not (out / "config.json").exists() and not (out / "members").exists()
    # what is left does not pass for a run
    code, _, err = run_cli("race", "eval", out, sim["parts"][2], "--quiet")
    assert code == 2 and err.count("\n") == 1 and "unfinished run" in err and "--force" in err
    from lapnet.errors import LapnetError
    from lapnet.race.runs import load_run

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
    # 6c: three races: one held out whole for early stopping, and said so
    assert m["validation_label"] == f"validation race used for early stopping: {m['validation_races'][0]}"


def test_budget_shares_what_is_left():
    import time

    from lapnet.race.training import MIN_NET_MINUTES, _Budget

    b = _Budget(1.0, 4, start=time.perf_counter() - 30.0)  # half the minute already spent (loading)
    first = b.next()
    assert first == pytest.approx(0.5 / 4, rel=0.02)
    assert _Budget(None, 3).next() is None
    spent = _Budget(0.01, 2, start=time.perf_counter() - 60.0)
    assert spent.next() == MIN_NET_MINUTES  # nothing left: one step and one evaluation


# ---------------------------------------------------------------------------------------
# 3. predict's directory holds one call's output


def test_predict_removes_what_an_earlier_call_wrote(run_cli, sim, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not predict's: stays
    code, _, err = run_cli("race", "predict", sim["run"], sim["parts"][2], "--out", out, "--quiet")
    assert code == 0, err
    assert len(list(out.glob("forecast_*.png"))) == 6
    code, _, err = run_cli("race", "predict", sim["run"], sim["parts"][2], "--out", out, "--quiet", "--driver", "HAM")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("forecast_*.png")) == ["forecast_sim_0002_HAM.png"]
    assert set(pd.read_csv(out / "predictions.csv")["Driver"]) == {"HAM"}
    assert {p.name for p in out.iterdir()} == {"notes.txt", "predictions.csv", "metrics.json", "degradation.png",
                                               "forecast_sim_0002_HAM.png"}
    from lapnet.race.prediction import predict_race

    cli_metrics = (out / "metrics.json").read_bytes()
    predict_race(sim["run"], sim["parts"][2], driver="VER", out=out)  # the library writes no metrics.json, nor removes one
    assert {p.name for p in out.iterdir()} == {"notes.txt", "predictions.csv", "metrics.json", "degradation.png",
                                               "forecast_sim_0002_VER.png"}
    assert (out / "metrics.json").read_bytes() == cli_metrics


# ---------------------------------------------------------------------------------------
# 4, 5. the race length used, and a given length shorter than the table


def test_eval_and_predict_say_the_race_length_used(run_cli, sim, tmp_path):
    race = sim["parts"][2]  # 52 laps
    for args, want in ((["--race-laps", "60"], 60), ([], 52)):
        code, out, err = run_cli("race", "eval", sim["run"], race, "--json", "--quiet", "--out", tmp_path / "e", *args)
        assert code == 0, err
        m = json.loads(out)
        assert m["race_laps"] == {"sim_0002": want}
    code, out, err = run_cli("race", "predict", sim["run"], race, "--json", "--quiet", "--out", tmp_path / "p",
                             "--race-laps", "estimate")
    assert code == 0, err
    est = json.loads(out)["race_laps"]["sim_0002"]
    from lapnet.race.features import estimate_race_laps
    from lapnet.race.inputs import load_laps, race_sequences

    laps, _ = load_laps(race)
    seq, used = race_sequences(laps, "estimate")
    assert used == {"sim_0002": est} and est >= 52
    ref = seq.ref[np.isfinite(seq.lap_time)][-1]  # the race's reference lap once settled
    assert est == max(estimate_race_laps(float(ref)), 52)


def test_a_race_length_shorter_than_the_table_is_raised_with_a_warning(run_cli, sim, tmp_path):
    from lapnet.race.features import FEATURES
    from lapnet.race.inputs import load_laps, race_sequences

    race = sim["parts"][2]  # 52 laps
    code, out, err = run_cli("race", "eval", sim["run"], race, "--json", "--quiet", "--out", tmp_path / "e",
                             "--race-laps", "20")
    assert code == 0, err
    warn = [line for line in err.splitlines() if "--race-laps 20" in line]
    assert len(warn) == 1 and "sim_0002" in warn[0] and "using 52" in warn[0]
    m = json.loads(out)
    assert m["race_laps"] == {"sim_0002": 52}
    code, ref_out, _ = run_cli("race", "eval", sim["run"], race, "--json", "--quiet", "--out", tmp_path / "f")
    assert m["forecast"] == json.loads(ref_out)["forecast"]  # exactly the table's length
    # several races, one of them longer than the length given: each featurised with its own
    laps, _ = load_laps([sim["table"]])
    with pytest.warns(UserWarning, match="sim_0000.*--race-laps 60.*using 70"):
        seq, used = race_sequences(laps, 60)
    assert used == {"sim_0000": 70, "sim_0001": 60, "sim_0002": 60}
    frac = seq.x[:, :, FEATURES.index("lap_frac")]
    assert frac.max() <= 1.0 + 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alone, _ = race_sequences(laps[laps["Race"] == "sim_0001"].reset_index(drop=True), 60)
    i = seq.keys.index(alone.keys[0])
    L = int(alone.lengths[0])
    np.testing.assert_array_equal(seq.x[i, :L], alone.x[0, :L])
    rows = seq.row[i, :L]
    assert (laps["Race"].to_numpy()[rows] == "sim_0001").all()  # rows point into the whole table
    assert (seq.row[seq.lengths[:, None] <= np.arange(seq.row.shape[1])] == -1).all()


# ---------------------------------------------------------------------------------------
# 6b, 6d. predict's notes; --driver in any case, and a driver the cleaning dropped


def test_predict_notes_what_the_summary_and_figures_leave_out(run_cli, sim, tmp_path):
    code, out, err = run_cli("race", "predict", sim["run"], sim["parts"][2], "--json", "--quiet", "--out", tmp_path / "p")
    assert code == 0, err
    m = json.loads(out)
    n = len(pd.read_csv(tmp_path / "p" / "predictions.csv"))
    assert any(f"{n - 40} more rows in predictions.csv" in s for s in m["notes"])
    assert any("figures for the first 6 of 20 drivers" in s and "--driver" in s for s in m["notes"])
    code, out, err = run_cli("race", "predict", sim["run"], sim["parts"][2], "--json", "--quiet", "--out", tmp_path / "q",
                             "--driver", "ham")  # any case
    assert code == 0, err
    m = json.loads(out)
    assert m["driver"] == "HAM" and not any("figures" in s for s in m["notes"])
    rows = len(pd.read_csv(tmp_path / "q" / "predictions.csv"))
    assert m["notes"] == ([f"{rows - 40} more rows in predictions.csv (shown: the last 40 rows)"] if rows > 40 else [])


def test_predict_names_a_driver_dropped_by_cleaning(run_cli, sim, tmp_path):
    df = pd.read_csv(sim["parts"][2], dtype={"TrackStatus": str})
    df.loc[df["Driver"] == "TSU", "LapTime"] = np.nan  # a non-starter: rows, no timed lap
    assert (df["Driver"] == "TSU").any()
    path = tmp_path / "dns.csv"
    df.to_csv(path, index=False)
    code, _, err = run_cli("race", "predict", sim["run"], path, "--driver", "tsu", "--out", tmp_path / "p")
    assert code == 2 and err.count("\n") == 1 and "TSU has no laps after cleaning: not one timed lap" in err
    code, _, err = run_cli("race", "predict", sim["run"], path, "--driver", "XYZ", "--out", tmp_path / "p")
    assert code == 2 and "not in the lap table" in err


# ---------------------------------------------------------------------------------------
# 6a, 6c, 6e, 6f


def test_stint_trend_has_no_interval_below_two_stints(sim):
    from lapnet.race.metrics import stint_trend_report
    from lapnet.race.inputs import load_laps, race_sequences, subset_sequences

    laps, _ = load_laps(sim["parts"][2])
    seq, _ = race_sequences(laps)
    exact = np.where(seq.target_mask, seq.future, np.nan)  # (N, T, K)
    one = subset_sequences(seq, np.array([0]))
    t0 = int(np.flatnonzero(one.target_mask[0, :, 0] & one.target_mask[0, :, 9] & one.origin_scored[0])[0])
    one.origin_scored = one.origin_scored & (one.stint_id == one.stint_id[0, t0])  # one stint's origins only
    rep = stint_trend_report({"exact": exact[:1] + 0.01}, one)
    assert rep["all"]["stints"] == 1 and rep["all"]["n"] > 0
    assert rep["all"]["gap_ci95"] == {"exact": None}
    two = stint_trend_report({"exact": exact[:2] + 0.01}, subset_sequences(seq, np.array([0, 1])))
    assert two["all"]["stints"] >= 2 and two["all"]["gap_ci95"]["exact"] == pytest.approx([0.0, 0.0], abs=1e-9)


def test_train_labels_a_drivers_split_as_such(sim):
    m = json.loads((sim["run"] / "metrics.json").read_text())  # two races: 15% of the drivers watch early stopping
    assert m["validation_label"].startswith("validation drivers used for early stopping (")
    assert "held-out" not in m["validation_label"]


def test_a_directory_as_a_lap_table(run_cli, tmp_path):
    from lapnet.errors import LapnetError
    from lapnet.race.io import read_laps

    with pytest.raises(LapnetError, match="is a directory, not a lap table"):
        read_laps(tmp_path)
    code, _, err = run_cli("race", "calibrate", tmp_path, "--out", tmp_path / "c.json")
    assert code == 2 and err.count("\n") == 1 and "is a directory" in err and "no such file" not in err


def test_calibrate_figure_as_a_directory(run_cli, sim, tmp_path):
    figs = tmp_path / "figs"
    figs.mkdir()
    for extra in ([], ["--force"]):
        code, _, err = run_cli("race", "calibrate", sim["parts"][0], "--out", tmp_path / "c.json", "--figure", figs, *extra)
        assert code == 2 and err.count("\n") == 1 and "figs: is a directory, not a file" in err  # said before any work
    (tmp_path / "f.png").mkdir()
    code, _, err = run_cli("race", "calibrate", sim["parts"][0], "--out", tmp_path / "c.json", "--figure", tmp_path / "f.png",
                           "--force")
    assert code == 2 and err.count("\n") == 1 and "is a directory" in err
    assert not (tmp_path / "c.json").exists()


def test_a_semicolon_separated_table_is_named_so(run_cli, tmp_path):
    semi = tmp_path / "semi.csv"
    semi.write_text("Driver;LapNumber;LapTime\nVER;1;90.1\n")
    code, _, err = run_cli("race", "clean", semi, "--out", tmp_path / "c.csv")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "split by ';': lapnet reads comma-separated CSV" in lines[0], err
    assert not (tmp_path / "c.csv").exists()
