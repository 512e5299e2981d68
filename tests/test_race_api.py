"""The race Python API (issues 5 and 10), from a review of its library calls: a bad
RaceTrainConfig leaves a run alone, LiveRace.push takes read_laps rows, predict_race's
files, LiveRace's arguments, FastF1's generated rows live as in batch, and io's inputs."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.race.training import train_race
from lapnet.race.training_config import RaceTrainConfig

TINY = dict(hidden_size=8, epochs=1, members=1, phase_sim=0, progress=False)


@pytest.fixture(scope="module")
def sim(tmp_path_factory, sim_races):
    """Three simulated races, each in its own file, and a tiny run trained on races 0 and 1."""
    _, parts = sim_races
    run = tmp_path_factory.mktemp("api") / "run"
    train_race(parts[:2], run, RaceTrainConfig(**TINY))
    return {"run": run, "parts": parts}


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------
# 1. a bad RaceTrainConfig is refused before anything is touched


BAD_CONFIGS = [
    ({"hidden_size": 0}, "hidden_size must be at least 1, got 0"),
    ({"arch": "transformer"}, "arch must be one of rnn, lstm, gru, got 'transformer'"),
    ({"epochs": 0}, "epochs must be at least 1, got 0"),
    ({"head": "cauchy"}, "head must be one of"),
    ({"lr": -1.0}, "lr must be a finite positive number, got -1.0"),
    ({"lr": float("nan")}, "lr must be a finite positive number"),
    ({"dropout": 1.5}, "dropout must be in [0, 1), got 1.5"),
    ({"members": 0}, "members must be at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"minutes": 0}, "minutes must be a positive number or None, got 0"),
    ({"patience": 0}, "patience must be at least 1, got 0"),
    ({"val_races": -1}, "val_races must be at least 0, got -1"),
    ({"hidden_size": 8.5}, "hidden_size must be a whole number, got 8.5"),
    ({"mean_loss": "nll", "head": "gaussian"}, "mean_loss 'nll' needs head 'laplace'"),
    ({"pit_l2": ()}, "pit_l2 must be a non-empty tuple of positive numbers"),
    ({"device": "tpu"}, "device must be 'cpu' or 'cuda'"),
]


@pytest.mark.parametrize("bad,message", BAD_CONFIGS, ids=[next(iter(b)) + "=" + repr(next(iter(b.values()))) for b, _ in BAD_CONFIGS])
def test_a_bad_config_leaves_an_existing_run_byte_identical(sim, tmp_path, bad, message):
    run = tmp_path / "good_run"
    shutil.copytree(sim["run"], run)
    before = _snapshot(run)
    cfg = RaceTrainConfig(**{**TINY, **bad})
    with pytest.raises(LapnetError) as e:
        cfg.validate()
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LapnetError) as e:  # LapnetError, not torch's plain ValueError
        train_race(sim["parts"][:2], run, cfg)
    assert message in str(e.value)
    assert _snapshot(run) == before
    from lapnet.race.runs import load_run

    load_run(run)  # still a finished run


def test_every_problem_of_a_config_is_named_on_one_line():
    with pytest.raises(LapnetError) as e:
        RaceTrainConfig(hidden_size=0, lr=-1.0, arch="cnn").validate()
    text = str(e.value)
    assert "\n" not in text and all(f in text for f in ("hidden_size", "lr", "arch"))
    RaceTrainConfig().validate()  # the defaults are good
    RaceTrainConfig(arch="lstm", head="gaussian", minutes=0.5, patience=None, dropout=0.0).validate()


def test_more_validation_races_than_races_is_a_warning(sim, tmp_path):
    with pytest.warns(UserWarning, match=r"val_races 5: only 2 race\(s\) with Scored laps"):
        m = train_race(sim["parts"][:2], tmp_path / "run", RaceTrainConfig(**{**TINY, "val_races": 5}))
    assert m["validation_label"].startswith("validation drivers")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default (1) with 2 races falls back to drivers without a word
        from lapnet.race.training import _held_out_note
        from lapnet.race.inputs import load_laps
        from lapnet.race.features import build_sequences

        seq = build_sequences(load_laps(sim["parts"][:2])[0])
        assert _held_out_note(seq, 1) is None and "only 2 race(s)" in _held_out_note(seq, 2)


# ---------------------------------------------------------------------------------------
# 2. LiveRace.push takes read_laps rows, and leaves the caller's dict alone


def _csv_line(values) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerow(list(values))
    return buf.getvalue().strip("\r\n")


def _push_both_ways(run_dir: Path, src: Path, total_laps: int) -> tuple[list, list, int]:
    """Each lap of `src` in session order, pushed as a CSV line into one LiveRace and as a
    read_laps row (`row.to_dict()`) into another: ([outputs by line], [outputs by dict], unchanged dicts)."""
    from lapnet.race.features import session_order
    from lapnet.race.io import read_laps
    from lapnet.race.live import LiveRace, SkipLap
    from lapnet.race.runs import load_run

    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    parsed = read_laps(src)
    run = load_run(run_dir)
    by_line, by_dict = LiveRace(run, total_laps), LiveRace(run, total_laps)
    by_line.set_header(",".join(raw.columns))
    lines, dicts, unchanged = [], [], 0
    for i in session_order(parsed):
        row = parsed.loc[i].to_dict()
        before = dict(row)
        for live, arg, outs in ((by_line, _csv_line(raw.loc[i]), lines), (by_dict, row, dicts)):
            try:
                outs.append(live.push_csv_line(arg) if isinstance(arg, str) else live.push(arg))
            except SkipLap as e:
                outs.append(f"skipped: {e}")
        unchanged += row.keys() == before.keys() and all(row[k] is before[k] for k in row)
    return lines, dicts, unchanged


def test_push_of_read_laps_rows_equals_push_csv_line(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines, dicts, unchanged = _push_both_ways(sim["run"], sim["parts"][2], 52)
    assert len(lines) > 900 and unchanged == len(lines)
    assert sum(not p["scored"] for p in dicts) < len(dicts) / 4  # most simulated laps are Scored
    assert lines == dicts


def test_push_of_real_read_laps_rows_equals_push_csv_line(sim, f1_data):
    """Monza 2023: scored laps, pit laps, generated rows after the flag: the same either way."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines, dicts, unchanged = _push_both_ways(sim["run"], f1_data / "2023_italian_R.csv", 51)
    assert len(lines) > 900 and unchanged == len(lines)
    assert sum(isinstance(p, str) for p in dicts) >= 19  # the rows after the flag (and TSU's lap 1) are skipped both ways
    assert lines == dicts


def test_push_keeps_masks_the_caller_gives(sim):
    """A dict with the mask columns (a row of clean_laps) is read as given; without them they
    are computed (a timed, accurate green lap 2 is Scored)."""
    from lapnet.race.live import LiveRace, lap_masks
    from lapnet.race.live.lap import _LAP_MASKS
    from lapnet.race.runs import load_run

    run = load_run(sim["run"])
    lap = {"Driver": "VER", "LapNumber": 2.0, "LapTime": 90.0, "Time": 200.0, "IsAccurate": True, "TrackStatus": "1",
           "Compound": "MEDIUM", "Stint": 1.0, "TyreLife": 2.0}
    masks = lap_masks(lap)
    assert set(masks) == set(_LAP_MASKS) and masks["Scored"]
    # each rule of the Scored mask, one lap at a time (no 2023 race was wet, so only here)
    for change in ({"Compound": "INTERMEDIATE"}, {"Compound": "WET"}, {"PitOutTime": 190.0}, {"PitInTime": 199.0},
                   {"TrackStatus": "14"}, {"IsAccurate": False}, {"Deleted": True}, {"LapTime": float("nan")}):
        assert not lap_masks({**lap, **change})["Scored"], change
    first = {**lap, "LapNumber": 1.0, "LapTime": 95.0, "Time": 110.0, "TyreLife": 1.0}
    computed, given = LiveRace(run, 50), LiveRace(run, 50)
    assert not computed.push(first)["scored"]  # lap 1: an out-lap
    assert computed.push(lap)["scored"]
    given.push(first)
    assert not given.push({**lap, **masks, "Scored": False})["scored"]  # what the caller says


# ---------------------------------------------------------------------------------------
# 3. predict_race replaces only its own files


def test_predict_race_keeps_a_metrics_json_it_never_writes(sim, tmp_path):
    from lapnet.race.prediction import predict_race

    out = tmp_path / "pred"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    (out / "forecast_old_XXX.png").write_bytes(b"not a figure predict wrote")
    predict_race(sim["run"], sim["parts"][2], driver="HAM", out=out)
    assert (out / "metrics.json").read_text() == '{"mine": 1}'
    assert (out / "forecast_old_XXX.png").read_bytes() == b"not a figure predict wrote"  # not its own: kept
    assert {p.name for p in out.iterdir()} == {"metrics.json", "predictions.csv", "degradation.png", "forecast_sim_0002_HAM.png",
                                              "forecast_old_XXX.png"}


def test_predict_race_killed_while_drawing_leaves_the_earlier_call_s_files(sim, tmp_path, monkeypatch):
    """predict draws into a staging directory and moves its files in once all are drawn: a call
    that dies while drawing leaves the earlier call's predictions and figures as they were, and
    a staging directory left by a killed process goes with the next call."""
    import lapnet.race.plots as plots
    from lapnet.race.prediction import STAGING, predict_race

    out = tmp_path / "pred"
    predict_race(sim["run"], sim["parts"][2], driver="HAM", out=out)
    before = _snapshot(out)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the user's Ctrl-C (or a kill) while the degradation figure is drawn

    monkeypatch.setattr(plots, "plot_degradation", dies)
    with pytest.raises(KeyboardInterrupt):
        predict_race(sim["run"], sim["parts"][2], driver="VER", out=out)
    assert _snapshot(out) == before and not list(out.glob(f"{STAGING}*"))
    monkeypatch.undo()
    (out / f"{STAGING}killed").mkdir()  # what a SIGKILL leaves behind, 20 minutes ago
    (out / f"{STAGING}killed" / "predictions.csv").write_text("half")
    os.utime(out / f"{STAGING}killed", (time.time() - 1200, time.time() - 1200))
    (out / f"{STAGING}drawing").mkdir()  # another call drawing into the same --out now: left alone
    predict_race(sim["run"], sim["parts"][2], driver="VER", out=out)
    assert (out / f"{STAGING}drawing").is_dir()
    (out / f"{STAGING}drawing").rmdir()
    assert {p.name for p in out.iterdir()} == {"predictions.csv", "degradation.png", "forecast_sim_0002_VER.png"}
    assert "VER" in (out / "predictions.csv").read_text() and "HAM" not in (out / "predictions.csv").read_text()


# ---------------------------------------------------------------------------------------
# 4. LiveRace checks its arguments


@pytest.mark.parametrize("total,message", [(0, "total_laps must be at least 1, got 0"),
                                           (-3, "total_laps must be at least 1, got -3"),
                                           ("57", "total_laps must be None or a whole number of laps, got '57'"),
                                           (57.5, "total_laps must be None or a whole number of laps, got 57.5"),
                                           (True, "total_laps must be None or a whole number of laps, got True")])
def test_live_race_refuses_a_bad_race_length(sim, total, message):
    from lapnet.race.live import LiveRace
    from lapnet.race.runs import load_run

    with pytest.raises(LapnetError) as e:
        LiveRace(load_run(sim["run"]), total)
    assert str(e.value) == message


def test_live_race_takes_a_run_directory(sim, tmp_path):
    from lapnet.race.live import LiveRace

    for run in (sim["run"], str(sim["run"])):
        live = LiveRace(run, np.int64(52))
        assert live.total_laps == 52 and type(live.total_laps) is int and live.run.path == Path(sim["run"])
    assert LiveRace(sim["run"], None).featurizer.estimated
    with pytest.raises(LapnetError, match="run must be a run directory or a loaded run .load_run., got int"):
        LiveRace(51, 51)
    with pytest.raises(LapnetError, match="no such run directory"):
        LiveRace(tmp_path / "nope", 51)


# ---------------------------------------------------------------------------------------
# 5. FastF1's generated rows: live keeps and drops the ones batch cleaning keeps and drops


def test_live_gives_batch_numbers_on_las_vegas_generated_rows(sim, run_cli, f1_data):
    """Las Vegas 2023 has untimed FastF1Generated rows in the middle of the race (NOR lap 3,
    HUL 46, TSU 47: cars that stopped). Batch keeps them as context; live must push them too,
    or those laps have no live line and later laps read another field."""
    import json

    from lapnet.race.prediction import predict_race

    src = f1_data / "2023_las_vegas_R.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch, _ = predict_race(sim["run"], src)
    code, out, err = run_cli("race", "live", sim["run"], src)  # a finished file: replayed in session order, 50 laps
    assert code == 0, err
    assert "skipped" not in err
    live = pd.DataFrame([{"Driver": d["driver"], "LapNumber": d["lap"], "h1": d["forecast"]["h1"], "h10": d["forecast"]["h10"],
                          "pit": d["pit_within_3"], "scored": d["scored"]} for d in map(json.loads, out.splitlines())])
    both = batch.merge(live, on=["Driver", "LapNumber"], how="outer", indicator=True)
    assert (both["_merge"] == "both").all() and len(both) == len(batch) > 900
    generated = {("NOR", 3), ("HUL", 46), ("TSU", 47)}
    rows = both[[(d, n) in generated for d, n in zip(both["Driver"], both["LapNumber"])]]
    assert len(rows) == 3 and not rows["scored"].any() and rows["LapTime"].isna().all()
    for drivers in (["NOR", "HUL", "TSU"], sorted(set(both["Driver"]))):  # those drivers, then every lap
        b = both[both["Driver"].isin(drivers)]
        np.testing.assert_allclose(b["h1"], b["forecast_h1"], atol=5.1e-5)  # live rounds to 4 decimals
        np.testing.assert_allclose(b["h10"], b["forecast_h10"], atol=5.1e-5)
        np.testing.assert_allclose(b["pit"], b["pit_prob"], atol=5.1e-5)
    assert (both["scored"] == both["Scored"]).all()


def test_live_drops_generated_rows_after_the_flag_and_of_non_starters(sim):
    """Batch drops an untimed generated row after the chequered flag, and a driver with no
    timed lap; live skips them, and pushes one of a car that stopped mid-race. Without a race
    length, the estimate stands in for it (laps of 2,000 s: a 3-lap race by the estimate)."""
    from lapnet.race.live import LiveRace, SkipLap
    from lapnet.race.features import RACE_SECONDS

    T = RACE_SECONDS / 3  # a lap time that makes the estimated race 3 laps long

    def lap(drv, n, t, time=True, generated=False):
        return {"Driver": drv, "LapNumber": float(n), "LapTime": T if time else np.nan, "Time": t, "IsAccurate": time,
                "TrackStatus": "1", "Compound": "MEDIUM", "Stint": 1.0, "TyreLife": float(n), "FastF1Generated": generated}

    for total in (3, None):
        live = LiveRace(sim["run"], total)
        with pytest.raises(SkipLap, match="NON lap 1: a row FastF1 generated, with no lap time, for a driver without a timed lap"):
            live.push(lap("NON", 1, 100.0, time=False, generated=True))
        for n in (1, 2):
            live.push(lap("AAA", n, T * n))
            live.push(lap("BBB", n, T * n + 3))
        assert live.featurizer.total_laps == 3
        live.push(lap("BBB", 3, 2.5 * T, time=False, generated=True))  # stopped on lap 3, before the flag: kept
        live.push(lap("AAA", 3, 3 * T))  # AAA wins
        with pytest.raises(SkipLap, match="AAA lap 4: .* after the chequered flag"):
            live.push(lap("AAA", 4, 3 * T + 30, time=False, generated=True))
        assert set(live.drivers) == {"AAA", "BBB"}
    live = LiveRace(sim["run"], 3)
    for n in (1, 2):
        live.push(lap("AAA", n, T * n))
        live.push(lap("CCC", n, T * n + 30))
    live.push(lap("AAA", 3, 3 * T))
    with pytest.raises(SkipLap, match="CCC lap 3: .* after the chequered flag"):  # a lapped car's row after the flag
        live.push(lap("CCC", 3, 3 * T + 40, time=False, generated=True))


# ---------------------------------------------------------------------------------------
# 6. io: one path is one source, a dict is refused, a file is not a run


def test_read_many_takes_one_path_as_one_source(sim):
    from lapnet.race.io import read_laps, read_many

    one = read_laps(sim["parts"][2])
    for source in (sim["parts"][2], str(sim["parts"][2]), (p for p in [sim["parts"][2]])):
        pd.testing.assert_frame_equal(read_many(source), one)
    pd.testing.assert_frame_equal(read_many(pd.read_csv(sim["parts"][2], dtype={"TrackStatus": str})).drop(columns="Race"),
                                  one.drop(columns="Race"))
    assert set(read_many(sim["parts"][:2])["Race"]) == {p.stem for p in sim["parts"][:2]}


@pytest.mark.parametrize("bad", [{"a": 1}, b"laps.csv", 3, None])
def test_an_unsupported_type_of_lap_tables_is_named(sim, bad):
    from lapnet.race.io import read_many
    from lapnet.race.evaluation import eval_race
    from lapnet.race.inputs import load_laps

    want = f"cannot read lap tables from a {type(bad).__name__}: give a CSV/Parquet path, a DataFrame or fastf1 Laps, or a list of them"
    for call in (lambda: read_many(bad), lambda: load_laps(bad), lambda: eval_race(sim["run"], bad)):
        with pytest.raises(LapnetError) as e:
            call()
        assert str(e.value) == want


def test_a_file_given_as_the_run_is_named_as_one(sim, run_cli, tmp_path):
    from lapnet.race.evaluation import eval_race
    from lapnet.race.runs import load_run

    f = tmp_path / "config.json"
    f.write_text("{}")
    with pytest.raises(LapnetError, match="is a file, not a run directory"):
        eval_race(f, sim["parts"][2])
    with pytest.raises(LapnetError, match="is a file, not a run directory"):
        load_run(sim["run"] / "config.json")
    code, _, err = run_cli("race", "eval", f, sim["parts"][2])
    assert code == 2 and "is a file, not a run directory" in err and len(err.strip().splitlines()) == 1
