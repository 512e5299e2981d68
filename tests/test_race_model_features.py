"""Race features are causal and consistent; the net carried lap by lap equals the net on the whole race."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES, build_sequences, check_features, featurize_race, session_order


def _two_cars() -> pd.DataFrame:
    """AAA leads BBB by 1.5 s then 0.8 s; BBB pits at the end of lap 3."""
    rows = []
    for drv, offset, times in (("AAA", 0.0, [100.0, 90.0, 90.2, 90.1, 90.3]), ("BBB", 1.5, [100.0, 89.3, 110.0, 112.0, 90.0])):
        t = 3000.0 + offset
        for n, lt in enumerate(times, start=1):
            t += lt
            rows.append({"Driver": drv, "LapNumber": float(n), "LapTime": lt, "Time": t, "Stint": 1.0 if (drv == "AAA" or n <= 3) else 2.0,
                         "Compound": "MEDIUM" if (drv == "AAA" or n <= 3) else "HARD", "TyreLife": float(n), "TrackStatus": "1",
                         "IsAccurate": True, "Position": 1.0 if drv == "AAA" else 2.0,
                         "PitInTime": t - 15 if (drv == "BBB" and n == 3) else np.nan,
                         "PitOutTime": t - lt + 10 if (drv == "BBB" and n == 4) else np.nan})
    return pd.DataFrame(rows)


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import read_laps

    return clean_laps(read_laps(df, race="two"))[0]


def test_gap_to_car_ahead_and_field_pitting():
    laps = _clean(_two_cars())
    f = featurize_race(laps)
    bbb = laps.index[(laps["Driver"] == "BBB") & (laps["LapNumber"] == 2)][0]
    aaa = laps.index[(laps["Driver"] == "AAA") & (laps["LapNumber"] == 2)][0]
    gap = laps.loc[bbb, "Time"] - laps.loc[aaa, "Time"]
    assert gap == pytest.approx(0.8)
    assert f.loc[bbb, "gap_ahead"] == pytest.approx(gap / 5)  # the car ahead ended lap 2 0.8 s earlier
    assert f.loc[aaa, "leader"] == 1.0 and f.loc[bbb, "leader"] == 0.0
    a4 = laps.index[(laps["Driver"] == "AAA") & (laps["LapNumber"] == 4)][0]
    assert f.loc[a4, "field_pitting"] == 1.0  # the only other car pitted within the last 3 laps
    assert f.loc[a4, "field_more_stops"] == 1.0


def test_features_are_causal(f1_data):
    """A lap's features do not change when every later lap is removed (what live mode relies on)."""
    from lapnet.race.inputs import load_laps

    laps, _ = load_laps(f1_data / "2023_canadian_R.csv")  # SC, VSC, pit stops
    full = featurize_race(laps)
    order = session_order(laps)
    cut = order[: len(order) // 2]
    early = laps.loc[sorted(cut)]
    part_ref = featurize_race(early)
    part = featurize_race(early, total_laps=int(laps["LapNumber"].max()))
    assert not np.allclose(part_ref[list(FEATURES)].to_numpy(), part[list(FEATURES)].to_numpy())  # race length matters
    np.testing.assert_array_equal(part[list(FEATURES)].to_numpy(), full.loc[part.index, list(FEATURES)].to_numpy())
    np.testing.assert_array_equal(part["_ref"].to_numpy(), full.loc[part.index, "_ref"].to_numpy())


def test_check_features_refuses_other_lists():
    check_features(list(FEATURES))
    with pytest.raises(LapnetError, match="missing.*extra"):
        check_features(list(FEATURES[:-1]) + ["something_else"])


def _features_before_prev() -> list[str]:
    """The feature list of runs trained before last_vs_base and recent_1 (always 0) were dropped."""
    old = []
    for f in FEATURES:
        if f == "prev_1":
            old += [f"recent_{j}" for j in range(1, 6)]
        elif not f.startswith("prev_"):
            old.append(f)
        if f == "base":
            old.append("last_vs_base")
    return old


def test_old_runs_are_refused_in_one_line():
    with pytest.raises(LapnetError) as e:
        check_features(_features_before_prev())
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300
    assert "missing prev_1, prev_2, prev_3, prev_4;" in msg and "last_vs_base" in msg and "and 2 more" in msg
    assert "retrain" in msg


# conditions a table may not have: then the feature that flags them is constant, by the data, not by construction
_SIM_ABSENT = {"has_time": "every simulated lap is timed", "sector_dev": "the simulator writes no sector times",
               "vsc": "the simulator has safety cars, no VSC", "red": "nor red flags",
               "green_seen": "every simulated race starts under green flags: lap 1 sets it for the whole race",
               **{f"compound_{c}": "dry races only" for c in ("intermediate", "wet", "unknown")}}
_REAL_ABSENT = {f"compound_{c}": "no wet tyre or unknown compound in the 15 races of 2023" for c in ("intermediate", "wet", "unknown")}


def _constant(laps: pd.DataFrame) -> set[str]:
    seq = build_sequences(laps)
    x = seq.x[np.arange(seq.x.shape[1])[None, :] < seq.lengths[:, None]]  # (laps, D) padding dropped
    return {f for j, f in enumerate(FEATURES) if np.ptp(x[:, j]) == 0}


def test_every_feature_varies_over_a_simulated_race():
    """No input of the forecaster (NET_FEATURES), the fresh-stint forecast (FRESH_EXTRA) or the
    pit call (PIT_EXTRA) is constant by construction: only those flagging what the simulator
    never produces."""
    from lapnet.race.clean import clean_laps
    from lapnet.race.features import FRESH_EXTRA, NET_FEATURES, PIT_EXTRA
    from lapnet.race.simulate import simulate

    assert FEATURES == NET_FEATURES + FRESH_EXTRA + PIT_EXTRA
    assert _constant(clean_laps(simulate(1, seed=0))[0]) == set(_SIM_ABSENT)


def test_every_feature_varies_over_the_real_races(f1_data):
    import warnings

    from lapnet.race.inputs import load_laps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        laps, _ = load_laps(sorted(f1_data.glob("*.csv")))
    assert _constant(laps) == set(_REAL_ABSENT)


def test_sequences_shapes_and_masks():
    laps = _clean(_two_cars())
    seq = build_sequences(laps)
    assert seq.x.shape == (2, 5, len(FEATURES)) and seq.target.shape == (2, 5, 10)
    assert np.isfinite(seq.x).all()
    # BBB: lap 3 is the in-lap and lap 4 the out-lap: no target crosses the stop
    b = [k[1] for k in seq.keys].index("BBB")
    assert not seq.target_mask[b, 1].any()  # lap 2 -> 3 (in-lap), 4, 5 (next stint)
    assert seq.pit[b, 0] == 1.0 and seq.pit[b, 2] == 0.0


def test_net_carried_step_by_step_equals_whole_sequence():
    """Live mode's promise in float64 with non-zero biases: T one-lap steps == one pass over T laps."""
    from lapnet.race.models import RaceModelConfig, RaceNet

    torch.manual_seed(3)
    for arch in ("gru", "lstm"):
        net = RaceNet(RaceModelConfig(input_size=len(FEATURES), hidden_size=7, arch=arch, dropout=0.0)).double().eval()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))  # biases and the zero-initialised head become non-zero
        x = torch.randn(3, 9, len(FEATURES), dtype=torch.float64)
        lengths = torch.tensor([9, 4, 6])
        with torch.no_grad():
            whole, _ = net(x, lengths)
            for b in range(3):
                state = None
                for t in range(int(lengths[b])):
                    step, state = net(x[b : b + 1, t : t + 1], state=state)
                    for k in ("mean", "log_sigma", "pit", "phase"):
                        torch.testing.assert_close(step[k][0, 0], whole[k][b, t], msg=f"{arch} {k} b={b} t={t}")


def test_ensemble_averages_members_and_steps_like_whole_sequence():
    """RaceEnsemble: the members' mean forecast, mixture sigma and mean pit probability; its
    tuple state carried lap by lap equals one pass (float64, non-zero biases)."""
    from lapnet.race.models import RaceEnsemble, RaceModelConfig

    torch.manual_seed(4)
    cfg = RaceModelConfig(input_size=len(FEATURES), hidden_size=5, dropout=0.0, head="gaussian")  # Laplace: test_race_model_head
    ens = RaceEnsemble(cfg, members=3).double().eval()
    with torch.no_grad():
        for p in ens.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 6, len(FEATURES), dtype=torch.float64)
    lengths = torch.tensor([6, 3])
    with torch.no_grad():
        whole, _ = ens(x, lengths)
        members = [m(x, lengths)[0] for m in ens.members]
        mu = torch.stack([o["mean"] for o in members])  # (M, B, T, K)
        torch.testing.assert_close(whole["mean"], mu.mean(0))
        var = torch.stack([torch.exp(2 * o["log_sigma"]) for o in members]).mean(0) + mu.var(0, unbiased=False)
        torch.testing.assert_close(torch.exp(2 * whole["log_sigma"]), var)
        p = torch.stack([torch.sigmoid(o["pit"]) for o in members]).mean(0)
        torch.testing.assert_close(torch.sigmoid(whole["pit"]), p)
        for b in range(2):
            state = None
            for t in range(int(lengths[b])):
                step, state = ens(x[b : b + 1, t : t + 1], state=state)
                assert isinstance(state, tuple) and len(state) == 3
                for k in ("mean", "log_sigma", "pit", "phase"):
                    torch.testing.assert_close(step[k][0, 0], whole[k][b, t], msg=f"{k} b={b} t={t}")


def test_car_ahead_and_pit_context_features_by_hand():
    """BBB ends lap 2 0.8 s behind AAA (DRS range) and 0.7 s faster; AAA sees BBB's stop behind it."""
    laps = _clean(_two_cars())
    f = featurize_race(laps)
    at = lambda d, n: laps.index[(laps["Driver"] == d) & (laps["LapNumber"] == n)][0]  # noqa: E731
    b2, a4 = at("BBB", 2), at("AAA", 4)
    assert f.loc[b2, "drs"] == 1.0 and f.loc[at("AAA", 2), "drs"] == 0.0  # the leader has no car ahead
    assert f.loc[b2, "ahead_delta"] == pytest.approx((90.0 - 89.3) / f.loc[b2, "_ref"] * 100, rel=1e-5)
    assert f.loc[b2, "opening_lap_2"] == 1.0 and f.loc[b2, "opening_lap_3"] == 0.0
    # BBB's in-lap (its lap 3) ended 69.5 s before AAA's lap 4: within one reference lap, one place behind
    assert f.loc[a4, "behind_pitted"] == 1.0 and f.loc[a4, "ahead_pitted"] == 0.0 and f.loc[a4, "field_pitted_1"] == 1.0
    assert f.loc[a4, "tyre_race_frac"] == pytest.approx(4 / 5)
    assert f.loc[a4, "must_stop_late"] == pytest.approx(4 / 5)  # one dry compound so far, lap 4 of 5
    assert f.loc[at("BBB", 5), "must_stop_late"] == 0.0  # MEDIUM then HARD: the rule is satisfied


def test_pit_caller_replaces_only_the_pit_output_and_steps_like_whole_sequence():
    """WithPitCaller with the shipped PitModel: the forecaster's outputs unchanged, pit =
    PitModel(x) per lap; carried lap by lap it equals one pass (float64, non-zero weights)."""
    from lapnet.race.features import NET_FEATURES
    from lapnet.race.models import RaceModelConfig, RaceNet, WithPitCaller
    from lapnet.race.pit import PitModel

    torch.manual_seed(5)
    net = RaceNet(RaceModelConfig(input_size=len(NET_FEATURES), hidden_size=6, dropout=0.0))
    pit = PitModel(FEATURES)
    x = torch.rand(2, 5, len(FEATURES), dtype=torch.float64)
    model = WithPitCaller(net, pit).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        raw = pit.inputs(x)  # (2, 5, W)
        assert raw.shape[-1] == pit.linear.in_features
        pit.mean.copy_(raw.reshape(-1, raw.shape[-1]).mean(0))
        pit.std.copy_(raw.reshape(-1, raw.shape[-1]).std(0).clamp_min(1e-3))
        whole, _ = model(x)
        plain, _ = net(x)
        for k in ("mean", "log_sigma", "phase"):
            torch.testing.assert_close(whole[k], plain[k])
        z = (raw - pit.mean) / pit.std
        torch.testing.assert_close(whole["pit"], z @ pit.linear.weight[0] + pit.linear.bias[0])
        state = None
        for t in range(5):
            step, state = model(x[1:2, t : t + 1], state=state)
            for k in ("mean", "pit"):
                torch.testing.assert_close(step[k][0, 0], whole[k][1, t])


def test_pit_basis_by_hand():
    """A MEDIUM tyre at 25% of the race on lap 55% with one compound used, tyre life 7: the
    one-hot columns land where the basis says (per compound x tenths, race tenths twice, 3-lap buckets)."""
    from lapnet.race.pit import N_BASIS, pit_basis

    ix = {n: i for i, n in enumerate(FEATURES)}
    x = torch.zeros(len(FEATURES), dtype=torch.float64)
    for name, v in (("tyre_race_frac", 0.25), ("compound_medium", 1.0), ("lap_frac", 0.55), ("tyre_life", 7 / 30)):
        x[FEATURES.index(name)] = v
    z = pit_basis(x, ix)
    assert z.shape == (N_BASIS,)
    assert torch.nonzero(z).flatten().tolist() == [11 + 2, 33 + 5, 44 + 5, 55 + 2]  # MEDIUM 0.2-0.3, lap 0.5-0.6, same (must stop), tyre 6-9


def _basis_numpy(x: np.ndarray) -> np.ndarray:
    """The pit model's basis written out in NumPy, edges in float32 as the lap vectors are:
    the reference the PitModel's inputs are pinned to (71 columns)."""
    col = lambda n: x[:, FEATURES.index(n)]  # noqa: E731

    def hot(v, edges):
        e = np.asarray(edges, np.float32).astype(np.float64)
        return (np.searchsorted(e, v, side="left")[:, None] == np.arange(len(e) + 1)).astype(np.float64)

    tenths, tyre_laps = [0.1 * i for i in range(1, 11)], [3.0 * i for i in range(1, 16)]
    fb, lb = hot(col("tyre_race_frac"), tenths), hot(col("lap_frac"), tenths)
    dry = np.stack([col("compound_soft"), col("compound_medium"), col("compound_hard")], 1)
    must = 1.0 - col("two_compounds")
    return np.concatenate([(dry[:, :, None] * fb[:, None, :]).reshape(len(x), -1), lb, lb * must[:, None],
                           hot(col("tyre_life") * 30, tyre_laps)], 1)


def test_pit_model_inputs_match_a_numpy_reference_and_fit_is_deterministic():
    """On a simulated race's laps the PitModel's inputs are PIT_LEAN, the basis and PIT_EXTRA,
    equal to a NumPy reference to 1e-12; the same fit twice gives the same probabilities
    (the pit call's outputs are pinned by its inputs and a deterministic L-BFGS fit)."""
    from lapnet.race.clean import clean_laps
    from lapnet.race.features import PIT_EXTRA
    from lapnet.race.metrics import roc_auc
    from lapnet.race.pit import PIT_LEAN, PitModel, fit_pit_model
    from lapnet.race.simulate import simulate

    laps = clean_laps(simulate(2, seed=4))[0]
    seq = build_sequences(laps)
    m = seq.pit_mask
    x = seq.x[m].astype(np.float64)  # (n, D)
    got = PitModel(FEATURES).double().inputs(torch.from_numpy(x)).numpy()
    want = np.concatenate([x[:, [FEATURES.index(c) for c in PIT_LEAN]], _basis_numpy(x), x[:, -len(PIT_EXTRA):]], 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    race = np.broadcast_to(np.array([k[0] for k in seq.keys])[:, None], m.shape)[m]
    probs = []
    for _ in range(2):
        model, info = fit_pit_model(seq.x[m], seq.x[m][:, -len(PIT_EXTRA):], seq.pit[m], race, FEATURES, l2_grid=(1e-2,))
        with torch.no_grad():
            probs.append(torch.sigmoid(model.double()(torch.from_numpy(x))).numpy())
    np.testing.assert_allclose(probs[0], probs[1], rtol=0, atol=1e-12)
    assert 0.5 < roc_auc(seq.pit[m], probs[0]) <= 1.0


def test_race_length_estimated_from_the_reference_lap():
    """Without a scheduled length the featuriser assumes DEFAULT_RACE_LAPS until a Scored lap
    gives a reference lap, then RACE_SECONDS / ref, never fewer laps than it has seen; the
    features use it (lap_frac), and a given length is kept as it is."""
    from lapnet.race.features import DEFAULT_RACE_LAPS, RACE_SECONDS, RaceFeaturizer, estimate_race_laps

    assert estimate_race_laps(RACE_SECONDS / 57) == 57
    assert estimate_race_laps(RACE_SECONDS / 57.4) == 57 and estimate_race_laps(RACE_SECONDS / 57.6) == 58
    assert estimate_race_laps(float("nan")) == DEFAULT_RACE_LAPS and estimate_race_laps(0.0) == DEFAULT_RACE_LAPS
    laps = _clean(_two_cars())
    recs = laps.iloc[session_order(laps)].to_dict("records")
    fz, fixed = RaceFeaturizer(None), RaceFeaturizer(44)
    seen = []
    for r in recs:
        f, g = fz.step(r), fixed.step(r)
        seen.append((r["LapNumber"], bool(r["Scored"]), fz.total_laps, f.x[FEATURES.index("lap_frac")]))
        assert fixed.total_laps == 44 and not fixed.estimated
        assert g.x[FEATURES.index("lap_frac")] == pytest.approx(r["LapNumber"] / 44)
    assert fz.estimated
    first = next(i for i, s in enumerate(seen) if s[1])
    assert all(s[2] == DEFAULT_RACE_LAPS for s in seen[:first])  # lap 1 is not Scored: nothing to go on
    ref = recs[first]["LapTime"]
    assert seen[first][2] == round(RACE_SECONDS / ref)  # one Scored lap: it is the reference
    assert seen[first][3] == pytest.approx(seen[first][0] / seen[first][2])  # and the features use it
    fz.max_lap = 80  # a race longer than the estimate: at least the laps it has seen
    assert fz.total_laps == 80


def test_race_trend_is_the_pooled_within_stint_slope(f1_data):
    """race_trend: the least-squares slope of lap time on lap number over every Scored lap so
    far, one offset per stint (running sums), checked against a least-squares solve at a few
    points of a real race."""
    from lapnet.race.features import RaceFeaturizer, _PooledTrend
    from lapnet.race.inputs import load_laps

    laps, _ = load_laps(f1_data / "2023_miami_R.csv")
    recs = laps.iloc[session_order(laps)].to_dict("records")
    fz = RaceFeaturizer(57)
    seen = []  # (stint key, lap number, lap time) of the Scored laps so far
    checked = 0
    for k, r in enumerate(recs):
        f = fz.step(r)
        if r["Scored"]:
            seen.append(((r["Driver"], f.stint_id), r["LapNumber"], r["LapTime"]))
        if k in (300, 600, 900):
            keys = sorted({s for s, _, _ in seen})
            x = np.array([v for _, v, _ in seen], float)
            d = np.column_stack([x] + [[s == key for s, _, _ in seen] for key in keys]).astype(float)
            slope = np.linalg.lstsq(d, np.array([t for _, _, t in seen]), rcond=None)[0][0]
            assert fz.trend.slope() == pytest.approx(slope, rel=1e-6, abs=1e-9)
            assert f.x[FEATURES.index("race_trend")] == pytest.approx(np.clip(slope / f.ref * 100, -1, 1) * 10, rel=1e-5)
            checked += 1
    assert checked == 3
    t = _PooledTrend()
    t.add(("a", 0), 1.0, 90.0)
    t.add(("a", 0), 2.0, 90.5)
    assert t.slope() == 0.0  # too little spread within stints to call a trend


def _safety_car_start() -> pd.DataFrame:
    """Three cars behind the safety car for laps 1-3 (130 s), then a green lap FastF1 does not
    mark accurate (lap 4, the first after the restart) and green racing; CCC pits at the end of lap 6."""
    rows = []
    for c, drv in enumerate(("AAA", "BBB", "CCC")):
        t = 3000.0 + c
        for n in range(1, 10):
            lt = 130.0 + c if n <= 3 else 90.0 + 0.1 * c + 0.05 * n
            if drv == "CCC" and n == 6:
                lt += 20.0  # the in-lap
            if drv == "CCC" and n == 7:
                lt += 15.0  # the out-lap
            t += lt
            stint = 1.0 if (drv != "CCC" or n <= 6) else 2.0
            rows.append({"Driver": drv, "LapNumber": float(n), "LapTime": lt, "Time": t, "Stint": stint,
                         "Compound": "MEDIUM" if stint == 1.0 else "HARD", "TyreLife": float(n if stint == 1.0 else n - 6),
                         "TrackStatus": "4" if n <= 3 else "1", "IsAccurate": n >= 5, "Position": float(c + 1),
                         "PitInTime": t - 15 if (drv == "CCC" and n == 6) else np.nan,
                         "PitOutTime": t - lt + 10 if (drv == "CCC" and n == 7) else np.nan})
    return pd.DataFrame(rows)


def test_reference_lap_before_the_first_scored_lap_prefers_green_laps_and_fresh_stints_get_targets():
    """After a safety-car start the reference is the first green laps' pace, not the safety car's;
    origins without a Scored lap in their stint (the start, an out-lap) learn a forecast from it."""
    from lapnet.race.features import RaceFeaturizer
    from lapnet.race.metrics import eval_mask

    laps = _clean(_safety_car_start())
    f = featurize_race(laps)
    row = {(d, int(n)): i for i, (d, n) in enumerate(zip(laps["Driver"], laps["LapNumber"]))}
    ref = f["_ref"].to_numpy()
    assert 130.0 <= ref[row["AAA", 3]] <= 132.0  # nothing but safety-car laps yet
    assert ref[row["CCC", 4]] == pytest.approx(90.2, abs=0.2)  # the first green laps, though not "accurate"
    fz = RaceFeaturizer(None)
    sources = []
    for _, lap in laps.sort_values("Time").iterrows():
        fz.step(lap)
        sources.append(fz.ref_source)
    assert sources[0] == "any" and "green" in sources and sources[-1] == "scored"

    seq = build_sequences(laps)
    a, c = ([k[1] for k in seq.keys].index(d) for d in ("AAA", "CCC"))
    # AAA lap 4 -> lap 5: no Scored lap in the stint at lap 4, so the target starts from ref
    assert not np.isfinite(seq.base[a, 3]) and seq.target_mask[a, 3, 0]
    assert seq.target[a, 3, 0] == pytest.approx((seq.lap_time[a, 4] - seq.ref[a, 3]) / seq.ref[a, 3] * 100, rel=1e-5)
    # AAA lap 5 -> 6 starts from lap 5, Scored: persistence, as before
    assert seq.base[a, 4] == pytest.approx(seq.lap_time[a, 4])
    # CCC's out-lap (lap 7) -> lap 8: a fresh stint's origin; nothing crosses the stop
    assert seq.target_mask[c, 6, 0] and not np.isfinite(seq.base[c, 6])
    # CCC lap 4: lap 5 counts; lap 6 is the in-lap, laps 8-9 are Scored but in the next stint
    assert seq.target_mask[c, 3, 0] and not seq.target_mask[c, 3, 1:].any()
    fresh = eval_mask(seq, "fresh")
    assert fresh[a, 3, 0] and fresh[c, 6, 0] and not fresh[a, 4].any()
    assert not (fresh & eval_mask(seq, "scored")).any()  # the two masks never count the same pair


def test_field_pace_and_own_pace_for_the_fresh_start():
    """FRESH_EXTRA on the two cars: BBB's out-lap (lap 4) sees AAA's latest Scored lap as the
    field's pace, and BBB's own pace against the field from its one Scored lap (lap 2)."""
    laps = _clean(_two_cars())
    f = featurize_race(laps)
    at = lambda drv, n: laps.index[(laps["Driver"] == drv) & (laps["LapNumber"] == n)][0]  # noqa: E731
    b4, b2 = at("BBB", 4), at("BBB", 2)
    assert f.loc[b4, "has_base"] == 0.0 and f.loc[b4, "has_field_pace"] == 1.0
    ref = f.loc[b4, "_ref"]
    assert ref == pytest.approx(np.median([90.0, 89.3, 90.2, 90.1]))  # the Scored laps so far (BBB's lap 3 is its in-lap)
    assert f.loc[b4, "field_pace"] == pytest.approx((90.1 / ref - 1) * 100 / 5, abs=1e-6)  # AAA's lap 4
    assert f.loc[b4, "field_tyre"] == pytest.approx(4 / 30)
    own = (89.3 - 90.0) / np.median([90.0, 89.3]) * 100  # BBB's lap 2 against AAA's lap 2, which ended just before
    assert f.loc[b2, "own_pace"] == pytest.approx(own / 5, abs=1e-6) and f.loc[b4, "own_pace"] == pytest.approx(own / 5, abs=1e-6)
    assert f.loc[at("AAA", 1), "opening_lap_1"] == 1.0 and f.loc[b2, "opening_lap_1"] == 0.0
    assert f.loc[at("AAA", 1), "has_field_pace"] == 0.0 and f.loc[at("AAA", 1), "has_own_pace"] == 0.0  # nothing Scored yet


def test_field_pace_is_forgotten_after_two_reference_laps():
    """A Scored lap tells the field's pace for FIELD_WINDOW reference laps, then no more."""
    from lapnet.race.features import FIELD_WINDOW

    df = _two_cars()
    late = df["Driver"] == "BBB"
    df.loc[late, "Time"] += np.where(df.loc[late, "LapNumber"] >= 4, 3 * 90.0, 0.0)  # BBB's laps 4-5 end 3 laps later
    df.loc[late & (df["LapNumber"] == 4), "LapTime"] += 3 * 90.0  # (a long stop)
    laps = _clean(df)
    f = featurize_race(laps)
    b4 = laps.index[(laps["Driver"] == "BBB") & (laps["LapNumber"] == 4)][0]
    a5_end = laps.loc[(laps["Driver"] == "AAA") & (laps["LapNumber"] == 5), "Time"].iloc[0]
    assert laps.loc[b4, "Time"] - a5_end > FIELD_WINDOW * f.loc[b4, "_ref"]
    assert f.loc[b4, "has_field_pace"] == 0.0 and f.loc[b4, "field_pace"] == 0.0


def test_green_seen_waits_for_a_lap_at_the_races_pace():
    """Lap 1 of a green start counts (FastF1 marks it an out-lap for every car); laps behind the
    safety car, a restart lap after a red flag and pit out-laps do not."""
    df = _two_cars()
    sc = df.copy()
    sc.loc[sc["LapNumber"] <= 2, "TrackStatus"] = "4"  # a start behind the safety car, for two laps
    wet = df.copy()
    wet.loc[wet["LapNumber"] <= 2, "Compound"] = "INTERMEDIATE"  # a wet start: its laps show no dry pace
    for frame, first_green in ((df, 1), (sc, 3), (wet, 3)):
        laps = _clean(frame)
        f = featurize_race(laps)
        order = laps.index[session_order(laps)]
        seen = f.loc[order, "green_seen"].to_numpy()
        assert seen.min() == 0.0 or first_green == 1
        first = laps.loc[order[int(np.argmax(seen))], "LapNumber"]
        assert first == first_green and (np.diff(seen) >= 0).all()  # once seen, for good


def test_a_lap_without_time_still_sees_the_field():
    """A lap whose Time is missing is taken to end at the latest Time read (session order): the
    field's pace stays known. A missing TyreLife counts the stint's laps, as the net's feature does."""
    df = _two_cars()
    i = df.index[(df["Driver"] == "BBB") & (df["LapNumber"] == 4)][0]
    df.loc[i, "Time"] = np.nan
    df["TyreLife"] = np.nan
    laps = _clean(df)
    f = featurize_race(laps)
    b4 = laps.index[(laps["Driver"] == "BBB") & (laps["LapNumber"] == 4)][0]
    assert f.loc[b4, "has_field_pace_any"] == 1.0
    b5 = laps.index[(laps["Driver"] == "BBB") & (laps["LapNumber"] == 5)][0]
    assert f.loc[b5, "field_tyre"] == pytest.approx(5 / 30)  # AAA's lap 5, the 5th of its stint: not 0 (new tyres)
