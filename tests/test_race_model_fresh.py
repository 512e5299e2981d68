"""FreshStart: the forecast from a lap whose stint has no Scored lap yet (out-laps, the start, restarts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES
from lapnet.race.models import INTERVAL90, FreshStart, RaceModelConfig, RaceNet, WithPitCaller
from lapnet.race.pit import PitModel


def test_solve_is_a_median_regression():
    """Outliers on one side move a least-squares line, not the L1 fit: the slow laps behind a
    safety car must not drag the forecast of a green lap."""
    rng = np.random.default_rng(0)
    z1 = rng.normal(0.0, 1.0, 600)
    y = 1.0 + 2.0 * z1 + rng.laplace(0.0, 0.2, 600)
    y[rng.random(600) < 0.25] += 40.0  # a quarter of the laps far slower
    z = torch.from_numpy(np.column_stack([z1, np.ones_like(z1)]))
    beta = FreshStart.solve(z, torch.from_numpy(y), ridge=0.0).numpy()
    np.testing.assert_allclose(beta, [2.0, 1.0], atol=0.1)
    ls = np.linalg.lstsq(z.numpy(), y, rcond=None)[0]
    assert abs(ls[1] - 1.0) > 5.0  # the mean is dragged by ten seconds' worth of outliers


def test_ridge_shrinks_all_but_the_constant():
    rng = np.random.default_rng(1)
    z1 = rng.normal(0.0, 1.0, 400)
    y = 3.0 + 2.0 * z1
    z = torch.from_numpy(np.column_stack([z1, np.ones_like(z1)]))
    beta = FreshStart.solve(z, torch.from_numpy(y), ridge=1e4).numpy()
    assert abs(beta[0]) < 0.01 and beta[1] == pytest.approx(np.median(y), abs=0.02)  # L1: the constant is the median


def test_fit_per_horizon_and_missing_targets():
    """Each horizon has its own line, fitted on the targets that exist; a horizon with too few
    targets keeps the weights at zero (the reference lap itself)."""
    rng = np.random.default_rng(2)
    n = 500
    x = torch.zeros(n, len(FEATURES), dtype=torch.float64)
    pace = torch.from_numpy(rng.normal(0.0, 1.0, n))
    x[:, FEATURES.index("field_pace")] = pace
    x[:, FEATURES.index("has_field_pace")] = 1.0
    y = torch.stack([5 * pace - 1.0, 5 * pace - 2.0, torch.zeros(n, dtype=torch.float64)], 1)  # (n, 3)
    mask = torch.ones(n, 3, dtype=torch.bool)
    mask[:, 2] = False
    mask[:5, 2] = True  # 5 targets for 25 weights: not fitted
    fs = FreshStart(FEATURES, horizons=3)
    fs.fit(x, y, mask, ridge=1e-6)
    with torch.no_grad():
        got = fs(x).double()
    np.testing.assert_allclose(got[:, :2].numpy(), y[:, :2].numpy(), atol=0.02)
    assert (fs.weight[:, 2] == 0).all()


def test_refuses_lap_vectors_without_its_inputs():
    with pytest.raises(LapnetError, match="lack field_pace"):
        FreshStart([f for f in FEATURES if f != "field_pace"])


def test_with_pit_caller_uses_it_where_the_stint_has_no_scored_lap():
    """On laps with has_base 0 the forecast and its scale are the FreshStart's; elsewhere the
    nets' are untouched; the expected lap adds no ExpectedGap where the FreshStart speaks."""
    from lapnet.race.models import ExpectedGap

    torch.manual_seed(0)
    net = RaceNet(RaceModelConfig(input_size=len(FEATURES) - 0, hidden_size=6, dropout=0.0, head="laplace")).double().eval()
    fs = FreshStart(FEATURES).double()
    fs.weight.normal_()
    fs.half90.copy_(torch.stack([torch.linspace(1.0, 3.0, 10), torch.linspace(10.0, 30.0, 10)]))
    gap = ExpectedGap(FEATURES).double()
    gap.weight.normal_()
    both = WithPitCaller(net, PitModel(FEATURES).double(), gap, fs).eval()
    plain = WithPitCaller(net, PitModel(FEATURES).double(), gap).eval()
    x = torch.rand(2, 7, len(FEATURES), dtype=torch.float64)
    based = torch.rand(2, 7) > 0.4
    x[..., FEATURES.index("has_base")] = based.double()
    blind = torch.zeros(2, 7, dtype=torch.bool)
    blind[0, :3] = True  # no other car has had a Scored lap yet on these laps
    x[..., FEATURES.index("has_field_pace_any")] = (~blind).double()
    with torch.no_grad():
        o, _ = both(x)
        p, _ = plain(x)
    new = ~based
    torch.testing.assert_close(o["mean"][based], p["mean"][based])
    torch.testing.assert_close(o["log_sigma"][based], p["log_sigma"][based])
    torch.testing.assert_close(o["expected"][based], p["expected"][based])
    torch.testing.assert_close(o["mean"][new], fs(x)[new])
    half = INTERVAL90["laplace"] * torch.exp(o["log_sigma"])  # (2, 7, K) the 90% half-width
    torch.testing.assert_close(half[new & ~blind], fs.half90[0].expand_as(half[new & ~blind]))
    torch.testing.assert_close(half[new & blind], fs.half90[1].expand_as(half[new & blind]))
    assert (new & blind).any() and (new & ~blind).any()
    torch.testing.assert_close(o["expected"][new], o["mean"][new])
    assert new.any() and based.any()


def test_train_race_fits_checks_and_reloads_it(tmp_path):
    """A run says how the FreshStart was chosen and checked (config.json), keeps it only when its
    folds beat the nets, and a reloaded run gives the same forecasts on fresh laps."""
    from lapnet.race.features import build_sequences
    from lapnet.race.pipeline import RaceTrainConfig, load_laps, load_run, run_net, train_race
    from lapnet.race.simulate import simulate

    sim = simulate(4, seed=3)
    cfg = RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False)
    train_race(sim, tmp_path / "run", cfg)
    info = json.loads((tmp_path / "run" / "config.json").read_text())["fresh_start"]
    assert set(info["folds_mae_pct_by_ridge"]) == {f"{r:g}" for r in cfg.fresh_ridge}
    assert info["folds_mae_pct"] == min(info["folds_mae_pct_by_ridge"].values())
    assert info["kept"] == (info["folds_mae_pct"] < info["nets_mae_pct"]) and info["origins"] > 0
    assert all(len(h) == 10 and min(h) > 0 for h in info["half90_pct"].values())
    run = load_run(tmp_path / "run")
    assert (run.model.fresh is not None) == info["kept"]

    train_race(sim, tmp_path / "kept", RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False,
                                                       fresh_start_check=False))
    run = load_run(tmp_path / "kept")
    assert run.model.fresh is not None and run.config["fresh_start"]["kept"]
    seq = build_sequences(load_laps(simulate(1, seed=11))[0])
    o = run_net(run.model, seq)
    new = ~np.isfinite(seq.base) & (np.arange(seq.x.shape[1])[None] < seq.lengths[:, None])
    with torch.no_grad():
        want = run.model.fresh(torch.from_numpy(seq.x)).numpy()
    np.testing.assert_allclose(o["mean"][new], want[new], rtol=1e-5, atol=1e-5)

    train_race(sim, tmp_path / "without", RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False,
                                                          fresh_start=False))
    assert load_run(tmp_path / "without").model.fresh is None
    assert "fresh_start" not in json.loads((tmp_path / "without" / "config.json").read_text())


def test_config_refuses_bad_fresh_settings():
    from lapnet.race.pipeline import RaceTrainConfig

    with pytest.raises(LapnetError, match="fresh_ridge must be a non-empty tuple.*fresh_start_check must be True or False"):
        RaceTrainConfig(fresh_ridge=(), fresh_start_check="yes").validate()


def test_fresh_baselines_on_an_out_lap():
    """From BBB's out-lap the reference lap and the field's pace (AAA's latest Scored lap) forecast
    every lap ahead; every origin with a Scored lap in its stint has no fresh baseline."""
    from test_race_model_features import _clean, _two_cars

    from lapnet.race.baselines import fresh_baselines
    from lapnet.race.features import build_sequences

    seq = build_sequences(_clean(_two_cars()))
    fb = fresh_baselines(seq)
    i = [k[1] for k in seq.keys].index("BBB")
    t = int(np.flatnonzero(seq.lap_number[i] == 4)[0])  # the out-lap
    assert not np.isfinite(seq.base[i, t])
    np.testing.assert_allclose(fb["reference_lap"][i, t], seq.ref[i, t])
    np.testing.assert_allclose(fb["field_pace"][i, t], 90.1, atol=1e-4)  # float32 features
    based = np.isfinite(seq.base)
    assert based.any() and np.isnan(fb["field_pace"][based]).all() and np.isnan(fb["reference_lap"][based]).all()
