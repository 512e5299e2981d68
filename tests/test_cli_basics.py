"""The CLI contract every command shares: help works, bad usage is one line and exit 2."""


def test_help_lists_commands(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    assert "demo" in out


def test_unknown_option_is_one_line_exit_2(run_cli):
    code, out, err = run_cli("--no-such-option")
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("lapnet: error:")
    assert "Traceback" not in err
