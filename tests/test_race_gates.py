"""`lapnet race gates` and `lapnet.race.gates`: a race run's GRU gates lap by lap, the
measurements at pit stops, and the command's files and refusals, on a tiny run trained on
simulated races."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.race.gates import LAP_KINDS, PROBES, gate_measures, race_gates
from lapnet.race.inputs import load_laps
from lapnet.race.training import train_race
from lapnet.race.training_config import RaceTrainConfig


@pytest.fixture(scope="module")
def sim(tmp_path_factory, sim_races):
    """A tiny two-member GRU run trained on simulated races 0 and 1; race 2 is held out."""
    _, parts = sim_races
    run = tmp_path_factory.mktemp("gates") / "run"
    train_race(parts[:2], run, RaceTrainConfig(hidden_size=8, epochs=1, members=2, phase_sim=0, progress=False))
    return {"run": run, "parts": parts}


@pytest.fixture(scope="module")
def held(sim):
    """Member 1's trace of the held-out race."""
    return race_gates(sim["run"], sim["parts"][2])


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def test_gates_are_in_unit_interval_and_the_means_are_the_units(held):
    g = held
    n, H = len(g.laps), 8
    assert g.kind == "gru" and g.keep_gate == "z" and g.members == 2 and g.member == 1
    assert set(g.gates) == {"z", "r"} and g.state.shape == (n, H) and g.x.shape == (n, len(g.features))
    for name, v in g.gates.items():
        assert v.shape == (n, H) and v.dtype == np.float64
        assert np.all((v > 0) & (v < 1)), name  # sigmoids
        np.testing.assert_allclose(g.laps[f"{name}_mean"], v.mean(1), rtol=0, atol=1e-15)
    assert g.max_abs_diff < 1e-5  # the float64 recomputation reproduces torch's float32 states
    assert set(g.laps["kind"]) == set(LAP_KINDS)
    np.testing.assert_allclose(g.laps["state_change"], np.abs(g.state - g.state_prev).mean(1), atol=1e-15)


def test_the_library_is_a_hand_computed_gru_step_from_the_runs_weights(sim, held):
    """An out-lap's z, r and h, recomputed here in float64 from member 1's weights and the state
    before the lap; and the driver's whole sequence through torch's own GRU in float64."""
    import copy

    import torch

    from lapnet.race.runs import load_run

    g = held
    j = int(np.flatnonzero(g.laps["out_lap"].to_numpy())[0])  # the first out-lap of the table
    np.testing.assert_array_equal(g.state_prev[j], g.state[j - 1])  # the same driver's previous lap
    rnn = load_run(sim["run"]).model.forecaster.members[0].rnn
    W_ih, W_hh, b_ih, b_hh = (getattr(rnn, f"{k}_l0").detach().double().numpy()
                              for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    H = W_hh.shape[1]
    x, h = g.x[j], g.state_prev[j]  # (D,), (H,)
    gi, gh = W_ih @ x + b_ih, W_hh @ h + b_hh  # (3H,) in torch's order r, z, n
    r = _sigmoid(gi[:H] + gh[:H])
    z = _sigmoid(gi[H:2 * H] + gh[H:2 * H])
    n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
    np.testing.assert_allclose(g.gates["r"][j], r, rtol=0, atol=1e-13)
    np.testing.assert_allclose(g.gates["z"][j], z, rtol=0, atol=1e-13)
    np.testing.assert_allclose(g.state[j], (1 - z) * n + z * h, rtol=0, atol=1e-13)
    # torch's GRU in float64 over this driver's laps gives the same states
    t = g.laps
    rows = np.flatnonzero((t["Race"] == t["Race"][j]).to_numpy() & (t["Driver"] == t["Driver"][j]).to_numpy())
    with torch.no_grad():
        out, _ = copy.deepcopy(rnn).double()(torch.from_numpy(g.x[rows][None]))  # (1, T, H)
    np.testing.assert_allclose(out[0].numpy(), g.state[rows], rtol=0, atol=1e-12)
    assert np.all(g.state_prev[rows[0]] == 0)  # each driver starts from the zero state
    # the second member is a net of its own
    g2 = race_gates(sim["run"], sim["parts"][2], member=2)
    assert g2.member == 2 and not np.allclose(g2.gates["z"], g.gates["z"])
    with pytest.raises(LapnetError, match="member must be a whole number from 1 to 2"):
        race_gates(sim["run"], sim["parts"][2], member=3)


def test_out_lap_flags_align_with_the_lap_table(sim, held):
    laps, _ = load_laps(sim["parts"][2])
    t = held.laps
    assert len(t) == len(laps)
    expect_out, expect_in = set(), set()
    for (race, drv), d in laps.sort_values("LapNumber").groupby(["Race", "Driver"]):
        stint, lap = d["Stint"].to_numpy(), d["LapNumber"].to_numpy()
        for k in np.flatnonzero(stint[1:] != stint[:-1]) + 1:
            expect_out.add((race, drv, lap[k]))
            expect_in.add((race, drv, lap[k - 1]))
    key = lambda rows: set(zip(rows["Race"], rows["Driver"], rows["LapNumber"]))  # noqa: E731
    assert key(t[t["out_lap"]]) == expect_out and len(expect_out) >= 20  # 20 drivers, each stops at least once
    assert key(t[t["in_lap"]]) == expect_in
    # the simulator's pit exits are those laps (the cleaning's OutLap also flags lap 1), on new tyres
    assert (t["out_lap"] == (t["OutLap"] & (t["LapNumber"] > 1))).all() and (t["InLap"] == t["in_lap"]).all()
    assert (t.loc[t["out_lap"], "TyreLife"] == 1).all()
    assert (t.loc[t["kind"] == "first", "LapNumber"] == 1).all()
    # the laps' own columns, not shifted: the table's tyre life and compound at each lap
    merged = t.merge(laps[["Race", "Driver", "LapNumber", "TyreLife", "Compound", "Stint"]],
                     on=["Race", "Driver", "LapNumber"], suffixes=("", "_laps"))
    assert len(merged) == len(t)
    for c in ("TyreLife", "Compound", "Stint"):
        assert (merged[c].astype(str) == merged[f"{c}_laps"].astype(str)).all(), c


def test_measures_are_the_tables_means_and_the_probe_sees_tyre_life(held):
    g = held
    m = gate_measures(g)
    t = g.laps
    assert m["laps"] == {k: int((t["kind"] == k).sum()) for k in LAP_KINDS}
    for name in ("z", "r"):
        v = t[f"{name}_mean"]
        out, other = v[t["kind"] == "out_lap"], v[t["kind"] == "other"]
        gm = m["gates"][name]
        assert gm["out_minus_other"] == pytest.approx(out.mean() - other.mean(), abs=1e-12)
        assert gm["auc_out_lower"] == pytest.approx(np.mean(out.to_numpy()[:, None] < other.to_numpy()[None, :]), abs=1e-12)
        unit = g.gates[name][(t["kind"] == "out_lap").to_numpy()].mean(0) - g.gates[name][(t["kind"] == "other").to_numpy()].mean(0)
        np.testing.assert_allclose(gm["unit_out_minus_other"], unit, atol=1e-12)
        assert gm["units_lower"] == int((unit < -0.1).sum()) and gm["races"] == 1
    p = m["probe"]
    assert p["by"] == "driver" and p["folds"] == 20 and set(p["r2"]) == set(PROBES)
    assert p["r2"]["inputs"] > 0.99  # tyre_life / 30 is one of the net's inputs
    assert p["r2"]["inputs_without_tyre_age"] < p["r2"]["inputs"]
    assert p["state_adds"] == pytest.approx(p["r2"]["inputs_without_tyre_age_and_state"] - p["r2"]["inputs_without_tyre_age"])
    one = gate_measures(g, ((t["Driver"] == t["Driver"][0])).to_numpy())  # one driver of one race: no fold
    assert one["probe"]["r2"] is None and "nothing to hold out" in one["probe"]["note"]


def test_cli_writes_the_figure_json_and_table(sim, held, run_cli, tmp_path):
    from lapnet.race.outputs import png_software

    drv = "VER" if "VER" in set(held.laps["Driver"]) else held.laps["Driver"][0]
    out = tmp_path / "gates"
    code, stdout, err = run_cli("race", "gates", sim["run"], sim["parts"][2], "--driver", drv.lower(), "--out", out, "--json")
    assert code == 0, err
    m = json.loads(stdout)
    race = held.laps["Race"][0]
    fig = out / f"gates_{race}_{drv}.png"
    assert fig.is_file() and png_software(fig) == "lapnet race gates"
    assert json.loads((out / "metrics.json").read_text()) == m
    assert m["written"] == {"by": "lapnet race gates", "files": ["gates.csv", fig.name, "metrics.json"]}
    assert m["members"] == 2 and [r["member"] for r in m["by_member"]] == [1, 2] and m["drivers"] == [drv]
    mine = gate_measures(race_gates(sim["run"], sim["parts"][2], drv))
    assert m["summary"]["gates"]["z"]["out_minus_other"] == pytest.approx(mine["gates"]["z"]["out_minus_other"], abs=1e-12)
    assert m["in_sample"] == {} and "held_out" not in m
    table = pd.read_csv(out / "gates.csv")
    assert set(table["Driver"]) == {drv} and table["out_lap"].sum() == m["summary"]["laps"]["out_lap"] >= 1
    assert "out-lap" in err and "z" in err and "tyre life" not in err  # one driver: the probe has no fold
    # another driver replaces the earlier call's figure; a figure of the user's stays
    (out / "gates_mine.png").write_bytes(b"x")
    other = next(d for d in held.laps["Driver"] if d != drv)
    code, _, err = run_cli("race", "gates", sim["run"], sim["parts"][2], "--driver", other, "--out", out, "--quiet")
    assert code == 0, err
    assert not fig.exists() and (out / f"gates_{race}_{other}.png").is_file() and (out / "gates_mine.png").is_file()


def test_cli_on_several_races_says_which_are_in_sample(sim, run_cli, tmp_path):
    code, stdout, err = run_cli("race", "gates", sim["run"], *sim["parts"], "--driver", "VER,HAM", "--out", tmp_path / "all", "--json")
    assert code == 0, err
    m = json.loads(stdout)
    races = m["races"]
    assert len(races) == 3 and set(m["in_sample"]) == set(races[:2])
    assert [m["by_race"][r]["in_sample"] for r in races] == [True, True, False]
    assert m["held_out"]["races"] == races[2:] and m["summary"]["probe"]["by"] == "race"
    assert m["summary"]["probe"]["folds"] == 3 and len(m["figures"]) == 3 * 2  # each race's VER and HAM
    assert any("in-sample" in n for n in m["notes"])
    assert m["summary"]["laps"]["out_lap"] == sum(m["by_race"][r]["out_laps"] for r in races)
    assert [r["member"] for r in m["by_race"][races[0]]["by_member"]] == [1, 2]
    assert m["by_race"][races[0]]["by_member"][0]["z_out_minus_other"] == m["by_race"][races[0]]["z_out_minus_other"]
    for table in ("held-out races only", "by race (member 1;", "tyre life from a linear probe"):
        assert table in err


def test_bad_input_is_one_line_exit_2_and_nothing_is_written(sim, run_cli, tmp_path):
    run, race = sim["run"], sim["parts"][2]
    out = tmp_path / "o"
    cases = [
        ((tmp_path / "nope", race, "--out", out), "no such run directory"),
        ((run, tmp_path / "nope.csv", "--out", out), "nope.csv: no such file"),
        ((run, race, "--driver", "XYZ", "--out", out), "--driver XYZ: not in the lap table"),
        ((run, race, "--driver", ",", "--out", out), "give driver codes"),
        ((run, race, "--out", tmp_path / "m.json"), "a directory, which receives metrics.json"),
        ((race, race, "--out", out), "is a file, not a run directory"),
    ]
    for args, said in cases:
        code, _, err = run_cli("race", "gates", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("lapnet: error:") and said in lines[0], (args, err)
        assert not out.exists() and not (tmp_path / "m.json").exists()
    # a metrics.json that no gates call wrote is refused and left as it was, unless --force
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    code, _, err = run_cli("race", "gates", run, race, "--out", out, "--quiet")
    assert code == 2 and "metrics.json already exists and was not written by an earlier lapnet race gates" in err
    assert (out / "metrics.json").read_text() == '{"mine": 1}' and sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    code, _, err = run_cli("race", "gates", run, race, "--out", out, "--quiet", "--force")
    assert code == 0, err


def test_an_lstm_run_is_traced_by_its_forget_gate(sim, tmp_path):
    run = tmp_path / "lstm"
    train_race(sim["parts"][:1], run, RaceTrainConfig(hidden_size=4, arch="lstm", epochs=1, members=1, phase_sim=0,
                                                     progress=False, tagger=False))
    g = race_gates(run, sim["parts"][2], "1")  # car number 1
    assert g.kind == "lstm" and g.keep_gate == "f" and set(g.gates) == {"f", "i", "o"} and g.state.shape[1] == 8
    assert all(np.all((v > 0) & (v < 1)) for v in g.gates.values())
    np.testing.assert_allclose(g.laps["state_change"], np.abs(g.state - g.state_prev)[:, 4:].mean(1), atol=1e-15)
    assert gate_measures(g)["gates"]["f"]["out_minus_other"] is not None


def test_the_probe_is_leave_one_group_out_ridge():
    """The probe's fold sums (X^T X once per group) give what a ridge refitted on each fold gives,
    a constant column included; and a perfect linear input scores R^2 1."""
    from lapnet.race.gates import _ridge_r2

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    X[:, 4] = 3.0  # constant: left out of the fit
    y = 2.0 * X[:, 0] - X[:, 1] + rng.normal(size=400) * 0.5
    groups = np.repeat(np.array(["a", "b", "c", "d"]), 100)
    pred = np.empty_like(y)
    for grp in "abcd":
        test = groups == grp
        Xa, ya = X[~test], y[~test]
        mu, sd = Xa.mean(0), Xa.std(0)
        sd[sd == 0] = 1.0
        Z = (Xa - mu) / sd
        w = np.linalg.solve(Z.T @ Z + 0.01 * len(ya) * np.eye(5), Z.T @ (ya - ya.mean()))
        pred[test] = ((X[test] - mu) / sd) @ w + ya.mean()
    direct = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert _ridge_r2(X, y, groups, 0.01) == pytest.approx(direct, abs=1e-10)
    assert 0.9 < direct < 1.0
    assert _ridge_r2(X, 3 * X[:, 0] + 1, groups, 1e-9) == pytest.approx(1.0, abs=1e-6)
