"""The one rich Console: progress bars, tables and messages go to stderr, data to stdout."""

from typing import Any

from rich.console import Console


class _Console(Console):
    """A Console whose message lines are never wrapped: a line of text (`print("wrote a/b.png,
    a/c.png")`) goes out whole, as `print()` writes it, and the terminal wraps it if it must.
    rich's own wrapping cut such lines at the console's width (80 in a pipe, COLUMNS when set),
    mid-list of paths, so that a grep of a CI log for a file name missed it. Tables, progress
    bars and other renderables still fit the width."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if objects and all(isinstance(o, str) for o in objects):
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)


console = _Console(stderr=True)
