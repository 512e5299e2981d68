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


def _informed(n: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh lap vectors where the field has had a Scored lap: (x, the field's pace in % of ref)."""
    x = torch.zeros(n, len(FEATURES), dtype=torch.float64)
    pace = torch.from_numpy(rng.normal(-2.0, 1.0, n))
    x[:, FEATURES.index("field_pace_any")] = pace / 5  # the feature is / 5
    x[:, FEATURES.index("has_field_pace_any")] = 1.0
    return x, pace


def test_fit_per_horizon_from_the_field_pace_and_missing_targets():
    """The forecast starts from the field's last green pace and each horizon learns its own move
    from it; a horizon with too few targets keeps their median move as a constant."""
    rng = np.random.default_rng(2)
    n = 500
    x, pace = _informed(n, rng)
    own = torch.from_numpy(rng.normal(0.0, 0.5, n))
    x[:, FEATURES.index("own_pace")] = own / 5
    x[:, FEATURES.index("has_own_pace")] = 1.0
    y = torch.stack([pace + own - 1.0, pace + 0.5 * own - 2.0, pace + 3.0], 1)  # (n, 3) % of ref
    mask = torch.ones(n, 3, dtype=torch.bool)
    mask[:, 2] = False
    mask[:5, 2] = True  # 5 targets for 24 weights: a constant only
    fs = FreshStart(FEATURES, horizons=3)
    fs.fit(x, y, mask, ridge=1e-6)
    with torch.no_grad():
        got = fs(x).double()
    move = y[:, :2] - pace[:, None]
    inside = ((move >= fs.bounds[0, 0, :2]) & (move <= fs.bounds[0, 1, :2])).all(1)  # the extreme 2% are clamped
    assert inside.double().mean() > 0.95
    np.testing.assert_allclose(got[inside, :2].numpy(), y[inside, :2].numpy(), atol=0.02)
    np.testing.assert_allclose(got[:, 2].numpy(), (pace + 3.0).numpy(), atol=1e-6)
    assert (fs.weight[0, :-1, 2] == 0).all() and float(fs.weight[0, -1, 2]) == pytest.approx(3.0)


def test_a_move_never_leaves_the_range_the_training_laps_had():
    """A flag combination training never had cannot push a forecast past the training laps'
    moves from the anchor (their 1st to 99th percentile)."""
    rng = np.random.default_rng(3)
    n = 400
    x, pace = _informed(n, rng)
    y = (pace + torch.from_numpy(rng.uniform(-1.0, 1.0, n)))[:, None]  # moves within +-1%
    fs = FreshStart(FEATURES, horizons=1)
    fs.fit(x, y, torch.ones(n, 1, dtype=torch.bool), ridge=1e-3)
    lo, hi = fs.bounds[0, :, 0].tolist()
    assert -1.0 <= lo < -0.9 and 0.9 < hi <= 1.0
    fs.weight[0, FreshStart.INPUTS.index("vsc"), 0] = 40.0  # as an unlucky fit once learnt
    z = x[:3].clone()
    z[:, FEATURES.index("vsc")] = 1.0
    with torch.no_grad():
        got = fs(z)[:, 0].double()
    np.testing.assert_allclose(got.numpy(), (pace[:3] + hi).numpy(), atol=1e-5)


def test_no_forecast_before_any_lap_shows_the_races_pace():
    """No Scored lap of another car and no green-flag lap of any car (a race started behind the
    safety car): NaN, and the fit leaves those laps out; lap 1 of a green start is forecast."""
    rng = np.random.default_rng(4)
    n = 300
    x = torch.zeros(n, len(FEATURES), dtype=torch.float64)
    green = torch.from_numpy(rng.random(n) < 0.5)
    x[:, FEATURES.index("green_seen")] = green.double()
    x[:, FEATURES.index("opening_lap_1")] = 1.0
    y = torch.where(green, torch.full((n,), -4.0, dtype=torch.float64), torch.full((n,), -30.0, dtype=torch.float64))[:, None]
    fs = FreshStart(FEATURES, horizons=1)
    fs.fit(x, y, torch.ones(n, 1, dtype=torch.bool), ridge=1e-3)
    with torch.no_grad():
        got = fs(x)[:, 0]
    assert torch.isnan(got[~green]).all() and not torch.isnan(got[green]).any()
    np.testing.assert_allclose(got[green].numpy(), -4.0, atol=1e-3)  # the -30% safety-car laps taught it nothing


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
    x[..., [FEATURES.index("compound_intermediate"), FEATURES.index("compound_wet")]] = 0.0  # dry tyres
    based = torch.rand(2, 7) > 0.4
    based[1, 5:] = False
    x[..., FEATURES.index("has_base")] = based.double()
    blind = torch.zeros(2, 7, dtype=torch.bool)
    blind[0, :3] = True  # no other car has had a Scored lap yet on these laps
    blind[1, 5:] = True
    x[..., FEATURES.index("has_field_pace_any")] = (~blind).double()
    x[1, 5:, FEATURES.index("green_seen")] = 0.0  # nor a green lap: no forecast
    fs.bounds[:, 0], fs.bounds[:, 1] = -50.0, 50.0
    with torch.no_grad():
        o, _ = both(x)
        p, _ = plain(x)
    none = torch.zeros(2, 7, dtype=torch.bool)
    none[1, 5:] = True
    assert torch.isnan(o["mean"][none]).all() and torch.isnan(o["log_sigma"][none]).all()
    new = ~based & ~none
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
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import load_run, run_net
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
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
    np.testing.assert_allclose(o["mean"][new], want[new], rtol=1e-5, atol=1e-5, equal_nan=True)

    train_race(sim, tmp_path / "without", RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False,
                                                          fresh_start=False))
    assert load_run(tmp_path / "without").model.fresh is None
    assert "fresh_start" not in json.loads((tmp_path / "without" / "config.json").read_text())


def test_config_refuses_bad_fresh_settings():
    from lapnet.race.training_config import RaceTrainConfig

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


def test_no_forecast_on_wet_tyres():
    """The laps it learns from are dry Scored laps: a car on intermediates gets no forecast."""
    rng = np.random.default_rng(5)
    x, pace = _informed(50, rng)
    fs = FreshStart(FEATURES, horizons=1)
    fs.fit(x, pace[:, None], torch.ones(50, 1, dtype=torch.bool), ridge=1e-3)
    x[:10, FEATURES.index("compound_intermediate")] = 1.0
    with torch.no_grad():
        got = fs(x)[:, 0]
    assert torch.isnan(got[:10]).all() and not torch.isnan(got[10:]).any()


def test_the_expected_gap_does_not_read_the_fresh_start_features():
    """ExpectedGap is fitted where the stint has a Scored lap: FRESH_EXTRA never enters it."""
    from lapnet.race.features import FRESH_EXTRA
    from lapnet.race.models import ExpectedGap

    gap = ExpectedGap(FEATURES).double()
    gap.weight.normal_()
    x = torch.rand(4, len(FEATURES), dtype=torch.float64)
    y = x.clone()
    y[:, [FEATURES.index(n) for n in FRESH_EXTRA]] = torch.rand(4, len(FRESH_EXTRA), dtype=torch.float64)
    torch.testing.assert_close(gap(x), gap(y))


def test_fresh_block_scores_every_forecaster_on_the_forecasters_pairs():
    """Where the forecaster makes no forecast (no green lap yet) the baselines are not scored
    either: a file whose fresh laps all lack one gives the baselines n 0."""
    from test_race_model_features import _clean, _two_cars

    from lapnet.race.baselines import fresh_baselines
    from lapnet.race.features import build_sequences
    from lapnet.race.metrics import forecast_report

    seq = build_sequences(_clean(_two_cars()))
    fresh = ~np.isfinite(seq.base)[:, :, None]
    some = np.where(fresh, 95.0, np.nan).repeat(seq.target.shape[2], 2)
    none = np.full_like(some, np.nan)
    for forecaster, n_pairs in ((some, True), (none, False)):
        rep = forecast_report({"forecaster": np.where(fresh, forecaster, 90.0)}, seq, fresh_only=fresh_baselines(seq))["fresh"]
        n = {name: rows["h1"]["n"] for name, rows in rep.items()}
        if n_pairs:
            assert n["forecaster"] > 0 and n["reference_lap"] == n["field_pace"] == n["forecaster"]
        else:
            assert "forecaster" not in n and n["reference_lap"] == n["field_pace"] == 0
