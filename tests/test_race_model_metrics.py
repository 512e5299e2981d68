"""Race metrics and baselines against hand calculations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lapnet.race.baselines import FUEL_S_PER_LAP, baseline_forecasts
from lapnet.race.metrics import (
    calibration_table,
    coverage,
    error_stats,
    forecast_report,
    macro_f1,
    roc_auc,
    top_decile_precision,
)


def test_auc_matches_pair_counting_with_ties():
    y = np.array([1, 0, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.4, 0.4, 0.8, 0.3, 0.2])
    # P(score_pos > score_neg), ties count 1/2, over all 3 x 4 = 12 pairs
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert wins == 8.5  # 0.9 beats all 4; 0.4 beats 0.1, 0.2 and ties 0.4; 0.3 beats 0.1, 0.2
    assert roc_auc(y, s) == pytest.approx(8.5 / 12)
    assert roc_auc(y, -s) == pytest.approx(1 - 8.5 / 12)
    assert np.isnan(roc_auc(np.ones(3), np.arange(3)))


def test_macro_f1_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1, fn 0 -> 0.8; class 2: tp 1, fp 0, fn 1 -> 2/3
    assert macro_f1(y, p, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(y, y, 3) == 1.0


def test_top_decile_calibration_coverage_errors():
    y = np.r_[np.ones(3), np.zeros(17)]
    s = np.r_[[0.9, 0.2, 0.85], np.linspace(0.0, 0.8, 17)]
    assert top_decile_precision(y, s) == pytest.approx(1.0)  # top 2 of 20: 0.9 and 0.85, both positive
    # 15 laps: the top decile is 2 laps (1.5 rounded up), not 1
    assert top_decile_precision(np.r_[1, 0, np.zeros(13)], np.arange(15.0)[::-1]) == 0.5
    rows = calibration_table(np.array([1, 0, 0, 1]), np.array([0.05, 0.05, 0.95, 0.95]), bins=10)
    assert [(r["bin"], r["n"], r["observed"]) for r in rows] == [("0.0-0.1", 2, 0.5), ("0.9-1.0", 2, 0.5)]
    assert coverage(np.array([1.0, 2.0, 3.0, np.nan]), np.zeros(4), np.full(4, 2.5)) == pytest.approx(2 / 3)
    st = error_stats(np.array([1.0, 2.0, np.nan]), np.array([2.0, 4.0, 1.0]))
    assert st == {"mae": 1.5, "rmse": pytest.approx(np.sqrt(2.5)), "n": 2}


def _tiny_laps() -> pd.DataFrame:
    """One driver, stint 1 = laps 1-6, stint 2 = laps 7-9 (pit at the end of lap 6)."""
    times = [100.0, 90.0, 90.5, 90.2, 90.9, 93.0, 110.0, 91.0, 91.4]
    rows = []
    t = 3000.0
    for i, lt in enumerate(times, start=1):
        t += lt
        rows.append({"Driver": "AAA", "LapNumber": float(i), "LapTime": lt, "Time": t, "Stint": 1.0 if i <= 6 else 2.0,
                     "Compound": "MEDIUM" if i <= 6 else "HARD", "TyreLife": float(i if i <= 6 else i - 6),
                     "TrackStatus": "1", "IsAccurate": True, "Position": 1.0,
                     "PitInTime": t - 20 if i == 6 else np.nan, "PitOutTime": t - lt + 5 if i == 7 else np.nan})
    return pd.DataFrame(rows)


def test_baselines_by_hand():
    from lapnet.race.clean import clean_laps
    from lapnet.race.features import build_sequences
    from lapnet.race.io import read_laps

    laps, _ = clean_laps(read_laps(_tiny_laps(), race="tiny"))
    assert laps["Scored"].tolist() == [False, True, True, True, True, False, False, True, True]
    seq = build_sequences(laps)
    b = baseline_forecasts(seq)
    t = 3  # origin lap 4: Scored laps of the stint so far are laps 2, 3, 4 = 90.0, 90.5, 90.2
    assert b["persistence"][0, t, 0] == pytest.approx(90.2)
    assert b["mean_last3"][0, t, 4] == pytest.approx((90.0 + 90.5 + 90.2) / 3)
    # least squares through (2, 90.0), (3, 90.5), (4, 90.2): slope 0.1, at lap 3 the mean 90.2333
    assert b["stint_linear"][0, t, 0] == pytest.approx(90.2333333 + 0.1 * 2)
    assert b["fuel_persistence"][0, t, 1] == pytest.approx(90.2 - 2 * FUEL_S_PER_LAP)
    assert np.isnan(b["persistence"][0, 0, 0])  # lap 1 (standing start) is not Scored: nothing to persist
    # lap 4 -> lap 5 is Scored in the same stint; lap 4 -> lap 6 (in-lap) and lap 8 (next stint) are not
    assert seq.target_mask[0, t].tolist()[:4] == [True, False, False, False]
    assert seq.future[0, t, 0] == 90.9
    assert seq.pit[0, 2] == 1.0 and seq.pit[0, 3] == 1.0 and seq.pit[0, 6] == 0.0  # in-lap 6 is within 3 laps of 3..5
    # stint 2 starts after the pit: origin lap 8 persists 91.0 for lap 9
    assert b["persistence"][0, 7, 0] == pytest.approx(91.0)
    rep = forecast_report({"p": b["persistence"], "m": b["mean_last3"]}, seq)
    # Scored pairs at h1: (2->3), (3->4), (4->5), (8->9)
    assert rep["scored"]["p"]["h1"]["n"] == 4
    assert rep["scored"]["p"]["h1"]["mae"] == pytest.approx((0.5 + 0.3 + 0.7 + 0.4) / 4)



def test_forecast_report_keeps_every_forecaster_without_scored_pairs():
    """A race with no Scored pair (every lap behind the safety car) reports every forecaster with
    n 0 and no MAE on "scored" and "all" (eval's by-race row reads them); only "fresh" leaves out
    the baselines, which have no lap to start from there, while a normal race has fresh pairs."""
    from lapnet.race.baselines import BASELINES
    from lapnet.race.clean import clean_laps
    from lapnet.race.features import build_sequences
    from lapnet.race.io import read_laps

    for status, fresh_n in (("4", 0), ("1", 2)):  # green: lap 1 -> 2 and the out-lap 7 -> 8 are fresh pairs
        laps, _ = clean_laps(read_laps(_tiny_laps().assign(TrackStatus=status), race="tiny"))
        seq = build_sequences(laps)
        forecasts = {"forecaster": np.full(seq.future.shape, 90.0), **baseline_forecasts(seq)}
        rep = forecast_report(forecasts, seq)
        assert set(rep["scored"]) == set(rep["all"]) == {"forecaster", *BASELINES}
        assert set(rep["fresh"]) == {"forecaster"}
        assert rep["fresh"]["forecaster"]["h1"]["n"] == fresh_n
        if status == "4":
            assert not laps["Scored"].any()
            for which in ("scored", "all"):
                for name in forecasts:
                    assert [rep[which][name][f"h{h}"]["n"] for h in (1, 5, 10)] == [0, 0, 0]
                    assert rep[which][name]["h1"]["mae"] is None and rep[which][name]["h1"]["by_compound"] == {}
        else:
            assert rep["scored"]["persistence"]["h1"]["n"] == rep["scored"]["forecaster"]["h1"]["n"] == 4
            # lap 1 -> 2 (90.0) and out-lap 7 -> 8 (91.0), both forecast 90.0
            assert rep["fresh"]["forecaster"]["h1"]["mae"] == pytest.approx((0.0 + 1.0) / 2)

def test_next10_totals_by_hand():
    """The next 10 laps' total: only origins whose 10 next laps are all Scored and in the stint;
    a forecast 0.1 s slow on every lap is 1 s slow in total."""
    from lapnet.race.features import build_sequences
    from lapnet.race.metrics import totals_report
    from lapnet.race.inputs import load_laps
    from lapnet.race.simulate import simulate

    seq = build_sequences(load_laps(simulate(1, seed=3))[0])
    exact = np.where(seq.target_mask, seq.future, np.nan)  # (N, T, K)
    slow = exact + 0.1
    half = exact.copy()
    half[:, :, 5:] = np.nan  # a forecaster with no 6th..10th lap: no total
    rep = totals_report({"exact": exact, "slow": slow, "half": half}, seq)
    want_n = int((seq.target_mask.all(-1) & seq.origin_scored).sum())
    assert want_n > 100 and rep["exact"]["n"] == rep["slow"]["n"] == want_n
    assert rep["exact"]["bias"] == pytest.approx(0.0, abs=1e-9) and rep["exact"]["mae"] == pytest.approx(0.0, abs=1e-9)
    assert rep["slow"]["bias"] == pytest.approx(1.0) and rep["slow"]["mae"] == pytest.approx(1.0)
    assert rep["slow"]["rmse"] == pytest.approx(1.0) and rep["exact"]["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert rep["half"]["n"] == 0 and np.isnan(rep["half"]["bias"])


def test_stint_trend_by_hand():
    """The stint trend: (lap t+10 - lap t+1) / 9 on origins whose laps t+1 and t+10 are Scored in
    the stint; a forecast that adds 0.05 s per lap ahead trends 0.05 s per lap above the laps."""
    from lapnet.race.features import COMPOUNDS, build_sequences
    from lapnet.race.metrics import stint_trend_report
    from lapnet.race.inputs import load_laps
    from lapnet.race.simulate import simulate

    seq = build_sequences(load_laps(simulate(1, seed=3))[0])
    exact = np.where(seq.target_mask, seq.future, np.nan)  # (N, T, K)
    steeper = exact + 0.05 * np.arange(1, 11)  # +0.05 s at lap t+1, +0.5 s at lap t+10
    rep = stint_trend_report({"exact": exact, "steeper": steeper}, seq)
    ok = seq.target_mask[:, :, 0] & seq.target_mask[:, :, 9] & seq.origin_scored
    want = (seq.future[:, :, 9] - seq.future[:, :, 0])[ok] / 9
    assert rep["laps"] == [1, 10] and rep["all"]["n"] == int(ok.sum()) > 100
    assert rep["all"]["actual"] == pytest.approx(want.mean()) and rep["all"]["exact"] == pytest.approx(want.mean())
    assert rep["all"]["steeper"] == pytest.approx(want.mean() + 0.05)
    for c, row in rep["by_compound"].items():
        sel = ok & (seq.compound == COMPOUNDS.index(c))
        assert row["n"] == int(sel.sum()) and row["actual"] == pytest.approx(((seq.future[:, :, 9] - seq.future[:, :, 0])[sel] / 9).mean())
    assert sum(r["n"] for r in rep["by_compound"].values()) == rep["all"]["n"] and len(rep["by_compound"]) >= 2
    # the simulator's tyres wear faster than fuel burns off: its stints slow
    assert rep["all"]["actual"] > 0
    # intervals of actual minus forecast, resampling whole stints
    stints = {(i, seq.stint_id[i, t]) for i, t in zip(*np.nonzero(ok))}
    assert rep["all"]["stints"] == len(stints) > 20
    assert rep["all"]["gap_ci95"]["exact"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert rep["all"]["gap_ci95"]["steeper"] == pytest.approx([-0.05, -0.05])
    rng = np.random.default_rng(1)
    tilt = rng.normal(0.0, 0.05, (seq.stint_id.shape[0], seq.stint_id.max() + 1))  # one wrong slope per stint
    noisy = exact + tilt[np.arange(len(tilt))[:, None], np.maximum(seq.stint_id, 0)][:, :, None] * np.arange(10)  # trend + tilt
    rep = stint_trend_report({"noisy": noisy}, seq)
    lo, hi = rep["all"]["gap_ci95"]["noisy"]
    gap = rep["all"]["actual"] - rep["all"]["noisy"]
    # the stints' slopes differ, not the origins': the interval is about 4 x 0.05 / sqrt(stints) wide
    assert lo < gap < hi and 0.5 < (hi - lo) / (4 * 0.05 / np.sqrt(len(stints))) < 2
    assert rep == stint_trend_report({"noisy": noisy}, seq)  # a fixed seed: the same laps, the same interval


def test_stint_trend_by_race():
    from lapnet.race.features import build_sequences
    from lapnet.race.metrics import stint_trend_report
    from lapnet.race.inputs import load_laps
    from lapnet.race.simulate import simulate

    seq = build_sequences(load_laps(simulate(2, seed=3))[0])
    exact = np.where(seq.target_mask, seq.future, np.nan)
    rep = stint_trend_report({"exact": exact}, seq)
    assert len(rep["by_race"]) == 2
    assert sum(r["n"] for r in rep["by_race"].values()) == rep["all"]["n"]
    assert sum(r["stints"] for r in rep["by_race"].values()) == rep["all"]["stints"]
    one = stint_trend_report({"exact": exact}, seq.__class__(**{**seq.__dict__, "keys": [("one", k[1]) for k in seq.keys]}))
    assert "by_race" not in one


def test_phase_checks_by_hand():
    """Phase calls on laps without labels: each Scored lap against the median of the stint's other
    Scored laps within 3 laps (the next-lap version leaves out the lap the call was made on), and
    the pit-window call against the real stop."""
    from lapnet.race.clean import clean_laps
    from lapnet.race.features import PHASES, build_sequences
    from lapnet.race.io import read_laps
    from lapnet.race.metrics import phase_checks, stint_residuals

    seq = build_sequences(clean_laps(read_laps(_tiny_laps(), race="tiny"))[0])
    # Scored: laps 2-5 (90.0, 90.5, 90.2, 90.9) and 8-9 (91.0, 91.4, too few neighbours)
    same = stint_residuals(seq)[0]
    np.testing.assert_allclose(same[1:5], [90.0 - 90.5, 90.5 - 90.2, 90.2 - 90.5, 90.9 - 90.2])
    assert np.isnan(same[[0, 5, 6, 7, 8]]).all()
    nxt = stint_residuals(seq, ahead=1)[0]  # lap t+1 against its neighbours other than laps t and t+1
    np.testing.assert_allclose(nxt[:4], [90.0 - 90.5, 90.5 - 90.55, 90.2 - 90.45, 90.9 - 90.25])
    assert np.isnan(nxt[4:]).all()  # lap 6 is an in-lap; lap 8 has one neighbour; lap 9 is the last
    call = ["push", "push", "conserve", "pit_window", "pit_window", "push", "push", "push", "push"]  # laps 1-9
    probs = np.zeros(seq.x.shape[:2] + (3,))
    probs[0, np.arange(9), [PHASES.index(c) for c in call]] = 1.0
    c = phase_checks(seq, {"live": probs})["live"]
    assert c["share"] == pytest.approx({"push": 6 / 9, "conserve": 1 / 9, "pit_window": 2 / 9})
    # the stop ends lap 6: laps 3, 4 and 5 have it within 3 laps; laps 4 and 5 are called pit_window
    assert c["base_rate"] == pytest.approx(3 / 8) and c["pit_window_precision"] == 1.0
    assert c["pit_window_recall"] == pytest.approx(2 / 3) and c["pit_window_auc"] == pytest.approx(5 / 6)
    assert c["pace_s"] == pytest.approx({"push": -0.5, "conserve": 0.3, "pit_window": 0.2})
    assert c["n"] == 2 and c["push_vs_conserve_auc"] == 1.0  # lap 2 (push) was faster than lap 3 (conserve)
    assert c["next_lap_pace_s"]["conserve"] == pytest.approx(-0.25) and c["next_lap_n"] == 3


def test_live_phase_takes_the_pit_window_from_the_pit_call():
    """On real races the live call's pit window is the pit call's probability (above the run's
    threshold); push and conserve share the rest as the tagger splits them."""
    from lapnet.race.runs import live_phase

    tagged = np.array([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6], [0.25, 0.25, 0.5]])
    pit = np.array([0.1, 0.1, 0.4])
    probs, call = live_phase(tagged, pit, threshold=0.3)
    np.testing.assert_allclose(probs, [[0.9 * 0.75, 0.9 * 0.25, 0.1], [0.9 * 0.25, 0.9 * 0.75, 0.1], [0.3, 0.3, 0.4]])
    assert call.tolist() == [0, 1, 2]  # push; conserve (the tagger's pit window overruled: pit 0.1 < 0.3); pit_window
    same, own = live_phase(tagged, pit, threshold=None)  # no threshold: the tagger's own call
    assert same is tagged and own.tolist() == [0, 2, 2]


def test_driver_figure_draws_the_phase_calls():
    """predict's driver figure: one strip square per lap in the colour of its phase call, and
    none when the run makes no phase calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lapnet.race.plots import PHASE_COLOURS, plot_driver

    laps = np.arange(1, 9)
    table = pd.DataFrame({"Race": "r", "Driver": "AAA", "LapNumber": laps, "LapTime": 90.0 + 0.1 * laps,
                          "Compound": "MEDIUM", "Scored": True, "InLap": laps == 6, "forecast_h1": 90.5,
                          "lo90_h1": 90.0, "hi90_h1": 91.0, "pit_prob": 0.1,
                          "phase": ["push"] * 3 + ["pit_window"] * 3 + ["conserve"] * 2})
    fig = plot_driver(table)
    strips = {c.get_label(): len(c.get_offsets()) for c in fig.axes[0].collections if c.get_label().startswith("call:")}
    assert strips == {"call: push": 3, "call: pit_window": 3, "call: conserve": 2}
    assert "phase call" in fig.axes[0].get_title() and set(PHASE_COLOURS) == {"push", "conserve", "pit_window"}
    plt.close(fig)
    fig = plot_driver(table.assign(phase=None))
    assert not any(c.get_label().startswith("call:") for c in fig.axes[0].collections)
    plt.close(fig)


def test_driver_figure_marks_the_fresh_start_forecasts():
    """Forecasts from an out-lap or the start (forecast_from fresh_start) are hollow diamonds at
    the lap they are for; laps without a forecast (no_green_pace_yet) draw nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lapnet.race.plots import plot_driver

    laps = np.arange(1, 9)
    src = ["no_green_pace_yet", "fresh_start", "stint", "stint", "stint", "stint", "fresh_start", "stint"]
    table = pd.DataFrame({"Race": "r", "Driver": "AAA", "LapNumber": laps, "LapTime": 90.0 + 0.1 * laps,
                          "Compound": "MEDIUM", "Scored": True, "InLap": laps == 6,
                          "forecast_h1": [np.nan] + [90.5] * 7, "lo90_h1": 90.0, "hi90_h1": 91.0, "pit_prob": 0.1,
                          "forecast_from": src})
    fig = plot_driver(table)
    marks = [c for c in fig.axes[0].collections if c.get_label().startswith("forecast from an out-lap")]
    assert len(marks) == 1
    np.testing.assert_array_equal(marks[0].get_offsets()[:, 0], [3, 8])  # made at laps 2 and 7, for the next lap
    plt.close(fig)


def test_driver_figure_pit_panel_uses_the_runs_threshold():
    """The pit call gets its own panel: the probability per lap, the threshold it is called
    from (the run's, not a fixed 50%), and the called laps shaded over the 3 laps they are
    about, in both panels; with an `ax` given, the panel is a twin axis of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lapnet.race.plots import _called_spans, plot_driver

    laps = np.arange(1, 11)
    prob = np.array([0.02, 0.05, 0.1, 0.2, 0.31, 0.45, 0.6, 0.1, 0.05, 0.02])
    table = pd.DataFrame({"Race": "r", "Driver": "AAA", "LapNumber": laps, "LapTime": 90.0 + 0.1 * laps,
                          "Compound": "MEDIUM", "Scored": True, "InLap": laps == 7, "forecast_h1": 90.5,
                          "lo90_h1": 90.0, "hi90_h1": 91.0, "pit_prob": prob})

    def shaded(a):  # x-spans of the shaded laps
        return sorted((round(pt.get_x(), 2), round(pt.get_x() + pt.get_width(), 2)) for pt in a.patches)

    fig = plot_driver(table, pit_threshold=0.3)
    assert len(fig.axes) == 2
    main, pit = fig.axes
    (curve,) = [ln for ln in pit.get_lines() if ln.get_label().startswith("P(stop")]
    np.testing.assert_allclose(curve.get_ydata(), prob)
    (level,) = [ln for ln in pit.get_lines() if ln.get_label().startswith("called from")]
    assert level.get_ydata()[0] == 0.3 and "30%" in level.get_label()
    assert shaded(pit) == shaded(main) == [(5.5, 10.5)]  # laps 5, 6, 7 reach 0.3: one span, laps 6-10
    assert pit.get_xlabel() == "lap" and main.get_xlabel() == ""
    plt.close(fig)
    assert _called_spans(np.array([9, 2, 3, 6, 20])) == \
        [(2.5, 12.5), (20.5, 23.5)]  # calls at laps 2, 3, 6, 9 cover laps 3-12 without a gap
    assert _called_spans(np.array([2, 7])) == [(2.5, 5.5), (7.5, 10.5)]  # lap 6 is not covered
    fig = plot_driver(table)  # no run threshold: 50%
    assert shaded(fig.axes[1]) == [(7.5, 10.5)]  # only lap 7 reaches 0.5
    plt.close(fig)
    fig, ax = plt.subplots()
    assert plot_driver(table, ax=ax, pit_threshold=0.5) is fig
    assert len(fig.axes) == 2 and fig.axes[1].get_ylim() == (0.0, 1.0) and ax.get_xlabel() == "lap"
    plt.close(fig)


def test_degradation_figure_states_each_compounds_trend():
    """With the metrics' stint trend, each compound's legend entry carries the laps' and the
    forecast's s per lap; without it, the compound's name alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lapnet.race.plots import plot_degradation

    laps = np.tile(np.arange(1, 9), 2)
    table = pd.DataFrame({"Race": "r", "Driver": np.repeat(["AAA", "BBB"], 8), "Stint": 1.0, "TyreLife": laps,
                          "LapTime": 90.0 + 0.05 * laps, "forecast_h1": 90.0 + 0.04 * laps, "Scored": True,
                          "Compound": "MEDIUM"})
    trend = {"laps": [1, 10], "all": {"n": 7}, "by_compound": {"MEDIUM": {"n": 7, "actual": 0.0512, "forecaster": -0.0234}}}
    fig = plot_degradation(table, trend=trend)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "MEDIUM: next 10 laps +0.051 s/lap, forecast -0.023 (n 7)"]
    plt.close(fig)
    fig = plot_degradation(table)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["MEDIUM"]
    plt.close(fig)
