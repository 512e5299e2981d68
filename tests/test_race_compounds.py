"""Pirelli's absolute compound names (2018's HYPERSOFT ... SUPERHARD, and C6 ... C0) are
relabelled race by race to the SOFT / MEDIUM / HARD the models know; live mode, which
cannot see the whole race, takes them as an unknown dry compound."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from lapnet.errors import LapnetError
from lapnet.race.io import CompoundNamesWarning, read_laps, relabel_absolute

TINY = Path(__file__).parent / "data" / "race_tiny.csv"


@pytest.mark.parametrize("used, want", [
    (["ULTRASOFT", "SUPERSOFT", "SOFT"], ["SOFT", "MEDIUM", "HARD"]),
    (["HYPERSOFT", "ULTRASOFT"], ["SOFT", "MEDIUM"]),  # 2018: the two softest of three
    (["ULTRASOFT", "SOFT"], ["SOFT", "HARD"]),  # the unused one lies between them
    (["C4", "C3"], ["MEDIUM", "HARD"]),  # C-numbers: the two hardest of three
    (["C5", "C3"], ["SOFT", "HARD"]),
    (["C1", "C2", "C3"], ["HARD", "MEDIUM", "SOFT"]),
    (["SUPERHARD"], ["MEDIUM"]),
    (["C4", "C3", "INTERMEDIATE", "UNKNOWN"], ["MEDIUM", "HARD"]),  # wet and unknown are left alone
])
def test_relabel_by_order_in_the_race(used, want):
    got = relabel_absolute(used)
    assert [got[c] for c in used if c not in ("INTERMEDIATE", "UNKNOWN")] == want
    assert "INTERMEDIATE" not in got and "UNKNOWN" not in got


def test_mixed_schemes_and_four_compounds_refused():
    with pytest.raises(LapnetError, match="mix Pirelli's naming schemes"):
        relabel_absolute(["C3", "SUPERSOFT"])
    with pytest.raises(LapnetError, match="4 dry compounds in one race .*: a race is given three"):
        relabel_absolute(["ULTRASOFT", "SOFT", "MEDIUM", "HARD"])


def _tiny(compounds: dict[str, str], race: str | None = None) -> pd.DataFrame:
    """The tiny race (SOFT, MEDIUM and HARD stints) with its compounds renamed at once."""
    df = pd.read_csv(TINY, dtype={"TrackStatus": str})
    df["Compound"] = df["Compound"].map(lambda c: compounds.get(c, c))
    if race is not None:
        df["Race"] = race
    return df


def test_read_laps_relabels_each_race_on_its_own():
    plain = read_laps(TINY)
    assert set(plain["Compound"]) == {"SOFT", "MEDIUM", "HARD"}
    # 2018-style names for the same stints, in one race of a two-race table; the other race's
    # SOFT / MEDIUM / HARD are relative already and stay as they are
    old = _tiny({"SOFT": "ULTRASOFT", "MEDIUM": "SUPERSOFT", "HARD": "SOFT"}, race="y2018")
    new = _tiny({}, race="y2023")
    with pytest.warns(CompoundNamesWarning,
                      match=r"race 'y2018'.*ULTRASOFT -> SOFT, SUPERSOFT -> MEDIUM, SOFT -> HARD") as rec:
        both = read_laps(pd.concat([old, new], ignore_index=True))
    assert len(rec) == 1
    for race in ("y2018", "y2023"):
        assert both.loc[both["Race"] == race, "Compound"].tolist() == plain["Compound"].tolist()
    # C-numbers give back exactly the original table
    with pytest.warns(CompoundNamesWarning):
        c_named = read_laps(_tiny({"SOFT": "C5", "MEDIUM": "C4", "HARD": "C3"}), race="race_tiny")
    pd.testing.assert_frame_equal(c_named, plain)


def test_real_race_with_c_numbers_cleans_as_the_original(f1_data):
    from lapnet.race.clean import clean_laps

    path = f1_data / "2023_italian_R.csv"
    df = pd.read_csv(path, dtype={"TrackStatus": str})
    assert set(df["Compound"]) == {"MEDIUM", "HARD"}  # Monza 2023: C4 and C3 (C5 the unused soft)
    with pytest.warns(CompoundNamesWarning):
        laps, _ = clean_laps(read_laps(df.assign(Compound=df["Compound"].map({"MEDIUM": "C4", "HARD": "C3"})),
                                       race="2023_italian_R"))
    ref, _ = clean_laps(read_laps(path))
    pd.testing.assert_frame_equal(laps, ref)


def test_cli_bad_and_mixed_names_one_line(run_cli, tmp_path):
    mixed = tmp_path / "mixed.csv"
    _tiny({"SOFT": "C5", "MEDIUM": "C4", "HARD": "SUPERSOFT"}).to_csv(mixed, index=False)
    code, _, err = run_cli("race", "clean", mixed)
    assert code == 2 and err.count("\n") == 1 and "race 'mixed': compounds C4, C5, SUPERSOFT mix" in err
    typo = tmp_path / "typo.csv"
    _tiny({"MEDIUM": "ULTRASFT"}).to_csv(typo, index=False)
    code, _, err = run_cli("race", "clean", typo)
    assert code == 2 and "unknown compound" in err and "C6 ... C0" in err
    ok = tmp_path / "y2018.csv"
    _tiny({"SOFT": "HYPERSOFT", "MEDIUM": "ULTRASOFT", "HARD": "SUPERSOFT"}).to_csv(ok, index=False)
    code, out, err = run_cli("race", "clean", ok, "--json")
    assert code == 0 and json.loads(out)["rows_out"] == 24
    assert "lapnet: warning:" in err and "HYPERSOFT -> SOFT, ULTRASOFT -> MEDIUM, SUPERSOFT -> HARD" in err


def test_live_takes_absolute_names_as_unknown(tmp_path):
    """A stream cannot see which three compounds the race has: the lap goes on as UNKNOWN."""
    from lapnet.race.live.lap import _live_compound

    with pytest.warns(CompoundNamesWarning, match="ULTRASOFT .* unknown dry compound"):
        assert _live_compound(" ultrasoft ") == "UNKNOWN"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _live_compound("soft") == "SOFT" and _live_compound(float("nan")) == "UNKNOWN"
        assert _live_compound("TEST_UNKNOWN") == "UNKNOWN" and _live_compound("C3x") == "C3X"
