"""Calibration: JSON round-trip and schema, recovering known constants, real races, the figure."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from lapnet.errors import LapnetError
from lapnet.race.calibrate import Calibration, calibrate, load_calibration
from lapnet.race.plots import plot_real_vs_sim
from lapnet.race.clean import clean_laps
from lapnet.race.io import read_laps, read_many
from lapnet.race.simulate import DEFAULT_COMPOUNDS, SimParams, degradation, simulate

# Modes, dirty air and track evolution off: what is left is exactly what calibrate models.
PLAIN = replace(
    SimParams(), push_pace_s=0.0, conserve_pace_s=0.0, push_wear=1.0, conserve_wear=1.0, dirty_air_s=0.0,
    evolution_s=0.0, noise_std=0.2, cold_s_per_deg=0.0, deleted_prob=0.0, sc_wear=1.0,
    # no cliff: calibrate fits a smooth quadratic, the cliff is the simulator's extrapolation
    # and HARD's log curve made quadratic, so every truth is one calibrate can represent
    compounds={
        **{k: replace(m, cliff=500.0) for k, m in DEFAULT_COMPOUNDS.items()},
        "HARD": replace(DEFAULT_COMPOUNDS["HARD"], log=0.0, linear=0.03, quad=0.0006, cliff=500.0),
    },
)


@pytest.fixture(scope="module")
def plain_cal() -> tuple[Calibration, object]:
    laps, _ = clean_laps(read_laps(simulate(30, seed=4, params=PLAIN)))
    return calibrate(laps), laps


def test_recovers_known_constants(plain_cal):
    cal, laps = plain_cal
    assert cal.fuel_s_per_kg == pytest.approx(PLAIN.fuel_s_per_kg, rel=0.15)
    assert cal.lap_noise_s == pytest.approx(PLAIN.noise_std, rel=0.15)
    assert cal.pace_drift_s < 0.1  # this simulation has no drift: white noise only
    assert cal.slow_lap_prob < 0.03  # ... and no slow laps: the residuals' tails are symmetric
    assert cal.car_pace_sd_s == pytest.approx(PLAIN.car_pace_sd, rel=0.25)
    def pace_true(name, life):  # wear = TyreLife - 1 when the modes are off
        m = PLAIN.compounds[name]
        return m.offset_s + float(degradation(m, np.array([life - 1.0]))[0])

    def pace_fit(name, life):
        return cal.compounds[name].offset_s + float(cal.deg(name, np.array([life]))[0])

    for name in ("SOFT", "HARD"):  # the pace gap to MEDIUM on tyres of the same age
        for life in (5.0, 10.0):
            gap_true = pace_true(name, life) - pace_true("MEDIUM", life)
            assert pace_fit(name, life) - pace_fit("MEDIUM", life) == pytest.approx(gap_true, abs=0.15), (name, life)
    for name, truth in PLAIN.compounds.items():
        # wear between tyre lives 3 and 15 (wear = TyreLife - 1 with modes off)
        true_gain = float(degradation(truth, np.array([14.0]))[0] - degradation(truth, np.array([2.0]))[0])
        fit_gain = float(cal.deg(name, np.array([15.0]))[0] - cal.deg(name, np.array([3.0]))[0])
        assert fit_gain == pytest.approx(true_gain, rel=0.2), name
    used = {c.name: c for c in cal.circuits}
    for c in PLAIN.circuits:
        if c.name in used:
            assert used[c.name].laps == c.laps
            # in-lap + out-lap excess over the median green lap: the pit loss, give or take the fuel and tyres
            assert used[c.name].pit_loss_s == pytest.approx(c.pit_loss_s, rel=0.2)
    assert 0.0 < cal.sc_per_race < 1.5 and 0.2 < cal.one_stop_share < 0.9


def test_json_round_trip(plain_cal, tmp_path):
    cal, _ = plain_cal
    p = tmp_path / "calib.json"
    cal.save(p)
    back = load_calibration(p)
    assert back == cal
    assert Calibration.from_dict(json.loads(p.read_text())).to_dict() == cal.to_dict()
    # a calibrated simulation runs and uses the calibrated circuits
    sim = simulate(2, seed=0, calibration=back)
    assert set(sim["Circuit"]) <= {c.name for c in cal.circuits}


def _mutations(d):
    yield "missing field", lambda x: x.pop("lap_noise_s"), "missing field.*lap_noise_s"
    yield "unknown field", lambda x: x.update(extra=1), "unknown field.*extra"
    yield "wrong type", lambda x: x.update(fuel_s_per_kg="fast"), "fuel_s_per_kg: expected a number"
    yield "negative", lambda x: x.update(lap_noise_s=-0.1), "lap_noise_s: must be >= 0"
    yield "nan", lambda x: x.update(pit_loss_s=float("nan")), "pit_loss_s: not a finite"
    yield "version", lambda x: x.update(version=99), "version 99"
    yield "compound", lambda x: x["compounds"].update(HYPERSOFT=x["compounds"]["MEDIUM"]), "unknown compound.*HYPERSOFT"
    yield "circuit laps", lambda x: x["circuits"][0].update(laps=0), r"circuits\[0\].laps: must be > 0"
    yield "no circuits", lambda x: x.update(circuits=[]), "circuits must be a non-empty list"
    yield "share", lambda x: x.update(one_stop_share=1.5), "one_stop_share must be in"
    yield "not an object", lambda x: x["compounds"].update(SOFT=[1, 2]), "compounds.SOFT: expected an object"


def test_schema_violations(plain_cal, tmp_path):
    cal, _ = plain_cal
    for name, mutate, match in _mutations(None):
        d = json.loads(json.dumps(cal.to_dict()))
        mutate(d)
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(d))
        with pytest.raises(LapnetError, match=match):
            load_calibration(p)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LapnetError, match="invalid JSON"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(LapnetError, match="expected an object"):
        Calibration.from_dict([1, 2])


def test_no_usable_green_laps():
    import pandas as pd

    df = pd.DataFrame({"Driver": ["A"] * 10, "LapNumber": range(1, 11), "LapTime": [90.0] * 10, "TrackStatus": ["4"] * 10})
    laps, _ = clean_laps(read_laps(df))
    with pytest.raises(LapnetError, match="no usable green laps"):
        calibrate(laps)
    with pytest.raises(LapnetError, match="clean_laps first"):
        calibrate(read_laps(df))


def test_real_races_and_figure(f1_data):
    paths = [f1_data / f"{r}.csv" for r in ("2023_miami_R", "2023_italian_R", "2023_british_R")]
    real, _ = clean_laps(read_many(paths))
    cal = calibrate(real)
    assert [c.name for c in cal.circuits] == ["2023_british_R", "2023_italian_R", "2023_miami_R"]
    monza = next(c for c in cal.circuits if c.name == "2023_italian_R")
    green = real[(real.Race == "2023_italian_R") & real.Scored]["LapTime"].median()
    assert monza.base_lap_s == pytest.approx(green) and monza.laps == 51
    assert 15.0 < cal.pit_loss_s < 30.0 and 0.1 < cal.lap_noise_s < 1.0
    assert 0.0 <= cal.fuel_s_per_kg < 0.08
    sim, _ = clean_laps(read_laps(simulate(3, seed=1, calibration=cal)))
    # calibrated races run on the real circuits' distances and pace
    for race, g in sim.groupby("Race"):
        c = next(c for c in cal.circuits if c.name == g["Circuit"].iloc[0])
        assert g["LapNumber"].max() == c.laps
        assert g.loc[g.Scored, "LapTime"].median() == pytest.approx(c.base_lap_s, rel=0.015)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    assert plot_real_vs_sim(real, sim, axes=axes) is fig  # the CLI test draws the default figure
    assert all(ax.has_data() for ax in fig.axes)
    plt.close(fig)
