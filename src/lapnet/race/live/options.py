"""`lapnet race live`'s options checked: --poll, --reorder and --catch-up before anything is read
(one LapnetError each), and --driver (`DriverFilter`), checked against the grid once the field has
crossed the line (`_grid_check`) and again when the stream ends (`_end_check`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from lapnet.errors import LapnetError
from lapnet.race.live.state import LiveRace


MAX_POLL = 3600.0  # seconds: --poll above it would overflow the wait's deadline for nothing
MAX_REORDER = 600.0  # seconds: --reorder holds a lap at most this long (ten minutes: no feed is that late)
CATCH_UP = ("print", "mark", "skip")  # --catch-up: the laps already in a followed FILE when live started


def check_poll(poll: Any) -> None:
    """--poll: a finite number of seconds from 0.01 to MAX_POLL, else one LapnetError."""
    if not (isinstance(poll, (int, float)) and math.isfinite(poll) and 0.01 <= poll <= MAX_POLL):
        shown = f"{poll:g}" if isinstance(poll, (int, float)) else repr(poll)
        raise LapnetError(f"--poll: seconds between reads of a growing file, a finite number of at least 0.01, "
                          f"at most {MAX_POLL:g}, got {shown}")


def check_reorder(reorder: Any) -> None:
    """--reorder: 0 (off), or a finite number of seconds from 0.01 (a pipe waits for input that
    long: less would spin a core while the feed is quiet, as --poll's floor) to MAX_REORDER, else
    one LapnetError."""
    if not (isinstance(reorder, (int, float)) and not isinstance(reorder, bool) and math.isfinite(reorder)
            and (reorder == 0 or 0.01 <= reorder <= MAX_REORDER)):
        shown = f"{reorder:g}" if isinstance(reorder, (int, float)) else repr(reorder)
        raise LapnetError(f"--reorder: seconds of session Time a lap is held to be put in the order laps ended, 0 "
                          f"(off) or a finite number from 0.01 to {MAX_REORDER:g}, got {shown}")


def check_catch_up(catch_up: Any, follow: bool) -> None:
    """--catch-up: one of CATCH_UP, and anything but "print" only with --follow; else one LapnetError."""
    if catch_up not in CATCH_UP:
        raise LapnetError(f"--catch-up: one of {', '.join(CATCH_UP)}, got {catch_up!r}")
    if catch_up != "print" and not follow:
        raise LapnetError(f"--catch-up {catch_up}: for --follow (the laps already in the followed FILE when live "
                          "started); stdin and a finished FILE have no such laps to tell apart")


class DriverFilter:
    """`lapnet race live --driver`: which drivers' lines to print.

    Args:
        value: comma-separated three-letter codes in any case (`ver,HAM`) or FastF1 driver
            numbers (`1,44`, matched through the DriverNumber column), or an iterable of them
            (`io.parse_drivers`, as `race predict` reads them).

    Raises:
        LapnetError: nothing in `value`.
    """

    def __init__(self, value: str | Any):
        from lapnet.race.io import parse_drivers

        self.tokens = parse_drivers(value)  # predict's rule: codes upper-case, numbers as `io.car_number` writes them
        self.codes = {t for t in self.tokens if not t.isdigit()}
        self.numbers = {t for t in self.tokens if t.isdigit()}
        self.warned = False  # the drivers still missing have been said

    def shows(self, driver: str, live: LiveRace) -> bool:
        return driver.upper() in self.codes or live.number_of.get(driver) in self.numbers

    def missing(self, live: LiveRace) -> list[str]:
        """The codes and numbers that match no driver with a lap so far."""
        found = {d.upper() for d in live.drivers} | {live.number_of.get(d) for d in live.drivers}
        return [t for t in self.tokens if t not in found]

    def field(self, live: LiveRace) -> str:
        """The drivers with a lap so far (with their numbers when numbers were asked for)."""
        from lapnet.race.io import driver_order

        return ", ".join(f"{d} ({live.number_of[d]})" if self.numbers and live.number_of.get(d, d) != d else d
                         for d in driver_order(live.drivers))

    def non_starters(self, live: LiveRace, missing: list[str]) -> list[str]:
        """Those of `missing` that name a driver whose only rows were skipped (no timed lap)."""
        return sorted(d for d in live.first_pass if d not in live.drivers
                      and (d.upper() in missing or live.number_of.get(d) in missing))

    def not_seen(self, live: LiveRace, missing: list[str]) -> str:
        """What the refusal or warning for `missing` begins with, the same once the grid is known
        (`_grid_check`) and when the stream ends: '--driver XYZ: no lap in the stream', naming
        any that is a non-starter (a driver whose rows were all skipped is no typo)."""
        what = f"--driver {','.join(missing)}: no lap in the stream"
        gone = self.non_starters(live, missing)
        return what + (f" ({', '.join(gone)}: no timed lap: did not start, or out on lap 1)" if gone else "")


def _grid_check(wanted: DriverFilter, live: LiveRace, say: Callable[[str], None]) -> None:
    """Once the field has crossed the line (`LiveRace.grid_closed`): a --driver that is on no
    row is a typo, said now rather than when the stream ends (never, with --follow). When
    the grid's positions show cars without a row yet, or one car alone has crossed the line,
    it may still join: warned, not refused (the stream's end decides)."""
    missing = wanted.missing(live)
    if not missing:
        return
    what, gone = wanted.not_seen(live, missing), wanted.non_starters(live, missing)
    positions = [p for p in live.first_pass.values() if math.isfinite(p)]
    absent = int(max(positions)) - len(live.first_pass) if positions else 0
    if (absent > 0 or len(live.first_pass) < 2) and len(gone) < len(missing):
        why = (f"the grid's positions show {absent} car(s) without a row yet" if absent > 0
               else "one car alone has crossed the line (a feed listed driver by driver?)")
        say(f"lapnet: warning: {what} yet: not on the grid (drivers: {wanted.field(live)}), but {why}: following "
            "the stream in case it joins")
        return
    if len(missing) == len(wanted.tokens):
        raise LapnetError(f"{what}: not on the grid (drivers: {wanted.field(live)})")
    from lapnet.race.io import driver_order

    shown = ", ".join(f"{d} ({live.number_of[d]})" if wanted.numbers and live.number_of.get(d, d) != d else d
                      for d in driver_order(live.drivers) if wanted.shows(d, live))
    say(f"lapnet: warning: {what}: not on the grid (drivers: {wanted.field(live)}); printing {shown} only")
    wanted.warned = True


def _end_check(wanted: DriverFilter | None, live: LiveRace | None, n_out: int, say: Callable[[str], None]) -> list[str]:
    """The --driver items that matched no lap by the stream's end, returned. Those the grid check
    let through (a car may yet have joined) are settled here: all of them missing is an error,
    some of them a warning (unless the grid check already said so)."""
    if wanted is None or live is None or not n_out:
        return []
    missing = wanted.missing(live)
    if missing:
        what = f"{wanted.not_seen(live, missing)} (drivers: {wanted.field(live)})"
        if len(missing) == len(wanted.tokens):
            raise LapnetError(what)
        if not wanted.warned:
            say(f"lapnet: warning: {what}")
    return missing
