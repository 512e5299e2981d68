"""Live mode's input as it comes: stdin, a pipe, or a growing FILE (`--follow`).

`read_header` and `stream_lines` give the header, then the lines numbered as in the input (a
followed file waited on like tail -f); `FollowReader` reads a growing file as bytes, whole lines
only, and refuses one rewritten, truncated or replaced; `_IdleLines` reads stdin in a thread so
that a quiet feed is seen. Then what arrives is checked: a line split into cells, a header met
again (`_header_again`), text that is not UTF-8 or a Parquet file, a pipe, a file still to
appear (`_wait_for`). Every wait sleeps through this module's `time`, which tests replace to
stop a --follow.
"""

from __future__ import annotations

import csv
import os
import re
import time
from pathlib import Path
from time import monotonic as _monotonic  # not through `time`, which tests replace to stop a --follow
from typing import IO, Callable, Iterator

from lapnet.errors import LapnetError
from lapnet.race import schema as S


def read_header(stream: IO[str], follow: bool = False, poll: float = 0.5) -> str:
    """The header line, without a UTF-8 byte-order mark (a file is opened as utf-8-sig; stdin
    is not); with `follow`, a file still empty (the feed has not started) is waited for."""
    header = stream.readline()
    while follow and not header.endswith("\n"):
        time.sleep(poll)
        header += stream.readline()
    return header.lstrip("\ufeff")


IDLE, END = "idle", "end"  # `stream_lines`' events (line number None): the input idle, a followed file's end reached


def stream_lines(stream: IO[str], follow: bool = False, poll: float = 0.5, idle: float | None = None,
                 events: bool = False) -> Iterator[tuple[int | None, str]]:
    """(line number, line) as they come, after the header (line 1); with `follow`, waits at the
    end of the file (like tail -f) and for the rest of a half-written line (`FollowReader`
    gives only whole lines; a text stream's half line is kept until its end comes).

    With `events` and `follow`: (None, END) the first time the end of the file is reached (the
    lines already there are read), and with `idle`, (None, IDLE) each time no line has come for
    `idle` seconds (`follow_race` then lets the laps it holds for --reorder go)."""
    lineno, part = 1, ""
    ended, quiet = False, None  # the end reached once; when the input went quiet (monotonic seconds)
    while True:
        line = stream.readline()
        if not line:
            if not follow:
                return
            if events and not ended:
                ended = True
                yield None, END
            if events and idle is not None:
                now = _monotonic()
                if quiet is None:
                    quiet = now
                elif now - quiet >= idle:
                    quiet = now
                    yield None, IDLE
            time.sleep(poll)
            continue
        quiet = None
        part += line
        if follow and not part.endswith("\n"):  # a half-written line: wait for the rest
            continue
        lineno += 1
        yield lineno, part
        part = ""


class FollowReader:
    """A growing FILE (`lapnet race live --follow`), read as bytes: `readline` gives whole lines
    only, decoded as UTF-8 (a UTF-8 byte-order mark before the first is dropped), and '' while
    the last line has no line end yet, so a writer that flushed in the middle of a line, or of a
    multi-byte character, is waited for.

    Before each line the header and the last line read are checked to be where they were (a
    file rewritten in place: `cp other.csv FILE`), and when no whole line is there, the file is
    checked too: one rewritten, truncated (smaller than what was read) or replaced (another
    file under its name) is refused (LapnetError): the laps read
    so far were stepped into every driver's state, and what the rewritten file holds against
    them cannot be told (the same race again would be all duplicates; another, a mix).
    """

    def __init__(self, path: str | Path, new: bool = False):
        self.path = str(path)
        self.file = open(path, "rb")
        # the bytes already in the file when live started (`new`: the file was not there yet: none): the
        # lines within them are laps a restarted process catches up on (--catch-up)
        self.start_size = 0 if new else os.fstat(self.file.fileno()).st_size
        self.pos = 0  # bytes read: the end of the last whole line
        self.lines = 0  # whole lines given (the header is line 1)
        self.inode = os.fstat(self.file.fileno()).st_ino
        self.first = b""  # the header line's bytes, and the last whole line's: a file rewritten in place
        self.last = b""  # (same inode, `cp other.csv FILE`) no longer holds them where they were read

    @property
    def catching_up(self) -> bool:
        """The last line given was already in the file when live started."""
        return self.pos <= self.start_size

    def readline(self) -> str:
        self._same_lines()
        raw = self.file.readline()
        if raw.endswith(b"\n"):
            self.pos += len(raw)
            self.lines += 1
            self.last = raw
            if self.lines == 1:
                self.first = raw
            if self.lines == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            return raw.decode("utf-8")
        self.file.seek(self.pos)  # nothing, or a line still being written: read it again once whole
        self._check()
        return ""

    def _same_lines(self) -> None:
        """Refuse (LapnetError) a file rewritten in place since its lines were read: its header
        or its last line read are no longer where they were (another race copied over it, or
        the same race written again: the offset reached would fall mid-line, or mid-race)."""
        if not self.lines:
            return
        fd = self.file.fileno()
        start = self.pos - len(self.last)
        if os.pread(fd, len(self.first), 0) == self.first and os.pread(fd, len(self.last), start) == self.last:
            return
        size = os.fstat(fd).st_size
        if size < self.pos:
            raise self._truncated(size)
        raise LapnetError(f"{self.path} was rewritten in place while followed (its header or line {self.lines}, the last "
                          "read, changed): a file rewritten under --follow cannot be followed on (the laps read so far "
                          "are in every driver's state): start lapnet race live again to read it from its start")

    def _check(self) -> None:
        size = os.fstat(self.file.fileno()).st_size
        if size < self.pos:
            raise self._truncated(size)
        self._same_lines()
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            return  # gone for now (a writer about to rename a new one in): its next name is checked then
        if inode != self.inode:
            raise LapnetError(f"{self.path} was replaced by another file (renamed over it) while followed: the laps "
                              "read so far are in every driver's state: start lapnet race live again to read the new one")

    def _truncated(self, size: int) -> LapnetError:
        return LapnetError(f"{self.path} was truncated (now {size} bytes; {self.pos} had been read): a file rewritten "
                           "under --follow cannot be followed on (the laps read so far are in every driver's state): "
                           "start lapnet race live again to read it from its start")

    def unread(self) -> str | None:
        """What the file holds beyond the lines read, said when the stream is stopped (Ctrl-C)."""
        try:
            size = os.fstat(self.file.fileno()).st_size
            self.file.seek(self.pos)
            tail = self.file.read(max(size - self.pos, 0))
        except (OSError, ValueError):
            return None
        if not tail.strip():
            return None
        first = self.lines + 1
        whole = tail.count(b"\n")
        if whole == 0:
            return f"lapnet: warning: line {first} is incomplete (no line end yet) and was not read"
        last = first + whole - (1 if tail.endswith(b"\n") else 0)
        return f"lapnet: warning: lines {first}-{last} were not read (the stream was stopped first)"

    def close(self) -> None:
        self.file.close()


def _cells(line: str) -> list[str]:
    try:
        return next(csv.reader([line]), [])
    except csv.Error:  # e.g. a bare carriage return: the live reader skips the line with a warning
        return []


def _is_header(cells: list[str]) -> bool:
    """A line whose cells name the required columns: a header, not a lap."""
    names = {c.strip().lstrip("\ufeff") for c in cells}
    return all(c in names for c in S.REQUIRED_COLUMNS)


def _header_again(cells: list[str], header: list[str], where: str, lineno: int) -> bool:
    """Whether a line is a header met again (CSV files concatenated: skipped); another header
    (LapnetError): the columns changed, and the laps after it cannot be read by the first."""
    if not _is_header(cells):
        return False
    new, old = [c.strip().lstrip("\ufeff") for c in cells], [c.strip() for c in header]
    if new == old:
        return True
    added, gone = [c for c in new if c not in old], [c for c in old if c not in new]
    what = "; ".join(part for part in (f"new: {', '.join(added[:4])}{' ...' if len(added) > 4 else ''}" if added else "",
                                       f"gone: {', '.join(gone[:4])}{' ...' if len(gone) > 4 else ''}" if gone else "")
                     if part) or "the same columns in another order"
    raise LapnetError(f"{where}, line {lineno}: a header line with other columns than line 1's ({what}): the columns "
                      "changed mid-stream, and the laps after it cannot be read by the first header: give each table "
                      "its own file or feed")


def _parquet_error(where: str) -> LapnetError:
    target = "X.csv" if where == "stdin" else Path(where).with_suffix(".csv").name
    source = "X.parquet" if where == "stdin" else where
    return LapnetError(f"{where}: a Parquet file: live reads CSV lines (a feed, header first): convert it first, "
                       f"e.g. lapnet race clean {source} --out {target}")


_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes stdin could not decode (Python's surrogateescape)


def _check_text(line: str, where: str) -> None:
    """Stdin is decoded with surrogateescape in a POSIX locale: bytes that are not UTF-8 come
    as surrogates, refused here as a file's would be (a Parquet file by its name)."""
    if line.startswith("PAR1"):
        raise _parquet_error(where)
    bad = _UNDECODED.search(line)
    if bad is not None:
        byte = bytes([ord(bad.group()) - 0xDC00])
        raise LapnetError(f"{where}: not UTF-8 text (invalid byte: {byte!r})")


def is_pipe(path: str | Path) -> bool:
    """A FIFO (a named pipe, or a process substitution such as <(cat laps.csv)): `race live`
    reads it once, as it comes, like stdin; any other non-regular file is refused."""
    import stat

    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _refuse_parquet(path: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return  # opening it for reading says what is wrong
    if magic == b"PAR1":
        raise _parquet_error(path)


def _wait_for(path: str, poll: float, say: Callable[[str], None]) -> None:
    """--follow on a FILE not there yet (live started before the feed): say so once and wait for it
    (Ctrl-C ends the wait as it ends a stream); then refuse what cannot be followed."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise LapnetError(f"{path}: no such file, and no folder {folder} for it to appear in")
    say(f"lapnet: {path} does not exist yet: waiting for it to appear (--follow; Ctrl-C to stop)")
    while not os.path.lexists(path):
        time.sleep(poll)
    if Path(path).is_dir():
        raise LapnetError(f"{path}: is a directory, not a lap table (live reads a CSV file)")
    if is_pipe(path):
        raise LapnetError(f"{path}: a pipe is read as it comes, like stdin (--follow is for a growing regular file)")
    while not os.path.exists(path):  # a symbolic link whose target is still to come
        time.sleep(poll)


class _IdleLines:
    """The lines of a stream read as they come (stdin, a pipe) with (None, IDLE) each time none has
    come for `idle` seconds: a reader thread takes the blocking reads, so that --reorder lets the
    laps it holds go while the feed is quiet (a race's last laps, a pause), as with --follow.

    The stream is the thread's from then on: `stop` (Ctrl-C) only asks it to end, and the thread
    closes the stream (`close`) once its read returns. Closing it from another thread would wait
    on the file's lock, which the thread holds inside readline() until the feed's writer speaks
    or closes: an interrupted stream hung that long (in a kernel, until the feed sent a line). A
    stopped thread so lingers, a daemon, until the feed's next line or its end."""

    def __init__(self, lines: Iterator[tuple[int, str]], idle: float, close: Callable[[], None] | None = None):
        import queue
        import threading

        self.idle, self.close = idle, close
        self.box: queue.Queue = queue.Queue()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._pump, args=(lines,), name="lapnet-live-reader", daemon=True)
        self.thread.start()

    _DONE = object()

    def _pump(self, lines: Iterator[tuple[int, str]]) -> None:
        try:
            for item in lines:
                if self.stopped.is_set():
                    return
                self.box.put(item)
            self.box.put(self._DONE)
        except BaseException as e:  # noqa: BLE001  (said in the main thread, as if read there)
            self.box.put(e)
        finally:
            if self.close is not None:
                try:
                    self.close()
                except OSError:
                    pass

    def __iter__(self) -> Iterator[tuple[int | None, str]]:
        import queue

        while True:
            try:
                item = self.box.get(timeout=self.idle)
            except queue.Empty:
                yield None, IDLE
                continue
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """No more lines are wanted: the thread closes the stream once its read returns."""
        self.stopped.set()
