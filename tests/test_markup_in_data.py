"""Square brackets in paths and data are text, not rich markup: `d[/x]` used to crash the
summary table (rich's MarkupError, an internal error) and `[bold]` in a name vanished."""

from lapnet.cli.common import summary_table


def test_summary_table_prints_brackets_as_they_are(capsys):
    summary_table("t", {"out": "runs/d[/x]", "[bold]name": "[red]VER"})
    summary_table("t", [{"race [/i]": "a[/b]", "lap": 3}], wide=True)
    text = capsys.readouterr().err
    for s in ("runs/d[/x]", "[bold]name", "[red]VER", "race [/i]", "a[/b]"):
        assert s in text


def test_a_run_folder_with_brackets_reports(run_cli, tmp_path):
    out = tmp_path / "h[/x]"
    code, _, err = run_cli("hidden", "--out", out)
    assert code == 0, err
    assert (out / "hidden_states.png").is_file()
    code, stdout, err = run_cli("report", out)
    assert code == 0, err
    assert stdout.strip() == str(out / "report.html")
    assert f"report written: {out}/report.html" in err

