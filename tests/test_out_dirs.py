"""Output directories and refusals: a command that refuses its input leaves the disk as it was.

No empty --out directory is left behind when the refusal is found after --out was created
(a corrupt run, a bad lap table), a directory that existed before is never removed, and a
directory standing where a file must be written is refused before anything is written or
deleted (`sine --force` used to rewrite its figures first, `text train --force` to delete
the run first).
"""

from __future__ import annotations

import pytest

from lapnet.errors import LapnetError


def _refused(code: int, err: str) -> str:
    """Exit code 2 and exactly one `lapnet: error:` line on stderr; returns that line."""
    errors = [line for line in err.splitlines() if line.startswith("lapnet: error:")]
    assert code == 2 and len(errors) == 1, f"exit {code}\n{err[-1500:]}"
    assert "Traceback" not in err
    return errors[0]


@pytest.fixture
def inputs(tmp_path):
    """A run directory that is not a run, and a lap table with the wrong columns."""
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "wrong_columns.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    return tmp_path


# each refusal comes after the command created --out: from the run or the lap table it reads
LATE_REFUSALS = [
    ("gates: not a run", "gates {i}/not_a_run --text abc --quiet --out {o}"),
    ("temperature: not a run", "temperature {i}/not_a_run --quiet --out {o}"),
    ("race train: wrong columns", "race train {i}/wrong_columns.csv --epochs 1 --hidden 4 --quiet --out {o}"),
    ("race eval: not a run", "race eval {i}/not_a_run {i}/wrong_columns.csv --quiet --out {o}"),
    ("race predict: not a run", "race predict {i}/not_a_run {i}/wrong_columns.csv --quiet --out {o}"),
]


def _argv(template: str, inputs, out) -> list[str]:
    return template.format(i=inputs, o=out).split()


@pytest.mark.parametrize("template", [t for _, t in LATE_REFUSALS], ids=[n for n, _ in LATE_REFUSALS])
def test_a_late_refusal_leaves_no_new_directory(template, inputs, run_cli, tmp_path):
    out = tmp_path / "new" / "deeper" / "out"  # three levels the command has to create
    _refused(*run_cli(*_argv(template, inputs, out))[::2])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("template", [t for _, t in LATE_REFUSALS], ids=[n for n, _ in LATE_REFUSALS])
def test_a_late_refusal_keeps_directories_that_existed(template, inputs, run_cli, tmp_path):
    mine = tmp_path / "mine"
    (mine / "empty").mkdir(parents=True)
    _refused(*run_cli(*_argv(template, inputs, mine / "empty"))[::2])
    assert (mine / "empty").is_dir()  # existed before, empty: still there
    _refused(*run_cli(*_argv(template, inputs, mine / "empty" / "new"))[::2])
    assert (mine / "empty").is_dir() and not (mine / "empty" / "new").exists()


def test_undo_removes_only_new_empty_directories(tmp_path):
    from lapnet.cli.common import make_dir, undo_new_dirs_on_failure

    (tmp_path / "old").mkdir()
    with pytest.raises(LapnetError):
        with undo_new_dirs_on_failure():
            make_dir(tmp_path / "old" / "a" / "b" / "c")
            (tmp_path / "old" / "a" / "keep.txt").write_text("written by the command before it failed")
            raise LapnetError("refused")
    assert not (tmp_path / "old" / "a" / "b").exists()  # new and empty: gone
    assert (tmp_path / "old" / "a" / "keep.txt").is_file()  # holds a file: kept, as is its parent
    with pytest.raises(SystemExit):
        with undo_new_dirs_on_failure():
            make_dir(tmp_path / "ok")
            raise SystemExit(0)  # success: nothing is undone
    assert (tmp_path / "ok").is_dir()


def test_sine_force_over_a_metrics_directory_writes_no_figure(run_cli, tmp_path):
    out = tmp_path / "sine"
    (out / "metrics.json").mkdir(parents=True)
    (out / "loss_curves.png").write_bytes(b"the previous figure")
    line = _refused(*run_cli("sine", "--hidden", "2", "--archs", "rnn", "--epochs", "1", "--horizon", "2",
                             "--engine", "numpy", "--quiet", "--force", "--out", out)[::2])
    assert "metrics.json" in line
    assert (out / "loss_curves.png").read_bytes() == b"the previous figure"
    assert sorted(p.name for p in out.iterdir()) == ["loss_curves.png", "metrics.json"]


def test_hidden_over_a_metrics_directory_writes_no_figure(run_cli, tmp_path):
    out = tmp_path / "hidden"
    (out / "metrics.json").mkdir(parents=True)
    assert "metrics.json" in _refused(*run_cli("hidden", "--points", "5", "--force", "--out", out)[::2])
    assert not (out / "hidden_states.png").exists()


def test_diagrams_over_a_figure_directory_draws_nothing(run_cli, tmp_path):
    from lapnet.diagrams import FIGURES

    last = list(FIGURES)[-1]
    (tmp_path / "d" / f"{last}.png").mkdir(parents=True)
    assert f"{last}.png" in _refused(*run_cli("diagrams", "--dpi", "10", "--force", "--out", tmp_path / "d")[::2])
    assert [p.name for p in (tmp_path / "d").iterdir()] == [f"{last}.png"]


def test_text_train_force_over_a_metrics_directory_deletes_nothing(run_cli, tmp_path):
    run = tmp_path / "run"
    (run / "metrics.json").mkdir(parents=True)
    (run / "config.json").write_text('{"kind": "charlm"}')
    line = _refused(*run_cli("text", "train", "--hidden", "4", "--embed", "2", "--seq-len", "8", "--batch", "2",
                             "--epochs", "1", "--quiet", "--force", "--out", run)[::2])
    assert "metrics.json" in line
    assert (run / "config.json").read_text() == '{"kind": "charlm"}'


def test_demo_force_over_a_metrics_directory_removes_nothing(run_cli, tmp_path):
    out = tmp_path / "demo"
    (out / "metrics.json").mkdir(parents=True)
    (out / "engine").mkdir()
    (out / "engine" / "previous.png").write_bytes(b"a previous demo's figure")
    assert "metrics.json" in _refused(*run_cli("demo", "--quick", "--force", "--out", out)[::2])
    assert (out / "engine" / "previous.png").is_file()


def test_experiment_result_checks_every_target_before_writing(tmp_path):
    import matplotlib.pyplot as plt

    from lapnet.experiments.result import ExperimentResult

    result = ExperimentResult("toy", {"x": 1}, figures={"first": plt.figure(), "second": plt.figure()})
    (tmp_path / "second.png").mkdir()
    with pytest.raises(LapnetError, match="second.png"):
        result.save(tmp_path)
    result.close()
    assert [p.name for p in tmp_path.iterdir()] == ["second.png"]  # first.png was not written either


@pytest.mark.parametrize("cmd", ["eval", "predict"])
def test_race_eval_and_predict_refuse_a_bad_out_before_the_work(cmd, inputs, run_cli, tmp_path):
    """A file as --out, or a directory where metrics.json must go: refused before the run is read."""
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    line = _refused(*run_cli("race", cmd, inputs / "not_a_run", inputs / "wrong_columns.csv", "--out", a_file)[::2])
    assert "is a file" in line and a_file.read_text() == "keep me"
    (tmp_path / "o" / "metrics.json").mkdir(parents=True)
    line = _refused(*run_cli("race", cmd, inputs / "not_a_run", inputs / "wrong_columns.csv", "--out", tmp_path / "o")[::2])
    assert "metrics.json: is a directory" in line


def test_one_out_dir_check_for_commands_and_text_runs(run_cli, tmp_path):
    """`text train` (through the library's train_text) and the other commands share
    run_dir.check_out_dir: the same refusals, worded for what each --out holds."""
    from lapnet.run_dir import check_out_dir
    from lapnet.text_runs import train_text

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("keep me")
    line = _refused(*run_cli("sine", "--out", full)[::2])
    assert line.endswith(f"--out {full}: already holds files (use --force to overwrite it)")
    line = _refused(*run_cli("text", "train", "--epochs", "1", "--out", full)[::2])
    assert line.endswith(f"--out {full}: is not empty (1 file: keep.txt) and holds none of the files this command "
                         f"writes: give a new or empty directory, or --force to write them beside what is there "
                         f"(which is kept)")
    line = _refused(*run_cli("text", "train", "--epochs", "1", "--resume", "--force", "--out", full)[::2])
    assert line.endswith("--resume and --force contradict each other: pick one")
    with pytest.raises(LapnetError, match="is not empty"):
        train_text(None, full)
    (full / "metrics.json").write_text("{}")  # one of the files a run writes: now it holds a run
    line = _refused(*run_cli("text", "train", "--epochs", "1", "--out", full)[::2])
    assert line.endswith(f"--out {full}: already holds a run (use --resume to continue it or --force to overwrite)")
    (full / "metrics.json").unlink()
    with pytest.raises(LapnetError, match="contradict"):
        check_out_dir(tmp_path / "new", resume=True, force=True)
    assert not (tmp_path / "new").exists() and (full / "keep.txt").read_text() == "keep me"
    assert check_out_dir(tmp_path / "later", create=False) == tmp_path / "later" and not (tmp_path / "later").exists()
    assert check_out_dir(tmp_path / "now" / "deep").is_dir()
