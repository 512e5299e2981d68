"""`lapnet report`: the HTML built from a small fake run, its tables and embedded figures,
bad input through the CLI, and the page rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from lapnet.errors import LapnetError
from lapnet.report import build_report

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from report_browser import check_in_browser, find_chromium  # noqa: E402


class Page(HTMLParser):
    """The parts of a page the tests look at: images, tables (with their cells), <pre> texts."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict] = []
        self.tables: list[dict] = []  # {"class": ..., "cells": [text, ...]}
        self.pres: list[str] = []
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self.tables.append({"class": a.get("class"), "cells": []})
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "pre":
            self._pre = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["cells"].append("".join(self._cell))
            self._cell = None
        elif tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self._pre.append(data)


def _png(path: Path, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    ax.set_title(title)
    fig.savefig(path, format="png", dpi=60)
    plt.close(fig)
    return path.read_bytes()


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    """A run directory as lapnet writes them: config, nested metrics, a log, a figure in a
    sub-directory, samples; plus files the report must leave alone."""
    run = tmp_path / "run"
    (run / "figs").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(
        {"kind": "charlm", "model": {"arch": "lstm", "hidden": 24}, "train": {"lr": 0.003, "clip": None}}))
    (run / "metrics.json").write_text(json.dumps({
        "val_loss": 1.234567, "steps": 40, "stopped": "max_steps",
        "architecture": {"rnn": {"final_mse": 0.125, "curve": [float(i) for i in range(50)]},
                         "lstm": {"final_mse": 0.0625, "curve": [1.0, 0.5]}},
        "table": [{"model": "GRU H=8", "mae": 0.5}, {"model": "baseline", "mae": 0.75}],
    }))
    log = [{"step": s, "epoch": s / 10, "train_loss": 3.0 / s, "val_loss": 3.5 / s} for s in (10, 20, 30)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"step": 4')  # torn last line
    _png(run / "figs" / "loss_curve.png", "fake")
    (run / "samples.json").write_text(json.dumps({"0.5": ["To be <b>or</b> not"], "1.0": ["Hamlet & Ophelia"]}))
    (run / "model.safetensors").write_bytes(b"not shown")
    return run


def test_report_holds_config_metrics_log_figures_and_samples(fake_run: Path):
    path = build_report(fake_run)
    assert path == fake_run / "report.html"
    text = path.read_text(encoding="utf-8")
    page = Page(text)

    # self-contained: no script, no stylesheet link, nothing fetched from a network
    assert "<script" not in text and "<link" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)

    # two images: the run's PNG (byte for byte) and the loss figure drawn from log.jsonl
    assert len(page.images) == 2
    srcs = [img["src"] for img in page.images]
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    decoded = [base64.b64decode(s.split(",", 1)[1]) for s in srcs]
    assert (fake_run / "figs" / "loss_curve.png").read_bytes() in decoded
    assert all(d.startswith(b"\x89PNG\r\n\x1a\n") for d in decoded)
    assert "Loss curve" in text  # caption from the file name

    # config flattened into dotted keys; None shown as a dash
    config = next(t for t in page.tables if t["class"] == "config")["cells"]
    assert config[config.index("model.hidden") + 1] == "24"
    assert config[config.index("train.clip") + 1] == "—"

    metrics = [t for t in page.tables if t["class"] == "metrics"]
    scalars = metrics[0]["cells"]
    assert scalars[scalars.index("val_loss") + 1] == "1.235"
    assert scalars[scalars.index("stopped") + 1] == "max_steps"
    # a mapping of records -> one wide table; long number lists summarised
    records = next(t["cells"] for t in metrics if "final_mse" in t["cells"])
    assert records[:3] == ["", "final_mse", "curve"]
    assert records[3:6] == ["rnn", "0.125", "50 values: 0 → 49 (min 0, max 49)"]
    assert records[6:9] == ["lstm", "0.0625", "[1, 0.5]"]
    rows = next(t["cells"] for t in metrics if "mae" in t["cells"])
    assert rows == ["#", "model", "mae", "1", "GRU H=8", "0.5", "2", "baseline", "0.75"]

    # the log: three complete rows, the torn line skipped and said so
    log = next(t["cells"] for t in page.tables if t["class"] == "log")
    assert log[:5] == ["#", "step", "epoch", "train_loss", "val_loss"]
    assert log[5:10] == ["1", "10", "1", "0.3", "0.35"]
    assert "1 unreadable line(s) in log.jsonl skipped" in text

    # samples escaped, never interpreted as HTML
    assert "To be <b>or</b> not" in page.pres and "Hamlet & Ophelia" in page.pres
    assert "<b>or</b>" not in text
    # other files are listed by name, not shown
    assert "model.safetensors" in text and "not shown" not in text


def test_unreadable_file_becomes_a_warning_and_subruns_get_sections(fake_run: Path, tmp_path: Path):
    sub = fake_run / "broken"
    sub.mkdir()
    (sub / "metrics.json").write_text("{not json")
    out = build_report(fake_run, tmp_path / "elsewhere.html", title="My run")
    text = out.read_text(encoding="utf-8")
    assert "<title>My run</title>" in text
    assert "could not read metrics.json: not valid JSON" in text
    assert text.count("<section") == 3  # overview, figs, broken
    assert '<a href="#s1">figs</a>' in text
    assert not (fake_run / "report.html").exists()  # --out elsewhere leaves the run untouched


def test_report_of_a_nested_run_ignores_its_own_old_report(fake_run: Path):
    first = build_report(fake_run).read_text(encoding="utf-8")
    second = build_report(fake_run).read_text(encoding="utf-8")
    assert second.count("<img") == first.count("<img") == 2


def test_cli_report_writes_the_page_and_prints_its_path(run_cli, fake_run: Path, tmp_path: Path):
    out = tmp_path / "r.html"
    code, stdout, stderr = run_cli("report", fake_run, "--out", out)
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    assert "report written" in stderr
    assert out.read_text(encoding="utf-8").count("<img") == 2


@pytest.mark.parametrize("case", ["missing", "file", "empty", "out_is_dir", "out_parent_missing"])
def test_cli_report_bad_input_is_one_line_and_writes_nothing(run_cli, fake_run: Path, tmp_path: Path, case: str):
    args = {
        "missing": [tmp_path / "nope"],
        "file": [fake_run / "config.json"],
        "empty": [tmp_path / "empty"],
        "out_is_dir": [fake_run, "--out", tmp_path],
        "out_parent_missing": [fake_run, "--out", tmp_path / "no" / "r.html"],
    }[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.bin").write_bytes(b"x")
    code, stdout, stderr = run_cli("report", *args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapnet: error: "), stderr
    assert "Traceback" not in stderr
    assert not (fake_run / "report.html").exists()
    assert not list(tmp_path.rglob("*.html"))


def test_build_report_rejects_a_run_without_run_files(tmp_path: Path):
    with pytest.raises(LapnetError, match="holds no run files"):
        build_report(tmp_path)


def test_report_renders_in_headless_chromium(fake_run: Path, tmp_path: Path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not found (Debian: apt-get install chromium; or set LAPNET_CHROMIUM)")
    result = check_in_browser(build_report(fake_run), tmp_path / "browser", chromium=chromium)
    assert result["images"] == 2
    assert result["loaded"] == result["shown"] == 2, result["broken"]
    assert all(w > 0 and h > 0 for w, h in result["sizes"])
    assert result["metrics_tables"] >= 3
    assert {"val_loss", "final_mse", "mae"} <= set(result["row_headers"])
    shot = Path(result["screenshot"])
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_deeply_nested_metrics_become_wide_tables_with_dotted_columns(tmp_path: Path):
    run = tmp_path / "race"
    run.mkdir()
    per_h = {f"h{h}": {"mae": 0.25 * h, "n": 10 - h, "by_compound": {"SOFT": {"mae": 0.5 * h}}} for h in (1, 5)}
    per_5h = {f"h{h}": {"mae": 0.25 * h, "n": 10 - h, "by_compound": {"SOFT": {"mae": 0.5 * h}}} for h in range(1, 6)}
    wide = {"m0": per_5h, "m1": per_5h}  # 5 horizons x 3 = 15 columns: too wide for one table
    (run / "metrics.json").write_text(json.dumps({"forecast": {"scored": {"forecaster": per_h, "persistence": per_h}},
                                                  "wide": wide}))
    page = Page(build_report(run).read_text(encoding="utf-8"))
    tables = [t["cells"] for t in page.tables if t["class"] == "metrics"]
    # two forecasters x (2 horizons x 3 numbers): one table, rows = forecasters, dotted columns
    assert tables[0][:7] == ["", "h1.mae", "h1.n", "h1.by_compound.SOFT.mae",
                             "h5.mae", "h5.n", "h5.by_compound.SOFT.mae"]
    assert tables[0][7:14] == ["forecaster", "0.25", "9", "0.5", "1.25", "5", "2.5"]
    # 15 columns would not read: one table per entry, rows = horizons
    assert len(tables) == 3
    assert tables[1][:8] == ["", "mae", "n", "by_compound.SOFT.mae", "h1", "0.25", "9", "0.5"]
    assert tables[1][-4:] == ["h5", "1.25", "5", "2.5"]
