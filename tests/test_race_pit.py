"""The extra pit features are causal and computed as documented; PitModel fits and scores as a logistic model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import NET_FEATURES as FEATURES, featurize_race, session_order
from lapnet.race.metrics import roc_auc
from lapnet.race.pit import PIT_EXTRA, PitModel, fit_pit_model, pit_extra_features


def _three_cars() -> pd.DataFrame:
    """AAA leads, BBB 2 s behind, CCC 30 s behind; BBB pits at the end of lap 3 (green, 20 s lost)."""
    rows = []
    for drv, offset in (("AAA", 0.0), ("BBB", 2.0), ("CCC", 30.0)):
        t = 3000.0 + offset
        for n in range(1, 7):
            lt = 90.0 + 0.1 * n
            if drv == "BBB" and n == 3:
                lt += 4.0  # in-lap
            if drv == "BBB" and n == 4:
                lt += 16.0  # out-lap
            t += lt
            pos = {"AAA": 1.0, "BBB": 2.0 if n < 4 else 3.0, "CCC": 3.0 if n < 4 else 2.0}[drv]
            rows.append({"Driver": drv, "LapNumber": float(n), "LapTime": lt, "Time": t,
                         "Stint": 1.0 if (drv != "BBB" or n <= 3) else 2.0,
                         "Compound": "MEDIUM" if (drv != "BBB" or n <= 3) else "HARD",
                         "TyreLife": float(n if (drv != "BBB" or n <= 3) else n - 3), "TrackStatus": "1",
                         "IsAccurate": True, "Position": pos, "Team": drv,
                         "PitInTime": t - 15 if (drv == "BBB" and n == 3) else np.nan,
                         "PitOutTime": t - lt + 10 if (drv == "BBB" and n == 4) else np.nan})
    return pd.DataFrame(rows)


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import read_laps

    return clean_laps(read_laps(df, race="three"))[0].reset_index(drop=True)


def _at(laps, ex, drv, n, name):
    i = int(np.flatnonzero((laps["Driver"] == drv).to_numpy() & (laps["LapNumber"] == n).to_numpy())[0])
    return float(ex[i, PIT_EXTRA.index(name)])


def test_extra_features_by_hand():
    laps = _clean(_three_cars())
    ex = pit_extra_features(laps, total_laps=50)
    assert ex.shape == (len(laps), len(PIT_EXTRA))
    # lap 3: on lap 2 BBB was 2 s behind AAA and CCC 30 s behind: a stop (prior loss 0.25 ref ~ 22.6 s) costs 1 place
    assert _at(laps, ex, "AAA", 3, "places_lost") == pytest.approx(1 / 5)
    assert _at(laps, ex, "BBB", 3, "places_lost") == 0.0
    assert _at(laps, ex, "BBB", 3, "free_stop") == 1.0  # CCC is more than a pit loss behind
    assert _at(laps, ex, "AAA", 3, "free_stop") == 0.0
    # BBB's green stop is measured once its out-lap has ended: in + out - 2 ref, in shares of ref
    before = _at(laps, ex, "BBB", 3, "pit_loss")
    after = _at(laps, ex, "BBB", 4, "pit_loss")
    assert before == pytest.approx(0.25)  # no stop seen yet: the prior
    ref = featurize_race(laps)["_ref"].to_numpy()[(laps["Driver"] == "BBB").to_numpy() & (laps["LapNumber"] == 4).to_numpy()][0]
    loss = (94.3 + 106.4 - 2 * ref) / ref
    assert after == pytest.approx((3 * 0.25 + loss) / 4, rel=1e-5)  # shrunk to the prior with weight 3
    # the compound's typical stint: the prior 0.45 x 50 laps until a stint ends on it
    assert _at(laps, ex, "AAA", 2, "tyre_over_typ") == pytest.approx(2 / 22.5)
    assert _at(laps, ex, "AAA", 2, "short_of_finish") == pytest.approx((2 + 48 - 22.5) / 30)
    # BBB's out-lap is lap 1 of its stint; laps left one-hot saturates at 6
    assert _at(laps, ex, "BBB", 4, "stint_1") == 1.0 and _at(laps, ex, "BBB", 5, "stint_2") == 1.0
    assert _at(laps, ex, "AAA", 6, "left_6") == 1.0


def test_stop_loss_against_the_stopping_drivers_racing_pace():
    """The pit-now what-if's stop cost (`Sequences.stop_loss`, no feature): a green stop's in-lap
    plus out-lap minus twice the driver's racing pace before it (the median of the stint's last 3
    Scored laps: BBB's lap 2, lap 1 is not Scored), shrunk to the prior as pit_loss is; seconds."""
    laps = _clean(_three_cars())
    f = featurize_race(laps, 50)
    at = lambda drv, n: f.iloc[int(np.flatnonzero((laps["Driver"] == drv).to_numpy() & (laps["LapNumber"] == n).to_numpy())[0])]  # noqa: E731
    ref3, ref4 = at("BBB", 3)["_ref"], at("BBB", 4)["_ref"]
    assert at("BBB", 3)["_stop_loss"] == pytest.approx(0.25 * ref3)  # no stop seen yet: the prior
    loss = (94.3 + 106.4 - 2 * 90.2) / ref4
    assert at("BBB", 4)["_stop_loss"] == pytest.approx((3 * 0.25 + loss) / 4 * ref4, rel=1e-5)
    # the race's, for every driver: the same share of the reference lap, which may have moved since
    assert at("CCC", 4)["_stop_loss"] == pytest.approx((3 * 0.25 + loss) / 4 * at("CCC", 4)["_ref"], rel=1e-5)


def test_a_repair_stop_is_left_out_of_the_stop_cost():
    """A stop that took more than REPAIR_LOSS of the reference lap beyond the laps it replaced (a
    repair, a long penalty) is no tyre stop: the what-if's stop cost stays at the prior, while the
    pit call's pit_loss feature still counts it."""
    from lapnet.race.pit import REPAIR_LOSS

    df = _three_cars()
    out_lap = (df["Driver"] == "BBB") & (df["LapNumber"] >= 4)
    df.loc[out_lap, "Time"] += 45.0  # BBB's out-lap: 45 s more in the pits (the laps after it end later too)
    df.loc[out_lap & (df["LapNumber"] == 4), "LapTime"] += 45.0
    laps = _clean(df)
    f = featurize_race(laps, 50)
    at = lambda drv, n: f.iloc[int(np.flatnonzero((laps["Driver"] == drv).to_numpy() & (laps["LapNumber"] == n).to_numpy())[0])]  # noqa: E731
    ref4 = at("BBB", 4)["_ref"]
    assert (94.3 + 151.4 - 2 * 90.2) / ref4 > REPAIR_LOSS > (94.3 + 106.4 - 2 * 90.2) / ref4
    assert at("BBB", 4)["_stop_loss"] == pytest.approx(0.25 * ref4) and at("BBB", 4)["_stop_stops"] == 0
    assert at("CCC", 5)["_stop_stops"] == 0
    assert at("BBB", 4)["pit_loss"] > 0.25  # the pit call's feature has it


@pytest.mark.parametrize("repair", [False, True])
def test_stop_loss_under_a_safety_car_against_the_other_cars_laps(repair):
    """A stop whose in- and out-lap ran under a safety car costs what it took beyond what the 2
    cars nearest on the road before it ran on those laps staying out (CCC, who stops on the same
    laps, is no such car), shrunk to its own prior; an out-lap without a LapTime is timed from
    the in-lap's end; the green stop loss does not see these stops. With `repair`, BBB's stop
    takes 100 s more and is left out (REPAIR_LOSS)."""
    from lapnet.race.pit import NEUTRAL_LOSS_PRIOR

    rows = []
    for k, drv in enumerate(("AAA", "BBB", "CCC", "DDD", "EEE", "FFF")):
        t = 3000.0 + 2.0 * k
        stops = drv in ("BBB", "CCC")
        for n in range(1, 8):
            sc = n in (4, 5)
            lt = (130.0 if sc else 90.0) + 0.3 * k
            if stops and n == 4:
                lt += 3.0  # in-lap under the safety car
            if stops and n == 5:
                lt += 12.0 + (100.0 if repair and drv == "BBB" else 0.0)  # out-lap under it
            t += lt
            rows.append({"Driver": drv, "LapNumber": float(n), "Time": t, "Stint": 1.0 + (stops and n >= 5),
                         "LapTime": np.nan if (drv == "CCC" and n == 5) else lt,  # FastF1 gave CCC's out-lap no time
                         "Compound": "HARD" if (stops and n >= 5) else "MEDIUM", "TyreLife": float(n),
                         "TrackStatus": "4" if sc else "1", "IsAccurate": True, "Position": float(k + 1), "Team": drv,
                         "PitInTime": t - 15 if (stops and n == 4) else np.nan,
                         "PitOutTime": t - lt + 10 if (stops and n == 5) else np.nan})
    laps = _clean(pd.DataFrame(rows))
    f = featurize_race(laps, 50)
    at = lambda drv, n: f.iloc[int(np.flatnonzero((laps["Driver"] == drv).to_numpy() & (laps["LapNumber"] == n).to_numpy())[0])]  # noqa: E731
    assert at("BBB", 4)["_stop_loss_neutral"] == pytest.approx(NEUTRAL_LOSS_PRIOR * at("BBB", 4)["_ref"])
    assert at("BBB", 4)["_stop_stops_neutral"] == 0
    # against the 2 cars whose lap 3 ended nearest his, that stayed out: BBB's are AAA and DDD (CCC stopped too)
    end3 = laps.loc[laps["LapNumber"] == 3].set_index("Driver")["Time"]
    lt = laps.set_index(["Driver", "LapNumber"])["LapTime"]

    def stayed(drv: str) -> float:
        near = (end3.drop([drv, "BBB", "CCC"], errors="ignore") - end3[drv]).abs().sort_values().index[:2]
        return float(np.median([lt[(d, 4.0)] + lt[(d, 5.0)] for d in near]))

    assert set((end3.drop(["BBB", "CCC"]) - end3["BBB"]).abs().sort_values().index[:2]) == {"AAA", "DDD"}
    ref = at("FFF", 6)["_ref"]
    bbb = (133.3 + 142.3 - stayed("BBB")) / at("BBB", 5)["_ref"]
    ccc = (133.6 + 142.6 - stayed("CCC")) / at("CCC", 5)["_ref"]  # its out-lap timed from Time
    measured = [ccc] if repair else [bbb, ccc]
    assert at("FFF", 6)["_stop_stops_neutral"] == len(measured)
    k = len(measured)
    assert at("FFF", 6)["_stop_loss_neutral"] == pytest.approx((3 * NEUTRAL_LOSS_PRIOR + k * np.median(measured)) / (3 + k) * ref,
                                                               rel=1e-5)
    assert at("FFF", 6)["_stop_loss"] == pytest.approx(0.25 * ref) and at("FFF", 6)["_stop_stops"] == 0  # no green stop


def test_a_safety_car_stop_waits_for_its_neighbours():
    """BBB leads the others by 20 s and stops under a safety car: his out-lap ends before the cars
    nearest him have ended that lap, so the stop is measured only once two of them have (not
    before: nothing from later laps reaches an earlier one)."""
    rows = []
    for k, drv in enumerate(("BBB", "CCC", "DDD", "EEE")):
        t = 3000.0 + (0.0 if drv == "BBB" else 18.0 + 2.0 * k)
        for n in range(1, 8):
            sc = n in (4, 5)
            lt = (130.0 if sc else 90.0) + 0.3 * k + (3.0 if (drv == "BBB" and n == 4) else 0.0) \
                + (12.0 if (drv == "BBB" and n == 5) else 0.0)
            t += lt
            rows.append({"Driver": drv, "LapNumber": float(n), "LapTime": lt, "Time": t, "Stint": 1.0 + (drv == "BBB" and n >= 5),
                         "Compound": "HARD" if (drv == "BBB" and n >= 5) else "MEDIUM", "TyreLife": float(n),
                         "TrackStatus": "4" if sc else "1", "IsAccurate": True, "Position": float(k + 1), "Team": drv,
                         "PitInTime": t - 15 if (drv == "BBB" and n == 4) else np.nan,
                         "PitOutTime": t - lt + 10 if (drv == "BBB" and n == 5) else np.nan})
    laps = _clean(pd.DataFrame(rows))
    f = featurize_race(laps, 50)
    t = laps["Time"].to_numpy()
    measured = f["_stop_stops_neutral"].to_numpy()
    bbb5 = float(laps.loc[(laps["Driver"] == "BBB") & (laps["LapNumber"] == 5), "Time"].iloc[0])
    others5 = np.sort(laps.loc[(laps["Driver"] != "BBB") & (laps["LapNumber"] == 5), "Time"].to_numpy())
    assert (others5 > bbb5).all()  # none of them had ended lap 5 when BBB's out-lap did
    assert (measured[t < others5[1]] == 0).all() and (measured[t >= others5[1]] == 1).all()


def test_extra_features_are_causal():
    """A lap's extra features do not change when every later lap is removed (live mode's guarantee)."""
    laps = _clean(_three_cars())
    full = pit_extra_features(laps, total_laps=50)
    order = session_order(laps)
    cut = np.sort(order[: len(order) // 2 + 1])
    part = pit_extra_features(laps.iloc[cut], total_laps=50)
    np.testing.assert_array_equal(part, full[cut])


def _toy_rows(rng, n_races=6, per_race=300):
    """Random lap features where the pit label depends on tyre life and one extra feature."""
    D, E = len(FEATURES), len(PIT_EXTRA)
    x = rng.normal(0, 0.3, (n_races * per_race, D)).astype(np.float32)
    x[:, FEATURES.index("tyre_life")] = rng.uniform(0, 1.5, len(x))
    extra = rng.normal(0, 1, (len(x), E)).astype(np.float32)
    logit = 4 * x[:, FEATURES.index("tyre_life")] + 1.5 * extra[:, PIT_EXTRA.index("pace_loss")] - 5
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    race = np.repeat([f"r{i}" for i in range(n_races)], per_race)
    return x, extra, y, race


def test_fit_pit_model_learns_and_chooses_l2_inside():
    rng = np.random.default_rng(0)
    x, extra, y, race = _toy_rows(rng)
    model, info = fit_pit_model(x, extra, y, race, FEATURES, l2_grid=(1e-1, 1e-3))
    assert set(info["inner_auc_by_l2"]) == {"0.1", "0.001"}
    assert info["l2"] == max((1e-1, 1e-3), key=lambda v: info["inner_auc_by_l2"][f"{v:g}"])
    xt, et, yt, _ = _toy_rows(np.random.default_rng(1), n_races=2)
    with torch.no_grad():
        p = model(torch.from_numpy(xt), torch.from_numpy(et)).numpy()
    assert roc_auc(yt, p) > 0.8  # the generating rule is learned
    w = model.linear.weight[0]
    assert w[-len(PIT_EXTRA) + PIT_EXTRA.index("pace_loss")] > 0  # the extra feature that drives the label


def test_fit_pit_model_names_a_width_mismatch():
    """x must have one column per feature name: NET_FEATURES rows against the default FEATURES
    (which end with PIT_EXTRA) once crashed deep inside with an IndexError."""
    x, extra, y, race = _toy_rows(np.random.default_rng(0))
    from lapnet.race.features import FEATURES as ALL  # NET_FEATURES + FRESH_EXTRA + PIT_EXTRA

    with pytest.raises(LapnetError, match=rf"x has {len(FEATURES)} columns but {len(ALL)} feature names"):
        fit_pit_model(x, extra, y, race)
    with pytest.raises(LapnetError, match=r"extra must be \(n, 24\)"):
        fit_pit_model(x, extra[:, :3], y, race, FEATURES)


def test_pit_model_is_a_logistic_on_its_standardised_inputs():
    torch.manual_seed(0)
    m = PitModel(FEATURES)
    with torch.no_grad():
        m.linear.weight.normal_()
        m.linear.bias.fill_(0.3)
        m.mean.normal_()
        m.std.uniform_(0.5, 2.0)
    x = torch.randn(4, 7, len(FEATURES))  # (B, T, D)
    e = torch.randn(4, 7, len(PIT_EXTRA))  # (B, T, E)
    z = m.inputs(x, e)  # (B, T, W)
    assert z.shape == (4, 7, m.linear.in_features)
    np.testing.assert_allclose(z[..., -len(PIT_EXTRA):].numpy(), e.numpy())
    want = ((z - m.mean) / m.std) @ m.linear.weight[0] + 0.3
    np.testing.assert_allclose(m(x, e).detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_pit_model_reads_extras_from_the_lap_vector_when_they_are_features():
    names = list(FEATURES) + list(PIT_EXTRA)
    m = PitModel(names)
    with torch.no_grad():
        m.linear.weight.normal_()
    x = torch.randn(5, len(FEATURES))  # (n, D)
    e = torch.randn(5, len(PIT_EXTRA))  # (n, E)
    both = torch.cat([x, e], -1)  # (n, D + E)
    np.testing.assert_allclose(m(both).detach().numpy(), m(both, e).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(m.inputs(both)[:, -len(PIT_EXTRA):].numpy(), e.numpy())
    with pytest.raises(LapnetError, match="lack the PIT_EXTRA"):  # never a silent read of other columns
        PitModel(FEATURES)(x)


def test_stop_loss_is_shrunk_to_the_prior_and_kept_within_bounds():
    """The race's measured stop cost (a share of the reference lap) is held to 0.1-0.6: 935 of
    the 15 real races' 47,304 calls fall below 0.1 unclipped."""
    from lapnet.race.pit import PIT_LOSS_PRIOR, PRIOR_WEIGHT, _shrunk

    assert _shrunk([]) == PIT_LOSS_PRIOR
    assert _shrunk([1.0] * 10) == 0.6 and _shrunk([0.0] * 10) == 0.1
    k = 2
    assert _shrunk([0.3, 0.5]) == pytest.approx((PIT_LOSS_PRIOR * PRIOR_WEIGHT + 0.4 * k) / (PRIOR_WEIGHT + k))
