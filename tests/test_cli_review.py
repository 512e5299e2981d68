"""Findings of a new user's review of the non-race commands, each pinned by a test.

A used --out is refused by `hidden` and `diagrams` too; the text commands name a race run
as such; Ctrl-C in `text train` exits 130; gradflow's decay rate agrees with its ratio
column; `adding` and `sine` print numbers that read as their names say.
"""

from __future__ import annotations

import json

import numpy as np
import pytest


def _refused(code: int, err: str) -> str:
    """Exit code 2 and exactly one `lapnet: error:` line on stderr; returns that line."""
    errors = [line for line in err.splitlines() if line.startswith("lapnet: error:")]
    assert code == 2 and len(errors) == 1, f"exit {code}\n{err[-1500:]}"
    assert "Traceback" not in err
    return errors[0]


def _snapshot(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# ---------------------------------------------------------------------------------------
# 1. hidden and diagrams refuse a used --out unless --force

TEACH = {
    "hidden": ("hidden", "--hidden", "2", "--points", "5", "--dpi", "10"),
    "diagrams": ("diagrams", "--dpi", "10"),
}


@pytest.mark.parametrize("cmd", list(TEACH))
def test_teach_commands_refuse_a_used_out(run_cli, tmp_path, cmd):
    out = tmp_path / "someone_elses_run"
    out.mkdir()
    (out / "metrics.json").write_text('{"theirs": 1}')
    (out / "model.safetensors").write_bytes(b"weights")
    before = _snapshot(out)
    line = _refused(*run_cli(*TEACH[cmd], "--out", out)[::2])
    assert "already holds files" in line and "--force" in line
    assert _snapshot(out) == before  # byte for byte, nothing added


@pytest.mark.parametrize("cmd", list(TEACH))
def test_teach_commands_second_run_needs_force(run_cli, tmp_path, cmd):
    out = tmp_path / cmd
    code, _, err = run_cli(*TEACH[cmd], "--out", out)
    assert code == 0, err
    first = _snapshot(out)
    _refused(*run_cli(*TEACH[cmd], "--out", out)[::2])
    assert _snapshot(out) == first
    code, _, err = run_cli(*TEACH[cmd], "--out", out, "--force")
    assert code == 0, err
    assert sorted(_snapshot(out)) == sorted(first)


# ---------------------------------------------------------------------------------------
# 3. a race run given to the text commands is named as such


@pytest.fixture
def race_run(tmp_path):
    """A directory shaped like `lapnet race train`'s (config.json keys as it writes them);
    no race is trained: the text commands must refuse it from config.json alone."""
    run = tmp_path / "race"
    run.mkdir()
    config = {"kind": "lapnet-race", "features": ["lap_time", "tyre_age"], "compounds": ["SOFT", "MEDIUM"],
              "races": ["2023_Bahrain"], "val_races": [], "model": {"arch": "gru", "hidden": 32, "layers": 1}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "model.safetensors").write_bytes(b"not read")
    return run


RUN_COMMANDS = {
    "text sample": lambda run, tmp: ["text", "sample", run, "--length", "5"],
    "text eval": lambda run, tmp: ["text", "eval", run, tmp / "some.txt"],
    "gates": lambda run, tmp: ["gates", run, "--quiet", "--out", tmp / "used"],
    "temperature": lambda run, tmp: ["temperature", run, "--quiet", "--out", tmp / "used"],
}


@pytest.fixture
def used_out(tmp_path):
    """An --out that already holds files: the run must be refused first, in its own words."""
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "metrics.json").write_text("{}")
    (tmp_path / "some.txt").write_text("To be or not to be")
    return tmp_path / "used"


@pytest.mark.parametrize("cmd", list(RUN_COMMANDS))
def test_a_race_run_is_not_a_text_run(run_cli, tmp_path, race_run, used_out, cmd):
    before = _snapshot(race_run)
    line = _refused(*run_cli(*RUN_COMMANDS[cmd](race_run, tmp_path))[::2])
    assert f"{race_run} is a race run, not a text run" in line
    assert "vocab_size" not in line and "--out" not in line
    assert _snapshot(race_run) == before and _snapshot(used_out) == {"metrics.json": b"{}"}


@pytest.mark.parametrize("config", [{"kind": "something-else", "model": {"vocab_size": 3}}, {"weights": "x"}])
@pytest.mark.parametrize("cmd", list(RUN_COMMANDS))
def test_a_foreign_run_is_not_a_lapnet_text_run(run_cli, tmp_path, used_out, cmd, config):
    run = tmp_path / "foreign"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    line = _refused(*run_cli(*RUN_COMMANDS[cmd](run, tmp_path))[::2])
    assert f"{run} is not a lapnet text run" in line and "--out" not in line


# ---------------------------------------------------------------------------------------
# 4. gradflow: the per-step factor agrees with the ratio it sits beside


def test_decay_summary_agrees_with_the_ratio():
    from lapnet.experiments.gradflow import decay_summary

    # a trained gated model's shape: most of the gradient is lost in the first step back
    norms = np.array([1.0, 0.1, 0.1 * 0.99, 0.1 * 0.99 ** 2, 0.1 * 0.99 ** 3])
    d = decay_summary(norms)
    assert d["ratio_first_to_last"] == pytest.approx(0.1 * 0.99 ** 3)
    assert d["decay_per_step"] ** 4 == pytest.approx(d["ratio_first_to_last"])
    assert d["decay_per_step"] == pytest.approx((0.1 * 0.99 ** 3) ** 0.25)
    assert d["first_step_factor"] == pytest.approx(0.1)
    assert d["decay_fit_beyond_first"] == pytest.approx(0.99)  # the fit past the first step, named as such
    assert decay_summary(np.array([1.0, 0.0]))["decay_per_step"] is None


def test_gradflow_command_factor_and_ratio_agree(run_cli, tmp_path):
    T = 6
    code, out, err = run_cli("gradflow", "--archs", "rnn,lstm", "--hidden", "4", "--length", T, "--steps", "3",
                             "--clip-steps", "0", "--engine", "torch", "--quiet", "--json", "--out", tmp_path / "g")
    assert code == 0, err
    m = json.loads(out)
    for arch, entry in m["archs"].items():
        for phase in ("init", "trained"):
            e = entry[phase]
            norms = np.asarray(e["norms"])
            assert len(norms) == T
            assert e["ratio_first_to_last"] == pytest.approx(norms[-1] / norms[0])
            assert e["decay_per_step"] ** (T - 1) == pytest.approx(e["ratio_first_to_last"], rel=1e-9), (arch, phase)
            assert e["first_step_factor"] == pytest.approx(norms[1] / norms[0])


# ---------------------------------------------------------------------------------------
# 5. adding says "not within N"; sine's min_mse is never above final_mse


def test_adding_table_says_not_within_the_budget(run_cli, tmp_path):
    code, out, err = run_cli("adding", "--archs", "rnn", "--lengths", "5", "--hidden", "2", "--batch", "4",
                             "--max-steps", "2", "--eval-every", "1", "--json", "--out", tmp_path / "a")
    assert code == 0, err
    m = json.loads(out)
    assert m["table"][0]["steps_to_solve"] is None  # metrics.json keeps null, as documented
    assert "not within 2" in err and "None" not in err


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_sine_min_mse_is_the_lowest_seen(run_cli, tmp_path, engine):
    code, out, err = run_cli("sine", "--hidden", "4", "--archs", "lstm", "--arch-hidden", "4", "--epochs", "3",
                             "--horizon", "2", "--engine", engine, "--quiet", "--json", "--out", tmp_path / "s")
    assert code == 0, err
    r = json.loads(out)["hidden_size"]["4"]
    assert len(r["loss_curve"]) == 3
    assert r["loss_curve"][-1] > r["final_mse"]  # still falling after 3 epochs: the case that showed the bug
    assert r["min_mse"] == pytest.approx(min(*r["loss_curve"], r["final_mse"]))
    assert r["min_mse"] <= r["final_mse"]


# ---------------------------------------------------------------------------------------
# 2. text train runs on one thread unless told otherwise

TINY_TEXT = ["--hidden", "8", "--embed", "4", "--seq-len", "8", "--batch", "2", "--epochs", "1", "--quiet"]


@pytest.fixture
def restore_threads():
    import torch

    from lapnet.cli.common import set_threads

    yield torch
    set_threads(1)  # conftest's setting, for the tests after this one


@pytest.mark.parametrize("given,expected", [((), 1), (("--threads", "2"), 2)])
def test_text_train_threads(run_cli, tmp_path, restore_threads, given, expected):
    torch = restore_threads
    torch.set_num_threads(2 if expected == 1 else 1)  # as a fresh process would have on 2 cores
    code, _, err = run_cli("text", "train", *TINY_TEXT, *given, "--out", tmp_path / "run")
    assert code == 0, err
    assert torch.get_num_threads() == expected
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_text_train_threads_below_one_is_refused(run_cli, tmp_path):
    line = _refused(*run_cli("text", "train", *TINY_TEXT, "--threads", "0", "--out", tmp_path / "run")[::2])
    assert "--threads must be at least 1" in line and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# 6. Ctrl-C in text train: checkpoint, advice once, exit 130


def test_interrupted_text_train_exits_130_and_resumes(run_cli, tmp_path, monkeypatch):
    from lapnet import train

    def ctrl_c_at_once(self):  # no real signal: the flag fit's SIGINT handler sets, set up front
        self.hit = True
        return self

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(train._StopSignal, "__enter__", ctrl_c_at_once)
        code, out, err = run_cli("text", "train", *TINY_TEXT[:-3], "--epochs", "5", "--quiet", "--json", "--out", run)
    assert code == 130, err
    flat = " ".join(err.split())  # rich wraps the line at the terminal width
    assert flat.count("interrupted at step 1") == 1 and flat.count("continue with --resume") == 1, err
    assert err.strip().splitlines()[-1] == "lapnet: error: interrupted" and "Traceback" not in err
    assert json.loads(out)["stopped"] == "interrupted"  # --json still prints what was saved
    assert json.loads((run / "metrics.json").read_text())["stopped"] == "interrupted"
    assert (run / "last.safetensors").is_file()
    code, out, err = run_cli("text", "train", *TINY_TEXT[:-3], "--epochs", "2", "--quiet", "--json", "--resume",
                             "--out", run)
    assert code == 0, err
    assert json.loads(out)["stopped"] == "epochs" and json.loads(out)["steps"] > 1
