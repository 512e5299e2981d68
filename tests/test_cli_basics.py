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


def _leaf_commands():
    """Every command a user can run, as argument lists (walks the Typer app)."""
    import typer

    from lapnet.cli import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if not subs:
            yield path, cmd
            return
        for name, sub in subs.items():
            yield from walk(sub, path + [name])

    return list(walk(typer.main.get_command(app), []))


def test_every_command_has_an_example_and_a_one_line_summary(run_cli):
    leaves = _leaf_commands()
    assert len(leaves) >= 20  # demo, the experiments, text and race subcommands
    for path, cmd in leaves:
        code, out, _ = run_cli(*path, "--help")
        assert code == 0, path
        assert "Example: " in out, f"lapnet {' '.join(path)} --help shows no example"
        # the summary in the group's command list: one sentence, no hard line break inside it
        summary = cmd.short_help or (cmd.help or "").split("\n\n")[0]
        assert summary.strip() and "\n" not in summary.strip(), f"lapnet {' '.join(path)}: summary {summary!r}"
