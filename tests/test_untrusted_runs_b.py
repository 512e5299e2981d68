"""Run directories from someone else (a shared run, altered on purpose) are input like any other.

Every loader (`text sample`, `race predict|eval`, `series forecast`) refuses a hostile run in one
line with exit code 2: JSON nested thousands deep or with a 5000-digit integer, sizes that would
build a model of gigabytes (or hang building 10**5 layers) before the weights are compared, NaN
or mistyped fields; and no message quotes a run's text raw on a terminal (escape sequences).
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from lapnet.errors import CheckpointError

DEEP = "[" * 100_000  # RecursionError in json.loads
LONG_INT = '{"a": ' + "9" * 5000 + "}"  # ValueError: Exceeds the limit (4300 digits)
ESC = "\x1b]0;PWNED\x07\x1b[2J"  # retitles the terminal, then clears it


def _refused(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lapnet: error: "), err
    return lines[0]


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _edit(path: Path, change) -> None:
    """Rewrite JSON file `path` with `change(obj)` applied (NaN and infinities written as Python does)."""
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def race_run(tmp_path_factory, sim_races):
    """A tiny race run trained on two simulated races, and the first of them (a training race: eval warns)."""
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig

    _, parts = sim_races
    run = tmp_path_factory.mktemp("race") / "run"
    train_race(parts[:2], run, RaceTrainConfig(hidden_size=8, epochs=1, members=1, progress=False))
    return run, parts[0]


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    from lapnet.series import SeriesConfig, train_series

    d = tmp_path_factory.mktemp("series")
    t = np.arange(120)
    values = 10 + 0.05 * t + np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.1, len(t))
    train_series(values, SeriesConfig(hidden_size=4, window=12, epochs=2, horizon=3, progress=False), d / "run", column="y")
    csv = d / "s.csv"
    csv.write_text("y\n" + "\n".join(f"{v:.6f}" for v in values) + "\n")
    return d / "run", csv


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from lapnet.cli import main

    run = tmp_path_factory.mktemp("text") / "run"
    try:
        main(["text", "train", "--hidden", "8", "--embed", "4", "--seq-len", "16", "--batch", "4",
              "--epochs", "1", "--out", str(run), "--quiet"])
    except SystemExit as e:
        assert e.code in (0, None)
    return run


# ---------------------------------------------------------------------------------------
# 1. JSON nested too deeply, or an integer of 5000 digits


@pytest.mark.parametrize("text, why", [(DEEP, "nested too deeply"), (LONG_INT, "a number with too many digits")])
@pytest.mark.parametrize("which", ["text config.json", "text vocab.json", "race config.json", "series config.json"])
def test_json_too_deep_or_too_long_is_refused_in_one_line(run_cli, tmp_path, race_run, series_run, text_run, which, text, why):
    kind, name = which.split()
    if kind == "text":
        run = _copy(text_run, tmp_path / "run")
        args = ("text", "sample", run)
    elif kind == "race":
        run = _copy(race_run[0], tmp_path / "run")
        args = ("race", "predict", run, race_run[1], "--out", tmp_path / "pred")
    else:
        run = _copy(series_run[0], tmp_path / "run")
        args = ("series", "forecast", run, series_run[1])
    (run / name).write_text(text)
    line = _refused(*run_cli(*args)[::2])
    assert line == f"lapnet: error: {run / name}: not valid JSON ({why})"


@pytest.mark.parametrize("text", [DEEP, LONG_INT])
def test_checkpoint_metadata_too_deep_or_too_long_is_refused(tmp_path, text):
    from safetensors.numpy import save

    from lapnet.checkpoint import DIGEST_KEY, META_KEY, _digest, load_tensors

    arrays = {"w": np.ones(3, np.float32)}
    path = tmp_path / "model.safetensors"
    path.write_bytes(save(arrays, metadata={META_KEY: text, DIGEST_KEY: _digest(arrays, text)}))
    with pytest.raises(CheckpointError) as e:
        load_tensors(path)
    assert str(e.value) == f"{path}: corrupt lapnet metadata"


def test_training_laps_too_deep_is_refused(run_cli, tmp_path, race_run):
    run = _copy(race_run[0], tmp_path / "run")
    (run / "training_laps.json").write_text(DEEP)
    line = _refused(*run_cli("race", "eval", run, race_run[1])[::2])
    assert line == f"lapnet: error: {run / 'training_laps.json'}: not valid JSON (nested too deeply)"


# ---------------------------------------------------------------------------------------
# 2. sizes in a config are checked against the weights (their header) before anything is built


def _builds(monkeypatch, module, name: str) -> list[str]:
    """Record the device (the default one: "meta" or "cpu") of every `module.name(...)` built."""
    import torch

    built, cls = [], getattr(module, name)

    def spy(*args, **kw):
        built.append(torch.get_default_device().type)
        return cls(*args, **kw)

    monkeypatch.setattr(module, name, spy)
    return built


def test_race_hidden_size_too_large_is_refused_before_a_net_is_built(run_cli, tmp_path, race_run, monkeypatch):
    import lapnet.race.runs as runs

    run = _copy(race_run[0], tmp_path / "run")
    _edit(run / "config.json", lambda c: c["model"].__setitem__("hidden_size", 12000))  # 4.8 GB, 36 s
    built = _builds(monkeypatch, runs, "RaceNet")
    line = _refused(*run_cli("race", "predict", run, race_run[1], "--out", tmp_path / "pred")[::2])
    assert line == (f"lapnet: error: {run / 'model.safetensors'}: weights do not fit the model config.json describes "
                    "(forecaster.rnn.weight_ih_l0 is 24x64 in the file, 36000x64 in the model): a run trained by another "
                    "lapnet version? retrain it with `lapnet race train`")
    assert built == ["meta"]  # its shapes only: nothing allocated
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("key", ["model", "tagger"])
def test_race_num_layers_beyond_the_file_is_refused_before_anything_is_built(run_cli, tmp_path, race_run, monkeypatch, key):
    import lapnet.race.runs as runs
    from lapnet.checkpoint import tensor_names

    run = _copy(race_run[0], tmp_path / "run")
    _edit(run / "config.json", lambda c: c[key].__setitem__("num_layers", 10**5))  # hung
    built = _builds(monkeypatch, runs, "RaceNet")
    line = _refused(*run_cli("race", "predict", run, race_run[1], "--out", tmp_path / "pred")[::2])
    where = run / "model.safetensors" if key == "model" else run / "tagger" / "model.safetensors"
    n = len(tensor_names(where))
    assert line.startswith(f"lapnet: error: {where}: weights do not fit the model config.json describes "
                           f"(num_layers 100000, but the file holds only {n} tensors)")
    assert built == ([] if key == "model" else ["meta", "cpu"])  # the tagger's turn comes after the model's


@pytest.mark.parametrize("field, value, said", [
    ("num_layers", 20000, "num_layers is 20000, but model.safetensors holds only 6 tensors"),  # hung
    ("hidden_size", 12000, None),  # 2.5 GB
])
def test_series_sizes_beyond_the_weights_are_refused_before_a_model_is_built(run_cli, tmp_path, series_run, monkeypatch,
                                                                           field, value, said):
    import lapnet.series as series

    run = _copy(series_run[0], tmp_path / "run")
    _edit(run / "config.json", lambda c: c.__setitem__(field, value))
    built = _builds(monkeypatch, series, "Forecaster")
    line = _refused(*run_cli("series", "forecast", run, series_run[1])[::2])
    if said:
        assert line == f"lapnet: error: {run / 'config.json'}: malformed: {said}: retrain the run with lapnet series train"
        assert built == []
    else:
        assert line == (f"lapnet: error: {run / 'model.safetensors'}: weights do not fit the model config.json describes "
                        "(rnn.weight_ih_l0 is 16x1 in the file, 48000x1 in the model): retrain it with lapnet series train")
        assert built == ["meta"]


def _sparse_checkpoint(path: Path, name: str, n: int) -> None:
    """A safetensors file whose one tensor `name` holds n float32 zeros, sparse on disk (no space taken)."""
    header = {"__metadata__": {"lapnet": "{}"}, name: {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + 4 * n)


def test_a_huge_tensor_that_does_not_fit_is_refused_without_reading_it(tmp_path):
    from lapnet.checkpoint import load_tensors

    path = tmp_path / "model.safetensors"
    _sparse_checkpoint(path, "w", 250_000_000)  # 1 GB of zeros: read whole, then refused, before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB
    with pytest.raises(CheckpointError) as e:
        load_tensors(path, {"w": (24, 64)}, hint="retrain it")
    assert str(e.value) == (f"{path}: weights do not fit the model config.json describes (w is 250000000 in the file, "
                            "24x64 in the model): retrain it")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # not the GB it holds


def test_load_tensors_checks_names_before_shapes(tmp_path):
    from lapnet.checkpoint import layout_mismatch, load_tensors, save_tensors

    path = tmp_path / "m.safetensors"
    save_tensors(path, {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)})
    assert layout_mismatch({"a": (2, 3), "b": (4,)}, {"a": (2, 3), "b": (4,)}) is None
    with pytest.raises(CheckpointError, match=r"\(missing c; unexpected b\)$"):
        load_tensors(path, {"a": (2, 3), "c": (4,)})
    arrays, _ = load_tensors(path, {"a": (2, 3), "b": (4,)})
    assert arrays["a"].shape == (2, 3) and arrays["b"].tolist() == [0.0] * 4


# ---------------------------------------------------------------------------------------
# 3. no message lapnet prints on stderr can drive the terminal


def _no_raw_controls(err: str) -> None:
    assert not any(c in err for c in ("\x1b", "\x07", "\x9b")), repr(err)


def test_series_kind_with_escapes_is_shown_escaped(run_cli, tmp_path, series_run):
    run = _copy(series_run[0], tmp_path / "run")
    _edit(run / "config.json", lambda c: c.__setitem__("kind", ESC))
    code, _, err = run_cli("series", "forecast", run, series_run[1])
    _no_raw_controls(err)
    assert _refused(code, err) == f"lapnet: error: {run}: a \\x1b]0;PWNED\\x07\\x1b[2J run, not a series run"


def test_race_feature_names_with_escapes_are_shown_escaped(run_cli, tmp_path, race_run):
    run = _copy(race_run[0], tmp_path / "run")
    _edit(run / "config.json", lambda c: c.__setitem__("features", c["features"][:-1] + [ESC]))
    code, _, err = run_cli("race", "predict", run, race_run[1], "--out", tmp_path / "pred")
    _no_raw_controls(err)
    assert "extra \\x1b]0;PWNED\\x07\\x1b[2J)" in _refused(code, err)


def test_training_race_names_with_escapes_are_shown_escaped(run_cli, tmp_path, race_run):
    run = _copy(race_run[0], tmp_path / "run")
    _edit(run / "training_laps.json", lambda c: c.__setitem__("races", {ESC + k: v for k, v in c["races"].items()}))
    code, _, err = run_cli("race", "eval", run, race_run[1])
    assert code == 0, err
    _no_raw_controls(err)
    warning = next(ln for ln in err.splitlines() if "in-sample" in ln)
    assert warning.startswith("lapnet: warning: race(s) sim_0000 were among the run's training races")
    assert "timed laps are \\x1b]0;PWNED\\x07\\x1b[2Jsim_0000's" in warning


def test_experiment_name_with_escapes_is_shown_escaped(run_cli, tmp_path, text_run):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"experiment": ESC}))
    code, _, err = run_cli("text", "sample", run)
    _no_raw_controls(err)
    assert "(it holds a \\x1b]0;PWNED\\x07\\x1b[2J experiment's output)" in _refused(code, err)


def test_one_line_escapes_c0_and_c1_controls_and_collapses_whitespace():
    from lapnet.cli import one_line

    assert one_line("a\tb\n c\r\x0b\x0c\x1c\x85d") == "a b c d"  # whitespace, as before
    assert one_line("\x00\x08\x1b[31m\x7f\x9b2J\x80") == "\\x00\\x08\\x1b[31m\\x7f\\x9b2J\\x80"
    assert one_line("café → 東京") == "café → 東京"  # printable text untouched


def test_warnings_and_internal_errors_are_escaped_too(run_cli, monkeypatch):
    import warnings

    def hostile(*args, **kw):
        warnings.warn(f"a remark quoting {ESC}")
        raise RuntimeError(f"a bug quoting {ESC}")

    monkeypatch.setattr("lapnet.diagnostics.param_count.param_table", hostile)
    code, _, err = run_cli("params")
    assert code == 1, err
    _no_raw_controls(err)
    assert "lapnet: warning: a remark quoting \\x1b]0;PWNED\\x07\\x1b[2J (UserWarning from test_untrusted_runs_b.py)\n" in err
    assert "lapnet: internal error: RuntimeError: a bug quoting \\x1b]0;PWNED\\x07\\x1b[2J\n" in err
    assert "Traceback (most recent call last):\n" in err  # the traceback keeps its lines


# ---------------------------------------------------------------------------------------
# 4. race run fields outside the nets' sizes


def _phase_source(threshold):
    return lambda c: c.__setitem__("phase_source", {"pit_window": {"threshold": threshold}})


@pytest.mark.parametrize("change, said", [
    (lambda c: c["model"].__setitem__("dropout", float("nan")), "malformed 'model': dropout is nan, not a number in [0, 1)"),
    (lambda c: c["model"].__setitem__("hidden_size", 8.0), "malformed 'model': hidden_size is 8.0, not a whole number from 1 to 65536"),
    (lambda c: c["model"].__setitem__("horizons", 5), "malformed 'model': horizons is 5, not a whole number 10"),
    (lambda c: c["model"].__setitem__("bidirectional", "no"), "malformed 'model': bidirectional is 'no', not true or false"),
    (_phase_source("x"), "malformed: 'phase_source.pit_window.threshold' is 'x', not a probability from 0 to 1"),
    (_phase_source(float("nan")), "malformed: 'phase_source.pit_window.threshold' is nan, not a probability from 0 to 1"),
    (_phase_source(1.5), "malformed: 'phase_source.pit_window.threshold' is 1.5, not a probability from 0 to 1"),
    (lambda c: c.__setitem__("phase_source", {"pit_window": "abc"}), "malformed: 'phase_source.pit_window' is 'abc', not an object"),
    (lambda c: c.__setitem__("phase_source", "abc"), "malformed: 'phase_source' is 'abc', not an object"),
    (lambda c: c["pit_threshold"].__setitem__("threshold", [0.3]), "malformed: 'pit_threshold.threshold' is [0.3], not a probability"),
    (lambda c: c.__setitem__("race_fingerprints", [1]), "malformed: 'race_fingerprints' is [1], not an object"),
    (lambda c: c.__setitem__("race_fingerprints", {"a": 1}), "malformed: 'race_fingerprints' is {'a': 1}, not race names"),
    (lambda c: c["train"].__setitem__("fresh_weight", "x"), "malformed: 'train.fresh_weight' is 'x', not a number >= 0"),
    (lambda c: c["train"].__setitem__("fresh_weight", 10**400), "malformed: 'train.fresh_weight' is 100000000000"),
    (lambda c: c["tyre_wear"]["SOFT"].__setitem__("linear_s", 10**400),  # OverflowError in pit-now
     "malformed: 'tyre_wear.SOFT.linear_s' is 1000000000000000000000000000000000000..., not a finite number"),
    (lambda c: c.__setitem__("masks", 3), "malformed: 'masks' is 3, not an object"),
    (lambda c: c.__setitem__("features", 5), "the run's 'features' is 5, not a list of names"),
])
def test_malformed_race_config_fields_are_refused_naming_the_file_and_field(run_cli, tmp_path, race_run, change, said):
    run = _copy(race_run[0], tmp_path / "run")
    _edit(run / "config.json", change)
    line = _refused(*run_cli("race", "predict", run, race_run[1], "--out", tmp_path / "pred")[::2])
    assert line.startswith(f"lapnet: error: {run / 'config.json'}: {said}"), line
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("text, said", [
    ("[1]", "it holds [1], not an object"),
    ("5", "it holds 5, not an object"),
    ('"zz"', "it holds 'zz', not an object"),
    ('{"races": [1]}', "'races' is [1], not an object"),
    ('{"key": 3, "races": {}}', "'key' is 3, not a text"),
    ('{"races": {"sim_0000": "zz"}}', "the laps of race 'sim_0000' are not lap keys"),
    ('{"races": {"sim_0000": 5}}', "the laps of race 'sim_0000' are not lap keys"),
    ('{"races": {"sim_0000": "' + "f" * 40 + '"}}', "the laps of race 'sim_0000' are not lap keys"),  # OverflowError
    ('{"races": {"sim_0000": "-1 2"}}', "the laps of race 'sim_0000' are not lap keys"),
])
def test_malformed_training_laps_are_refused_naming_the_file(run_cli, tmp_path, race_run, text, said):
    run = _copy(race_run[0], tmp_path / "run")
    (run / "training_laps.json").write_text(text)
    line = _refused(*run_cli("race", "eval", run, race_run[1])[::2])
    assert line.startswith(f"lapnet: error: {run / 'training_laps.json'}: malformed: {said}"), line


def test_well_formed_training_laps_still_find_the_training_race(tmp_path, race_run):
    from lapnet.race.evaluation import read_training_laps

    key, trained = read_training_laps(race_run[0] / "training_laps.json")
    assert isinstance(key, str) and sorted(trained) == ["sim_0000", "sim_0001"]
    assert all(a.dtype == np.uint32 and len(a) > 100 and (np.diff(a.astype(np.int64)) > 0).all() for a in trained.values())


# ---------------------------------------------------------------------------------------
# 5. series run config


@pytest.mark.parametrize("field, value, said", [
    ("mean", float("nan"), "mean is nan, not a finite number within +-2e+150"),
    ("mean", 1e308, "mean is 1e+308, not a finite number within +-2e+150"),
    ("mean", 10**400, "mean is 1000000000000000000000000000000000000..., not a finite number within +-2e+150"),
    ("sd", float("inf"), "sd is inf, not a positive number from 1e-163 to 2e+150"),
    ("sd", 0, "sd is 0, not a positive number from 1e-163 to 2e+150"),
    ("sd", -1.0, "sd is -1.0, not a positive number from 1e-163 to 2e+150"),
    ("window", -5, "window is -5, not a whole number from 1 to 2147483647"),
    ("window", 0, "window is 0, not a whole number from 1 to 2147483647"),
    ("hidden_size", "8", "hidden_size is '8', not a whole number from 1 to 65536"),
    ("hidden_size", 8.9, "hidden_size is 8.9, not a whole number from 1 to 65536"),
    ("num_layers", True, "num_layers is True, not a whole number from 1 to 2147483647"),
    ("arch", "transformer", "arch is 'transformer', not one of rnn, lstm, gru"),
    ("difference", "false", "difference is 'false', not true or false"),
    ("column", ["y"], "column is ['y'], not a column's name"),
])
def test_malformed_series_config_is_refused(run_cli, tmp_path, series_run, field, value, said):
    run = _copy(series_run[0], tmp_path / "run")
    _edit(run / "config.json", lambda c: c.__setitem__(field, value))
    code, out, err = run_cli("series", "forecast", run, series_run[1])
    assert _refused(code, err) == f"lapnet: error: {run / 'config.json'}: malformed: {said}: retrain the run with lapnet series train"
    assert out == ""


def test_a_well_formed_series_run_still_forecasts(run_cli, series_run):
    from lapnet.series import load_series_run

    model, config = load_series_run(series_run[0])
    assert (config["hidden_size"], config["num_layers"], config["window"], config["difference"]) == (4, 1, 12, True)
    code, out, err = run_cli("series", "forecast", series_run[0], series_run[1], "--steps", "3")
    assert code == 0, err
    rows = out.strip().splitlines()
    assert rows[0] == "step,forecast" and len(rows) == 4 and all(np.isfinite(float(r.split(",")[1])) for r in rows[1:])
