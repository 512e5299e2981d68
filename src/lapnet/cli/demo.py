"""`lapnet demo`: the guided tour on bundled data (grown issue by issue)."""

import typer


def register(app: typer.Typer) -> None:
    """Add `demo` to the main app."""

    @app.command()
    def demo(quick: bool = typer.Option(False, "--quick", help="Toy sizes, under a minute.")) -> None:
        """The main job: a guided tour of lapnet on bundled data."""
        typer.echo("lapnet demo: the engine tour lands with issue 2")
