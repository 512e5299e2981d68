"""Shared pieces of the CLI: run directories, metrics output, summary tables, devices."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from rich.table import Table

from lapnet.checkpoint import check_replaceable, json_text, write_json
from lapnet.distributed import rank
from lapnet.console import console  # progress and tables go to stderr; stdout stays for data
from lapnet.errors import LapnetError


_made_dirs: list[Path] = []  # directories the running command created, outermost first


def make_dir(out: Path) -> Path:
    """`mkdir -p out`, remembering each directory this call created (not those that already
    existed), so that `undo_new_dirs_on_failure` can take them back if the command fails."""
    out = Path(out)
    for d in [*reversed(out.parents), out]:
        if d.is_dir():
            continue
        try:
            d.mkdir()
        except FileExistsError:  # made meanwhile by someone else (another rank): not ours to remove
            continue
        _made_dirs.append(d)
    return out


@contextlib.contextmanager
def undo_new_dirs_on_failure() -> Iterator[None]:
    """Around one command: if it fails (an exception, or an exit code other than 0), remove
    the directories it created with `make_dir` that are still empty, innermost first.

    Commands create --out before the work so that an unwritable place is refused at once,
    but a refusal found later (a corrupt input file, a bad run) must still leave the disk as
    it was. `rmdir` removes only an empty directory: one that existed before, or that now
    holds anything, is never touched.
    """
    _made_dirs.clear()
    failed = True
    try:
        yield
        failed = False
    except SystemExit as e:
        failed = e.code not in (0, None)
        raise
    finally:
        if failed:
            for d in reversed(_made_dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()
        _made_dirs.clear()


def check_out_dir(out: Path, *, force: bool = False, resume: bool | None = None, must_be_new: bool = True,
                  writes: tuple[str, ...] = ("metrics.json",)) -> Path:
    """Validate an output directory before any work, then create it (see `make_dir`): refuse a
    file, an unwritable place, (when `must_be_new`) an existing non-empty run unless --force or
    --resume (None: the command has no --resume), and a directory standing where one of the
    files the command `writes` must go (found only after the work, halfway through saving)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LapnetError(f"--out {out}: exists and is a file, not a directory")
    if must_be_new and out.is_dir() and any(out.iterdir()) and not (force or resume):
        hint = "--resume to continue it or --force to overwrite" if resume is not None else "--force to overwrite it"
        raise LapnetError(f"--out {out}: already holds files (use {hint})")
    if resume and not (out / "last.safetensors").is_file():
        raise LapnetError(f"--resume: {out} holds no checkpoint to resume (last.safetensors missing)")
    check_replaceable(out / name for name in writes)
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise LapnetError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise LapnetError(f"--out {out}: {parent} is not writable")
    return make_dir(out)


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


def summary_table(title: str, rows: Mapping[str, Any] | list[Mapping[str, Any]]) -> None:
    """Print a summary table on stderr: a mapping (key/value) or a list of rows (columns)."""
    if rank() != 0:
        return
    table = Table(title=title)
    if isinstance(rows, Mapping):
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in rows.items():
            table.add_row(str(k), _fmt(v))
    else:
        cols = list(rows[0].keys()) if rows else []
        for c in cols:
            table.add_column(str(c), justify="right")
        for r in rows:
            table.add_row(*[_fmt(r.get(c)) for c in cols])
    console.print(table)


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
