"""Leaving the process group at the end of every command (lapnet.distributed.shutdown in the
CLI's finally): a torch whose import a Ctrl-C cut short, a peer lost at the final barrier, and
the interrupt line said once under torchrun."""

from __future__ import annotations

import sys
import types

import pytest

from lapnet import cli, distributed


def test_a_half_imported_torch_is_left_alone(monkeypatch):
    """Ctrl-C while `import torch` runs leaves half a module in sys.modules: shutdown and rank
    must not touch it (importing it again raised AttributeError, or crashed the process)."""
    monkeypatch.setitem(sys.modules, "torch.distributed", types.ModuleType("torch.distributed"))
    assert distributed.shutdown() is None
    assert distributed.rank() == 0


def test_shutdown_without_torch_imported_does_not_import_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch.distributed", raising=False)
    distributed.shutdown()
    assert "torch.distributed" not in sys.modules


def test_a_lost_peer_at_the_end_is_one_line_and_exit_1(run_cli, monkeypatch):
    def lost():
        raise distributed.PeerLost("rank 0 finished its work, but another rank of the job had already left")

    monkeypatch.setattr(distributed, "shutdown", lost)
    code, out, err = run_cli("shapes")
    assert code == 1
    assert err.strip().splitlines()[-1] == ("lapnet: error: rank 0 finished its work, but another rank of the job "
                                           "had already left")
    assert "Traceback" not in err


@pytest.mark.parametrize("rank,said", [(0, True), (1, False)])
def test_the_interrupt_line_comes_from_rank_0_only(capsys, monkeypatch, rank, said):
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    with pytest.raises(SystemExit) as e:
        cli._fail("interrupted", 130)
    assert e.value.code == 130
    assert (capsys.readouterr().err == "lapnet: error: interrupted\n") is said


def test_a_follower_still_says_a_real_error_naming_its_rank(capsys, monkeypatch):
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    with pytest.raises(SystemExit) as e:
        cli._fail("a.txt: no such file")
    assert e.value.code == 2 and capsys.readouterr().err == "lapnet: error: rank 1: a.txt: no such file\n"
