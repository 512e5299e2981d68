"""SIGKILL at random moments (also inside checkpoint writes) never loses a good checkpoint;
SIGINT stops cleanly after checkpointing and says how to resume."""

from __future__ import annotations

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
    for attempt in range(4):
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
