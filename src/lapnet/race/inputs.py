"""The laps a race command reads, and the sequences its nets read from them.

    laps, report = load_laps(["2023_italian_R.csv"])  # read and cleaned (`lapnet.race.clean`)
    seq, used = race_sequences(laps, race_length="file")  # used: race -> the length featurised

`load_laps` refuses tables with no Scored lap at all; `race_sequences` featurises each race at its
length (raised to the table's last lap when given shorter) and warns about Scored laps too slow
to be true; `sprint_races` finds the sprint-length races, which predict, pit-now and live note
(`sprint_note`). Train, eval, predict, pit-now and the gates all start here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lapnet.errors import LapnetError
from lapnet.race.features import FEATURES, RACE_SECONDS, Sequences, build_sequences


def load_laps(sources: Any) -> tuple[pd.DataFrame, Any]:
    """Read and clean lap tables: paths, a DataFrame or a FastF1 Laps (one or several).

    Raises:
        LapnetError: unreadable tables, a dict or another type that is none of these
            (`io.as_sources`), or no Scored (green, accurate) lap at all.
    """
    from lapnet.race.clean import clean_laps
    from lapnet.race.io import as_sources, read_laps, read_many

    if isinstance(sources, (str, Path, pd.DataFrame)):
        df = read_laps(sources)
    else:
        sources = as_sources(sources)  # a dict is refused, not read as its keys
        if not sources:
            raise LapnetError("no lap tables given")
        df = read_many(sources)
    laps, report = clean_laps(df)
    if len(laps) == 0 or not laps["Scored"].any():
        raise LapnetError("no usable green laps: every lap is missing a time, inaccurate, neutralised, wet, or an in/out-lap")
    return laps, report


def subset_sequences(seq: Sequences, idx: np.ndarray) -> Sequences:
    """The sequences `idx` of `seq`."""
    kw = {name: (getattr(seq, name)[idx] if name != "keys" else [seq.keys[i] for i in idx]) for name in Sequences.__dataclass_fields__}
    return Sequences(**kw)


def check_race_length(race_length: Any) -> None:
    """Refuse (LapnetError) a `race_length` that is not "file", "estimate" or a whole number of laps
    of at least 1, as --race-laps refuses it: a bool is an int to Python (True was taken as a
    1-lap race), and 0 or -3 as a length shorter than the table (its last lap, with a warning)."""
    if isinstance(race_length, str):
        ok = race_length in ("file", "estimate")
    else:
        ok = isinstance(race_length, (int, np.integer)) and not isinstance(race_length, bool) and race_length >= 1
    if not ok:
        raise LapnetError(f"race_length: a whole number of laps (at least 1), 'file' or 'estimate', got {race_length!r}")


def race_sequences(laps: pd.DataFrame, race_length: int | str = "file") -> tuple[Sequences, dict[str, int]]:
    """`build_sequences` for eval and predict, and the race length each race was featurised with.

    A length given shorter than a race's table (`--race-laps 20` on a 51-lap race) would push
    the race fraction past 1 and the laps left below 0: that race's length is raised to its last
    lap (as "file" takes it), with a warning naming the race, the given and the used lengths.

    Returns:
        (the sequences, race -> laps used: the table's last lap for "file", the given number
        (or the raised one), and for "estimate" the estimate the featuriser ended with).
    """
    from lapnet.race.features import race_laps

    check_race_length(race_length)
    race_col = laps["Race"] if "Race" in laps.columns else pd.Series("race", index=laps.index)
    last = {str(race): race_laps(g) for race, g in laps.groupby(race_col, sort=False)}
    per_race: dict[str, int | str] = {race: race_length for race in last}
    if isinstance(race_length, (int, np.integer)) and not isinstance(race_length, bool):
        for race, n in last.items():
            if n > race_length:
                warnings.warn(f"race '{race}': --race-laps {race_length} is shorter than its table ({n} laps): "
                              f"using {n}")
                per_race[race] = "file"
    seq = build_sequences(laps, per_race)
    _warn_slow_scored(seq)
    used = {}
    frac = FEATURES.index("lap_frac")
    for race in last:
        if per_race[race] == "file":
            used[race] = last[race]
        elif per_race[race] != "estimate":
            used[race] = int(per_race[race])
        else:  # the featuriser's last word: lap / lap_frac on the race's highest lap
            idx = [i for i, k in enumerate(seq.keys) if str(k[0]) == race]
            ln = np.where(np.isfinite(seq.lap_number[idx]), seq.lap_number[idx], -1.0)  # (n, T)
            i, t = np.unravel_index(int(ln.argmax()), ln.shape)
            f = float(seq.x[idx[i], t, frac])
            used[race] = int(round(ln[i, t] / f)) if f > 0 else last[race]
    return seq, used


SLOW_SCORED = 3.0  # a Scored lap this many reference laps long is warned (as `race live` warns it, lap by lap)
# A sprint is a third of a Grand Prix's distance (100 km against 305): about 30 minutes at green-flag pace (a 2023
# sprint: 24 laps of Austria's 71.4 s, 29 min), where the 15 real Grands Prix of 2023 run 74 (Monza) to 105 minutes
# (Singapore), their race length times their reference lap. A race shorter than half a Grand Prix
# (`features.RACE_SECONDS`, their median, 88 min) is taken for a sprint (`sprint_races`): no mandatory stop, so
# no two-compound rule, and a pit call learnt on Grands Prix.
SPRINT_SECONDS = RACE_SECONDS / 2


def sprint_races(seq: Sequences, used: dict[str, int]) -> dict[str, tuple[int, float]]:
    """The races of `seq` that are sprint-length (SPRINT_SECONDS): race -> (its length in laps,
    minutes at its reference lap). `used`: each race's length as `race_sequences` featurised it
    (the table's last lap, the --race-laps given, or the estimate from the race's pace, which is
    a Grand Prix's by construction)."""
    out = {}
    valid = np.arange(seq.x.shape[1])[None, :] < seq.lengths[:, None]
    for race, laps in used.items():
        idx = [i for i, k in enumerate(seq.keys) if str(k[0]) == race]
        refs = seq.ref[idx][valid[idx]]
        refs = refs[np.isfinite(refs)]
        if not len(refs):
            continue
        seconds = float(laps) * float(np.median(refs))
        if seconds < SPRINT_SECONDS:
            out[race] = (int(laps), seconds / 60.0)
    return out


def sprint_note(race: str | None, laps: int, minutes: float) -> str:
    """The note of predict, pit-now and live (`race` None: "the race") on a sprint-length race (`sprint_races`)."""
    return (f"{'the race' if race is None else f'race {race!r}'} is sprint-length ({laps} laps, {minutes:.0f} min at its reference lap; the Grands Prix of "
            f"2023 run 74 min or more): a sprint has no mandatory stop, and the pit call was learnt on Grands Prix; "
            "if this is a Grand Prix still running, give its length with --race-laps")


def _warn_slow_scored(seq: Sequences) -> None:
    """Warn once about Scored laps more than SLOW_SCORED times the race's reference lap (at that
    lap): a timing error FastF1 called accurate. They are used as `race live` uses them (the
    stint's forecasts start from them), so batch and live stay equal; the warning says where."""
    slow = seq.origin_scored & (seq.lap_time > SLOW_SCORED * seq.ref)  # (N, T); NaN compares False
    if not slow.any():
        return
    i, t = np.nonzero(slow)
    shown = ", ".join(f"{seq.keys[a][1]} lap {seq.lap_number[a, b]:g} ({seq.lap_time[a, b]:.3f} s)" for a, b in zip(i[:3], t[:3]))
    more = f" and {len(i) - 3} more" if len(i) > 3 else ""
    warnings.warn(f"{len(i)} Scored lap{'s' if len(i) > 1 else ''} more than {SLOW_SCORED:g} times the race's reference "
                  f"lap, yet IsAccurate: {shown}{more}: timing errors? used as they are (the stint's forecasts start "
                  "from them), as `lapnet race live` uses them")
