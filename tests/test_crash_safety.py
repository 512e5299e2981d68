"""SIGKILL at random moments (also inside checkpoint writes) never loses a good checkpoint;
SIGINT stops cleanly after checkpointing and says how to resume."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lapnet.checkpoint import load_tensors

HELPER = Path(__file__).parent / "helpers" / "crash_toy.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(out: Path, steps: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPER), str(out), str(steps), *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while not (out / "last.safetensors").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.xdist_group("crash")
def test_sigkill_at_random_moments_keeps_a_loadable_checkpoint(tmp_path):
    rnd = random.Random(1234)
    out = tmp_path / "run"
    last_step = 0
    for attempt in range(2):  # more kills, through the real CLI: test_sigkill_of_the_real_cli_then_resume
        proc = _start(out, 10_000, "--slow-writes", *(["--resume"] if attempt else []))
        _wait_for_checkpoint(out, proc)
        time.sleep(rnd.uniform(0.1, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        arrays, meta = load_tensors(out / "last.safetensors")  # always loadable
        step = meta["trainer"]["step"]
        assert step >= last_step  # resuming continued from the checkpoint, never went back
        last_step = step
        logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip().endswith("}")]
        assert [r["step"] for r in logged if r["step"] <= step][-1] == step  # nothing before the checkpoint is lost
        load_tensors(out / "model.safetensors")
    done = subprocess.run([sys.executable, str(HELPER), str(out), str(last_step + 3), "--resume"], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"steps={last_step + 3}" in done.stdout
    assert not list(out.glob(".*.tmp")), "stale temp files were not cleaned up"


@pytest.mark.xdist_group("crash")
def test_sigint_checkpoints_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, 100_000)
    _wait_for_checkpoint(out, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped=interrupted" in stdout
    assert "--resume" in stderr
    _, meta = load_tensors(out / "last.safetensors")
    assert f"steps={meta['trainer']['step']}" in stdout  # the checkpoint holds the very last step


# --- a full disk in the middle of a checkpoint write ------------------------------------------

TINY = ("--hidden", "8", "--embed", "4", "--seq-len", "16", "--batch", "4", "--eval-every", "2", "--threads", "1",
        "--quiet")


class _DiskFull:
    """Stands in for `os` and `tempfile` inside lapnet.checkpoint: the `fail_on`-th write of
    `target` puts half its bytes into the temp file and then fails as a full disk does."""

    def __init__(self, target: str, fail_on: int):
        import tempfile as real_tempfile
        import types

        self.target, self.fail_on, self.seen = target, fail_on, 0
        self.tmp_names: dict[int, str] = {}
        self.before: bytes | None = None  # the target's bytes when the failing write began
        self.half_written = 0  # bytes that reached the temp file before the failure
        self.os = types.ModuleType("os")
        self.os.__dict__.update(vars(os))
        self.os.fdopen = self._fdopen
        self.tempfile = types.SimpleNamespace(mkstemp=self._mkstemp)
        self._real_mkstemp = real_tempfile.mkstemp

    def _mkstemp(self, **kw):
        fd, name = self._real_mkstemp(**kw)
        self.tmp_names[fd] = name
        return fd, name

    def _fdopen(self, fd, mode="r", *a, **kw):
        f = os.fdopen(fd, mode, *a, **kw)
        name = Path(self.tmp_names.pop(fd, ""))
        if not name.name.startswith(f".{self.target}."):
            return f
        self.seen += 1
        if self.seen != self.fail_on:
            return f
        final = name.parent / self.target
        self.before = final.read_bytes()
        disk = self

        class HalfThenFull:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                f.write(data[: len(data) // 2])
                f.flush()
                disk.half_written = name.stat().st_size
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, attr):
                return getattr(f, attr)

        return HalfThenFull()


@pytest.mark.parametrize("target", ["last.safetensors", "model.safetensors"])
def test_disk_full_mid_checkpoint_keeps_the_good_one(run_cli, tmp_path, monkeypatch, target):
    import lapnet.checkpoint as ckpt
    from lapnet.text_runs import load_run

    out = tmp_path / "run"
    disk = _DiskFull(target, fail_on=3)  # two good checkpoints first, the third write fails half-way
    monkeypatch.setattr(ckpt, "os", disk.os)
    monkeypatch.setattr(ckpt, "tempfile", disk.tempfile)
    code, stdout, err = run_cli("text", "train", *TINY, "--epochs", "3", "--out", out)
    assert disk.before is not None and disk.half_written > 0, "the fault was never injected"
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("lapnet: error:") and "Traceback" not in err, err
    assert "No space left on device" in err and target in err, err
    assert (out / target).read_bytes() == disk.before  # the good file, byte for byte
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp")), "a half-written temp file was left"
    _, meta = load_tensors(out / "last.safetensors")
    load_tensors(out / "model.safetensors")
    load_run(out)  # config, vocab and weights still make a usable run
    monkeypatch.undo()
    # and the run goes on from its last good checkpoint
    code, stdout, err = run_cli("text", "train", *TINY, "--epochs", "3", "--resume", "--out", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 30  # 10 steps per epoch of the bundled text at batch 4 x 16
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 31, 2))  # every evaluation once: none lost, none repeated


def test_disk_full_while_logging_names_the_log_and_resumes(run_cli, tmp_path, monkeypatch):
    """The third log row is cut half-way by a full disk: one line naming log.jsonl, the
    checkpoint of the row before stays, and --resume drops the cut row and carries on."""
    import builtins

    import lapnet.train as train

    out = tmp_path / "run"
    appends = []

    def failing_open(file, mode="r", *a, **kw):
        f = builtins.open(file, mode, *a, **kw)
        if Path(file).name != "log.jsonl" or "a" not in mode:
            return f
        appends.append(file)
        if len(appends) != 3:
            return f
        real_write = f.write

        def write(text):
            real_write(text[: len(text) // 2])
            f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        f.write = write
        return f

    monkeypatch.setattr(train, "open", failing_open, raising=False)
    code, _, err = run_cli("text", "train", *TINY, "--epochs", "3", "--out", out)
    assert code == 2 and len(appends) == 3
    assert err.count("\n") == 1 and err.startswith("lapnet: error:") and "Traceback" not in err, err
    assert "No space left on device" in err and "log.jsonl" in err, err
    _, meta = load_tensors(out / "last.safetensors")
    assert meta["trainer"]["step"] == 4  # the checkpoint of the last complete row
    assert not (out / "log.jsonl").read_text().endswith("\n")  # the cut row is there...
    monkeypatch.undo()
    code, stdout, err = run_cli("text", "train", *TINY, "--epochs", "3", "--resume", "--out", out, "--json")
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 31, 2))  # ...and gone after --resume, every row once


# --- SIGKILL of a real `lapnet text train` process -------------------------------------------

LAPNET = [sys.executable, "-c", "import sys; from lapnet.cli import main; main(sys.argv[1:])"]  # = the `lapnet` script
LAPNET_SLOW_CHECKPOINT = [sys.executable, str(Path(__file__).parent / "helpers" / "slow_checkpoint_cli.py")]
EVERY = 2  # steps between evaluations (each one logs a row and writes last.safetensors)


def _log_steps(out: Path) -> list[int]:
    rows = (out / "log.jsonl").read_text().splitlines()
    return [json.loads(r)["step"] for r in rows if r.strip().endswith("}")]  # a line cut by the kill is not a row


def _wait_until(cond, proc: subprocess.Popen, timeout: float = 60, poll: float = 0.005) -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()[1][-800:]}"
        assert time.time() - t0 < timeout, "timed out waiting for the run"
        time.sleep(poll)


@pytest.mark.xdist_group("crash")
def test_sigkill_of_the_real_cli_then_resume(tmp_path, run_cli):
    """Kill `lapnet text train` with SIGKILL three times (after N log rows, in the middle of
    writing last.safetensors, at a random moment), resuming each time; then finish the run
    (in-process: the same command, without paying for another interpreter start)."""
    rnd = random.Random(2026)
    out = tmp_path / "run"
    train = ["text", "train", *TINY, "--minutes", "10", "--out", str(out)]
    last_step = 0
    for kill_when in ("after log rows", "inside a checkpoint write", "at a random moment"):
        cmd = (LAPNET_SLOW_CHECKPOINT if kill_when == "inside a checkpoint write" else LAPNET) + train
        resume = ["--resume"] if last_step else []
        proc = subprocess.Popen(cmd + resume, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # this process's own first checkpoint is complete once the next evaluation's row is logged
        _wait_until(lambda: (out / "log.jsonl").exists() and max(_log_steps(out), default=0) > last_step + EVERY, proc)
        if kill_when == "after log rows":
            n = rnd.randint(2, 5)
            _wait_until(lambda: len(_log_steps(out)) >= n, proc)
        elif kill_when == "inside a checkpoint write":
            _wait_until(lambda: any(out.glob(".last.safetensors.*.tmp")), proc, poll=0.01)
        else:
            time.sleep(rnd.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if kill_when == "inside a checkpoint write":
            assert list(out.glob(".last.safetensors.*.tmp")), "the kill missed the write"
        _, meta = load_tensors(out / "last.safetensors")  # always a complete, loadable checkpoint
        load_tensors(out / "model.safetensors")
        step = meta["trainer"]["step"]
        assert step > last_step, f"{kill_when}: the resumed run did not go past step {last_step}"
        steps = _log_steps(out)
        assert [s for s in steps if s <= step] == list(range(EVERY, step + 1, EVERY)), kill_when  # nothing lost
        last_step = step
    # finish: the total of 2 epochs more than the checkpoint holds, from where it stopped
    kept = (out / "log.jsonl").read_text().splitlines()[: last_step // EVERY]
    epochs = last_step // 10 + 2  # 10 steps per epoch of the bundled text at batch 4 x 16
    code, stdout, err = run_cli("text", "train", *TINY, "--epochs", epochs, "--resume", "--json", "--out", out)
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 10 * epochs
    lines = (out / "log.jsonl").read_text().splitlines()
    assert lines[: len(kept)] == kept  # the rows before the checkpoint, untouched
    assert _log_steps(out) == list(range(EVERY, 10 * epochs + 1, EVERY))  # continued, not restarted
    assert not list(out.glob(".*.tmp")), "stale temp files were not cleaned up"
