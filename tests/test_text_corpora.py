"""`lapnet text` on corpora that are not English prose: output on a stdout that is not UTF-8,
--threads for sample and eval, evaluation memory bounded by the vocabulary, validation scored
on a bounded slice, mis-encoded and binary input, unknown characters shown by name, and
`lapnet gates` on a run whose vocabulary lacks its default text."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lapnet.data.text import Vocab, decode_text, eval_layout, eval_tail
from lapnet.errors import LapnetError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "12", "--embed", "6", "--seq-len", "16", "--batch", "4", "--quiet"]
# Japanese with accented Latin words, in NFC: a vocabulary without 'T', 'o', 'b', 't'
JA = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。café naïve résumé\n"


def _main(*args) -> int:
    from lapnet.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


@pytest.fixture(scope="module")
def ja_run(tmp_path_factory) -> Path:
    """A tiny run trained on JA for one epoch (a few steps)."""
    base = tmp_path_factory.mktemp("corpora")
    src = base / "ja.txt"
    src.write_text(unicodedata.normalize("NFC", JA) * 30, encoding="utf-8")
    out = base / "ja_run"
    assert _main("text", "train", src, "--out", out, *TINY, "--epochs", "1") == 0
    return out


def _one_line_error(code: int, err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lapnet: error: "), err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# 1. model text on a stdout that is not UTF-8


def test_sample_streams_utf8_on_an_ascii_stdout(ja_run, tmp_path):
    """PYTHONIOENCODING=ascii (a C or Latin-1 locale, Windows' cp1252 when redirected): the
    sample is written in UTF-8, and so is a message on stderr; it died with
    `internal error: UnicodeEncodeError` on the first Japanese character."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lapnet", "text", "sample", str(ja_run), "--prime", "吾輩", "--length", "20",
           "--seed", "0"]
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    text = done.stdout.decode("utf-8")  # strict: every byte is UTF-8
    assert text.startswith("吾輩") and text.endswith("\n") and len(text) == 2 + 20 + 1
    assert set(text[:-1]) <= set(json.loads((ja_run / "vocab.json").read_text())["chars"])
    bad = subprocess.run([*cmd[:6], "--prime", "Ω"], capture_output=True, env=env, timeout=120)
    assert bad.returncode == 2 and "never saw: 'Ω'" in bad.stderr.decode("utf-8"), bad.stderr


def test_sample_json_in_utf8_on_a_latin1_stdout(ja_run, monkeypatch, capsys):
    """--json wrote `ensure_ascii=False` JSON through a Latin-1 stdout: UnicodeEncodeError."""
    raw = io.BytesIO()
    latin = io.TextIOWrapper(raw, encoding="latin-1", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", latin)
    code = _main("text", "sample", ja_run, "--prime", "猫", "--length", "12", "--seed", "3", "--json")
    latin.flush()
    assert code == 0, capsys.readouterr().err
    got = json.loads(raw.getvalue().decode("utf-8"))
    assert got["prime"] == "猫" and len(got["samples"][0]) == 13 and got["samples"][0][0] == "猫"


# 2. --threads for sample and eval


def test_sample_and_eval_take_threads(ja_run, tmp_path, monkeypatch, run_cli):
    """`text eval` and `text sample` had no --threads ("No such option") and ran on torch's
    default threads; they take it now, default 1, through the same set_threads as train."""
    from lapnet.cli import common

    calls = []
    real = common.set_threads
    monkeypatch.setattr(common, "set_threads", lambda n: calls.append(n) or real(n))
    held = tmp_path / "held.txt"
    held.write_text(JA * 3, encoding="utf-8")
    try:
        code, _, err = run_cli("text", "eval", ja_run, held)
        assert code == 0, err
        code, _, err = run_cli("text", "eval", ja_run, held, "--threads", "2", "--json")
        assert code == 0, err
        assert torch.get_num_threads() == 2
        code, out, err = run_cli("text", "sample", ja_run, "--length", "5", "--seed", "1")
        assert code == 0 and len(out) == 1 + 5 + 1, err
        code, _, err = run_cli("text", "sample", ja_run, "--length", "5", "--threads", "2")
        assert code == 0, err
        assert calls == [1, 2, 1, 2]
        code, _, err = run_cli("text", "eval", ja_run, held, "--threads", "0")
        _one_line_error(code, err, "--threads must be at least 1, got 0")
    finally:
        real(1)  # conftest's one thread per worker


# 3. evaluation memory bounded by the vocabulary


def test_eval_chunk_keeps_the_logits_within_the_bound():
    from lapnet import text_runs
    from lapnet.text_runs import EVAL_CHUNK, EVAL_LOGITS_BYTES, eval_chunk

    assert EVAL_LOGITS_BYTES <= 256 * 2**20
    assert eval_chunk(32, 100) == EVAL_CHUNK == 256  # an English vocabulary: chunks as before
    for streams, vocab in ((32, 5_001), (32, 20_000), (7, 70_000), (1, 10**6)):
        t = eval_chunk(streams, vocab)
        assert 1 <= t < EVAL_CHUNK and streams * t * vocab * 4 <= EVAL_LOGITS_BYTES
        assert streams * (t + 1) * vocab * 4 > EVAL_LOGITS_BYTES  # as long as the bound allows
    assert eval_chunk(32, 20_000) == 13  # was 256: 655 MB of float32 logits, 3.5 GB with the float64 copies
    assert eval_chunk(32, 10**7) == 1 and text_runs.eval_chunk(1, 1) == EVAL_CHUNK


def _hand_nll(model, ids: np.ndarray, streams: int) -> tuple[float, int]:
    """The score as it was computed before chunks depended on V: every row in ONE forward
    pass, float64 cross-entropy of all its logits, then the tail from the last row's state."""
    import torch.nn.functional as F

    rows = eval_layout(ids, streams=streams)
    tail = eval_tail(ids, rows)
    with torch.no_grad():
        logits, state = model(torch.from_numpy(rows[:, :-1]))
        total = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                      torch.from_numpy(rows[:, 1:]).reshape(-1), reduction="sum"))
        count = rows[:, 1:].size
        if len(tail) > 1:
            last = tuple(h[:, -1:].contiguous() for h in state)
            logits, _ = model(torch.from_numpy(tail[None, :-1]), last)
            total += float(F.cross_entropy(logits[0].double(), torch.from_numpy(tail[1:]), reduction="sum"))
            count += len(tail) - 1
    return total, count


@pytest.mark.parametrize("streams", [1, 3])
def test_eval_in_vocabulary_sized_chunks_equals_the_one_pass_score(monkeypatch, streams):
    """With the logits bound so small that a chunk is 5 characters, the score equals the one
    forward pass over all the text to 1e-9 (and the chunks really are 5 characters)."""
    from lapnet import text_runs
    from lapnet.models.charlm import CharLMConfig

    text = unicodedata.normalize("NFC", JA) * 8
    vocab = Vocab.from_text(text)
    V = len(vocab)
    net = text_runs.build_model(CharLMConfig(vocab_size=V, embed=6, hidden=12), "torch", seed=0)
    run = text_runs.Run(None, "torch", net, vocab)
    ids = vocab.encode(text)
    monkeypatch.setattr(text_runs, "EVAL_LOGITS_BYTES", streams * V * 4 * 5)  # chunk: 5 characters per stream
    widths = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda x, state=None: widths.append(x.shape[1]) or forward(x, state))
    total, count = run.nll(ids, streams)
    assert max(widths) == 5 and len(widths) >= (len(ids) - 1) // streams // 5
    want, want_count = _hand_nll(net, ids, streams)
    assert count == want_count == len(ids) - 1
    assert abs(total / count - want / want_count) < 1e-9 and abs(total - want) < 1e-9 * count


def test_eval_memory_numpy_engine_is_bounded(monkeypatch):
    """NumPy engine, V = 1,500, 8 streams of 256: the float32 logits (12 MB), their float64
    copy and log-softmax made a peak of about 60 MB; in chunks bounded to 1 MB of logits the
    peak stays under 12 MB, and the score is the same to 1e-9."""
    import tracemalloc

    from lapnet import text_runs
    from lapnet.models.charlm import CharLMConfig

    rng = np.random.default_rng(0)
    chars = "".join(chr(0x4E00 + i) for i in range(1500))
    vocab = Vocab(chars)
    ids = rng.integers(0, len(vocab), size=8 * 2048 + 1)
    net = text_runs.build_model(CharLMConfig(vocab_size=len(vocab), embed=4, hidden=8), "numpy", seed=0)
    run = text_runs.Run(None, "numpy", net, vocab)
    monkeypatch.setattr(text_runs, "EVAL_LOGITS_BYTES", 1 << 20)
    assert text_runs.eval_chunk(8, len(vocab)) == 21
    tracemalloc.start()
    try:
        total, count = run.nll(ids, streams=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MB"
    monkeypatch.setattr(text_runs, "EVAL_LOGITS_BYTES", 1 << 40)  # one chunk of 256: the old layout
    ref, ref_count = run.nll(ids, streams=8)
    assert count == ref_count == len(ids) - 1 and abs(total - ref) < 1e-9 * count


# 4. validation scored on a bounded slice


def test_validation_scores_at_most_the_cap_and_says_so(tmp_path, monkeypatch, run_cli):
    """A long validation split was scored whole at every evaluation (55 s of a one-minute run
    on 40 MB); now the first FIT_EVAL_CHARS characters of it, recorded as val_scored_chars,
    shown in the summary, and equal to `text eval` of that slice with the same weights."""
    from lapnet import text_runs

    monkeypatch.setattr(text_runs, "FIT_EVAL_CHARS", 300)
    seen = []
    nll = text_runs.Run.nll
    monkeypatch.setattr(text_runs.Run, "nll",
                        lambda self, ids, streams=None: seen.append(len(ids)) or nll(self, ids, streams))
    text = (JA * 100)[:4000]
    src = tmp_path / "ja.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    code, stdout, err = run_cli("text", "train", src, "--out", out, *TINY[:-1], "--epochs", "1",
                                "--val-frac", "0.25", "--json")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["val_chars"] == 1000 and metrics["val_scored_chars"] == 300
    assert seen and max(seen) == 300  # every evaluation during training (samples.txt scores nothing)
    assert "val scored on" in err and "first 300 of 1,000 chars" in err
    held = tmp_path / "held300.txt"
    held.write_text(text[3000:3300], encoding="utf-8")
    code, stdout, err = run_cli("text", "eval", out, held, "--checkpoint", "last", "--json")
    assert code == 0, err
    assert json.loads(stdout)["nats_per_char"] == pytest.approx(metrics["val_loss"], abs=1e-9)
    code, stdout, err = run_cli("text", "train", src, "--out", tmp_path / "all", *TINY, "--epochs", "1",
                                "--val-frac", "0", "--json")
    assert code == 0, err
    assert json.loads(stdout)["text_scored_chars"] == 300 and max(seen) == 300


def test_val_frac_help_states_the_cap(run_cli):
    from lapnet.text_runs import FIT_EVAL_CHARS

    code, out, _ = run_cli("text", "train", "--help")
    assert code == 0 and f"{FIT_EVAL_CHARS:,}" in " ".join(out.split())
    assert "val_scored_chars" in out


# 5. a text too short to train on at all


def test_one_character_file_is_named_with_advice_that_fits(tmp_path, run_cli):
    one = tmp_path / "one.txt"
    one.write_text("a", encoding="utf-8")
    for extra in ((), ("--val-frac", "0")):
        code, _, err = run_cli("text", "train", one, "--out", tmp_path / "r", *extra)
        line = _one_line_error(code, err)
        assert line == (f"lapnet: error: {one} has 1 character: too short to train on at all (a model needs at "
                        f"least 2 characters, an input and its target)")
    two = tmp_path / "two.txt"
    two.write_text("ab", encoding="utf-8")
    code, _, err = run_cli("text", "train", two, "--out", tmp_path / "r")
    assert _one_line_error(code, err) == (f"lapnet: error: {two} has 2 characters: too short to split off 10% "
                                          f"for validation (--val-frac 0 trains on all of it)")
    assert not (tmp_path / "r").exists()


# 6. what a character is: the guide's claims hold


def test_the_guide_says_what_a_character_is_and_it_is_true():
    guide = " ".join((REPO / "docs" / "guide" / "text.md").read_text(encoding="utf-8").split())
    assert "What a character is" in guide and "code point" in guide
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"
    assert len(family) == 7 and "is 7 characters" in guide
    assert len(Vocab.from_text("a\r\nb")) == 4 and "\r" in Vocab.from_text("a\r\nb").chars
    nfc = unicodedata.normalize("NFC", "café")
    assert Vocab.from_text(nfc + " le").unknown(unicodedata.normalize("NFD", "café")) == ["\u0301"]
    with pytest.warns(UserWarning, match="byte-order mark"):
        assert decode_text("\ufeffab\ufeffc".encode("utf-8"), "x.txt") == "ab\ufeffc"  # only a leading one dropped
    for claim in ("CRLF", "NFC", "NFD", "grapheme", "--prime"):
        assert claim in guide


# 7. unknown characters shown by name, with a hint at Unicode normalisation


def test_show_char_names_invisible_combining_and_control_characters():
    from lapnet.data.text import show_char

    assert show_char("a") == "'a'" and show_char("é") == "'é'" and show_char(" ") == "' '"
    assert show_char("\u0301") == "U+0301 COMBINING ACUTE ACCENT"
    assert show_char("\u200d") == "U+200D ZERO WIDTH JOINER"
    assert show_char("\xa0") == "U+00A0 NO-BREAK SPACE"
    assert show_char("\u093e") == "U+093E DEVANAGARI VOWEL SIGN AA"
    assert show_char("\r") == "U+000D '\\r'" and show_char("\udce9") == "U+DCE9 '\\udce9'"


def test_unknown_combining_marks_hint_at_normalisation():
    nfc = Vocab.from_text(unicodedata.normalize("NFC", "café naïve"))
    with pytest.raises(LapnetError) as e:
        nfc.encode(unicodedata.normalize("NFD", "café"), what="--prime")
    assert str(e.value) == ("--prime has 1 character(s) the model never saw: U+0301 COMBINING ACUTE ACCENT "
                            "(normalised to Unicode NFC, accents composed, it fits the model's vocabulary: "
                            "unicodedata.normalize('NFC', text) in Python)")
    nfd = Vocab.from_text(unicodedata.normalize("NFD", "café"))
    with pytest.raises(LapnetError, match=r"never saw: 'é' \(normalised to Unicode NFD, accents as combining marks"):
        nfd.encode("café")
    with pytest.raises(LapnetError) as e:  # a mark no normal form removes: the hint says forms may differ
        Vocab("abc").encode("a\u0301", what="text")
    assert "U+0301 COMBINING ACUTE ACCENT" in str(e.value) and "another Unicode normal form" in str(e.value)
    with pytest.raises(LapnetError) as e:  # no mark, no normal form that fits: no hint
        Vocab("abc").encode("abz")
    assert str(e.value) == "text has 1 character(s) the model never saw: 'z'"


def test_eval_of_nfd_text_names_the_marks_and_the_fix(ja_run, tmp_path, run_cli):
    nfd = tmp_path / "nfd.txt"
    nfd.write_text(unicodedata.normalize("NFD", JA) * 2, encoding="utf-8")
    code, _, err = run_cli("text", "eval", ja_run, nfd)
    _one_line_error(code, err, "U+0301 COMBINING ACUTE ACCENT", "U+0308 COMBINING DIAERESIS",
                    "normalised to Unicode NFC", "--skip-unknown leaves them out")
    code, _, err = run_cli("text", "eval", ja_run, nfd, "--skip-unknown")
    assert code == 0 and "U+0301 COMBINING ACUTE ACCENT" in err and "'\u0301'" not in err, err


# 8. mis-encoded and binary input


@pytest.mark.parametrize("raw, parts", [
    ("hello world\n".encode("utf-16"),
     ("UTF-16LE byte-order mark (ff fe)", "`iconv -f utf-16 -t utf-8 in.txt > in.utf8.txt`")),
    (b"\xfe\xff" + "hello world\n".encode("utf-16-be"), ("UTF-16BE byte-order mark (fe ff)", "iconv -f utf-16 ")),
    ("hello world\n".encode("utf-16-le"),
     ("looks like UTF-16LE without a byte-order mark", "iconv -f utf-16le -t utf-8")),
    ("hello world\n".encode("utf-16-be"),
     ("looks like UTF-16BE without a byte-order mark", "iconv -f utf-16be -t utf-8")),
    ("hello\n".encode("utf-32"), ("UTF-32LE byte-order mark", "iconv -f utf-32 -t utf-8")),
    ("café au lait".encode("latin-1"), ("not UTF-8 text (byte 0xe9 at offset 3)",
                                        "if it is Latin-1 (ISO-8859-1), convert it with "
                                        "`iconv -f latin1 -t utf-8 in.txt > in.utf8.txt`")),
    (b"\0" * 2000, ("binary data, not text (100% of its 2,000 characters are NUL bytes)",)),
    (b"abc\0def\0\n" * 10, ("binary data, not text (22% of its 90 characters are NUL bytes)",)),
    (b"\x7fELF\x02\x01\x01\0\0\0\xff\xfe\0", ("not UTF-8 text (byte 0xff at offset 10), and it holds NUL bytes",)),
], ids=["utf16le-bom", "utf16be-bom", "utf16le", "utf16be", "utf32le-bom", "latin1", "all-nul", "22%-nul", "elf"])
def test_mis_encoded_input_is_named(raw, parts):
    with pytest.raises(LapnetError) as e:
        decode_text(raw, "in.txt")
    for part in parts:
        assert part in str(e.value), str(e.value)


def test_text_with_few_nuls_or_an_inner_bom_is_kept():
    text = "a" * 95 + "\0" * 5  # 5% NUL: kept (and learnt), not called binary
    assert decode_text(text.encode("utf-8"), "x.txt") == text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leading BOM goes without a word
        assert decode_text(b"\xef\xbb\xbfabc", "x.txt") == "abc"
    with pytest.warns(UserWarning) as got:
        assert decode_text(("\ufeffab\n" * 3).encode("utf-8"), "cat.txt") == "ab\n" + "\ufeffab\n" * 2
    assert [str(w.message) for w in got] == ["cat.txt: 2 byte-order marks (U+FEFF) inside the text, not at its "
                                             "start (files joined with cat?): kept as characters of the text"]


def test_train_refuses_utf16_in_one_line_and_creates_nothing(tmp_path, run_cli):
    u16 = tmp_path / "u16.txt"
    u16.write_bytes(("hello world\n" * 50).encode("utf-16-le"))  # valid UTF-8 byte for byte: it trained before
    out = tmp_path / "run"
    code, _, err = run_cli("text", "train", u16, "--out", out)
    _one_line_error(code, err, "UTF-16LE", "iconv -f utf-16le -t utf-8")
    assert not out.exists()


def test_report_escapes_control_characters(tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples.txt").write_bytes(b"abc\x00def\x01\x7f\r\n\tend\n")
    (run / "metrics.json").write_text(json.dumps({"note": "nul\u0000here"}), encoding="utf-8")
    page = tmp_path / "page.html"
    code, _, err = run_cli("report", run, "--out", page)
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    assert not any(ch in html for ch in "\x00\x01\x7f")
    # the page reads samples.txt with newline translation: the \r of \r\n is gone either way
    assert "abc\u2400def\u2401\u2421\n\tend" in html and "nul\u2400here" in html


# 9. gates on a run that cannot read the default text


def test_gates_default_text_falls_back_on_a_run_that_lacks_it(ja_run, tmp_path, run_cli):
    """`lapnet gates RUN` on a Japanese run refused 'To be or not to be', which the user never
    typed; it traces text the model writes itself, with a warning, as temperature falls back."""
    code, out, err = run_cli("gates", ja_run, "--out", tmp_path / "g", "--quiet", "--json")
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("lapnet: warning:")]
    assert len(warning) == 1
    assert "the default --text 'To be or not to be' has characters this model never saw" in warning[0]
    assert "--text chooses the text" in warning[0]
    text = json.loads(out)["text"]
    vocab = set(json.loads((ja_run / "vocab.json").read_text())["chars"])
    assert len(text) == 18 and set(text) <= vocab and repr(text) in warning[0]
    code, _, err = run_cli("gates", ja_run, "--out", tmp_path / "g2", "--text", "To be")
    _one_line_error(code, err, "--text has 3 character(s) the model never saw: 'T', 'o', 'b'")


def test_gates_default_text_keeps_a_long_known_ending(tmp_path):
    from lapnet.experiments.gates import DEFAULT_TEXT, default_text

    assert default_text(Vocab.from_text(DEFAULT_TEXT)) == DEFAULT_TEXT
    with pytest.warns(UserWarning, match=r"never saw \('T'\): tracing 'o be or not to be' instead"):
        assert default_text(Vocab.from_text("o be or not to be")) == "o be or not to be"
