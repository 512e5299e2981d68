"""`lapnet text train|sample|eval` end to end on tiny models: both engines read each other's
runs, resume equals training straight through, and every kind of bad input exits 2."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from lapnet.checkpoint import load_tensors
from lapnet.data.text import bundled_text

TINY = ["--hidden", "12", "--embed", "6", "--seq-len", "16", "--batch", "4", "--quiet"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("text") / "hamlet.txt"
    p.write_text(bundled_text() * 2, encoding="utf-8")
    return p


def _train(run_cli, out: Path, *extra: str, text: Path | None = None) -> dict:
    args = ["text", "train", *([str(text)] if text else []), "--out", str(out), *TINY, "--json", *extra]
    code, stdout, stderr = run_cli(*args)
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics == json.loads((out / "metrics.json").read_text())
    return metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_file):
    """One tiny run per engine, trained once for the module."""
    from lapnet.cli import main

    base = tmp_path_factory.mktemp("runs")
    out = {}
    for engine in ("torch", "numpy"):
        out[engine] = base / engine
        try:
            main(["text", "train", str(text_file), "--out", str(out[engine]), *TINY, "--epochs", "2",
                  "--engine", engine])
        except SystemExit as e:
            assert e.code in (0, None)
    return out


def test_run_directory_holds_the_documented_files(runs):
    for engine, run in runs.items():
        names = {p.name for p in run.iterdir()}
        assert {"config.json", "vocab.json", "model.safetensors", "last.safetensors", "log.jsonl", "metrics.json"} <= names
        config = json.loads((run / "config.json").read_text())
        assert config["engine"] == engine and config["model"]["hidden"] == 12 and config["data"]["val_frac"] == 0.1
        arrays, _ = load_tensors(run / "model.safetensors")
        assert "rnn.weight_ih_l0" in arrays and arrays["embed.weight"].shape == (config["model"]["vocab_size"], 6)


@pytest.mark.parametrize("trained", ["torch", "numpy"])
def test_a_run_evaluates_the_same_on_both_engines(run_cli, runs, text_file, trained):
    results = {}
    for engine in ("torch", "numpy"):
        code, stdout, stderr = run_cli("text", "eval", runs[trained], text_file, "--engine", engine, "--json")
        assert code == 0, stderr
        results[engine] = json.loads(stdout)
    assert results["torch"]["chars"] == results["numpy"]["chars"] == len(text_file.read_text()) - 1
    assert abs(results["torch"]["nats_per_char"] - results["numpy"]["nats_per_char"]) < 1e-5
    r = results["torch"]
    assert r["bits_per_char"] == pytest.approx(r["nats_per_char"] / np.log(2))
    assert r["perplexity"] == pytest.approx(np.exp(r["nats_per_char"]))
    stored = json.loads((runs[trained] / "metrics.json").read_text())
    assert stored["eval"]["nats_per_char"] == results["numpy"]["nats_per_char"] and "val_loss" in stored


@pytest.mark.parametrize("trained", ["torch", "numpy"])
def test_a_run_samples_the_same_on_both_engines(run_cli, runs, trained):
    outs = []
    for engine in ("torch", "numpy"):
        code, stdout, stderr = run_cli("text", "sample", runs[trained], "--prime", "To be", "--length", "50",
                                       "--seed", "3", "--engine", engine)
        assert code == 0, stderr
        outs.append(stdout)
    assert outs[0] == outs[1]
    assert outs[0].startswith("To be") and len(outs[0]) == len("To be") + 50 + 1  # + newline


def test_greedy_sampling_and_several_samples(run_cli, runs):
    a = run_cli("text", "sample", runs["torch"], "--prime", "The", "--length", "30", "--temperature", "0")
    b = run_cli("text", "sample", runs["torch"], "--prime", "The", "--length", "30", "--temperature", "0", "--seed", "9")
    assert a[0] == 0 and a[1] == b[1]  # greedy ignores the seed
    code, stdout, _ = run_cli("text", "sample", runs["torch"], "--length", "20", "--num-samples", "3", "--top-k", "3",
                              "--top-p", "0.9", "--seed", "1")
    assert code == 0 and stdout.count("--- sample") == 3
    # --json: the same samples as data, prime included (one sample is the streamed text)
    code, stdout, _ = run_cli("text", "sample", runs["torch"], "--length", "20", "--num-samples", "3", "--top-k", "3",
                              "--top-p", "0.9", "--seed", "1", "--json")
    got = json.loads(stdout)
    assert code == 0 and len(got["samples"]) == 3 and got["top_k"] == 3 and got["seed"] == 1
    streamed = run_cli("text", "sample", runs["torch"], "--prime", "The", "--length", "30", "--seed", "2")[1]
    one = json.loads(run_cli("text", "sample", runs["torch"], "--prime", "The", "--length", "30", "--seed", "2",
                             "--json")[1])
    assert one["samples"] == [streamed.rstrip("\n")] and one["samples"][0].startswith("The")


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_resume_equals_training_straight_through(run_cli, tmp_path, text_file, engine):
    common = ["--schedule", "constant", "--seed", "4", "--engine", engine, "--layers", "2", "--dropout", "0.3"]
    _train(run_cli, tmp_path / "straight", "--epochs", "4", *common, text=text_file)
    _train(run_cli, tmp_path / "split", "--epochs", "2", *common, text=text_file)
    m = _train(run_cli, tmp_path / "split", "--epochs", "4", "--resume", *common, text=text_file)
    assert m["steps"] > 0 and m["epochs"] == 4
    a, _ = load_tensors(tmp_path / "straight" / "last.safetensors")
    b, _ = load_tensors(tmp_path / "split" / "last.safetensors")
    for k in a:
        if k.startswith(("model.", "optim.")):
            np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_nan_guard_stops_with_one_line(run_cli, tmp_path, text_file, engine):
    # an absurd learning rate overflows the weights within two steps
    code, _, stderr = run_cli("text", "train", text_file, "--out", tmp_path / "nan", *TINY, "--epochs", "5",
                              "--lr", "1e37", "--clip", "0", "--engine", engine)
    assert code == 2 and "loss became" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    # diverged before its first checkpoint: no diverged weights saved, and nothing else either
    assert not (tmp_path / "nan" / "model.safetensors").exists() and not (tmp_path / "nan").exists()


# ---------------------------------------------------------------------------------------
# bad input: one line on stderr, exit 2, nothing overwritten


def _refused(run_cli, *args, match: str) -> str:
    code, stdout, stderr = run_cli(*[str(a) for a in args])
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("lapnet: error:") and match in lines[0], stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bad_training_files(run_cli, tmp_path):
    out = tmp_path / "run"
    _refused(run_cli, "text", "train", tmp_path / "missing.txt", "--out", out, match="no such file")
    (tmp_path / "empty.txt").write_text("")
    _refused(run_cli, "text", "train", tmp_path / "empty.txt", "--out", out, match="empty")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    _refused(run_cli, "text", "train", tmp_path / "latin1.txt", "--out", out, match="not UTF-8")
    (tmp_path / "short.txt").write_text("To be or not to be")
    _refused(run_cli, "text", "train", tmp_path / "short.txt", "--out", out, "--seq-len", "64",
             match="shorter than one training window")
    _refused(run_cli, "text", "train", tmp_path, "--out", out, match="directory")
    assert not out.exists()  # nothing was created for a refused input


def test_existing_run_is_refused_without_resume_or_force(run_cli, runs, text_file):
    before = {p.name: p.read_bytes() for p in runs["torch"].iterdir()}
    _refused(run_cli, "text", "train", text_file, "--out", runs["torch"], *TINY, "--epochs", "1",
             match="already holds a run")
    assert before == {p.name: p.read_bytes() for p in runs["torch"].iterdir()}


def test_resume_with_the_other_engine_is_refused(run_cli, runs, text_file):
    _refused(run_cli, "text", "train", text_file, "--out", runs["numpy"], *TINY, "--epochs", "3", "--resume",
             "--engine", "torch", match="--engine numpy")


def test_force_overwrites(run_cli, tmp_path, text_file):
    _train(run_cli, tmp_path / "r", "--epochs", "1", text=text_file)
    m = _train(run_cli, tmp_path / "r", "--epochs", "1", "--force", "--arch", "gru", text=text_file)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"]["arch"] == "gru" and m["steps"] > 0
    assert len((tmp_path / "r" / "log.jsonl").read_text().splitlines()) == 1  # the old log is gone


@pytest.fixture
def run_copy(tmp_path, runs):
    dst = tmp_path / "copy"
    dst.mkdir()
    for p in runs["torch"].iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_corrupt_truncated_and_pickled_checkpoints(run_cli, run_copy, text_file):
    model = run_copy / "model.safetensors"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])
    _refused(run_cli, "text", "sample", run_copy, "--length", "5", match="model.safetensors")
    model.write_bytes(b"\x00" * 64)
    _refused(run_cli, "text", "eval", run_copy, text_file, match="model.safetensors")

    class Boom:  # unpickling this would run code: it must never happen
        def __reduce__(self):
            return (Path(run_copy / "PWNED").write_text, ("unpickled!",))

    model.write_bytes(pickle.dumps({"embed.weight": Boom()}))
    _refused(run_cli, "text", "sample", run_copy, "--length", "5", match="model.safetensors")
    assert not (run_copy / "PWNED").exists()
    (run_copy / "config.json").write_text("{not json")
    _refused(run_cli, "text", "sample", run_copy, "--length", "5", match="config.json")


def test_resume_from_a_truncated_checkpoint_is_refused(run_cli, run_copy, text_file):
    last = run_copy / "last.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    _refused(run_cli, "text", "train", text_file, "--out", run_copy, *TINY, "--epochs", "3", "--resume",
             match="last.safetensors")
    assert before == {p.name: p.read_bytes() for p in run_copy.iterdir()}


def test_bad_sampling_options(run_cli, runs):
    run = runs["torch"]
    line = _refused(run_cli, "text", "sample", run, "--prime", "To b€ #", match="--prime")
    assert "'€'" in line and "'#'" in line
    _refused(run_cli, "text", "sample", run, "--temperature", "-0.5", match="--temperature")
    _refused(run_cli, "text", "sample", run, "--length", "0", match="--length")
    _refused(run_cli, "text", "sample", run, "--top-p", "0", match="--top-p")
    _refused(run_cli, "text", "sample", run, "--top-p", "1.5", match="--top-p")
    _refused(run_cli, "text", "sample", run.parent / "nope", match="no such run")


def test_eval_refuses_text_with_unknown_characters(run_cli, runs, tmp_path):
    (tmp_path / "other.txt").write_text("Zebra 123")
    line = _refused(run_cli, "text", "eval", runs["numpy"], tmp_path / "other.txt", match="never saw")
    assert "--skip-unknown" in line


def test_eval_skip_unknown_scores_the_rest_and_says_what_it_left_out(run_cli, runs, tmp_path):
    vocab = set(json.loads((runs["torch"] / "vocab.json").read_text())["chars"])
    alien = [c for c in "Z9#~" if c not in vocab][:2]
    assert len(alien) == 2
    clean = bundled_text()[:300]
    (tmp_path / "clean.txt").write_text(clean)
    mixed = clean[:100] + alien[0] + clean[100:200] + alien[1] + alien[0] + clean[200:]
    (tmp_path / "mixed.txt").write_text(mixed)
    code, out, err = run_cli("text", "eval", runs["torch"], tmp_path / "mixed.txt", "--skip-unknown", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["skipped_unknown"] == {"count": 3, "chars": alien}
    assert "skipped 3 occurrence(s) of 2 character(s)" in err and repr(alien[0]) in err
    code, out, _ = run_cli("text", "eval", runs["torch"], tmp_path / "clean.txt", "--json")
    want = json.loads(out)
    assert want["skipped_unknown"] == {"count": 0, "chars": []}
    assert got["chars"] == want["chars"] and got["nats_per_char"] == pytest.approx(want["nats_per_char"], abs=1e-9)
    (tmp_path / "alien.txt").write_text(alien[0] * 5)
    _refused(run_cli, "text", "eval", runs["torch"], tmp_path / "alien.txt", "--skip-unknown", match="nothing left")


@pytest.mark.parametrize("arch", ["gru", "rnn"])
def test_other_architectures_cross_engines(run_cli, tmp_path, text_file, arch):
    _train(run_cli, tmp_path / arch, "--epochs", "1", "--arch", arch, "--layers", "2", "--engine", "numpy", text=text_file)
    nats = []
    for engine in ("torch", "numpy"):
        code, stdout, stderr = run_cli("text", "eval", tmp_path / arch, text_file, "--engine", engine, "--json")
        assert code == 0, stderr
        nats.append(json.loads(stdout)["nats_per_char"])
    assert abs(nats[0] - nats[1]) < 1e-5


# ---------------------------------------------------------------------------------------
# a hand-edited run: config.json with the right keys but wrong values


def _edit_config(run: Path, edit) -> bytes:
    config = json.loads((run / "config.json").read_text())
    config = edit(config)
    (run / "config.json").write_text(json.dumps(config))
    return (run / "config.json").read_bytes()


def _set_model(field: str, value):
    def edit(config):
        config["model"][field] = value
        return config

    return edit


def _loaders(run: Path, text_file: Path, tmp_path: Path) -> list[list]:
    """Every command that loads a text run."""
    return [["text", "sample", run, "--length", "5"],
            ["text", "eval", run, text_file],
            ["gates", run, "--out", tmp_path / "gates", "--quiet"],
            ["temperature", run, "--out", tmp_path / "temperature", "--quiet"],
            ["text", "train", text_file, "--out", run, *TINY, "--epochs", "3", "--resume"]]


@pytest.mark.parametrize("edit,match", [
    (lambda c: {**c, "model": None}, "model must be an object"),
    (_set_model("hidden", "12"), "model.hidden must be a positive integer, got '12'"),
    (_set_model("hidden", 12.5), "model.hidden must be a positive integer, got 12.5"),
    (_set_model("layers", 0), "model.layers must be a positive integer, got 0"),
    (_set_model("vocab_size", True), "model.vocab_size must be a positive integer"),
    (_set_model("arch", 5), "model.arch must be one of"),
    (_set_model("dropout", "0.1"), "model.dropout must be a number in [0, 1)"),
], ids=["model null", "hidden str", "hidden float", "layers 0", "vocab_size bool", "arch int", "dropout str"])
def test_wrong_types_in_config_json_are_named_by_every_command(run_cli, run_copy, text_file, tmp_path, edit, match):
    saved = _edit_config(run_copy, edit)
    for args in _loaders(run_copy, text_file, tmp_path):
        line = _refused(run_cli, *args, match=match)
        assert "config.json" in line and not line.split("error:", 1)[1].strip().startswith("--"), line  # not a flag
        assert (run_copy / "config.json").read_bytes() == saved


@pytest.mark.parametrize("config", [[], None, "charlm"])
def test_resume_from_a_config_json_that_is_not_an_object(run_cli, run_copy, text_file, config):
    (run_copy / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    _refused(run_cli, "text", "train", text_file, "--out", run_copy, *TINY, "--epochs", "3", "--resume",
             match="config.json: not a text run")
    _refused(run_cli, "text", "sample", run_copy, "--length", "5", match="config.json: not a text run")
    assert before == {p.name: p.read_bytes() for p in run_copy.iterdir()}


@pytest.mark.parametrize("field,value,match", [
    ("layers", 2, "does not fit"), ("embed", 9, "does not fit"), ("vocab_size", 5, "vocab.json has")])
def test_resume_with_a_checkpoint_that_does_not_fit_changes_nothing(run_cli, run_copy, text_file, field, value, match):
    _edit_config(run_copy, _set_model(field, value))
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    _refused(run_cli, "text", "train", text_file, "--out", run_copy, *TINY, "--epochs", "3", "--resume", match=match)
    assert before == {p.name: p.read_bytes() for p in run_copy.iterdir()}  # config.json byte-identical


# ---------------------------------------------------------------------------------------
# temperatures: tiny ones are greedy, an empty prime starts as `text sample` does


@pytest.mark.parametrize("extra", [["--prime", "To be"], ["--num-samples", "2", "--top-k", "3", "--seed", "5"],
                                   ["--engine", "numpy", "--seed", "5"]], ids=["plain", "top-k", "numpy"])
def test_a_tiny_temperature_is_exactly_greedy_and_warns_nothing(run_cli, runs, extra):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # a RuntimeWarning (overflow) must show, not be deduplicated away
        greedy = run_cli("text", "sample", runs["torch"], "--length", "40", "--temperature", "0", *extra)
        for t in ("1e-40", "1e-300", "1e-7"):
            code, out, err = run_cli("text", "sample", runs["torch"], "--length", "40", "--temperature", t, *extra)
            assert (code, out, err) == greedy, (t, err)
    assert greedy[0] == 0 and greedy[2] == "" and len(set(greedy[1])) > 2  # real text, not only newlines


def test_the_temperature_experiment_is_greedy_below_1e_6_and_takes_an_empty_prime(run_cli, runs, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, out, err = run_cli("temperature", runs["torch"], "--prime", "", "--temperatures", "0.5,1e-300",
                                 "--length", "20", "--seed", "3", "--out", tmp_path / "t", "--quiet", "--json")
    assert code == 0 and "Traceback" not in err and "warning" not in err, err
    samples = json.loads(out)["samples"]
    for t, as_sample in (("0.5", "0.5"), ("1e-300", "0")):  # the same text as `text sample --prime ""`
        code, text, err = run_cli("text", "sample", runs["torch"], "--prime", "", "--temperature", as_sample,
                                  "--length", "20", "--seed", "3")
        assert code == 0, err
        assert samples[t] == text[:-1]  # text sample ends its output with a newline
    assert json.loads(out)["start"] == samples["0.5"][0] == samples["1e-300"][0]


# ---------------------------------------------------------------------------------------
# eval on a run directory that cannot be written


def test_eval_on_an_unwritable_run_shows_the_result_and_warns_once(run_cli, run_copy, text_file, monkeypatch):
    import lapnet.text_runs

    def refuse(path, obj):
        raise PermissionError(13, "Permission denied", str(Path(path).parent / ".metrics.json.x.tmp"))

    before = (run_copy / "metrics.json").read_bytes()
    monkeypatch.setattr(lapnet.text_runs, "write_json", refuse)
    code, out, err = run_cli("text", "eval", run_copy, text_file, "--json")
    assert code == 0, err
    result = json.loads(out)  # the score is not lost
    assert result["chars"] == len(text_file.read_text()) - 1 and result["nats_per_char"] > 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapnet: warning:") and str(run_copy) in lines[0], err
    assert "Permission denied" in lines[0] and "Traceback" not in err
    assert (run_copy / "metrics.json").read_bytes() == before
    monkeypatch.undo()  # writable again: the result is stored as before
    code, out, _ = run_cli("text", "eval", run_copy, text_file, "--json")
    assert code == 0 and json.loads((run_copy / "metrics.json").read_text())["eval"] == json.loads(out)


def test_resume_says_which_typed_options_it_ignores(run_cli, run_copy, text_file):
    """A resumed run keeps its shape and data: options typed to change them are named, not dropped silently."""
    saved = json.loads((run_copy / "config.json").read_text())
    epochs = saved["train"]["epochs"] + 1 if saved.get("train", {}).get("epochs") else 3
    code, _, err = run_cli("text", "train", text_file, "--out", run_copy, "--resume", "--epochs", epochs,
                           "--hidden", "99", "--batch", "2", "--quiet")
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("lapnet: warning:")]
    assert len(warn) == 1 and warn[0].startswith(
        f"lapnet: warning: --hidden 99 (the run's: {saved['model']['hidden']}), --batch 2 (the run's: "
        f"{saved['data']['batch']}) ignored: a resumed run keeps its shape, data and training settings"), err
    assert json.loads((run_copy / "config.json").read_text())["model"] == saved["model"]


def test_a_batch_bigger_than_the_text_is_named(run_cli, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be or not to be, that is the question. " * 8, encoding="utf-8")  # 344 characters
    out = tmp_path / "run"
    code, _, err = run_cli("text", "train", short, "--out", out, "--epochs", "1", "--hidden", "8", "--embed", "4",
                           "--seq-len", "16", "--batch", "1000", "--quiet")
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("lapnet: warning:")]
    assert len(warn) == 1 and "--batch 1000: the training text holds only" in warn[0], err
    used = int(warn[0].rsplit("--batch ", 1)[1])
    assert 1 <= used < 1000 and json.loads((out / "metrics.json").read_text())
