"""Someone else's run directory, crafted to hurt: a lock-file symlink, a config.json naming
another file to train on, report links out of the run, a dangling log.jsonl, absurd sizes, a
malformed log or trainer state, and paths the C locale cannot encode. Each is one line on
stderr and exit 2 (or, for `report`, a page that says what it skipped), nothing is written
outside the run, and a refused resume changes no file of it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lapnet.checkpoint import load_tensors, save_tensors
from lapnet.data.text import bundled_text
from lapnet.errors import LapnetError

SMALL = ["--hidden", "8", "--embed", "4", "--seq-len", "16", "--quiet"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny text run (one epoch of the bundled passage, from a file), trained once; tests
    work on copies (`_copy`)."""
    from lapnet.cli import main

    base = tmp_path_factory.mktemp("untrusted_a")
    text = base / "hamlet.txt"
    text.write_text(bundled_text(), encoding="utf-8")
    try:
        main(["text", "train", str(text), "--out", str(base / "run"), *SMALL, "--epochs", "1"])
    except SystemExit as e:
        assert e.code in (0, None)
    return base / "run"


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, symlinks=True)
    return dst


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: (os.readlink(p).encode() if p.is_symlink() else p.read_bytes()) for p in sorted(d.iterdir())}


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lapnet: error: ") and "Traceback" not in err, err
    return lines[0]


def _edit_config(run: Path, edit) -> None:
    cfg = json.loads((run / "config.json").read_text())
    edit(cfg)
    (run / "config.json").write_text(json.dumps(cfg))


# ---------------------------------------------------------------------------------------
# 1. the lock file


def test_a_lock_file_symlink_is_refused_and_its_target_is_untouched(run_cli, base_run, tmp_path):
    run = _copy(base_run, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / ".lapnet.lock").symlink_to(victim)
    before = _snapshot(run)
    code, out, err = run_cli("text", "train", "--resume", "--epochs", "2", "--out", run, "--quiet")
    assert code == 2
    line = _one_line(err)
    assert ".lapnet.lock" in line and "symlink" in line and "remove it" in line, line
    assert victim.read_text() == "precious\n"
    assert _snapshot(run) == before  # the link too: not lapnet's to remove


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path):
    from lapnet.run_dir import lock_run_dir, release_run_locks

    fifo_run, linked_run = tmp_path / "fifo", tmp_path / "linked"
    fifo_run.mkdir()
    linked_run.mkdir()
    os.mkfifo(fifo_run / ".lapnet.lock")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.link(victim, linked_run / ".lapnet.lock")  # a hard link: the same file as one outside the run
    try:
        with pytest.raises(LapnetError, match=r"\.lapnet\.lock is not a regular file \(a pipe\)"):
            lock_run_dir(fifo_run)
        with pytest.raises(LapnetError, match=r"\.lapnet\.lock has 2 hard links"):
            lock_run_dir(linked_run)
    finally:
        release_run_locks()
    assert victim.read_text() == "precious\n"


def test_a_filesystem_without_flock_trains_unlocked_with_a_warning(tmp_path, monkeypatch):
    import fcntl

    from lapnet.run_dir import holds_run_lock, lock_run_dir, release_run_locks

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = tmp_path / "share"
    run.mkdir()
    try:
        with pytest.warns(UserWarning, match=r"does not support file locks \(No locks available\).*unlocked"):
            lock_run_dir(run)
        lock_run_dir(run)  # asked again (fit after the CLI): no second warning, no error
        assert not holds_run_lock(run)
        assert not (run / ".lapnet.lock").exists()  # the lock file it made is not left behind
    finally:
        release_run_locks()


@pytest.mark.parametrize("code_", [errno.EWOULDBLOCK, errno.EACCES])
def test_a_held_lock_is_still_refused(tmp_path, monkeypatch, code_):
    import fcntl

    from lapnet.run_dir import lock_run_dir, release_run_locks

    def held(fd, op):
        raise OSError(code_, os.strerror(code_))

    monkeypatch.setattr(fcntl, "flock", held)
    (tmp_path / "r").mkdir()
    try:
        with pytest.raises(LapnetError, match="is in use by another lapnet process"):
            lock_run_dir(tmp_path / "r")
    finally:
        release_run_locks()


def test_names_from_data_are_safe_on_windows_too():
    from lapnet.run_dir import safe_name

    assert safe_name('Monza 2023: R?') == "Monza 2023_ R_"
    assert safe_name('a*b"c<d>e|f:g?h') == "a_b_c_d_e_f_g_h"
    assert safe_name("Bahrain Grand Prix") == "Bahrain Grand Prix"  # nothing to change: unchanged


# ---------------------------------------------------------------------------------------
# 2. the text a resume trains on


@pytest.mark.parametrize("sha", [None, "", "abc", "g" * 64, 12, "MISSING"])
def test_a_resume_without_a_proper_text_hash_is_refused(run_cli, base_run, tmp_path, sha):
    run = _copy(base_run, tmp_path / "run")
    secret = tmp_path / "credentials"
    secret.write_text(bundled_text(), encoding="utf-8")  # fits the vocabulary: only the hash can tell

    def edit(cfg):
        cfg["data"]["source"] = str(secret)
        if sha == "MISSING":
            del cfg["data"]["sha256"]
        else:
            cfg["data"]["sha256"] = sha

    _edit_config(run, edit)
    before = _snapshot(run)
    for given in ([], [secret]):  # the recorded source, or a FILE given again: neither can be checked
        code, out, err = run_cli("text", "train", *given, "--resume", "--epochs", "2", "--out", run, "--quiet")
        assert code == 2, (given, err)
        line = _one_line(err)
        if sha == 12:  # not even a string: named as such, as any other field of the wrong type
            assert "data.sha256 must be a string or null, got 12" in line, line
        else:
            assert "data.sha256" in line and "cannot be checked" in line and "--force" in line, line
        assert _snapshot(run) == before, given


def test_a_resume_never_trains_on_a_file_whose_hash_differs(run_cli, base_run, tmp_path):
    run = _copy(base_run, tmp_path / "run")
    other = tmp_path / "other.txt"
    other.write_text(bundled_text()[::-1], encoding="utf-8")  # the same characters, another text
    _edit_config(run, lambda cfg: cfg["data"].update(source=str(other)))
    before = _snapshot(run)
    code, out, err = run_cli("text", "train", "--resume", "--epochs", "2", "--out", run, "--quiet")
    assert code == 2 and "has changed since" in _one_line(err), err
    assert _snapshot(run) == before


def test_the_file_hash_matches_the_text_hash_with_and_without_a_byte_order_mark(tmp_path):
    import hashlib

    from lapnet.text_runs import _file_hashes

    text = "héllo\nwörld\n" * 5000
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_bytes(text.encode("utf-8"))
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    want = hashlib.sha256(text.encode("utf-8")).hexdigest()
    want_bom = hashlib.sha256(("\ufeff" + text).encode("utf-8")).hexdigest()
    assert _file_hashes(plain) == (want, want_bom)
    assert _file_hashes(marked) == (want, want_bom)  # the mark is dropped from the text, as read_text does


# ---------------------------------------------------------------------------------------
# 3. report


def test_report_does_not_follow_links_out_of_the_run(run_cli, base_run, tmp_path):
    run = _copy(base_run, tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"api_key": "TOPSECRET-1"}')
    (outside / "metrics.json").write_text('{"api_key": "TOPSECRET-2"}')
    (outside / "notes.txt").write_text("TOPSECRET-3")
    (run / "sub").symlink_to(outside)
    (run / "leak.json").symlink_to(outside / "secret.json")
    (run / "samples.txt").unlink()
    (run / "samples.txt").symlink_to(outside / "notes.txt")
    (run / "tree").symlink_to("/usr")
    (run / "inside.json").symlink_to(run / "config.json")  # within the run: shown
    code, out, err = run_cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "TOPSECRET" not in page
    assert "links out of the run folder, not followed: leak.json, samples.txt, sub/, tree/" in page
    assert "<h3>inside.json</h3>" in page
    assert "lapnet: warning: " in err and "not followed: leak.json, samples.txt, sub/, tree/" in err
    assert len(page) < 200_000  # /usr is not in it


def test_report_caps_the_size_of_an_image(run_cli, base_run, tmp_path, monkeypatch):
    import lapnet.report as report

    run = _copy(base_run, tmp_path / "run")
    with open(run / "huge.png", "wb") as f:  # sparse: 30 MB on paper, nothing on disk
        f.truncate(30 * 2**20)
    (run / "small.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    code, out, err = run_cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "huge.png is too large to embed (31.5 MB; at most 20 MB)" in page
    assert page.count("data:image/png;base64,") == 2  # small.png and the loss curve, not huge.png
    assert len(page) < 1_000_000


@pytest.mark.parametrize("name", ["metrics.json", "extra.json", "config.json", "log.jsonl", "samples.json"])
@pytest.mark.parametrize("content, why", [("[" * 100000, "nested too deeply"),
                                          ('{"step": ' + "9" * 5000 + "}", "a number too long"),
                                          ('{"x": ' + "[" * 600 + "]" * 600 + "}", "deep")])
def test_report_survives_json_that_python_cannot_hold(run_cli, base_run, tmp_path, name, content, why):
    run = _copy(base_run, tmp_path / "run")
    (run / name).write_text(content + "\n")
    code, out, err = run_cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    if why == "deep":  # read, but too deep to render as tables (or, for a log, not a row)
        if name in ("metrics.json", "extra.json", "config.json"):
            assert f"could not read {name}: nested too deeply to show" in page
    elif name != "log.jsonl":
        assert f"could not read {name}: not valid JSON ({why})" in page
    else:  # a log's unreadable line is skipped, as a line cut by a crash
        assert "log.jsonl holds no complete rows" in page


def test_report_writes_names_and_strings_python_holds_as_surrogates(run_cli, base_run, tmp_path):
    run = _copy(base_run, tmp_path / "run")
    (run / "extra.json").write_text('{"a": "x\\udc80y \\ud800z"}')
    code, out, err = run_cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "x\ufffdy" in page and "?z" in page


# ---------------------------------------------------------------------------------------
# 4. files a resume appends to or rewrites


@pytest.mark.parametrize("name", ["log.jsonl", "samples.txt", "model.safetensors", "metrics.json"])
def test_a_resume_refuses_a_run_file_that_is_a_symlink(run_cli, base_run, tmp_path, name):
    run = _copy(base_run, tmp_path / "run")
    target = tmp_path / "planted"
    if name != "log.jsonl":  # log.jsonl: a dangling link, that `open(..., "a")` would create
        shutil.copy(run / name, target)
    (run / name).unlink()
    (run / name).symlink_to(target)
    before = _snapshot(run)
    target_before = target.read_bytes() if target.exists() else None
    code, out, err = run_cli("text", "train", "--resume", "--epochs", "2", "--out", run, "--quiet")
    assert code == 2, err
    line = _one_line(err)
    assert f"{name} is a symlink" in line, line
    assert _snapshot(run) == before
    assert (target.read_bytes() if target.exists() else None) == target_before


def test_fit_refuses_a_symlinked_log_whatever_the_caller(tmp_path):
    """The generic loop (race and experiment runs use it too) never appends through a link."""
    from lapnet.train import TrainConfig, fit

    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").symlink_to(tmp_path / "elsewhere.log")

    class Never:
        def steps_per_epoch(self):
            return 1

    with pytest.raises(LapnetError, match=r"log\.jsonl is a symlink"):
        fit(object(), Never(), TrainConfig(epochs=1, progress=False), out=out)
    assert not (tmp_path / "elsewhere.log").exists()


# ---------------------------------------------------------------------------------------
# 5. absurd sizes in config.json


def test_a_config_with_absurd_layers_is_refused_before_anything_is_built(run_cli, base_run, tmp_path, monkeypatch):
    import lapnet.text_runs as text_runs

    run = _copy(base_run, tmp_path / "run")
    _edit_config(run, lambda cfg: cfg["model"].update(layers=10**8))

    def never(cfg):
        raise AssertionError(f"param_names built for {cfg.layers} layers")

    monkeypatch.setattr(text_runs, "param_names", never)
    code, out, err = run_cli("text", "sample", run, "--length", "5")
    assert code == 2
    line = _one_line(err)
    assert "config.json says model.layers 100000000" in line and "holds 1 layer" in line, line


# ---------------------------------------------------------------------------------------
# 6. a malformed log or trainer state


def test_a_malformed_log_line_is_refused_and_nothing_is_rewritten(run_cli, base_run, tmp_path):
    for bad in ("[1,2]", '{"step": "x"}', '"text"'):
        run = _copy(base_run, tmp_path / f"run{len(bad)}")
        with open(run / "log.jsonl", "a") as f:
            f.write(bad + "\n")
        before = _snapshot(run)
        code, out, err = run_cli("text", "train", "--resume", "--epochs", "2", "--out", run, "--quiet")
        assert code == 2, (bad, err)
        line = _one_line(err)
        assert "log.jsonl" in line and "line 2" in line and "not a log row" in line, line
        assert _snapshot(run) == before, bad


def _rewrite_last(run: Path, edit) -> None:
    arrays, meta = load_tensors(run / "last.safetensors")
    arrays, meta = edit(dict(arrays), meta) or (arrays, meta)
    save_tensors(run / "last.safetensors", arrays, meta)


@pytest.mark.parametrize("epochs", ["1", "2"])  # nothing left to train / training to do
@pytest.mark.parametrize("final", [{"x": 1}, {"row": [], "metrics": {}, "val": 1.0, "saved_model": False},
                                   {"row": {}, "metrics": {}, "val": "low", "saved_model": False}])
def test_a_malformed_final_evaluation_is_refused_and_nothing_is_rewritten(run_cli, base_run, tmp_path, epochs,
                                                                          final):
    run = _copy(base_run, tmp_path / "run")
    (run / "metrics.json").unlink()  # with it, a run with nothing to train is returned as it is
    _rewrite_last(run, lambda a, m: m["trainer"].update(final_eval=final))
    before = _snapshot(run)
    code, out, err = run_cli("text", "train", "--resume", "--epochs", epochs, "--out", run, "--quiet")
    assert code == 2, err
    line = _one_line(err)
    assert "not a resumable lapnet checkpoint (trainer final_eval" in line, line
    assert _snapshot(run) == before


def test_a_learner_state_that_does_not_load_leaves_config_json_as_it_was(run_cli, base_run, tmp_path):
    run = _copy(base_run, tmp_path / "run")

    def drop_a_moment(arrays, meta):
        name = next(k for k in arrays if k.startswith("optim."))
        arrays[name] = np.zeros((3, 3), dtype=arrays[name].dtype)
        return arrays, meta

    _rewrite_last(run, drop_a_moment)
    before = _snapshot(run)
    code, out, err = run_cli("text", "train", "--resume", "--epochs", "2", "--out", run, "--quiet")
    assert code == 2, err
    assert "last.safetensors" in _one_line(err)
    assert _snapshot(run) == before  # config.json gains its "resumes" entry only once the resume can go on


# ---------------------------------------------------------------------------------------
# 7. paths the C locale holds as surrogate escapes


def test_paths_the_c_locale_cannot_encode_are_written_as_typed(tmp_path):
    text = tmp_path / "Pérez notes °.txt"
    text.write_text(bundled_text(), encoding="utf-8")
    out = tmp_path / "text run ü"
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    for args in (["text", "train", str(text), *SMALL, "--epochs", "1", "--out", str(out)], ["report", str(out)]):
        p = subprocess.run([sys.executable, "-m", "lapnet", *args], env=env, capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
    header = (out / "samples.txt").read_text(encoding="utf-8").splitlines()[0]
    assert f"`lapnet text sample {out}` makes more" in header
    assert str(out) in (out / "report.html").read_text(encoding="utf-8")
    # config.json keeps the name as the file system holds it, so a resume under either locale finds it
    assert Path(json.loads((out / "config.json").read_text())["data"]["source"]).read_text(encoding="utf-8") \
        == bundled_text()
