"""`lapnet series` on files as people make them: decimal commas (bare or quoted), thousands
separators, spaces around header names, headerless columns, newest-first dates, a file without
the run's column, straight lines, tiny units, standard input. Each refusal is one line on stderr
and exit 2 before --out is touched; each warning one `lapnet: warning:` line."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.series import SeriesConfig, check_series, forecast_series, read_series, train_series

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--window", "8", "--hidden", "4", "--epochs", "1", "--quiet"]
FAST = dict(hidden_size=8, window=12, epochs=3, batch_size=32, patience=None, horizon=4, progress=False)


def seasonal(n=80, seed=0):
    t = np.arange(n)
    return 100 + 0.2 * t + 8 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(seed).normal(0, 1.0, n)


def refused(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and err.startswith("lapnet: error: "), err
    return err


def warned(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("lapnet: warning: ")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained on a column named 'passengers'."""
    out = tmp_path_factory.mktemp("series_input") / "run"
    train_series(seasonal(), SeriesConfig(**FAST), out, column="passengers")
    return out


# --- 1. decimal commas in a headerless file ---------------------------------------------------


def test_headerless_decimal_commas_are_refused_never_read_as_two_integers(run_cli, tmp_path):
    """`98,45` / `107,20` / `94,07` was read as two integer columns: `--column 1` trained on the
    integer parts. A leading zero in a second field of fixed width (07) is no integer column."""
    csv = tmp_path / "eu.csv"
    cells = [f"{v:.2f}".replace(".", ",") for v in seasonal()]
    csv.write_text("\n".join(cells) + "\n")
    for extra in ([], ["--column", "1"], ["--column", "2"]):
        err = refused(*run_cli("series", "train", csv, *extra, *QUICK, "--out", tmp_path / "r")[::2])
        assert re.search(r"rows like '100,13' and '\d+,0\d' look like one column of numbers with decimal commas "
                         r"\(the second field always has 2 digits, and leading zeros\)", err), err
        assert "convert them (98.45), or, if these really are two integer columns, add a header row" in err
        assert not (tmp_path / "r").exists()


def test_two_integer_columns_of_one_width_warn_and_a_header_row_silences_it(run_cli, tmp_path):
    """The weaker sign (the second field always has the same digit count, never a leading zero)
    fits real integer columns too: a warning when a column is chosen, the hint in the refusal when
    none is; a header row says they are two columns."""
    rows = [f"{i},{int(v)}" for i, v in enumerate(seasonal())]  # values 92..123: widths 2 and 3
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join(rows) + "\n")
    code, _, err = run_cli("series", "train", mixed, "--column", "2", *QUICK, "--out", tmp_path / "m")
    assert code == 0 and warned(err) == [], err  # widths differ: no decimal commas
    same = tmp_path / "same.csv"
    same.write_text("\n".join(f"{i},{int(v) - 40}" for i, v in enumerate(seasonal())) + "\n")  # 50..85: always 2 digits
    code, _, err = run_cli("series", "train", same, "--column", "2", *QUICK, "--out", tmp_path / "s")
    assert code == 0, err
    assert len(warned(err)) == 1 and "may be one column of numbers with decimal commas" in err
    assert "add a header row" in err
    err = refused(*run_cli("series", "train", same, *QUICK, "--out", tmp_path / "s2")[::2])
    assert re.search(r"2 numeric columns \(1, 2\): choose one with --column; rows like '0,\d\d' may be one column "
                     r"of numbers with decimal commas", err), err
    headed = tmp_path / "headed.csv"
    headed.write_text("month,units\n" + same.read_text())
    code, _, err = run_cli("series", "train", headed, "--column", "units", *QUICK, "--out", tmp_path / "h")
    assert code == 0 and warned(err) == [], err


# --- 2. a file without the run's column, or far outside what it trained on --------------------


def test_forecast_says_which_column_it_reads_instead_and_that_it_is_far_outside(run_cli, tmp_path, run):
    values = seasonal()
    own = tmp_path / "own.csv"
    months = pd.date_range("2000-01-01", periods=80, freq="MS").strftime("%Y-%m-%d")
    pd.DataFrame({"month": months, "passengers": values}).to_csv(own, index=False)
    code, out, err = run_cli("series", "forecast", run, own, "--steps", "3")
    assert code == 0 and warned(err) == [], err
    other = tmp_path / "other.csv"
    pd.DataFrame({"month": months, "Sales": values * 10}).to_csv(other, index=False)
    code, out, err = run_cli("series", "forecast", run, other, "--steps", "3")
    assert code == 0 and len(out.splitlines()) == 4, err
    said = warned(err)
    assert len(said) == 2, err
    assert f"{other} has no column 'passengers', the run's; reading 'Sales'" in said[0]
    assert re.search(r"last 12 changes lie up to [\d.]+ training sds from the training mean \(more than 10;", said[1])
    with pytest.warns(UserWarning, match="far outside what it trained on"):  # the library says it too
        forecast_series(run, values * 10, 2)


# --- 3. quoted decimal commas and thousands separators ----------------------------------------


@pytest.mark.parametrize("cell, value", [('"98,45"', "98,45"), ('"1,040"', "1,040"), ('"-1,040.5"', "-1,040.5")])
def test_numbers_with_commas_get_the_hint(run_cli, tmp_path, cell, value):
    csv = tmp_path / "q.csv"
    csv.write_text("date,units\n" + "".join(f"2020-01-{d:02d},{cell}\n" for d in range(1, 29)))
    hint = ("decimal commas or thousands separators? lapnet reads plain numbers with a decimal point (98.45, 1040): "
            "convert the column")
    err = refused(*run_cli("series", "train", csv, *QUICK, "--out", tmp_path / "r")[::2])
    assert f"no numeric column, and column 'units' holds numbers written with commas ('{value}'): {hint}" in err
    err = refused(*run_cli("series", "train", csv, "--column", "units", *QUICK, "--out", tmp_path / "r")[::2])
    assert f"column units, line 2 is not a finite number ('{value}') (and 27 more): {hint}" in err
    assert not (tmp_path / "r").exists()


def test_a_number_column_beside_a_comma_column_is_not_picked_silently(tmp_path):
    csv = tmp_path / "q.csv"
    csv.write_text("row,Sales\n" + "".join(f'{i},"1,{i:03d}"\n' for i in range(30)))
    with pytest.raises(LapnetError, match=r"1 numeric column\(s\) \(row\), and column 'Sales' holds numbers written "
                                          "with commas"):
        read_series(csv)


# --- 4, 5. nothing to learn, and tiny units: scale-free ---------------------------------------


def test_nothing_to_learn_is_judged_relative_to_the_series_size():
    cfg = SeriesConfig(window=8)
    line = 1e6 + 0.1 * np.arange(60)  # a straight line; its changes differ by float64 rounding (1e-10)
    assert np.diff(line).std() > 0
    with pytest.raises(LapnetError, match=r"a straight line \(every change is \+0\.1\): the drift forecast \(the last "
                                          r"value \+0\.1 per step\) is exact, and there is nothing for a model"):
        check_series(line, cfg)
    with pytest.raises(LapnetError, match=r"constant \(every value is 7\): nothing to learn"):
        check_series(np.full(60, 7.0), SeriesConfig(window=8, difference=False))
    check_series(seasonal() * 1e-140, cfg)  # small units, but a real series
    check_series(seasonal() * 1e140, cfg)


def test_tiny_values_are_refused_with_a_rescale_hint_like_huge_ones(run_cli, tmp_path):
    """Values around 1e-200 were refused as "a straight line" (their spread's squares underflow)."""
    csv = tmp_path / "tiny.csv"
    csv.write_text("v\n" + "".join(f"{float(v) * 1e-200!r}\n" for v in seasonal()))
    err = refused(*run_cli("series", "train", csv, *QUICK, "--out", tmp_path / "r")[::2])
    assert re.search(r"values must not all lie within \+-1e-150: the largest is 1\.\d+e-198: rescale it", err), err
    huge = tmp_path / "huge.csv"
    huge.write_text("v\n" + "".join(f"{float(v) * 1e200!r}\n" for v in seasonal()))
    err = refused(*run_cli("series", "train", huge, *QUICK, "--out", tmp_path / "r")[::2])
    assert "values must lie within +-1e+150" in err and "rescale it" in err


# --- 6, 7. column names -----------------------------------------------------------------------


def test_a_single_headerless_column_is_named_1_and_value_still_works(run_cli, tmp_path):
    csv = tmp_path / "bare.csv"
    values = seasonal()
    csv.write_text("".join(f"{float(v)!r}\n" for v in values))
    out = tmp_path / "r"
    code, _, err = run_cli("series", "train", csv, "--column", "1", *QUICK, "--out", out)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["column"] == "1"
    assert read_series(csv)[1] == "1" and read_series(csv, "value")[0].tolist() == values.tolist()
    config = json.loads((out / "config.json").read_text())
    config["column"] = "value"  # a run saved before the column was named 1
    (out / "config.json").write_text(json.dumps(config))
    code, stdout, err = run_cli("series", "forecast", out, csv, "--steps", "2")
    assert code == 0 and warned(err) == [] and len(stdout.splitlines()) == 3, err


def test_spaces_around_header_names_do_not_count(run_cli, tmp_path):
    csv = tmp_path / "sp.csv"
    rows = "".join(f"2020-01-{d % 28 + 1:02d}, {v:.2f}\n" for d, v in enumerate(seasonal()))
    csv.write_text("month, passengers \n" + rows)
    for name in ("passengers", " passengers"):
        out = tmp_path / f"r{len(name)}"
        code, _, err = run_cli("series", "train", csv, "--column", name, *QUICK, "--out", out)
        assert code == 0, err
        assert json.loads((out / "config.json").read_text())["column"] == "passengers"
    clash = tmp_path / "clash.csv"
    clash.write_text("a, a\n1,2\n")
    err = refused(*run_cli("series", "train", clash, *QUICK, "--out", tmp_path / "c")[::2])
    assert "the header names 'a' twice (spaces around names do not count): rename one" in err


# --- 8. newest first --------------------------------------------------------------------------


def test_a_newest_first_file_is_said_never_reordered(run_cli, tmp_path):
    values = seasonal()
    months = pd.date_range("2000-01-01", periods=80, freq="MS").strftime("%Y-%m-%d")
    new_first = tmp_path / "desc.csv"
    pd.DataFrame({"month": months[::-1], "units": values}).to_csv(new_first, index=False)
    code, _, err = run_cli("series", "train", new_first, *QUICK, "--out", tmp_path / "r")
    assert code == 0, err
    assert warned(err) == [f"lapnet: warning: {new_first}: column 'month' runs newest first (2006-08-01 down to "
                           "2000-01-01); lapnet reads rows in file order, so the forecast would continue before the "
                           "oldest row: sort the file oldest first"]
    with pytest.warns(UserWarning, match="runs newest first"):
        assert read_series(new_first)[0] == pytest.approx(values, rel=1e-15)  # in file order
    old_first = tmp_path / "asc.csv"
    pd.DataFrame({"month": months, "units": values}).to_csv(old_first, index=False)
    code, _, err = run_cli("series", "train", old_first, *QUICK, "--out", tmp_path / "r2")
    assert code == 0 and warned(err) == [], err


# --- 10. standard input, grammar, --minutes, the guide ---------------------------------------


def test_dash_reads_standard_input_as_text_train_does(run_cli, tmp_path, monkeypatch, run):
    values = seasonal()
    text = "month,passengers\n" + "".join(f"2000-01-{i % 28 + 1:02d},{float(v)!r}\n" for i, v in enumerate(values))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, stdout, err = run_cli("series", "forecast", run, "-", "--steps", "3", "--json")
    assert code == 0, err
    assert json.loads(stdout)["forecast"] == pytest.approx(forecast_series(run, values, 3).tolist(), rel=1e-12)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, _, err = run_cli("series", "train", "-", *QUICK, "--out", tmp_path / "r")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["source"] == "-"


def test_one_scored_value_reads_as_one(tmp_path):
    with pytest.warns(UserWarning, match=r"scored on 1 value only"):
        m = train_series(seasonal(40), SeriesConfig(**{**FAST, "window": 32, "epochs": 1}), tmp_path / "r")
    assert m["scored_windows"] == 1
    assert m["scored_on"] == "the last value, held out from training and from early stopping"


@pytest.mark.parametrize("flag", ["--minutes", "--lr"])
def test_budgets_say_finite(run_cli, tmp_path, flag):
    csv = tmp_path / "s.csv"
    pd.DataFrame({"y": seasonal()}).to_csv(csv, index=False)
    err = refused(*run_cli("series", "train", csv, flag, "inf", "--out", tmp_path / "r")[::2])
    assert f"{flag} must be a finite positive number, got inf" in err


def test_the_guide_gives_the_commands_it_measures():
    guide = (REPO / "docs" / "guide" / "series.md").read_text()
    assert "lapnet series train sales.csv --column units --season 12 --window 24 --levels" in guide  # the table's row
    assert "set_threads(1)" in guide  # the library has no threads setting: the CLI's call, named
    assert "lapnet series forecast runs/air air.csv --steps 120" in guide  # long forecasts, measured
    assert ".csv.gz" in guide and "lapnet series forecast runs/sales - " in guide
    assert "named 1, 2, ..." in guide and "newest-first" in guide and "10 training sds" in guide
