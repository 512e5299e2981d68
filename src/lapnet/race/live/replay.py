"""Live mode's finished FILE: read whole, one race of it, its length and the order its laps ended.

`_replay` is what `follow_race` runs on a FILE given without --follow: `file_lines` splits it,
`_pick_race` keeps the race asked for (--race), `_one_session` refuses two races concatenated,
`file_race_laps` reads the race's length (`features.last_timed_lap`, the one race-length rule of
every command), `_file_relabel` relabels Pirelli's absolute compound names by the whole race, and
`replay_order` puts the lines in the order the laps ended, as a live feed gives them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.io import MISSING_STRINGS, parse_duration, race_match
from lapnet.race.live.feed import _cells, _header_again
from lapnet.race.live.state import ORDER_SLACK, SWITCH_AFTER


def _column(rows: list[list[str]], header: list[str], col: str) -> list[str]:
    """One column's cells of CSV rows ('' where the row is short or the column absent)."""
    i = header.index(col) if col in header else None
    return ["" if i is None or i >= len(v) else v[i].strip() for v in rows]


def file_lines(stream: IO[str]) -> tuple[list[tuple[int, str]], list[list[str]]]:
    """A complete file's lap lines after its header, with their line numbers (blank lines left
    out), and each split into its cells (`rows`, for `file_race_laps` and `replay_order`)."""
    lines = [(k + 2, ln) for k, ln in enumerate(stream.read().splitlines()) if ln.strip()]
    return lines, [_cells(ln) for _, ln in lines]


def file_race_laps(rows: list[list[str]], header: list[str]) -> int | None:
    """A finished race's length from its lap lines: `features.last_timed_lap`, the one race-length
    rule of every command, on the raw text of `rows` (cells in `header`'s order); None when they
    have no timed lap or lack LapNumber or LapTime (the live reader then says what is wrong with
    them, line by line)."""
    from lapnet.race.features import last_timed_lap

    if not rows or "LapNumber" not in header or "LapTime" not in header:
        return None
    return last_timed_lap(pd.DataFrame({"LapNumber": _column(rows, header, "LapNumber"),
                                        "LapTime": _column(rows, header, "LapTime")}))


def replay_order(lines: list[tuple[int, str]], rows: list[list[str]],
                 header: list[str]) -> tuple[list[tuple[int, str]], bool]:
    """A complete file's lap lines (`file_lines`: `lines` and their cells, `rows`) in the order
    the laps ended, and whether they had to be reordered.

    FastF1's `Laps.to_csv` lists each driver's laps in turn: fed so, every lap would see the
    field at another moment of the race. Lines whose session Times already rise (within
    ORDER_SLACK) are kept as they are; any others are ordered as batch commands order laps
    (`features.session_order`). A file without a session Time (no column, or not one cell) is
    ordered as batch commands order it too: lap by lap, drivers by name within a lap.
    """
    from lapnet.race.features import session_order

    times = _session_times(rows, header)
    t = times[np.isfinite(times)]
    if len(t) and not (np.diff(t) < -ORDER_SLACK).any():  # already in the order laps ended: keep it as given
        return lines, False
    frame = pd.DataFrame({"Driver": _column(rows, header, "Driver"),
                          "LapNumber": pd.to_numeric(pd.Series(_column(rows, header, "LapNumber"), dtype=object),
                                                     errors="coerce"),
                          "Time": times})
    order = session_order(frame)
    if not len(t) and (order == np.arange(len(order))).all():  # no Time, already in batch's order
        return lines, False
    return [lines[i] for i in order], True


def _session_times(rows: list[list[str]], header: list[str]) -> np.ndarray:
    """The session Time of each row in seconds (NaN where missing or unreadable; all NaN without the column)."""
    times = []
    for v in _column(rows, header, "Time"):  # '' everywhere without the column
        try:
            times.append(parse_duration(v))
        except ValueError:
            times.append(math.nan)
    return np.array(times, float)


def _one_session(lines: list[tuple[int, str]], rows: list[list[str]], header: list[str], where: str) -> None:
    """A finished file (its race picked) must hold one race: in the file's order (by driver or by
    Time), most drivers going back to a lap 1-2 they have run already, after a lap past
    SWITCH_AFTER, is another race's laps after the first's (files concatenated without a Race
    column): LapnetError naming the line where it starts. Replayed by session Time, the two would
    be interleaved. A race listed newest first (each driver's laps counting down) is one race:
    its laps 1-2 come last, but once each (it is replayed by session Time, `replay_order`)."""
    if "Driver" not in header or "LapNumber" not in header:
        return
    drivers = _column(rows, header, "Driver")
    laps = pd.to_numeric(pd.Series(_column(rows, header, "LapNumber"), dtype=object), errors="coerce").to_numpy(float)
    top: dict[str, float] = {}
    seen: set[tuple[str, float]] = set()  # (driver, lap 1 or 2) read so far
    again: dict[str, int] = {}  # driver -> the line where it went back to a lap 1-2 it had run
    for (lineno, _), drv, n in zip(lines, drivers, laps):
        if not drv or not math.isfinite(n):
            continue
        if n <= 2 and top.get(drv, 0) > SWITCH_AFTER and (drv, n) in seen and drv not in again:
            again[drv] = lineno
        elif drv not in again:
            top[drv] = max(top.get(drv, 0), n)
            if n <= 2:
                seen.add((drv, n))
    if len(again) >= 3 and 2 * len(again) > len(top):
        first = min(again.values())
        raise LapnetError(f"{where}, line {first}: another race's laps follow the first's ({len(again)} of the "
                          f"{len(top)} drivers go back to lap 1-2 after lap {SWITCH_AFTER}): live follows one race: "
                          "give each race its own file, or a Race column and --race NAME")


def _pick_race(lines: list[tuple[int, str]], rows: list[list[str]], header: list[str], race: str | None,
               where: str) -> tuple[list[tuple[int, str]], list[list[str]], str | None]:
    """The lines of the one race a complete file is replayed for: every line when it holds
    one race (by its Race column, or without one); `race` picks one of several (a line with
    an empty Race cell goes with any). Several races without `race`: LapnetError naming them."""
    if "Race" not in header:
        return lines, rows, None
    names = _column(rows, header, "Race")
    races = list(dict.fromkeys(n for n in names if n))
    if race is None:
        if len(races) > 1:
            shown = ", ".join(races[:5]) + (f", ... ({len(races)} in all)" if len(races) > 5 else "")
            raise LapnetError(f"{where} holds {len(races)} races (Race column: {shown}): live follows one race: "
                              f"pick one with --race (e.g. --race {races[0]})")
        return lines, rows, races[0] if races else None
    pick = race_match(race, races)
    if pick is None:
        raise LapnetError(f"--race {race}: no such race in {where} (races: {', '.join(races) or 'none named'})")
    keep = [i for i, n in enumerate(names) if n in ("", pick)]
    return [lines[i] for i in keep], [rows[i] for i in keep], pick


def _replay(stream: IO[str], cols: list[str], race: str | None, race_laps: int | None,
            file: str) -> tuple[list[tuple[int, str]], str | None, int | None, list[str], dict[str, str]]:
    """A finished FILE, read whole because it can be: the lines of its one race (`race` picks
    it), that race's length (`file_race_laps`) unless `race_laps` is given, the lines in the order
    the laps ended (`replay_order`: FastF1's files list them driver by driver, a feed by Time),
    the notes saying what was read from the file, and the relabelling of its absolute compound
    names (`_file_relabel`); (lines, race, race_laps, notes, relabel)."""
    lines, rows = file_lines(stream)
    keep = [i for i, (n, _) in enumerate(lines) if not _header_again(rows[i], cols, file, n)]  # files concatenated
    lines, rows = [lines[i] for i in keep], [rows[i] for i in keep]
    lines, rows, current = _pick_race(lines, rows, cols, race, file)
    _one_session(lines, rows, cols, file)
    notes = []
    relabel = _file_relabel(rows, cols, file, current or Path(file).stem, notes)
    if race_laps is None:
        race_laps = file_race_laps(rows, cols)  # a finished race: its length is in the file
        if race_laps is not None:
            of = f"the last lap of race {current}" if race is not None else "the file's last lap"
            notes.append(f"lapnet: race length {race_laps} laps, {of} (--race-laps overrides)")
    timed = bool(np.isfinite(_session_times(rows, cols)).any())
    lines, moved = replay_order(lines, rows, cols)
    if moved and timed:
        notes.append(f"lapnet: {file} lists laps in another order than they ended: replayed by session Time, "
                     "as a live feed gives them")
    elif moved:
        notes.append(f"lapnet: {file} has no session Time: replayed lap by lap (drivers by name within a lap), "
                     "as batch commands order its laps")
    return lines, current, race_laps, notes, relabel


def _file_relabel(rows: list[list[str]], header: list[str], file: str, race: str, notes: list[str]) -> dict[str, str]:
    """A finished file's race named with Pirelli's absolute compounds (2018's ULTRASOFT, C1-C5):
    relabelled by the whole race's compounds, as batch commands do (`io.relabel_absolute`, with
    its warning added to `notes`); {} when it names none (a stream cannot: `_live_compound`).

    Raises:
        LapnetError: names of two scales, or more than three dry compounds, as batch refuses them.
    """
    from lapnet.race.io import relabel_absolute, relabel_note

    names = {S.COMPOUND_ALIASES.get(c.upper(), c.upper()) for c in _column(rows, header, "Compound")
             if c.lower() not in MISSING_STRINGS}
    if not names & S.ABSOLUTE_ONLY:
        return {}
    try:
        mapping = relabel_absolute(n for n in names if n in S.COMPOUNDS or n in S.ABSOLUTE_ONLY)
    except LapnetError as e:
        raise LapnetError(f"{file}: race '{race}': {e}") from None
    notes.append(f"lapnet: warning: {relabel_note(file, race, mapping)}")
    return mapping
