"""Findings of a new user's review of the non-race commands, each pinned by a test.

A used --out is refused by `hidden` and `diagrams` too; the text commands name a race run
as such; Ctrl-C in `text train` exits 130; gradflow's decay rate agrees with its ratio
column; `adding` and `sine` print numbers that read as their names say.
"""

from __future__ import annotations

import json

import pytest


def _refused(code: int, err: str) -> str:
    """Exit code 2 and exactly one `lapnet: error:` line on stderr; returns that line."""
    errors = [line for line in err.splitlines() if line.startswith("lapnet: error:")]
    assert code == 2 and len(errors) == 1, f"exit {code}\n{err[-1500:]}"
    assert "Traceback" not in err
    return errors[0]


def _snapshot(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# ---------------------------------------------------------------------------------------
# 1. hidden and diagrams refuse a used --out unless --force

TEACH = {
    "hidden": ("hidden", "--hidden", "2", "--points", "5", "--dpi", "10"),
    "diagrams": ("diagrams", "--dpi", "10"),
}


@pytest.mark.parametrize("cmd", list(TEACH))
def test_teach_commands_refuse_a_used_out(run_cli, tmp_path, cmd):
    out = tmp_path / "someone_elses_run"
    out.mkdir()
    (out / "metrics.json").write_text('{"theirs": 1}')
    (out / "model.safetensors").write_bytes(b"weights")
    before = _snapshot(out)
    line = _refused(*run_cli(*TEACH[cmd], "--out", out)[::2])
    assert "already holds files" in line and "--force" in line
    assert _snapshot(out) == before  # byte for byte, nothing added


@pytest.mark.parametrize("cmd", list(TEACH))
def test_teach_commands_second_run_needs_force(run_cli, tmp_path, cmd):
    out = tmp_path / cmd
    code, _, err = run_cli(*TEACH[cmd], "--out", out)
    assert code == 0, err
    first = _snapshot(out)
    _refused(*run_cli(*TEACH[cmd], "--out", out)[::2])
    assert _snapshot(out) == first
    code, _, err = run_cli(*TEACH[cmd], "--out", out, "--force")
    assert code == 0, err
    assert sorted(_snapshot(out)) == sorted(first)
