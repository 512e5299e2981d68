"""Nothing the user owns is overwritten or lost by a command that writes files.

--force replaces only what lapnet wrote (the demo's files, an experiment's figures); an output
that is an input or one of the run's own files is refused even with --force; one process
trains into a run directory at a time; a crafted last.safetensors, integer or NaN weights
are refused in one line; names from the data are made safe for file names; figures are
written atomically; lapnet's own leftovers never block the next run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lapnet.errors import LapnetError
from lapnet.run_dir import release_run_locks


def _refused(code: int, err: str) -> str:
    """Exit code 2 and exactly one `lapnet: error:` line on stderr; returns that line."""
    errors = [line for line in err.splitlines() if line.startswith("lapnet: error:")]
    assert code == 2 and len(errors) == 1, f"exit {code}\n{err[-1500:]}"
    assert "Traceback" not in err
    return errors[0]


# ---------------------------------------------------------------------------------------
# 1. demo --force


def test_demo_force_refuses_a_directory_that_is_not_a_demo(run_cli, tmp_path):
    u = tmp_path / "u"
    for part, name in (("text", "novel.txt"), ("race", "notes.md"), ("engine", "thesis.tex")):
        (u / part).mkdir(parents=True)
        (u / part / name).write_text("mine")
    (u / "config.json").write_text('{"mine": 1}')
    line = _refused(*run_cli("demo", "--quick", "--out", u, "--force")[::2])
    assert "not a demo's directory" in line
    assert (u / "text" / "novel.txt").read_text() == "mine"
    assert (u / "race" / "notes.md").read_text() == "mine"
    assert (u / "engine" / "thesis.tex").read_text() == "mine"
    assert json.loads((u / "config.json").read_text()) == {"mine": 1}


def test_demo_force_refuses_a_foreign_file_in_a_demos_part_folder(tmp_path):
    from lapnet.demo import MANIFEST, _prepare, _record_files

    d = tmp_path / "demo"
    (d / "text").mkdir(parents=True)
    (d / "text" / "model.safetensors").write_bytes(b"demo's")
    (d / "config.json").write_text('{"kind": "demo"}')
    _record_files(d)  # what a demo records as each part ends
    (d / "text" / "novel.txt").write_text("mine")
    with pytest.raises(LapnetError, match=r"novel\.txt, which no earlier demo wrote"):
        _prepare(d, force=True)
    assert (d / "text" / "novel.txt").read_text() == "mine"
    assert (d / "text" / "model.safetensors").exists()  # nothing removed before the refusal
    # without the foreign file: the demo's own files go, and the folder they leave empty
    (d / "text" / "novel.txt").unlink()
    (d / "notes.md").write_text("mine")  # beside the parts: kept
    (d / "text" / ".model.safetensors.abcd.tmp").write_bytes(b"")  # a killed write's leftover
    _prepare(d, force=True)
    release_run_locks()  # as the CLI does when the command ends: the demo holds --out while it runs
    assert sorted(p.name for p in d.iterdir()) == ["notes.md"]
    assert not (d / MANIFEST).exists()


def test_demo_force_takes_over_a_demo_killed_in_a_part(tmp_path):
    from lapnet.demo import _prepare, _record_files

    d = tmp_path / "demo"
    (d / "engine").mkdir(parents=True)
    (d / "engine" / "a.png").write_bytes(b"done part")
    (d / "config.json").write_text('{"kind": "demo"}')
    _record_files(d)
    _record_files(d, running="text")  # killed while the text part was writing
    (d / "text").mkdir()
    (d / "text" / "config.json").write_text("{}")
    _prepare(d, force=True)
    release_run_locks()  # as the CLI does when the command ends: the demo holds --out while it runs
    assert list(d.iterdir()) == []


def test_demo_force_replaces_a_demo_made_before_the_record(tmp_path):
    """A demo written before .demo-files.json existed (runs/demo of earlier versions): its files
    are known by the names a demo writes; a file of the user's among them is still refused."""
    from lapnet.demo import _prepare

    d = tmp_path / "demo"
    for rel in ("engine/metrics.json", "engine/sine/model.safetensors", "text/samples.txt", "text/vocab.json",
                "race/predict/forecast_sim_0000_ALB.png", "race/run/members/2/log.jsonl"):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text("demo's")
    (d / "config.json").write_text('{"kind": "demo"}')
    (d / "text" / "novel.txt").write_text("mine")
    with pytest.raises(LapnetError, match=r"novel\.txt, which no earlier demo wrote"):
        _prepare(d, force=True)
    assert (d / "text" / "samples.txt").exists()  # nothing removed before the refusal
    (d / "text" / "novel.txt").unlink()
    _prepare(d, force=True)
    release_run_locks()  # as the CLI does when the command ends: the demo holds --out while it runs
    assert list(d.iterdir()) == []


def test_demo_force_clears_a_dead_lock_and_refuses_a_live_one(tmp_path, held_lock):
    from lapnet.demo import _prepare, _record_files

    d = tmp_path / "demo"
    (d / "text").mkdir(parents=True)
    (d / "text" / "model.safetensors").write_bytes(b"demo's")
    (d / "config.json").write_text('{"kind": "demo"}')
    _record_files(d)
    (d / "text" / ".lapnet.lock").write_text("99999")  # left by a process that is gone: no flock on it
    _prepare(d, force=True)  # was: [Errno 39] Directory not empty, after removing the demo's files
    release_run_locks()  # as the CLI does when the command ends: the demo holds --out while it runs
    assert list(d.iterdir()) == []
    run, pid = held_lock  # a live trainer's lock in a part folder of a demo
    demo = run.parent
    (demo / "config.json").write_text('{"kind": "demo"}')
    for part in ("text",):
        (demo / part).symlink_to(run, target_is_directory=True)
    with pytest.raises(LapnetError, match="is in use by another lapnet process"):
        _prepare(demo, force=True)


def test_demo_force_replaces_an_earlier_demo(run_cli, tmp_path):
    out = tmp_path / "d"
    code, _, err = run_cli("demo", "--quick", "--out", out)
    assert code == 0, err[-2000:]
    recorded = json.loads((out / ".demo-files.json").read_text())["files"]
    assert "text/model.safetensors" in recorded and all(not f.startswith(".") for f in recorded)
    code, _, err = run_cli("demo", "--quick", "--out", out, "--force")
    assert code == 0, err[-2000:]
    assert (out / "report.html").is_file() and json.loads((out / "config.json").read_text())["kind"] == "demo"


# ---------------------------------------------------------------------------------------
# 2. experiments' --force: only figures a lapnet metrics.json lists


def test_experiment_force_keeps_a_figure_named_by_a_foreign_metrics_json(run_cli, tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    (p / "holiday.png").write_bytes(b"\x89PNG\r\n\x1a\nmine")
    (p / "metrics.json").write_text('{"figures": ["holiday.png"]}')
    code, _, err = run_cli("sine", "--epochs", "2", "--hidden", "4", "--quiet", "--out", p, "--force")
    assert code == 0, err[-2000:]
    assert (p / "holiday.png").read_bytes() == b"\x89PNG\r\n\x1a\nmine"
    assert json.loads((p / "metrics.json").read_text())["experiment"] == "sine"


def test_stale_figures_trusts_only_an_experiments_metrics(tmp_path):
    from lapnet.experiments.result import stale_figures

    (tmp_path / "old.png").write_bytes(b"x")
    (tmp_path / "metrics.json").write_text('{"figures": ["old.png"]}')
    assert stale_figures(tmp_path, set()) == []
    (tmp_path / "metrics.json").write_text('{"experiment": "sine", "figures": ["old.png"]}')
    assert stale_figures(tmp_path, set()) == [tmp_path / "old.png"]
    (tmp_path / "metrics.json").write_text('{"experiment": "holiday", "figures": ["old.png"]}')
    assert stale_figures(tmp_path, set()) == []


# ---------------------------------------------------------------------------------------
# 3. one training process per --out


def test_a_second_training_into_one_out_is_refused(held_lock, run_cli, tmp_path, sim_races):
    run, pid = held_lock
    other = run / ".model.safetensors.x1y2.tmp"  # the other process's write in progress
    other.write_bytes(b"half")
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 40)
    line = _refused(*run_cli("text", "train", text, "--out", run, "--force", "--epochs", "1", "--hidden", "8",
                             "--quiet")[::2])
    assert f"is in use by another lapnet process (pid {pid})" in line
    line = _refused(*run_cli("race", "train", sim_races[0], "--out", run, "--force", "--epochs", "1", "--hidden", "4",
                             "--phase-sim", "0", "--quiet")[::2])
    assert f"(pid {pid})" in line
    assert other.read_bytes() == b"half"  # fit's clean-up of .*.tmp never ran
    assert sorted(p.name for p in run.iterdir()) == [".lapnet.lock", other.name]


def test_fit_takes_the_lock_before_its_clean_up(held_lock):
    from lapnet.train import TorchLearner, TrainConfig, fit

    run, pid = held_lock
    (run / ".x.tmp").write_bytes(b"theirs")
    model = torch.nn.Linear(2, 1)
    learner = TorchLearner(model, lambda net, b, c: (net(b).pow(2).mean(), None, len(b)),
                           lambda m: {"val_loss": 0.0}, TrainConfig(max_steps=1, progress=False))

    class One:
        def steps_per_epoch(self):
            return 1

        def epoch(self, e):
            yield torch.ones(4, 2)

    with pytest.raises(LapnetError, match=f"pid {pid}"):
        fit(learner, One(), TrainConfig(max_steps=1, progress=False), out=run)
    assert (run / ".x.tmp").read_bytes() == b"theirs"


def test_lock_is_released_and_taken_over(tmp_path):
    from lapnet.run_dir import LOCK_NAME, lock_run_dir, release_run_locks

    lock_run_dir(tmp_path)
    lock_run_dir(tmp_path)  # again in the same process: a no-op
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    release_run_locks()
    assert not (tmp_path / LOCK_NAME).exists()
    (tmp_path / LOCK_NAME).write_text("999999\n")  # a killed process's stale file: no flock on it
    lock_run_dir(tmp_path)
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    release_run_locks()


# ---------------------------------------------------------------------------------------
# 4, 8. an output that is an input


def test_race_clean_never_overwrites_its_input(run_cli, sim_races, tmp_path):
    src = tmp_path / "X.csv"
    src.write_bytes(sim_races[0].read_bytes())
    before = src.read_bytes()
    line = _refused(*run_cli("race", "clean", src, "--out", src, "--force")[::2])
    assert "is the input" in line
    link = tmp_path / "link.csv"
    link.symlink_to(src)
    _refused(*run_cli("race", "clean", src, "--out", link, "--force")[::2])
    assert src.read_bytes() == before and link.is_symlink()


def test_refuse_input_as_output(tmp_path):
    from lapnet.run_dir import refuse_input_as_output

    a = tmp_path / "a.txt"
    a.write_text("x")
    os.link(a, tmp_path / "hard.txt")
    with pytest.raises(LapnetError, match="is the input"):
        refuse_input_as_output([a], [tmp_path / "hard.txt"])
    with pytest.raises(LapnetError, match="is the input"):
        refuse_input_as_output([a], [tmp_path / "sub" / ".." / "a.txt"])
    refuse_input_as_output([a], [tmp_path / "b.txt", None])  # another file, a missing one: fine


# ---------------------------------------------------------------------------------------
# 5. a crafted last.safetensors on --resume


def _toy_run(tmp_path):
    from lapnet.train import TorchLearner, TrainConfig, fit

    class Two:
        def steps_per_epoch(self):
            return 2

        def epoch(self, e):
            yield torch.ones(4, 2)
            yield torch.full((4, 2), 0.5)

    def learner():
        torch.manual_seed(0)
        return TorchLearner(torch.nn.Linear(2, 1), lambda net, b, c: (net(b).pow(2).mean(), None, len(b)),
                            lambda m: {"val_loss": float(m(torch.ones(1, 2)).pow(2).item())},
                            TrainConfig(max_steps=2, eval_every=1, progress=False))

    run = tmp_path / "run"
    fit(learner(), Two(), TrainConfig(max_steps=2, eval_every=1, progress=False), out=run)
    return run, learner, Two


@pytest.mark.parametrize("case", ["trainer_str", "learner_str", "negative_step", "negative_items",
                                  "missing_optimizer", "int_weights", "nan_weights", "bad_param_groups"])
def test_a_crafted_last_checkpoint_is_refused_in_one_line(tmp_path, case):
    from lapnet.checkpoint import load_tensors, save_tensors
    from lapnet.errors import CheckpointError
    from lapnet.train import TrainConfig, fit

    run, learner, Two = _toy_run(tmp_path)
    arrays, meta = load_tensors(run / "last.safetensors")
    meta = json.loads(json.dumps(meta))
    if case == "trainer_str":
        meta["trainer"] = "oops"
    elif case == "learner_str":
        meta["learner"] = "oops"
    elif case == "negative_step":
        meta["trainer"]["step_in_epoch"] = -5
    elif case == "negative_items":
        meta["trainer"]["items"] = -1
    elif case == "missing_optimizer":
        arrays = {k: v for k, v in arrays.items() if not k.startswith("optim.")}
    elif case == "int_weights":
        arrays = {k: (v.astype(np.int64) if k.startswith("model.") else v) for k, v in arrays.items()}
    elif case == "nan_weights":
        arrays = {k: (np.full_like(v, np.nan) if k.startswith("model.") else v) for k, v in arrays.items()}
    elif case == "bad_param_groups":
        meta["learner"]["param_groups"][0]["weight_decay"] = -5
    save_tensors(run / "last.safetensors", arrays, meta)  # a valid checksum
    with pytest.raises(CheckpointError) as e:
        fit(learner(), Two(), TrainConfig(max_steps=4, eval_every=1, progress=False), out=run, resume=True)
    assert "last.safetensors" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------
# 6. names from the data in file names; 7. --force never destroys the run read


@pytest.fixture(scope="module")
def race_run(tmp_path_factory):
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.simulate import simulate_to_file

    d = tmp_path_factory.mktemp("race_run")
    simulate_to_file(d / "sim.csv", 2, seed=3)
    cfg = RaceTrainConfig(hidden_size=4, epochs=1, batch_size=16, patience=None, progress=False, seed=0, members=1,
                          phase_sim=0)
    train_race([d / "sim.csv"], d / "run", cfg)
    return d / "run", d / "sim.csv"


def test_safe_name():
    from lapnet.run_dir import safe_name

    assert safe_name("Italian Grand Prix") == "Italian Grand Prix"
    assert safe_name("São Paulo") == "São Paulo"
    assert "/" not in safe_name("../../x") and not safe_name("../../x").startswith(".")
    assert safe_name("/tmp/x") == "_tmp_x" and safe_name("A L/O") == "A L_O"
    assert safe_name("a\nb\x00") == "a_b_"
    long1, long2 = safe_name("R" * 300), safe_name("R" * 299 + "S")
    assert len(long1) <= 80 and long1 != long2


def test_predict_with_hostile_race_and_driver_names_writes_inside_out(run_cli, race_run, tmp_path):
    run, sim = race_run
    df = pd.read_csv(sim, dtype={"TrackStatus": str})
    first = df["Race"].iloc[0]
    df = df[df["Race"] == first].copy()
    drivers = sorted(df["Driver"].unique())[:2]
    df = df[df["Driver"].isin(drivers)]
    df["Driver"] = df["Driver"].map({drivers[0]: "A L/O", drivers[1]: "P" * 300})
    for race in ("../../escaped", "/tmp/x_lapnet_abs", "R" * 300):
        table = tmp_path / "t.csv"
        df.assign(Race=race).to_csv(table, index=False)
        out = tmp_path / "o" / "p"
        code, _, err = run_cli("race", "predict", run, table, "--out", out, "--quiet", "--force")
        assert code == 0, err[-2000:]
        figs = sorted(p.name for p in out.glob("forecast_*.png"))
        assert len(figs) == 2 and all(len(f) < 200 for f in figs)
        written = json.loads((out / "metrics.json").read_text())["figures"]
        assert all(Path(f).parent == out for f in written)
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/x_lapnet_abs").exists()


def test_force_never_replaces_the_runs_own_files(run_cli, race_run, tmp_path):
    run, sim = race_run
    before = {n: (run / n).read_bytes() for n in ("config.json", "metrics.json", "model.safetensors")}
    line = _refused(*run_cli("race", "predict", run, sim, "--out", run, "--force", "--quiet")[::2])
    assert "metrics.json" in line
    _refused(*run_cli("race", "eval", run, sim, "--out", run, "--force", "--quiet")[::2])
    line = _refused(*run_cli("report", run, "--out", run / "config.json", "--force")[::2])
    assert "config.json" in line
    table = run.parent / "predictions.csv"  # the lap table read, named like predict's output
    table.write_bytes(sim.read_bytes())
    assert "is the input" in _refused(*run_cli("race", "predict", run, table, "--out", run.parent, "--force",
                                               "--quiet")[::2])
    assert table.read_bytes() == sim.read_bytes()
    assert {n: (run / n).read_bytes() for n in before} == before


# ---------------------------------------------------------------------------------------
# 9. integer or NaN weights


@pytest.mark.parametrize("how", ["int64", "nan"])
def test_race_predict_refuses_int_or_nan_weights(run_cli, race_run, tmp_path, how):
    import shutil

    from lapnet.checkpoint import load_tensors, save_tensors

    run, sim = race_run
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    arrays, meta = load_tensors(bad / "model.safetensors")
    arrays = {k: (v.astype(np.int64) if how == "int64" else np.full_like(v, np.nan)) if v.dtype.kind == "f" else v
              for k, v in arrays.items()}
    save_tensors(bad / "model.safetensors", arrays, meta)
    line = _refused(*run_cli("race", "predict", bad, sim, "--out", tmp_path / "o", "--quiet")[::2])
    assert ("int64" in line) if how == "int64" else ("NaN or inf" in line)


def test_series_forecast_refuses_int_or_nan_weights(run_cli, tmp_path):
    from lapnet.checkpoint import load_tensors, save_tensors

    csv = tmp_path / "s.csv"
    csv.write_text("v\n" + "\n".join(str(np.sin(i / 3)) for i in range(120)) + "\n")
    code, _, err = run_cli("series", "train", csv, "--out", tmp_path / "run", "--epochs", "1", "--hidden", "4",
                           "--quiet")
    assert code == 0, err[-2000:]
    arrays, meta = load_tensors(tmp_path / "run" / "model.safetensors")
    save_tensors(tmp_path / "run" / "model.safetensors", {k: v.astype(np.int64) for k, v in arrays.items()}, meta)
    assert "int64" in _refused(*run_cli("series", "forecast", tmp_path / "run", csv)[::2])
    save_tensors(tmp_path / "run" / "model.safetensors", {k: np.full_like(v, np.nan) for k, v in arrays.items()}, meta)
    assert "NaN or inf" in _refused(*run_cli("series", "forecast", tmp_path / "run", csv)[::2])


# ---------------------------------------------------------------------------------------
# 10, 11, 14. single-file outputs, dangling symlinks, devices, an empty --out


def test_unwritable_folder_is_refused_before_the_work(run_cli, sim_races, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else real_access(p, mode, **kw))
    called = []
    import lapnet.race.clean as clean

    monkeypatch.setattr(clean, "clean_laps", lambda *a, **k: called.append(1))
    line = _refused(*run_cli("race", "clean", sim_races[0], "--out", ro / "c.csv")[::2])
    assert f"{ro} is not writable" in line and ".tmp" not in line and not called
    line = _refused(*run_cli("report", tmp_path, "--out", ro / "r.html")[::2])
    assert "not writable" in line
    line = _refused(*run_cli("race", "calibrate", sim_races[0], "--out", tmp_path / "c.json",
                             "--figure", ro / "f.png")[::2])
    assert "--figure" in line and "not writable" in line


def test_dangling_symlink_device_and_empty_out(run_cli, tmp_path):
    dang = tmp_path / "dang"
    dang.symlink_to(tmp_path / "nowhere" / "dir")
    line = _refused(*run_cli("diagrams", "--out", dang)[::2])
    assert "a symlink to" in line and "which does not exist" in line
    line = _refused(*run_cli("race", "simulate", "--out", dang, "--races", "1")[::2])
    assert "which does not exist" in line
    assert "is a device" in _refused(*run_cli("diagrams", "--out", "/dev/null")[::2])


def test_empty_out_is_refused(tmp_path, monkeypatch):
    from lapnet.run_dir import check_out_path

    monkeypatch.setattr(sys, "argv", ["lapnet", "diagrams", "--out="])
    with pytest.raises(LapnetError, match="--out is empty"):
        check_out_path(Path(""))
    monkeypatch.setattr(sys, "argv", ["lapnet", "diagrams", "--out", "."])
    assert check_out_path(Path(".")) == Path(".")


# ---------------------------------------------------------------------------------------
# 12. figures written atomically; 13. leftovers


def test_a_figure_is_replaced_whole_or_not_at_all(tmp_path):
    import matplotlib.pyplot as plt

    from lapnet.plots import save_figure

    path = tmp_path / "f.png"
    path.write_bytes(b"old figure")
    fig = plt.figure()

    def boom(*a, **k):
        raise KeyboardInterrupt  # killed while drawing

    fig.savefig = boom
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path)
    assert path.read_bytes() == b"old figure" and sorted(os.listdir(tmp_path)) == ["f.png"]
    fig = plt.figure()
    save_figure(fig, path, dpi=20)
    assert path.read_bytes().startswith(b"\x89PNG")
    plt.close("all")


def test_only_lapnet_leftovers_count_as_empty(tmp_path):
    from lapnet.run_dir import check_out_dir

    out = tmp_path / "o"
    out.mkdir()
    (out / ".config.json.abcd1234.tmp").write_bytes(b"half")
    (out / ".lapnet.lock").write_text("1\n")
    check_out_dir(out, writes=("config.json",), holds="a run", lock=False)  # not refused
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LapnetError, match="is not empty"):
        check_out_dir(out, writes=("config.json",), holds="a run", lock=False)


def test_a_dead_predicts_staging_directory_goes_at_once(tmp_path):
    from lapnet.race.outputs import stale_staging
    from lapnet.race.prediction import STAGING, STAGING_STALE

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"{STAGING}{int(dead.stdout)}-abcd").mkdir()
    (tmp_path / f"{STAGING}{os.getppid()}-efgh").mkdir()  # a live process's
    (tmp_path / f"{STAGING}{os.getpid()}-ijkl").mkdir()  # this process's own
    found = stale_staging(tmp_path, STAGING, STAGING_STALE)
    assert [p.name for p in found] == [f"{STAGING}{int(dead.stdout)}-abcd"]


# ---------------------------------------------------------------------------------------
# the text side: its input never written over, the run's files never replaced, its lock released


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from lapnet.models.charlm import CharLMConfig
    from lapnet.text_runs import text_train_config, train_text

    out = tmp_path_factory.mktemp("text") / "run"
    train = text_train_config()
    train.max_steps, train.progress = 2, False
    train_text(None, out, model=CharLMConfig(vocab_size=1, hidden=8, embed=4), train=train, samples=False)
    return out


def test_text_train_refuses_an_input_named_like_its_own_file(run_cli, tmp_path):
    out = tmp_path / "t"
    out.mkdir()
    text = out / "samples.txt"  # a file text train writes into its run
    text.write_text("To be or not to be, that is the question. " * 20)
    before = text.read_bytes()
    code, _, err = run_cli("text", "train", text, "--out", out, "--force", "--epochs", "1")
    assert "is the input" in _refused(code, err)
    assert text.read_bytes() == before


def test_train_text_releases_its_lock(text_run):
    from lapnet.run_dir import holds_run_lock

    assert not holds_run_lock(text_run)  # a library call leaves the directory free for the next process
    assert not (text_run / ".lapnet.lock").exists()


def test_gates_and_temperature_never_replace_the_runs_files(run_cli, text_run):
    weights = (text_run / "model.safetensors").read_bytes()
    metrics = (text_run / "metrics.json").read_bytes()
    code, _, err = run_cli("gates", text_run, "--export", text_run / "model.safetensors", "--force")
    assert "--export" in _refused(code, err)
    code, _, err = run_cli("gates", text_run, "--export", text_run.parent / "states.txt")
    assert ".npz" in _refused(code, err)
    for cmd in ("gates", "temperature"):
        code, _, err = run_cli(cmd, text_run, "--out", text_run, "--force")
        assert "is the input" in _refused(code, err), cmd
    assert (text_run / "model.safetensors").read_bytes() == weights
    assert (text_run / "metrics.json").read_bytes() == metrics


def test_text_weights_that_are_not_floats_are_refused(tmp_path, text_run):
    import shutil

    from lapnet.checkpoint import load_tensors, save_tensors
    from lapnet.text_runs import load_run

    run = tmp_path / "run"
    shutil.copytree(text_run, run)
    arrays, meta = load_tensors(run / "model.safetensors")
    arrays["head.bias"] = arrays["head.bias"].astype(np.int64)
    save_tensors(run / "model.safetensors", arrays, meta)
    with pytest.raises(LapnetError, match="head.bias is int64, not floating point"):
        load_run(run)


def test_force_drops_the_replaced_runs_report_and_keeps_a_users_page(run_cli, tmp_path):
    """An analyst's `lapnet report` of a run stayed after `series train --force` replaced the run,
    still describing the old data beside the new run's files."""
    values = 100 + 10 * np.sin(np.arange(120) * np.pi / 6) + 0.3 * np.arange(120)
    data = tmp_path / "s.csv"
    data.write_text("v\n" + "\n".join(f"{x:.4f}" for x in values) + "\n")
    run = tmp_path / "run"
    assert run_cli("series", "train", data, "--epochs", "2", "--out", run, "--quiet")[0] == 0
    assert run_cli("report", run)[0] == 0 and (run / "report.html").is_file()
    (run / "notes.html").write_text("<!DOCTYPE html><p>mine</p>")
    bad = tmp_path / "bad.csv"
    bad.write_text("v\n1\n2\n")  # refused (too short): the old run and its page stay as they were
    assert run_cli("series", "train", bad, "--epochs", "2", "--out", run, "--quiet", "--force")[0] == 2
    assert (run / "report.html").is_file()
    assert run_cli("series", "train", data, "--epochs", "2", "--out", run, "--quiet", "--force")[0] == 0
    assert not (run / "report.html").exists()
    assert (run / "notes.html").read_text() == "<!DOCTYPE html><p>mine</p>"
    (run / "report.html").write_text("<!DOCTYPE html><p>a page of my own, same name</p>")
    assert run_cli("series", "train", data, "--epochs", "2", "--out", run, "--quiet", "--force")[0] == 0
    assert (run / "report.html").read_text() == "<!DOCTYPE html><p>a page of my own, same name</p>"


def test_a_second_demo_into_the_same_directory_is_refused_while_one_runs(held_lock, run_cli):
    """Two `demo --force` into one directory ran side by side: the second's text part failed on
    the first's part lock and the two wrote into each other's report (exit 0 and 1)."""
    run, pid = held_lock  # the directory a demo (any lapnet process) holds
    (run / "config.json").write_text('{"kind": "demo"}')
    code, _, err = run_cli("demo", "--quick", "--force", "--out", run)
    assert code == 2 and f"is in use by another lapnet process (pid {pid})" in err and err.count("\n") == 1, err
    assert (run / "config.json").read_text() == '{"kind": "demo"}'


def test_a_library_call_that_fails_before_its_directory_leaves_no_pending_lock(tmp_path):
    """train_text failing before make_dir left its pending lock: a later call creating the same
    directory was refused as 'another process created it meanwhile'."""
    from lapnet.run_dir import _pending_locks, release_run_lock, want_run_lock

    out = tmp_path / "runA"
    want_run_lock(out, "created meanwhile")
    release_run_lock(out)
    assert str(out) not in _pending_locks and os.path.abspath(out) not in _pending_locks
