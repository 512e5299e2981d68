"""Who wrote a file in `lapnet race predict` / `eval`'s --out: the ownership rules that let a
new call replace an earlier call's files and refuse anyone else's.

Predict and eval record what they wrote in their metrics.json (`"written": {"by", "files"}`);
predict's figures carry a PNG text mark (`PREDICT_PNG_MARK`) and its predictions.csv starts with
`PREDICTIONS_HEADER`, so an earlier predict's files are known even without that record (a
metrics.json written before the record existed is told by its keys, `written_by`).
"""

from __future__ import annotations

from pathlib import Path

from lapnet.errors import LapnetError

PREDICT_COMMAND, EVAL_COMMAND = "lapnet race predict", "lapnet race eval"
PREDICT_PNG_MARK = {"Software": PREDICT_COMMAND}  # written into predict's figures: an earlier call's figure is known by it (gates.GATES_PNG_MARK is gates')
MAX_FIGURES = 6  # figures `predict_race` and `race_gates` draw per race without --driver: the top of the classification
PREDICTIONS_HEADER = "Race,Driver,LapNumber,Stint,Compound,TyreLife,LapTime,Scored,InLap,forecast_h1"  # predictions.csv starts so


def forecast_figure_name(race: object, driver: object) -> str:
    """predict's figure of one driver: forecast_RACE_DRIVER.png, the race and driver made safe
    for a file name (`lapnet.run_dir.safe_name`: no path separator or control character, a long
    name cut and kept apart by a short hash)."""
    from lapnet.run_dir import safe_name

    return f"forecast_{safe_name(race)}_{safe_name(driver)}.png"


def stale_staging(out: Path, prefix: str, max_age: float) -> list[Path]:
    """The staging directories (out/PREFIX<pid>-XXXX) of predict calls that died while drawing:
    their pid is no longer alive, or, for a name whose pid cannot be read, older than `max_age`
    seconds. A directory whose pid is alive (this process's included) is never among them, however
    old: a live call's is never removed."""
    import time

    found = []
    for d in out.glob(f"{prefix}*"):
        alive = _pid_alive(d.name[len(prefix):].split("-", 1)[0])
        if alive is None:  # no pid to ask: its age tells
            try:
                stale = time.time() - d.stat().st_mtime > max_age
            except OSError:
                continue
        else:
            stale = not alive
        if stale and d.is_dir():
            found.append(d)
    return found


def _pid_alive(pid_text: str) -> bool | None:
    """Whether the process of a staging directory's pid is alive; None when `pid_text` is no pid."""
    import os

    if not pid_text.isdigit() or not 0 < int(pid_text) < 2**31:
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True


def earlier_predict_files(out: Path) -> list[Path]:
    """The files an earlier `predict_race` wrote in `out` (predictions.csv, degradation.png,
    forecast_*.png), known by the CLI's metrics.json record or by their own marks: the ones a
    new call removes before writing (a previous --driver's figures would otherwise stay)."""
    if not out.is_dir():
        return []
    m = read_record(out)
    recorded = recorded_files(m) if written_by(m) == PREDICT_COMMAND else set()
    names = [out / "predictions.csv", out / "degradation.png"] + sorted(out.glob("forecast_*.png"))
    return [p for p in names if p.is_file() and _is_predicts(p, recorded)]


def png_software(path: Path) -> str | None:
    """The 'Software' text of a PNG (matplotlib writes it from `savefig(metadata=...)`), None
    when there is none or the file is no PNG."""
    import struct

    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            for _ in range(64):  # the text chunks come before the image data
                head = f.read(8)
                if len(head) < 8:
                    return None
                size, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    return None
                data = f.read(size)
                f.read(4)  # CRC
                if kind in (b"tEXt", b"iTXt"):
                    key, _, text = data.partition(b"\0")
                    if key == b"Software":
                        if kind == b"iTXt":  # compression flag, method, language tag, translated keyword
                            text = text[2:].split(b"\0", 2)[-1]
                        return text.decode("latin-1", "replace")
    except OSError:
        return None
    return None


def read_record(out: Path) -> dict | None:
    """out/metrics.json as a dict, None when missing or not a JSON object."""
    import json

    try:
        m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) else None


def written_by(m: dict | None) -> str | None:
    """Which command wrote a metrics.json: its "written" record, or for one written before the
    record existed, its keys (predict's has "driver" and "figures", eval's "races" and "baselines")."""
    if m is None:
        return None
    rec = m.get("written")
    if isinstance(rec, dict):
        return rec.get("by")
    if {"run", "driver", "figures"} <= set(m):
        return PREDICT_COMMAND
    if {"run", "races", "baselines"} <= set(m) and "figures" not in m:
        return EVAL_COMMAND
    return None


def recorded_files(m: dict | None) -> set[str]:
    """The file names an earlier predict's metrics.json records as written (its "written"
    record, or the "figures" of one written before the record existed)."""
    if m is None:
        return set()
    rec = m.get("written")
    files = rec.get("files", []) if isinstance(rec, dict) else []
    figs = m.get("figures", [])
    return {Path(str(f)).name for f in [*(files if isinstance(files, list) else []), *(figs if isinstance(figs, list) else [])]}


def _is_predicts(path: Path, recorded: set[str]) -> bool:
    """Whether a file in predict's --out is one an earlier predict wrote: recorded in its
    metrics.json, or carrying predict's mark (a figure's PNG text, predictions.csv's header)."""
    if path.name in recorded:
        return True
    if path.suffix == ".png":
        return png_software(path) == PREDICT_PNG_MARK["Software"]
    if path.name == "predictions.csv":
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.readline().startswith(PREDICTIONS_HEADER)
        except OSError:
            return False
    return False


def refuse_foreign(out: Path, foreign: list[Path], command: str) -> None:
    """Raise one LapnetError naming the `foreign` files in `out` (those no earlier `command` wrote); none: nothing."""
    if foreign:
        names = ", ".join(p.name for p in foreign)
        one = len(foreign) == 1
        raise LapnetError(f"--out {out}: {names} already exist{'s' if one else ''} and {'was' if one else 'were'} not "
                          f"written by an earlier {command} (use --force to replace {'it' if one else 'them'}, or "
                          "another --out)")


def check_predict_out(out: str | Path, *, force: bool = False, metrics_json: bool = True,
                      figures: tuple[str, ...] | list[str] = ()) -> None:
    """Refuse, before any work, an `out` where `predict_race` would overwrite a file an earlier
    predict did not write (unless `force`): predictions.csv, degradation.png, the `figures` it
    is about to draw (forecast_RACE_DRIVER.png), and with `metrics_json` (`lapnet race predict`)
    metrics.json. An earlier predict's files are known by its metrics.json's "written" record
    and by their own marks (a PNG text, predictions.csv's header). Files of other names are
    never touched, a forecast_*.png of the user's included.

    Raises:
        LapnetError: one line naming the files.
    """
    out = Path(out)
    if force or not out.is_dir():
        return
    m = read_record(out)
    recorded = recorded_files(m) if written_by(m) == PREDICT_COMMAND else set()
    names = ["predictions.csv", "degradation.png", *figures]
    foreign = [out / n for n in names if (out / n).is_file() and not _is_predicts(out / n, recorded)]
    if metrics_json and (out / "metrics.json").is_file() and written_by(m) != PREDICT_COMMAND:
        foreign.append(out / "metrics.json")
    refuse_foreign(out, foreign, PREDICT_COMMAND)


def check_eval_out(out: str | Path, *, force: bool = False) -> None:
    """Refuse, before any work, an `out` holding a metrics.json that an earlier `lapnet race eval`
    did not write (a run's own, predict's, the user's), unless `force`.

    Raises:
        LapnetError: one line naming it.
    """
    out = Path(out)
    if force or not (out / "metrics.json").is_file():
        return
    if written_by(read_record(out)) != EVAL_COMMAND:
        refuse_foreign(out, [out / "metrics.json"], EVAL_COMMAND)
