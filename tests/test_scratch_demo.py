"""Issue 2's part of `lapnet demo`: the engine tour through the CLI (`--quick`), the
library function behind it (`lapnet.scratch.tour.run_tour`) and bad input."""

from __future__ import annotations

import json
import re

from lapnet.scratch.tour import run_tour


def test_demo_quick_prints_the_engine_verdict(run_cli, tmp_path):
    code, stdout, stderr = run_cli("demo", "--quick", "--out", tmp_path / "demo")
    assert code == 0, stderr
    m = re.search(r"max \|difference\| ([0-9.e+-]+); gradcheck: max relative error ([0-9.e+-]+); "
                  r"sine MSE ([0-9.]+) -> ([0-9.]+)", stdout)
    assert m, stdout
    parity, grad_err, first, last = (float(v) for v in m.groups())
    assert parity < 1e-10 and grad_err < 1e-6
    assert last < first / 20  # the loss falls by more than an order of magnitude
    flat = " ".join(stderr.split())  # rich may wrap a title
    for title in ("max |engine - torch|", "gradient check", "loss falling"):
        assert title in flat


def test_run_tour_saves_metrics_figure_and_run(tmp_path):
    res = run_tour(quick=True, out=tmp_path)
    assert [r["layer"] for r in res["parity"]] == ["RNN (tanh)", "LSTM", "GRU"]
    for r in res["parity"]:
        assert max(r[k] for k in ("output", "final state", "dL/dx", "dL/d state0", "dL/d weights")) < 1e-10
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(r["ok (< 1e-6)"] == "yes" for r in metrics["gradcheck"])
    losses = metrics["sine"]["train_loss"]
    assert len(losses) == metrics["sine"]["config"]["epochs"] and losses[-1] < losses[0] / 20
    assert metrics["sine"]["val_loss"][-1] < metrics["sine"]["val_loss"][0] / 20
    assert (tmp_path / "sine_loss.png").stat().st_size > 10_000
    assert (tmp_path / "sine" / "model.safetensors").is_file()


def test_demo_out_that_is_a_file_is_refused(run_cli, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    code, stdout, err = run_cli("demo", "--quick", "--out", f)
    assert code == 2 and "is a file" in err and err.startswith("lapnet: error:")
    assert f.read_text() == "keep me"
