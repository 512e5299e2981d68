"""`lapnet report RUN`: a self-contained HTML page of any run directory."""

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add `report` to the main app."""

    @app.command()
    def report(
        run: Path = typer.Argument(..., help="A run directory (text run, experiment output, race run, the demo's)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o",
                                           help="The HTML file to write (default RUN/report.html)."),
        title: Optional[str] = typer.Option(None, "--title", help="The page title."),
    ) -> None:
        """Write an HTML report of a run: config, metrics tables, every figure, samples.

        The page is self-contained (figures embedded, no network needed).

        Example: lapnet report runs/demo --out demo.html
        """
        from lapnet.cli.common import console
        from lapnet.report import build_report

        path = build_report(run, out, title=title)
        console.print(f"report written: [bold]{path}[/bold] ({path.stat().st_size / 1024:.0f} KiB)")
        typer.echo(str(path))
