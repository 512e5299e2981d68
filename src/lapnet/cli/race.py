"""`lapnet race ...`: Formula 1 lap tables, simulator, forecasts and pit calls."""

import typer

race_app = typer.Typer(help="Formula 1: lap tables, simulator, lap-time forecasts, pit calls.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `race` group (its data commands come from cli/race_data.py)."""
    from lapnet.cli import race_data

    race_data.register(race_app)
    app.add_typer(race_app, name="race")
