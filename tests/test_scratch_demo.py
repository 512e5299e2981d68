"""`lapnet demo --quick` (issue 2's part of the tour) through the CLI, and its bad input."""

from __future__ import annotations

import json
import re


def test_demo_quick_shows_parity_gradcheck_and_a_falling_sine_loss(run_cli, tmp_path):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli("demo", "--quick", "--out", out)
    assert code == 0, stderr
    m = re.search(r"max \|difference\| ([0-9.e+-]+); gradcheck: max relative error ([0-9.e+-]+); "
                  r"sine MSE ([0-9.]+) -> ([0-9.]+)", stdout)
    assert m, stdout
    parity, grad_err, first, last = (float(v) for v in m.groups())
    assert parity < 1e-10 and grad_err < 1e-6
    assert last < first / 20  # the loss falls by more than an order of magnitude
    for title in ("max |engine - torch|", "gradient check", "loss falling"):
        assert title in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["layer"] for r in metrics["parity"]] == ["RNN (tanh)", "LSTM", "GRU"]
    assert all(r["ok (< 1e-6)"] == "yes" for r in metrics["gradcheck"])
    losses = metrics["sine"]["train_loss"]
    assert len(losses) == metrics["sine"]["config"]["epochs"] and losses[-1] < losses[0] / 20
    assert (out / "sine_loss.png").stat().st_size > 10_000
    assert (out / "sine" / "model.safetensors").is_file()

    code, _, err = run_cli("demo", "--quick", "--out", out)  # a second run must not overwrite the first
    assert code == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1


def test_demo_out_that_is_a_file_is_refused(run_cli, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    code, stdout, err = run_cli("demo", "--quick", "--out", f)
    assert code == 2 and "is a file" in err and err.startswith("lapnet: error:")
    assert f.read_text() == "keep me"
