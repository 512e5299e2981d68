"""lapnet.series and `lapnet series`: the window forecaster on a user's own column of numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.series import SeriesConfig, forecast_series, load_series_run, read_series, split, train_series, windows


def seasonal(n=180, seed=0, level=100.0, scale=1.0):
    """Monthly-like data: a trend, a 12-step season and noise."""
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0, 1.0, n)
    return level + scale * (0.2 * t + 8 * np.sin(2 * np.pi * t / 12) + noise)


FAST = dict(hidden_size=12, window=24, epochs=40, batch_size=32, patience=None, season=12, horizon=6, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "run"
    values = seasonal()
    metrics = train_series(values, SeriesConfig(**FAST), out, column="units")
    return out, values, metrics


def test_read_series_forms(tmp_path):
    p = tmp_path / "a.csv"
    pd.DataFrame({"month": ["jan", "feb", "mar"], "units": [1.5, 2, 3]}).to_csv(p, index=False)
    v, name = read_series(p)  # the only numeric column
    assert name == "units" and v.tolist() == [1.5, 2.0, 3.0]
    bare = tmp_path / "bare.csv"
    bare.write_text("4.5\n5\n6\n")  # no header: the first line is a value
    assert read_series(bare)[0].tolist() == [4.5, 5.0, 6.0]
    two = tmp_path / "two.csv"
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_csv(two, index=False)
    with pytest.raises(LapnetError, match="2 numeric columns .*--column"):
        read_series(two)
    assert read_series(two, "b")[0].tolist() == [3.0, 4.0]
    assert read_series(pd.Series([1.0, 2.0], name="x"))[1] == "x"
    with pytest.raises(LapnetError, match="no column 'c'"):
        read_series(two, "c")


@pytest.mark.parametrize("cells, match", [(["1", "x", "3"], r"line 3 is not a finite number \('x'\)"),
                                           (["1", "", "3"], "line 3 is empty: fill or drop"),
                                           (["1", "inf", "3"], "line 3 is not a finite number")])
def test_read_series_names_the_bad_line(tmp_path, cells, match):
    p = tmp_path / "s.csv"
    p.write_text("y\n" + "\n".join(cells) + "\n")
    with pytest.raises(LapnetError, match=match):
        read_series(p)


def test_windows_and_split():
    x, y = windows(np.arange(6.0), 4)
    assert x.shape == (2, 4, 1) and y.shape == (2, 1)
    assert x[1, :, 0].tolist() == [1, 2, 3, 4] and y[:, 0].tolist() == [4, 5]
    assert split(100, SeriesConfig(window=20, holdout=0.2)) == (63, 8, 8)  # 79 windows of changes
    assert split(100, SeriesConfig(window=20, holdout=0.2, difference=False)) == (64, 8, 8)
    assert split(100, SeriesConfig(window=20, holdout=0)) == (79, 0, 0)
    with pytest.raises(LapnetError, match=r"has 23 values: a window of 20 and 2 held-out value\(s\) need at least 24"):
        split(23, SeriesConfig(window=20))


def test_the_model_beats_both_baselines_on_the_held_out_end(run):
    out, values, m = run
    hold = round(0.3 * (len(values) - 25))
    assert m["stop_windows"] + m["scored_windows"] == hold and m["scored_windows"] == (hold + 1) // 2
    assert m["scored_on"].startswith(f"the last {m['scored_windows']} values")
    assert m["scores"]["model"]["mae"] < m["scores"]["persistence"]["mae"]
    assert m["scores"]["model"]["mae"] < m["scores"]["seasonal_naive"]["mae"]
    assert m["skill_vs_best_baseline"] > 0 and m["notes"] == []
    n = m["scored_windows"]
    held = values[-n:]
    assert m["scores"]["persistence"]["mae"] == pytest.approx(np.abs(np.diff(values)[-n:]).mean())
    assert m["scores"]["seasonal_naive"]["mae"] == pytest.approx(np.abs(held - values[-n - 12:-12]).mean())
    for f in ("model.safetensors", "config.json", "metrics.json", "forecast.png"):
        assert (out / f).is_file()


def test_forecast_continues_the_season(run):
    out, values, m = run
    ahead = forecast_series(out, values, 12)
    assert ahead.shape == (12,) and np.allclose(ahead[:6], m["forecast"], atol=1e-9)
    truth = seasonal(192)[180:]  # the same trend and season, noise aside
    assert np.abs(ahead - truth).mean() < np.abs(values[-1] - truth).mean()  # beats repeating the last value


def test_scaling_is_undone_exactly(tmp_path):
    """Training is on standardised values: a series 1000x larger and shifted trains the same model,
    so its forecast is the first one's, rescaled (to float32 precision)."""
    cfg = SeriesConfig(**{**FAST, "epochs": 5})
    a, b = seasonal(120), seasonal(120) * 1000 + 5e4
    train_series(a, cfg, tmp_path / "a")
    train_series(b, cfg, tmp_path / "b")
    fa, fb = forecast_series(tmp_path / "a", a, 5), forecast_series(tmp_path / "b", b, 5)
    np.testing.assert_allclose(fb, fa * 1000 + 5e4, rtol=1e-5)


def test_load_refuses_other_runs(tmp_path, run):
    with pytest.raises(LapnetError, match="no such run directory"):
        load_series_run(tmp_path / "nope")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"kind": "lapnet-race"}))
    with pytest.raises(LapnetError, match="a lapnet-race run, not a series run"):
        load_series_run(other)
    with pytest.raises(LapnetError, match="has 10 values: the model reads windows of 24"):
        forecast_series(run[0], np.arange(10.0), 3)


def test_cli_train_and_forecast(run_cli, tmp_path):
    csv = tmp_path / "sales.csv"
    pd.DataFrame({"month": np.arange(150), "units": seasonal(150)}).to_csv(csv, index=False)
    out = tmp_path / "run"
    code, stdout, err = run_cli(*["series", "train", str(csv), "--column", "units", "--window", "24", "--hidden", "8",
                                 "--epochs", "5", "--season", "12", "--out", str(out), "--json", "--quiet"])
    assert code == 0, err
    m = json.loads(stdout)
    assert m == json.loads((out / "metrics.json").read_text()) and set(m["scores"]) == {"model", "persistence", "seasonal_naive"}
    code, stdout, err = run_cli(*["series", "forecast", str(out), str(csv), "--steps", "4"])
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == "step,forecast" and len(lines) == 5
    expect = forecast_series(out, seasonal(150), 4)
    assert [float(x.split(",")[1]) for x in lines[1:]] == pytest.approx(expect, rel=1e-5)
    code, stdout, err = run_cli(*["series", "train", str(csv), "--column", "units", "--out", str(out), "--quiet"])
    assert code == 2 and "already holds a run" in err  # nothing overwritten without --force


@pytest.mark.parametrize("args, match", [
    (["nope.csv"], "no such file"),
    (["short.csv"], "has 10 values: a window of 20"),
    (["flat.csv"], r"the training part of the series is constant \(every value is 3\): nothing to learn"),
    (["flat.csv", "--levels"], r"the training part of the series is constant \(every value is 3\): nothing to learn"),
    (["line.csv"], r"a straight line \(every change is \+2\): the drift forecast .* is exact, and there is nothing "
                   "for a model to learn"),
    (["short.csv", "--window", "0"], "--window must be a positive integer"),
    (["short.csv", "--holdout", "1"], r"--holdout must be in \[0, 1\)"),
    (["short.csv", "--arch", "tcn"], "--arch 'tcn': expected one of"),
])
def test_cli_bad_input(run_cli, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.csv").write_text("y\n" + "\n".join(map(str, range(10))) + "\n")
    (tmp_path / "flat.csv").write_text("y\n" + "3\n" * 60)
    (tmp_path / "line.csv").write_text("y\n" + "".join(f"{3 + 2 * i}\n" for i in range(60)))
    code, _, err = run_cli(*["series", "train", *args, "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and re.search(match, err), err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_reading_what_exports_really_look_like(tmp_path):
    eu = tmp_path / "eu.csv"
    eu.write_text("units\n100,19\n105,10\n99,5\n")  # decimal commas: pandas would index by the integer part
    with pytest.raises(LapnetError, match="more fields than the header .*decimal commas"):
        read_series(eu)
    semi = tmp_path / "semi.csv"
    semi.write_text("month;units\n" + "".join(f"{i};{i}.5\n" for i in range(30)))
    with pytest.raises(LapnetError, match="looks split by another separator"):
        read_series(semi)
    tail = tmp_path / "tail.csv"
    tail.write_text("\ufeffy\r\n1\r\n2\r\n3\r\n\r\n\r\n")  # a BOM, CRLF and trailing blank lines
    assert read_series(tail)[0].tolist() == [1.0, 2.0, 3.0] and read_series(tail)[1] == "y"
    two = tmp_path / "two.csv"
    two.write_text("1,10\n2,20\n3,30\n")  # headerless, two columns: the first row is data
    with pytest.warns(UserWarning, match="may be one column of numbers with decimal commas"):  # tests/test_series_input.py
        assert read_series(two, "2")[0].tolist() == [10.0, 20.0, 30.0]
    wide = tmp_path / "wide.csv"
    pd.DataFrame({"units": [1, 2], "price": [3, 4], "stock": [5, 6]}).to_csv(wide, index=False)
    assert read_series(wide, prefer="price")[1] == "price"  # a run's own column, when the file has it
    with pytest.raises(LapnetError, match="3 numeric columns"):
        read_series(wide, prefer="volume")


def test_force_after_a_refused_series_keeps_the_old_run(run_cli, tmp_path):
    csv, flat = tmp_path / "s.csv", tmp_path / "flat.csv"
    pd.DataFrame({"y": seasonal(120)}).to_csv(csv, index=False)
    flat.write_text("y\n" + "3\n" * 80)
    out = tmp_path / "run"
    assert run_cli("series", "train", str(csv), "--epochs", "2", "--window", "12", "--out", str(out), "--quiet")[0] == 0
    before = sorted(p.name for p in out.iterdir())
    code, _, err = run_cli("series", "train", str(flat), "--window", "12", "--out", str(out), "--force", "--quiet")
    assert code == 2 and "nothing to learn" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_few_scored_values_and_an_unscorable_season_are_said(tmp_path):
    with pytest.warns(UserWarning) as seen:
        m = train_series(seasonal(40), SeriesConfig(**{**FAST, "window": 12, "epochs": 2, "season": 50}), tmp_path / "r")
    said = " ".join(str(w.message) for w in seen)
    assert "scored on" in said and "seasonal_naive" in said and len(m["notes"]) == 2
    assert "seasonal_naive" not in m["scores"] and m["scored_windows"] == 4


@pytest.mark.parametrize("bad, match", [
    ((np.arange(60.0), "units"), r"a \(values, column\) pair, as read_series returns: pass its values"),
    (np.ones((60, 2)), r"1-D array of numbers, got shape \(60, 2\)"),
    (["1.0", "2.0"] * 30, "1-D array of numbers, got dtype <U3"),
    ("1,2,3", "1-D array of numbers, got a str"),
    (np.r_[np.arange(59.0), np.nan], "entry 59 is nan"),
    ([[1.0, 2.0], [3.0]], "got a list that is not one"),
])
def test_train_series_refuses_what_is_not_a_series(tmp_path, bad, match):
    """Anything but a 1-D array of finite numbers is one LapnetError, before --out is touched,
    never NumPy's own ValueError (the whole read_series pair was the easy mistake)."""
    out = tmp_path / "run"
    with pytest.raises(LapnetError, match=match):
        train_series(bad, SeriesConfig(**{**FAST, "epochs": 1}), out)
    assert not out.exists()


def test_train_series_takes_read_series_values(tmp_path, run):
    csv = tmp_path / "s.csv"
    pd.DataFrame({"month": np.arange(120), "units": seasonal(120)}).to_csv(csv, index=False)
    values, column = read_series(csv, "units")
    m = train_series(values, SeriesConfig(**{**FAST, "epochs": 1}), tmp_path / "r", column=column)
    assert m["n_values"] == 120 and json.loads((tmp_path / "r" / "config.json").read_text())["column"] == "units"
    with pytest.raises(LapnetError, match=r"\(values, column\) pair"):
        forecast_series(run[0], read_series(csv, "units"), 3)


def test_scaling_reads_only_what_training_touches():
    """The mean and sd come from the windows and targets of the training part: scaling with the
    whole series would let the held-out end leak into training."""
    from lapnet.series import _scaling

    cfg = SeriesConfig(window=5, holdout=0.2, difference=False)
    v = np.arange(30.0) ** 2
    n_train = split(30, cfg)[0]
    assert split(30, cfg) == (20, 2, 3)
    _, mean, sd = _scaling(v, n_train, cfg)
    assert (mean, sd) == (pytest.approx(v[:25].mean()), pytest.approx(v[:25].std()))  # 196.0, 179.18
    assert mean == pytest.approx(196.0)
