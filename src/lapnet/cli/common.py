"""Shared pieces of the CLI: metrics output, summary tables, devices, threads; run directories
(`check_out_dir`, `make_dir`) come from `lapnet.run_dir`, shared with the library."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from rich.table import Table
from rich.text import Text

from lapnet.checkpoint import json_text, write_json
from lapnet.console import console, printable  # progress and tables go to stderr; stdout stays for data
from lapnet.distributed import rank
from lapnet.errors import LapnetError
from lapnet.run_dir import check_out_dir, make_dir, undo_new_dirs_on_failure  # noqa: F401  (the commands' names)


def emit_metrics(out: Path | None, metrics: Mapping[str, Any], *, as_json: bool = False) -> None:
    """Write metrics.json into the run directory and, with --json, print it on stdout."""
    if out is not None:
        write_json(Path(out) / "metrics.json", dict(metrics))
    if as_json and rank() == 0:
        sys.stdout.write(json_text(metrics, indent=2, default=_default) + "\n")
        sys.stdout.flush()


def _default(o: Any) -> Any:
    try:
        return o.item()
    except AttributeError:
        return str(o)


WIDE = 160  # columns a wide table may take on stderr when it is not a terminal (a pipe, a log file)


def summary_table(title: str, rows: Mapping[str, Any] | list[Mapping[str, Any]], *, wide: bool = False) -> None:
    """Print a summary table on stderr: a mapping (key/value) or a list of rows (columns).

    `wide`: a table with many columns: cells never wrap and None shows as '-'; when stderr is
    not a terminal it is printed whole, up to WIDE columns (rich would squeeze it into 80 and
    cut every cell: 'driv…'); on a terminal, at its width.

    The title, headers and cells are text, never rich markup, with control characters shown as
    escapes (`console.printable`): a race's or a run's name may hold either.
    """
    if rank() != 0:
        return
    table = Table(title=Text(printable(title)))

    def text(v: Any) -> Text:  # as Text: a name or path with '[' in it is data, not rich markup
        return Text(printable(str(v)))

    def cell(v: Any) -> Text:
        return text("-" if wide and v is None else _fmt(v))

    if isinstance(rows, Mapping):
        table.add_column("metric", no_wrap=wide)
        table.add_column("value", justify="right", no_wrap=wide)
        for k, v in rows.items():
            table.add_row(text(k), cell(v))
    else:
        cols = list(rows[0].keys()) if rows else []
        for c in cols:
            table.add_column(text(c), justify="right", no_wrap=wide)
        for r in rows:
            table.add_row(*[cell(r.get(c)) for c in cols])
    out = console
    if wide and not console.is_terminal:  # a console of the same class: it escapes what it prints as `console` does
        out = type(console)(file=console.file, width=max(console.width, WIDE), no_color=console.no_color, highlight=False)
    out.print(table)


def _fmt(v: Any) -> str:
    """A table cell: floats with up to 4 significant digits (no trailing zeros: many metrics are
    rounded upstream, and 0.2680 would claim a digit 0.268 does not have); thousands as whole
    numbers (26,360, not 2.636e+04)."""
    if isinstance(v, float):
        if math.isfinite(v) and abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


def set_threads(n: int) -> dict[str, int | None]:
    """Use `n` CPU threads everywhere a command computes: torch's intra-op pool, NumPy's
    OpenBLAS and the NumPy engine's kernels (which otherwise run their BLAS calls on one
    thread, see `lapnet.scratch.blas`). On a machine shared with other jobs one thread is
    often fastest: threads of one process wait for each other whenever another job holds a core.

    Returns:
        The thread counts now in force: {"torch": n, "openblas": n, or None when NumPy's
        BLAS cannot be reached}.
    """
    import torch

    from lapnet.scratch.blas import set_blas_threads, set_engine_threads

    if n < 1:
        raise LapnetError(f"--threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    set_engine_threads(n)
    return {"torch": torch.get_num_threads(), "openblas": set_blas_threads(n)}


def resolve_device(device: str) -> str:
    """auto -> cuda when available else cpu; refuse cuda on a machine without it."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise LapnetError(f"--device {device}: expected auto, cpu or cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LapnetError("--device cuda: no CUDA device is available on this machine")
    return device


def engine_device(device: str, engine: str = "torch") -> str:
    """--device for the chosen engine: the NumPy engine runs on the CPU (auto means cpu there)
    and is refused any other device, cuda included, by naming the engine."""
    if engine == "numpy":
        if device not in ("auto", "cpu"):
            if device != "cuda":
                resolve_device(device)  # an unknown name gets resolve_device's message
            raise LapnetError(f"--device {device}: --engine numpy runs on the CPU only (use --device cpu or auto)")
        return "cpu"
    return resolve_device(device)


# Integer options are Python ints, without limit: a seed of 2**64 or --threads 100000 reached
# torch, NumPy or the C library and crashed there (a traceback, a segfault). Every integer option
# of every command gets bounds here, in one place, checked by Click before the command runs.
SEED_MAX = 2**32 - 1  # NumPy's legacy seeds and torch's generators accept 0..2**32-1 alike
THREADS_MAX = 256  # more threads than any machine lapnet runs on; 100000 made OpenMP segfault
HIDDEN_MAX = 65_536  # hidden units: already 4 * 65536**2 weights (137 GB) for one LSTM layer
DPI_RANGE = (10, 1000)  # below 10 dpi the fonts have no size (FreeType refuses); 1000: 13,500 pixels wide
INT_MAX = 2**31 - 1  # every other integer option (sizes, steps, epochs): no array dimension overflows

INT_BOUNDS: dict[str, tuple[int | None, int]] = {
    "--seed": (0, SEED_MAX),
    "--threads": (None, THREADS_MAX),  # the minimum (1) is set_threads' own check, with its own message
    "--hidden": (None, HIDDEN_MAX),
    "--arch-hidden": (None, HIDDEN_MAX),
    "--dpi": DPI_RANGE,
}


def _at_most(high: int):
    """An option callback refusing an integer above `high` (Click's own message for a range)."""
    import typer

    def check(value: Optional[int]) -> Optional[int]:
        if value is not None and value > high:
            raise typer.BadParameter(f"{value} is not in the range x<={high}")
        return value

    return check


def bound_int_options(typer_app: Any) -> None:
    """Give every integer option of every command of `typer_app` (and its groups) an upper
    bound (`INT_BOUNDS` by name, else `INT_MAX`) and `INT_BOUNDS`' minimum, keeping a minimum
    it already has and a tighter maximum of its own. Typer checks them before the command runs:
    "Invalid value for '--seed': 18446744073709551616 is not in the range 0<=x<=4294967295"."""
    import inspect
    import typing

    from typer.models import OptionInfo

    for info in typer_app.registered_commands:
        if info.callback is None:
            continue
        try:
            hints = typing.get_type_hints(info.callback)
        except Exception:  # an annotation that does not resolve: judge by the default below
            hints = {}
        for name, p in inspect.signature(info.callback).parameters.items():
            opt = p.default
            if not isinstance(opt, OptionInfo):
                continue
            hint = hints.get(name)
            is_int = hint in (int, typing.Optional[int]) if hint is not None else (
                isinstance(opt.default, int) and not isinstance(opt.default, bool))
            if not is_int:
                continue
            named = next((INT_BOUNDS[d] for d in opt.param_decls or () if d in INT_BOUNDS), None)
            if named is not None:  # a bound worth reading in --help: Click's range, shown there
                low, high = named
                if opt.min is None:
                    opt.min = low
                opt.max = high if opt.max is None else min(opt.max, high)
            elif opt.max is None and opt.callback is None:  # INT_MAX only guards: checked, not shown in --help
                opt.callback = _at_most(INT_MAX)
    for group in typer_app.registered_groups:
        bound_int_options(group.typer_instance)


def refuse_device(path: Any, what: str = "a text file") -> None:
    """Refuse a device for an input read whole (/dev/zero, /dev/urandom: they never end, and
    reading one filled the memory); a pipe or process substitution ends when its writer does."""
    import os
    import stat

    if path is None or str(path) == "-":
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the reader says what is wrong (no such file, permissions)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise LapnetError(f"{path}: is a device, not {what} (it may never end): give a file, or - with the input on stdin")
