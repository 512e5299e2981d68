"""The experiment commands at the edges of float32 (one line, exit 2, nothing left behind; a
divergence named with its step, not an internal error, and no raw NumPy warnings), and
`--clip 0` meaning "off" in `adding` as in `text train`."""

from __future__ import annotations

import json

import pytest

SINE = ["sine", "--epochs", "3", "--hidden", "4", "--arch", "lstm", "--quiet"]
TREND = ["trend", "--epochs", "2", "--train", "32", "--test", "16", "--hidden", "4", "--quiet"]
ADDING = ["adding", "--lengths", "10", "--arch", "gru", "--hidden", "4", "--batch", "8", "--max-steps", "4",
          "--eval-every", "2", "--quiet"]


def _one_error_line(code: int, stderr: str, match: str) -> str:
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("lapnet: error:") and match in lines[0], stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("cmd", [SINE, TREND, ADDING], ids=["sine", "trend", "adding"])
@pytest.mark.parametrize("lr", ["1e300", "1e-300"])
def test_a_learning_rate_outside_float32_is_refused(run_cli, tmp_path, cmd, lr):
    out = tmp_path / "out"
    code, _, err = run_cli(*cmd, "--lr", lr, "--out", out)
    _one_error_line(code, err, "--lr must be a positive number within float32's range")
    assert not out.exists()


@pytest.mark.parametrize("engine", ["torch", "numpy"])
@pytest.mark.parametrize("cmd", [SINE, TREND, ADDING], ids=["sine", "trend", "adding"])
def test_lr_1e38_is_reported_as_a_divergence_with_its_step(run_cli, tmp_path, cmd, engine):
    # torch's Adam raised "RuntimeError: value cannot be converted to type float without
    # overflow" (an internal error, exit 1); the NumPy engine printed NumPy's overflow warnings
    out = tmp_path / "out"
    code, _, err = run_cli(*cmd, "--lr", "1e38", "--engine", engine, "--out", out)
    line = _one_error_line(code, err, "at step")
    if engine == "torch":
        assert "the update overflowed at step 1 (epoch 1): lr 1e+38" in line
    else:
        assert "became nan" in line or "became inf" in line
    assert "warning" not in err and not out.exists()


def test_adding_clip_0_turns_clipping_off_as_in_text_train(run_cli, tmp_path):
    code, stdout, err = run_cli(*ADDING, "--clip", "0", "--out", tmp_path / "off", "--json")
    assert code == 0, err
    assert json.loads(stdout)["config"]["clip"] is None
    code, stdout, err = run_cli(*ADDING, "--out", tmp_path / "on", "--json")
    assert code == 0 and json.loads(stdout)["config"]["clip"] == 1.0
    for bad in ("-1", "nan"):
        code, _, err = run_cli(*ADDING, "--clip", bad, "--out", tmp_path / "bad")
        _one_error_line(code, err, "--clip must be a positive number, or 0 (off)")
    assert not (tmp_path / "bad").exists()


def test_clip_help_says_0_is_off_wherever_clip_exists(run_cli):
    for cmd in (["adding"], ["text", "train"]):
        code, out, _ = run_cli(*cmd, "--help")
        assert code == 0 and "(0: off)" in " ".join(out.split())
