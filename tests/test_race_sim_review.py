"""Fixes from a race engineer's review of `lapnet race simulate` and `lapnet race calibrate`:
memory refusals (5), calibration bounds and unreadable lap times (13), files that are not
calibrations (14), calibration fallbacks named and recorded (12), race labels (10)."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.race import simulate as sim_mod
from lapnet.race.calibrate import calibrate, load_calibration
from lapnet.race.clean import clean_laps
from lapnet.race.io import read_laps
from lapnet.race.simulate import Circuit, SimParams, check_simulation_size, simulate, simulate_to_file, simulation_bytes


def one_line_error(code: int, err: str, match: str) -> str:
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lapnet: error:"), err
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def good_cal(tmp_path_factory) -> tuple[Path, dict]:
    """A calibration fitted to two simulated races (seed 3) and its JSON."""
    d = tmp_path_factory.mktemp("cal")
    laps = d / "laps.csv"
    simulate_to_file(laps, 2, seed=3)
    cal = calibrate(clean_laps(read_laps(laps))[0])
    p = d / "calib.json"
    cal.save(p)
    return p, json.loads(p.read_text())


# --- the documented outputs do not move ----------------------------------------------------


def test_default_simulation_is_unchanged(tmp_path):
    """The documented `lapnet race simulate --races 10 --seed 7` table, byte for byte."""
    p = tmp_path / "laps.csv"
    summary = simulate_to_file(p, 10, seed=7)
    assert hashlib.md5(p.read_bytes()).hexdigest() == "f93cfe40beac54e086f4fe9376117bbb"
    assert summary["laps"] == 11531 and summary["pit_stops"] == 285


# --- 5. a simulation too big for the memory is refused, in one line ---------------------------


def test_memory_estimate_and_refusal(monkeypatch):
    assert simulation_bytes(10) == 10 * 20 * 71 * 700  # the longest default circuit: 71 laps
    short = replace(SimParams(), circuits=(Circuit("x", 50, 90.0, 20.0),))
    assert simulation_bytes(10, short) == 10 * 20 * 50 * 700
    monkeypatch.setattr(sim_mod, "_available_memory", lambda: 2_000_000_000)
    check_simulation_size(1006)  # 1006 x 994,000 bytes <= 1 GB
    with pytest.raises(LapnetError) as e:
        simulate(1007, seed=0)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == ("simulate: 1,007 races of 20 cars x up to 71 laps need about 1.0 GB of memory (700 bytes per car-lap), "
                   "more than half the 2.0 GB available now: at most 1,006 races per call on this machine (simulate more "
                   "in several calls with other seeds and race labels)")
    monkeypatch.setattr(sim_mod, "_available_memory", lambda: None)  # a system that does not say: no refusal
    assert simulate(1, seed=0)["Race"].nunique() == 1


def test_available_memory_is_read():
    avail = sim_mod._available_memory()
    assert avail is None or avail > 0


def test_cli_refuses_too_many_races(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(sim_mod, "_available_memory", lambda: 23_000_000_000)
    out = tmp_path / "laps.csv"
    code, _, err = run_cli("race", "simulate", "--races", 100_000, "--out", out)
    line = one_line_error(code, err, "100,000 races of 20 cars x up to 71 laps need about 99.4 GB of memory")
    assert "at most 11,569 races per call" in line
    assert not out.exists()
    code, out_help, _ = run_cli("race", "simulate", "--help")
    assert code == 0 and "100000" not in out_help and "half the memory" in " ".join(out_help.split())


def test_race_train_pretrain_sim_too_big_is_one_line(run_cli, sim_races, tmp_path, monkeypatch):
    monkeypatch.setattr(sim_mod, "_available_memory", lambda: 23_000_000_000)
    _, parts = sim_races
    run = tmp_path / "run"
    code, _, err = run_cli("race", "train", parts[0], "--out", run, "--pretrain-sim", 100_000_000, "--epochs", 1,
                           "--hidden", 4, "--quiet")
    one_line_error(code, err, "simulate: 100,000,000 races of 20 cars")
    assert not (run / "model.safetensors").exists()


# --- 13. absurd calibration values are refused; so are lap times lapnet cannot read ----------


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.update(car_pace_sd_s=1e308), "car_pace_sd_s: 1e+308 is outside its physical bounds [0, 5]"),
        (lambda d: [c.update(base_lap_s=5.0) for c in d["circuits"]], "circuits[0].base_lap_s: 5 is outside its physical bounds [30, 300]"),
        (lambda d: d.update(sc_per_race=1e9), "sc_per_race: 1e+09 is outside its physical bounds [0, 10]"),
        (lambda d: d.update(sc_laps_mean=0), "sc_laps_mean: 0 is outside its physical bounds [1, 30]"),
        (lambda d: d.update(fuel_s_per_kg=3.0), "fuel_s_per_kg: 3 is outside its physical bounds [0, 0.2]"),
        (lambda d: d["circuits"][0].update(lap_trend_s=-2.5), "circuits[0].lap_trend_s: -2.5 is outside its physical bounds [-1, 1]"),
        (lambda d: d["circuits"][0].update(deg_scale=9.0), "circuits[0].deg_scale: 9 is outside its physical bounds [0, 4]"),
        (lambda d: d["compounds"]["MEDIUM"].update(deg_quad_s=0.5), "compounds.MEDIUM.deg_quad_s: 0.5 is outside its physical bounds [-0.05, 0.05]"),
        (lambda d: d["compounds"]["MEDIUM"].update(stint_laps_p95=d["compounds"]["MEDIUM"]["stint_laps"] - 1),
         "compounds.MEDIUM.stint_laps_p95: "),
        (lambda d: d.update(defaulted=["car_pace_sd_s"]), "defaulted must be an object of reasons"),
    ],
)
def test_calibration_bounds(run_cli, good_cal, tmp_path, edit, match):
    _, good = good_cal
    d = json.loads(json.dumps(good))
    edit(d)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(LapnetError, match=None) as e:
        load_calibration(bad)
    assert match in str(e.value)
    out = tmp_path / "laps.csv"
    code, _, err = run_cli("race", "simulate", "--races", 1, "--calibration", bad, "--out", out)
    one_line_error(code, err, match)
    assert not out.exists()


def test_lap_times_not_finite_and_positive_are_refused(run_cli, good_cal, tmp_path):
    """Each value in bounds, together absurd: a 30 s lap that gets 1 s faster every lap for 71 laps."""
    _, good = good_cal
    d = json.loads(json.dumps(good))
    for c in d["circuits"]:
        c.update(base_lap_s=30.0, lap_trend_s=-1.0, laps=71)
    bad = tmp_path / "fast.json"
    bad.write_text(json.dumps(d))
    out = tmp_path / "laps.csv"
    code, _, err = run_cli("race", "simulate", "--races", 1, "--calibration", bad, "--out", out)
    one_line_error(code, err, "lap times that are not finite and positive")
    assert not out.exists()
    p = replace(SimParams(), circuits=(Circuit("minus", 50, -100.0, 20.0),))
    with pytest.raises(LapnetError, match=r"simulate: these constants give 966 lap times .* on lap 1 at minus"):
        simulate(1, seed=0, params=p)


def test_a_real_calibration_is_within_bounds(good_cal):
    p, good = good_cal
    assert load_calibration(p).to_dict() == good


# --- 14. a directory, or another lapnet file, is named as such -------------------------------


def test_not_a_calibration_file(run_cli, tmp_path):
    config = {"kind": "race", "features": [], "compounds": ["SOFT"], "model": {}, "train": {}, "races": ["a"]}
    (tmp_path / "config.json").write_text(json.dumps(config))  # a run's config.json has these keys
    (tmp_path / "metrics.json").write_text(json.dumps({"masks": {}, "train": {}, "validation": {}}))
    (tmp_path / "list.json").write_text("[1, 2]")
    cases = [
        (tmp_path, f"{tmp_path}: is a directory, not a calibration file"),
        (tmp_path / "config.json", "config.json: is not a lapnet calibration file (no 'circuits' key"),
        (tmp_path / "metrics.json", "metrics.json: is not a lapnet calibration file (no 'circuits' key"),
        (tmp_path / "list.json", "list.json: is not a lapnet calibration file: expected an object, got list"),
    ]
    for path, match in cases:
        out = tmp_path / "laps.csv"
        code, _, err = run_cli("race", "simulate", "--calibration", path, "--out", out)
        line = one_line_error(code, err, match)
        assert "lap_noise_s" not in line  # not a list of 17 missing fields
        assert not out.exists()


def test_a_damaged_calibration_still_names_its_missing_fields(good_cal, tmp_path):
    _, good = good_cal
    d = json.loads(json.dumps(good))
    del d["lap_noise_s"], d["defaulted"]
    p = tmp_path / "c.json"
    p.write_text(json.dumps(d))
    with pytest.raises(LapnetError, match=r"missing field\(s\) lap_noise_s$"):
        load_calibration(p)


# --- 12. every fallback is a warning and is kept in the file ----------------------------------


ONE_DRIVER_DEFAULTED = [
    "car_pace_sd_s", "compounds.HARD.stint_laps", "compounds.HARD.offset_s", "circuits.sim_0000.deg_scale",
    "pace_drift_s", "slow_lap_prob", "compounds.SOFT", "compounds.MEDIUM",
]


def test_calibrating_one_driver_warns_once_per_fallback(run_cli, tmp_path):
    """One driver's 62 laps (VER, simulated race sim_0000 of seed 3: SOFT then HARD)."""
    sim = simulate(2, seed=3)
    one = tmp_path / "ver.csv"
    sim[(sim["Race"] == "sim_0000") & (sim["Driver"] == "VER")].to_csv(one, index=False)
    out = tmp_path / "c.json"
    code, stdout, err = run_cli("race", "calibrate", one, "--out", out, "--json")
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if ln.startswith("lapnet: warning: calibration:")]
    assert [w.split()[3] for w in warned] == ONE_DRIVER_DEFAULTED  # once each, in the file's order
    text = "\n".join(warned)
    assert "car_pace_sd_s is the simulator's default 0.35 s (only 1 driver(s) with 10+ dry scored laps in a race; 5 needed" in text
    assert "compounds.MEDIUM is not calibrated (only 0 dry scored laps on it; 20 needed): the simulator uses its own MEDIUM model" in text
    assert "compounds.SOFT is not calibrated (only 17 dry scored laps on it; 20 needed)" in text
    saved = json.loads(out.read_text())
    assert list(saved["defaulted"]) == ONE_DRIVER_DEFAULTED
    assert saved["car_pace_sd_s"] == 0.35 and set(saved["compounds"]) == {"HARD"}
    assert json.loads(stdout)["defaulted"] == ONE_DRIVER_DEFAULTED
    assert load_calibration(out).defaulted == saved["defaulted"]
    # the file runs: the uncalibrated compounds run on the simulator's own models
    code, _, err = run_cli("race", "simulate", "--races", 1, "--calibration", out, "--out", tmp_path / "s.csv")
    assert code == 0, err


def test_no_fallback_no_warning(good_cal, tmp_path):
    p, good = good_cal
    assert good["defaulted"] == {}
    laps = read_laps(simulate(2, seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert calibrate(clean_laps(laps)[0]).defaulted == {}


def test_a_file_without_defaulted_still_loads(good_cal, tmp_path):
    """Calibrations written before the field existed: nothing was recorded as defaulted."""
    _, good = good_cal
    d = json.loads(json.dumps(good))
    del d["defaulted"]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(d))
    assert load_calibration(p).defaulted == {}


def test_real_races_fallbacks(f1_data):
    """Miami 2023 alone: no SOFT lap, no safety car; the 15 races: nothing defaulted."""
    from lapnet.race.io import read_many

    with pytest.warns(UserWarning) as rec:
        miami = calibrate(clean_laps(read_many([f1_data / "2023_miami_R.csv"]))[0])
    assert list(miami.defaulted) == ["compounds.SOFT", "sc_laps_mean"]
    assert miami.defaulted["compounds.SOFT"].startswith("not calibrated (only 5 dry scored laps on it; 20 needed)")
    assert sum("calibration: compounds.SOFT is not calibrated" in str(w.message) for w in rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        every = calibrate(clean_laps(read_many(sorted(f1_data.glob("*.csv"))))[0])
    assert every.defaulted == {} and len(every.races) == 15


# --- 10. --label: two simulations that can be used together -----------------------------------


def test_label(run_cli, tmp_path):
    default = simulate(2, seed=3)
    labelled = simulate(2, seed=3, label="s3")
    assert sorted(default["Race"].unique()) == ["sim_0000", "sim_0001"]
    assert sorted(labelled["Race"].unique()) == ["s3_0000", "s3_0001"]
    pd.testing.assert_frame_equal(default.drop(columns="Race"), labelled.drop(columns="Race"))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run_cli("race", "simulate", "--races", 2, "--seed", 3, "--out", a)[0] == 0
    code, _, err = run_cli("race", "simulate", "--races", 2, "--seed", 99, "--out", b)
    assert code == 0, err
    code, _, err = run_cli("race", "clean", a, b)
    assert code == 2 and "sim_0000" in err  # the same names in both tables
    code, _, err = run_cli("race", "simulate", "--races", 2, "--seed", 99, "--label", "s99", "--out", b, "--force")
    assert code == 0, err
    code, out, err = run_cli("race", "clean", a, b, "--json")
    assert code == 0, err
    assert sorted(json.loads(out)["by_race"]) == ["s99_0000", "s99_0001", "sim_0000", "sim_0001"]
    for bad in ("", "a b", "x/y", "-x", "x" * 41):
        code, _, err = run_cli("race", "simulate", "--races", 1, "--label", bad, "--out", tmp_path / "c.csv")
        one_line_error(code, err, "label must be 1 to 40 letters, digits")
        assert not (tmp_path / "c.csv").exists()


def test_race_train_refuses_a_simulation_too_big_before_any_work(run_cli, tmp_path):
    """--pretrain-sim / --phase-sim too big for the machine: one line, exit 2, nothing written."""
    laps = tmp_path / "laps.csv"
    laps.write_text("not read: the size check comes first\n")
    for flag in ("--pretrain-sim", "--phase-sim"):
        out = tmp_path / f"run{flag}"
        code, _, err = run_cli("race", "train", laps, "--out", out, flag, 10**9)
        assert code == 2 and err.count("\n") == 1 and flag in err and "memory" in err, err
        assert not out.exists()


def test_a_strategy_what_if_changes_only_that_cars_plan():
    """simulate(strategies=): the car runs the plan in every race; every random draw stays, so the
    safety cars, the other cars' plans and the race set-up are those of the same seed without it."""
    from lapnet.race.simulate import simulate

    base = simulate(3, seed=3)
    what_if = simulate(3, seed=3, strategies={"VER": (("MEDIUM", "HARD"), (25,)), "ham": (("SOFT", "MEDIUM", "HARD"), (12, 34))})

    def plans(df):
        return df.groupby(["Race", "Driver"]).apply(
            lambda g: ("-".join(dict.fromkeys(g["Compound"])), tuple(g.loc[g["PitInTime"].notna(), "LapNumber"].astype(int))),
            include_groups=False)

    a, b = plans(base), plans(what_if)
    for race in b.index.get_level_values(0).unique():
        assert b[race, "VER"] == ("MEDIUM-HARD", (25,))
        assert b[race, "HAM"] == ("SOFT-MEDIUM-HARD", (12, 34))
    others = [k for k in a.index if k[1] not in ("VER", "HAM")]
    assert (a[others] == b[others]).all()  # the other 18 cars keep their plans (and retirements)
    status = ["Race", "LapNumber"]
    assert base.groupby(status)["TrackStatus"].first().equals(what_if.groupby(status)["TrackStatus"].first())
    assert base.groupby("Race")["Circuit"].first().equals(what_if.groupby("Race")["Circuit"].first())


@pytest.mark.parametrize("value,message", [
    ("VER=MEDIUM/25", "write DRIVER=COMPOUND/IN-LAP/COMPOUND"),
    ("VER=MEDIUM/x/HARD", "write DRIVER=COMPOUND/IN-LAP/COMPOUND"),
    ("XYZ=MEDIUM/25/HARD", "no such driver"),
    ("VER=MEDIUM/25/INTERMEDIATE", "unknown compound"),
    ("VER=MEDIUM/30/HARD/20/SOFT", "in-laps must rise"),
    ("VER=MEDIUM/999/HARD", "in-laps must rise"),
    ("VER=SOFT/10/MEDIUM/20/HARD/30/SOFT", "1 to 3 stints"),
])
def test_race_simulate_refuses_a_bad_strategy(run_cli, tmp_path, value, message):
    out = tmp_path / "laps.csv"
    code, _, err = run_cli("race", "simulate", "--races", 1, "--out", out, "--strategy", value)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_a_safety_car_what_if_lays_one_over_every_race():
    """simulate(safety_car=(20, 4)): laps 20-23 of every race behind the safety car, the random
    ones as drawn; cars due to stop soon stop under it; a plan stopping under it beats the same
    car stopping 10 laps later, same seed, in most races (the stop costs ~45% less)."""
    from lapnet.race.simulate import simulate

    base = simulate(6, seed=5)
    sc = simulate(6, seed=5, safety_car=(20, 4))
    status = sc.groupby(["Race", "LapNumber"])["TrackStatus"].first()
    for race in status.index.get_level_values(0).unique():
        assert all("4" in status[race, lap] for lap in range(20, 24))
    calm = base.groupby(["Race", "LapNumber"])["TrackStatus"].first()
    away = [k for k in calm.index if not 19 <= k[1] <= 26]  # the forced laps and the stops they move aside
    assert (calm[away].str.contains("4") <= status[away].str.contains("4")).all()  # every random safety car stays
    stops = lambda df: df[df["PitInTime"].notna() & df["LapNumber"].between(20, 23)]  # noqa: E731
    assert len(stops(sc)) > len(stops(base)) + 6  # cars due to stop soon take the cheap stop

    under = simulate(6, seed=5, safety_car=(20, 4), strategies={"VER": (("MEDIUM", "HARD"), (20,))})
    later = simulate(6, seed=5, safety_car=(20, 4), strategies={"VER": (("MEDIUM", "HARD"), (30,))})
    total = lambda df: df[df["Driver"] == "VER"].groupby("Race")["LapTime"].sum()  # noqa: E731
    assert (total(under) < total(later)).sum() >= 5


@pytest.mark.parametrize("value,message", [
    ("20-4", "write FIRST:LAPS"), ("x:4", "write FIRST:LAPS"), ("\u00b2:4", "write FIRST:LAPS"),
    ("1:4", "the first lap must be 2 to"), ("20:0", "LAPS at least 1"), ("999:2", "the first lap must be 2 to"),
])
def test_race_simulate_refuses_a_bad_safety_car(run_cli, tmp_path, value, message):
    out = tmp_path / "laps.csv"
    code, _, err = run_cli("race", "simulate", "--races", 1, "--out", out, "--safety-car", value)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()
