"""The one rich Console: progress bars, tables and messages go to stderr, data to stdout."""

import re
from typing import Any, Iterable

from rich.console import Console
from rich.segment import Segment

# C0 and C1 control characters and DEL, but the newline and the tab (a table's or a message's layout)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with every control character but newline and tab written out as an escape (ESC as
    \\x1b), as `lapnet.cli.one_line` shows them in messages: a table cell quoting a race's, a
    driver's or a run's name from a shared file would otherwise retitle or clear the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Console(Console):
    """A Console whose message lines are never wrapped: a line of text (`print("wrote a/b.png,
    a/c.png")`) goes out whole, as `print()` writes it, and the terminal wraps it if it must.
    rich's own wrapping cut such lines at the console's width (80 in a pipe, COLUMNS when set),
    mid-list of paths, so that a grep of a CI log for a file name missed it. Tables, progress
    bars and other renderables still fit the width.

    Whatever it prints shows control characters as escapes (`printable`): rich drops only BEL,
    BS, VT, FF and CR from text, and ESC or a C1 control in a name from the data reached the
    terminal through any table, progress bar or message. Tables built here escape their cells
    before layout (`cli.common.summary_table`), so that their columns line up."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if objects and all(isinstance(o, str) for o in objects):
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        # rich's own escape codes are untouched: styles are added to the text after this, and
        # cursor moves (progress bars) travel as control segments
        return super()._render_buffer(seg if seg.control else Segment(printable(seg.text), seg.style, seg.control)
                                      for seg in buffer)


console = _Console(stderr=True)
