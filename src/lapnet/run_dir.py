"""Output directories of runs: checked before any work, created so a failure can take them back.

    check_out_dir(out, ...)        refuse a file, an unwritable place, an existing run (unless
                                   --force or --resume), a directory where an output file goes
    make_dir(out)                  `mkdir -p`, remembering what it created
    undo_new_dirs_on_failure()     around one command: remove what `make_dir` created if it fails
    lock_run_dir(out)              one lapnet process per --out directory (flock on out/.lapnet.lock)
    refuse_input_as_output(...)    an output that is one of the command's inputs is refused
    check_out_path(out, flag)      an --out path: not empty, not a dangling symlink, not a device
    check_file_out(out, flag)      a single-file output: its folder exists and is writable
    refuse_linked_run_files(...)   a run file a command writes through is a symlink: refused
    shown_path(path)               a path as text for a file (surrogate escapes of the C locale undone)
    safe_name(label)               a name from the data (a race, a driver) made safe for a file name

The CLI's commands and the library's own runs (`text_runs.train_text`) share these, so one
--out is refused in the same words whichever command was given it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Iterable, Iterator

from lapnet.checkpoint import check_replaceable
from lapnet.errors import LapnetError

_made_dirs: list[Path] = []  # directories the running command created, outermost first
_stale_reports: list[Path] = []  # --force'd run directories whose report.html goes if the command replaces the run


def make_dir(out: Path) -> Path:
    """`mkdir -p out`, remembering each directory this call created (not those that already
    existed), so that `undo_new_dirs_on_failure` can take them back if the command fails."""
    out = Path(out)
    made: list[Path] = []
    for d in [*reversed(out.parents), out]:
        if d.is_dir():
            continue
        try:
            d.mkdir()
        except FileExistsError:  # made meanwhile by someone else (another rank): not ours to remove
            continue
        _made_dirs.append(d)
        made.append(d)
    key = os.path.abspath(out)
    if key in _pending_locks:
        refusal = _pending_locks.pop(key)
        lock_run_dir(out)
        if refusal is not None and holds_run_lock(out) and out not in made and holds_anything(out):
            # `out` did not exist when check_out_dir looked: another process made it since, and
            # has finished writing into it (it would still hold the lock otherwise)
            raise LapnetError(refusal)
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
    _stale_reports.clear()
    failed, interrupted = True, False
    try:
        yield
        failed = False
    except SystemExit as e:
        failed, interrupted = e.code not in (0, None), e.code == 130
        raise
    finally:
        if not failed or interrupted:  # the run was replaced (or partly, by a Ctrl-C'd training): its page goes
            _drop_stale_reports()
        _stale_reports.clear()
        release_run_locks()  # before the rmdir below: the lock file would keep a new --out non-empty
        if failed:
            for d in reversed(_made_dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()
        _made_dirs.clear()


LOCK_NAME = ".lapnet.lock"  # in a run directory while a lapnet process trains into it
_locks: dict[str, int] = {}  # resolved run directory -> the open, flock'ed lock file of this process
_unlocked: set[str] = set()  # resolved run directories on a file system without flock (see `_no_flock`)
# run directories to lock as soon as `make_dir` creates them -> the refusal to give if another
# process made and filled the directory meanwhile (None: --force or --resume, or not a new --out)
_pending_locks: dict[str, str | None] = {}


def is_lapnet_leftover(path: Path) -> bool:
    """A file lapnet itself leaves behind when it is killed: an atomic write's temp file
    (`.NAME.XXXX.tmp`) or a run directory's lock file. A directory holding only these is empty
    for the next run (and such files are never the user's)."""
    name = Path(path).name
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(".tmp") and not Path(path).is_dir())


def holds_anything(out: Path) -> bool:
    """Whether a directory holds an entry other than lapnet's own leftovers (`is_lapnet_leftover`)."""
    return any(not is_lapnet_leftover(p) for p in Path(out).iterdir())


def _lock_key(out: Path) -> str:
    return os.path.realpath(out)


def _lock_wanted() -> bool:
    """Under torchrun every rank trains into the same --out: only rank 0 of the joined process
    group locks. A RANK variable alone (set by hand, or by another launcher, with no group
    joined) does not make a process a follower: one that skipped the lock let a second command
    train into the same --out, a run of two mixed runs."""
    from lapnet import distributed

    return distributed.rank() == 0


def lock_run_dir(out: Path) -> None:
    """Take an exclusive lock on the run directory `out` (it must exist) for as long as this
    process trains into it: fcntl.flock on out/.lapnet.lock, which holds the owner's pid.
    Calling it again for a directory this process already holds is a no-op. The lock goes with
    `release_run_locks` (the CLI calls it when the command ends) or when the process ends,
    however it ends (the kernel drops a dead process's flock; its stale file is then taken over).

    A run directory may be someone else's (a shared or unpacked run): a lock file that is not a
    plain file of its own (a symlink, a pipe, a hard link to another file) is refused, never
    opened through, so the pid is only ever written inside the run. On a file system without
    flock (some network shares) the run goes on unlocked, with a warning (see `_no_flock`).

    Raises:
        LapnetError: another process holds the lock (one line, naming its pid), or the lock
            file is not a regular file.
    """
    import fcntl

    if not _lock_wanted():
        return
    key = _lock_key(out)
    if key in _locks or key in _unlocked:
        return
    path = Path(out) / LOCK_NAME
    for _ in range(5):  # the holder may unlink the file between our open and our flock: open it again
        made = not os.path.lexists(path)
        try:
            # O_NOFOLLOW: a planted symlink is refused, not followed (O_CREAT|O_RDWR through it
            # would create or open any file this user can write, and the pid would overwrite it);
            # O_NONBLOCK: opening a planted pipe does not wait for a writer
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if os.path.islink(path):
                raise LapnetError(f"--out {out}: its lock file {path.name} is a symlink (to {os.readlink(path)}), "
                                  f"not lapnet's: remove it (rm {path}) if no lapnet process is using {out}") from None
            raise LapnetError(f"--out {out}: cannot create its lock file {path.name}: {e.strerror or e}") from None
        try:
            _check_lock_file(fd, path, out)
        except LapnetError:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # not "held": no flock here
                os.close(fd)
                _no_flock(out, path, e, made)
                return
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            except OSError:
                pid = "unknown"
            os.close(fd)
            raise LapnetError(f"--out {out} is in use by another lapnet process (pid {pid}): wait for it to end, "
                              "or give another --out") from None
        try:
            st, now = os.fstat(fd), os.lstat(path)  # lstat: the name itself, never what a link points at
            same = (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)
        except OSError:
            same = False
        if not same:  # locked a file its holder had just removed (or replaced)
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _locks[key] = fd
        return
    raise LapnetError(f"--out {out}: could not take its lock file {path.name} (it keeps being replaced)")


def _check_lock_file(fd: int, path: Path, out: Path) -> None:
    """Refuse a lock file lapnet did not make: not a regular file (a pipe, a device), or a hard
    link (the same file as one outside the run: truncating it would empty that one)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        what = ("a pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
        raise LapnetError(f"--out {out}: its lock file {path.name} is not a regular file ({what}), not lapnet's: "
                          f"remove it (rm {path})")
    if st.st_nlink > 1:
        raise LapnetError(f"--out {out}: its lock file {path.name} has {st.st_nlink} hard links (the same file as "
                          f"another one), not lapnet's: remove it (rm {path}) if no lapnet process is using {out}")


def _no_flock(out: Path, path: Path, e: OSError, made: bool) -> None:
    """flock failed for a reason other than another holder (EOPNOTSUPP, ENOLCK: a file system
    without locks, as some network shares are). The lock only guards against the user's own
    mistake of two commands given one --out at once; refusing would make every training on
    that file system fail with no way around it, so the run goes on unlocked, said once."""
    import warnings

    _unlocked.add(_lock_key(out))
    if made:  # the empty lock file this call created: no lock is held, so none is left behind
        with contextlib.suppress(OSError):
            os.unlink(path)
    warnings.warn(f"--out {out}: its file system does not support file locks ({e.strerror or e}): going on "
                  f"unlocked; do not give this --out to another lapnet command until this one ends")


def held_by_another(lock: Path) -> bool:
    """Whether the lock file `lock` (a run directory's LOCK_NAME) is held by another live
    process: probed with a non-blocking flock that is dropped at once (a dead holder's file is
    free). A lock this process holds is not another's."""
    import fcntl

    if _lock_key(Path(lock).parent) in _locks:
        return False
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a planted pipe would block a plain open
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:  # only these say "held"; another errno: a file system without locks
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # closing drops a lock taken by the probe
    return False


def want_run_lock(out: Path, refusal: str | None = None) -> None:
    """Lock `out` now if it exists, else as soon as `make_dir` creates it; `refusal`: the error
    `make_dir` raises if by then another process has made `out` and left files in it."""
    if Path(out).is_dir():
        lock_run_dir(out)
    else:
        _pending_locks[os.path.abspath(out)] = refusal


def release_run_locks() -> None:
    """Drop every run-directory lock this process holds, removing the lock files."""
    for key, fd in list(_locks.items()):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(key, LOCK_NAME))  # while still locked: a waiter re-opens (see lock_run_dir)
        with contextlib.suppress(OSError):
            os.close(fd)
        del _locks[key]
    _pending_locks.clear()
    _unlocked.clear()


def release_run_lock(out: Path) -> None:
    """Drop this process's lock on `out` (see `lock_run_dir`), if it holds one, or the lock it
    was to take when `make_dir` creates `out` (a library call that failed before that)."""
    _pending_locks.pop(os.path.abspath(out), None)
    _unlocked.discard(_lock_key(out))
    fd = _locks.pop(_lock_key(out), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.unlink(Path(out) / LOCK_NAME)
        with contextlib.suppress(OSError):
            os.close(fd)


def holds_run_lock(out: Path) -> bool:
    return _lock_key(out) in _locks


def refuse_input_as_output(inputs: Iterable[str | os.PathLike | None], outputs: Iterable[str | os.PathLike | None],
                           flag: str = "--out") -> None:
    """Refuse, before any work, an output that is one of the command's inputs: the same file
    (os.path.samefile: through a symlink or a hard link too) or the same resolved path. Even
    --force does not allow it: the input would be lost for good.

    Raises:
        LapnetError: naming the output and the input it would overwrite.
    """
    ins = [Path(p) for p in inputs if p is not None and str(p) not in ("", "-")]
    for o in outputs:
        if o is None or str(o) in ("", "-"):
            continue
        o = Path(o)
        for i in ins:
            same = False
            try:
                same = os.path.samefile(o, i)
            except OSError:
                same = os.path.realpath(o) == os.path.realpath(i)
            if same:
                where = "" if str(o) == str(i) else f" ({o} is {i})"
                raise LapnetError(f"{flag} {o}: is the input {i}{where}: writing there would overwrite the input; "
                                  f"give another {flag}")


UNFINISHED = "training.incomplete"  # in a run directory while training works on it: loading refuses it
RUN_OWN_FILES = ("config.json", "model.safetensors", "last.safetensors", "vocab.json", "metrics.json", "log.jsonl",
                 UNFINISHED)


def refuse_run_files(run: str | os.PathLike | None, outputs: Iterable[str | os.PathLike | None],
                     flag: str = "--out") -> None:
    """Refuse, even with --force, an output that is one of the files of the run a command reads
    (RUN/config.json, the weights, RUN/metrics.json, ...): replacing it would destroy the run."""
    if run is None or not Path(run).is_dir():
        return
    refuse_input_as_output([Path(run) / name for name in RUN_OWN_FILES if (Path(run) / name).exists()], outputs,
                           flag)


def refuse_linked_run_files(run: str | os.PathLike, names: Iterable[str], flag: str = "--resume") -> None:
    """Refuse a run whose files named `names` (those a command appends to, rewrites or reads
    back) include a symlink: lapnet never makes one, and a run directory may be someone else's.
    Appending to log.jsonl through a link writes outside the run (a dangling link even creates
    its target); a link's target is not the run's file to read or replace either.

    Raises:
        LapnetError: naming the first link and where it points.
    """
    for name in names:
        p = Path(run) / name
        if p.is_symlink():
            raise LapnetError(f"{flag}: {p} is a symlink (to {os.readlink(p)}), not a file of the run: lapnet would "
                              f"write through it, outside the run; put the file itself there, or remove the link")


def shown_path(path: str | os.PathLike) -> str:
    """A path as text for a file lapnet writes (samples.txt, a report): as the user typed it.
    Under the C locale Python holds a name's non-ASCII bytes as surrogate escapes, which no
    UTF-8 file can hold ("surrogates not allowed"); its bytes are read back as UTF-8 here, and a
    byte that is not UTF-8 is shown as \\xNN."""
    text = os.fspath(path)
    try:  # surrogateescape: each escape is the byte it stands for; any other character is UTF-8 as it is
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that escapes no byte (JSON "\ud800"): shown as \ud800
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _given_empty(flag: str) -> bool:
    """Whether the command line gave `flag` an empty value (`--out=` or `--out ''`): Click
    turns it into Path(""), which is ".", the current directory."""
    import sys

    argv = sys.argv[1:]
    return any(a == f"{flag}=" or (a == flag and i + 1 < len(argv) and argv[i + 1] == "") for i, a in enumerate(argv))


def check_out_path(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output path that can be neither a file nor a directory lapnet writes: an empty
    one, a dangling symlink, a device (/dev/null), a pipe or a socket."""
    text = os.fspath(out)
    if text.strip() == "" or (text == "." and _given_empty(flag)):  # Path("") is "."
        raise LapnetError(f"{flag} is empty: give a path (. for the current directory)")
    out = Path(text)
    if out.is_symlink() and not out.exists():
        raise LapnetError(f"{flag} {out}: a symlink to {os.readlink(out)}, which does not exist")
    try:
        mode = os.stat(out).st_mode
    except OSError:
        return out
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise LapnetError(f"{flag} {out}: is a device, not a file or directory lapnet can write")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise LapnetError(f"{flag} {out}: is a pipe or socket, not a file or directory lapnet can write")
    return out


def check_file_out(out: str | os.PathLike, flag: str = "--out") -> Path:
    """A single-file output, before any work: a sane path (`check_out_path`), not a directory,
    in an existing folder this process can write (the atomic write makes its temp file there)."""
    out = check_out_path(out, flag)
    if out.is_dir():
        raise LapnetError(f"{flag} {out}: is a directory, not a file")
    folder = out.parent
    if not folder.is_dir():
        raise LapnetError(f"{flag} {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LapnetError(f"{flag} {out}: folder {folder} is not writable")
    return out


# path separators, control characters, and what Windows forbids in a name (a race called
# "Monza 2023: R?"): replaced everywhere, so a run made on Linux copies to Windows intact
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
NAME_MAX = 80  # characters a label may take in a file name (names are limited to 255 bytes)


def safe_name(label: object, max_len: int = NAME_MAX) -> str:
    """A name from the data (a race, a driver) made safe for one component of a file name:
    path separators, control characters and the characters Windows forbids (: * ? " < > |)
    become "_", a leading "." too (no hidden file, no ".."), and a long name is cut, keeping
    an 8-digit hash of the whole so two long names stay apart. A name that needs none of this
    comes back unchanged."""
    text = str(label)
    s = _UNSAFE.sub("_", text)
    if s.startswith("."):
        s = "_" + s[1:]
    s = s or "_"
    if len(s) > max_len or len(s.encode()) > 3 * max_len:
        h = hashlib.sha256(text.encode()).hexdigest()[:8]
        cut = s[: max_len - 9]
        while len(cut.encode()) > 3 * max_len - 9:
            cut = cut[:-1]
        s = f"{cut}-{h}"
    return s


def _some_entries(out: Path) -> str:
    """What a directory holds, in a few words: "1 file: notes.txt", "57 entries, e.g. README.md"."""
    entries = sorted((p for p in out.iterdir() if p.name != LOCK_NAME),  # this process's own lock is not "what is there"
                     key=lambda p: (p.is_dir(), p.name.startswith("."), p.name))
    kind = "file" if all(p.is_file() for p in entries) else "entr"
    noun = {("file", 1): "file", ("file", 2): "files", ("entr", 1): "entry", ("entr", 2): "entries"}
    shown = entries[0].name + ("/" if entries[0].is_dir() else "")
    n = len(entries)
    return f"{n} {noun[kind, min(n, 2)]}" + (f": {shown}" if n == 1 else f", e.g. {shown}")


def run_kind(out: Path) -> str | None:
    """The "kind" in out/config.json, None when there is none or it cannot be read."""
    import json

    try:
        kind = json.loads((Path(out) / "config.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def check_out_dir(out: Path, *, force: bool = False, resume: bool | None = None, must_be_new: bool = True,
                  writes: tuple[str, ...] = ("metrics.json",), holds: str = "files", create: bool = True,
                  kind: str | None = None, lock: bool | None = None) -> Path:
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
        lock: hold `lock_run_dir` on `out` (now, or once `make_dir` creates it) until the
            command ends; default: for every directory the command writes anew (`must_be_new`)
            and for a run's (`holds` names a run, or `kind` given). The lock is taken before
            `out` is looked at, so that of two commands given one --out at once the second is
            refused, naming the first's pid, or finds the first's files: it never writes
            beside them.

    Returns:
        `out` as a Path.
    """
    out = check_out_path(out)
    if out.exists() and not out.is_dir():
        raise LapnetError(f"--out {out}: exists and is a file, not a directory")
    if resume and force:
        raise LapnetError("--resume and --force contradict each other: pick one")
    if lock if lock is not None else (must_be_new or holds != "files" or kind is not None):
        # one lapnet process writes into a directory at a time: locked before it is looked at
        # (an unwritable one is refused below, with the reason)
        if not out.is_dir():
            want_run_lock(out, None if force or resume or not must_be_new else
                          f"--out {out}: another process created it meanwhile and wrote into it: give another "
                          f"--out (or --force to overwrite it)")
        elif os.access(out, os.W_OK | os.X_OK):
            lock_run_dir(out)
    if must_be_new and out.is_dir() and holds_anything(out) and not (force or resume):
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
        other = run_kind(out)
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
    if force and kind is not None:
        _stale_reports.append(out)
    return make_dir(out) if create else out


def _drop_stale_reports() -> None:
    """--force replaced the run in each noted directory: a page `lapnet report` wrote of it there
    (report.html) would go on describing the replaced run beside the new one's files, so it goes
    too, once the command has run (or was interrupted mid-training); a command refused on bad
    input leaves it with the old run. Any other file of that name is the user's and stays."""
    from lapnet.report import REPORT_NAME, is_lapnet_report

    for out in _stale_reports:
        page = Path(out) / REPORT_NAME
        if page.is_file() and is_lapnet_report(page):
            page.unlink(missing_ok=True)
