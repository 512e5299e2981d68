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
        # a flag shows no type: "--json <bool>" reads as if it took a value
        assert "<bool>" not in out, f"lapnet {' '.join(path)} --help shows a flag as <bool>"
        # the summary in the group's command list: one sentence, no hard line break inside it
        summary = cmd.short_help or (cmd.help or "").split("\n\n")[0]
        assert summary.strip() and "\n" not in summary.strip(), f"lapnet {' '.join(path)}: summary {summary!r}"
        # prose paragraphs carry no hard line breaks: the terminal wraps them (typer's rich help
        # would otherwise keep each source line, leaving a stub line after it at 80 columns)
        for para in (cmd.help or "").split("\n\n"):
            assert "\n" not in para.strip(), f"lapnet {' '.join(path)} --help: a broken paragraph {para[:80]!r}"


def test_valued_options_keep_their_type_and_flags_show_none(run_cli):
    code, out, _ = run_cli("race", "eval", "--help")
    assert code == 0
    line = lambda opt: next(l for l in out.splitlines() if l.lstrip("│ ").startswith(opt + " "))
    assert "<path>" in line("--out")
    assert "<" not in line("--json")


def test_reflow_joins_prose_and_keeps_lists():
    from lapnet.cli import reflow

    text = "Summary line.\n\nProse that goes on\nover two lines.\n\nOptions:\n- one\n- two\n\n  indented\n  block"
    assert reflow(text) == "Summary line.\n\nProse that goes on over two lines.\n\nOptions:\n- one\n- two\n\n  indented\n  block"


def test_out_of_memory_is_one_line_exit_2(run_cli, monkeypatch):
    """Sizes too big for the machine: NumPy's MemoryError and torch's allocator error."""
    from lapnet.diagnostics import param_count

    for exc in (MemoryError("Unable to allocate 298. GiB for an array with shape (1000000000, 80)"),
                RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
                MemoryError()):  # Python's own, without a message (ulimit -v): the line still says something
        def boom(*a, _exc=exc, **k):
            raise _exc

        monkeypatch.setattr(param_count, "param_table", boom)
        code, _, err = run_cli("params", "--hidden", 65536)  # the largest --hidden (common.HIDDEN_MAX)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("lapnet: error: out of memory: "), err
        assert len(lines[0]) > len("lapnet: error: out of memory: "), err
    monkeypatch.setattr(param_count, "param_table", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    code, _, err = run_cli("params")  # any other RuntimeError is a bug: its traceback stays
    assert code == 1 and err.startswith("lapnet: internal error: RuntimeError: a bug\n") and "Traceback" in err, err


def test_a_bug_is_an_internal_error_with_its_traceback_exit_1(run_cli, monkeypatch):
    """A plain ValueError from deep inside (here NumPy's broadcasting) is lapnet's bug, not bad
    input: it must not pass for `lapnet: error:` with exit 2, it must show where it happened."""
    import numpy as np

    from lapnet.diagnostics import param_count

    def planted_bug(*a, **k):
        return np.ones(3) + np.ones(4)

    monkeypatch.setattr(param_count, "param_table", planted_bug)
    code, out, err = run_cli("params", "--hidden", 8)
    lines = err.splitlines()
    assert code == 1 and out == ""
    assert lines[0].startswith("lapnet: internal error: ValueError: operands could not be broadcast together"), err
    assert "Traceback (most recent call last)" in err and "planted_bug" in err  # where the bug is
    assert lines[-1].startswith("ValueError: operands could not be broadcast") and "lapnet: error:" not in err


def test_bad_input_still_one_line_exit_2(run_cli, monkeypatch, tmp_path):
    """LapnetError (and its CheckpointError) and OSError stay one line and exit 2."""
    from lapnet.diagnostics import param_count
    from lapnet.errors import CheckpointError, LapnetError

    for exc in (LapnetError("--hidden 8: too small"), CheckpointError("run/model.safetensors: truncated"),
                PermissionError(13, "Permission denied")):
        monkeypatch.setattr(param_count, "param_table", lambda *a, _e=exc, **k: (_ for _ in ()).throw(_e))
        code, _, err = run_cli("params")
        assert code == 2 and err.count("\n") == 1 and err.startswith("lapnet: error: "), err
        assert "Traceback" not in err


def test_warnings_are_one_line_each(run_cli, monkeypatch):
    """A library warning reaches the user as one `lapnet: warning:` line, not Python's three."""
    import warnings

    from lapnet.diagnostics import param_count

    real = param_count.param_table

    def noisy(*a, **k):
        from lapnet.race.io import NotARaceWarning

        warnings.warn("lapnet's own remark\nover two lines", NotARaceWarning)
        warnings.warn("another library's remark", RuntimeWarning)
        return real(*a, **k)

    monkeypatch.setattr(param_count, "param_table", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = run_cli("params")
    assert code == 0
    lines = err.strip().splitlines()
    assert lines == ["lapnet: warning: lapnet's own remark over two lines",
                     "lapnet: warning: another library's remark (RuntimeWarning from test_cli_basics.py)"], lines


def test_a_negative_seed_is_refused_by_name_everywhere(run_cli, tmp_path):
    """Seeds are whole numbers >= 0 (NumPy's generators refuse others with a message that names no option)."""
    leaves = {" ".join(path) for path, cmd in _leaf_commands() if any("--seed" in p.opts for p in cmd.params)}
    assert len(leaves) >= 12
    args = {"race train": ["x.csv"], "race calibrate": ["x.csv"], "text train": ["x.txt"], "text sample": ["run"]}
    for leaf in sorted(leaves):
        out = tmp_path / leaf.replace(" ", "_")
        has_out = any("--out" in p.opts for path, cmd in _leaf_commands() if " ".join(path) == leaf for p in cmd.params)
        code, _, err = run_cli(*leaf.split(), *args.get(leaf, []), "--seed", "-1", *(["--out", out] if has_out else []))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "'--seed'" in lines[0], (leaf, err)
        assert not out.exists(), leaf


def test_version(run_cli):
    import lapnet

    code, out, err = run_cli("--version")
    assert code == 0 and out.strip() == f"lapnet {lapnet.__version__}" and err == ""


def test_version_is_pyproject_version():
    import tomllib
    from pathlib import Path

    import lapnet

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == lapnet.__version__


def test_table_cells_keep_thousands_whole():
    from lapnet.cli.common import _fmt

    assert [_fmt(v) for v in (0.37, 0.3412, 26360.4, 12.5, 1e-6, 7)] == ["0.37", "0.3412", "26,360", "12.5", "1e-06", "7"]
