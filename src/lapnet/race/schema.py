"""The lap-table schema: FastF1 `Laps` column names with the dtypes lapnet normalises them to.

One row is one lap of one driver in one race. Column names are FastF1's, so
`session.laps` from FastF1 (or its `to_csv()` export) works unchanged. lapnet stores every
duration as float SECONDS (FastF1 uses `timedelta64`): arithmetic, NumPy and torch then need
no conversion, and a missing time is NaN.

`SCHEMA` maps each known column to the dtype `read_laps` guarantees ('float64', 'bool' or
'str' — an object column holding only Python `str`). A test enforces it, FastF1 style.
Columns not listed (DriverNumber, SpeedI1, LapStartDate, ...) pass through untouched.

TrackStatus codes (FastF1): '1' green, '2' yellow, '4' safety car, '5' red flag, '6' VSC
deployed, '7' VSC ending. A lap's status is the concatenation of the codes seen during the
lap ('24', '267'); FastF1 versions concatenate differently ('21' vs '2'), so test for a
code with `code in status`, never by equality.
"""

from __future__ import annotations

# Durations, converted to float seconds (NaN when missing).
TIME_COLUMNS: tuple[str, ...] = (
    "Time",
    "LapTime",
    "PitOutTime",
    "PitInTime",
    "Sector1Time",
    "Sector2Time",
    "Sector3Time",
    "Sector1SessionTime",
    "Sector2SessionTime",
    "Sector3SessionTime",
    "LapStartTime",
)

# Counters FastF1 stores as float so that they may be NaN.
FLOAT_COLUMNS: tuple[str, ...] = ("LapNumber", "Stint", "TyreLife", "Position")

# Booleans and the value used when the column is absent or a cell is missing.
BOOL_DEFAULTS: dict[str, bool] = {
    "FreshTyre": False,
    "Deleted": False,
    "FastF1Generated": False,
    "IsAccurate": True,  # a plain lap table without FastF1's flag: trust its laps
}
# A missing cell in a present IsAccurate column means FastF1 could not vouch for the lap.
BOOL_MISSING_CELL: dict[str, bool] = {**BOOL_DEFAULTS, "IsAccurate": False}

STR_COLUMNS: tuple[str, ...] = ("Driver", "Team", "Compound", "TrackStatus", "Race")
OPTIONAL_STR_COLUMNS: tuple[str, ...] = ("DriverNumber",)  # FastF1 keeps car numbers as str

# Simulator truth (absent from real data); passed through with these dtypes when present.
TRUTH_FLOAT_COLUMNS: tuple[str, ...] = ("FuelLoad", "TyreTemp", "GapToLeader", "TrueDegradation", "OracleLapTime")
TRUTH_STR_COLUMNS: tuple[str, ...] = ("Phase",)

REQUIRED_COLUMNS: tuple[str, ...] = ("Driver", "LapNumber", "LapTime")

DRY_COMPOUNDS: tuple[str, ...] = ("SOFT", "MEDIUM", "HARD")
WET_COMPOUNDS: tuple[str, ...] = ("INTERMEDIATE", "WET")
COMPOUNDS: tuple[str, ...] = DRY_COMPOUNDS + WET_COMPOUNDS + ("UNKNOWN",)
# FastF1 spellings that mean "we do not know" and become UNKNOWN.
COMPOUND_ALIASES: dict[str, str] = {"": "UNKNOWN", "NAN": "UNKNOWN", "NONE": "UNKNOWN", "TEST_UNKNOWN": "UNKNOWN"}

# Absolute dry-compound names, softest first: Pirelli's 2018 names (FastF1 reports them for
# 2018 races) and its C-numbers (C6 softest, C0 hardest). A race is given three of them; since
# 2019 they are named by their order in the race, which is what the models learn: SOFT,
# MEDIUM, HARD. `io.read_laps` relabels them race by race. When a race used only two
# neighbours, the third is taken to be the one races of that era mostly left aside: in 2018
# the hardest (races ran the two softest), in the C-number era the softest (MEDIUM and HARD).
ABSOLUTE_DRY_COMPOUNDS: tuple[tuple[str, ...], ...] = (
    ("HYPERSOFT", "ULTRASOFT", "SUPERSOFT", "SOFT", "MEDIUM", "HARD", "SUPERHARD"),
    ("C6", "C5", "C4", "C3", "C2", "C1", "C0"),
)
ABSOLUTE_PAIR: tuple[tuple[str, str], ...] = (("SOFT", "MEDIUM"), ("MEDIUM", "HARD"))  # per scale, as above
ABSOLUTE_ONLY: frozenset[str] = frozenset(
    c for scale in ABSOLUTE_DRY_COMPOUNDS for c in scale if c not in DRY_COMPOUNDS
)  # names that can only be absolute: a race holding one is relabelled

TRACK_STATUS_CODES = frozenset("1234567")
NEUTRALISED_CODES = frozenset("4567")  # SC, red flag, VSC, VSC ending: the pace is not racing pace
# the field runs slowly behind a safety car or VSC, so a stop costs less time than at racing pace; a red
# flag (5) is left out: the race stops, and tyres are changed in the pit lane for free, no stop needed
SLOW_RUNNING_CODES = frozenset("467")
SC_CODE, VSC_CODE = "4", "6"  # a safety car deployed; a VSC deployed ('7', VSC ending, follows one)
YELLOW_CODE = "2"
RED_CODE = "5"
# sanity bounds of a lap table: the longest F1 races have run 87 laps; a lap timed across a
# red-flag suspension can last an hour or more, never six (a race day is capped at three or four)
MAX_LAP_NUMBER = 1000
MAX_LAP_SECONDS = 6 * 3600.0  # LapTime and the sector times (durations)
# session times (Time, LapStartTime, PitInTime, PitOutTime, SectorNSessionTime) run from the session's start
# (FastF1's '0 days 01:50:40'): the 15 races of 2023 end by 3.1 hours, a race day with its longest
# suspensions by 5; a day or more is a corrupted clock
MAX_SESSION_SECONDS = 24 * 3600.0
# counters: FastF1 counts stints from 1 (the 15 races: at most 6), positions from 1 (at most 20; grids
# have had at most 26 starters), and TyreLife in laps run on the set, practice included (at most 68)
MAX_STINT = 30
MAX_POSITION = 40
MAX_TYRE_LIFE = 200

PHASES: tuple[str, ...] = ("push", "conserve", "pit_window")

# Columns `clean_laps` adds (all bool).
MASK_COLUMNS: tuple[str, ...] = ("InLap", "OutLap", "Restart", "Neutralised", "Yellow", "HasTime", "Accurate", "Green", "Wet", "Scored")

SCHEMA: dict[str, str] = {
    **{c: "float64" for c in TIME_COLUMNS},
    **{c: "float64" for c in FLOAT_COLUMNS},
    **{c: "bool" for c in BOOL_DEFAULTS},
    **{c: "str" for c in STR_COLUMNS},
    **{c: "str" for c in OPTIONAL_STR_COLUMNS},
    **{c: "float64" for c in TRUTH_FLOAT_COLUMNS},
    **{c: "str" for c in TRUTH_STR_COLUMNS},
}
"""Column -> dtype after `read_laps` ('str' = object column of Python str, never NaN)."""

CLEAN_SCHEMA: dict[str, str] = {**SCHEMA, **{c: "bool" for c in MASK_COLUMNS}}
"""Column -> dtype after `clean_laps` (the schema plus the mask columns)."""

# Columns always present after read_laps (the others only when the source had them).
ALWAYS_PRESENT: tuple[str, ...] = (
    REQUIRED_COLUMNS + ("Time", "PitOutTime", "PitInTime", "LapStartTime")
    + ("Stint", "TyreLife", "Position") + tuple(BOOL_DEFAULTS) + ("Team", "Compound", "TrackStatus", "Race")
)
