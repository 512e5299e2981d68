"""Fetch one real race's lap table with FastF1 and write it as lapnet reads it.

    info = fetch_race(2023, "Monza", out="monza.csv")           # the Italian GP race
    info = fetch_race(2024, 6, "S", out="miami_sprint.parquet")  # round 6's sprint

The file is FastF1's own `Session.laps` written with `to_csv(index=False)` (or Parquet):
the same 31 columns, in FastF1's order, as the races in ../shared/data/f1, so
`lapnet.race.io.read_laps` and everything after it take it unchanged.

FastF1 (the optional extra `lapnet[f1]`) is imported only here, when called. It makes
exactly these calls: `fastf1.Cache.configure(cache_dir=...)` when a cache folder is given
(`Cache.enable_cache(...)` on FastF1 older than 3.9, which lacks `configure`),
`fastf1.get_session(year, event, "R" | "S")`, and
`Session.load(laps=True, telemetry=False, weather=False, messages=True)` (the race-control
messages are what mark deleted laps; lap timing, track status, positions and the scheduled
lap count come with `laps=True`). No telemetry or weather is downloaded.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError

__all__ = ["fetch_race", "race_session", "PIP_HINT"]

PIP_HINT = "pip install 'lapnet[f1]' (in a checkout of lapnet: pip install -e '.[f1]')"

# lapnet forecasts races: only FastF1's race-like sessions, by its abbreviations and names.
_SESSIONS = {"r": ("R", "Race"), "race": ("R", "Race"), "s": ("S", "Sprint"), "sprint": ("S", "Sprint")}

# FastF1 has lap timing (the F1 live-timing archive) from the 2018 season on.
FIRST_YEAR = 2018

SPRINT_NOTE = ("a sprint has no mandatory pit stop: the lap-time forecasts apply, but the pit call "
               "(learnt from races with stops) is not meant for it")


def race_session(session: str) -> tuple[str, str]:
    """FastF1's abbreviation and name of a race-like session ('R'/'Race', 'S'/'Sprint').

    Raises:
        LapnetError: any other session (practice, qualifying, sprint qualifying, a number).
    """
    key = str(session).strip().casefold()
    if key not in _SESSIONS:
        raise LapnetError(f"session {session!r}: lapnet forecasts races, fetch R (Race) or S (Sprint), "
                          "not practice or qualifying")
    return _SESSIONS[key]


def fetch_race(year: int, event: str | int, session: str = "R", *, out: str | Path,
               cache: str | Path | None = None, force: bool = False) -> dict[str, Any]:
    """Download one race (or sprint) with FastF1 and write its lap table to `out`.

    Everything that can be checked without the network (session, year, event, `out`,
    `cache`) is checked first; nothing is written unless FastF1 returned laps that
    `read_laps` and `clean_laps` accept, and the write is atomic.

    Args:
        year: championship year (2018 or later: FastF1's lap timing starts there).
        event: a name FastF1 matches loosely ('Monza', 'Italian Grand Prix') or a round number.
        session: 'R' / 'Race' or 'S' / 'Sprint' (case-insensitive).
        out: the lap table to write, .csv or .parquet.
        cache: FastF1's cache folder (created if missing); None: FastF1's default cache.
        force: overwrite an existing `out`.

    Returns:
        A JSON-ready dict: event, year, round, country, date (the session's day, UTC),
        session ('Race'/'Sprint'), drivers, rows, laps (highest LapNumber with a LapTime),
        scheduled_laps (FastF1's `total_laps`, or None), out, hint (how to give
        `lapnet race live` the race length), note (sprints only, else None) and warnings
        (FastF1's and `read_laps`'s, one line each).

    Raises:
        LapnetError: a session other than a race or sprint, a year before 2018, an empty
            event, an `out` that cannot be written (exists without `force`, wrong extension,
            no folder), fastf1 not installed, and any FastF1 or network failure, no lap
            data, or laps lapnet cannot read: one line naming year, event and session.
    """
    code, name = race_session(session)
    if isinstance(event, (bool, np.bool_)) or not isinstance(event, (str, int, np.integer)):
        raise LapnetError(f"event {event!r}: give a name ('Monza') or a round number")
    if isinstance(event, str):
        event = event.strip()
        if not event:
            raise LapnetError("event is empty: give a name ('Monza', 'Italian Grand Prix') or a round number")
    elif event < 1:
        raise LapnetError(f"event {event}: round numbers start at 1 (pre-season testing is not a race)")
    if isinstance(year, (bool, np.bool_)) or not isinstance(year, (int, np.integer)):
        raise LapnetError(f"year {year!r}: give a championship year such as 2023")
    if year < FIRST_YEAR:
        raise LapnetError(f"year {year}: FastF1 has lap timing from {FIRST_YEAR} on")
    year, event = int(year), (int(event) if not isinstance(event, str) else event)
    where = f"{year} {event!r} {name}" if isinstance(event, str) else f"{year} round {event} {name}"

    from lapnet.race.io import check_table_out

    out = check_table_out(out, force=force)  # before any download: never fetch what cannot be written
    try:
        import fastf1
    except ImportError:
        raise LapnetError(f"fetching races needs FastF1: {PIP_HINT}") from None
    cache, made = _check_cache(cache)  # created once FastF1 is there to use it
    try:
        return _fetch(fastf1, year, event, code, name, where, out, cache)
    except BaseException:
        if made is not None:  # the folder did not exist before this call: leave nothing behind
            shutil.rmtree(made, ignore_errors=True)
        raise


def _fetch(fastf1: Any, year: int, event: int | str, code: str, name: str, where: str, out: Path,
           cache: Path | None) -> dict[str, Any]:
    """`fetch_race` once its arguments are checked: load with FastF1, check, write."""
    said: list[str] = []
    with _fastf1_quiet(said):
        # only FastF1's own calls are wrapped: its errors, requests' and the socket's become one line;
        # an error in lapnet's code around them is a bug and must show as one
        try:
            if cache is not None:
                _use_cache(fastf1, cache)
            ses = fastf1.get_session(year, event, code)
        except Exception as e:
            raise LapnetError(f"{where}: FastF1 could not load it: {_cause(e, said)}") from None
        where = _where(ses, year, name, where)
        # 2021-22 named the sprint race 'Sprint Qualifying' (since 2024, the sprint's qualifying)
        race_like = ("Race", "Sprint") + (("Sprint Qualifying",) if year <= 2022 and code == "S" else ())
        if ses.name not in race_like:
            raise LapnetError(f"{where}: FastF1 gave the session {ses.name!r}, not a race or sprint")
        try:
            ses.load(laps=True, telemetry=False, weather=False, messages=True)
            laps = ses.laps
        except Exception as e:
            raise LapnetError(f"{where}: FastF1 could not load it: {_cause(e, said)}") from None
        scheduled = _scheduled(ses)

    frame = pd.DataFrame(laps)  # a plain frame: Laps carries a session reference Parquet cannot store
    if len(frame) == 0:
        raise LapnetError(f"{where}: FastF1 returned no laps{_last(said)}")
    timed = frame["LapTime"].notna() if "LapTime" in frame.columns else pd.Series(False, index=frame.index)
    if not timed.any():
        raise LapnetError(f"{where}: FastF1 returned {len(frame)} rows but no timed lap{_last(said)}")
    warned = _check_readable(frame, where)

    from lapnet.race.io import write_laps

    write_laps(frame, out)
    n_laps = _as_int(pd.to_numeric(frame.loc[timed, "LapNumber"], errors="coerce").max())
    length = scheduled or n_laps or "N"
    return {
        "event": str(_field(ses.event, "EventName") or event),
        "year": year,
        "round": _as_int(_field(ses.event, "RoundNumber")),
        "country": _as_str(_field(ses.event, "Country")),
        "date": _date(ses),
        "session": name,
        "drivers": int(frame["Driver"].nunique()),
        "rows": int(len(frame)),
        "laps": n_laps,
        "scheduled_laps": scheduled,
        "out": str(out),
        "hint": (f"lapnet race live RUN {out} takes the race length from the file; reading stdin or --follow, "
                 f"give it: --race-laps {length}"),
        "note": SPRINT_NOTE if name == "Sprint" else None,
        "warnings": list(dict.fromkeys([f"FastF1: {m}" for m in said] + warned)),
    }


def _check_cache(cache: str | Path | None) -> tuple[Path | None, Path | None]:
    """The cache folder, created if missing, and the outermost folder this call created (None
    when it existed): a fetch that fails removes what it made."""
    if cache is None:
        return None, None
    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise LapnetError(f"--cache {cache}: exists and is not a folder")
    made = next((p for p in reversed((cache, *cache.parents)) if not p.exists()), None)
    try:
        cache.mkdir(parents=True, exist_ok=True)  # FastF1 wants the folder to exist
    except OSError as e:
        raise LapnetError(f"--cache {cache}: cannot create it ({e.strerror or e})") from None
    return cache, made


def _use_cache(fastf1: Any, cache: Path) -> None:
    """`Cache.configure` (FastF1 3.9 deprecates `enable_cache` for it); `enable_cache` before 3.9."""
    if hasattr(fastf1.Cache, "configure"):
        fastf1.Cache.configure(cache_dir=str(cache))
    else:
        fastf1.Cache.enable_cache(str(cache))


@contextlib.contextmanager
def _fastf1_quiet(said: list[str]) -> Iterator[None]:
    """Hold back FastF1's console log (INFO lines on stderr) while it works; keep its
    warnings and errors in `said`, so that a failure is reported as one line with its cause."""

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(" ".join(record.getMessage().split()))

    root = logging.getLogger("fastf1")
    levels = [(h, h.level) for h in root.handlers]
    keep = _Keep(logging.WARNING)
    for h, _ in levels:
        h.setLevel(logging.CRITICAL + 1)
    root.addHandler(keep)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        root.removeHandler(keep)
        for h, level in levels:
            h.setLevel(level)
    said.extend(" ".join(str(w.message).split()) for w in caught if issubclass(w.category, UserWarning))


def _last(said: list[str]) -> str:
    return f" (FastF1 said: {said[-1]})" if said else ""


def _cause(e: Exception, said: list[str]) -> str:
    msg = " ".join(str(e).split()) or "no message"
    if len(msg) > 160:
        msg = msg[:157] + "..."
    cause = f"{type(e).__name__}: {msg}"
    if type(e).__name__ == "DataNotLoadedError":  # load() swallowed the failure and logged it
        cause = "no lap data"
    cause += _last(said)
    # Offline, FastF1 fails on the season schedule first; requests' errors are OSErrors.
    if isinstance(e, OSError) or "schedule" in msg.lower():
        cause += "; FastF1 needs the internet (or a cache folder that already holds this session)"
    return cause


def _where(ses: Any, year: int, name: str, fallback: str) -> str:
    """'2023 Italian Grand Prix Race' once FastF1 has matched the event."""
    event = _as_str(_field(getattr(ses, "event", None), "EventName"))
    return f"{year} {event} {name}" if event else fallback


def _field(event: Any, key: str) -> Any:
    try:
        return event[key]
    except (KeyError, TypeError, IndexError):
        return None


def _as_str(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or str(v) == "" else str(v)


def _as_int(v: Any) -> int | None:
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def _scheduled(ses: Any) -> int | None:
    """FastF1's `total_laps`: the race length planned, None when the timing feed lacks it."""
    try:
        return _as_int(ses.total_laps)
    except Exception:  # DataNotLoadedError, or an older FastF1 without the property
        return None


def _date(ses: Any) -> str | None:
    for v in (getattr(ses, "date", None), _field(getattr(ses, "event", None), "EventDate")):
        try:
            if v is not None and not pd.isna(v):
                return pd.Timestamp(v).date().isoformat()
        except (TypeError, ValueError):
            continue
    return None


def _check_readable(frame: pd.DataFrame, where: str) -> list[str]:
    """Read and clean the table as every lapnet command will, before writing it; return the
    warnings this raises (e.g. a column FastF1 left empty), one line each."""
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import read_laps

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            clean_laps(read_laps(frame, race="fetched"))
        except LapnetError as e:
            raise LapnetError(f"{where}: FastF1's laps are not a lap table lapnet reads: {e}") from None
    # read_laps names a DataFrame source by its type: say 'the fetched table' instead
    return [" ".join(str(w.message).split()).removeprefix("DataFrame: ") for w in caught
            if issubclass(w.category, UserWarning)]
