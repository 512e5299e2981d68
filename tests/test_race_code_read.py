"""A maintainer's read of the race code: the promises its docstrings and help make, kept.

Predict's stale staging directories (a live pid's never), the simulator's named constants,
the feature scales shared with their decoders, the `green` feature against clean's Green
column, metrics.json's rule for the Scored pairs and the figure count in the help."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------
# predict's staging directories: a live pid's is never stale, age counts only without a pid


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_live_calls_staging_directory_is_never_stale_however_old(tmp_path):
    from lapnet.race.outputs import stale_staging
    from lapnet.race.prediction import STAGING, STAGING_STALE

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live_other = tmp_path / f"{STAGING}{os.getppid()}-old1"  # a live process's, 700 s old
    live_own = tmp_path / f"{STAGING}{os.getpid()}-old2"  # this process's own, 700 s old
    dead_new = tmp_path / f"{STAGING}{int(dead.stdout)}-new1"  # a dead process's, just made
    no_pid_old = tmp_path / f"{STAGING}x-old3"  # no pid to ask: its age tells
    no_pid_new = tmp_path / f"{STAGING}y-new2"
    huge_pid_old = tmp_path / f"{STAGING}{10**30}-old4"  # no process can have it: its age tells
    for d in (live_other, live_own, dead_new, no_pid_old, no_pid_new, huge_pid_old):
        d.mkdir()
    for d in (live_other, live_own, no_pid_old, huge_pid_old):
        _age(d, STAGING_STALE + 100)
    found = sorted(p.name for p in stale_staging(tmp_path, STAGING, STAGING_STALE))
    assert found == sorted([dead_new.name, no_pid_old.name, huge_pid_old.name])


# ---------------------------------------------------------------------------------------
# the simulator: the lap loop's constants are SimParams fields, used


def test_the_lap_loops_constants_are_simparams_fields_with_the_old_values():
    from lapnet.race.simulate import SimParams

    p = SimParams()
    assert (p.session_start_s, p.grid_start_gap_s, p.start_tyre_temp) == (3600.0, 0.25, 85.0)
    assert (p.tyre_temp_neutral, p.tyre_temp_push, p.tyre_temp_conserve, p.tyre_temp_pit_window) == (80.0, 105.0, 95.0, 100.0)
    assert (p.out_lap_tyre_temp, p.tyre_temp_lag, p.tyre_temp_optimum) == (70.0, 0.6, 92.0)
    assert (p.sc_gap_per_place_s, p.sc_close_share, p.sc_close_max, p.vsc_pace_share) == (0.8, 0.5, 0.25, 0.3)
    assert (p.pit_in_at, p.pit_out_at, p.neutral_fuel_burn) == (0.93, 0.6, 0.6)


def test_the_simulator_reads_its_new_fields():
    from lapnet.race.simulate import SimParams, simulate

    p = SimParams()
    a = simulate(1, seed=3, params=p)
    later = simulate(1, seed=3, params=replace(p, session_start_s=p.session_start_s + 100.0))
    assert np.allclose(later["LapStartTime"] - a["LapStartTime"], 100.0)  # every lap shifted
    np.testing.assert_allclose(later["LapTime"], a["LapTime"], rtol=0, atol=1e-9)  # nothing else moved (but rounding)
    pit = simulate(1, seed=3, params=replace(p, pit_in_at=0.5))
    pin = a["PitInTime"].notna()
    assert pin.any() and np.allclose((pit["PitInTime"] - pit["LapStartTime"])[pin], 0.5 * pit.loc[pin, "LapTime"])
    cold = simulate(1, seed=3, params=replace(p, start_tyre_temp=60.0))
    lap1 = a["LapNumber"] == 1
    assert (cold.loc[lap1, "TyreTemp"] < a.loc[lap1, "TyreTemp"]).all()
    assert (cold.loc[lap1, "OracleLapTime"] > a.loc[lap1, "OracleLapTime"]).all()  # cold tyres are slower


NEW_SIM_FIELDS = ("session_start_s", "grid_start_gap_s", "start_tyre_temp", "tyre_temp_neutral", "tyre_temp_push",
                  "tyre_temp_conserve", "tyre_temp_pit_window", "out_lap_tyre_temp", "tyre_temp_lag", "tyre_temp_optimum",
                  "sc_gap_per_place_s", "sc_close_share", "sc_close_max", "vsc_pace_share", "neutral_fuel_burn",
                  "pit_in_at", "pit_out_at")


def test_a_calibration_file_carries_none_of_the_new_fields_and_keeps_their_defaults(sim_races, tmp_path):
    """SimParams is not in the calibration JSON (its schema is Calibration's): a file written before
    these fields existed loads as before, and a calibrated simulation takes their defaults."""
    import json

    from lapnet.race.calibrate import calibrate, load_calibration
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import read_laps
    from lapnet.race.simulate import SimParams, simulate

    cal = calibrate(clean_laps(read_laps(sim_races[0]))[0])
    path = tmp_path / "calib.json"
    cal.save(path)
    text = path.read_text()
    assert not [f for f in NEW_SIM_FIELDS if f in text]
    p = SimParams.from_calibration(load_calibration(path))
    assert all(getattr(p, f) == getattr(SimParams(), f) for f in NEW_SIM_FIELDS)
    assert len(simulate(1, seed=1, calibration=load_calibration(path))) > 0
    assert json.loads(text)["version"] == 1


# ---------------------------------------------------------------------------------------
# the feature scales: one constant for the encoder and every decoder


def test_feature_scales_decode_the_encoded_values(sim_races):
    from lapnet.race.features import LAPS_SCALE, STOPS_SCALE, featurize_race
    from lapnet.race.inputs import load_laps

    laps, _ = load_laps(sim_races[1][0])
    f = featurize_race(laps)
    np.testing.assert_allclose(f["tyre_life"] * LAPS_SCALE, laps["TyreLife"], rtol=1e-6)
    np.testing.assert_allclose(f["stint"] * STOPS_SCALE + 1, laps["Stint"], rtol=1e-6)


# ---------------------------------------------------------------------------------------
# the net's `green` is not clean's Green: a yellow lap is Green (not neutralised) but green 0


def test_green_feature_leaves_out_yellow_laps_that_clean_counts_green(f1_data):
    from lapnet.race.features import featurize_race
    from lapnet.race.inputs import load_laps

    laps, _ = load_laps(f1_data / "2023_singapore_R.csv")
    f = featurize_race(laps)
    differ = laps["Green"].to_numpy() & (f["green"].to_numpy() == 0)
    assert int(differ.sum()) == 124
    assert set(laps.loc[differ, "TrackStatus"]) == {"2"}
    assert not (~laps["Green"].to_numpy() & (f["green"].to_numpy() == 1)).any()


# ---------------------------------------------------------------------------------------
# metrics.json's rule for the Scored pairs names every exclusion the mask makes


def test_the_scored_rule_names_restart_and_wet_laps():
    from lapnet.race.metrics import MASKS

    rule = MASKS["scored"]
    for part in ("timed", "IsAccurate", "not deleted", "TrackStatus 4-7", "in-lap", "out-lap", "lap 1",
                 "restart after a red flag", "dry compound", "same stint"):
        assert part in rule, part


# ---------------------------------------------------------------------------------------
# the help's figure count comes from MAX_FIGURES


def test_gates_and_predict_help_count_figures_from_max_figures():
    code = (
        "import lapnet.race.outputs as o; o.MAX_FIGURES = 4\n"
        "from lapnet.cli.race import race_app\n"
        "helps = {c.name: c.help for c in race_app.registered_commands}\n"
        "opt = [p.default.help for p in __import__('inspect').signature("
        "[c for c in race_app.registered_commands if c.name == 'predict'][0].callback).parameters.values() "
        "if getattr(p.default, 'param_decls', None) and '--driver' in p.default.param_decls][0]\n"
        "print(\"each race's first 4 of the classification\" in helps['gates'])\n"
        "print('for the first 4 of the final classification' in helps['predict'])\n"
        "print('figures for the top 4 of the classification' in opt)\n"
        "print(' 6 ' in helps['gates'] + helps['predict'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True", "False"]


# ---------------------------------------------------------------------------------------
# whatif finds a race by name without importing live (the cycle is gone)


def test_race_match_lives_in_io_and_whatif_does_not_import_live():
    from lapnet.race.io import race_match

    assert race_match("Monza", ["monza", "Imola"]) == "monza"
    assert race_match("monza", ["Monza", "MONZA"]) is None  # ambiguous in any case
    assert race_match("Imola", ["Imola", "imola"]) == "Imola"  # the exact name first
    code = "import sys, lapnet.race.whatif; print('lapnet.race.live' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("name", ["png_software", "read_record", "written_by", "refuse_foreign", "recorded_files"])
def test_outputs_helpers_used_by_gates_are_public(name):
    import lapnet.race.outputs as o

    assert callable(getattr(o, name))
