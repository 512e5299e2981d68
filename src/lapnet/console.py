"""The one rich Console: progress bars, tables and messages go to stderr, data to stdout."""

from rich.console import Console

console = Console(stderr=True)
