"""Issue 2's part of `lapnet demo`: the library function behind the engine tour (`lapnet.experiments.engine_tour.run_tour`) and bad input."""

from __future__ import annotations

import json

from lapnet.experiments.engine_tour import run_tour


# The CLI's engine verdict line is checked on the shared quick demo in tests/test_demo.py.


def test_run_tour_saves_metrics_figure_and_run(tmp_path):
    res = run_tour(quick=True, out=tmp_path)
    assert [r["layer"] for r in res["parity"]] == ["RNN (tanh)", "LSTM", "GRU", "RNN ref", "LSTM ref", "GRU ref"]
    assert [r["tensors"] for r in res["parity"]] == [16, 16, 16, 4, 4, 4]  # 2 layers x 2 directions; 1 layer
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
