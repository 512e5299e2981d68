"""Lap-table loading: the declared schema, every validation error, FastF1 `Laps` input, fuzzing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lapnet.errors import LapnetError
from lapnet.race import schema as S
from lapnet.race.io import NotARaceWarning, read_laps, read_many

TINY = Path(__file__).parent / "data" / "race_tiny.csv"


def assert_schema(df: pd.DataFrame, schema: dict[str, str] = S.SCHEMA) -> None:
    """Every known column present has its declared dtype; str columns hold only str."""
    for col in S.ALWAYS_PRESENT:
        assert col in df.columns, col
    for col, kind in schema.items():
        if col not in df.columns:
            continue
        if kind == "str":
            assert df[col].dtype == object, col
            assert df[col].map(type).eq(str).all(), col
        else:
            assert str(df[col].dtype) == kind, (col, df[col].dtype)


def minimal(**cols) -> pd.DataFrame:
    base = {"Driver": ["VER", "VER", "HAM", "HAM"], "LapNumber": [1, 2, 1, 2], "LapTime": [95.0, 91.0, 96.0, 91.5], "Position": [1, 1, 2, 2]}
    base.update(cols)
    return pd.DataFrame(base)


def test_schema_tiny_csv():
    df = read_laps(TINY)
    assert_schema(df)
    assert df["Race"].eq("race_tiny").all()
    assert df.loc[0, "LapTime"] == pytest.approx(98.05)
    assert df.loc[0, "LapStartTime"] == pytest.approx(3600.0)
    assert set(df["TrackStatus"]) == {"1", "2", "24", "4", ""}


def test_schema_real_race(f1_data):
    df = read_laps(f1_data / "2023_italian_R.csv")
    assert_schema(df)
    assert len(df) == 967 and df["Race"].eq("2023_italian_R").all()
    # '0 days 00:01:27.905000' -> 87.905 s
    ver1 = df[(df.Driver == "VER") & (df.LapNumber == 1)].iloc[0]
    assert ver1["LapTime"] == pytest.approx(87.905)
    assert ver1["Sector2Time"] == pytest.approx(29.666)


def test_minimal_table_gets_defaults():
    df = read_laps(minimal())
    assert_schema(df)
    assert df["IsAccurate"].all() and not df["Deleted"].any() and not df["FreshTyre"].any()
    assert df["Compound"].eq("UNKNOWN").all() and df["TrackStatus"].eq("").all()
    assert df["Race"].eq("race").all() and np.isnan(df["Stint"]).all()


def test_durations_in_every_form_agree():
    forms = [
        [95.5, 91.25, 96.0, 91.5],
        ["0 days 00:01:35.500000", "0 days 00:01:31.250000", "0 days 00:01:36", "0 days 00:01:31.500000"],
        ["1:35.5", "1:31.25", "96", "91.5"],
        pd.to_timedelta([95.5, 91.25, 96.0, 91.5], unit="s"),
    ]
    for f in forms:
        df = read_laps(minimal(LapTime=f))
        np.testing.assert_allclose(df["LapTime"], [95.5, 91.25, 96.0, 91.5])


def test_track_status_stays_a_string():
    df = read_laps(minimal(TrackStatus=[24, 1, 267, np.nan]))
    assert list(df["TrackStatus"]) == ["24", "1", "267", ""]
    df = read_laps(minimal(TrackStatus=[24.0, 1.0, 4.0, 1.0]))
    assert list(df["TrackStatus"]) == ["24", "1", "4", "1"]


def test_pandas_index_column_is_dropped(tmp_path):
    p = tmp_path / "r.csv"
    minimal().to_csv(p)  # index=True: an 'Unnamed: 0' column comes back
    df = read_laps(p)
    assert "Unnamed: 0" not in df.columns and len(df) == 4


def test_csv_track_status_not_numeric(tmp_path):
    p = tmp_path / "r.csv"
    minimal(TrackStatus=["24", "1", "45", "1"]).to_csv(p, index=False)
    assert list(read_laps(p)["TrackStatus"]) == ["24", "1", "45", "1"]


def test_race_label_precedence(tmp_path):
    p = tmp_path / "monza.csv"
    minimal().to_csv(p, index=False)
    assert read_laps(p)["Race"].iloc[0] == "monza"
    assert read_laps(p, race="x")["Race"].iloc[0] == "x"
    assert read_laps(minimal(Race=["a"] * 4))["Race"].iloc[0] == "a"


def test_parquet_round_trip(tmp_path):
    df = read_laps(TINY)
    p = tmp_path / "tiny.parquet"
    df.to_parquet(p)
    back = read_laps(p)
    pd.testing.assert_frame_equal(back.drop(columns="Race"), df.drop(columns="Race"), check_dtype=True)
    assert back["Race"].iloc[0] == "race_tiny"  # the Race column wins over the stem


def test_fastf1_laps_object():
    fastf1_core = pytest.importorskip("fastf1.core")
    raw = pd.read_csv(TINY, dtype={"TrackStatus": str})
    for c in ("Time", "LapTime", "PitOutTime", "PitInTime", "LapStartTime"):
        raw[c] = pd.to_timedelta(raw[c])
    laps = fastf1_core.Laps(raw)
    a = read_laps(laps, race="race_tiny")
    b = read_laps(TINY)
    pd.testing.assert_frame_equal(a, b, check_dtype=True)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(drop="LapTime"), "missing required column.*LapTime"),
        (dict(LapTime=[95.0, -91.0, 96.0, 91.5]), "LapTime, row 2.*negative"),
        (dict(LapTime=[95.0, "fast", 96.0, 91.5]), "LapTime, row 2.*unparseable"),
        (dict(LapTime=[95.0, np.inf, 96.0, 91.5]), "LapTime, row 2.*infinite"),
        (dict(Compound=["SOFT", "SOFT", "MEDIUM", "SUPERGRIP"]), "Compound, row 4.*unknown compound"),
        (dict(LapNumber=[1, 1, 1, 2]), "duplicate lap: driver VER lap 1"),
        (dict(LapNumber=[1, 2.5, 1, 2]), "LapNumber, row 2"),
        (dict(LapNumber=[0, 2, 1, 2]), "LapNumber, row 1"),
        (dict(TrackStatus=["1", "9", "1", "1"]), "TrackStatus, row 2"),
        (dict(Driver=["VER", None, "HAM", "HAM"]), "Driver, row 2"),
        (dict(IsAccurate=["True", "maybe", "True", "True"]), "IsAccurate, row 2"),
        (dict(TyreLife=[1, -2, 1, 2]), "TyreLife, row 2"),
    ],
)
def test_validation_errors(change, match):
    df = minimal(**{k: v for k, v in change.items() if k != "drop"})
    if "drop" in change:
        df = df.drop(columns=change["drop"])
    with pytest.raises(LapnetError, match=match) as e:
        read_laps(df)
    assert "\n" not in str(e.value)


def test_csv_errors_name_the_file_line(tmp_path):
    df = minimal(LapTime=[95.0, 96.0, "1:3x.2", 91.5])
    path = tmp_path / "laps.csv"
    df.to_csv(path, index=False)
    with pytest.raises(LapnetError, match=r"LapTime, line 4: unparseable time") as e:
        read_laps(path)
    assert "1:3x.2" in path.read_text().splitlines()[3]  # line 4 of the file is the bad one
    df = minimal(LapNumber=[1, 2, 3, 2], Driver=["VER", "VER", "VER", "VER"])
    df.to_csv(path, index=False)
    with pytest.raises(LapnetError, match=r"duplicate lap: driver VER lap 2 .*\(lines 3 and 5\)"):
        read_laps(path)


def test_mixed_races_refused():
    one = minimal()
    two = pd.concat([one, one], ignore_index=True)
    with pytest.raises(LapnetError, match="several races.*split"):
        read_laps(two)
    two["Race"] = ["a"] * 4 + ["b"] * 4  # a Race column tells them apart
    assert read_laps(two)["Race"].nunique() == 2


def test_read_many_refuses_same_label(tmp_path):
    minimal().to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "x").mkdir()
    minimal().to_csv(tmp_path / "x" / "a.csv", index=False)
    with pytest.raises(LapnetError, match="race 'a' appears in both"):
        read_many([tmp_path / "a.csv", tmp_path / "x" / "a.csv"])
    with pytest.raises(LapnetError, match="no lap tables"):
        read_many([])


def test_file_errors(tmp_path):
    with pytest.raises(LapnetError, match="no such file"):
        read_laps(tmp_path / "nope.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(LapnetError, match="empty file"):
        read_laps(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("Driver,LapNumber,LapTime\n")
    with pytest.raises(LapnetError, match="no laps"):
        read_laps(tmp_path / "h.csv")
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LapnetError, match="not a readable parquet"):
        read_laps(tmp_path / "b.parquet")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(LapnetError, match="unknown lap-table format"):
        read_laps(tmp_path / "x.json")


def test_practice_session_warns_not_error():
    n = 30
    df = pd.DataFrame(
        {
            "Driver": ["VER"] * n,
            "LapNumber": np.arange(1, n + 1),
            "LapTime": np.full(n, 90.0),
            "PitInTime": [1000.0 + i if i % 4 == 3 else np.nan for i in range(n)],
            "Position": np.nan,
        }
    )
    with pytest.warns(NotARaceWarning, match="practice or qualifying"):
        out = read_laps(df)
    assert len(out) == n


def test_real_race_does_not_warn(f1_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_laps(f1_data / "2023_sao_paulo_R.csv")


# --- fuzzing: bad values raise LapnetError, never another exception ----------------------

_cell = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 200),
    st.sampled_from(["", "nan", "x", "24", "1:31.2", "0 days 00:01:31", "-1", "True", "SOFT", "soft", "WET", "1e400"]),
    st.booleans(),
)
_columns = st.sampled_from(["Driver", "LapNumber", "LapTime", "TrackStatus", "Compound", "TyreLife", "IsAccurate", "PitInTime", "Stint", "Position"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 5),
    cols=st.lists(_columns, min_size=1, max_size=6, unique=True),
    data=st.data(),
)
def test_fuzz_read_laps(n, cols, data):
    frame = pd.DataFrame({c: data.draw(st.lists(_cell, min_size=n, max_size=n)) for c in cols})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotARaceWarning)
        try:
            out = read_laps(frame)
        except LapnetError as e:
            assert "\n" not in str(e)
            return
    assert_schema(out)
    assert (out["LapTime"].isna() | (out["LapTime"] > 0)).all()


@pytest.mark.parametrize("change, match", [
    (dict(LapTime=[95.0, 0.0, 96.0, 91.5]), r"LapTime, row 2: negative or zero lap time \(0.0\)"),
    (dict(LapTime=[95.0, 1e20, 96.0, 91.5]), r"LapTime, row 2: a lap time over 6 hours \(1e\+20\)"),
    (dict(LapTime=[95.0, "-0 days 00:01:30", 96.0, 91.5]), r"LapTime, row 2: negative or zero lap time \(-90.0\)"),
    (dict(Time=[95.0, "-00:01:30", 196.0, 191.5]), r"Time, row 2: negative time \(-90.0\)"),
    (dict(Time=[95.0, 86400.5, 196.0, 191.5]), r"Time, row 2: a session time over 24 hours"),
    (dict(Sector1Time=[30.0, 1e9, 30.0, 30.0]), r"Sector1Time, row 2: a sector time over 6 hours"),
    (dict(Stint=[1.0, 1e308, 1.0, 1.0]), r"Stint, row 2: stints are whole numbers from 1 to 30 \(1e\+308\)"),
    (dict(Stint=[1.0, 0.0, 1.0, 1.0]), r"Stint, row 2: stints are whole numbers"),
    (dict(Stint=[1.0, 1.5, 1.0, 1.0]), r"Stint, row 2: stints are whole numbers"),
    (dict(Position=[1, -3, 2, 2]), r"Position, row 2: positions are whole numbers from 1 to 40 \(-3.0\)"),
    (dict(Position=[1, 41, 2, 2]), r"Position, row 2: positions are whole numbers"),
    (dict(TyreLife=[1, 201, 1, 2]), r"TyreLife, row 2: tyre life is 0 to 200 laps \(201.0\)"),
])
def test_implausible_values_are_refused_in_one_line(change, match):
    df = minimal(**change)
    with pytest.raises(LapnetError, match=match) as e:
        read_laps(df)
    assert "\n" not in str(e.value)


def test_the_bounds_keep_every_lap_of_the_real_races_and_counters_at_their_edges(f1_data):
    """No lap of the 15 real races is refused (red-flag laps, Mexico's and Sao Paulo's suspensions
    included), nor a counter at a bound; a missing value is never refused here."""
    for path in sorted(f1_data.glob("*.csv")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert len(read_laps(path)) > 800
    ok = read_laps(minimal(Stint=[1, 30, np.nan, 2], Position=[1, 40, np.nan, 2], TyreLife=[0, 200, np.nan, 1],
                           Time=[0.0, 86400.0, np.nan, 200.0]))
    assert ok["Stint"].tolist()[:2] == [1.0, 30.0] and ok["TyreLife"].tolist()[:2] == [0.0, 200.0]


def test_value_problem_is_the_batch_rule_for_one_lap():
    from lapnet.race.io import value_problem

    assert value_problem({"LapNumber": 3.0, "LapTime": 0.0}) == ("LapTime", 0.0, "negative or zero lap time")
    assert value_problem({"LapNumber": 3.0, "LapTime": np.nan, "Stint": 1e308})[0] == "Stint"
    assert value_problem({"LapNumber": 3.0, "LapTime": 91.0, "Position": np.nan, "TyreLife": 0.0}) is None
