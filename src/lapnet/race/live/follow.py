"""`lapnet race live`: `follow_race`, the loop that reads a feed or a finished file line by line,
pushes each lap into a `LiveRace` and prints one JSON prediction a lap.

Before it, what the loop holds and counts: `_Skips` (skipped laps warned, the routine ones of a
finished race counted), `_RaceSwitch` and `_FeedRace` (one race per feed), `_Reorder` (--reorder:
laps held and let go in the order they ended); after it, the warning of a race length left to
estimate.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import IO, Any, Callable

from lapnet.errors import LapnetError
from lapnet.race.io import race_match
from lapnet.race.features import num
from lapnet.race.runs import RaceRun, load_run
from lapnet.race.whatif import require_fresh_start
from lapnet.race.live.lap import SkipLap
from lapnet.race.live.state import SWITCH_AFTER, SWITCH_BACK, TIME_JUMP, LiveRace
from lapnet.race.live.feed import (END, IDLE, FollowReader, _cells, _check_text, _header_again, _IdleLines,
                                   _parquet_error, _refuse_parquet, _wait_for, is_pipe, read_header, stream_lines)
from lapnet.race.live.replay import _replay
from lapnet.race.live.options import DriverFilter, _end_check, _grid_check, check_catch_up, check_poll, check_reorder


ROUTINE_SKIPS = ("after_flag", "non_starter")  # `SkipLap.kind`s a finished race has: counted, said once each


class _Skips:
    """The laps `follow_race` skips, said on stderr. Most are said at once, naming the input line:
    each may be a problem of the feed. The routine ones (`ROUTINE_SKIPS`) are counted instead and
    said once per kind when the stream ends: every finished FastF1 race has them (a replay of
    Monza: 18 rows after the flag, a non-starter's row), and a line each would bury the others."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.routine: dict[str, list] = {}  # SkipLap.kind -> [count, first line, drivers]

    def add(self, e: SkipLap, lineno: int) -> None:
        if e.kind not in ROUTINE_SKIPS:
            self.say(f"lapnet: warning: line {lineno}: skipped lap: {' '.join(str(e).split())}")
            return
        seen = self.routine.setdefault(e.kind, [0, lineno, []])
        seen[0] += 1
        seen[2].append(e.driver)

    def summarise(self) -> None:
        """One line per routine kind met, in `ROUTINE_SKIPS`' order."""
        for kind in ROUTINE_SKIPS:
            if kind in self.routine:
                self.say(_routine_line(kind, *self.routine[kind]))


def _routine_line(kind: str, count: int, first: int, drivers: list[str]) -> str:
    s = "s" if count > 1 else ""
    if kind == "after_flag":
        return (f"lapnet: {count} lap{s} after the chequered flag skipped (rows FastF1 generates without a lap time; "
                f"batch cleaning drops them too; first: line {first})")
    who = list(dict.fromkeys(drivers))
    return (f"lapnet: {count} row{s} of {', '.join(who)} skipped: no timed lap (did not start, or out on lap 1: "
            f"FastF1 generates such rows without a lap time; batch cleaning drops them too; first: line {first})")


class _RaceSwitch:
    """A feed without a Race column that runs into another race (a second race's lines appended,
    `cat` of two feeds): after the field passed lap SWITCH_AFTER, a lap 1-2, or a lap whose
    session Time is more than SWITCH_BACK seconds before the latest read, is held back instead
    of pushed. When most of the drivers seen (at least 3) have sent such a lap in one run of held
    lines, going back (`switched`: LapnetError, the stream stops); the first line that is not
    held releases the run, pushed in its order as if never held (a lapped car's late lap, a
    corrupted Time, a driver-by-driver feed: what each was before)."""

    def __init__(self, where: str):
        self.where = where
        self.held: list[tuple] = []  # (line number, lap, catching up) not pushed yet
        self.back: set[str] = set()  # drivers seen who went back in the held run

    def hold(self, live: LiveRace, lineno: int, lap: dict, catch: bool = False) -> bool:
        """Whether the lap is held back (LapnetError: the feed switched races)."""
        if live.top_lap <= SWITCH_AFTER:
            return False
        drv, n, t = str(lap.get("Driver") or ""), num(lap.get("LapNumber")), num(lap.get("Time"))
        early = math.isfinite(n) and n <= 2
        earlier = math.isfinite(t) and t < live.latest_end - SWITCH_BACK
        if not (early or earlier):
            return False
        self.held.append((lineno, lap, catch))
        st = live.drivers.get(drv)
        if st is not None and (earlier or n < st.last_lap):
            self.back.add(drv)
        if len(self.back) >= 3 and 2 * len(self.back) > len(live.drivers):
            raise LapnetError(
                f"{self.where}, line {lineno}: the feed switched races: {len(self.back)} of the {len(live.drivers)} "
                f"drivers went back to lap 1-2, or their session Time by over {SWITCH_BACK / 60:.0f} minutes, after the "
                f"field had reached lap {live.top_lap:g} (from line {self.held[0][0]}): live follows one race: give each "
                "race its own file or feed, or a Race column and --race NAME")
        return True

    def release(self) -> list[tuple]:
        out, self.held, self.back = self.held, [], set()
        return out


class _Reorder:
    """`race live --reorder SECONDS`: laps held until the feed's session Time (the latest `Time`
    read) is SECONDS past their own, then processed in the order they ended, batch's
    (`features.session_order`: by Time, then lap number, then driver; a lap without a Time right
    after the driver's previous lap). `flush` lets every lap held go, in that order: at the end
    of the input, and when it has been idle for SECONDS of wall time (`follow_race`). A feed whose
    laps come at most SECONDS late so gives exactly the lines of the same feed in order.

    A re-send of a lap still held (same driver and lap number) is a duplicate when nothing
    changed (SkipLap), else it takes the held lap's place, said in `notes`: FastF1 sends a lap
    again once it has filled a cell, a missing LapTime mostly, and the lap is then read as the
    finished race's table has it. A lap more than TIME_JUMP seconds after the feed's Time (a
    corrupted Time, or the end of a long suspension) is not held: the laps held go first and it
    is pushed at once, where `LiveRace` takes or refuses it (`sync` moves the clock once taken)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.heap: list[list] = []  # [Time key, lap number, driver, arrival, line number, lap, catching up, alive]
        self.held: dict[tuple[str, float], list] = {}  # (driver, lap number) -> its live entry in the heap
        self.clock = -math.inf  # the latest session Time read
        self.last_key: dict[str, float] = {}  # driver -> the Time key of his latest lap read
        self.arrivals = 0
        self.notes: list[str] = []  # what the caller says, naming the input line

    def add(self, live: LiveRace, lineno: int, lap: dict, catch: bool = False) -> list[tuple]:
        """Hold one lap read; returns the laps now due, (line number, lap, catching up) in the order
        they ended. Raises SkipLap for an unchanged re-send of a lap still held."""
        import heapq

        drv, n, t = str(lap.get("Driver") or ""), num(lap.get("LapNumber")), num(lap.get("Time"))
        if not drv or drv == "nan" or not math.isfinite(n):
            return [(lineno, lap, catch)]  # `LiveRace` refuses it, naming what it lacks
        if math.isfinite(t) and math.isfinite(self.clock) and t > self.clock + TIME_JUMP:
            return self.flush() + [(lineno, lap, catch)]
        old = self.held.get((drv, n))
        if old is not None:
            changed = live._changes(old[5], lap)
            if not changed:
                raise SkipLap(f"{drv} lap {n:g}: duplicate lap", driver=drv)
            old[7] = False
            self.notes.append(f"{drv} lap {n:g}: a changed re-send of lap {n:g} (line {old[4]}) while --reorder held it: "
                              f"this one is used ({changed})")
        key = t if math.isfinite(t) else self.last_key.get(drv, -1.0)  # batch's rule for a lap without a Time
        self.last_key[drv] = key
        if math.isfinite(t):
            self.clock = max(self.clock, t)
        entry = [key, n, drv, self.arrivals, lineno, lap, catch, True]
        self.arrivals += 1
        self.held[(drv, n)] = entry
        heapq.heappush(self.heap, entry)
        return self._due()

    def sync(self, live: LiveRace) -> None:
        """The feed's Time is at least the latest lap `LiveRace` took (a lap far later, taken)."""
        self.clock = max(self.clock, live.latest_end)

    def _due(self, everything: bool = False) -> list[tuple]:
        import heapq

        out = []
        while self.heap:
            top = self.heap[0]
            if top[7] and not everything and math.isfinite(self.clock) and top[0] > self.clock - self.seconds:
                break
            heapq.heappop(self.heap)
            if top[7]:
                del self.held[(top[2], top[1])]
                out.append((top[4], top[5], top[6]))
        return out

    def flush(self) -> list[tuple]:
        """Every lap held, in the order they ended."""
        return self._due(everything=True)

    def waiting(self) -> list[int]:
        """The input lines of the laps held, in the order they came."""
        return sorted(e[4] for e in self.held.values())


class _FeedRace:
    """A feed's Race column, checked line by line (a finished file's race is picked before it is
    replayed, `_pick_race`): a feed cannot be split up front. With `race`, other races' lines are
    passed over (and named if no line matched); without it, the first race named is followed and
    a lap of another stops the stream: it would step the same drivers' states in another race.
    A feed without a Race column, or a line with an empty Race cell, is the race followed."""

    def __init__(self, cols: list[str], race: str | None, where: str):
        self.col = cols.index("Race") if "Race" in cols else None
        self.race, self.where = race, where
        self.current: str | None = None  # the race followed, once a line names it
        self.others: set[str] = set()  # other races' names passed over (with `race`)

    def keep(self, line: str, lineno: int) -> bool:
        """Whether the lap on `line` is of the race followed (LapnetError: another, without `race`)."""
        if self.col is None:
            return True
        cells = _cells(line)
        name = cells[self.col].strip() if self.col < len(cells) else ""
        if not name:
            return True
        if self.race is not None:
            if race_match(self.race, [name]) is None:
                self.others.add(name)
                return False
            self.current = self.current or name
        elif self.current is None:
            self.current = name
        elif name != self.current:
            raise LapnetError(f"{self.where}, line {lineno}: a lap of race '{name}' after laps of race "
                              f"'{self.current}': live follows one race: feed one, or pick it with --race NAME")
        return True


def _checked_header(stream: IO[str], follow: bool, poll: float, where: str, wanted: DriverFilter | None,
                    race: str | None) -> tuple[str, list[str]]:
    """The header line (without its line end) and its columns, refused when it cannot serve: an
    empty input, --driver by car number without a DriverNumber column, --race without a Race
    column. Said here, before a lap is read, each is one line with nothing printed before it;
    later, it would come after laps were printed, or never (a filter matching no line)."""
    header = read_header(stream, follow, poll)
    if not header.strip():
        raise LapnetError(f"{where}: empty input (no CSV header)")
    header = header.strip("\r\n")
    _check_text(header, where)
    cols = _cells(header)
    if wanted is not None and wanted.numbers and "DriverNumber" not in cols:
        raise LapnetError(f"--driver {','.join(sorted(wanted.numbers, key=int))}: a car number, but {where} has "
                          "no DriverNumber column: give the driver's code (e.g. VER)")
    if race is not None and "Race" not in cols:
        raise LapnetError(f"--race {race}: {where} has no Race column (it holds one race): drop --race")
    return header, cols


def _print_json(pred: dict) -> None:
    from lapnet.checkpoint import json_text

    sys.stdout.write(json_text(pred) + "\n")
    sys.stdout.flush()


def _print_err(line: str) -> None:
    from lapnet.cli import one_line  # a name from the feed (a driver, a race) may hold escape sequences

    print(one_line(line), file=sys.stderr, flush=True)


def _check_input(file: str) -> None:
    """A FILE that is not there, or a folder: one line (the CLI says the same before the run is read)."""
    if os.path.isdir(file):
        raise LapnetError(f"{file}: is a directory, not a lap table (live reads a CSV file)")
    if not os.path.exists(file):
        raise LapnetError(f"{file}: no such file")


def follow_race(run: RaceRun | str | Path, file: str | Path = "-", *, follow: bool = False, race_laps: int | None = None,
                poll: float = 0.5, drivers: str | Any | None = None, race: str | None = None, pit_now: bool = False,
                reorder: float = 0.0, catch_up: str = "print",
                emit: Callable[[dict], None] | None = None, say: Callable[[str], None] | None = None) -> dict:
    """`lapnet race live`: follow a race lap by lap from a CSV feed, one prediction per lap.

    The input is CSV lines, header first (UTF-8, a byte-order mark allowed): stdin ("-",
    read as it comes), a growing FILE with `follow` (like tail -f; a file still empty, or not
    there yet, is waited for), or a finished FILE, replayed in the order the laps ended
    (`replay_order`) with its length read from it (`file_race_laps`) unless `race_laps` is
    given. Stdin or `follow` without `race_laps`: the length is estimated from the race's pace
    (`features.estimate_race_laps`), with one warning naming the estimate once a lap has set
    the race's pace. Ctrl-C ends the stream quietly (a followed file's last line still without
    its line end is said to be unread, as are laps held for `reorder`) and returns, saying
    "stopped": "interrupted"; on a pipe or stdin read for `reorder`, at once (the reader thread
    closes the stream when the feed next sends a line, or ends). A followed file is read
    as bytes, whole lines only (`FollowReader`), and refused once truncated or replaced.

    One race at a time: a table with several (its Race column) needs `race`; a feed whose
    Race changes stops with an error, as does one without a Race column that runs into
    another race (`_RaceSwitch`; a finished file: `_one_session`). A header line again
    (files concatenated) is skipped; one with other columns stops the stream. A driver first
    seen after the grid joins, a feed that starts after lap 1 and a gap in a driver's laps are
    warned (`LiveRace.push`), as are laps that ended before a lap already processed (once, and
    a count when the stream ends). Skipped laps are warned line by line, except the routine ones
    of a finished race (FastF1's rows after the flag, a non-starter's rows): one line each
    kind, when the stream ends.

    Args:
        run: a loaded run or its directory. file: "-" (stdin) or a CSV path.
        follow: keep reading a growing FILE. race_laps: the scheduled length, or None.
        poll: seconds between reads of a growing file.
        drivers: emit only these drivers' laps (`DriverFilter`: codes in any case, or
            FastF1 driver numbers through the DriverNumber column; every lap is still read: a
            lap's features depend on the whole field); None: all. A driver on no row once the
            field has crossed the line is refused then (a warning if others were found).
        race: the race to follow in a table or feed of several (Race column, any case).
        pit_now: add the pit-now what-if to every prediction (`LiveRace`).
        reorder: seconds; above 0, each lap is held until the feed's latest Time is that far past
            its own (or the input ends, or has been idle that many seconds) and processed in the
            order laps ended (`_Reorder`): a feed up to that late gives the ordered feed's lines.
            0 (the default): each lap is processed as it comes.
        catch_up: with `follow`, the laps already in FILE when live started (a process restarted
            on a feed): "print" them as any lap (the default), "mark" every line with "catch_up"
            (true on those), or "skip" printing them (they are still read: the state is the same).
        emit: called with each prediction (default: one JSON line on stdout).
        say: called with each line for the user, notes and warnings naming the input line
            (default: stderr).

    Returns:
        {"laps": laps read and predicted, "drivers": drivers seen, "missing": asked-for
        drivers never seen, "race": the Race followed (None without a Race column), "stopped":
        "end" when the input ended, "interrupted" when Ctrl-C ended the stream (or the
        KeyboardInterrupt a Jupyter kernel's interrupt raises: the laps so far were emitted)}.

    Raises:
        LapnetError: a FILE not there (without `follow`), a folder, or one that cannot be
            read; an empty input, no usable lap, text that is not UTF-8 (a Parquet file:
            said so), several races, a header with other columns mid-stream, a followed file
            truncated or replaced, `drivers` matching nobody, a bad `poll`, `reorder` or
            `catch_up` (one line each); `LiveRace`'s errors for the run and the header.
    """
    emit, say, file = emit or _print_json, say or _print_err, str(file)
    where = "stdin" if file == "-" else file
    wanted = drivers if drivers is None or isinstance(drivers, DriverFilter) else DriverFilter(drivers)
    if follow:
        check_poll(poll)
    check_reorder(reorder)
    check_catch_up(catch_up, follow)
    if isinstance(run, (str, Path)):
        run = load_run(run)  # the run's errors come first, before the feed is waited for
    if pit_now:
        require_fresh_start(run.model)  # as the run's
    piped = file != "-" and is_pipe(file)  # a FIFO or process substitution <(...): read once, as it comes, like stdin
    if piped and follow:
        raise LapnetError(f"{file}: a pipe is read as it comes, like stdin (--follow is for a growing regular file)")
    absent = follow and file != "-" and not os.path.lexists(file)  # live started before the feed: waited for
    if file != "-" and not piped and not absent:
        _check_input(file)
        _refuse_parquet(file)
    try:
        stream: Any = (None if absent else sys.stdin if file == "-" else open(file, encoding="utf-8-sig") if piped
                       else FollowReader(file) if follow else open(file, encoding="utf-8-sig"))
    except OSError as e:  # permissions, or the file gone since it was looked at
        raise LapnetError(f"{file}: cannot be read ({e.strerror or e})") from None
    reader: _IdleLines | None = None  # the thread reading a pipe or stdin for --reorder: the stream is its to close
    interrupted = False
    live: LiveRace | None = None
    n_out = 0  # laps read and predicted (emitted or filtered out by `drivers`)
    skips = _Skips(say)
    feed: _FeedRace | None = None  # a feed's race, checked line by line (a finished file's is picked up front)
    switch: _RaceSwitch | None = None  # a feed running into another race (a finished file: `_one_session`)
    order = _Reorder(reorder) if reorder > 0 else None
    current = None  # a finished file's race
    grid_checked = False
    length_said = race_laps is not None  # an estimated length is said once, naming it
    caught = {"laps": 0, "last": 0, "said": False}  # lines already in a followed FILE when live started

    def take(lineno: int, lap: dict, catch: bool = False) -> None:  # push one lap read, say what came of it
        nonlocal n_out, grid_checked, length_said
        try:
            pred = live.push(lap)
        except SkipLap as e:
            pred = None
            skips.add(e, lineno)
        for notice in live.notices:
            say(f"lapnet: warning: line {lineno}: {notice}")
        live.notices.clear()
        if order is not None:
            order.sync(live)
        if pred is None:
            return
        n_out += 1
        if not length_said and live.featurizer.ref_source == "scored":
            length_said = True
            say(_length_line(pred["race_laps"], lineno))
        if wanted is not None and live.grid_closed and not grid_checked:
            grid_checked = True
            _grid_check(wanted, live, say)
        if catch_up == "mark":
            pred["catch_up"] = catch
        if (wanted is None or wanted.shows(pred["driver"], live)) and not (catch and catch_up == "skip"):
            emit(pred)

    def push(lineno: int, lap: dict, catch: bool) -> None:  # past the race-switch check, then `take`
        if switch is not None:
            if switch.hold(live, lineno, lap, catch):
                return
            for held in switch.release():
                take(*held)
        take(lineno, lap, catch)

    try:
        if absent:
            _wait_for(file, poll, say)
            stream = FollowReader(file, new=True)
        header, cols = _checked_header(stream, follow, poll, where, wanted, race)
        if file != "-" and not follow and not piped:  # a finished race
            lines, current, race_laps, notes, relabel = _replay(stream, cols, race, race_laps, file)
        else:
            lines = stream_lines(stream, follow, poll, idle=reorder if order is not None else None,
                                 events=order is not None or catch_up != "print")
            if order is not None and not follow:  # stdin, a pipe: read in a thread, so that a quiet feed is seen
                lines = reader = _IdleLines(lines, reorder, close=None if stream is sys.stdin else stream.close)
            notes, feed, relabel = [], _FeedRace(cols, race, where), {}
            switch = _RaceSwitch(where)
        live = LiveRace(run, total_laps=race_laps, pit_now=pit_now, relabel=relabel,  # None: estimated from the race's pace
                        reorder=reorder)
        with warnings.catch_warnings(record=True) as remarks:  # said with the notes, once a lap has come
            warnings.simplefilter("always")
            live.set_header(header)
        length_said = race_laps is not None
        if order is not None and "Time" not in cols:
            notes.append(f"lapnet: warning: --reorder {reorder:g}: {where} has no Time column: laps are taken in the "
                         "order they come")
        said = False
        for lineno, line in lines:
            if lineno is None:  # an event of the input: idle for --reorder's seconds, or a followed file's end reached
                if line == IDLE and order is not None:
                    for held in order.flush():
                        push(*held)
                elif line == END and catch_up != "print" and caught["laps"] and not caught["said"]:
                    caught["said"] = True
                    say(f"lapnet: caught up with {file}: the {caught['laps']} lap lines already in it when live "
                        f"started (lines 2-{caught['last']}) were read"
                        + (", not printed (--catch-up skip)" if catch_up == "skip" else
                           ' (their JSON lines say "catch_up": true)') + "; from here on, laps as they come")
                continue
            line = line.strip("\r\n")
            if not line.strip():
                continue
            _check_text(line, where)
            if switch is not None and _header_again(_cells(line), cols, where, lineno):
                continue  # the same header again: feeds concatenated (a finished file drops them before)
            if feed is not None and not feed.keep(line, lineno):
                continue
            if not said:  # so that an error before the first lap stays one line
                said = True
                _say_notes(notes, remarks, say)
            catch = isinstance(stream, FollowReader) and stream.catching_up
            if catch:
                caught["laps"], caught["last"] = caught["laps"] + 1, lineno
            try:
                lap = live.parse(line)
            except SkipLap as e:
                skips.add(e, lineno)
                continue
            if order is None:
                push(lineno, lap, catch)
                continue
            try:
                due = order.add(live, lineno, lap, catch)
            except SkipLap as e:
                skips.add(e, lineno)
                continue
            for note in order.notes:
                say(f"lapnet: warning: line {lineno}: {note}")
            order.notes.clear()
            for held in due:
                push(*held)
        if order is not None:
            for held in order.flush():
                push(*held)
        if switch is not None:
            for held in switch.release():
                take(*held)
        if n_out == 0:
            if feed is not None and feed.others:
                others = ", ".join(sorted(feed.others))
                raise LapnetError(f"--race {race}: no lap of this race in {where} (races: {others})")
            raise LapnetError(f"{where}: no usable laps in the stream")
    except KeyboardInterrupt:
        interrupted = True
        if order is not None and order.held:
            waiting = order.waiting()
            k = len(waiting)
            say(f"lapnet: warning: {k} lap{'s' if k > 1 else ''} from line {waiting[0]} on not processed: held by "
                f"--reorder {reorder:g} until the feed's Time passed theirs (the stream was stopped first)")
        if switch is not None and switch.held:
            first, k = switch.held[0][0], len(switch.held)
            say(f"lapnet: warning: {k} lap{'s' if k > 1 else ''} from line {first} on not read: held back while the feed "
                "was checked for a switch to another race (a lap 1-2, or a session Time minutes back, after the field "
                f"passed lap {SWITCH_AFTER})")
        if isinstance(stream, FollowReader):
            unread = stream.unread()
            if unread:
                say(unread)
    except UnicodeDecodeError as e:
        if bytes(e.object[:4]) == b"PAR1":
            raise _parquet_error(where) from None
        raise LapnetError(f"{where}: not UTF-8 text ({e.reason}: {e.object[e.start:e.start + 1]!r})") from None
    finally:
        if reader is not None:
            reader.stop()  # not stream.close(): it would wait for the reader's readline(), i.e. for the feed's writer
        elif stream is not None and stream is not sys.stdin:
            stream.close()
    skips.summarise()
    if live is not None and n_out and not length_said:  # no lap set the race's pace: the default length was used
        say(_length_line(live.featurizer.total_laps, None))
    if live is not None and live.late_laps > 1:
        hint = (f"a larger --reorder than {reorder:g} s puts them in order" if reorder > 0
                else "--reorder SECONDS puts laps up to that late in order")
        say(f"lapnet: warning: {live.late_laps} laps in all ended before a lap already processed (by up to "
            f"{live.late_most:.3f} s of session Time): their calls, and those of the laps around them, read the field "
            f"out of order; {hint}")
    missing = _end_check(wanted, live, n_out, say)
    return {"laps": n_out, "drivers": sorted(live.drivers) if live is not None else [], "missing": missing,
            "race": feed.current if feed is not None else current, "stopped": "interrupted" if interrupted else "end"}


def _length_line(laps: int, lineno: int | None) -> str:
    """The one warning of a race length left to estimate (no --race-laps on a feed), naming the
    estimate: at the first lap that set the race's pace (`lineno`), or when the stream ends
    without one (None: the default length was used throughout)."""
    from lapnet.race.features import DEFAULT_RACE_LAPS

    where = f"line {lineno}: " if lineno is not None else ""
    what = (f"{laps} laps (from the race's first Scored lap: within a lap or two of where it settles, as the reference "
            "lap does over the first laps)" if lineno is not None else
            f"{laps} laps (no lap was Scored: the default {DEFAULT_RACE_LAPS}, or the laps seen)")
    return (f"lapnet: warning: {where}--race-laps not given: estimating the race length from its green-flag pace: {what}; "
            "7.7% off on average over the 15 real races, 19.6% at worst; the race fraction, the pit call, pit-now "
            "(none with fewer than 3 laps to go) and its laps_to_flag depend on it: give --race-laps N (each JSON line "
            "says race_laps)")


def _say_notes(notes: list[str], remarks: list[warnings.WarningMessage], say: Callable[[str], None]) -> None:
    """What was read from the input (a finished file's length and order, the header's missing
    columns): said when the first lap comes, not before, so that an input refused before its
    first lap (bytes that are not UTF-8, a Parquet file on stdin) gets one line, the error."""
    for note in notes:
        say(note)
    for w in remarks:  # the header's (columns missing): through the CLI's one-line warnings
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
