"""Output directories of runs: checked before any work, created so a failure can take them back.

    check_out_dir(out, ...)        refuse a file, an unwritable place, an existing run (unless
                                   --force or --resume), a directory where an output file goes
    make_dir(out)                  `mkdir -p`, remembering what it created
    undo_new_dirs_on_failure()     around one command: remove what `make_dir` created if it fails

The CLI's commands and the library's own runs (`text_runs.train_text`) share these, so one
--out is refused in the same words whichever command was given it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from lapnet.checkpoint import check_replaceable
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


def _some_entries(out: Path) -> str:
    """What a directory holds, in a few words: "1 file: notes.txt", "57 entries, e.g. README.md"."""
    entries = sorted(out.iterdir(), key=lambda p: (p.is_dir(), p.name.startswith("."), p.name))
    kind = "file" if all(p.is_file() for p in entries) else "entr"
    noun = {("file", 1): "file", ("file", 2): "files", ("entr", 1): "entry", ("entr", 2): "entries"}
    shown = entries[0].name + ("/" if entries[0].is_dir() else "")
    n = len(entries)
    return f"{n} {noun[kind, min(n, 2)]}" + (f": {shown}" if n == 1 else f", e.g. {shown}")


def _run_kind(out: Path) -> str | None:
    """The "kind" in out/config.json, None when there is none or it cannot be read."""
    import json

    try:
        kind = json.loads((Path(out) / "config.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def check_out_dir(out: Path, *, force: bool = False, resume: bool | None = None, must_be_new: bool = True,
                  writes: tuple[str, ...] = ("metrics.json",), holds: str = "files", create: bool = True,
                  kind: str | None = None) -> Path:
    """Validate an output directory before any work, then (with `create`) create it.

    Refused: a file; (when `must_be_new`) an existing non-empty directory unless --force or
    --resume (one holding none of the files a run `writes`, when `holds` names a run, is said
    to be not empty, naming what is there); --resume and --force together; --resume without a checkpoint to resume; a
    directory standing where one of the files the command `writes` must go (found otherwise
    only after the work, halfway through saving); a place that is not writable.

    Args:
        out: the --out directory.
        force: overwrite what the command writes there.
        resume: continue the run there (None: the command has no --resume).
        must_be_new: refuse a non-empty directory (unless force or resume).
        writes: the file names the command will (re)write in `out`.
        holds: what a non-empty `out` is called in the refusal ("files", "a run").
        create: make the directory now (see `make_dir`); False: the caller makes it later,
            once its other inputs are known to be good.
        kind: the run kind the command writes (its config.json "kind"): --force does not
            overwrite a run of another kind (its files would stay beside the new run's, and
            the report would show both): refused, naming what is there.

    Returns:
        `out` as a Path.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LapnetError(f"--out {out}: exists and is a file, not a directory")
    if resume and force:
        raise LapnetError("--resume and --force contradict each other: pick one")
    if must_be_new and out.is_dir() and any(out.iterdir()) and not (force or resume):
        # a run's directory (`holds` says what) that holds none of the run's files is someone
        # else's: say so, not "already holds a run" (commands that write loose files keep
        # "already holds files", which is true of any non-empty directory)
        if holds != "files" and not any((out / name).exists() for name in writes):
            raise LapnetError(f"--out {out}: is not empty ({_some_entries(out)}) and holds none of the files this "
                              f"command writes: give a new or empty directory, or --force to write them beside "
                              f"what is there (which is kept)")
        hint = "--resume to continue it or --force to overwrite" if resume is not None else "--force to overwrite it"
        raise LapnetError(f"--out {out}: already holds {holds} (use {hint})")
    if force and kind is not None:
        other = _run_kind(out)
        if other is not None and other != kind:
            raise LapnetError(f"--out {out}: holds a run of another kind (config.json kind {other!r}, this command "
                              f"writes {kind!r}): --force overwrites a run of the same kind only; give another --out, "
                              "or remove that run first")
    if resume and not (out / "last.safetensors").is_file():
        raise LapnetError(f"--resume: {out} holds no checkpoint to resume (last.safetensors missing)")
    check_replaceable(out / name for name in writes)
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise LapnetError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise LapnetError(f"--out {out}: {parent} is not writable")
    return make_dir(out) if create else out
