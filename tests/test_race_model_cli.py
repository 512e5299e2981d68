"""`lapnet race train|eval|predict|live` on real races, live == batch, and bad input through the CLI."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lapnet.race.features import DEFAULT_RACE_LAPS, RACE_SECONDS

TRAIN = ("2023_miami_R", "2023_british_R", "2023_belgian_R")
HELD_OUT = "2023_italian_R"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A tiny model trained on three real races (the library call behind `race train`)."""
    from conftest import F1_DATA

    if not F1_DATA.is_dir():
        pytest.skip(f"real F1 data not found at {F1_DATA}")
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    out = tmp_path_factory.mktemp("race") / "run"
    cfg = RaceTrainConfig(hidden_size=16, epochs=6, batch_size=16, patience=None, progress=False, seed=0, members=2,
                          phase_sim=3)
    metrics = train_race([F1_DATA / f"{r}.csv" for r in TRAIN], out, cfg)
    return out, metrics


def test_train_writes_run_and_eval_beats_persistence(real_run, run_cli, f1_data):
    run, train_metrics = real_run
    assert {"model.safetensors", "config.json", "metrics.json", "log.jsonl"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    from lapnet.race.features import FEATURES

    assert config["features"] == list(FEATURES) and "loss" in config["masks"]
    from lapnet.race.models import FreshStart, RaceEnsemble, WithPitCaller
    from lapnet.race.runs import load_run

    assert config["members"] == 2 and len(config["member_val_races"]) == 2
    model = load_run(run).model
    assert isinstance(model, WithPitCaller) and isinstance(model.forecaster, RaceEnsemble)
    assert (run / "members" / "2" / "model.safetensors").is_file()  # member 2 of 2 (member 1 is the run itself)
    # the pit model's L2 was chosen by leave-races-out folds of the training races: the best pooled AUC wins
    from lapnet.race.pit import PitModel

    assert isinstance(model.pit, PitModel)
    pc = config["pit_caller"]
    assert len(pc["inner_auc_by_l2"]) == 7 and pc["inner_auc_by_l2"][f"{pc['l2']:g}"] == max(pc["inner_auc_by_l2"].values())
    code, out, err = run_cli("race", "eval", run, f1_data / f"{HELD_OUT}.csv", "--json", "--quiet")
    assert code == 0, err
    m = json.loads(out)
    assert m["races"] == [HELD_OUT] and "metrics_scored" in m["masks"]
    scored = m["forecast"]["scored"]
    # same laps for every forecaster
    assert len({scored[name]["h1"]["n"] for name in scored}) == 1 and scored["forecaster"]["h1"]["n"] > 500
    assert scored["forecaster"]["h1"]["mae"] < scored["persistence"]["h1"]["mae"]
    trend = m["stint_trend"]  # the degradation forecast against the laps, same origins
    assert trend["all"]["n"] > 100 and {"actual", "forecaster"} <= set(trend["all"]) and "HARD" in trend["by_compound"]
    assert set(scored["forecaster"]["h1"]["by_compound"]) <= {"SOFT", "MEDIUM", "HARD"}
    pit = m["pit_within_3"]
    assert 0.5 < pit["auc"] <= 1.0 and len(pit["calibration"]) >= 2
    assert (run / "eval" / "metrics.json").is_file()
    # out-laps and the start: the FreshStart, kept because its folds beat the nets, beats the
    # race's reference lap (where those forecasts used to start) on the held-out race
    assert config["fresh_start"]["kept"] and isinstance(model.fresh, FreshStart)
    from lapnet.race.features import build_sequences
    from lapnet.race.metrics import eval_mask
    from lapnet.race.inputs import load_laps

    seq = build_sequences(load_laps(f1_data / f"{HELD_OUT}.csv")[0])
    fresh = eval_mask(seq, "fresh")[:, :, 0]
    from_ref = float(np.abs(seq.ref - seq.future[:, :, 0])[fresh].mean())
    got = m["forecast"]["fresh"]["forecaster"]["h1"]
    assert got["n"] == fresh.sum() > 20 and got["mae"] < 0.85 * from_ref  # 1.12 s against 1.51 s when written
    # phases: no labels in real laps, so taggers learnt on 3 simulated races calibrated to the training races
    assert config["phase_source"]["sim_races"] == 3 and not config["phase_trained"]
    assert (run / "tagger" / "model.safetensors").is_file() and (run / "live_tagger" / "model.safetensors").is_file()
    assert config["live_tagger"]["bidirectional"] is False and config["tagger"]["bidirectional"] is True
    pw = config["phase_source"]["pit_window"]  # the live pit-window call comes from the pit call, above this
    assert 0.05 <= pw["threshold"] < 0.8 and 0.0 < pw["train_f1"] <= 1.0
    assert config["pit_threshold"] == pw  # the same threshold draws the pit call in predict's figure
    checks = m["phase_checks"]
    assert "phase_macro_f1" not in m and set(checks) == {"note", "live", "post_race"}
    for c in (checks["live"], checks["post_race"]):
        assert sum(c["share"].values()) == pytest.approx(1.0)
        assert 0.0 <= c["pit_window_auc"] <= 1.0 and c["base_rate"] == pytest.approx(pit["base_rate"])
        assert c["n"] > 100 and 0.0 <= c["push_vs_conserve_auc"] <= 1.0


def test_pit_now_on_the_real_stops_of_a_held_out_race(real_run, run_cli, f1_data):
    """Two laps before each real stop of the held-out race, the what-if for the compound fitted
    forecasts the new tyres' laps better than the old tyres' pace and the field's (the stop is
    what it is about), and `race pit-now` answers for a driver mid-race."""
    from lapnet.race.features import build_sequences
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import load_run, run_net, to_seconds
    from lapnet.race.whatif import CHOICES, pit_now, stop_check, stop_errors

    run, _ = real_run
    r = load_run(run)
    seq = build_sequences(load_laps(f1_data / f"{HELD_OUT}.csv")[0])
    stay = to_seconds(seq, run_net(r.model, seq)["mean"])
    res = stop_check(stop_errors(seq, pit_now(r.model, seq, stay, CHOICES), stay))
    assert res["stops"] >= 15
    laps = res["laps"]
    for h in ("h1", "h5"):
        assert laps["what_if_any_compound"][h]["mae"] < laps["old_tyres_at_t"][h]["mae"]
        assert laps["what_if_at_lap_t"][h]["mae"] < laps["old_tyres_at_t"][h]["mae"]
        assert laps["what_if_at_lap_t"][h]["mae"] < laps["field_pace_at_t"][h]["mae"]
    assert res["stop_cost"]["green"]["n"] >= 10 and res["stop_cost"]["green"]["mae"] < 6.0  # of about 23 s at Monza
    code, out, err = run_cli("race", "pit-now", run, f1_data / f"{HELD_OUT}.csv", "--driver", "VER", "--lap", "15", "--json",
                             "--compound", "all")
    assert code == 0, err
    got = json.loads(out)
    assert got["compound"] == "MEDIUM" and 15 < got["stop_cost_s"] < 35 and not got["under_safety_car"]
    assert all(80 < p["first_lap"] < 95 and p["stop_cost"] == pytest.approx(got["stop_cost_s"]) for p in got["compounds"])


def test_live_pit_now_equals_batch_through_safety_cars(real_run, run_cli, f1_data):
    """Singapore 2023 (a safety car on lap 20, a VSC on lap 44, laps without a LapTime): the
    what-if `race live --pit-now` gives lap by lap is the batch one, the stop costs measured
    under the neutralisations included (nothing from later laps reaches an earlier one)."""
    from lapnet.race.features import build_sequences
    from lapnet.race.inputs import load_laps
    from lapnet.race.runs import load_run, run_net, to_seconds
    from lapnet.race.whatif import CHOICES, pit_now

    run, _ = real_run
    path = f1_data / "2023_singapore_R.csv"
    r = load_run(run)
    seq = build_sequences(load_laps(path)[0])
    what = pit_now(r.model, seq, to_seconds(seq, run_net(r.model, seq)["mean"]), CHOICES)
    code, out, err = run_cli("race", "live", run, path, "--pit-now")
    assert code == 0, err
    got = {(d["driver"], d["lap"]): d["pit_now"] for d in map(json.loads, out.splitlines())}
    neutral = 0
    for i, (_, drv) in enumerate(seq.keys):
        for t in range(int(seq.lengths[i])):
            g = got[(drv, int(seq.lap_number[i, t]))]
            assert (g is None) == (not what.possible[i, t])
            if g is not None:
                assert g["stop_cost_s"] == pytest.approx(what.stop_loss[i, t], abs=2e-3)
                assert g["stop_cost_stops"] == what.stop_stops[i, t]
                np.testing.assert_allclose(g["ANY"]["laps"], what.new[0, i, t][np.isfinite(what.new[0, i, t])], atol=2e-3)
                neutral += g["under_safety_car"]
    assert neutral > 50  # calls under them (FastF1 timed almost no lap 21 there: those stops stay unmeasured)


def test_no_impossible_forecasts_after_a_safety_car_start(real_run, run_cli, f1_data, tmp_path):
    """Las Vegas 2023 ran its first laps behind the safety car: until a lap shows the race's pace
    there is no forecast (no_green_pace_yet, empty cells), and no forecast of the race is more
    than 3% faster than its fastest lap (the first FreshStart forecast some at 0.65 of it)."""
    run, _ = real_run
    code, out, err = run_cli("race", "predict", run, f1_data / "2023_las_vegas_R.csv", "--out", tmp_path / "lv", "--quiet")
    assert code == 0, err
    t = pd.read_csv(tmp_path / "lv" / "predictions.csv")
    fastest = t.loc[t["Scored"], "LapTime"].min()
    assert (t["forecast_h1"].dropna() > 0.97 * fastest).all() and (t["forecast_h10"].dropna() > 0.97 * fastest).all()
    none = t["forecast_from"] == "no_green_pace_yet"
    assert none.sum() >= 20 and t.loc[none, "LapNumber"].max() <= 6 and t.loc[none, "forecast_h1"].isna().all()
    fresh = t["forecast_from"] == "fresh_start"
    assert fresh.sum() > 20 and t.loc[fresh, "forecast_h1"].notna().all()
    m = json.loads((tmp_path / "lv" / "metrics.json").read_text())["fresh_start"]
    assert m["no_forecast"] == none.sum() and m["slower_than_1_3x_fastest"] == 0 and m["forecasts"] > 100


def test_eval_of_several_races_shows_each_race(real_run, run_cli, f1_data):
    """With several races, `by_race` gives each one's numbers, the same as evaluating it alone."""
    run, _ = real_run
    two = [f1_data / f"{HELD_OUT}.csv", f1_data / "2023_qatar_R.csv"]
    code, out, err = run_cli("race", "eval", run, *two, "--json")
    assert code == 0, err
    both = json.loads(out)
    assert set(both["by_race"]) == {"2023_italian_R", "2023_qatar_R"} and "by race" in err
    n = 0
    for path in two:
        code, out, err = run_cli("race", "eval", run, path, "--json", "--quiet")
        assert code == 0, err
        alone = json.loads(out)
        assert "by_race" not in alone
        row, sc = both["by_race"][path.stem], alone["forecast"]["scored"]
        for h in (1, 5, 10):
            assert row[f"mae_h{h}"] == pytest.approx(sc["forecaster"][f"h{h}"]["mae"], abs=1e-6)
            assert row[f"persistence_h{h}"] == pytest.approx(sc["persistence"][f"h{h}"]["mae"], abs=1e-9)
        assert row["pit_auc"] == pytest.approx(alone["pit_within_3"]["auc"], abs=1e-6)
        n += row["n_h1"]
    assert n == both["forecast"]["scored"]["forecaster"]["h1"]["n"]


def _session_ordered_csv(src: Path, dst: Path, keep: int | None = None) -> int:
    """Write a race's raw rows in the order the laps ended (what a live feed delivers)."""
    from lapnet.race.io import read_laps

    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    parsed = read_laps(src)
    order = np.argsort(parsed["Time"].to_numpy(), kind="mergesort")
    raw = raw.iloc[order]
    if keep is not None:
        raw = raw.iloc[:keep]
    raw.to_csv(dst, index=False)
    return int(parsed["LapNumber"].max())


def test_live_equals_batch_predict(real_run, run_cli, f1_data, tmp_path):
    run, _ = real_run
    src = f1_data / "2023_miami_R.csv"  # no generated rows and no non-starter: batch and live see the same laps
    feed = tmp_path / "feed.csv"
    n_laps = _session_ordered_csv(src, feed)
    code, out, err = run_cli("race", "predict", run, src, "--out", tmp_path / "pred", "--quiet")
    assert code == 0, err
    batch = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert (tmp_path / "pred" / "degradation.png").is_file()
    code, out, err = run_cli("race", "live", run, feed, "--race-laps", n_laps)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(batch)
    live = pd.DataFrame([{"Driver": d["driver"], "LapNumber": d["lap"], "h1": d["forecast"]["h1"], "h10": d["forecast"]["h10"],
                          "pit": d["pit_within_3"], "e10": (d.get("expected_next10") or [np.nan] * 10)[9],
                          "live_phase": d["phase"], "from": d["forecast_from"]} for d in lines])
    both = batch.merge(live, on=["Driver", "LapNumber"])
    assert len(both) == len(batch)
    np.testing.assert_allclose(both["h1"], both["forecast_h1"], atol=2e-3, equal_nan=True)  # JSON rounds to 1e-4 s
    np.testing.assert_allclose(both["h10"], both["forecast_h10"], atol=2e-3, equal_nan=True)
    np.testing.assert_allclose(both["pit"], both["pit_prob"], atol=2e-4)
    assert (both["live_phase"] == both["phase_live"]).all()  # the live tagger's call, step by step = in one pass
    assert both["phase"].isin(["push", "conserve", "pit_window"]).all()  # predict's own: the post-race tagger
    # out-laps and lap 1 from the FreshStart, every lap of a stint with a Scored lap from the nets, in both
    assert (both["from"] == both["forecast_from"]).all() and set(both["from"]) == {"stint", "fresh_start"}
    assert (both.loc[both["LapNumber"] == 1, "from"] == "fresh_start").all()
    assert (both.loc[both["Scored"], "from"] == "stint").all()
    if "expected_h10" in both:  # the mean lap too, when the run kept its ExpectedGap
        np.testing.assert_allclose(both["e10"], both["expected_h10"], atol=2e-3, equal_nan=True)
    else:
        assert both["e10"].isna().all()


def test_live_reads_the_race_length_from_a_complete_file(real_run, run_cli, f1_data, tmp_path, monkeypatch):
    """Without --race-laps, a finished race replayed from FILE takes its last timed lap as the
    race length (Monza's generated rows after the flag carry lap 52; the race was 51 laps);
    stdin, which could still be growing, estimates the length from the race's pace, with a
    warning, and every line says which length it used."""
    run, _ = real_run
    feed = tmp_path / "feed.csv"
    _session_ordered_csv(f1_data / f"{HELD_OUT}.csv", feed)
    assert pd.read_csv(feed)["LapNumber"].max() == 52
    code, out, err = run_cli("race", "live", run, feed)
    assert code == 0, err
    assert "race length 51 laps" in err and "assuming" not in err
    code, given, err = run_cli("race", "live", run, feed, "--race-laps", 51)
    assert code == 0, err
    assert out == given
    code, _, err = run_cli("race", "live", run, feed, "--follow", "--race-laps", 0)
    assert code == 2 and "--race-laps" in err
    lines = feed.read_text().splitlines()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines[:41]) + "\n"))  # the first 40 rows, from stdin
    code, out, err = run_cli("race", "live", run, "-")
    assert code == 0, err
    assert "estimating the race length" in err and len(out.splitlines()) == 39  # TSU lap 1 is a generated row
    recs = [json.loads(line) for line in out.splitlines()]
    assert all(r["race_laps_estimated"] for r in recs)
    first_scored = next(i for i, r in enumerate(recs) if r["scored"])
    # lap 1 is never Scored (standing start): the default until a Scored lap gives a reference lap
    assert {r["race_laps"] for r in recs[:first_scored]} == {DEFAULT_RACE_LAPS}
    ref = recs[first_scored]["lap_time"]  # the reference lap after one Scored lap is that lap
    assert recs[first_scored]["race_laps"] == round(RACE_SECONDS / ref) != DEFAULT_RACE_LAPS
    assert 45 <= recs[-1]["race_laps"] <= 65  # Monza: 51 laps, its fast laps make it the worst estimate
    given = [json.loads(line) for line in run_cli("race", "live", run, feed, "--race-laps", 51)[1].splitlines()]
    assert {(r["race_laps"], r["race_laps_estimated"]) for r in given} == {(51, False)}


def test_predict_a_race_still_running(real_run, run_cli, f1_data, tmp_path, monkeypatch):
    """A table cut at lap 30 looks like a 30-lap race unless told: with --race-laps 51 every
    lap gets exactly what the finished race's table gives it, and with --race-laps estimate
    what `race live` says on the same feed without a length."""
    run, _ = real_run
    src = f1_data / f"{HELD_OUT}.csv"
    raw = pd.read_csv(src, dtype=str)
    part = tmp_path / "first30.csv"
    raw[raw["LapNumber"].astype(float) <= 30].to_csv(part, index=False)

    def predict(table, name, *extra):
        code, _, err = run_cli("race", "predict", run, table, "--out", tmp_path / name, "--quiet", *extra)
        assert code == 0, err
        return pd.read_csv(tmp_path / name / "predictions.csv"), json.loads((tmp_path / name / "metrics.json").read_text())

    full, _ = predict(src, "full")
    given, metrics = predict(part, "given", "--race-laps", "51")
    assert metrics["race_length"] == 51
    both = given.merge(full, on=["Driver", "LapNumber"], suffixes=("", "_full"))
    assert len(both) == len(given) > 500
    for col in ("pit_prob", "forecast_h1", "forecast_h10"):
        np.testing.assert_allclose(both[col], both[f"{col}_full"], rtol=1e-6, atol=1e-6)
    cut, metrics = predict(part, "cut")  # the default: the table's last lap, 30
    assert metrics["race_length"] == "file"
    late = cut["LapNumber"] >= 28
    assert np.abs(cut.loc[late, "pit_prob"].to_numpy() - given.loc[late, "pit_prob"].to_numpy()).max() > 0.01

    est, metrics = predict(part, "est", "--race-laps", "estimate")
    assert metrics["race_length"] == "estimate"
    feed = tmp_path / "feed.csv"
    _session_ordered_csv(part, feed)
    monkeypatch.setattr("sys.stdin", io.StringIO(feed.read_text()))
    code, out, err = run_cli("race", "live", run, "-")
    assert code == 0, err
    live = pd.DataFrame([{"Driver": d["driver"], "LapNumber": d["lap"], "pit": d["pit_within_3"]}
                         for d in map(json.loads, out.splitlines())])
    both = est.merge(live, on=["Driver", "LapNumber"])
    assert len(both) == len(est)
    np.testing.assert_allclose(both["pit"], both["pit_prob"], atol=2e-4)  # JSON rounds to 1e-4
    for bad in ("soon", "0"):
        code, _, err = run_cli("race", "eval", run, part, "--race-laps", bad)
        assert code == 2 and "--race-laps" in err and len(err.strip().splitlines()) == 1


def test_live_masks_the_red_flag_restart_as_batch_cleaning_does(real_run, run_cli, f1_data, tmp_path):
    """The restart mask needs each driver's history (a red flag, then the first timed lap):
    live carries it and agrees with batch cleaning on every lap of Sao Paulo 2023."""
    from lapnet.race.inputs import load_laps

    run, _ = real_run
    src = f1_data / "2023_sao_paulo_R.csv"
    feed = tmp_path / "feed.csv"
    _session_ordered_csv(src, feed, keep=200)  # laps 1-10 or so: the red flag is on lap 2
    code, out, err = run_cli("race", "live", run, feed, "--race-laps", 71)
    assert code == 0, err
    live = pd.DataFrame([{"Driver": d["driver"], "LapNumber": d["lap"], "live": d["scored"]} for d in map(json.loads, out.splitlines())])
    laps, _ = load_laps(src)
    both = laps.merge(live, on=["Driver", "LapNumber"])
    assert len(both) == len(live) > 150
    assert (both["live"] == both["Scored"]).all()
    assert int(both["Restart"].sum()) == 30 and not both.loc[both["Restart"], "live"].any()


def test_a_race_as_rough_as_any_2023_race(real_run, run_cli, f1_data, tmp_path):
    """Monza made as hard as the races lapnet never saw (Australia's three red flags, a wet
    spell as at Zandvoort, cells missing, rows in no order): eval, predict and live all run,
    the cleaning names what it masked, and live scores exactly the laps batch scores."""
    from lapnet.race.inputs import load_laps

    run, _ = real_run
    raw = pd.read_csv(f1_data / f"{HELD_OUT}.csv", dtype=str)
    lap = raw["LapNumber"].astype(float)
    for red in (12, 30, 44):  # the red-flag lap of every car: no time, status 1 then 5
        raw.loc[lap == red, ["TrackStatus", "LapTime"]] = ["15", np.nan]
    raw.loc[raw["Driver"].isin(sorted(raw["Driver"].unique())[::3]) & lap.between(20, 26), "Compound"] = "INTERMEDIATE"
    rng = np.random.default_rng(0)
    for col, share in (("LapTime", 0.05), ("Position", 0.05), ("TyreLife", 0.03)):
        raw.loc[rng.random(len(raw)) < share, col] = np.nan
    rough = tmp_path / "rough.csv"
    raw.sample(frac=1.0, random_state=1).to_csv(rough, index=False)

    code, out, err = run_cli("race", "eval", run, rough, "--json", "--quiet")
    assert code == 0, err
    m = json.loads(out)
    masked = m["cleaning"]["masked"]
    assert masked["restart"] >= 3 * 15 and masked["wet"] > 30 and masked["no_time"] > 3 * 19
    scored = m["forecast"]["scored"]
    assert scored["forecaster"]["h1"]["n"] > 300 and np.isfinite(scored["forecaster"]["h1"]["mae"])
    assert scored["forecaster"]["h1"]["mae"] < 1.0 and 0.5 < m["pit_within_3"]["auc"] <= 1.0

    code, _, err = run_cli("race", "predict", run, rough, "--out", tmp_path / "pred", "--quiet")
    assert code == 0, err
    pred = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert len(pred) == m["cleaning"]["rows_out"]
    made = pred["forecast_from"].isin(["stint", "fresh_start"])  # no FreshStart forecast on wet tyres, nor before a green lap
    assert np.isfinite(pred.loc[made, "forecast_h1"]).all() and pred.loc[~made, "forecast_h1"].isna().all()
    assert set(pred.loc[~made, "forecast_from"]) <= {"wet_tyres", "no_green_pace_yet"} and made.mean() > 0.9

    feed = tmp_path / "feed.csv"
    _session_ordered_csv(rough, feed)
    code, out, err = run_cli("race", "live", run, feed, "--race-laps", 51)
    assert code == 0, err
    live = pd.DataFrame([{"Driver": d["driver"], "LapNumber": d["lap"], "live": d["scored"]} for d in map(json.loads, out.splitlines())])
    laps, _ = load_laps(rough)
    both = laps.merge(live, on=["Driver", "LapNumber"])
    assert len(both) == len(live) == len(laps)
    assert (both["live"] == both["Scored"]).all()


def test_live_skips_bad_laps_with_warnings(real_run, run_cli, f1_data, tmp_path, monkeypatch):
    run, _ = real_run
    feed = tmp_path / "feed.csv"
    _session_ordered_csv(f1_data / "2023_miami_R.csv", feed, keep=45)
    lines = feed.read_text().splitlines()
    header, laps = lines[0], lines[1:]
    cols = header.split(",")
    stranger = laps[25].split(",")
    stranger[cols.index("Driver")] = "ZZZ"  # never on the grid at lap 1
    first = laps[5].split(",")[cols.index("Driver")]
    assert any(line.split(",")[cols.index("Driver")] == first for line in laps[20:30])  # its lap 2 comes by line 30
    # a duplicate right away, the same lap again after the driver's next lap, a stranger, junk
    bad = [header, *laps[:6], laps[5], *laps[6:30], laps[5], ",".join(stranger), "not,a,lap", *laps[30:]]
    # on stdin, as a feed (a finished FILE would be replayed in session-time order first)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(bad) + "\n", newline="\n"))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 57)
    assert code == 0, err
    assert len(out.splitlines()) == 46  # 45 laps, each once, and the stranger's; duplicates and junk skipped
    warnings = [w for w in err.splitlines() if "skipped lap" in w]
    assert any(w.endswith(": duplicate lap") for w in warnings)
    # the lap again after the driver's next lap: a re-send of a lap read (not 'out of order', a lap never read)
    assert any(w.endswith(": duplicate lap (a re-send of lap 1, after lap 2)") for w in warnings)
    assert len(warnings) == 3
    assert sum("ZZZ first seen at lap" in w and "joins the race" in w for w in err.splitlines()) == 1


def test_bad_input_one_line_exit_2(real_run, run_cli, tmp_path, f1_data):
    run, _ = real_run
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli("race", "eval", run, empty)
    assert code == 2 and "empty" in err and len(err.strip().splitlines()) == 1

    nocol = tmp_path / "nocol.csv"
    pd.DataFrame({"Driver": ["VER"], "LapNumber": [1.0]}).to_csv(nocol, index=False)
    code, _, err = run_cli("race", "train", nocol, "--out", tmp_path / "r")
    assert code == 2 and "LapTime" in err and len(err.strip().splitlines()) == 1

    garbled = tmp_path / "garbled.csv"
    raw = pd.read_csv(f1_data / "2023_miami_R.csv", dtype=str, nrows=40)
    raw.loc[3, "LapTime"] = "one minute thirty"
    raw.to_csv(garbled, index=False)
    code, _, err = run_cli("race", "eval", run, garbled)
    assert code == 2 and "LapTime" in err and len(err.strip().splitlines()) == 1

    no_green = tmp_path / "nogreen.csv"
    raw = pd.read_csv(f1_data / "2023_miami_R.csv", dtype=str, nrows=60)
    raw["TrackStatus"] = "4"  # a whole table behind the safety car
    raw.to_csv(no_green, index=False)
    code, _, err = run_cli("race", "eval", run, no_green)
    assert code == 2 and "no usable green laps" in err

    other = tmp_path / "other_run"
    other.mkdir()
    for f in ("model.safetensors", "metrics.json"):
        (other / f).write_bytes((run / f).read_bytes())
    config = json.loads((run / "config.json").read_text())
    config["features"] = config["features"][:-1] + ["mystery_feature"]
    (other / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli("race", "eval", other, f1_data / f"{HELD_OUT}.csv")
    assert code == 2 and "other features" in err and "mystery_feature" in err
    # a run trained before last_vs_base and recent_1 (both always 0) were dropped: one line, retrain
    from test_race_model_features import _features_before_prev

    config["features"] = _features_before_prev()
    (other / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli("race", "predict", other, f1_data / f"{HELD_OUT}.csv", "--out", tmp_path / "old_pred")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "last_vs_base" in err and "retrain" in err
    assert not (tmp_path / "old_pred").exists()

    code, _, err = run_cli("race", "live", run, "-", "--follow")
    assert code == 2 and "--follow" in err


def test_help_states_the_masks(run_cli):
    for cmd in ("train", "eval", "predict"):
        code, out, _ = run_cli("race", cmd, "--help")
        assert code == 0 and "Scored" in out and "in-lap" in out


def test_pretrain_sim_then_real_and_tagger(run_cli, f1_data, tmp_path):
    """--pretrain-sim: a short pretraining on calibrated simulated races, then the real race;
    the phase head learned on the simulator gives predict a phase column."""
    out = tmp_path / "run"
    code, _, err = run_cli("race", "train", f1_data / "2023_miami_R.csv", "--out", out, "--pretrain-sim", 2,
                           "--phase-sim", 0, "--epochs", 1, "--hidden", 8, "--quiet")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["pretrain"]["sim_races"] == 2 and config["phase_trained"]
    code, _, err = run_cli("race", "predict", out, f1_data / "2023_miami_R.csv", "--driver", "VER", "--out", tmp_path / "p", "--quiet")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert set(table["Driver"]) == {"VER"} and table["phase"].isin(["push", "conserve", "pit_window"]).all()
    assert (tmp_path / "p" / "forecast_2023_miami_R_VER.png").is_file()


def test_sim_trained_run_has_bidirectional_tagger(tmp_path):
    from lapnet.race.evaluation import eval_race
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.simulate import simulate

    sim = simulate(3, seed=5)
    m = train_race(sim, tmp_path / "run", RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False))
    assert (tmp_path / "run" / "tagger" / "model.safetensors").is_file()
    assert set(m["validation"]["phase_macro_f1"]) == {"live", "post_race"}
    ev = eval_race(tmp_path / "run", simulate(1, seed=99))
    assert 0.0 <= ev["phase_macro_f1"]["post_race"] <= 1.0


def test_train_device_option(run_cli, tmp_path):
    """--device: auto resolves to what the machine has and is recorded in config.json; a device
    the machine lacks or an unknown name is one line and exit 2, before anything is written."""
    import torch

    from lapnet.race.simulate import simulate_to_file

    laps = tmp_path / "sim.csv"
    simulate_to_file(laps, 3, seed=4)
    out = tmp_path / "run"
    code, _, err = run_cli("race", "train", laps, "--out", out, "--device", "auto", "--epochs", 1, "--hidden", 8, "--quiet")
    assert code == 0, err
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert json.loads((out / "config.json").read_text())["train"]["device"] == expected
    code, _, err = run_cli("race", "predict", out, laps, "--out", tmp_path / "p", "--quiet")
    assert code == 0, err

    for bad, words in (("tpu", "expected auto, cpu or cuda"), ("cuda", "no CUDA device")):
        if bad == "cuda" and torch.cuda.is_available():
            continue
        code, _, err = run_cli("race", "train", laps, "--out", tmp_path / f"r_{bad}", "--device", bad, "--epochs", 1)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / f"r_{bad}").exists()


def test_learning_rates_out_of_range_or_diverging(run_cli, tmp_path):
    """--lr 1e300 was refused only after the run directory was made and marked unfinished; a
    diverging run said 'the last good checkpoint is kept' of a run that cannot be resumed, and
    left its last.safetensors."""
    from lapnet.race.simulate import simulate_to_file

    laps = tmp_path / "sim.csv"
    simulate_to_file(laps, 3, seed=4)
    code, _, err = run_cli("race", "train", laps, "--out", tmp_path / "a", "--lr", "1e300")
    assert code == 2 and err.startswith("lapnet: error: --lr must be a positive number within float32's range")
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    code, _, err = run_cli("race", "train", laps, "--out", out, "--lr", "1e8", "--hidden", 8, "--epochs", 4,
                           "--phase-sim", 0, "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "became inf" in lines[0], err
    assert "cannot be resumed" in lines[0] and "--force" in lines[0] and "kept" not in lines[0]
    assert (out / "training.incomplete").is_file() and not (out / "last.safetensors").exists()
    code, _, err = run_cli("race", "eval", out, laps)
    assert code == 2 and "unfinished" in err


@pytest.fixture(scope="module")
def sim_tables(tmp_path_factory, sim_races):
    """Three simulated races, each in its own file, and a tiny run trained on races 0 and 1."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    _, parts = sim_races
    run = tmp_path_factory.mktemp("simrun") / "run"
    train_race(parts[:2], run, RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False))
    return run, parts


def test_a_training_race_with_no_green_laps_is_a_warning(run_cli, sim_tables, tmp_path):
    """A race run entirely behind the safety car trains nothing; it is named, and training goes on."""
    _, parts = sim_tables
    sc = pd.read_csv(parts[0], dtype={"TrackStatus": str})
    sc["TrackStatus"] = "4"
    sc_path = tmp_path / "all_sc.csv"
    sc.to_csv(sc_path, index=False)
    out = tmp_path / "run"
    code, _, err = run_cli("race", "train", sc_path, parts[1], "--out", out, "--epochs", 1, "--hidden", 4, "--quiet")
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("lapnet: warning:")]
    assert len(warn) == 1 and "race 'all_sc' has no usable green laps" in warn[0], err
    assert "Traceback" not in err and (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["val_races"] != ["all_sc"]


def test_eval_of_laps_without_a_stop_warns_and_writes_a_null_auc(run_cli, sim_tables, tmp_path):
    """A table with no pit stop (a sprint) cannot score the pit call: one warning line, and the
    AUC is null in strict JSON on stdout and in metrics.json, not a bare NaN."""
    run, parts = sim_tables
    df = pd.read_csv(parts[2], dtype={"TrackStatus": str})
    df = df[(df["Stint"] == 1) & df["PitInTime"].isna()]  # every driver's first stint, in-laps cut
    sprint = tmp_path / "sprint.csv"
    df.to_csv(sprint, index=False)

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    code, out, err = run_cli("race", "eval", run, sprint, "--json", "--quiet", "--out", tmp_path / "ev")
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("lapnet: warning:")]
    assert len(warn) == 1 and "none of these" in warn[0] and "pit call cannot be scored" in warn[0], err
    for text in (out, (tmp_path / "ev" / "metrics.json").read_text()):
        m = json.loads(text, parse_constant=refuse)
        assert m["pit_within_3"]["auc"] is None and m["pit_within_3"]["base_rate"] == 0.0
        assert m["forecast"]["scored"]["forecaster"]["h1"]["mae"] > 0


def test_training_on_a_race_without_stops_warns(run_cli, sim_tables, tmp_path):
    """A sprint (no stop at all) among the training races is named once: the pit call would learn
    there that a due stop never comes."""
    _, parts = sim_tables
    df = pd.read_csv(parts[2], dtype={"TrackStatus": str})
    sprint = tmp_path / "sprint.csv"
    df[(df["Stint"] == 1) & df["PitInTime"].isna()].to_csv(sprint, index=False)
    code, _, err = run_cli("race", "train", parts[0], sprint, "--out", tmp_path / "run", "--epochs", 1, "--hidden", 4,
                           "--quiet")
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if "no pit stop at all" in ln]
    assert len(warn) == 1 and "race 'sprint'" in warn[0] and warn[0].startswith("lapnet: warning:"), err
    assert parts[0].stem not in warn[0]


def test_eval_warns_about_a_race_the_run_trained_on(run_cli, sim_tables, tmp_path):
    """Told by the race's laps, not its name: a renamed copy is caught, another race is not."""
    run, parts = sim_tables
    code, _, err = run_cli("race", "eval", run, parts[0], "--quiet")
    assert code == 0 and f"{parts[0].stem} were among the run's training races" in err, err
    renamed = tmp_path / "renamed.csv"
    renamed.write_bytes(parts[1].read_bytes())
    code, _, err = run_cli("race", "eval", run, renamed, "--quiet")
    assert code == 0 and "race(s) renamed were among the run's training races" in err, err
    code, _, err = run_cli("race", "eval", run, parts[2], "--quiet")
    assert code == 0 and "training races" not in err, err


def test_practice_warning_is_one_line_in_every_command(run_cli, sim_tables, tmp_path):
    run, parts = sim_tables
    df = pd.read_csv(parts[2], dtype={"TrackStatus": str})
    df["Position"] = float("nan")  # FastF1 gives no positions outside races
    fp = tmp_path / "fp2.csv"
    df.to_csv(fp, index=False)
    for args in (("predict", run, fp, "--out", tmp_path / "p", "--quiet"), ("eval", run, fp, "--quiet")):
        code, _, err = run_cli("race", *args)
        assert code == 0, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lapnet: warning:") and "practice or qualifying" in lines[0], err


def test_live_skips_a_line_broken_by_a_carriage_return(run_cli, sim_tables, monkeypatch):
    """A stray \\r inside a line (the FastF1 CSVs end lines with \\r\\n) is one skipped lap, not a crash."""
    run, _ = sim_tables
    feed = "Driver,LapNumber,LapTime\nVER,1,90.1\nVER,2,90.2\rjunk\nVER,3,90.3\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(feed, newline="\n"))  # as Python opens stdin on POSIX
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 50)
    assert code == 0, err
    assert [json.loads(ln)["lap"] for ln in out.splitlines()] == [1, 3]
    assert "lapnet: warning: line 3: skipped lap: unreadable CSV line" in err


def test_live_errors_stay_one_line_with_the_race_length_note(run_cli, sim_tables, tmp_path):
    """The note on the race length comes after the run and the header are read: an error before stays one line."""
    _, parts = sim_tables
    broken = tmp_path / "broken_run"
    broken.mkdir()
    code, _, err = run_cli("race", "live", broken, parts[2])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lapnet: error:"), err


def test_more_bad_input_one_line(run_cli, sim_tables, tmp_path):
    run, parts = sim_tables
    for opt, v in (("--lr", -1), ("--lr", "nan"), ("--minutes", "inf")):
        out = tmp_path / f"r{opt}{v}"
        code, _, err = run_cli("race", "train", parts[0], "--out", out, opt, v)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and (f"{opt} must be a positive number" in lines[0] or f"{opt} must be a finite positive number" in lines[0]), err
        assert not out.exists()  # refused before anything is written

    code, _, err = run_cli("race", "train", parts[0], "--out", tmp_path / "neg", "--phase-sim", -1)
    assert code == 2 and err.strip() == "lapnet: error: --phase-sim must be >= 0, got -1" and not (tmp_path / "neg").exists()

    latin = tmp_path / "latin1.csv"
    latin.write_bytes("Driver,LapNumber,LapTime\nPÉR,1,90.1\n".encode("latin-1"))
    code, _, err = run_cli("race", "live", run, latin, "--race-laps", 5)
    assert code == 2 and err.strip() == f"lapnet: error: {latin}: not UTF-8 text (invalid continuation byte: b'\\xc9')", err

    shuffled = tmp_path / "shuffled_run"
    shuffled.mkdir()
    for f in ("model.safetensors", "metrics.json"):
        (shuffled / f).write_bytes((run / f).read_bytes())
    config = json.loads((run / "config.json").read_text())
    config["features"] = config["features"][::-1]
    (shuffled / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli("race", "eval", shuffled, parts[2])
    assert code == 2 and "the same ones in another order" in err, err


def test_phase_taggers_for_laps_without_labels(tmp_path, monkeypatch):
    """Laps without Phase labels get taggers learnt on calibrated simulated races; if the
    simulator cannot be calibrated to them, the trained forecaster is kept, without phases."""
    import warnings

    from lapnet.errors import LapnetError
    from lapnet.race import training
    from lapnet.race.evaluation import eval_race
    from lapnet.race.runs import load_run
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.simulate import simulate

    laps = simulate(3, seed=11).drop(columns=["Phase"])  # as real data comes: no phase labels
    cfg = RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False, phase_sim=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the simulated races it makes itself raise no warning
        m = train_race(laps, tmp_path / "run", cfg)
    run = load_run(tmp_path / "run")
    assert run.live_tagger is not None and run.tagger is not None and not run.config["phase_trained"]
    assert run.config["phase_source"]["sim_races"] == 2 and set(m["validation"]["phase_checks"]) == {"note", "live", "post_race"}
    ev = eval_race(tmp_path / "run", simulate(1, seed=12))  # labelled laps: scored against the truth instead
    assert set(ev["phase_macro_f1"]) == {"live", "post_race"} and "phase_checks" not in ev

    def cannot(*args, **kwargs):
        raise LapnetError("calibrate: no usable green laps on dry compounds")

    monkeypatch.setattr(training, "simulate_calibrated", cannot)
    with pytest.warns(UserWarning, match="no phase calls: the simulator could not be calibrated"):
        m = train_race(laps, tmp_path / "run2", cfg)
    run = load_run(tmp_path / "run2")
    assert run.tagger is None and run.live_tagger is None and "phase_checks" not in m["validation"]
    assert (tmp_path / "run2" / "model.safetensors").is_file()


def test_live_driver_filter_prints_only_those_drivers_with_the_same_numbers(run_cli, sim_tables):
    """`--driver` filters the output only: every lap still feeds the field's features."""
    run, parts = sim_tables
    code, out, err = run_cli("race", "live", run, parts[2])
    assert code == 0, err
    every = [json.loads(ln) for ln in out.splitlines()]
    drivers = sorted({p["driver"] for p in every})
    pick = drivers[:2]
    code, out, err = run_cli("race", "live", run, parts[2], "--driver", ",".join(d.lower() for d in pick))
    assert code == 0, err
    assert [json.loads(ln) for ln in out.splitlines()] == [p for p in every if p["driver"] in pick]

    code, out, err = run_cli("race", "live", run, parts[2], "--driver", f"{pick[0]},ZZZ")
    assert code == 0 and {json.loads(ln)["driver"] for ln in out.splitlines()} == {pick[0]}
    assert err.strip().splitlines()[-1].startswith("lapnet: warning: --driver ZZZ: no lap in the stream"), err

    code, out, err = run_cli("race", "live", run, parts[2], "--driver", "ZZZ")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and lines[-1].startswith("lapnet: error: --driver ZZZ: no lap in the stream"), err
    code, _, err = run_cli("race", "live", run, parts[2], "--driver", " , ")
    assert code == 2 and "give driver codes" in err


def _by_driver(path: Path, dest: Path) -> Path:
    """The race's laps listed driver by driver, as FastF1's `Laps.to_csv` writes them."""
    df = pd.read_csv(path, dtype={"TrackStatus": str})
    df.sort_values(["Driver", "LapNumber"], kind="mergesort").to_csv(dest, index=False)
    return dest


def test_live_replays_a_file_listed_by_driver_in_the_order_laps_ended(run_cli, sim_tables, tmp_path, monkeypatch):
    """A finished FILE is replayed by session Time (a feed's order); on stdin the same disorder is warned once."""
    run, parts = sim_tables
    df = pd.read_csv(parts[2], dtype={"TrackStatus": str})
    timed = tmp_path / "by_time.csv"
    df.sort_values("Time", kind="mergesort").to_csv(timed, index=False)
    code, out, err = run_cli("race", "live", run, timed)
    assert code == 0, err
    in_order = out.splitlines()
    assert "replayed by session Time" not in err  # already in the order laps ended: kept as given
    by_driver = _by_driver(parts[2], tmp_path / "by_driver.csv")
    code, out, err = run_cli("race", "live", run, by_driver)
    assert code == 0, err
    assert "replayed by session Time" in err and "past the race length" not in err
    assert out.splitlines() == in_order  # the same laps, the same numbers, in the same order

    monkeypatch.setattr("sys.stdin", io.StringIO(by_driver.read_text(), newline="\n"))
    code, out, err = run_cli("race", "live", run, "-", "--race-laps", 200)
    assert code == 0, err
    order = [ln for ln in err.splitlines() if "must come in the order they end" in ln]
    assert len(order) == 1 and order[0].startswith("lapnet: warning: line ") and "sort the feed by Time" in order[0]
    assert sorted(out.splitlines()) != sorted(in_order)  # fed out of order, the field each lap reads is another


def test_live_warns_once_when_the_race_runs_past_the_given_length(run_cli, sim_tables):
    run, parts = sim_tables
    code, out, err = run_cli("race", "live", run, parts[2], "--race-laps", 5)
    assert code == 0, err
    past = [ln for ln in err.splitlines() if "past the race length given (5 laps)" in ln]
    assert len(past) == 1 and past[0].startswith("lapnet: warning: line ")
    preds = [json.loads(ln) for ln in out.splitlines()]
    assert all(p["race_laps"] >= p["lap"] for p in preds)  # the race fraction never passes 1
    assert max(p["race_laps"] for p in preds) == max(p["lap"] for p in preds)


def test_live_skip_warnings_name_the_input_line(run_cli, sim_tables, tmp_path):
    run, parts = sim_tables
    lines = parts[2].read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], "garbage,,", *lines[2:6]]) + "\n")
    code, out, err = run_cli("race", "live", run, bad, "--race-laps", 50)
    assert code == 0, err
    assert any(ln.startswith("lapnet: warning: line 3: skipped lap:") for ln in err.splitlines()), err
    assert len(out.splitlines()) == 5


def test_live_on_a_header_alone_says_one_line(run_cli, sim_tables, tmp_path):
    run, parts = sim_tables
    only = tmp_path / "header.csv"
    only.write_text(parts[2].read_text().splitlines()[0] + "\n")
    code, out, err = run_cli("race", "live", run, only, "--race-laps", 50)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and "no usable laps" in lines[0], err


def test_live_follow_waits_for_a_file_that_is_still_empty(run_cli, sim_tables, tmp_path):
    """--follow on an empty file waits for the header (the feed has not started yet)."""
    import threading
    import time

    run, parts = sim_tables
    lines = parts[2].read_text().splitlines(keepends=True)
    grow = tmp_path / "grow.csv"
    grow.write_text("")

    def feed():
        import _thread

        try:
            time.sleep(0.3)
            with open(grow, "a") as f:
                f.write(lines[0][:10])  # half a header
                f.flush()
                time.sleep(0.3)
                f.write(lines[0][10:] + "".join(lines[1:4]))
            deadline = time.monotonic() + 60  # wait for the three JSON lines (capsys's stdout), however slow the machine
            while sys.stdout.getvalue().count("\n") < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            _thread.interrupt_main()  # Ctrl-C: how a --follow session ends (also if this thread fails)

    threading.Thread(target=feed, daemon=True).start()
    code, out, err = run_cli("race", "live", run, grow, "--follow", "--race-laps", 50, "--poll", 0.05)
    assert code == 130 and err.strip().splitlines()[-1] == "lapnet: error: interrupted", err  # ended by Ctrl-C
    assert [json.loads(ln)["driver"] for ln in out.splitlines()] == [ln.split(",")[1] for ln in lines[1:4]]


def test_a_directory_given_as_a_lap_table_is_named_so(run_cli, sim_tables, tmp_path):
    run, _ = sim_tables
    d = tmp_path / "races"
    d.mkdir()
    for args in (("train", d, "--out", tmp_path / "r"), ("eval", run, d), ("predict", run, d), ("live", run, d, "--follow")):
        code, _, err = run_cli("race", *args)
        assert code == 2 and err.strip() == f"lapnet: error: {d}: is a directory, not a lap table (give CSV or Parquet files)", err
    assert not (tmp_path / "r").exists()


def test_eval_and_predict_device_option(run_cli, sim_tables, tmp_path):
    """--device cpu runs eval and predict (same numbers as the default); a device the machine
    lacks is one line and exit 2, before anything is written."""
    import torch

    run, parts = sim_tables
    code, out, err = run_cli("race", "eval", run, parts[2], "--device", "cpu", "--json", "--quiet", "--out", tmp_path / "e")
    assert code == 0, err
    code, out2, err = run_cli("race", "eval", run, parts[2], "--json", "--quiet", "--out", tmp_path / "e2")
    assert code == 0, err
    assert json.loads(out)["summary"] == json.loads(out2)["summary"]
    code, _, err = run_cli("race", "predict", run, parts[2], "--device", "cpu", "--quiet", "--out", tmp_path / "p")
    assert code == 0, err
    assert (tmp_path / "p" / "predictions.csv").is_file()
    bad = [("tpu", "expected auto, cpu or cuda")] + ([] if torch.cuda.is_available() else [("cuda", "no CUDA device")])
    for device, words in bad:
        for cmd in ("eval", "predict"):
            dest = tmp_path / f"{cmd}_{device}"
            code, _, err = run_cli("race", cmd, run, parts[2], "--device", device, "--out", dest)
            assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
            assert not dest.exists()
    code, _, err = run_cli("race", "live", run, parts[2], "--device", "cpu")  # live steps on the CPU: no such option
    assert code == 2 and "--device" in err


# ---------------------------------------------------------------------------------------
# an F1 analyst's review (items 2, 4, 8, 9, 10, 12, the MAE table's '-'); the runs above


def _error_line(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lapnet: error:"), err
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_predict_and_eval_replace_only_what_they_wrote(run_cli, sim_tables, tmp_path):
    """2. A file predict or eval did not write is refused without --force, named, and left as it
    was; an earlier call's own files are replaced; files of other names are never touched."""
    import matplotlib.pyplot as plt

    run, parts = sim_tables
    mine = tmp_path / "mydir"
    mine.mkdir()
    fig = plt.figure()
    fig.savefig(mine / "forecast_my_analysis.png")
    plt.close(fig)
    (mine / "predictions.csv").write_text("driver,notes\n")
    before = _files(mine)
    line = _error_line(*run_cli("race", "predict", run, parts[2], "--driver", "VER", "--out", mine, "--quiet")[::2])
    assert "predictions.csv already exists and was not written by an earlier lapnet race predict (use --force" in line
    assert _files(mine) == before
    code, _, err = run_cli("race", "predict", run, parts[2], "--driver", "VER", "--out", mine, "--quiet", "--force")
    assert code == 0, err
    after = _files(mine)
    assert after["forecast_my_analysis.png"] == before["forecast_my_analysis.png"]  # not predict's name: kept
    assert set(after) == {"forecast_my_analysis.png", "predictions.csv", "metrics.json", "degradation.png",
                          f"forecast_{parts[2].stem}_VER.png"}
    m = json.loads((mine / "metrics.json").read_text())
    assert m["written"] == {"by": "lapnet race predict", "files": ["predictions.csv", f"forecast_{parts[2].stem}_VER.png",
                                                                  "degradation.png", "metrics.json"]}
    # again, another driver: the earlier call's files are its own and go; the user's png stays
    code, _, err = run_cli("race", "predict", run, parts[2], "--driver", "HAM", "--out", mine, "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in mine.glob("forecast_*.png")) == ["forecast_my_analysis.png", f"forecast_{parts[2].stem}_HAM.png"]
    # without the record (metrics.json gone) predict's files are still known: the figures' PNG mark,
    # predictions.csv's header (the library call writes no metrics.json)
    (mine / "metrics.json").unlink()
    from lapnet.race.prediction import predict_race

    predict_race(run, parts[2], driver="LEC", out=mine)
    assert sorted(p.name for p in mine.glob("forecast_*.png")) == ["forecast_my_analysis.png", f"forecast_{parts[2].stem}_LEC.png"]
    code, _, err = run_cli("race", "predict", run, parts[2], "--driver", "lec", "--out", mine, "--quiet")
    assert code == 0 and (mine / "metrics.json").is_file(), err
    # a user's file under a figure's name is refused too, before the nets run
    fig = plt.figure()
    fig.savefig(mine / f"forecast_{parts[2].stem}_VER.png")
    plt.close(fig)
    line = _error_line(*run_cli("race", "predict", run, parts[2], "--driver", "VER,HAM", "--out", mine, "--quiet")[::2])
    assert f"forecast_{parts[2].stem}_VER.png already exists and was not written" in line
    # eval: a metrics.json of someone else's (or a run's, or predict's) is refused; its own is replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text("x\n")
    line = _error_line(*run_cli("race", "eval", run, parts[2], "--out", other, "--quiet")[::2])
    assert "metrics.json already exists and was not written by an earlier lapnet race eval (use --force" in line
    assert (other / "metrics.json").read_text() == "x\n"
    line = _error_line(*run_cli("race", "eval", run, parts[2], "--out", mine, "--quiet")[::2])  # predict's
    assert "lapnet race eval" in line
    line = _error_line(*run_cli("race", "eval", run, parts[2], "--out", run, "--quiet")[::2])  # the run's own
    assert "metrics.json already exists" in line and "validation" in json.loads((run / "metrics.json").read_text())
    for args in (("--force",), ()):  # forced once, then its own
        code, _, err = run_cli("race", "eval", run, parts[2], "--out", other, "--quiet", *args)
        assert code == 0, err
    assert json.loads((other / "metrics.json").read_text())["written"] == {"by": "lapnet race eval", "files": ["metrics.json"]}


def test_eval_out_is_a_directory_not_a_json_file(run_cli, sim_tables, tmp_path, monkeypatch):
    """9. --out evq.json would become a directory of that name: refused with a hint."""
    run, parts = sim_tables
    monkeypatch.chdir(tmp_path)
    line = _error_line(*run_cli("race", "eval", run, parts[2], "--out", "evq.json")[::2])
    assert line == "lapnet: error: --out evq.json: a directory, which receives metrics.json: give a folder (e.g. --out evq)"
    assert not (tmp_path / "evq.json").exists()
    _error_line(*run_cli("race", "predict", run, parts[2], "--out", "p.csv")[::2])
    assert list(tmp_path.iterdir()) == []
    _, out, _ = run_cli("race", "eval", "--help")
    assert "Directory to write metrics.json into" in " ".join(out.split())


def test_eval_refuses_the_same_race_twice(run_cli, sim_tables, tmp_path):
    """4. The same race under two names would count twice: refused, naming both files."""
    run, parts = sim_tables
    copy = tmp_path / "copy.csv"
    copy.write_bytes(parts[2].read_bytes())
    line = _error_line(*run_cli("race", "eval", run, parts[2], copy, "--out", tmp_path / "e")[::2])
    assert f"{parts[2]} (race '{parts[2].stem}') and {copy} (race 'copy') hold the same race's laps" in line
    assert not (tmp_path / "e").exists()


def test_eval_knows_a_part_of_a_training_race_and_saves_it(run_cli, sim_tables, tmp_path):
    """8. The first 30 laps, or three drivers, of a training race are in-sample too (told by the
    laps), said on stderr and saved in metrics.json; another race is not."""
    run, parts = sim_tables
    df = pd.read_csv(parts[0], dtype={"TrackStatus": str})
    first = tmp_path / "first30.csv"
    df[df["LapNumber"] <= 30].to_csv(first, index=False)
    three = tmp_path / "three.csv"
    df[df["Driver"].isin(sorted(df["Driver"].unique())[:3])].to_csv(three, index=False)
    assert (run / "training_laps.json").is_file()
    for part in (first, three):
        code, out, err = run_cli("race", "eval", run, part, "--json", "--quiet", "--out", tmp_path / part.stem)
        assert code == 0, err
        m = json.loads(out)
        timed = int(pd.read_csv(part)["LapTime"].notna().sum())
        assert m["in_sample"] == {part.stem: {"training_race": parts[0].stem, "laps": timed, "of": timed}}
        assert m["in_sample_check"] == "laps"
        assert f"race(s) {part.stem} were among the run's training races" in err
        assert json.loads((tmp_path / part.stem / "metrics.json").read_text())["in_sample"] == m["in_sample"]
    code, out, err = run_cli("race", "eval", run, parts[2], first, "--json", "--quiet", "--out", tmp_path / "both")
    assert code == 0, err
    m = json.loads(out)
    assert set(m["in_sample"]) == {"first30"} and m["by_race"]["first30"]["in_sample"] is True
    assert m["by_race"][parts[2].stem]["in_sample"] is False
    # the held-out race's own headline, apart from the pooled numbers the in-sample race is mixed into
    held = {k: v for k, v in m["held_out"].items() if k != "races"}
    assert m["held_out"]["races"] == [parts[2].stem] and held == {k: v for k, v in m["by_race"][parts[2].stem].items()
                                                                 if k != "in_sample"}
    assert held["n_h1"] < m["forecast"]["scored"]["forecaster"]["h1"]["n"]
    code, out, err = run_cli("race", "eval", run, parts[2], first, "--out", tmp_path / "both", "--force")
    assert code == 0 and "held-out races only (1 of 2" in out + err
    code, out, err = run_cli("race", "eval", run, parts[2], "--json", "--quiet", "--out", tmp_path / "one")
    assert "held_out" not in json.loads(out)  # nothing in-sample: the pooled numbers are the held-out ones


def test_predict_table_is_whole_when_piped(run_cli, sim_tables, tmp_path):
    """10. Not a terminal: the forecasts table is printed whole (no 'driv…'), probabilities rounded."""
    run, parts = sim_tables
    code, _, err = run_cli("race", "predict", run, parts[2], "--driver", "ver", "--out", tmp_path / "p")
    assert code == 0, err
    assert "…" not in err, err
    head = next(ln for ln in err.splitlines() if "driver" in ln and "pit<=3" in ln)
    assert all(h in head for h in ("lap", "tyre", "time", "next", "+5", "+10", "phase"))
    table = pd.read_csv(tmp_path / "p" / "predictions.csv")
    rows = [ln for ln in err.splitlines() if ln.startswith("│") and " VER " in ln]
    assert len(rows) == min(40, len(table))
    last = rows[-1].strip("│").split("│")
    assert last[7].strip() == f"{table['pit_prob'].iloc[-1]:.2f}"


def test_predict_drivers_by_list_number_and_classification(run_cli, sim_tables, tmp_path):
    """12. --driver takes a comma list in any case and car numbers; without it the figures are
    the top 6 of the final classification (most laps, then the last lap's Position)."""
    run, parts = sim_tables
    df = pd.read_csv(parts[2], dtype={"TrackStatus": str, "DriverNumber": str})
    num = df.loc[df["Driver"] == "HAM", "DriverNumber"].iloc[0]
    code, out, err = run_cli("race", "predict", run, parts[2], "--driver", f"ver,{num}", "--out", tmp_path / "two",
                             "--quiet", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["drivers"] == ["VER", "HAM"] and m["driver"] == "VER,HAM"
    assert set(pd.read_csv(tmp_path / "two" / "predictions.csv")["Driver"]) == {"VER", "HAM"}
    assert sorted(p.name for p in (tmp_path / "two").glob("forecast_*.png")) == [
        f"forecast_{parts[2].stem}_HAM.png", f"forecast_{parts[2].stem}_VER.png"]
    code, out, err = run_cli("race", "predict", run, parts[2], "--out", tmp_path / "all", "--quiet", "--json")
    assert code == 0, err
    last = df.sort_values("LapNumber").groupby("Driver").tail(1)
    top = last.sort_values(["LapNumber", "Position"], ascending=[False, True])["Driver"].head(6).tolist()
    figs = json.loads(out)["figures"]
    assert [Path(f).name for f in figs] == [f"forecast_{parts[2].stem}_{d}.png" for d in top] + ["degradation.png"]
    assert any(f"figures for the first 6 of 20 drivers in the final classification only ({', '.join(top)})" in s
               for s in json.loads(out)["notes"])
    _, help_text, _ = run_cli("race", "predict", "--help")
    assert "first 6 of the final classification" in " ".join(help_text.split())


def test_predict_mae_table_says_dash_without_scored_pairs(run_cli, sim_tables, tmp_path):
    """A driver with a few Scored laps has next-lap pairs but none 5 or 10 laps apart: '-', not None."""
    run, parts = sim_tables
    df = pd.read_csv(parts[2], dtype={"TrackStatus": str})
    ver = df["Driver"] == "VER"
    keep = ver & df["LapNumber"].between(5, 8)  # four Scored laps in a row (lap t and t+1 Scored; no t+5)
    assert df.loc[keep, "PitInTime"].isna().all() and df.loc[keep, "PitOutTime"].isna().all()
    df.loc[ver & ~keep, "TrackStatus"] = "4"
    path = tmp_path / "few.csv"
    df.to_csv(path, index=False)
    code, out, err = run_cli("race", "predict", run, path, "--driver", "VER", "--out", tmp_path / "p", "--json")
    assert code == 0, err
    row = next(r for r in json.loads(out)["summary"] if r["forecaster"] == "forecaster")
    assert row["mae_h1"] is not None and row["mae_h10"] is None
    line = next(ln for ln in err.splitlines() if ln.startswith("│") and " forecaster " in ln)
    assert line.split("│")[4].strip() == "-" and "None" not in err


def test_predict_of_a_driver_without_scored_laps_draws_no_empty_legend(run_cli, real_run, f1_data, tmp_path):
    """11. Mexico 2023: PER went out on lap 1, no Scored lap: no matplotlib legend warning, a note;
    without --driver, the figures are the race's top 6 (VER, HAM, LEC, SAI, NOR, RUS)."""
    run, _ = real_run
    src = f1_data / "2023_mexico_city_R.csv"
    code, out, err = run_cli("race", "predict", run, src, "--driver", "per", "--out", tmp_path / "per", "--json")
    assert code == 0, err
    assert "legend" not in err and "warning" not in err, err
    assert any(s.startswith("PER: no Scored lap") for s in json.loads(out)["notes"])
    code, out, err = run_cli("race", "predict", run, src, "--out", tmp_path / "all", "--json", "--quiet")
    assert code == 0, err
    assert [Path(f).stem.split("_")[-1] for f in json.loads(out)["figures"][:-1]] == ["VER", "HAM", "LEC", "SAI", "NOR", "RUS"]
