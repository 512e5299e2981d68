"""`lapnet race simulate`, `calibrate` and `clean` (the data side of the race group).

Each command validates its arguments and calls one library function
(`lapnet.race.simulate.simulate_to_file`, `lapnet.race.calibrate.calibrate_files`,
`lapnet.race.clean.clean_files`).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from lapnet.cli.common import emit_metrics, summary_table
from lapnet.errors import LapnetError


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show library warnings (e.g. 'not a race') as one `lapnet: warning:` line each, control
    characters escaped (`one_line`): they quote race and circuit names from the data."""
    from lapnet.cli import one_line

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, UserWarning):
                    print(f"lapnet: warning: {one_line(w.message)}", file=sys.stderr)


def _strategies(values: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """--strategy VER=MEDIUM/25/HARD ... -> {"VER": (["MEDIUM", "HARD"], [25])} (checked by `simulate`)."""
    plans = {}
    for v in values:
        code, _, plan = v.partition("=")
        parts = plan.split("/")
        if not code.strip() or len(parts) % 2 == 0 or not all(p.strip().lstrip("-").isdigit() for p in parts[1::2]):
            raise LapnetError(f"--strategy {v!r}: write DRIVER=COMPOUND/IN-LAP/COMPOUND..., e.g. VER=MEDIUM/25/HARD")
        if code.strip().upper() in plans:
            raise LapnetError(f"--strategy: {code.strip().upper()} is given twice")
        plans[code.strip().upper()] = ([p.strip() for p in parts[0::2]], [int(p) for p in parts[1::2]])
    return plans


def _safety_car(v: str | None) -> tuple[int, int] | None:
    """--safety-car FIRST:LAPS -> (first, laps) (checked against the races by `simulate`)."""
    if v is None:
        return None
    parts = v.split(":")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise LapnetError(f"--safety-car {v!r}: write FIRST:LAPS, e.g. 20:4 (a safety car on laps 20-23)")
    return int(parts[0]), int(parts[1])


def simulate_cmd(
    out: Path = typer.Option(..., "--out", help="Lap table to write: .csv or .parquet."),
    races: int = typer.Option(10, "--races", min=1, help=(
        "Number of races (20 cars each). About 1 GB of memory per 1,000 races (700 bytes per car-lap of the "
        "longest circuit): a request needing more than half the memory available now is refused.")),
    seed: int = typer.Option(7, "--seed", min=0, help=(
        "Random seed: same seed and --races, same table (--races 1 is not the first race of --races 10).")),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="calib.json from `lapnet race calibrate`."),
    label: str = typer.Option("sim", "--label", help=(
        "Race names: LABEL_0000, LABEL_0001, ... (letters, digits, _ . -). Give two simulations different "
        "labels to clean or train on them together.")),
    strategy: Optional[List[str]] = typer.Option(None, "--strategy", help=(
        "A what-if, repeatable: DRIVER=COMPOUND/IN-LAP/COMPOUND, e.g. VER=MEDIUM/25/HARD (start on MEDIUM, "
        "pit at the end of lap 25, HARD to the flag); add /IN-LAP/COMPOUND for a second stop. That car runs this plan in every race; "
        "every random draw stays the same, so the same --seed with and without it differs only by the plan.")),
    safety_car: Optional[str] = typer.Option(None, "--safety-car", help=(
        "A what-if: FIRST:LAPS, e.g. 20:4, a safety car on laps 20-23 of every race, besides the random ones "
        "(which stay as drawn). The other cars react as to any safety car; a --strategy car runs its plan: run "
        "once with a plan that stops under it and once without.")),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Simulate races into a FastF1-style lap table with the truth real data lacks.

    Columns: FastF1's (LapTime, Compound, TyreLife, TrackStatus, PitInTime, ...) plus
    FuelLoad, TyreTemp, GapToLeader, TrueDegradation, Phase (push/conserve/pit_window) and
    OracleLapTime (the lap time without noise: its MAE is the noise floor).

    Example: lapnet race simulate --out laps.csv --races 10 --seed 7
    """
    from lapnet.race.simulate import simulate_to_file
    from lapnet.run_dir import refuse_input_as_output

    refuse_input_as_output([calibration], [out], "--out")
    summary = simulate_to_file(out, races, seed, calibration, force=force, label=label,
                               strategies=_strategies(strategy or []), safety_car=_safety_car(safety_car))
    phases = summary.pop("phase_share")
    summary.update({f"phase_{k}": v for k, v in phases.items()})
    summary_table(f"simulated races -> {out}", summary)
    emit_metrics(None, summary, as_json=as_json)


def calibrate_cmd(
    laps: List[Path] = typer.Argument(..., help="Real race lap tables (CSV/Parquet, e.g. FastF1 exports)."),
    out: Path = typer.Option(..., "--out", help="Calibration file to write (.json)."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Also draw real vs simulated (.png)."),
    sim_races: Optional[int] = typer.Option(None, "--sim-races", min=1, help="Simulated races for the figure (default: as many as real)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the simulated races in the figure."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing --out/--figure files."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Fit the simulator's constants to real races (writes a calibration JSON).

    Base pace per circuit, degradation per compound, fuel effect, lap-time noise, pit loss,
    stint lengths, safety-car rates.

    Only scored laps (accurate, green, not in- or out-laps, dry) enter the pace fits.

    Example: lapnet race calibrate ../shared/data/f1/*.csv --out calib.json --figure calib.png
    """
    from lapnet.cli.race import refuse_stdin
    from lapnet.race.calibrate import calibrate_files
    from lapnet.run_dir import check_file_out, refuse_input_as_output

    for p in laps:
        refuse_stdin(p)
    refuse_input_as_output(laps, [out], "--out")
    check_file_out(out, "--out")
    refuse_input_as_output(laps, [figure], "--figure")
    if figure is not None:
        refuse_input_as_output([out], [figure], "--figure")
        check_file_out(figure, "--figure")
    with _warnings_as_lines():
        _, summary = calibrate_files(laps, out, figure=figure, sim_races=sim_races, seed=seed, force=force)
    summary_table(f"calibration -> {out}", {**summary, "defaulted": ", ".join(summary["defaulted"]) or "none"})
    emit_metrics(None, summary, as_json=as_json)


def clean_cmd(
    laps: List[Path] = typer.Argument(..., help="Lap tables (CSV/Parquet, e.g. FastF1 exports), one race each or with a Race column."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the cleaned table (.csv or .parquet): every kept "
                                       "lap with its mask columns (Scored, InLap, OutLap, Neutralised, ...)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout (totals, and each race under by_race)."),
) -> None:
    """Check and clean lap tables: per race, the rows dropped, the laps not Scored and the values imputed, and why.

    This is the cleaning that train, eval, predict and calibrate apply (their metrics.json
    carries the same report under 'cleaning'). Dropped: rows without a lap number, rows
    FastF1 generated after the chequered flag, drivers without a single timed lap. Not
    Scored (kept as context): no lap time, IsAccurate False or deleted, safety car / VSC /
    red flag, in- and out-laps and lap 1, the restart after a red flag, wet tyres. Imputed:
    missing Stint, Compound and TyreLife, from the driver's pit stops and stint.

    Example: lapnet race clean ../shared/data/f1/*.csv --out cleaned.parquet
    """
    from lapnet.cli import one_line
    from lapnet.cli.race import refuse_stdin
    from lapnet.console import console
    from lapnet.race.clean import clean_files, headline
    from lapnet.run_dir import refuse_input_as_output

    for p in laps:
        refuse_stdin(p)
    refuse_input_as_output(laps, [out], "--out")  # even with --force: the raw table would be lost for good
    _, report = clean_files(laps, out, force=force)
    summary = report.summary()
    console.print(report.table())
    print(one_line(f"{headline(summary)}" + (f" -> {out}" if out is not None else "")), file=sys.stderr)
    emit_metrics(None, summary, as_json=as_json)


def register(race_app: typer.Typer) -> None:
    """Add the data commands to the `race` group."""
    race_app.command("simulate")(simulate_cmd)
    race_app.command("calibrate")(calibrate_cmd)
    race_app.command("clean")(clean_cmd)
