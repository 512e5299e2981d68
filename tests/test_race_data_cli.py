"""`lapnet race simulate` and `lapnet race calibrate` through the CLI: happy paths and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lapnet.race.calibrate import load_calibration
from lapnet.race.io import read_laps

TINY = Path(__file__).parent / "data" / "race_tiny.csv"


def one_line_error(code: int, err: str, match: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lapnet: error:"), err
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def sim_csv(tmp_path_factory) -> Path:
    from lapnet.race.simulate import simulate_to_file

    p = tmp_path_factory.mktemp("sim") / "laps.csv"
    simulate_to_file(p, 2, seed=3)
    return p


def test_simulate_writes_and_refuses_to_overwrite(run_cli, tmp_path):
    out = tmp_path / "laps.parquet"
    code, stdout, err = run_cli("race", "simulate", "--out", out, "--races", 2, "--seed", 5, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    df = read_laps(out)
    assert summary["races"] == 2 and summary["laps"] == len(df) and summary["cars"] == 20
    assert "simulated races" in err  # the table goes to stderr
    before = out.read_bytes()
    code, _, err = run_cli("race", "simulate", "--out", out, "--races", 1)
    one_line_error(code, err, "already exists (use --force")
    assert out.read_bytes() == before
    code, _, err = run_cli("race", "simulate", "--out", out, "--races", 1, "--force")
    assert code == 0 and read_laps(out)["Race"].nunique() == 1


@pytest.mark.parametrize(
    "args, match",
    [
        (["--out", "{tmp}/laps.txt"], "write a .csv or .parquet"),
        (["--out", "{tmp}/nope/laps.csv"], "does not exist"),
        (["--out", "{tmp}/laps.csv", "--races", "0"], "--races"),
        (["--out", "{tmp}/laps.csv", "--seed", "-1"], "--seed"),
        (["--out", "{tmp}/laps.csv", "--calibration", "{tmp}/missing.json"], "no such calibration file"),
        (["--out", "{tmp}/laps.csv", "--calibration", "{tmp}/bad.json"], "invalid JSON"),
        (["--out", "{tmp}/laps.csv", "--calibration", "{tmp}/wrong.json"], "missing field(s)"),
    ],
)
def test_simulate_bad_input(run_cli, tmp_path, args, match):
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "wrong.json").write_text(json.dumps({"version": 1}))
    code, _, err = run_cli("race", "simulate", *[a.format(tmp=tmp_path) for a in args])
    one_line_error(code, err, match)
    assert not (tmp_path / "laps.csv").exists()


def test_calibrate_and_simulate_with_it(run_cli, f1_data, tmp_path):
    out, fig = tmp_path / "calib.json", tmp_path / "calib.png"
    races = [f1_data / "2023_miami_R.csv", f1_data / "2023_belgian_R.csv"]
    code, stdout, err = run_cli("race", "calibrate", *races, "--out", out, "--figure", fig, "--sim-races", 2, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    cal = load_calibration(out)
    assert summary["races"] == 2 and summary["fuel_s_per_kg"] == cal.fuel_s_per_kg
    assert fig.stat().st_size > 10_000 and fig.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli("race", "simulate", "--out", tmp_path / "s.csv", "--races", 2, "--calibration", out)
    assert code == 0, err
    assert set(read_laps(tmp_path / "s.csv")["Circuit"]) <= {"2023_miami_R", "2023_belgian_R"}
    code, _, err = run_cli("race", "calibrate", *races, "--out", out)
    one_line_error(code, err, "already exists")


def _write(tmp_path: Path, name: str, df: pd.DataFrame) -> Path:
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def test_calibrate_bad_input(run_cli, tmp_path, sim_csv):
    out = str(tmp_path / "calib.json")
    good = pd.read_csv(sim_csv, dtype={"TrackStatus": str})
    cases = []
    cases.append(([tmp_path / "missing.csv"], "no such file"))
    (tmp_path / "empty.csv").write_text("")
    cases.append(([tmp_path / "empty.csv"], "empty file"))
    cases.append(([_write(tmp_path, "cols.csv", good.drop(columns=["LapTime", "Driver"]))], "missing required column(s) Driver, LapTime"))
    neg = good.copy()
    neg.loc[5, "LapTime"] = -90.0
    cases.append(([_write(tmp_path, "neg.csv", neg)], "LapTime, line 7: negative"))
    bad = good.copy().astype({"LapTime": object})
    bad.loc[7, "LapTime"] = "1:3x.2"
    cases.append(([_write(tmp_path, "bad.csv", bad)], "LapTime, line 9: unparseable time"))
    inf = good.copy()
    inf.loc[2, "LapTime"] = float("inf")
    cases.append(([_write(tmp_path, "inf.csv", inf)], "LapTime, line 4: infinite"))
    mixed = pd.concat([good, good]).drop(columns=["Race"])
    cases.append(([_write(tmp_path, "mixed.csv", mixed)], "split the file into one file per race"))
    comp = good.copy()
    comp.loc[0, "Compound"] = "ULTRASFT"
    cases.append(([_write(tmp_path, "comp.csv", comp)], "Compound, line 2: unknown compound"))
    four = good.copy()  # an absolute name beside the relative three: four dry compounds in one race
    four.loc[0, "Compound"] = "ULTRASOFT"
    cases.append(([_write(tmp_path, "four.csv", four)], "4 dry compounds in one race"))
    cases.append(([TINY], "no usable green laps"))
    nan = good.copy()
    nan["LapTime"] = float("nan")
    cases.append(([_write(tmp_path, "nan.csv", nan)], "no usable green laps"))
    cases.append(([sim_csv, sim_csv], "appears in both"))
    huge = good.copy()
    huge.loc[4, "LapNumber"] = 1e12  # the simulator would be asked for a 1e12-lap race
    cases.append(([_write(tmp_path, "huge.csv", huge)], "LapNumber, line 6: lap numbers are whole numbers from 1 to 1000 (1000000000000.0)"))
    slow = good.copy()
    slow.loc[4, "LapTime"] = 1e300
    cases.append(([_write(tmp_path, "slow.csv", slow)], "LapTime, line 6: a lap time over 6 hours (1e+300)"))
    twice = _write(tmp_path, "twice.csv", good)
    header, *rows = twice.read_text().splitlines()
    twice.write_text("\n".join([header + ",LapTime"] + [r + ",90.0" for r in rows]) + "\n")  # pandas reads it as LapTime.1
    cases.append(([twice], "column 'LapTime' appears twice (the second read as 'LapTime.1')"))
    for paths, match in cases:
        code, _, err = run_cli("race", "calibrate", *paths, "--out", out)
        one_line_error(code, err, match)
        assert not Path(out).exists()
    code, _, err = run_cli("race", "calibrate", sim_csv, "--out", tmp_path / "c.txt")
    one_line_error(code, err, "is a .json file")
    code, _, err = run_cli("race", "calibrate", sim_csv, "--out", out, "--figure", tmp_path / "f.gif")
    one_line_error(code, err, "write a .png")


def test_practice_session_is_a_warning(run_cli, tmp_path, sim_csv):
    df = pd.read_csv(sim_csv, dtype={"TrackStatus": str})
    df["Position"] = float("nan")  # FastF1 gives no positions outside races
    p = _write(tmp_path, "fp2.csv", df)
    code, _, err = run_cli("race", "calibrate", p, "--out", tmp_path / "c.json")
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("lapnet: warning:")]
    assert len(warn) == 2 and all("looks like a practice or qualifying session" in w for w in warn)  # one per race


def test_help_has_examples(run_cli):
    for cmd in ("simulate", "calibrate"):
        code, out, _ = run_cli("race", cmd, "--help")
        assert code == 0 and "Example: lapnet race " + cmd in out


def test_calibration_file_bounds(run_cli, tmp_path, sim_csv):
    """A calibration the simulator cannot run is refused when read: no compounds, a race
    longer than any lap table may hold."""
    import json

    out = tmp_path / "calib.json"
    code, _, err = run_cli("race", "calibrate", sim_csv, "--out", out)
    assert code == 0, err
    good = json.loads(out.read_text())
    for name, edit, match in (
        ("nocomp", lambda d: d.update(compounds={}), "compounds must be a non-empty object"),
        ("long", lambda d: d["circuits"][0].update(laps=10**9), "circuits[0].laps: at most 1000 laps, got 1000000000"),
    ):
        d = json.loads(json.dumps(good))
        edit(d)
        bad = tmp_path / f"{name}.json"
        bad.write_text(json.dumps(d))
        code, _, err = run_cli("race", "simulate", "--out", tmp_path / f"{name}.csv", "--races", 1, "--calibration", bad)
        one_line_error(code, err, match)
        assert not (tmp_path / f"{name}.csv").exists()
