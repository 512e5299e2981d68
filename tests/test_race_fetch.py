"""`lapnet race fetch`: FastF1 replaced by a fake session that loads a real `fastf1.core.Laps`
(built from tests/data/race_tiny.csv); no network is ever touched."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd
import pytest

fastf1 = pytest.importorskip("fastf1")
from fastf1.core import Laps  # noqa: E402
from fastf1.exceptions import DataNotLoadedError  # noqa: E402

from lapnet.race.clean import clean_laps  # noqa: E402
from lapnet.race.fetch import fetch_race  # noqa: E402
from lapnet.race.io import read_laps  # noqa: E402

TINY = Path(__file__).parent / "data" / "race_tiny.csv"
LOAD_ARGS = dict(laps=True, telemetry=False, weather=False, messages=True)


def tiny_laps() -> Laps:
    """race_tiny.csv as FastF1's Session.load builds it: all 31 Laps columns, FastF1's dtypes."""
    raw = pd.read_csv(TINY, dtype={"TrackStatus": str, "DriverNumber": str})
    for c in ("Time", "LapTime", "PitOutTime", "PitInTime", "LapStartTime"):
        raw[c] = pd.to_timedelta(raw[c])
    return Laps(raw, _force_default_cols=True)


def same_laps(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables without LapStartDate and DeletedReason, which read_laps passes through
    untyped: empty in race_tiny, they are datetime64 / '' in Laps but float NaN read back from a CSV."""
    untyped = ["LapStartDate", "DeletedReason"]
    for df in (a, b):
        assert df[untyped].replace("", None).isna().all().all()
    return a.drop(columns=untyped), b.drop(columns=untyped)


class FakeFastF1:
    """Stands in for `fastf1.get_session` / `Cache.configure` and records how they were called."""

    def __init__(self) -> None:
        self.laps: Laps | None = tiny_laps()
        self.total_laps: int | None = 10
        self.load_error: Exception | None = None
        self.log_warning: str | None = None
        self.session_name: str | None = None  # FastF1's own name for the session, if not Race/Sprint
        self.get_session_calls: list[tuple] = []
        self.load_calls: list[dict] = []
        self.cache_dirs: list[str] = []

    def get_session(self, year, gp, identifier=None, **kw):
        self.get_session_calls.append((year, gp, identifier))
        return FakeSession(self, self.session_name or {"R": "Race", "S": "Sprint"}[identifier])

    def configure(self, *, cache_dir=None, **kw):
        self.cache_dirs.append(cache_dir)


class FakeSession:
    def __init__(self, fake: FakeFastF1, name: str) -> None:
        self.fake, self.name = fake, name
        self.event = pd.Series({"EventName": "Italian Grand Prix", "EventDate": pd.Timestamp("2023-09-03"),
                                "Country": "Italy", "Location": "Monza", "RoundNumber": 14})
        self.date = pd.Timestamp("2023-09-03 13:00", tz="UTC")

    def load(self, **kw):
        self.fake.load_calls.append(kw)
        if self.fake.log_warning:
            logging.getLogger("fastf1.core").warning(self.fake.log_warning)
        if self.fake.load_error is not None:
            raise self.fake.load_error
        if self.fake.laps is not None:  # FastF1 logs a failed lap load and leaves no laps
            self._laps = self.fake.laps
        self._total_laps = self.fake.total_laps

    @property
    def laps(self):
        if not hasattr(self, "_laps"):
            raise DataNotLoadedError("The data you are trying to access has not been loaded yet.")
        return self._laps

    @property
    def total_laps(self):
        return self._total_laps


@pytest.fixture
def fake(monkeypatch) -> FakeFastF1:
    f = FakeFastF1()
    monkeypatch.setattr(fastf1, "get_session", f.get_session)
    monkeypatch.setattr(fastf1.Cache, "configure", f.configure)
    return f


def test_csv_is_fastf1s_laps_and_reads_back(fake, run_cli, tmp_path):
    out = tmp_path / "monza.csv"
    code, stdout, err = run_cli("race", "fetch", "2023", "Monza", "--out", out, "--json")
    assert code == 0, err
    assert fake.get_session_calls == [(2023, "Monza", "R")]
    assert fake.load_calls == [LOAD_ARGS]  # laps and race-control messages only
    assert fake.cache_dirs == []  # FastF1's default cache unless --cache
    laps = tiny_laps()
    assert out.read_text() == laps.to_csv(index=False)  # what `session.laps.to_csv(index=False)` writes
    assert out.read_text().splitlines()[0] == ",".join(Laps._COLUMNS)  # the 31 columns, FastF1's order
    back = read_laps(out)
    pd.testing.assert_frame_equal(*same_laps(back, read_laps(laps, race="monza")), check_dtype=True)
    cleaned, report = clean_laps(back)
    r = report.races[0]  # the non-starter DDD and AAA's generated lap 9 go, as for the shared races
    assert r.drivers_dropped == ["DDD"] and r.dropped["non_starter"] == 1 and r.dropped["after_flag"] == 1
    assert r.rows_in == 26 and len(cleaned) == r.rows_out == 24

    info = json.loads(stdout)
    raw = pd.read_csv(TINY)
    assert info["drivers"] == raw["Driver"].nunique() == 4
    assert info["rows"] == len(raw) == 26
    # lap 9 is FastF1's generated row after the flag (no time): the race ran 8 laps
    assert info["laps"] == raw.loc[raw["LapTime"].notna(), "LapNumber"].max() == 8
    assert info["scheduled_laps"] == 10
    assert (info["event"], info["year"], info["round"], info["country"], info["date"], info["session"]) == (
        "Italian Grand Prix", 2023, 14, "Italy", "2023-09-03", "Race")
    assert info["out"] == str(out) and info["note"] is None
    assert "--race-laps 10" in info["hint"]


def test_summary_on_stderr_round_number_sprint_and_cache(fake, run_cli, tmp_path):
    fake.total_laps = None  # the timing feed without a lap count: the hint falls back on the laps run
    cache = tmp_path / "ff1" / "cache"
    out = tmp_path / "sprint.csv"
    code, stdout, err = run_cli("race", "fetch", "2023", "14", "--session", "sprint", "--out", out, "--cache", cache)
    assert code == 0, err
    assert stdout == ""  # the summary is for people: stderr
    assert fake.get_session_calls == [(2023, 14, "S")]  # '14' is round 14, Sprint is FastF1's 'S'
    assert fake.cache_dirs == [str(cache)] and cache.is_dir()
    assert "--race-laps 8" in err and "no mandatory pit stop" in err and "Sprint" in err
    assert out.is_file()


def test_cache_on_fastf1_before_configure(fake, run_cli, tmp_path, monkeypatch):
    monkeypatch.delattr(fastf1.Cache, "configure")  # FastF1 < 3.9 has only enable_cache
    monkeypatch.setattr(fastf1.Cache, "enable_cache", lambda cache_dir, **kw: fake.cache_dirs.append(cache_dir))
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv", "--cache", tmp_path / "c")
    assert code == 0, err
    assert fake.cache_dirs == [str(tmp_path / "c")]


def test_parquet(fake, run_cli, tmp_path):
    out = tmp_path / "monza.parquet"
    code, _, err = run_cli("race", "fetch", "2023", "Italian Grand Prix", "--out", out)
    assert code == 0, err
    assert fake.get_session_calls == [(2023, "Italian Grand Prix", "R")]
    pd.testing.assert_frame_equal(*same_laps(read_laps(out), read_laps(tiny_laps(), race="monza")), check_dtype=True)
    assert list(pd.read_parquet(out).columns) == list(Laps._COLUMNS)


def test_existing_out_refused_before_fastf1_is_asked(fake, run_cli, tmp_path):
    out = tmp_path / "monza.csv"
    out.write_text("keep me\n")
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", out)
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_text() == "keep me\n"
    assert fake.get_session_calls == []  # checked before any network access
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", out, "--force")
    assert code == 0, err
    assert out.read_text() == tiny_laps().to_csv(index=False)


@pytest.mark.parametrize("session", ["Q", "FP1", "SQ", "Qualifying", "3"])
def test_practice_and_qualifying_refused(fake, run_cli, tmp_path, session):
    out = tmp_path / "q.csv"
    code, stdout, err = run_cli("race", "fetch", "2023", "Monza", "--session", session, "--out", out)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("lapnet: error:") and "R (Race) or S (Sprint)" in err
    assert not out.exists() and fake.get_session_calls == []


@pytest.mark.parametrize("year, ok", [(2021, True), (2024, False)])
def test_sprint_qualifying_is_the_sprint_only_until_2022(fake, run_cli, tmp_path, year, ok):
    fake.session_name = "Sprint Qualifying"  # 2021's sprint race; since 2024 the sprint's qualifying
    code, stdout, err = run_cli("race", "fetch", str(year), "Monza", "--session", "S", "--out", tmp_path / "s.csv", "--json")
    assert code == (0 if ok else 2), err
    if ok:
        assert json.loads(stdout)["session"] == "Sprint"
    else:
        assert "FastF1 gave the session 'Sprint Qualifying', not a race or sprint" in err
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, match", [
    (["2017", "Monza", "--out", "x.csv"], "from 2018 on"),
    (["2023", "0", "--out", "x.csv"], "round numbers start at 1"),
    (["2023", " ", "--out", "x.csv"], "event is empty"),
    (["2023", "Monza", "--out", "x.txt"], "write a .csv or .parquet"),
])
def test_bad_arguments_refused_offline(fake, run_cli, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("race", "fetch", *args)
    assert code == 2 and match in err and err.count("\n") == 1
    assert fake.get_session_calls == [] and list(tmp_path.iterdir()) == []


def test_cache_that_is_a_file_refused(fake, run_cli, tmp_path):
    (tmp_path / "cache").write_text("")
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv", "--cache", tmp_path / "cache")
    assert code == 2 and "not a folder" in err
    assert fake.get_session_calls == [] and not (tmp_path / "m.csv").exists()


def test_connection_error_is_one_line_and_writes_nothing(fake, run_cli, tmp_path):
    fake.load_error = ConnectionError("Max retries exceeded with url: livetiming.formula1.com")
    fake.log_warning = "Failed to load session info data!"
    code, stdout, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "monza.csv")
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lapnet: error: 2023 Italian Grand Prix Race: FastF1 could not load it: ConnectionError")
    assert "needs the internet" in err and "Failed to load session info data!" in err
    assert list(tmp_path.iterdir()) == []  # not even a temporary file


def test_fastf1_errors_before_load_name_the_request(fake, run_cli, tmp_path, monkeypatch):
    def no_event(year, gp, identifier=None, **kw):
        raise ValueError("Failed to load any schedule data.")  # what FastF1 3.9 raises offline

    monkeypatch.setattr(fastf1, "get_session", no_event)
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv")
    assert code == 2 and err.count("\n") == 1
    assert "2023 'Monza' Race: FastF1 could not load it: ValueError: Failed to load any schedule data." in err
    assert list(tmp_path.iterdir()) == []


def test_fastf1_logging_held_back_and_restored(fake, tmp_path):
    fake.log_warning = "Failed to load race control messages!"
    handlers = logging.getLogger("fastf1").handlers
    before = [h.level for h in handlers]
    info = fetch_race(2023, "Monza", out=tmp_path / "m.csv")
    assert "FastF1: Failed to load race control messages!" in info["warnings"]
    assert [h.level for h in handlers] == before
    assert logging.getLogger("fastf1").handlers == handlers


def test_fastf1_missing_gives_the_pip_hint(fake, run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastf1", None)  # `import fastf1` now raises ImportError
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv", "--cache", tmp_path / "c")
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'lapnet[f1]'" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("laps, match", [
    (Laps(_force_default_cols=True), "FastF1 returned no laps"),
    (tiny_laps().assign(LapTime=pd.NaT), "26 rows but no timed lap"),
    (None, "no lap data"),  # load() logged its failure and left no laps
])
def test_no_laps_refused(fake, run_cli, tmp_path, laps, match):
    fake.laps = laps
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv")
    assert code == 2 and match in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_laps_lapnet_cannot_read_are_not_written(fake, run_cli, tmp_path):
    laps = tiny_laps()
    laps.loc[3, "LapNumber"] = 2.0  # AAA's lap 2 twice
    fake.laps = laps
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv")
    assert code == 2 and "not a lap table lapnet reads" in err and "duplicate lap: driver AAA lap 2" in err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_fetch_removes_the_cache_folder_it_made(fake, run_cli, tmp_path):
    fake.load_error = ConnectionError("Max retries exceeded with url: livetiming.formula1.com")
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv", "--cache", tmp_path / "new" / "f1")
    assert code == 2 and not (tmp_path / "new").exists()  # made by this call: gone
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    code, _, err = run_cli("race", "fetch", "2023", "Monza", "--out", tmp_path / "m.csv", "--cache", tmp_path / "old")
    assert code == 2 and (tmp_path / "old" / "keep.txt").read_text() == "x"  # there before: kept
