"""The forecast head: Gaussian or Laplace scale, its loss, 90% intervals, ensembles and old runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES, HORIZONS
from lapnet.race.models import INTERVAL90, RaceEnsemble, RaceModelConfig, race_loss


def test_interval90_is_the_central_90_percent_of_each_distribution():
    mu, scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    lap = torch.distributions.Laplace(mu, scale)
    gau = torch.distributions.Normal(mu, scale)
    for dist, head in ((lap, "laplace"), (gau, "gaussian")):
        hi = mu + INTERVAL90[head] * scale
        lo = mu - INTERVAL90[head] * scale
        assert float(dist.cdf(hi) - dist.cdf(lo)) == pytest.approx(0.90, abs=1e-4)
    assert INTERVAL90["laplace"] == pytest.approx(math.log(10.0))


def _out_batch(seed=0, B=2, T=5, K=HORIZONS):
    g = torch.Generator().manual_seed(seed)
    out = {"mean": torch.randn(B, T, K, generator=g, dtype=torch.float64, requires_grad=True),
           "log_sigma": (0.3 * torch.randn(B, T, K, generator=g, dtype=torch.float64)).requires_grad_()}
    batch = {"target": torch.randn(B, T, K, generator=g, dtype=torch.float64),
             "target_mask": torch.rand(B, T, K, generator=g) < 0.6,
             "has_base": torch.ones(B, T, dtype=torch.bool),  # every origin starts from a Scored lap
             "pit_mask": torch.zeros(B, T, dtype=torch.bool), "phase_mask": torch.zeros(B, T, dtype=torch.bool)}
    return out, batch


def _by_hand(out, batch, head, mean_loss, scale_weight=0.1):
    """The loss written out lap by lap with plain Python floats."""
    K = batch["target"].shape[-1]
    w_k = [1.0 / (k + 1) ** 2 for k in range(K)]
    w_k = [w / (sum(w_k) / K) for w in w_k]
    loc_num = loc_den = scale_sum = 0.0
    n = 0
    B, T, _ = batch["target"].shape
    for b in range(B):
        for t in range(T):
            for k in range(K):
                if not batch["target_mask"][b, t, k]:
                    continue
                y, mu, ls = (float(v[b, t, k].detach()) for v in (batch["target"], out["mean"], out["log_sigma"]))
                n += 1
                if mean_loss == "nll":
                    loc_num += w_k[k] * (ls + abs(y - mu) / math.exp(ls))
                else:
                    loc_num += w_k[k] * abs(y - mu)
                    r = (y - mu) / math.exp(ls)
                    scale_sum += ls + (abs(r) if head == "laplace" else 0.5 * r * r)
                loc_den += w_k[k]
    return loc_num / loc_den + (scale_weight * scale_sum / n if mean_loss == "l1" else 0.0)


@pytest.mark.parametrize("head,mean_loss,scale_weight", [("gaussian", "l1", 0.1), ("laplace", "l1", 0.1), ("laplace", "l1", 0.7),
                                                       ("laplace", "nll", 0.1)])
def test_race_loss_by_hand(head, mean_loss, scale_weight):
    out, batch = _out_batch(seed=3)
    got = race_loss(out, batch, head=head, mean_loss=mean_loss, scale_weight=scale_weight, pit_weight=0.0, phase_weight=0.0)
    assert got.item() == pytest.approx(_by_hand(out, batch, head, mean_loss, scale_weight), rel=1e-12)


def test_scale_loss_does_not_pull_the_location_unless_joint():
    """With the L1 location loss the scale's NLL sees a detached location: the location's
    gradient is the L1's alone; with the joint Laplace NLL each lap's L1 gradient is divided by b."""
    out, batch = _out_batch(seed=5)
    m = batch["target_mask"]
    race_loss(out, batch, head="laplace", mean_loss="l1", pit_weight=0.0, phase_weight=0.0).backward()
    g_l1 = out["mean"].grad.clone()
    out["mean"].grad = None
    out["log_sigma"].grad = None
    race_loss(out, batch, head="laplace", mean_loss="nll", pit_weight=0.0, phase_weight=0.0).backward()
    g_nll = out["mean"].grad
    b = torch.exp(out["log_sigma"].detach())
    torch.testing.assert_close(g_nll[m], g_l1[m] / b[m])
    assert torch.all(g_l1[~m] == 0)


def test_laplace_ensemble_matches_the_mixture_variance():
    """A Laplace's variance is 2 b^2: the ensemble's b is sqrt((mean 2 b_m^2 + var of the locations) / 2)."""
    torch.manual_seed(2)
    ens = RaceEnsemble(RaceModelConfig(input_size=len(FEATURES), hidden_size=5, dropout=0.0, head="laplace"), members=3)
    ens = ens.double().eval()
    with torch.no_grad():
        for p in ens.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, 4, len(FEATURES), dtype=torch.float64)
        whole, _ = ens(x)
        outs = [m(x)[0] for m in ens.members]
        mu = torch.stack([o["mean"] for o in outs])  # (M, B, T, K)
        var = torch.stack([2 * torch.exp(2 * o["log_sigma"]) for o in outs]).mean(0) + mu.var(0, unbiased=False)
        torch.testing.assert_close(torch.exp(whole["log_sigma"]), torch.sqrt(var / 2))
        torch.testing.assert_close(whole["mean"], mu.mean(0))


def test_head_config_default_and_bad_values(tmp_path):
    from lapnet.race.training_config import RaceTrainConfig

    assert RaceModelConfig(input_size=7).head == RaceTrainConfig().head == "laplace"  # the product's head, everywhere
    with pytest.raises(LapnetError, match="head 'cauchy'"):
        RaceModelConfig(input_size=7, head="cauchy")
    from lapnet.race.training import train_race
    from lapnet.race.simulate import simulate

    with pytest.raises(LapnetError, match="mean_loss 'nll'"):
        train_race(simulate(2, seed=1), tmp_path / "run", RaceTrainConfig(head="gaussian", mean_loss="nll"))
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_laplace_run_intervals_in_predict_eval_and_live(tmp_path):
    """A Laplace run's intervals are location +- b ln 10 in predict and live. (No run saved
    without a head can load: it predates the current feature list, which `load_run` checks first.)"""
    from lapnet.race.live import LiveRace
    from lapnet.race.prediction import predict_race
    from lapnet.race.runs import load_run, run_net
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.features import build_sequences
    from lapnet.race.inputs import load_laps
    from lapnet.race.simulate import simulate

    sim = simulate(3, seed=5)
    cfg = RaceTrainConfig(hidden_size=8, epochs=1, members=2, progress=False, tagger=False, head="laplace", mean_loss="nll")
    train_race(sim, tmp_path / "run", cfg)
    run = load_run(tmp_path / "run")
    assert run.model.cfg.head == "laplace" and run.config["model"]["head"] == "laplace"
    test = simulate(1, seed=9)
    seq = build_sequences(load_laps(test)[0])
    o = run_net(run.model, seq)
    np.testing.assert_allclose(o["half90"], math.log(10.0) * o["sigma"])
    table, metrics = predict_race(tmp_path / "run", test)
    width = (table["hi90_h1"] - table["lo90_h1"]).to_numpy()
    ref = seq.ref[:, :, None] * o["sigma"] / 100.0  # (N, T, K) b in seconds
    lens = seq.lengths
    b1 = np.concatenate([ref[i, : lens[i], 0] for i in range(len(lens))])
    np.testing.assert_allclose(width, 2 * math.log(10.0) * b1, rtol=1e-5)
    assert 0.0 <= metrics["interval90_coverage"]["h1"] <= 1.0
    assert LiveRace(run, total_laps=50).z90 == pytest.approx(math.log(10.0))
