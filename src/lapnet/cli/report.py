"""`lapnet report RUN`: a self-contained HTML page of any run directory."""

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from lapnet.errors import LapnetError

def check_overwrite(out: Path, force: bool) -> None:
    """Refuse to replace an existing file that is not an earlier report, unless --force."""
    from lapnet.report import is_lapnet_report

    if out.is_file() and not force and not is_lapnet_report(out):
        raise LapnetError(f"--out {out}: already exists and is not a lapnet report (use --force to overwrite it)")


def register(app: typer.Typer) -> None:
    """Add `report` to the main app."""

    @app.command()
    def report(
        run: Path = typer.Argument(..., help="A run directory (text run, experiment output, race run, the demo's)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o",
                                           help="The HTML file to write (default RUN/report.html). An existing "
                                                "file is replaced only if an earlier report wrote it, or with --force."),
        title: Optional[str] = typer.Option(None, "--title", help="The page title."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file that is not a report."),
    ) -> None:
        """Write an HTML report of a run: config, metrics tables, every figure, samples.

        The page is self-contained (figures embedded, no network needed).

        Example: lapnet report runs/demo --out demo.html
        """
        from lapnet.cli.common import console
        from lapnet.report import REPORT_NAME, build_report

        from lapnet.run_dir import check_file_out, refuse_run_files

        target = out if out is not None else run / REPORT_NAME
        if out is not None:
            check_file_out(out)  # a dangling symlink, a device, a missing or unwritable folder: before the work
            if out.suffix.lower() not in (".html", ".htm"):
                raise LapnetError(f"--out {out}: a report is an HTML page: give a name ending in .html")
            refuse_run_files(run, [out])  # --force never replaces the run's own config, weights or metrics
        check_overwrite(target, force)
        path = build_report(run, out, title=title)
        console.print(f"report written: [bold]{escape(str(path))}[/bold] ({path.stat().st_size / 1024:.0f} KiB)")
        typer.echo(str(path))
