"""The expected (mean) lap: an ExpectedGap fitted on the median forecast's residuals."""

from __future__ import annotations

import numpy as np
import torch

from lapnet.race.features import FEATURES
from lapnet.race.models import ExpectedGap


def _laps(n: int, rng: np.random.Generator) -> torch.Tensor:
    """(n, D) lap features: random dry compound and tyre life, other features small noise."""
    x = rng.normal(0.0, 0.1, (n, len(FEATURES)))
    comp = rng.integers(0, 3, n)
    for j, c in enumerate(("compound_soft", "compound_medium", "compound_hard")):
        x[:, FEATURES.index(c)] = comp == j
    x[:, FEATURES.index("tyre_life")] = rng.integers(1, 40, n) / 30
    return torch.from_numpy(x)


def test_expected_gap_recovers_the_mean_of_a_right_tail():
    """Residuals around a median of 0 with an exponential tail past a SOFT 'cliff' (tyre life > 20):
    the fitted gap is each group's mean residual, and it is added per horizon."""
    rng = np.random.default_rng(0)
    n, K = 20000, 3
    x = _laps(n, rng)
    soft = x[:, FEATURES.index("compound_soft")].numpy() == 1
    old = x[:, FEATURES.index("tyre_life")].numpy() * 30 > 21
    scale = np.array([0.2, 0.5, 1.0])  # (K,) the tail grows with the horizon
    tail = rng.exponential(1.0, (n, K)) * scale
    resid = rng.laplace(0.0, 0.1, (n, K)) + np.where((soft & old)[:, None], tail - scale * np.log(2), 0.0)  # median 0 per group
    mask = rng.random((n, K)) < 0.9
    gap = ExpectedGap(FEATURES, horizons=K)
    gap.fit(x, torch.from_numpy(resid), torch.from_numpy(mask), ridge=1e-6)
    with torch.no_grad():
        g = gap(x).numpy()  # (n, K)
    tailed = soft & old
    sample = np.array([resid[tailed & mask[:, k], k].mean() for k in range(K)])  # (K,) each group's mean residual
    np.testing.assert_allclose(g[tailed].mean(0), sample, rtol=0.02)
    np.testing.assert_allclose(sample, scale * (1 - np.log(2)), rtol=0.15)  # mean minus median of the exponential tail
    np.testing.assert_allclose(g[~(soft & old)].mean(0), 0.0, atol=0.02)
    assert np.all(np.abs(g[~soft].mean(0)) < 0.02)


def test_ridge_shrinks_everything_but_the_constant():
    rng = np.random.default_rng(1)
    x = _laps(2000, rng)
    resid = torch.full((2000, 2), 0.7, dtype=torch.float64)
    gap = ExpectedGap(FEATURES, horizons=2)
    gap.fit(x, resid, torch.ones(2000, 2, dtype=torch.bool), ridge=1e3)  # huge penalty
    with torch.no_grad():
        g = gap(x).numpy()
    np.testing.assert_allclose(g, 0.7, atol=1e-3)  # the unpenalised constant carries the mean
    w = gap.weight.numpy()
    assert np.abs(w[:-1]).max() < 1e-3


def test_run_has_expected_lap_above_median_where_fitted(tmp_path):
    """A trained run saves the gap (config.json says how its ridge was chosen), reloads it, and
    predict shows the expected lap beside the forecast; a run trained without it has neither."""
    from lapnet.race.prediction import predict_race
    from lapnet.race.runs import load_run, run_net
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.features import build_sequences
    from lapnet.race.inputs import load_laps
    from lapnet.race.simulate import simulate

    sim = simulate(3, seed=5)
    cfg = RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False, expected_gap_check=False)
    train_race(sim, tmp_path / "run", cfg)
    run = load_run(tmp_path / "run")
    info = run.config["expected_gap"]
    assert info["ridge"] in cfg.expected_ridge and set(info["val_mse_by_ridge"]) == {f"{r:g}" for r in cfg.expected_ridge}
    test = simulate(1, seed=9)
    seq = build_sequences(load_laps(test)[0])
    o = run_net(run.model, seq)
    gap = run.model.expected
    # laps whose stint has no Scored lap yet keep the FreshStart's median, when the run kept one
    fresh = (seq.x[..., FEATURES.index("has_base")] == 0)[..., None] if run.model.fresh is not None else False
    with torch.no_grad():
        want = o["mean"] + np.where(fresh, 0.0, gap(torch.from_numpy(seq.x)).numpy())
    np.testing.assert_allclose(o["expected"], want, rtol=1e-5, atol=1e-5)
    table, _ = predict_race(tmp_path / "run", test)
    assert {"expected_h1", "expected_h5", "expected_h10"} <= set(table.columns)

    train_race(sim, tmp_path / "plain", RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False,
                                                        expected_gap=False))
    plain = load_run(tmp_path / "plain")
    assert "expected_gap" not in plain.config and "expected" not in run_net(plain.model, seq)
    np.testing.assert_allclose(run_net(plain.model, seq)["mean"], o["mean"], rtol=1e-6)  # the gap leaves the forecast alone


def test_gap_kept_only_when_its_totals_beat_the_median_on_the_validation_race(tmp_path):
    """With the check (the default), config.json records the validation race's next-10-lap total
    error of both, and the gap exists in the loaded run exactly when it won."""
    from lapnet.race.runs import load_run
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.simulate import simulate

    train_race(simulate(3, seed=5), tmp_path / "run", RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, tagger=False))
    run = load_run(tmp_path / "run")
    info = run.config["expected_gap"]
    v = info["val_next10_total_sq_pct"]
    assert v["origins"] > 0 and info["kept"] == (v["expected"] < v["median"])
    assert (run.model.expected is not None) == info["kept"]
