"""`lapnet demo --quick` end to end: the summary, every part's files and numbers, the report
(its HTML, and rendered in headless Chromium), and bad input. The quick demo runs once
for this module; every test here shares it (one xdist group, one worker)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest

from lapnet.demo import PARTS, _prepare
from lapnet.run_dir import release_run_locks

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from report_browser import check_in_browser, find_chromium  # noqa: E402

pytestmark = pytest.mark.xdist_group("demo")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> dict:
    """`lapnet demo --quick --out DIR`, in-process, once per test session: exit code,
    stdout, stderr, DIR.

    The tests here are grouped for one xdist worker, but should they land on two (or a
    module fixture be torn down between them), the demo still runs only once: the first
    run holds a lock in the session's shared temp dir and saves its result there; later
    set-ups wait for the lock and read the result back."""
    import fcntl

    from lapnet.cli import main

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by this session's workers (each has its own basetemp below)
    base = base / "quick-demo"
    base.mkdir(exist_ok=True)
    out, saved = base / "tour", base / "result.json"
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if saved.is_file():
            return {**json.loads(saved.read_text()), "out": out}
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(["demo", "--quick", "--out", str(out)])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0
        result = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
        saved.write_text(json.dumps(result))
    return {**result, "out": out}


def test_quick_demo_runs_every_part_and_prints_the_summary(quick_demo):
    assert quick_demo["code"] == 0, quick_demo["stderr"][-3000:]
    out, stdout, stderr = quick_demo["out"], quick_demo["stdout"], quick_demo["stderr"]
    # the engine's verdict line and the report's path are the data on stdout
    m = re.search(r"max \|difference\| ([0-9.e+-]+); gradcheck: max relative error ([0-9.e+-]+); "
                  r"sine MSE ([0-9.]+) -> ([0-9.]+)", stdout)
    assert m, stdout
    parity, grad_err, first, last = (float(v) for v in m.groups())
    assert parity < 1e-10 and grad_err < 1e-6 and last < first
    assert stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    # progress, the parts' tables and the summary on stderr (rich wraps lines: compare words)
    flat = " ".join(stderr.split())
    for title in ("max |engine - torch|", "gradient check", "loss falling", "samples after", "gradient flow over",
                  "lap-time MAE", "summary"):
        assert title in flat, title
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["ok"] is True and summary["quick"] is True
    assert [p["part"] for p in summary["parts"]] == list(PARTS)
    assert all(p["ok"] and p["seconds"] > 0 and p["result"] for p in summary["parts"])
    for p in summary["parts"]:
        assert p["part"] in stderr


def test_quick_demo_numbers_are_measured(quick_demo):
    d = json.loads((quick_demo["out"] / "metrics.json").read_text())["details"]
    # the real races are scored when found, and their absence is said (with how to give them)
    found = json.loads((quick_demo["out"] / "config.json").read_text())["f1_data"]
    race = next(p for p in json.loads((quick_demo["out"] / "metrics.json").read_text())["parts"] if p["part"] == "race")
    assert ("real 2023 (1 race)" in race["result"]) == (found is not None)
    assert ("no real races found (give --f1-data DIR" in race["result"]) == (found is None)
    assert d["engine"]["max_abs_diff"] < 1e-10 and d["engine"]["max_rel_error"] < 1e-6
    text = d["text"]
    assert text["best_val_bpc"] < text["uniform_bpc"]  # better than guessing, even after 20 steps
    assert set(text["samples"]) == {"0.3", "0.8", "1.2"}
    assert all(s.startswith("To be") and len(s) > len("To be") for s in text["samples"].values())
    assert d["gradflow"]["engines_max_rel_diff"] < 1e-8  # autograd and the NumPy engine agree
    assert all(0 < e["init"]["ratio_first_to_last"] < 1 for e in d["gradflow"]["archs"].values())
    rows = {r["forecaster"]: r for r in d["race"]["sim"]["summary"]}
    assert {"forecaster", "persistence", "mean_last3"} <= set(rows)
    assert all(0 < r["mae_h1"] < 5 for r in rows.values())  # seconds, on the same laps
    kept = json.loads((quick_demo["out"] / "race" / "run" / "config.json").read_text())["fresh_start"]["kept"]
    assert ("pit_now" in d["race"]) == kept  # a run whose FreshStart check dropped it has no what-if to show
    if kept:
        pn = d["race"]["pit_now"]  # the pit-now what-if at mid-race, as `lapnet race pit-now` gives it
        written = json.loads((quick_demo["out"] / "race" / "pit_now.json").read_text())
        assert written["lap"] == pn["lap"] and written["compounds"][0]["compound"] == "ANY"
        assert pn["delta"] == pytest.approx(written["compounds"][0]["delta"]) and len(pn["now_vs_later"]) == 3
        assert 10 < pn["stop_cost"] < 40  # seconds
    if "real" in d["race"]:  # the real races, when the data is present: phases checked without labels
        checks = d["race"]["real"]["phase_checks"]
        assert set(checks) == {"note", "live", "post_race"}
        auc = checks["post_race"]["push_vs_conserve_auc"]
        assert auc is None or 0.0 <= auc <= 1.0  # null (NaN in Python): the quick demo's tiny tagger may call one phase only


def test_quick_demo_writes_every_part_and_its_report(quick_demo):
    out = quick_demo["out"]
    for path in ("config.json", "engine/metrics.json", "engine/sine_loss.png", "text/model.safetensors",
                 "text/samples.json", "text/log.jsonl", "text/temperature/temperature.png", "sine/loss_curves.png",
                 "trend/metrics.json", "gradflow/gradflow.png", "race/run/model.safetensors", "race/eval_sim.json"):
        assert (out / path).is_file(), path
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>lapnet demo: the guided tour (--quick)</title>" in html
    for part in PARTS:
        assert f">{part}</a>" in html, part
    pngs = list(out.rglob("*.png"))
    logs = [p for p in out.rglob("log.jsonl") if p.stat().st_size > 0]
    # every PNG of the run embedded, plus one loss figure per training log
    assert html.count('<img src="data:image/png;base64,') == len(pngs) + len(logs)
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)


def test_demo_report_renders_in_headless_chromium(quick_demo, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not found (Debian: apt-get install chromium; or set LAPNET_CHROMIUM)")
    out = quick_demo["out"]
    result = check_in_browser(out / "report.html", tmp_path / "browser", chromium=chromium)
    n_png = len(list(out.rglob("*.png")))
    assert result["images"] > n_png >= 8
    assert result["loaded"] == result["shown"] == result["images"], result["broken"]
    assert all(w > 0 and h > 0 for w, h in result["sizes"])
    assert result["metrics_tables"] >= 10
    assert {"part", "result", "forecaster", "mae_h1", "max_abs_diff"} <= set(result["row_headers"])
    assert Path(result["screenshot"]).stat().st_size > 10_000


def test_demo_refuses_a_used_out_dir_and_a_file(run_cli, quick_demo, tmp_path):
    out = quick_demo["out"]
    before = (out / "metrics.json").read_bytes()
    code, _, err = run_cli("demo", "--quick", "--out", out)
    assert code == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.json").read_bytes() == before
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    code, _, err = run_cli("demo", "--quick", "--out", f)
    assert code == 2 and err.startswith("lapnet: error:") and "is a file" in err
    assert f.read_text() == "keep me"
    code, _, err = run_cli("demo", "--quick", "--seed", "-1", "--out", tmp_path / "new")
    assert code == 2 and "--seed" in err and not (tmp_path / "new").exists()
    code, _, err = run_cli("demo", "--quick", "--f1-data", tmp_path / "nowhere", "--out", tmp_path / "new")
    assert code == 2 and "--f1-data" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "no_csv"
    empty.mkdir()
    code, _, err = run_cli("demo", "--quick", "--f1-data", empty, "--out", tmp_path / "new")
    assert code == 2 and "holds no .csv lap tables" in err and len(err.strip().splitlines()) == 1
    (empty / "broken.csv").write_text("Driver,LapNumber\nVER,1\n")  # refused before any part runs
    code, _, err = run_cli("demo", "--quick", "--f1-data", empty, "--out", tmp_path / "new")
    assert code == 2 and "broken.csv" in err and "LapTime" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_force_removes_only_what_a_demo_wrote(tmp_path):
    from lapnet.demo import _record_files

    out = tmp_path / "demo"
    for part in PARTS:
        (out / part).mkdir(parents=True)
        (out / part / "metrics.json").write_text("{}")
    (out / "config.json").write_text('{"kind": "demo"}')  # an earlier demo's, with its record of its files
    _record_files(out)
    (out / "report.html").write_text("old")
    (out / "notes.txt").write_text("mine")
    _prepare(out, force=True)
    release_run_locks()  # as the CLI does when the command ends: the demo holds --out while it runs
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_failing_part_is_reported_and_the_tour_goes_on(run_cli, monkeypatch, tmp_path):
    import lapnet.demo as demo

    def fake(name):
        def part(out, sizes, progress, *extra):
            if name == "sine":
                raise RuntimeError("boom\nsecond line")
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(json.dumps({"value": 1.5}))
            return demo.PartResult(name, f"fake {name}", f"{name} fine")
        return part

    for name in PARTS:
        monkeypatch.setattr(demo, f"_{name}", fake(name))
    code, stdout, stderr = run_cli("demo", "--out", tmp_path / "d")
    assert code == 1
    summary = json.loads((tmp_path / "d" / "metrics.json").read_text())
    rows = {r["part"]: r for r in summary["parts"]}
    assert summary["ok"] is False and list(rows) == list(PARTS)
    assert rows["sine"]["ok"] is False and rows["sine"]["result"] == "FAILED: RuntimeError: boom second line"
    assert all(rows[p]["ok"] for p in PARTS if p != "sine")
    assert "failed parts: sine" in " ".join(stderr.split())
    assert "FAILED: RuntimeError: boom" in (tmp_path / "d" / "report.html").read_text(encoding="utf-8")


def test_demo_json_prints_its_metrics_alone_on_stdout(quick_demo, run_cli, monkeypatch, tmp_path):
    """--json: stdout carries the demo's metrics.json and nothing else; the engine's verdict and
    the report's path move to stderr. The tour is replayed from the quick demo's own metrics
    (running it a second time would double the suite's longest test)."""
    import lapnet.demo as D

    real = json.loads((quick_demo["out"] / "metrics.json").read_text())

    def replay(out, *, on_part, **_):
        Path(out).mkdir()
        (Path(out) / "metrics.json").write_text(json.dumps(real))
        for p in real["parts"]:
            on_part(D.PartResult(**p, details=real["details"][p["part"]]))
        return {**real, "report": str(Path(out) / "report.html")}

    monkeypatch.setattr(D, "run_demo", replay)
    code, out, err = run_cli("demo", "--quick", "--json", "--out", tmp_path / "d")
    assert code == 0, err
    assert json.loads(out) == real
    flat = " ".join(err.split())
    assert "engine vs torch: max |difference|" in flat and f"report: {tmp_path / 'd' / 'report.html'}" in err
    assert "max |engine - torch|" in flat and "summary" in flat  # the tables as without --json
