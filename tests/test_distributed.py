"""torchrun with two CPU processes (gloo) trains exactly like one process on the same global batch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

HELPER = Path(__file__).parent / "helpers" / "ddp_toy.py"


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "torch.distributed.run"]


def _root_signal(stderr: str) -> int | None:
    """The signal that killed the rank torchrun names as the root cause (None if it exited)."""
    root = stderr.split("Root Cause", 1)[-1] if "Root Cause" in stderr else ""
    m = re.search(r"exitcode\s*:\s*-(\d+)", root)
    return int(m.group(1)) if m else None


def _failure(proc: subprocess.CompletedProcess) -> str:
    """The ranks' own output (the start of stderr) and torchrun's summary (its end)."""
    err = proc.stderr
    return err if len(err) <= 5000 else err[:3000] + "\n[...]\n" + err[-2000:]


def _run(args: list[str], *, timeout: float, retry_clean=None, **kw) -> subprocess.CompletedProcess:
    """torchrun ARGS, retried once when a rank was killed by a signal rather than exiting.

    A rank aborted (SIGABRT) twice in CI under full load, roughly once in several hundred
    launches; 325 launches in a row here, several at once beside the whole suite, never did it.
    The likely cause, a DistributedDataParallel torn down after its process group, is removed
    (`distributed.shutdown` collects it first); the retry stays as a net. A rank that exits with
    an error (the code under test failing) is never retried, and a retried abort is reported as a
    warning with the ranks' output.
    `retry_clean` removes the first attempt's files before the retry.
    """
    for attempt in (1, 2):
        proc = subprocess.run(_torchrun() + args, capture_output=True, text=True, timeout=timeout, **kw)
        sig = _root_signal(proc.stderr) if proc.returncode != 0 else None
        if sig is None or attempt == 2:
            return proc
        warnings.warn(f"torchrun: a rank was killed by signal {sig}; retrying once. Its output:\n{_failure(proc)}")
        if retry_clean is not None:
            retry_clean()
    return proc


@pytest.mark.xdist_group("torchrun")
def test_two_ranks_equal_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(HELPER), str(tmp_path)], check=True, env=env, timeout=120)
    proc = _run(["--nproc_per_node=2", "--master_port=0", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                 str(HELPER), str(tmp_path)],
        env=env, timeout=180)
    assert proc.returncode == 0, _failure(proc)
    single = np.load(tmp_path / "rank0_of1.npz")
    r0, r1 = np.load(tmp_path / "rank0_of2.npz"), np.load(tmp_path / "rank1_of2.npz")
    assert r0["losses"][-1] < 0.5 * r0["losses"][0]  # the loss falls
    assert r0["seen"][0] == r1["seen"][0] == 8  # each rank trains on half of each batch of 16
    for k in single.files:
        if k == "seen":
            continue
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=f"ranks differ in {k}")
        np.testing.assert_allclose(r0[k], single[k], rtol=1e-9, atol=1e-12, err_msg=f"DDP != single process in {k}")


@pytest.mark.xdist_group("torchrun")
@pytest.mark.parametrize("batch,numpy", [(5, False), (1, False), (6, True)])
def test_uneven_and_numpy_batches_train_like_one_process(tmp_path, batch, numpy):
    """Shards of 3 and 2 (batch 5), an empty shard (batch 1: a stand-in item weighted 0) and NumPy
    batches (sharded, not copied to both ranks) all give the single process's weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--batch", str(batch)] + (["--numpy"] if numpy else [])
    subprocess.run([sys.executable, str(HELPER), str(tmp_path), *args], check=True, env=env, timeout=120)
    proc = _run(["--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                 str(HELPER), str(tmp_path), *args],
        env=env, timeout=180)
    assert proc.returncode == 0, _failure(proc)
    single = np.load(tmp_path / "rank0_of1.npz")
    r0, r1 = np.load(tmp_path / "rank0_of2.npz"), np.load(tmp_path / "rank1_of2.npz")
    assert r0["seen"][0] + r1["seen"][0] == max(batch, 2)  # each rank saw its own shard (or the stand-in)
    for k in single.files:
        if k != "seen":
            np.testing.assert_allclose(r0[k], single[k], rtol=1e-9, atol=1e-12, err_msg=f"DDP != single process in {k}")


@pytest.mark.xdist_group("torchrun")
def test_one_rank_failing_ends_the_job(tmp_path):
    """A rank refused on bad input leaves the group at once: torchrun then stops the others (it
    used to wait in a barrier while the other rank waited in training, until gloo's 30 min)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    text = tmp_path / "a.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 80)
    proc = _run(["--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                 str(Path(__file__).parent / "helpers" / "rank_input.py"), str(text),
                 "text", "train", "TEXT", "--hidden", "8", "--embed", "4", "--seq-len", "16", "--batch", "4",
                 "--epochs", "50", "--quiet", "--out", str(tmp_path / "run")],
        env=env, timeout=150)
    assert proc.returncode != 0
    assert "a.txt.missing: no such file" in proc.stderr


@pytest.mark.xdist_group("torchrun")
def test_two_ranks_agree_under_a_time_budget(tmp_path):
    """With --minutes the learning rate follows the clock: every rank must use the same one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _run(["--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                 str(HELPER), str(tmp_path), "--minutes", "0.03"],
        env=env, timeout=180)
    assert proc.returncode == 0, _failure(proc)
    r0, r1 = np.load(tmp_path / "rank0_of2.npz"), np.load(tmp_path / "rank1_of2.npz")
    assert len(r0["losses"]) >= 2 and r0["losses"][-1] < r0["losses"][0]
    for k in r0.files:
        if k != "seen":
            np.testing.assert_array_equal(r0[k], r1[k], err_msg=f"ranks differ in {k}")


@pytest.mark.xdist_group("torchrun")
@pytest.mark.parametrize("command", ["text", "race"])
def test_the_cli_trains_under_torchrun(tmp_path, command):
    """`lapnet text train` and `lapnet race train` run unchanged under torchrun; rank 0 writes the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if command == "text":
        args = ["text", "train", "--hidden", "8", "--embed", "4", "--seq-len", "16", "--batch", "4", "--epochs", "2"]
    else:
        from lapnet.race.simulate import simulate

        simulate(2, seed=5).to_csv(tmp_path / "sim.csv", index=False)
        args = ["race", "train", str(tmp_path / "sim.csv"), "--epochs", "2", "--hidden", "8"]
    proc = _run(["--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "-m", "lapnet",
                 *args, "--out", str(tmp_path / "run"), "--quiet", "--json"],
        env=env, timeout=300, cwd=tmp_path, retry_clean=lambda: shutil.rmtree(tmp_path / "run", ignore_errors=True))
    assert proc.returncode == 0, _failure(proc)
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads(proc.stdout) == metrics  # printed once, by rank 0 only
    assert (tmp_path / "run" / "model.safetensors").is_file()
    if command == "race":  # a race run is never resumed: no resume state is left behind
        assert not list((tmp_path / "run").rglob("last.safetensors"))


def test_only_a_rank_killed_by_a_signal_counts_as_an_abort():
    """The retry above reads torchrun's root cause: SIGABRT there is an abort; a rank that exited
    with an error is the code under test failing, even though torchrun then SIGTERMs the others."""
    def summary(first: str, root: str) -> str:
        return (f"Failures:\n[1]:\n  rank      : 0\n  exitcode  : {first} (pid: 1)\n"
                f"Root Cause (first observed failure):\n[0]:\n  rank      : 1\n  exitcode  : {root} (pid: 2)\n")

    assert _root_signal(summary("-15", "-6")) == 6
    assert _root_signal(summary("-15", "2")) is None
    assert _root_signal("a rank printed exitcode  : -6 but torchrun gave no summary") is None


@pytest.mark.xdist_group("torchrun")
def test_a_rank_with_bad_input_leaves_the_old_race_run(tmp_path, run_cli):
    """`race train --force` under torchrun: rank 1's file is missing while rank 0's is good. Rank 0
    used to clear the old run before the ranks met (and then crash in the barrier, an internal
    error): every rank now reads its input first, and the old run stays whole."""
    from lapnet.race.simulate import simulate

    sim = tmp_path / "sim.csv"
    simulate(2, seed=5).to_csv(sim, index=False)
    run = tmp_path / "run"
    small = ["--epochs", "1", "--hidden", "8", "--phase-sim", "0", "--quiet"]
    code, _, err = run_cli("race", "train", sim, *small, "--out", run)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _run(["--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                 str(Path(__file__).parent / "helpers" / "rank_input.py"), str(sim),
                 "race", "train", "TEXT", *small, "--force", "--out", str(run)],
                env=env, timeout=180)
    assert proc.returncode != 0
    assert "sim.csv.missing: no such file" in proc.stderr
    assert "internal error" not in proc.stderr, _failure(proc)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # nothing cleared, nothing marked unfinished


FAULT = Path(__file__).parent / "helpers" / "rank_fault.py"
TR_ARGS = ["--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0"]


def _job_args(command: str, tmp_path: Path) -> list[str]:
    """A tiny `text train` or `race train` (its input made in tmp_path), without --out."""
    if command == "text":
        text = tmp_path / "a.txt"
        text.write_text("the quick brown fox jumps over the lazy dog. " * 80)
        return ["text", "train", str(text), "--hidden", "8", "--embed", "4", "--seq-len", "16", "--batch", "4"]
    from lapnet.race.simulate import simulate

    simulate(2, seed=5).to_csv(tmp_path / "sim.csv", index=False)
    return ["race", "train", str(tmp_path / "sim.csv"), "--hidden", "8", "--phase-sim", "0"]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lapnet: ")]


@pytest.mark.xdist_group("torchrun")
@pytest.mark.parametrize("command", ["text", "race"])
def test_a_time_budget_ends_every_rank_as_minutes(tmp_path, command):
    """`--minutes` under torchrun, rank 1's clock running 4x fast: rank 1 meets the budget first
    and rank 0 has time left. The ranks used to agree only on stopping, and rank 0 called it
    "interrupted" (exit 130, metrics.json "stopped": "interrupted", "continue with --resume";
    race train: an unfinished run and a gloo error on rank 1). They agree on the reason too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = _run([*TR_ARGS, str(FAULT), "clock", "4", *_job_args(command, tmp_path), "--minutes", "0.05",
                 "--quiet", "--json", "--out", str(run)],
                env=env, timeout=180, retry_clean=lambda: shutil.rmtree(run, ignore_errors=True))
    assert proc.returncode == 0, _failure(proc)
    assert "interrupted" not in proc.stderr and _error_lines(proc.stderr) == [], _failure(proc)
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    stopped = metrics["stopped"] if command == "text" else metrics["train"]["stopped"]
    assert stopped == "minutes"
    assert json.loads(proc.stdout) == metrics  # printed once, by rank 0
    assert not (run / "training.incomplete").exists()


@pytest.mark.xdist_group("torchrun")
@pytest.mark.parametrize("command", ["text", "race"])
def test_a_rank_killed_mid_training_is_one_line_on_the_other(tmp_path, command, run_cli):
    """Rank 1 killed (SIGKILL) on its 60th training step (after a checkpoint): rank 0's collective fails. That was
    `internal error: RuntimeError: [...gloo...] Connection reset by peer` and a traceback; it
    is one line naming the lost rank and the checkpoint kept, exit 2, and a text run resumes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    job = _job_args(command, tmp_path)
    # not _run: a rank killed by a signal is this test's point, not an abort to retry
    proc = subprocess.run(_torchrun() + [*TR_ARGS, str(FAULT), "kill", "60", *job, "--epochs", "1000", "--quiet",
                                         "--out", str(run)],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode != 0
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, _failure(proc)
    hint = "continue with --resume" if command == "text" else "train again with --force"
    assert lines[0].startswith("lapnet: error: rank 0 stopped: another rank of the job left during training ("), lines
    assert f"(checkpoint in {run}); " in lines[0] and hint in lines[0], lines
    assert "Connection" in lines[0] and "GLHF" not in lines[0]  # gloo's gist, not its advice
    assert "internal error" not in proc.stderr and "lapnet/train.py" not in proc.stderr, _failure(proc)
    assert (run / "last.safetensors").is_file()
    if command == "text":  # the checkpoint rank 0 wrote last resumes in one process
        code, _, err = run_cli(*job, "--resume", "--epochs", "2", "--quiet", "--out", run)
        assert code == 0, err
        import json

        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["stopped"] == "epochs" and metrics["epochs"] == 2
    else:  # a race run is never resumed: it stays marked unfinished
        assert (run / "training.incomplete").is_file()


@pytest.mark.xdist_group("torchrun")
def test_bad_input_on_every_rank_is_said_by_each_rank_named(tmp_path):
    """`text train nosuch.txt` under torchrun printed `lapnet: error: nosuch.txt: no such file`
    twice, as if one process had said it twice: rank 1's line is named."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _run([*TR_ARGS, "-m", "lapnet", "text", "train", "nosuch.txt", "--out", str(tmp_path / "run")],
                env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert sorted(_error_lines(proc.stderr)) == ["lapnet: error: nosuch.txt: no such file",
                                                 "lapnet: error: rank 1: nosuch.txt: no such file"], _failure(proc)
    assert not (tmp_path / "run").exists()


@pytest.mark.xdist_group("torchrun")
def test_when_only_rank_1_fails_rank_0_does_not_say_interrupted(tmp_path):
    """Rank 1's file is missing, rank 0's is good: rank 1 names itself, and rank 0 (stopped by
    torchrun's SIGTERM, or finding rank 1 gone) no longer says `lapnet: error: interrupted`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = _job_args("text", tmp_path)
    job[2] = "TEXT"
    proc = _run([*TR_ARGS, str(Path(__file__).parent / "helpers" / "rank_input.py"), str(tmp_path / "a.txt"), *job,
                 "--epochs", "50", "--quiet", "--out", str(tmp_path / "run")],
                env=env, timeout=150)
    assert proc.returncode != 0
    lines = _error_lines(proc.stderr)
    assert f"lapnet: error: rank 1: {tmp_path / 'a.txt.missing'}: no such file" in lines, _failure(proc)
    assert "lapnet: error: interrupted" not in lines and "internal error" not in proc.stderr, _failure(proc)
    rank0 = [line for line in lines if "rank 1:" not in line]
    assert len(rank0) <= 1 and all(
        line.startswith(("lapnet: error: stopped by SIGTERM: under torchrun, torchrun sends it when another rank",
                         "lapnet: error: rank 0 stopped: another rank of the job left")) for line in rank0), lines


@pytest.mark.xdist_group("torchrun")
def test_commands_that_are_not_distributed_are_refused_once(tmp_path):
    """`text sample` printed its text twice under torchrun, `race live` every line twice, `series
    train` and `demo` collided with themselves: any command but text/race train is refused
    before joining, in one line from rank 0 (rank 1 exits 2 without a word)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _run([*TR_ARGS, "-m", "lapnet", "text", "sample", "runs/none"], env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0 and proc.stdout == ""
    assert _error_lines(proc.stderr) == [
        "lapnet: error: lapnet text sample does not run under torchrun (WORLD_SIZE=2): only lapnet text train and "
        "lapnet race train are distributed, and any other command would run once per rank; run it as one "
        "process, without torchrun"], _failure(proc)
    assert "exitcode  : 2" in proc.stderr


def _launch_env(monkeypatch, **env: str) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("rank,said", [("0", True), ("1", False)])
@pytest.mark.parametrize("args,what", [
    (["--version"], "lapnet --version"),
    (["text", "sample", "run"], "lapnet text sample"),
    (["series", "train", "x.csv"], "lapnet series train"),
    (["race", "live", "run"], "lapnet race live"),
    (["demo"], "lapnet demo"),
    (["text", "train", "--help"], "lapnet text train --help"),
])
def test_only_training_runs_with_a_world_size(run_cli, monkeypatch, tmp_path, args, what, rank, said):
    """WORLD_SIZE=2 (torchrun's, or set by hand): `--version` was an internal error (RANK expected),
    and any command ran once per rank. Refused before any group is joined: rank 0 says so in
    one line, every rank exits 2."""
    _launch_env(monkeypatch, WORLD_SIZE="2", RANK=rank)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*args)
    assert code == 2 and out == ""
    expected = (f"lapnet: error: {what} does not run under torchrun (WORLD_SIZE=2): only lapnet text train and lapnet "
                f"race train are distributed, and any other command would run once per rank; run it as one process, "
                f"without torchrun\n")
    assert err == (expected if said else "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env,line", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 but RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "WORLD_SIZE=2 but MASTER_ADDR is not set"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost"}, "WORLD_SIZE=2 but MASTER_PORT is not set"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"},
     "rank 2: RANK='2' is not a rank of WORLD_SIZE=2 (0 to 1)"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "http"},
     "MASTER_PORT='http' is not a port number (1 to 65535)"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
])
def test_a_training_launch_environment_set_by_hand_is_one_line(run_cli, monkeypatch, tmp_path, env, line):
    """A training command with WORLD_SIZE set by hand but not the rest: one line naming the
    variable (was torch's ValueError as an internal error), exit 2, nothing created."""
    _launch_env(monkeypatch, **env)
    code, out, err = run_cli("text", "train", "--minutes", "0.01", "--out", tmp_path / "run")
    assert code == 2 and out == ""
    assert err == (f"lapnet: error: {line}: launch with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR and "
                   f"MASTER_PORT), or unset WORLD_SIZE to run one process\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("source", ["-", "fifo"])
def test_standard_input_and_pipes_are_refused_under_torchrun(run_cli, monkeypatch, tmp_path, source):
    """`cat big.txt | torchrun ... text train -`: each rank read its own part of stdin (rank 0
    trained on 8 KB and the job hung). Refused before joining, by rank 0, in one line."""
    _launch_env(monkeypatch, WORLD_SIZE="2", RANK="0", MASTER_ADDR="localhost", MASTER_PORT="29500")
    if source == "fifo":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    code, out, err = run_cli("text", "train", source, "--out", tmp_path / "run")
    assert code == 2 and out == ""
    name = "standard input (-)" if source == "-" else f"{source} (a pipe or a device)"
    assert err == (f"lapnet: error: {name} cannot be read under torchrun: every rank would read its own part of "
                   f"it; give the input as a regular file every rank can read\n")
    assert not (tmp_path / "run").exists()


def test_joining_a_job_no_other_rank_comes_to_ends_in_one_line(tmp_path):
    """WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT set by hand and no other rank: the join
    waited torch's 30 minutes, deaf to SIGTERM. It waits `distributed.JOIN_MINUTES` (shortened
    here), then says so in one line, exit 2, nothing created."""
    import socket

    with socket.socket() as s:  # a port no one listens on
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost",
           "MASTER_PORT": str(port)}
    code = ("from lapnet import distributed\ndistributed.JOIN_MINUTES = 0.05\nfrom lapnet.cli import main\n"
            f"main(['text', 'train', '--minutes', '0.01', '--out', {str(tmp_path / 'run')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=90)
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(
        rf"lapnet: error: rank 0 of 2 could not join the job at localhost:{port} \(MASTER_ADDR:MASTER_PORT\): Timed "
        r"out after \d+ seconds waiting for clients\. 1/2 clients joined; start every rank with torchrun, which sets "
        r"these\n", proc.stderr), proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_rank_variable_alone_still_locks_the_run(held_lock, run_cli, monkeypatch, tmp_path):
    """RANK=1 with no group joined (set by hand or by another launcher): the lock was skipped, so
    a second command trained into the same --out. Only a joined group's rank counts."""
    run, pid = held_lock
    _launch_env(monkeypatch, RANK="1")
    text = tmp_path / "a.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    code, out, err = run_cli("text", "train", text, "--hidden", "8", "--embed", "4", "--seq-len", "16",
                             "--epochs", "1", "--quiet", "--out", run)
    assert code == 2 and out == "", err
    assert err == (f"lapnet: error: --out {run} is in use by another lapnet process (pid {pid}): wait for it to end, "
                   f"or give another --out\n")
    assert [p.name for p in run.iterdir()] == [".lapnet.lock"]


def test_a_sigterm_under_torchrun_is_not_called_an_interrupt(capsys, monkeypatch):
    """torchrun SIGTERMs the other ranks when one fails: rank 0 said `lapnet: error: interrupted`,
    as if someone had pressed Ctrl-C. A Ctrl-C (SIGINT), or a SIGTERM outside torchrun, stays
    "interrupted"."""
    import signal

    from lapnet import cli, distributed

    _launch_env(monkeypatch, WORLD_SIZE="2", RANK="0")
    monkeypatch.setattr(distributed, "_signal_taken", None)
    for signum, said in [(signal.SIGINT, "interrupted"),
                         (signal.SIGTERM, "stopped by SIGTERM: under torchrun, torchrun sends it when another rank of "
                                          "the job failed (see that rank's error) or when torchrun itself was stopped")]:
        distributed.note_signal(signum)
        with pytest.raises(SystemExit) as e:
            cli._fail(distributed.stop_message(), 130)
        assert e.value.code == 130 and capsys.readouterr().err == f"lapnet: error: {said}\n"
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.stop_message() == "interrupted"


@pytest.mark.parametrize("args,code,line", [
    (["shapes"], 130, "lapnet: error: interrupted"),  # the command had finished: the signal stops it
    (["shapes", "--no-such-option"], 2, "lapnet: error: No such option: --no-such-option"),  # an error keeps its line
])
def test_a_signal_while_leaving_the_group_is_no_traceback(run_cli, monkeypatch, args, code, line):
    """torchrun's SIGTERM landing in the final `distributed.shutdown` (its gc.collect) raised a
    KeyboardInterrupt out of the CLI's `finally`: a traceback after the error line."""
    from lapnet import distributed

    def leave():
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "shutdown", leave)
    monkeypatch.setattr(distributed, "_signal_taken", None, raising=False)
    got, out, err = run_cli(*args)
    assert got == code and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith(line), err


def test_the_ranks_settle_on_one_stop_reason_in_order():
    """In one process `_agree_stop` gives each reason back; the order is the one the ranks of a
    job settle on (a spent budget over none, a signal over a budget, early stopping over all)."""
    from lapnet import train

    assert train._STOP_ORDER == (None, "max_steps", "minutes", "interrupted", "early_stop")
    for reason in train._STOP_ORDER:
        assert train._agree_stop(reason) == reason
