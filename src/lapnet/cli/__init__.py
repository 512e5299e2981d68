"""The `lapnet` command line: thin Typer commands that validate input and call the library.

Each command group lives in its own module and adds itself to `app` through `register(app)`.
`main()` is the console-script entry point: it turns bad input (a `LapnetError`, an
`OSError`, a usage error) into one line on stderr and exit code 2, never a traceback, and
takes back any empty output directory the failed command created. Any other exception is a
bug in lapnet: `lapnet: internal error: <Type>: <message>`, its traceback, exit code 1.
Ctrl-C, or SIGTERM, stops any command with `lapnet: error: interrupted` and exit code 130.
Under torchrun only `text train` and `race train` run (`DISTRIBUTED_COMMANDS`); every other
command is refused before any process group is joined.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import typer
from typer import exceptions as tx
from typer._click import exceptions as cx  # Typer >= 0.26 vendors Click here
from typer.core import TyperOption

from lapnet.console import printable
from lapnet.errors import LapnetError

app = typer.Typer(
    name="lapnet",
    help="Recurrent neural networks from first principles to the pit wall.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# Typer 0.29 prints a type beside every option, "<bool>" beside a flag too, which reads as if
# the flag took a value (`--json true`). A flag shows no type.
_option_type = TyperOption.display_type_rich


def _flag_shows_no_type(self: TyperOption, ctx):  # noqa: ANN001  (typer's own signature)
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_shows_no_type


def _version(value: bool) -> None:
    if value:
        import lapnet

        print(f"lapnet {lapnet.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print lapnet's version and exit.")) -> None:
    """Recurrent neural networks from first principles to the pit wall."""


from lapnet.cli import demo, experiments, race, report, series, teach, text  # noqa: E402  (each registers its commands)

for _module in (demo, text, experiments, series, teach, race, report):
    _module.register(app)


_PREFORMATTED = (" ", "\t", "- ", "* ", "$ ", "|", "\b")


def reflow(text: str) -> str:
    """Join the lines of each prose paragraph of a help text, so that the terminal wraps it.

    Typer's rich help keeps a docstring's line breaks inside a paragraph, which at 80 columns
    leaves a stub of a line after every source line. Paragraphs whose later lines start like a
    list, a table, a command or an indented block keep their lines."""
    paragraphs = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        if len(lines) > 1 and not any(line.startswith(_PREFORMATTED) for line in lines[1:]):
            para = " ".join(line.strip() for line in lines)
        paragraphs.append(para)
    return "\n\n".join(paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    """`reflow` every command's help (its `help=` or its docstring), group by group."""
    import inspect

    for info in typer_app.registered_commands:
        text = info.help if info.help is not None else inspect.getdoc(info.callback) if info.callback else None
        if text:
            info.help = reflow(inspect.cleandoc(text))
    for group in typer_app.registered_groups:
        _reflow_help(group.typer_instance)


_reflow_help(app)


def _bound_int_options() -> None:
    from lapnet.cli.common import bound_int_options

    bound_int_options(app)  # no integer option reaches torch or NumPy unbounded (2**64, --threads 100000)


_bound_int_options()


# run directories are locked with POSIX flock and read with pread: on native Windows every command
# that writes would fail half-way (an internal error after creating its --out), so none starts
NATIVE_WINDOWS = os.name == "nt"
_SRC = str(Path(__file__).resolve().parents[1])  # the lapnet package: its warnings are lapnet's own


def one_line(message: object) -> str:
    """`message` as one printable line: whitespace (newlines, tabs) collapsed to single spaces,
    every other control character made visible (`lapnet.console.printable`). Every `lapnet: error:` and
    `lapnet: warning:` line goes through it."""
    return printable(" ".join(str(message).split()))


def _fail(message: str, code: int = 2) -> None:
    line = one_line(message)  # one line, whatever the message held, and nothing that drives the terminal
    me = _message_rank()
    if not (code == 130 and me != 0):  # under torchrun a Ctrl-C reaches every rank: rank 0 says it once
        # under torchrun each rank says its own error, named: the same line twice read as one
        # failure said twice, and a line from rank 1 alone (its file missing) as rank 0's
        print(f"lapnet: error: {'' if line.startswith(f'rank {me} ') else _rank_prefix(me)}{line}", file=sys.stderr)
    sys.exit(code)


def _message_rank() -> int:
    """The rank a message comes from: the joined group's, or the launcher's RANK before joining
    (`distributed.launch_rank`); 0 in a single process."""
    from lapnet import distributed

    return distributed.rank() or distributed.launch_rank()


def _rank_prefix(rank: int) -> str:
    return f"rank {rank}: " if rank != 0 else ""


def _internal_error(e: BaseException) -> None:
    """Anything but bad input is a bug in lapnet: say so, show where (the traceback), exit 1.
    A plain ValueError from NumPy deep inside a computation is not the user's mistake, and
    reporting it as `error:` with exit 2 would hide it."""
    import traceback

    print(f"lapnet: internal error: {_rank_prefix(_message_rank())}{one_line(f'{type(e).__name__}: {e}')}",
          file=sys.stderr)
    print(printable("".join(traceback.format_exception(e))), end="", file=sys.stderr)  # its lines, made as harmless
    sys.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every warning as one `lapnet: warning:` line (Python's default prints the file and line
    number, then the source line: internals, and two lines for one remark)."""
    from lapnet import distributed

    if distributed.rank() != 0:  # under torchrun every rank meets the same remark: rank 0 says it once
        return
    text = " ".join(str(message).split())
    if not (category.__module__.startswith("lapnet") or str(filename).startswith(_SRC)):
        text = f"{text} ({category.__name__} from {Path(filename).name})"  # another library's remark
    print(f"lapnet: warning: {one_line(text)}", file=sys.stderr if file is None else file)


def _is_devnull(stream) -> bool:
    """Whether `stream`'s file descriptor is /dev/null (False when it has none)."""
    import io
    import os
    import stat

    try:
        st, null = os.fstat(stream.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def _stdout_closed(stdout, stderr) -> None:
    """The reader of stdout went away (`lapnet text sample RUN | head`): end quietly, exit 0.

    Exit 0, not 141 (the shell's code for a process killed by SIGPIPE, what `yes | head`
    gives): everything the reader took was delivered, and a script running under `set -o
    pipefail` must not fail because `head` stopped reading early. Click, on EPIPE, exits 1
    with no message, which would read as an internal error here. Anything still buffered for
    stdout, and the interpreter's last flush, go to /dev/null instead of raising again."""
    import io
    import os

    sys.stdout, sys.stderr = stdout, stderr  # Click wrapped them; the run is over either way
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real descriptor (a test's capture)
        pass
    sys.exit(0)


class _ClosedStdin(io.TextIOBase):
    """Standard input when the command was started with it closed (`<&-`): a command that reads
    it is refused in one line, one that does not never notices."""

    def _refuse(self, *args: object) -> str:
        raise LapnetError("standard input is closed (<&-): give the input as a file, or pipe it in")

    read = readline = _refuse

    def readlines(self, *args: object) -> list[str]:
        self._refuse()
        return []

    @property
    def buffer(self):  # `sys.stdin.buffer.read()`: refused like read()
        self._refuse()

    def readable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


def _closed_stdio() -> None:
    """stdin, stdout or stderr closed at start (`<&-`, `>&-`): Python leaves None in its place,
    and the first file lapnet opened would take the free descriptor, so that a stray write to
    fd 1 would land in a checkpoint. Each closed descriptor is held by /dev/null; a closed stdout
    is refused (exit 2: whatever the command prints would be lost), a closed stdin is refused
    by the first read of it (`_ClosedStdin`), a closed stderr only loses the messages."""
    import os

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: fd itself
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
        if name == "stderr":
            sys.stderr = open(fd, "w", closefd=False)
        elif name == "stdin":
            sys.stdin = _ClosedStdin()
    if sys.stdout is None:
        _fail("standard output is closed (>&-): give it a file, or >/dev/null to discard what the command prints")


def _utf8_stdio() -> None:
    """Write stdout and stderr in UTF-8 whatever the locale says (PYTHONIOENCODING=ascii, a
    Latin-1 locale, Windows' cp1252 when redirected): lapnet reads UTF-8 and prints model text
    and JSON in any script, and `text sample` died with a UnicodeEncodeError on the first
    character ASCII could not hold. Each stream keeps its own error handler (stdout's strict,
    stderr's backslashreplace); a stream that cannot be reconfigured (a test's capture, a
    foreign object) is left as it is."""
    import codecs

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        encoding = getattr(stream, "encoding", None)
        try:
            if encoding is None or codecs.lookup(encoding).name == "utf-8":
                continue
        except LookupError:
            pass
        try:
            stream.reconfigure(encoding="utf-8", errors=stream.errors)
        except (AttributeError, ValueError, io.UnsupportedOperation):
            pass


def _warning_line(text: str) -> None:
    """One `lapnet: warning:` line on stderr (rank 0 only, as `_show_warning`)."""
    from lapnet import distributed

    if distributed.rank() == 0:
        print(f"lapnet: warning: {one_line(text)}", file=sys.stderr)


class _MatplotlibRemarks(logging.Handler):
    """matplotlib's own remarks (its logger's warnings, not Python warnings) as one `lapnet:
    warning:` line each. An unwritable config directory (a read-only HOME in CI, a bad
    MPLCONFIGDIR) gave two raw lines, `mkdir -p failed for path ...` and `Matplotlib created a
    temporary cache directory ...`: said as one line, with the reason and what to do.

    matplotlib is left to fall back on its temporary directory, as it does: lapnet does not set
    MPLCONFIGDIR itself, because a fallback chosen quietly would hide why every run rebuilds
    matplotlib's caches (the remark says how to keep them: a writable MPLCONFIGDIR)."""

    _FALLBACK = re.compile(r"Matplotlib created a temporary cache directory at (\S+) because there was an issue "
                           r"with (?:MPLCONFIGDIR|the default path) \((.*?)\);")
    _CAUSE = re.compile(r"^mkdir -p failed for path .*?: \[Errno \d+\] ([^:]+)|^(.*) is not a writable directory$")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.cause: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
        except Exception:  # a malformed record: matplotlib's business, never a crash of the command
            return
        cause = self._CAUSE.match(text)
        if cause:  # said with the fallback that follows it
            self.cause = "not writable" if cause.group(2) else cause.group(1).lower()
            return
        fallback = self._FALLBACK.match(text)
        if fallback:
            why = self.cause or "not writable"
            text = (f"matplotlib's config and cache directory {fallback.group(2)} cannot be used ({why}): it uses a "
                    f"temporary one for this run and rebuilds its caches each time; set MPLCONFIGDIR to a writable "
                    f"directory to keep them")
            self.cause = None
        else:
            text = f"{text} (from matplotlib)"
        _warning_line(text)


@contextlib.contextmanager
def _matplotlib_remarks_as_lines() -> Iterator[None]:
    """`_MatplotlibRemarks` on matplotlib's logger for one command (not passed on to the root
    logger, whose last-resort handler printed them raw)."""
    log = logging.getLogger("matplotlib")
    handler, propagate = _MatplotlibRemarks(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _interrupt(signum, frame) -> None:  # noqa: ANN001  (signal's own signature)
    from lapnet import distributed

    distributed.note_signal(signum)  # under torchrun a SIGTERM is torchrun stopping the job: said so
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, `timeout`, a CI runner cancelling a job) stops a command as Ctrl-C does:
    the same clean-up (temporary files, an --out made empty), `lapnet: error: interrupted`,
    exit 130. Training already treated it so (`train._StopSignal`); every other command died
    at once with 143. A SIGTERM ignored from the start stays ignored."""
    import signal

    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            yield
            return
        old = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: signals are not ours to catch
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _ignore_late_interrupts() -> None:
    """Once the command's work is done and its output flushed: ignore SIGINT for the rest of
    the process. A Ctrl-C (or `timeout -s INT`) landing during the interpreter's shutdown
    otherwise turned a finished command's exit code into 130. Only for the process's own
    command line (`main()` without argv): a caller running `main([...])` keeps its handler."""
    import signal

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed or broken stream: the exit code is set already
            pass
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


# The commands that run under torchrun: every rank trains on its shard and rank 0 writes. Any
# other command ran once per rank (`text sample` printed twice, `race live` every line twice,
# `series train` and `demo` collided with themselves in their own files): it is refused.
DISTRIBUTED_COMMANDS = (("text", "train"), ("race", "train"))


def _command_path(args: list[str]) -> tuple[str, ...]:
    """The command `args` name: ("text", "train"), ("report",), () for `--version` alone."""
    if not args or args[0].startswith("-"):
        return ()
    groups = {g.name for g in app.registered_groups}
    if args[0] in groups and len(args) > 1 and not args[1].startswith("-"):
        return tuple(args[:2])
    return (args[0],)


def _refuse_under_torchrun(message: str) -> None:
    """A command refused under torchrun before any group is joined: every rank meets the same
    refusal, rank 0 says it (the others exit 2 without a word), exit 2."""
    from lapnet import distributed

    if distributed.launch_rank() == 0:
        print(f"lapnet: error: {one_line(message)}", file=sys.stderr)
    else:  # torchrun stops every rank at the first exit: a follower leaving first could cut rank 0 off before it speaks
        import time

        time.sleep(5.0)
    sys.exit(2)


def _join_if_distributed(args: list[str]) -> None:
    """Under torchrun (WORLD_SIZE > 1): refuse any command but `DISTRIBUTED_COMMANDS` (and their
    --help), and any input every rank would split (standard input, a pipe, a device); then join
    the process group, for the training commands only."""
    import stat

    from lapnet import distributed

    command = _command_path(args)
    helps = [a for a in args if a in ("-h", "--help")]
    training = command in DISTRIBUTED_COMMANDS and not helps
    world = distributed.world_size()
    if world > 1 and not training:
        what = " ".join(("lapnet", *command, *helps[:1])) if command else " ".join(("lapnet", *args[:1]))
        _refuse_under_torchrun(
            f"{what} does not run under torchrun (WORLD_SIZE={world}): only lapnet text train and lapnet race "
            f"train are distributed, and any other command would run once per rank; run it as one process, "
            f"without torchrun")
    if not training:
        return
    distributed.check_launch_env()  # WORLD_SIZE set by hand without the rest: one line naming the variable
    if world <= 1:
        return
    for a in args[len(command):]:
        try:
            mode = os.stat(a).st_mode if a != "-" else None
        except (OSError, ValueError):  # not a path (an option, a number), or none that exists
            continue
        if mode is None or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
            name = "standard input (-)" if mode is None else f"{a} (a pipe or a device)"
            _refuse_under_torchrun(
                f"{name} cannot be read under torchrun: every rank would read its own part of it; give the input "
                f"as a regular file every rank can read")
    distributed.init_from_env()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input exits 2 with one line on stderr, a bug exits 1 with its traceback;
    a closed stdout pipe ends quietly with exit 0 (`_stdout_closed`); Ctrl-C or SIGTERM exits
    130 with `lapnet: error: interrupted`."""
    try:
        with _sigterm_as_interrupt(), _matplotlib_remarks_as_lines():
            _main(argv)
    finally:
        if argv is None:
            _ignore_late_interrupts()


def _main(argv: list[str] | None) -> None:
    import warnings

    from lapnet import distributed
    from lapnet.cli.common import undo_new_dirs_on_failure

    _closed_stdio()
    _utf8_stdio()
    stdout, stderr = sys.stdout, sys.stderr
    stdout_null = _is_devnull(stdout)  # to tell rich's broken-pipe exit (below) from a run into /dev/null
    if NATIVE_WINDOWS:
        _fail("native Windows is not supported (run directories use POSIX file locks): run lapnet in WSL2, "
              "where it works as on Linux")
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    with undo_new_dirs_on_failure():  # a refusal leaves no empty --out behind
        try:
            _join_if_distributed(sys.argv[1:] if argv is None else argv)  # a no-op unless launched by torchrun
            result = app(args=argv, prog_name="lapnet", standalone_mode=False)
            if result == 130:  # Ctrl-C: Typer turns it into a silent exit code; say it in one line
                _fail(distributed.stop_message(), 130)
            sys.exit(result if isinstance(result, int) else 0)
        except tx.Exit as e:
            sys.exit(e.exit_code)
        except tx.Abort:
            _fail("aborted", 130)
        except cx.NoArgsIsHelpError as e:  # `lapnet text` alone: the help, once, and exit 0
            # the error's message is the help text, which rich has already printed while making
            # it (its message is then empty); a plain-text help is in the message, not yet shown
            if e.message.strip():
                print(e.message)
            sys.exit(0)
        except cx.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            _fail(f"{e.format_message()}{hint}")
        except cx.ClickException as e:
            _fail(e.format_message())
        except KeyboardInterrupt:
            _fail(distributed.stop_message(), 130)
        except SystemExit as e:
            # a SystemExit from inside a command is a closed stdout's: Click's answer to EPIPE
            # wraps stdout and stderr and exits 1 without a word; rich's (help, tables) points
            # stdout at /dev/null and exits 1 (lapnet's own exits are Typer's Exit, or come below)
            clicks = sys.stdout is not stdout and type(sys.stdout).__name__ == "PacifyFlushWrapper"
            if e.code == 1 and (clicks or (not stdout_null and _is_devnull(stdout))):
                _stdout_closed(stdout, stderr)
            raise
        except BrokenPipeError as e:
            if e.filename is None:  # a pipe, not a named file lapnet was writing
                _stdout_closed(stdout, stderr)
            _fail(str(e) or e.__class__.__name__)
        except (LapnetError, OSError) as e:  # bad input (CheckpointError too); OSError: disk, permissions
            _fail(str(e) or e.__class__.__name__)
        except MemoryError as e:  # sizes too big for this machine (NumPy's error says how much it wanted)
            _fail(f"out of memory: {str(e) or 'the input or the sizes asked for do not fit in this machine'}")
        except Exception as e:
            if isinstance(e, RuntimeError) and "allocate" in str(e):  # torch's allocator
                _fail("out of memory: the sizes asked for do not fit in this machine")
            lost = distributed.lost_peer(e, "while the ranks worked together")  # a collective outside fit
            if lost is not None:
                _fail(str(lost))
            _internal_error(e)
        finally:
            warnings.showwarning = shown
            ending = sys.exc_info()[1]  # the exit (or error) on its way out
            try:
                distributed.shutdown()
            except distributed.PeerLost as e:  # this rank's work is done, another rank's is not: not bad input
                _fail(str(e), 1)
            except KeyboardInterrupt:
                # a signal while leaving the group (torchrun's SIGTERM once another rank failed): an
                # exit already on its way keeps its code and line; a finished command is interrupted
                if ending is None or (isinstance(ending, SystemExit) and ending.code in (0, None)):
                    _fail(distributed.stop_message(), 130)


if __name__ == "__main__":  # pragma: no cover
    main()
