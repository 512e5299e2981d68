"""`lapnet text train` at the edges of float32: learning rates refused in one line, divergence
reported as such (either engine) with metrics.json written from the last good checkpoint,
perplexity past float64 as null/inf, --resume taking the run's own engine, and two identical
--epochs runs writing identical model files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lapnet.data.text import bundled_text

TINY = ["--hidden", "12", "--embed", "6", "--seq-len", "16", "--batch", "4", "--quiet", "--threads", "1"]
# the bundled passage, the reviewer's setting: at a constant lr 1e35 the loss is finite at the
# evaluation of step 2 (checkpointed) and inf at step 4
DIVERGES_AT_4 = ["--hidden", "16", "--embed", "8", "--seq-len", "32", "--epochs", "40", "--eval-every", "2",
                 "--lr", "1e35", "--schedule", "constant", "--threads", "1"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("text") / "hamlet.txt"
    p.write_text(bundled_text() * 2, encoding="utf-8")
    return p


def _strict(text: str):
    """JSON as a strict parser reads it: NaN and Infinity are refused."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _one_error_line(code: int, stderr: str, match: str) -> str:
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("lapnet: error:") and match in lines[0], stderr
    assert "Traceback" not in stderr and "warning" not in stderr
    return lines[0]


@pytest.mark.parametrize("lr, fate", [("1e300", "it overflows"), ("1e39", "it overflows"),
                                      ("1e-300", "it rounds to 0"), ("1e-40", "it is subnormal")])
def test_a_learning_rate_outside_float32_is_refused_before_anything_is_written(run_cli, tmp_path, text_file, lr, fate):
    out = tmp_path / "run"
    code, _, err = run_cli("text", "train", text_file, "--out", out, *TINY, "--epochs", "1", "--lr", lr)
    line = _one_error_line(code, err, "--lr must be a positive number within float32's range")
    assert fate in line
    assert not out.exists()


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_lr_1e38_is_a_divergence_at_step_1_or_2_and_leaves_nothing(run_cli, tmp_path, text_file, engine):
    # torch: Adam's first step is 1e38 / 0.1, which torch cannot convert to float32: it was an
    # internal error (exit 1) that left config.json and vocab.json behind
    out = tmp_path / "run"
    code, _, err = run_cli("text", "train", text_file, "--out", out, *TINY, "--epochs", "2", "--lr", "1e38",
                           "--engine", engine)
    line = _one_error_line(code, err, "at step")
    want = "the update overflowed at step 1 (epoch 1)" if engine == "torch" else "loss became nan at step 2"
    assert want in line and "no checkpoint was written yet" in line
    assert not out.exists()  # diverged before its first checkpoint: nothing to resume or describe


def test_a_numpy_model_diverging_inside_an_evaluation_is_a_divergence(run_cli, tmp_path):
    """The evaluation carried the NaN state of one chunk into the next, which refused it as input:
    'state h contains NaN or infinite values', exit 2 as bad input, config.json left behind."""
    out, long_text = tmp_path / "run", tmp_path / "long.txt"
    long_text.write_text(bundled_text() * 12, encoding="utf-8")  # a validation text of several chunks
    code, _, err = run_cli("text", "train", long_text, "--out", out, "--engine", "numpy", "--lr", "1e34",
                           "--eval-every", "1", "--epochs", "1", "--hidden", "16", "--seq-len", "32", "--quiet",
                           "--threads", "1")
    line = _one_error_line(code, err, "validation loss became")
    assert "at step 1" in line and "contains NaN" not in line
    assert not out.exists()


def test_a_divergence_after_a_checkpoint_writes_metrics_json_saying_so(run_cli, tmp_path):
    out = tmp_path / "run"
    # not --quiet: the sample printed at step 2's evaluation and samples.txt come from weights
    # that overflow float32 in NumPy; no raw "lapnet: warning: overflow encountered" may show
    code, _, err = run_cli("text", "train", "--out", out, *DIVERGES_AT_4)
    said = [x for x in err.splitlines() if x.startswith("lapnet:")]
    assert code == 2 and "warning" not in err and "Traceback" not in err, err
    assert len(said) == 1 and said[0].startswith("lapnet: error: loss became inf at step 4 (epoch 4)"), err
    line = said[0]
    assert "the last good checkpoint is kept" in line
    m = _strict((out / "metrics.json").read_text())
    assert m["stopped"] == "diverged" and m["diverged_at_step"] == 4 and m["steps"] == 2
    assert m["divergence"] == line.removeprefix("lapnet: error: ")
    assert m["saved_model"]["step"] == 2 and (out / "samples.txt").is_file()
    # the validation loss was finite (4.7e35 nats/char) but its perplexity is beyond float64:
    # null in strict JSON, not the exp(700) = 1.01e304 it was clamped to
    assert math.isfinite(m["val_loss"]) and m["val_loss"] > 710 and m["val_ppl"] is None
    rows = [_strict(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2] and rows[0]["val_ppl"] is None


def test_perplexity_beyond_float64_is_inf_and_shows_as_inf():
    from lapnet.checkpoint import json_text
    from lapnet.cli.common import _fmt
    from lapnet.text_runs import nats_to_metrics, perplexity

    assert perplexity(1.0) == pytest.approx(math.e) and perplexity(709.0) == pytest.approx(math.exp(709.0))
    assert perplexity(710.0) == math.inf and perplexity(4.7e35) == math.inf
    m = nats_to_metrics(800.0)
    assert m["val_ppl"] == math.inf and _fmt(m["val_ppl"]) == "inf"
    assert _strict(json_text(m))["val_ppl"] is None


def test_numpy_charlm_with_an_overflowed_embedding_gives_nan_logits_not_a_data_error():
    # `--engine numpy --lr 1e300` ended in "lstm input contains NaN or infinite values", worded
    # as bad user data: the embedding the training overflowed is not the user's input
    from lapnet.models.charlm import CharLMConfig
    from lapnet.models.numpy_charlm import NumpyCharLM, NumpyCharLMLearner
    from lapnet.text_runs import build_model
    from lapnet.train import TrainConfig

    cfg = CharLMConfig(vocab_size=5, embed=3, hidden=4)
    model = build_model(cfg, "numpy", seed=0)
    assert isinstance(model, NumpyCharLM)
    model.parameters()["embed.weight"][2] = np.inf
    x = np.array([[0, 2, 1]])
    with np.errstate(all="raise"):
        logits, _, cache = model.forward(x)
    assert logits.shape == (1, 3, 5) and np.isnan(logits).all() and cache is None
    learner = NumpyCharLMLearner(model, lambda: {"val_loss": 0.0}, TrainConfig(epochs=1))
    loss, _, n = learner.train_step((x, np.array([[2, 1, 0]])), None, 1e-2)
    assert math.isnan(loss) and n == 3


def test_resume_takes_the_runs_engine_when_none_is_typed(run_cli, tmp_path, text_file):
    out = tmp_path / "np"
    code, _, err = run_cli("text", "train", text_file, "--out", out, *TINY, "--epochs", "1", "--engine", "numpy")
    assert code == 0, err
    code, stdout, err = run_cli("text", "train", text_file, "--out", out, *TINY, "--epochs", "2", "--resume", "--json")
    assert code == 0, err
    m = json.loads(stdout)
    assert m["engine"] == "numpy" and m["epochs"] == 2
    assert json.loads((out / "config.json").read_text())["engine"] == "numpy"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli("text", "train", text_file, "--out", out, *TINY, "--epochs", "3", "--resume",
                           "--engine", "torch")
    line = _one_error_line(code, err, "was trained with --engine numpy, not torch")
    assert "leave --engine out" in line
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}


def test_two_identical_epoch_runs_write_identical_model_files(run_cli, tmp_path, text_file):
    for name in ("a", "b"):
        code, _, err = run_cli("text", "train", text_file, "--out", tmp_path / name, *TINY, "--epochs", "2")
        assert code == 0, err
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # last.safetensors: the same arrays; its metadata differs only in the trainer's timing fields
    from lapnet.checkpoint import load_tensors

    (xa, ma), (xb, mb) = load_tensors(a / "last.safetensors"), load_tensors(b / "last.safetensors")
    assert sorted(xa) == sorted(xb) and all(np.array_equal(xa[k], xb[k]) for k in xa)
    timing = {"elapsed", "train_time", "items_per_sec"}

    def untimed(o):
        if isinstance(o, dict):
            return {k: untimed(v) for k, v in o.items() if k not in timing}
        if isinstance(o, list):
            return [untimed(v) for v in o]
        return o

    assert untimed(ma) == untimed(mb)
