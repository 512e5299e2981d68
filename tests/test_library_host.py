"""lapnet inside a long-lived host process (a notebook kernel): a library call leaves the host as
it found it. Its default dtype (a notebook's float64 broke eval_race and the trainings), its
global torch RNG (the experiments and trainings reset it), pyplot's open figures (the library's
piled up and the user's next plt.show() drew them), the user's own figures (run_demo closed
them) and run-directory locks (run_demo kept its own for the rest of the process); and the
race figures' errors on a table without the columns they draw.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from lapnet.errors import LapnetError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "guide"
SERIES = np.sin(np.arange(120) / 5)  # (N,) a series train_series learns in a few epochs


def _race_cfg(**kw):
    from lapnet.race.training_config import RaceTrainConfig

    return RaceTrainConfig(**{"hidden_size": 4, "epochs": 1, "members": 1, "phase_sim": 0, "progress": False,
                              "val_races": 0, "tagger": False, **kw})


@pytest.fixture(scope="module")
def race_run(tmp_path_factory, sim_races) -> tuple[Path, Path]:
    """A tiny race run trained in a float32 process (as every run on disk is), and a race to read."""
    from lapnet.race.training import train_race

    table, parts = sim_races
    run = tmp_path_factory.mktemp("host") / "run"
    train_race(parts[:2], run, _race_cfg())
    return run, parts[2]


@pytest.fixture
def float64_host():
    """A notebook whose first cell is torch.set_default_dtype(torch.float64)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture
def no_figures():
    """pyplot holds no figure before the test, and none is left by it (even when it fails)."""
    plt.close("all")
    yield
    plt.close("all")


def _sine():
    from lapnet.experiments.sine import SineConfig, run_sine

    return run_sine(SineConfig(hidden_sizes=(4,), archs=("lstm",), arch_hidden=4, epochs=2, n_points=60))


def _trend():
    from lapnet.experiments.trend import TrendConfig, run_trend

    return run_trend(TrendConfig(hidden=4, epochs=1, n_train=32))


def _gradflow():
    from lapnet.experiments.gradflow import GradflowConfig, run_gradflow

    return run_gradflow(GradflowConfig(hidden=4, length=6, steps=1, clip_steps=2, n_measure=2))


def _adding():
    from lapnet.experiments.adding import AddingConfig, run_adding

    return run_adding(AddingConfig(archs=("rnn", "gru"), lengths=(5,), hidden=4, max_steps=2, eval_every=1,
                                   n_test=16, batch_size=8))


def _feedforward():
    from lapnet.experiments.feedforward import FeedforwardConfig, run_feedforward

    return run_feedforward(FeedforwardConfig(hidden=4, mlp_hidden=4, n_train=32, n_test=16, max_len=8,
                                             test_lengths=(3, 8), epochs=1, mlp_epochs=2))


def _train_text(tmp: Path):
    from lapnet.models.charlm import CharLMConfig
    from lapnet.text_runs import TextDataConfig, text_train_config, train_text

    return train_text(None, tmp / "text", samples=False, model=CharLMConfig(vocab_size=1, embed=8, hidden=8),
                      data=TextDataConfig(seq_len=16, batch=2),
                      train=text_train_config(max_steps=2, eval_every=2, progress=False))


def _train_series(tmp: Path):
    from lapnet.series import SeriesConfig, train_series

    return train_series(SERIES, SeriesConfig(hidden_size=4, epochs=1, progress=False), tmp / "series")


# --- 1. the host's default dtype ------------------------------------------------------------

DTYPE_CALLS = {
    "run_sine": lambda tmp, run, race: _sine(),
    "run_trend": lambda tmp, run, race: _trend(),
    "run_gradflow": lambda tmp, run, race: _gradflow(),
    "train_series": lambda tmp, run, race: _train_series(tmp),
    "train_race": lambda tmp, run, race: __import__("lapnet.race.training", fromlist=["x"]).train_race(
        [race], tmp / "race", _race_cfg()),
    "eval_race": lambda tmp, run, race: __import__("lapnet.race.evaluation", fromlist=["x"]).eval_race(run, [race]),
    "predict_race": lambda tmp, run, race: __import__("lapnet.race.prediction", fromlist=["x"]).predict_race(
        run, race, driver=str(pd.read_csv(race)["Driver"].iloc[0])),
    "follow_race": lambda tmp, run, race: __import__("lapnet.race.live", fromlist=["x"]).follow_race(
        run, race, emit=lambda d: None, say=lambda s: None),
}


@pytest.mark.parametrize("name", list(DTYPE_CALLS))
def test_a_float64_default_in_the_host_neither_breaks_a_call_nor_is_changed_by_it(name, float64_host, race_run,
                                                                                  tmp_path):
    run, race = race_run
    DTYPE_CALLS[name](tmp_path, run, race)  # was: x is torch.float32 but the LSTM's weights are torch.float64
    assert torch.get_default_dtype() is torch.float64
    assert torch.zeros(1).dtype is torch.float64  # the host's own tensors still get its default


def test_results_do_not_depend_on_the_host_default_dtype(tmp_path):
    torch.set_default_dtype(torch.float64)
    try:
        in_float64 = _sine().metrics
        series64 = _train_series(tmp_path / "a")
    finally:
        torch.set_default_dtype(torch.float32)
    assert in_float64 == _sine().metrics
    series32 = _train_series(tmp_path / "b")
    assert series64["scores"] == series32["scores"] and series64["forecast"] == series32["forecast"]
    from lapnet.checkpoint import load_tensors

    w64, _ = load_tensors(tmp_path / "a" / "series" / "model.safetensors")
    w32, _ = load_tensors(tmp_path / "b" / "series" / "model.safetensors")
    assert all(a.dtype == np.float32 for a in w64.values())  # a float32 run, as in any other process
    assert w64.keys() == w32.keys() and all(np.array_equal(w64[k], w32[k]) for k in w64)


def test_the_default_dtype_comes_back_when_a_call_raises(float64_host):
    from lapnet.experiments.sine import SineConfig, run_sine

    with pytest.raises(LapnetError):
        run_sine(SineConfig(n_points=5, window=10))
    assert torch.get_default_dtype() is torch.float64


# --- 2. the host's global torch RNG ---------------------------------------------------------

def _tour():
    from lapnet.experiments import engine_tour

    return engine_tour.run_tour(quick=True)


RNG_CALLS = {
    "run_tour": lambda tmp, run, race: _tour(),
    "hidden_evolution": lambda tmp, run, race: __import__(
        "lapnet.diagnostics.hidden_evolution", fromlist=["x"]).hidden_evolution(hidden_size=4, n_points=20),
    "param_table": lambda tmp, run, race: __import__(
        "lapnet.diagnostics.param_count", fromlist=["x"]).param_table(input_size=10, hidden_size=8),
    "explore_shapes": lambda tmp, run, race: __import__("lapnet.shapes", fromlist=["x"]).explore_shapes(
        __import__("lapnet.shapes", fromlist=["x"]).ShapeConfig(arch="lstm", input_size=3, hidden_size=4)),
    "architecture_comparison": lambda tmp, run, race: __import__(
        "lapnet.diagrams", fromlist=["x"]).architecture_comparison(input_size=10, hidden_size=8),
    "run_sine": lambda tmp, run, race: _sine(),
    "run_trend": lambda tmp, run, race: _trend(),
    "run_gradflow": lambda tmp, run, race: _gradflow(),
    "run_adding": lambda tmp, run, race: _adding(),
    "run_feedforward": lambda tmp, run, race: _feedforward(),
    "train_text": lambda tmp, run, race: _train_text(tmp),
    "sample_text": lambda tmp, run, race: (_train_text(tmp), torch.manual_seed(5),
                                           __import__("lapnet.text_runs", fromlist=["x"]).sample_text(
                                               tmp / "text", prime="To", length=10, seed=0)),
    "run_gates": lambda tmp, run, race: (_train_text(tmp), torch.manual_seed(5), __import__(
        "lapnet.experiments.gates", fromlist=["x"]).run_gates(tmp / "text")),
    "run_temperature": lambda tmp, run, race: (_train_text(tmp), torch.manual_seed(5), __import__(
        "lapnet.experiments.temperature", fromlist=["x"]).run_temperature(tmp / "text")),
    "train_series": lambda tmp, run, race: _train_series(tmp),
    "forecast_series": lambda tmp, run, race: (_train_series(tmp), torch.manual_seed(5),
                                               __import__("lapnet.series", fromlist=["x"]).forecast_series(
                                                   tmp / "series", SERIES, 3)),
    "train_race": lambda tmp, run, race: __import__("lapnet.race.training", fromlist=["x"]).train_race(
        [race], tmp / "race", _race_cfg()),
    "eval_race": lambda tmp, run, race: __import__("lapnet.race.evaluation", fromlist=["x"]).eval_race(run, [race]),
    "race load_run": lambda tmp, run, race: __import__("lapnet.race.runs", fromlist=["x"]).load_run(run),
}


@pytest.mark.parametrize("name", list(RNG_CALLS))
def test_a_call_leaves_the_host_rng_where_it_was(name, race_run, tmp_path, no_figures):
    run, race = race_run
    torch.manual_seed(5)
    want = torch.rand(4)  # the host's next draws without the call
    torch.manual_seed(5)
    RNG_CALLS[name](tmp_path, run, race)  # (the two-step cases seed again after their set-up)
    assert torch.equal(torch.rand(4), want)  # was: the same draw whatever seed the user had set


def test_results_stay_seeded_by_the_call_not_the_host():
    torch.manual_seed(1)
    a = _sine().metrics
    torch.manual_seed(2)
    torch.rand(100)
    assert _sine().metrics == a


# --- 3. figures outside pyplot's registry -----------------------------------------------------

def _figure_calls(tmp: Path) -> dict:
    from lapnet import diagrams, plots
    from lapnet.diagnostics.hidden_evolution import hidden_evolution, plot_hidden_evolution
    from lapnet.experiments import engine_tour
    from lapnet.experiments.gates import run_gates
    from lapnet.experiments.temperature import run_temperature
    from lapnet.race import plots as race_plots

    table = pd.DataFrame({"Race": "R", "Driver": "AAA", "LapNumber": [1, 2, 3, 4], "LapTime": [90.0, 89.5, 89.7, 95.0],
                          "forecast_h1": [89.6, 89.6, 89.8, 90.0], "lo90_h1": 88.0, "hi90_h1": 91.0,
                          "Compound": "SOFT", "Scored": [True, True, True, False], "pit_prob": [0.1, 0.2, 0.7, 0.9],
                          "InLap": [False, False, False, True], "Stint": 1, "TyreLife": [1, 2, 3, 4]})
    return {
        "loss_curves": lambda: plots.loss_curves({"LSTM": [1.0, 0.5]}),
        "loss_curves_two_panel": lambda: plots.loss_curves_two_panel({"a": [1, 2]}, {"b": [2, 1]}, left_title="l",
                                                                      right_title="r"),
        "temperature_bars": lambda: plots.temperature_bars({0.5: np.array([0.2, 0.8])}, ["a", "b"]),
        "run_sine": lambda: _sine(),
        "run_trend": lambda: _trend(),
        "run_gradflow": lambda: _gradflow(),
        "run_adding": lambda: _adding(),
        "run_tour(out=...)": lambda: engine_tour.run_tour(quick=True, out=tmp / "tour"),
        "plot_hidden_evolution": lambda: plot_hidden_evolution(hidden_evolution(hidden_size=4, n_points=20)),
        "draw_all": lambda: diagrams.draw_all(tmp / "diagrams", dpi=40),
        **{name: getattr(diagrams, name) for name in diagrams.FIGURES},
        "train_series": lambda: _train_series(tmp),
        "train_text": lambda: _train_text(tmp),
        "run_gates": lambda: run_gates(tmp / "text"),
        "run_temperature": lambda: run_temperature(tmp / "text"),
        "plot_driver": lambda: race_plots.plot_driver(table),
        "plot_degradation": lambda: race_plots.plot_degradation(table),
    }


def test_no_library_call_leaves_a_figure_in_pyplot(tmp_path, no_figures):
    for name, call in _figure_calls(tmp_path).items():
        got = call()
        assert plt.get_fignums() == [], name  # was: 2 per run_sine, 26 after 13 calls
        figs = got.figures.values() if hasattr(got, "figures") else [got] if isinstance(got, matplotlib.figure.Figure) else []
        for fig in figs:  # still a whole figure: drawn, saved, shown by Jupyter from the returned object
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=30)
            assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n", name
            fig.canvas.draw()  # a canvas of its own (Agg), as pyplot's figures have
    assert (tmp_path / "tour" / "sine_loss.png").is_file() and (tmp_path / "series" / "forecast.png").is_file()
    assert sorted(p.name for p in (tmp_path / "diagrams").glob("*.png")) == sorted(f"{n}.png" for n in
                                                                                 __import__("lapnet.diagrams").diagrams.FIGURES)


def test_plot_functions_still_draw_into_the_axes_they_are_given(no_figures):
    from lapnet import plots

    fig, ax = plt.subplots()
    assert plots.loss_curves({"GRU": [1.0, 0.5]}, ax=ax) is fig  # the caller's (pyplot) figure, as before
    assert plt.get_fignums() == [fig.number] and len(ax.lines) == 1


def test_experiment_result_save_and_close_still_work(tmp_path, no_figures):
    r = _sine()
    paths = r.save(tmp_path / "sine")
    assert sorted(p.name for p in paths) == ["forecast.png", "loss_curves.png", "metrics.json"]
    r.close()
    assert plt.get_fignums() == []


def test_the_cli_still_writes_its_figures(run_cli, tmp_path, no_figures):
    code, out, err = run_cli("sine", "--hidden", "4", "--archs", "lstm", "--arch-hidden", "4", "--epochs", "2", "--quiet",
                             "--out", tmp_path / "sine")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "sine").glob("*.png")} == {"forecast.png", "loss_curves.png"}
    code, out, err = run_cli("diagrams", "--out", tmp_path / "d", "--dpi", "40")
    assert code == 0, err
    assert len(list((tmp_path / "d").glob("*.png"))) == 4


# --- 4 and 5. run_demo: the user's figures stay open, its lock goes when it ends ---------------

def _fake_parts(monkeypatch, fail: str | None = None):
    import lapnet.demo as demo
    from lapnet import plots

    def fake(name):
        def part(out, sizes, progress, *extra):
            if name == fail:
                raise RuntimeError("boom")
            out.mkdir(parents=True)
            plots.save_figure(plots.loss_curves({"LSTM": [1.0, 0.5]}), out / "loss.png")  # a library figure
            (out / "metrics.json").write_text(json.dumps({"value": 1.5}))
            return demo.PartResult(name, f"fake {name}", f"{name} fine")
        return part

    for name in demo.PARTS:
        monkeypatch.setattr(demo, f"_{name}", fake(name))


def _lock_from_another_process(out: Path) -> subprocess.CompletedProcess:
    code = f"from lapnet.run_dir import lock_run_dir; lock_run_dir({str(out)!r}); print('locked')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_run_demo_keeps_the_users_figures_open(monkeypatch, tmp_path, no_figures):
    from lapnet.demo import run_demo

    _fake_parts(monkeypatch)
    mine, ax = plt.subplots()
    ax.plot([1, 2, 3])
    s = run_demo(tmp_path / "demo", progress=False)
    assert s["ok"]
    assert plt.get_fignums() == [mine.number]  # was: closed with plt.close("all") after every part


def test_run_demo_leaves_pyplot_figures_it_did_not_make_but_closes_a_parts_own(monkeypatch, tmp_path, no_figures):
    import lapnet.demo as demo

    _fake_parts(monkeypatch)
    real_sine = demo._sine

    def sine_with_pyplot(out, sizes, progress):  # a part whose code still draws through pyplot
        plt.figure()
        return real_sine(out, sizes, progress)

    monkeypatch.setattr(demo, "_sine", sine_with_pyplot)
    mine = plt.figure()
    demo.run_demo(tmp_path / "demo", progress=False)
    assert plt.get_fignums() == [mine.number]


def test_run_demo_releases_its_lock_when_it_returns(monkeypatch, tmp_path):
    from lapnet.demo import run_demo
    from lapnet.run_dir import holds_run_lock

    _fake_parts(monkeypatch)
    out = tmp_path / "demo"
    run_demo(out, progress=False)
    assert not holds_run_lock(out) and not (out / ".lapnet.lock").exists()
    got = _lock_from_another_process(out)  # a terminal's `lapnet demo --force --out demo` now may
    assert got.returncode == 0 and got.stdout.strip() == "locked", got.stderr
    run_demo(out, force=True, progress=False)  # and so may this process again
    assert not holds_run_lock(out)


def test_run_demo_releases_its_lock_when_it_raises(monkeypatch, tmp_path):
    import lapnet.demo as demo
    from lapnet.run_dir import holds_run_lock

    _fake_parts(monkeypatch)
    monkeypatch.setenv("LAPNET_DEMO_RAISE", "1")  # a failing part raises instead of being recorded
    monkeypatch.setattr(demo, "_trend", lambda out, sizes, progress: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = tmp_path / "demo"
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(out, progress=False)
    assert not holds_run_lock(out)
    assert _lock_from_another_process(out).returncode == 0


def test_run_demo_keeps_a_lock_its_caller_took(monkeypatch, tmp_path):
    from lapnet.demo import run_demo
    from lapnet.run_dir import holds_run_lock, lock_run_dir, release_run_lock

    _fake_parts(monkeypatch)
    out = tmp_path / "demo"
    out.mkdir()
    lock_run_dir(out)  # as a caller guarding the directory across several calls
    try:
        run_demo(out, progress=False)
        assert holds_run_lock(out)
    finally:
        release_run_lock(out)


# --- 6. race figures on a table without their columns ------------------------------------------

@pytest.mark.parametrize("fn, table, missing", [
    ("plot_driver", pd.DataFrame(), "LapNumber"),
    ("plot_driver", pd.DataFrame({"LapNumber": [1], "LapTime": [90.0]}), "forecast_h1"),
    ("plot_degradation", pd.DataFrame(), "Scored"),
    ("plot_degradation", pd.DataFrame({"Scored": [True]}), "Race"),
])
def test_race_figures_name_the_columns_a_table_lacks(fn, table, missing, no_figures):
    from lapnet.race import plots as race_plots

    with pytest.raises(LapnetError) as e:
        getattr(race_plots, fn)(table)  # was: KeyError 'LapNumber' / 'Scored'
    msg = str(e.value)
    assert msg.startswith(f"{fn}: the table lacks ") and missing in msg and "\n" not in msg
    assert "predict_race" in msg  # what to give instead
    assert plt.get_fignums() == []


def test_plot_driver_refuses_an_empty_table_and_a_non_table(no_figures):
    from lapnet.race.plots import COLUMNS, plot_driver

    with pytest.raises(LapnetError, match=r"^plot_driver: the table has no rows"):
        plot_driver(pd.DataFrame({c: [] for c in COLUMNS["plot_driver"]}))
    with pytest.raises(LapnetError, match=r"^plot_driver: expected a pandas DataFrame .*, got a list"):
        plot_driver([1, 2])


# --- 7. docstrings ---------------------------------------------------------------------------

def test_docstrings_say_what_comes_back_and_what_ctrl_c_does():
    from lapnet.experiments.adding import run_adding
    from lapnet.experiments.engine_tour import run_tour
    from lapnet.experiments.feedforward import run_feedforward
    from lapnet.experiments.gradflow import run_gradflow
    from lapnet.experiments.sine import run_sine
    from lapnet.experiments.trend import run_trend
    from lapnet.race.training import train_race
    from lapnet.series import train_series
    from lapnet.text_runs import train_text

    def doc(f):
        return " ".join(f.__doc__.split())

    for key in ("best_val_loss", "val_bpc", "steps", "stopped", "saved_model"):
        assert f"`{key}`" in doc(train_text), key
    for key in ("train", "validation", "masks", "cleaning"):
        assert f"`{key}`" in doc(train_race), key
    assert '`stopped` == "interrupted"' in doc(train_text) and '`train.stopped` == "interrupted"' in doc(train_series)
    for f in (run_sine, run_trend, run_gradflow, run_adding, run_feedforward, run_tour, train_race, train_text,
              train_series):
        assert "KeyboardInterrupt" in doc(f), f.__name__
