"""What a practitioner reproducing the notebook with `lapnet text` needs to see: which step the
saved model is, the last step's weights on demand, training without validation (the notebook's
setting), a default batch that fits a short text, honest --resume messages, stdin."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lapnet.checkpoint import load_tensors
from lapnet.data.text import bundled_text

TINY = ["--hidden", "12", "--embed", "6", "--seq-len", "16", "--quiet"]


def _train(run_cli, *args) -> dict:
    code, out, err = run_cli("text", "train", *args, *TINY, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def hamlet_runs(tmp_path_factory):
    """Tiny runs on the bundled passage, with and without validation, trained once."""
    from lapnet.cli import main

    base = tmp_path_factory.mktemp("hamlet")
    for name, extra in (("val", []), ("noval", ["--val-frac", "0"])):
        try:
            main(["text", "train", "--out", str(base / name), *TINY, "--epochs", "12", "--eval-every", "3", *extra])
        except SystemExit as e:
            assert e.code in (0, None)
    return base


def test_val_frac_0_trains_on_everything_and_saves_the_last_step(hamlet_runs):
    run = hamlet_runs / "noval"
    m = json.loads((run / "metrics.json").read_text())
    assert m["validation"] is False and m["val_chars"] == 0 and m["train_chars"] == len(bundled_text())
    assert "val_loss" not in m and m["best_val_loss"] is None and m["early_stopping"] is False
    assert m["saved_model"]["step"] == m["steps"] and "no validation" in m["saved_model"]["chosen_by"]
    best, meta = load_tensors(run / "model.safetensors")
    last, _ = load_tensors(run / "last.safetensors")
    assert meta["step"] == m["steps"] and meta["checkpoint"] == "last"
    for k, v in best.items():  # model.safetensors is exactly the final weights
        np.testing.assert_array_equal(v, last[f"model.{k}"])
    # the loss logged as val_loss is the training text's, the same number metrics.json calls text_loss
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == m["steps"] and rows[-1]["val_loss"] == pytest.approx(m["text_loss"])


def test_metrics_name_the_saved_step_and_checkpoint_last_loads_the_final_one(run_cli, hamlet_runs):
    run = hamlet_runs / "val"
    m = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    best_row = min(rows, key=lambda r: r["val_loss"])
    assert m["validation"] is True and m["saved_model"]["step"] == best_row["step"]
    assert m["saved_model"]["val_loss"] == pytest.approx(best_row["val_loss"]) == pytest.approx(m["best_val_loss"])
    got = {}
    for which in ("best", "last"):
        code, out, err = run_cli("text", "eval", run, Path(__file__), "--skip-unknown", "--json", "--checkpoint", which)
        assert code == 0, err
        got[which] = json.loads(out)
        assert got[which]["checkpoint"] == which
    assert got["best"]["step"] == best_row["step"] and got["last"]["step"] == m["steps"]
    if best_row["step"] != m["steps"]:
        assert got["best"]["nats_per_char"] != got["last"]["nats_per_char"]
    code, out, err = run_cli("text", "sample", run, "--checkpoint", "last", "--length", "5", "--seed", "1", "--json")
    assert code == 0 and json.loads(out)["checkpoint"] == "last", err
    code, _, err = run_cli("text", "sample", run, "--checkpoint", "middle")
    assert code == 2 and err == "lapnet: error: --checkpoint middle: expected best or last\n"


def test_the_summary_says_which_step_was_saved(run_cli, tmp_path):
    code, _, err = run_cli("text", "train", "--out", tmp_path / "r", "--hidden", "8", "--embed", "4", "--seq-len",
                           "16", "--epochs", "4", "--eval-every", "2")
    assert code == 0, err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    line = next(x for x in err.splitlines() if x.startswith("lapnet: saved model: step "))
    assert line.startswith(f"lapnet: saved model: step {m['saved_model']['step']}, val {m['saved_model']['val_loss']:.4f}")


def test_the_default_batch_fits_a_short_text_without_a_warning(run_cli, tmp_path):
    code, out, err = run_cli("text", "train", "--out", tmp_path / "r", "--hidden", "8", "--embed", "4",
                             "--epochs", "1", "--quiet", "--json")
    assert code == 0 and "warning" not in err, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    # 718 training characters hold 5 windows of 128 + 1: the batch used, recorded alike in both files
    assert json.loads(out)["batch"] == config["data"]["batch"] == (len(bundled_text()) * 9 // 10) // 129 == 5


def test_resume_with_nothing_left_to_train_says_so(run_cli, tmp_path):
    out = tmp_path / "r"
    _train(run_cli, "--out", out, "--epochs", "3")
    code, _, err = run_cli("text", "train", "--out", out, "--epochs", "2", "--resume", "--quiet")
    assert code == 0 and err == "lapnet: warning: already at 3 epochs >= --epochs 2 (totals): nothing to train\n", err


def test_resume_without_file_reuses_the_recorded_source_or_names_it(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("uni.txt").write_text(bundled_text(), encoding="utf-8")
    _train(run_cli, "uni.txt", "--out", "r", "--epochs", "1")
    m = _train(run_cli, "--out", "r", "--epochs", "2", "--resume")  # uni.txt, unchanged: reused
    assert m["epochs"] == 2
    Path("uni.txt").write_text(bundled_text() + "x", encoding="utf-8")
    code, _, err = run_cli("text", "train", "--out", "r", "--epochs", "3", "--resume", "--quiet")
    assert code == 2 and err == ("lapnet: error: --resume: uni.txt, the text r was trained on, has changed since; "
                                 "give the original text as FILE\n")
    Path("uni.txt").unlink()
    code, _, err = run_cli("text", "train", "--out", "r", "--epochs", "3", "--resume", "--quiet")
    assert code == 2 and "r was trained on uni.txt (config.json's data.source), which is not there now" in err
    Path("other.txt").write_text("something else entirely", encoding="utf-8")
    code, _, err = run_cli("text", "train", "other.txt", "--out", "r", "--epochs", "3", "--resume", "--quiet")
    assert code == 2 and err == ("lapnet: error: --resume: other.txt is not the text this run was trained on "
                                 "(uni.txt, config.json's data.source)\n")


def test_standard_input_for_train_and_eval(run_cli, tmp_path, monkeypatch):
    text = bundled_text()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8"))
    m = _train(run_cli, "-", "--out", tmp_path / "r", "--epochs", "1")
    assert m["train_chars"] + m["val_chars"] == len(text)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["source"] == "-"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text[:100].encode("utf-8")), encoding="utf-8"))
    code, out, err = run_cli("text", "eval", tmp_path / "r", "-", "--json")
    assert code == 0 and json.loads(out)["chars"] == 99, err


def test_eval_of_a_one_character_file_says_why(run_cli, hamlet_runs, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("T", encoding="utf-8")
    code, _, err = run_cli("text", "eval", hamlet_runs / "val", one)
    assert code == 2 and err == (f"lapnet: error: {one} has 1 character: scoring needs at least 2 (the first is "
                                 f"only read, each later one is predicted)\n")


def test_an_experiment_dir_given_as_a_run_is_named(run_cli, tmp_path):
    d = tmp_path / "sine"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"experiment": "sine", "table": []}))
    code, _, err = run_cli("text", "sample", d)
    assert code == 2 and err == (f"lapnet: error: {d} is not a text run (it holds a sine experiment's output): "
                                 f"give a run directory written by `lapnet text train`\n")
