"""`lapnet report` shows a run's own figures only (not those an earlier run left behind), a text
run's samples, and its loss against training steps with the saved step marked; `--force` takes
away the figures of the result it replaces."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt

from lapnet.report import build_report


def _png(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path, format="png", dpi=40)
    plt.close(fig)


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,[^"]*" alt="([^"]*)"', page)


def test_force_removes_the_figures_of_the_result_it_replaces(run_cli, tmp_path):
    out = tmp_path / "mix"
    code, _, err = run_cli("trend", "--epochs", "1", "--train", "8", "--test", "4", "--length", "5", "--out", out, "--quiet")
    assert code == 0, err
    (out / "mine.png").write_bytes((out / "trend_examples.png").read_bytes())  # not the run's: must stay
    code, _, err = run_cli("sine", "--hidden", "2", "--archs", "gru", "--arch-hidden", "2", "--epochs", "1",
                           "--horizon", "2", "--out", out, "--force", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["forecast.png", "loss_curves.png", "metrics.json", "mine.png"]
    page = build_report(out).read_text(encoding="utf-8")
    assert sorted(_images(page)) == ["Forecast", "Loss curves"]
    assert "not shown: mine.png" in page


def test_report_embeds_the_figures_metrics_json_lists_by_name_or_path(tmp_path):
    run = tmp_path / "race"
    run.mkdir()
    for name in ("degradation.png", "forecast_x_VER.png", "old.png"):
        _png(run / name)
    # race predict lists its figures as paths; an image it does not list is not this run's
    (run / "metrics.json").write_text(json.dumps({"figures": [str(run / "degradation.png"),
                                                              "somewhere/else/forecast_x_VER.png"]}))
    page = build_report(run).read_text(encoding="utf-8")
    assert sorted(_images(page)) == ["Degradation", "Forecast x VER"]
    assert "not shown: old.png" in page
    # a run whose metrics.json names no figures: every image is shown, as before
    (run / "metrics.json").write_text(json.dumps({"steps": 3}))
    assert len(_images(build_report(run).read_text(encoding="utf-8"))) == 3


def test_a_text_run_report_has_samples_and_loss_by_step_with_the_saved_step(run_cli, tmp_path, monkeypatch):
    run = tmp_path / "text"
    code, _, err = run_cli("text", "train", "--out", run, "--hidden", "8", "--embed", "4", "--seq-len", "16",
                           "--epochs", "6", "--eval-every", "2", "--quiet")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    samples = (run / "samples.txt").read_text(encoding="utf-8")
    assert f"model.safetensors (step {metrics['saved_model']['step']})" in samples and "--- greedy" in samples

    from lapnet import plots

    seen = {}
    real = plots.loss_curves

    def spy(curves, **kw):
        seen.update(kw, curves=curves)
        return real(curves, **kw)

    monkeypatch.setattr(plots, "loss_curves", spy)
    page = build_report(run).read_text(encoding="utf-8")
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert seen["x"] == steps == [2, 4, 6] and seen["xlabel"] == "training step"
    assert seen["vline"] == metrics["saved_model"]["step"]
    assert seen["vline_label"] == f"saved model (step {metrics['saved_model']['step']})"
    assert "Samples (samples.txt)" in page and "--- greedy (--temperature 0)" in page
    # a run without validation names its logged loss for what it is
    code, _, err = run_cli("text", "train", "--out", tmp_path / "noval", "--hidden", "8", "--embed", "4",
                           "--seq-len", "16", "--epochs", "2", "--val-frac", "0", "--quiet")
    assert code == 0, err
    build_report(tmp_path / "noval")
    assert "training text loss (no validation)" in seen["curves"] and seen["vline"] == 2
    png = base64.b64decode(re.search(r'data:image/png;base64,([^"]*)"', page).group(1))
    assert png.startswith(b"\x89PNG")
