"""What a practitioner reproducing the notebook with `lapnet text` needs to see: which step the
saved model is, the last step's weights on demand, training without validation (the notebook's
setting), a default batch that fits a short text, honest --resume messages, stdin."""

from __future__ import annotations

import hashlib
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
    uni = Path.cwd() / "uni.txt"  # data.source is recorded as an absolute path
    _train(run_cli, "uni.txt", "--out", "r", "--epochs", "1")
    m = _train(run_cli, "--out", "r", "--epochs", "2", "--resume")  # uni.txt, unchanged: reused
    assert m["epochs"] == 2
    Path("uni.txt").write_text(bundled_text() + "x", encoding="utf-8")
    code, _, err = run_cli("text", "train", "--out", "r", "--epochs", "3", "--resume", "--quiet")
    assert code == 2 and err == (f"lapnet: error: --resume: {uni}, the text r was trained on, has changed since; "
                                 "give the original text as FILE\n")
    Path("uni.txt").unlink()
    code, _, err = run_cli("text", "train", "--out", "r", "--epochs", "3", "--resume", "--quiet")
    assert code == 2 and f"r was trained on {uni} (config.json's data.source), which is not there now" in err
    Path("other.txt").write_text("something else entirely", encoding="utf-8")
    code, _, err = run_cli("text", "train", "other.txt", "--out", "r", "--epochs", "3", "--resume", "--quiet")
    assert code == 2 and err == ("lapnet: error: --resume: other.txt is not the text this run was trained on "
                                 f"({uni}, config.json's data.source)\n")


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


# ---------------------------------------------------------------------------------------
# a char-rnn practitioner's second review: resume, run directories, scoring, messages


SMALL = ["--hidden", "8", "--embed", "4", "--seq-len", "16", "--quiet"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A tiny run on the bundled passage (2 epochs, an evaluation every 3 steps), trained once;
    tests work on copies of it (`_copy`)."""
    from lapnet.cli import main

    base = tmp_path_factory.mktemp("small")
    text = base / "hamlet.txt"
    text.write_text(bundled_text(), encoding="utf-8")
    try:
        main(["text", "train", str(text), "--out", str(base / "run"), *SMALL, "--epochs", "2", "--eval-every", "3"])
    except SystemExit as e:
        assert e.code in (0, None)
    return base / "run"


def _copy(run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(run, dst)
    return dst


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.filterwarnings("always")
def test_a_resume_with_nothing_to_train_changes_no_file(run_cli, small_run, tmp_path):
    run = _copy(small_run, tmp_path / "r")
    code, out, err = run_cli("text", "eval", run, bundled_text_file(tmp_path), "--json")
    assert code == 0, err
    before = _snapshot(run)
    stored = json.loads((run / "metrics.json").read_text())
    assert "eval" in stored
    for budget in (["--epochs", "2"], ["--epochs", "1", "--minutes", "5"], ["--minutes", "0.00001"]):
        code, out, err = run_cli("text", "train", "--out", run, "--resume", *budget, "--quiet", "--json")
        assert code == 0 and "nothing to train" in err, (budget, err)
        assert _snapshot(run) == before, budget  # config.json, metrics.json (with its eval), samples.txt: as they were
        assert json.loads(out) == stored  # the run's result, as stored
    # a run whose final files were lost (killed after its last checkpoint) gets them back, config.json untouched
    (run / "metrics.json").unlink()
    (run / "samples.txt").unlink()
    code, out, err = run_cli("text", "train", "--out", run, "--resume", "--epochs", "2", "--quiet", "--json")
    assert code == 0 and "nothing to train" in err, err
    m = json.loads((run / "metrics.json").read_text())
    assert m == json.loads(out) and m["steps"] == stored["steps"] and m["val_loss"] == stored["val_loss"]
    # the same samples (the header names the directory, and this is a copy of the original)
    assert (run / "samples.txt").read_bytes().split(b"\n")[1:] == before["samples.txt"].split(b"\n")[1:]
    assert (run / "config.json").read_bytes() == before["config.json"]


def bundled_text_file(tmp_path: Path) -> Path:
    p = tmp_path / "hamlet.txt"
    if not p.exists():
        p.write_text(bundled_text(), encoding="utf-8")
    return p


def test_a_resume_keeps_the_runs_training_settings_and_records_itself(run_cli, tmp_path):
    text = bundled_text_file(tmp_path)
    mine = ["--lr", "0.02", "--seed", "3", "--schedule", "constant", "--clip", "2"]
    _train(run_cli, text, "--out", tmp_path / "straight", *mine, "--epochs", "4")
    _train(run_cli, text, "--out", tmp_path / "split", *mine, "--epochs", "2")
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    code, out, err = run_cli("text", "train", text, "--out", tmp_path / "split", "--resume", "--epochs", "4",
                             "--lr", "0.5", "--seed", "7", "--schedule", "cosine", "--clip", "0", *TINY, "--json")
    assert code == 0, err
    assert err == ("lapnet: warning: --lr 0.5 (the run's: 0.02), --schedule cosine (the run's: constant), --clip 0 "
                   "(the run's: 2), --seed 7 (the run's: 3) ignored: a resumed run keeps its shape, data and training "
                   f"settings ({tmp_path / 'split' / 'config.json'}); only --epochs, --minutes and --eval-every "
                   "apply\n")
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["train"] == saved["train"]  # the original settings stay on record
    assert config["resumes"] == [{"from_step": json.loads(out)["steps"] // 2, "epochs": 4, "minutes": None,
                                  "eval_every": saved["train"]["eval_every"],
                                  "ignored": ["--lr 0.5 (the run's: 0.02)", "--schedule cosine (the run's: constant)",
                                              "--clip 0 (the run's: 2)", "--seed 7 (the run's: 3)"]}]
    # the resumed run trained with its own lr, seed (batch offsets), schedule and clip: as one straight run
    a, _ = load_tensors(tmp_path / "straight" / "last.safetensors")
    b, _ = load_tensors(tmp_path / "split" / "last.safetensors")
    for k in a:
        if k.startswith("model."):
            np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)


def test_resuming_with_the_original_command_warns_about_nothing(run_cli, tmp_path):
    text = bundled_text_file(tmp_path)
    cmd = [text, "--out", tmp_path / "r", "--lr", "0.02", "--batch", "3", "--val-frac", "0.1"]
    _train(run_cli, *cmd, "--epochs", "1")
    code, _, err = run_cli("text", "train", *cmd, "--epochs", "2", "--resume", *TINY)
    assert code == 0 and err == "", err  # --hidden 12, --embed 6, --seq-len 16, --lr ... are the run's own values


def test_the_source_is_recorded_absolute_so_resume_works_from_anywhere(run_cli, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    Path("t.txt").write_text(bundled_text(), encoding="utf-8")
    _train(run_cli, "t.txt", "--out", "r", "--epochs", "1")
    config = json.loads(Path("r/config.json").read_text())
    assert config["data"]["source"] == str(tmp_path / "a" / "t.txt")
    monkeypatch.chdir(tmp_path / "b")
    m = _train(run_cli, "--out", tmp_path / "a" / "r", "--epochs", "2", "--resume")
    assert m["epochs"] == 2
    # a run written before (a relative source) still resumes from its own directory
    config["data"]["source"] = "t.txt"
    (tmp_path / "a" / "r" / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path / "a")
    assert _train(run_cli, "--out", "r", "--epochs", "3", "--resume")["epochs"] == 3


def test_a_run_killed_before_its_first_checkpoint_is_taken_over(run_cli, small_run, tmp_path):
    text = bundled_text_file(tmp_path)
    d = tmp_path / "killed"
    d.mkdir()
    for name in ("config.json", "vocab.json"):  # what a run holds before its first checkpoint
        (d / name).write_bytes((small_run / name).read_bytes())
    code, _, err = run_cli("text", "train", text, "--out", d, "--resume", "--epochs", "1", *SMALL)
    assert code == 2 and err == (f"lapnet: error: --resume: nothing was checkpointed in {d} (its run stopped before "
                                 f"the first checkpoint): run the same command without --resume\n")
    code, _, err = run_cli("text", "train", text, "--out", d, "--epochs", "1", *SMALL)
    assert code == 0 and "held only the start of a run stopped before its first checkpoint" in err, err
    assert (d / "last.safetensors").is_file() and (d / "metrics.json").is_file()
    # not another tool's config.json, and not beside anyone's other files
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"kind": "something-else"}')
    code, _, err = run_cli("text", "train", text, "--out", other, "--epochs", "1", *SMALL)
    assert code == 2 and "already holds a run" in err
    assert (other / "config.json").read_text() == '{"kind": "something-else"}'


def test_a_non_empty_out_without_a_run_is_called_that(run_cli, tmp_path, monkeypatch):
    text = bundled_text_file(tmp_path)
    f2 = tmp_path / "f2"
    f2.mkdir()
    (f2 / "notes.txt").write_text("keep")
    code, _, err = run_cli("text", "train", text, "--seq-len", "4", "--out", f2)
    assert code == 2 and err == (f"lapnet: error: --out {f2}: is not empty (1 file: notes.txt) and holds none of "
                                 "the files this command writes: give a new or empty directory, or --force to write "
                                 "them beside what is there (which is kept)\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("text", "train", "hamlet.txt", "--out", ".")
    assert code == 2 and "--out .: is not empty (2 entries, e.g. hamlet.txt) and holds none" in err, err
    m = _train(run_cli, text, "--out", f2, "--epochs", "1", "--force")
    assert m["steps"] > 0 and (f2 / "notes.txt").read_text() == "keep"


def test_eval_scores_every_character_in_streams_that_start_cold(run_cli, small_run, tmp_path):
    import torch
    import torch.nn.functional as F

    from lapnet.data.text import eval_layout
    from lapnet.text_runs import eval_text, load_run

    text = bundled_text() * 6  # 4788 characters: 2 streams of 2393, and 1 left over
    f = tmp_path / "six.txt"
    f.write_text(text, encoding="utf-8")
    run = load_run(small_run)
    ids = run.vocab.encode(text)

    def nll(part: np.ndarray) -> float:  # one stream from a zero state, the whole part at once
        with torch.no_grad():
            logits, _ = run.model(torch.from_numpy(part[None, :-1]))
            return float(F.cross_entropy(logits[0].double(), torch.from_numpy(part[1:]), reduction="sum"))

    S, L = 2, (len(ids) - 1) // 2
    assert eval_layout(ids).shape == (S, L + 1) and len(ids) - 1 - S * L == 1
    want = nll(ids[:L + 1]) + nll(ids[L:])  # the last stream runs to the end: no character dropped
    got = {}
    for engine in ("torch", "numpy"):
        got[engine] = eval_text(small_run, f, engine=engine, write=False)
        assert got[engine]["chars"] == len(text) - 1 and got[engine]["streams"] == S
        assert got[engine]["nats_per_char"] * (len(text) - 1) == pytest.approx(want, rel=1e-5)
    one = eval_text(small_run, f, write=False, streams=1)
    assert one["streams"] == 1 and one["nats_per_char"] * (len(text) - 1) == pytest.approx(nll(ids), rel=1e-6)
    code, out, err = run_cli("text", "eval", small_run, f, "--streams", "1", "--json")
    assert code == 0 and json.loads(out)["nats_per_char"] == pytest.approx(one["nats_per_char"], rel=1e-9), err
    code, _, err = run_cli("text", "eval", small_run, f, "--streams", "0")
    assert code == 2 and err == "lapnet: error: --streams must be an integer >= 1, got 0\n"


def test_one_streams_check_refuses_before_anything_is_read(tmp_path):
    """eval_text and eval_layout share one check (data.text.check_streams) and one message;
    eval_text asks it before it reads the run or the file (neither exists here)."""
    from lapnet.data.text import check_streams, eval_layout
    from lapnet.errors import LapnetError
    from lapnet.text_runs import eval_text

    for bad in (0, -3, True, 1.5, "2"):
        want = f"--streams must be an integer >= 1, got {bad!r}"
        for call in (lambda: eval_text(tmp_path / "no_run", tmp_path / "no.txt", streams=bad, write=False),
                     lambda: eval_layout(np.arange(10), streams=bad), lambda: check_streams(bad)):
            with pytest.raises(LapnetError) as e:
                call()
            assert str(e.value) == want
    check_streams(None)
    check_streams(np.int64(3))
    assert eval_layout(np.arange(10), streams=np.int64(3)).shape == (3, 4)


def test_a_train_loss_of_exactly_zero_is_reported(small_run, tmp_path, monkeypatch):
    import lapnet.text_runs as tr

    real = tr.fit

    def fit(*args, **kwargs):
        result = real(*args, **kwargs)
        result.history[-1]["train_loss"] = 0.0  # a text learnt perfectly
        return result

    monkeypatch.setattr(tr, "fit", fit)
    m = tr.train_text(bundled_text_file(tmp_path), tmp_path / "r", samples=False,
                      model=tr.CharLMConfig(vocab_size=1, hidden=8, embed=4), data=tr.TextDataConfig(seq_len=16),
                      train=tr.text_train_config(epochs=1, progress=False))
    assert m["train_loss"] == 0.0


@pytest.mark.parametrize("args, message", [
    (["--eval-every", "0"], "--eval-every must be an integer >= 1, got 0"),
    (["--lr", "0"], "--lr must be a finite positive number, got 0.0"),
    (["--lr", "nan"], "--lr must be a finite positive number, got nan"),
    (["--clip", "-1"], "--clip must be a positive number or 0 (off), got -1.0"),
    (["--clip-value", "-2"], "--clip-value must be a positive number or 0 (off), got -2.0"),
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--minutes", "-1"], "--minutes must be a positive number, got -1.0"),
    (["--schedule", "step"], "--schedule must be cosine or constant, got 'step'"),
])
def test_training_options_are_named_as_flags(run_cli, tmp_path, args, message):
    code, _, err = run_cli("text", "train", "--out", tmp_path / "r", *args)
    assert code == 2 and err == f"lapnet: error: {message}\n" and not (tmp_path / "r").exists()


def test_the_library_names_its_fields():
    from lapnet.errors import LapnetError
    from lapnet.train import TrainConfig

    with pytest.raises(LapnetError, match=r"^clip must be a positive number or None \(off\), got -1$"):
        TrainConfig(clip=-1).validate()


def test_a_text_too_short_for_one_window_says_what_would_fit(run_cli, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abcdefghij", encoding="utf-8")
    for seq in ("128", "9"):
        code, _, err = run_cli("text", "train", tiny, "--out", tmp_path / "r", "--seq-len", seq)
        assert code == 2 and err == (
            f"lapnet: error: {tiny} has 10 characters, of which --val-frac 0.1 holds out the last 2 for validation: "
            f"the 8 left to train on are shorter than one training window (--seq-len {seq} + 1); give --seq-len 7 "
            f"or less, or --val-frac 0 to train on all 10 (then --seq-len 9 or less), or a longer text\n")
    code, _, err = run_cli("text", "train", tiny, "--out", tmp_path / "r", "--seq-len", "10", "--val-frac", "0")
    assert code == 2 and err == (f"lapnet: error: {tiny} has 10 characters, shorter than one training window "
                                 f"(--seq-len 10 + 1); give --seq-len 9 or less, or a longer text\n")
    for advice in (["--seq-len", "7"], ["--seq-len", "9", "--val-frac", "0"]):  # and the advice works
        code, _, err = run_cli("text", "train", tiny, "--out", tmp_path / "ok", "--epochs", "1", "--hidden", "4",
                               "--embed", "2", "--quiet", "--force", *advice)
        assert code == 0, err


class _ClosedPipe(io.StringIO):
    def write(self, s):
        import errno

        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        self.write("")


def test_a_closed_stdout_ends_quietly(small_run, monkeypatch, capsys, tmp_path):
    from lapnet.cli import main

    for args in (["text", "sample", str(small_run), "--length", "50"],
                 ["text", "eval", str(small_run), str(bundled_text_file(tmp_path)), "--json"]):
        monkeypatch.setattr(sys, "stdout", _ClosedPipe())
        with pytest.raises(SystemExit) as e:
            main(args)
        monkeypatch.undo()
        assert e.value.code == 0, args
        assert capsys.readouterr().err == "", args


def test_a_closed_stdout_pipe_in_a_real_process(small_run):
    import subprocess

    for args in (["text", "sample", str(small_run), "--length", "200000"], ["--help"]):
        # `python -m lapnet` is the `lapnet` command (src/lapnet/__main__.py), wherever the script was installed
        p = subprocess.Popen([sys.executable, "-m", "lapnet", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()  # the reader is gone before lapnet writes (`| head -c 0`)
        try:
            _, err = p.communicate(timeout=120)  # a hang fails the test instead of blocking it
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise
        assert p.returncode == 0 and err.decode() == "", (args, err.decode())


def test_sample_json_records_the_random_start(run_cli, small_run):
    code, out, err = run_cli("text", "sample", small_run, "--length", "10", "--num-samples", "3", "--seed", "5",
                             "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["prime"] == "" and got["start"] == [s[0] for s in got["samples"]]
    vocab = json.loads((small_run / "vocab.json").read_text())["chars"]
    assert all(c in vocab for c in got["start"])
    code, out, err = run_cli("text", "sample", small_run, "--length", "4", "--prime", "To", "--json")
    assert code == 0 and json.loads(out)["start"] == ["To"], err


def test_gates_of_a_vanilla_rnn_says_there_are_none(run_cli, tmp_path):
    text = bundled_text_file(tmp_path)
    _train(run_cli, text, "--out", tmp_path / "rnn", "--arch", "rnn", "--epochs", "1")
    code, _, err = run_cli("gates", tmp_path / "rnn", "--out", tmp_path / "g", "--quiet")
    assert code == 0 and err == (f"lapnet: warning: {tmp_path / 'rnn'} is a vanilla RNN, which has no gates: no "
                                 "gates.png; wrote hidden.png (its hidden state h_t per character) and metrics.json "
                                 "instead\n"), err
    assert {p.name for p in (tmp_path / "g").iterdir()} == {"hidden.png", "metrics.json"}


def test_options_that_do_nothing_are_named(run_cli, tmp_path):
    text = bundled_text_file(tmp_path)
    code, out, err = run_cli("text", "train", text, "--out", tmp_path / "d", *SMALL, "--epochs", "1", "--dropout", "0.5")
    assert code == 0 and err == ("lapnet: warning: --dropout 0.5 does nothing with --layers 1: dropout is applied "
                                 "between stacked layers (torch.nn.LSTM's rule); give --layers 2 or more to use it\n")
    code, out, err = run_cli("text", "train", text, "--out", tmp_path / "d2", *SMALL, "--epochs", "1",
                             "--dropout", "0.5", "--layers", "2")
    assert code == 0 and err == "", err
    for cmd in (["train", text, "--out", tmp_path / "n"], ["sample", tmp_path / "d"], ["eval", tmp_path / "d", text]):
        code, _, err = run_cli("text", *cmd, "--engine", "numpy", "--device", "cuda")
        assert code == 2 and err == ("lapnet: error: --device cuda: --engine numpy runs on the CPU only (use --device "
                                     "cpu or auto)\n"), cmd
    assert not (tmp_path / "n").exists()


def test_a_byte_order_mark_is_not_a_character(run_cli, tmp_path, monkeypatch):
    from lapnet.data.text import read_text

    words = "To be or not to be, that is the question. " * 4
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + words.encode("utf-8"))
    assert read_text(bom) == words
    _train(run_cli, bom, "--out", tmp_path / "r", "--epochs", "1")
    assert "\ufeff" not in json.loads((tmp_path / "r" / "vocab.json").read_text())["chars"]
    assert "after 'T'" in (tmp_path / "r" / "samples.txt").read_text().splitlines()[0]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["sha256"] == \
        hashlib.sha256(words.encode("utf-8")).hexdigest()
    plain = tmp_path / "plain.txt"
    plain.write_text(words, encoding="utf-8")
    scores = []
    for f in (bom, plain):
        code, out, err = run_cli("text", "eval", tmp_path / "r", f, "--json")
        assert code == 0, err
        scores.append(json.loads(out))
    assert scores[0]["chars"] == scores[1]["chars"] == len(words) - 1
    assert scores[0]["nats_per_char"] == scores[1]["nats_per_char"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bom.read_bytes()), encoding="utf-8"))
    code, out, err = run_cli("text", "eval", tmp_path / "r", "-", "--json")
    assert code == 0 and json.loads(out)["nats_per_char"] == scores[1]["nats_per_char"], err
    # a run trained before marks were dropped learnt the mark: its own text is handed back with it
    from lapnet.text_runs import _same_text, _sha256

    assert _same_text(words, _sha256("\ufeff" + words)) == "\ufeff" + words
    assert _same_text(words, _sha256(words)) == words and _same_text(words, _sha256("other")) is None


def _interrupting(monkeypatch, where: str):
    """Two SIGINTs in a row, as a user hitting Ctrl-C twice, sent from inside `where`:
    "eval" (fit's evaluations: the first sets fit's stop flag, the second raises in the
    evaluation) or "samples" (the final writes, after fit has stopped)."""
    import os
    import signal

    import lapnet.text_runs as tr

    if where == "eval":
        real, calls = tr._val_metrics, {"n": 0}

        def val_metrics(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:  # a checkpoint exists (from the first evaluation)
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args, **kwargs)

        monkeypatch.setattr(tr, "_val_metrics", val_metrics)
    else:
        real_samples = tr._write_samples

        def write_samples(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return real_samples(*args, **kwargs)

        monkeypatch.setattr(tr, "_write_samples", write_samples)


@pytest.mark.parametrize("where", ["eval", "samples"])
def test_a_second_ctrl_c_still_leaves_the_results(run_cli, tmp_path, monkeypatch, where):
    text = bundled_text_file(tmp_path)
    _interrupting(monkeypatch, where)
    code, _, err = run_cli("text", "train", text, "--out", tmp_path / "r", *SMALL, "--epochs", "6",
                           "--eval-every", "2")
    assert code == (130 if where == "eval" else 0), err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert (tmp_path / "r" / "samples.txt").is_file()
    last, meta = load_tensors(tmp_path / "r" / "last.safetensors")
    assert m["steps"] == meta["trainer"]["step"]
    if where == "eval":
        assert m["stopped"] == "interrupted" and err.endswith("lapnet: error: interrupted\n")
    monkeypatch.undo()
    assert _train(run_cli, text, "--out", tmp_path / "r", "--epochs", "6", "--resume")["epochs"] == 6


def test_the_stdin_resume_error_says_standard_input(run_cli, tmp_path, monkeypatch):
    text = bundled_text()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8"))
    _train(run_cli, "-", "--out", tmp_path / "r", "--epochs", "1")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"something else"), encoding="utf-8"))
    code, _, err = run_cli("text", "train", "-", "--out", tmp_path / "r", "--epochs", "2", "--resume", *TINY)
    assert code == 2 and err == ("lapnet: error: --resume: standard input is not the text this run was trained on "
                                 "(standard input, config.json's data.source)\n")


def test_vocab_errors_name_the_run(run_cli, small_run, tmp_path):
    run = _copy(small_run, tmp_path / "r")
    (run / "vocab.json").write_text('{"chars": ["a", "a"]}')
    code, _, err = run_cli("text", "sample", run)
    assert code == 2 and err == (f"lapnet: error: {run / 'vocab.json'}: expected {{\"chars\": [one distinct "
                                 "character per entry]}\n")
