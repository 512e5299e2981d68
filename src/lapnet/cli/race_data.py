"""`lapnet race simulate` and `lapnet race calibrate` (the data side of the race group)."""

import typer


def register(race_app: typer.Typer) -> None:
    """Add the data commands to the `race` group."""
