"""`lapnet demo`: the guided tour. Every part of lapnet, working, on bundled data.

    summary = run_demo("runs/demo")               # about two minutes on 2 CPU cores
    summary = run_demo("runs/demo", quick=True)   # toy sizes, under a minute (the tests)

The tour, in the order a newcomer meets the ideas (each part writes one sub-directory):

    engine    the NumPy engine against torch.nn in float64 (forward, gradients) and
              finite-difference gradient checks; a NumPy LSTM trained on the sine wave
    text      a character LSTM trained briefly on the bundled Hamlet passage; samples at
              several temperatures; the softmax-temperature figure; the LSTM's gates
    sine      notebook section 6 at small size: hidden size and architecture vs. MSE
    trend     exercise 2: classify noisy trends (up or down)
    gradflow  ||dL/dh_t|| measured by distance for RNN, LSTM, GRU (sections 3-4)
    race      simulated races -> a forecaster and a phase tagger trained, scored against
              the baselines; a pit-now what-if at mid-race; plus real 2023 races when the
              data is present
    report.html   everything above on one self-contained page (`lapnet report`)

The demo only calls library functions (the same ones the CLI commands call) with small
sizes; it trains nothing itself. A failing part is recorded in the summary and the tour
goes on, so one broken piece never hides the others; `run_demo` then reports ok=False.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.markup import escape

from lapnet.checkpoint import check_replaceable, write_json
from lapnet.console import console
from lapnet.errors import LapnetError
from lapnet.host import own_torch_state

DEFAULT_OUT = Path("runs/demo")
PARTS = ("engine", "text", "sine", "trend", "gradflow", "race")
SAMPLE_TEMPERATURES = (0.3, 0.8, 1.2)


@dataclass
class DemoSizes:
    """How big each part is. FULL: about 45 s of CPU time (under a minute on an idle 2-core
    machine, two on a busy one); QUICK: toy sizes for the tests, about 20 s of CPU time.
    The engine part follows `run_tour(quick=...)`."""

    text_hidden: int = 128
    text_steps: int = 600
    text_seq_len: int = 64
    text_batch: int = 4
    text_lr: float = 5e-3
    sample_length: int = 160
    sine_hidden_sizes: tuple[int, ...] = (4, 32)
    sine_archs: tuple[str, ...] = ("rnn", "lstm", "gru")
    sine_arch_hidden: int = 32
    sine_epochs: int = 150
    trend_hidden: int = 16
    trend_train: int = 300
    trend_epochs: int = 30
    gradflow_hidden: int = 16
    gradflow_length: int = 50
    gradflow_steps: int = 150
    gradflow_clip_steps: int = 60
    race_train_races: int = 8
    race_test_races: int = 2
    race_hidden: int = 32
    race_epochs: int = 20
    race_real_files: int = 2  # real races evaluated when the data is present
    seed: int = 0


FULL = DemoSizes()
QUICK = DemoSizes(
    text_hidden=32, text_steps=20, text_seq_len=16, text_batch=4, text_lr=3e-3, sample_length=60,
    sine_hidden_sizes=(4,), sine_archs=("rnn", "lstm"), sine_arch_hidden=4, sine_epochs=10,
    trend_hidden=8, trend_train=64, trend_epochs=5,
    gradflow_hidden=8, gradflow_length=12, gradflow_steps=5, gradflow_clip_steps=5,
    race_train_races=2, race_test_races=1, race_hidden=8, race_epochs=2, race_real_files=1,
)


@dataclass
class PartResult:
    """One row of the summary: what the part showed, its headline number, how long it took."""

    part: str
    shows: str
    result: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time: the wall time a loaded machine inflates
    ok: bool = True
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# the tour


def run_demo(out: str | Path = DEFAULT_OUT, *, quick: bool = False, force: bool = False, seed: int = 0,
             f1_data: str | Path | None = None, progress: bool = True,
             on_part: Callable[[PartResult], None] | None = None) -> dict[str, Any]:
    """Run the guided tour into `out` and build its HTML report.

    Args:
        out: the demo directory; an existing non-empty one is refused unless `force`.
        quick: toy sizes (under a minute), for tests.
        force: overwrite a previous demo in `out` (only the demo's own files are removed).
        seed: seeds every part (weights, data, sampling).
        f1_data: a folder of real race CSVs (default: $LAPNET_F1_DATA, else ../shared/data/f1
            beside the repository, else none: the race part says so); when present, the race
            part also evaluates on a few real races.
        progress: progress bars and per-part messages on stderr.
        on_part: called with each part's PartResult as soon as it is done (the CLI shows
            the part's tables with it).

    Returns:
        {"ok", "quick", "seconds", "out", "report", "parts": [PartResult as dict, ...]},
        also written to out/metrics.json.

    `out` is locked while the demo runs (another lapnet process giving it is refused) and
    released when this returns or raises, unless the caller held the lock before. The host's
    torch RNG and default dtype, and its open pyplot figures, are left as they were.
    """
    from lapnet.run_dir import holds_run_lock, release_run_lock

    out = Path(out)
    held = holds_run_lock(out)  # a caller's own lock on `out` is the caller's to release
    try:
        return _run_demo(out, quick, force, seed, f1_data, progress, on_part)
    finally:
        if not held:  # the lock `_prepare` took: kept, a terminal's `lapnet demo --force` was refused
            release_run_lock(out)  # for as long as the notebook that called this lived


@own_torch_state()
def _run_demo(out: Path, quick: bool, force: bool, seed: int, f1_data: str | Path | None, progress: bool,
              on_part: Callable[[PartResult], None] | None) -> dict[str, Any]:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LapnetError(f"--seed must be a whole number >= 0, got {seed!r}")
    sizes = replace(QUICK if quick else FULL, seed=seed)
    f1 = _find_f1(f1_data)
    if f1_data is not None:  # asked for by name: refuse it now, not after a minute of other parts
        if f1 is None or f1.resolve() != Path(f1_data).resolve():
            raise LapnetError(f"--f1-data {f1_data}: holds no .csv lap tables")
        from lapnet.race.io import read_laps

        for path in sorted(f1.glob("*.csv"))[: sizes.race_real_files]:
            read_laps(path)  # raises on a table the race part could not read
    _prepare(out, force)
    write_json(out / "config.json", {"kind": "demo", "quick": quick, "sizes": asdict(sizes),
                                     "f1_data": str(f1) if f1 else None})
    steps: list[tuple[str, str, Callable[[Path, DemoSizes, bool], PartResult]]] = [
        ("engine", "the NumPy engine against torch.nn", lambda o, s, p: _engine(o, s, p, quick)),
        ("text", "character LSTM on Hamlet", _text),
        ("sine", "sine forecasting (section 6)", _sine),
        ("trend", "trend classification (exercise 2)", _trend),
        ("gradflow", "measured gradient flow (sections 3-4)", _gradflow),
        ("race", "race forecaster and tagger", lambda o, s, p: _race(o, s, p, f1)),
    ]
    t_start = time.perf_counter()
    with one_thread():
        rows = _run_parts(steps, out, sizes, progress, on_part)
    summary = {"ok": all(r.ok for r in rows), "quick": quick, "seconds": 0.0, "out": str(out),
               "report": str(out / "report.html"), "parts": [asdict(r) for r in rows]}
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", {**summary, "parts": [_flat_row(r) for r in rows],
                                      "details": {r.part: r.details for r in rows}})
    from lapnet.report import build_report

    build_report(out, title="lapnet demo: the guided tour" + (" (--quick)" if quick else ""))
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    return summary


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch and NumPy's OpenBLAS on one thread each, restoring both afterwards.

    The demo's models are tiny: splitting each small matrix product over threads costs more
    in synchronisation than it gains, and on a busy machine the threads' spin-waiting makes
    a 2-thread run up to ten times slower than one thread (measured: the engine's sine LSTM,
    150 s against 16 s wall on 2 shared cores).
    """
    import torch

    from lapnet.scratch.blas import blas_threads, set_blas_threads

    threads, blas_before = torch.get_num_threads(), blas_threads()
    torch.set_num_threads(1)
    set_blas_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if blas_before is not None:
            set_blas_threads(blas_before)


def _run_parts(steps, out: Path, sizes: DemoSizes, progress: bool, on_part) -> list[PartResult]:
    rows: list[PartResult] = []
    for i, (name, title, fn) in enumerate(steps, 1):
        if progress:
            console.rule(f"[bold]{i}/{len(steps)}  {title}[/bold]  [dim]({escape(str(out / name))})[/dim]")
        t0, c0 = time.perf_counter(), time.process_time()
        _record_files(out, running=name)
        try:
            with _closing_new_figures():
                row = fn(out / name, sizes, progress)
        except Exception as e:  # one broken part must not hide the others
            if os.environ.get("LAPNET_DEMO_RAISE"):
                raise
            row = PartResult(name, title, f"FAILED: {e.__class__.__name__}: {' '.join(str(e).split())[:200]}",
                             ok=False, details={"traceback": traceback.format_exc().splitlines()[-6:]})
        row.seconds = round(time.perf_counter() - t0, 1)
        row.cpu_seconds = round(time.process_time() - c0, 1)
        rows.append(row)
        if progress:
            mark = "[green]done[/green]" if row.ok else "[red]failed[/red]"
            console.print(f"{mark} in {row.seconds:.1f} s: {escape(row.result)}", highlight=False)
        _record_files(out)  # what --force may remove later: the demo's own files, and only those
        if on_part is not None:
            on_part(row)
    return rows


def _flat_row(r: PartResult) -> dict[str, Any]:
    return {"part": r.part, "shows": r.shows, "result": r.result, "seconds": r.seconds,
            "cpu_seconds": r.cpu_seconds, "ok": r.ok}


MANIFEST = ".demo-files.json"  # every file a demo wrote in its part folders, updated after each part
TOP_FILES = ("report.html", "metrics.json", "config.json", MANIFEST)


def _written_files(out: Path) -> list[str]:
    """The files now in the demo's part folders, relative to `out` (what the demo wrote there)."""
    return sorted(str(p.relative_to(out)) for name in PARTS if (out / name).is_dir()
                  for p in (out / name).rglob("*") if not p.is_dir())


def _record_files(out: Path, running: str | None = None) -> None:
    """Record the files the demo wrote so far; `running`: the part about to start (its folder,
    made by the demo, is the demo's whole if the demo is killed before the part ends)."""
    write_json(out / MANIFEST, {"kind": "demo-files", "files": _written_files(out), "running": running})


# the names of the files a demo writes in its part folders (besides figures, *.png): a demo made
# before `.demo-files.json` recorded them is replaced by these names (any other file is refused)
DEMO_FILE_NAMES = frozenset({
    "metrics.json", "config.json", "vocab.json", "log.jsonl", "model.safetensors", "last.safetensors",
    "samples.json", "samples.txt", "training_laps.json", "eval_sim.json", "eval_real.json", "pit_now.json",
    "predictions.csv",
})


def _recorded_files(out: Path) -> set[str]:
    from lapnet.checkpoint import read_json
    from lapnet.errors import CheckpointError

    try:
        m = read_json(out / MANIFEST) if (out / MANIFEST).is_file() else None
    except (CheckpointError, OSError):
        m = None
    if not (isinstance(m, dict) and m.get("kind") == "demo-files" and isinstance(m.get("files"), list)):
        # a demo written before the record existed: the files named as a demo names its outputs
        return {str(p.relative_to(out)) for name in PARTS if (out / name).is_dir() for p in (out / name).rglob("*")
                if p.is_file() and (p.name in DEMO_FILE_NAMES or p.suffix == ".png")}
    known = {f for f in m["files"] if isinstance(f, str)}
    running = m.get("running")
    if running in PARTS and (out / running).is_dir():  # a demo killed in this part: its folder is the demo's
        known |= {str(p.relative_to(out)) for p in (out / running).rglob("*") if not p.is_dir()}
    return known


def _prepare(out: Path, force: bool) -> None:
    """Refuse a file or a non-empty directory (unless force). With force: refuse a directory
    that is not a demo's (its config.json kind "demo"), and a part folder holding a file the
    demo did not write (recorded in .demo-files.json as each part ends), naming it; then remove
    only the demo's own files (and the part folders they leave empty), never anything else:
    other files beside the parts stay."""
    from lapnet.run_dir import (LOCK_NAME, check_out_path, held_by_another, holds_anything, is_lapnet_leftover,
                                lock_run_dir)

    out = check_out_path(out)
    if out.exists() and not out.is_dir():
        raise LapnetError(f"--out {out}: exists and is a file, not a directory")
    if out.is_dir():
        lock_run_dir(out)  # one demo at a time in a directory: a second (--force or not) is refused while it runs
    if out.is_dir() and holds_anything(out):
        if not force:
            raise LapnetError(f"--out {out}: already holds a run (use --force to overwrite a previous demo)")
        from lapnet.run_dir import run_kind

        files = [out / name for name in TOP_FILES]
        check_replaceable(files)  # before removing anything: unlink would fail halfway
        if run_kind(out) != "demo":
            raise LapnetError(f"--out {out}: is not a demo's directory (no config.json of kind \"demo\"): --force "
                              "replaces an earlier demo only; give a new or empty directory")
        known = _recorded_files(out)
        # files beside the parts are never touched (kept); inside a part folder a file the demo did
        # not write is refused: the new demo's files would go beside it, and be recorded with it
        foreign = [p for name in PARTS if (out / name).is_dir() for p in sorted((out / name).rglob("*"))
                    if not p.is_dir() and str(p.relative_to(out)) not in known and not is_lapnet_leftover(p)]
        foreign += [out / name for name in PARTS if (out / name).exists() and not (out / name).is_dir()]
        live = [p.parent for name in PARTS if (out / name).is_dir() for p in (out / name).rglob(LOCK_NAME)
                if held_by_another(p)]
        if live:
            raise LapnetError(f"--out {out}: {live[0]} is in use by another lapnet process: --force waits for none")
        if foreign:
            raise LapnetError(f"--out {out}: holds {foreign[0]}, which no earlier demo wrote there"
                              f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}: --force replaces "
                              "only a demo's own files; move it away, or give another --out")
        for rel in sorted(known):
            p = out / rel
            if p.is_file() or p.is_symlink():
                p.unlink()
        for name in PARTS:  # the leftovers of a killed write or run, then the folders the demo's files leave empty
            if (out / name).is_dir():
                for p in (out / name).rglob(".*"):
                    if p.is_file() and is_lapnet_leftover(p):
                        p.unlink(missing_ok=True)
                for d in sorted((p for p in (out / name).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    d.rmdir()
                (out / name).rmdir()
        for path in files:
            path.unlink(missing_ok=True)
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise LapnetError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):  # before any work, naming the user's path (not an errno text)
        raise LapnetError(f"--out {out}: {parent} is not writable")
    out.mkdir(parents=True, exist_ok=True)
    lock_run_dir(out)  # a no-op when held above; else two demos that both found no directory meet here


def _find_f1(f1_data: str | Path | None) -> Path | None:
    """The real races: --f1-data, else $LAPNET_F1_DATA, else ../shared/data/f1 beside the
    repository (where the test suite also looks); None when none holds CSVs."""
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "data" / "f1"
    candidates = [f1_data, os.environ.get("LAPNET_F1_DATA"), beside_repo]
    for c in candidates:
        if c and Path(c).is_dir() and any(Path(c).glob("*.csv")):
            return Path(c)
    return None


@contextmanager
def _closing_new_figures() -> Iterator[None]:
    """Close the pyplot figures that appear while the block runs, and only those: the library
    makes its figures outside pyplot (`plots.new_figure`), but a part's code that still went
    through pyplot would pile them up in a long-lived process. The caller's own figures (a
    notebook's, open before) stay open: plt.close("all") here closed them too."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")  # not imported yet: no figure of the caller's
    before = set(plt.get_fignums()) if plt is not None else set()
    try:
        yield
    finally:
        plt = sys.modules.get("matplotlib.pyplot")
        for num in sorted(set(plt.get_fignums()) - before) if plt is not None else ():
            plt.close(num)


# ---------------------------------------------------------------------------------------
# the parts: each calls the library and condenses its numbers into one summary row


def _engine(out: Path, s: DemoSizes, progress: bool, quick: bool) -> PartResult:
    from lapnet.experiments.engine_tour import run_tour

    out.mkdir(parents=True, exist_ok=True)
    res = run_tour(quick=quick, seed=s.seed, out=out, progress=progress)
    sine = res["sine"]
    worst = max(max(r[k] for k in ("output", "final state", "dL/dx", "dL/d state0", "dL/d weights"))
                for r in res["parity"])
    grad = max(r["max rel error"] for r in res["gradcheck"])
    return PartResult("engine",
                      f"NumPy RNN/LSTM/GRU vs torch.nn (float64); NumPy LSTM H={sine.config.hidden} on sin(t)",
                      f"max |engine - torch| {worst:.1e}; gradcheck rel. error {grad:.1e}; "
                      f"sine MSE {sine.train_loss[0]:.3f} -> {sine.train_loss[-1]:.5f}",
                      details={"parity": res["parity"], "gradcheck": res["gradcheck"],
                               "max_abs_diff": worst, "max_rel_error": grad,
                               "sine": {"train_loss": sine.train_loss, "val_epochs": sine.val_epochs,
                                        "val_loss": sine.val_loss, "hidden": sine.config.hidden,
                                        "epochs": sine.config.epochs, "seconds": sine.seconds}})


def _text(out: Path, s: DemoSizes, progress: bool) -> PartResult:
    from lapnet.experiments.gates import GatesConfig, run_gates
    from lapnet.experiments.temperature import TemperatureConfig, run_temperature
    from lapnet.models.charlm import CharLMConfig
    from lapnet.text_runs import TextDataConfig, text_train_config, train_text

    m = train_text(None, out, model=CharLMConfig(vocab_size=1, arch="lstm", embed=32, hidden=s.text_hidden),
                   data=TextDataConfig(seq_len=s.text_seq_len, batch=s.text_batch, val_frac=0.1),
                   train=text_train_config(max_steps=s.text_steps, eval_every=max(1, s.text_steps // 6),
                                           lr=s.text_lr, seed=s.seed, progress=progress),
                   samples=False)  # the samples come once, at three temperatures, below
    # samples come from model.safetensors, the weights with the best held-out loss
    temp = run_temperature(out, TemperatureConfig(sample_temperatures=SAMPLE_TEMPERATURES, prime="To be",
                                                  length=s.sample_length, seed=s.seed))
    temp.save(out / "temperature")
    temp.close()
    samples = {f"temperature {t}": [text] for t, text in temp.metrics["samples"].items()}
    write_json(out / "samples.json", samples)
    gates = run_gates(out, GatesConfig(text="To be or not to be that is the question"))
    gates.save(out / "gates")
    gates.close()
    uniform = _log2(len(_vocab(out)))
    train_bpc = m["train_loss"] / math.log(2) if m.get("train_loss") is not None else float("nan")
    best_bpc = m["best_val_loss"] / math.log(2)
    return PartResult("text", f"character LSTM H={s.text_hidden} on the {m['train_chars']}-character Hamlet "
                              f"passage, {m['steps']} steps",
                      f"bits/char: training {train_bpc:.2f}{' (the passage memorised)' if train_bpc < 1.0 else ''}, "
                      f"held-out lines "
                      f"{best_bpc:.2f} (uniform guess {uniform:.2f})",
                      details={"train_bpc": train_bpc, "best_val_bpc": best_bpc, "uniform_bpc": uniform,
                               "steps": m["steps"], "params": m["params"], "samples": temp.metrics["samples"]})


def _sine(out: Path, s: DemoSizes, progress: bool) -> PartResult:
    from lapnet.experiments.sine import SineConfig, run_sine

    r = run_sine(SineConfig(hidden_sizes=s.sine_hidden_sizes, archs=s.sine_archs, arch_hidden=s.sine_arch_hidden,
                            epochs=s.sine_epochs, horizon=50, seed=42), progress=progress)
    r.save(out)
    r.close()
    by_arch = r.metrics["architecture"]
    text = ", ".join(f"{a.upper()} {v['final_mse']:.1e}" for a, v in by_arch.items())
    return PartResult("sine", f"{'/'.join(a.upper() for a in s.sine_archs)} H={s.sine_arch_hidden} forecast sin(t), "
                              f"{s.sine_epochs} epochs",
                      f"training MSE {text}",
                      details={a: {"final_mse": v["final_mse"], "forecast_mse": v["forecast_mse"]}
                               for a, v in by_arch.items()})


def _trend(out: Path, s: DemoSizes, progress: bool) -> PartResult:
    from lapnet.experiments.trend import TrendConfig, run_trend

    r = run_trend(TrendConfig(hidden=s.trend_hidden, n_train=s.trend_train, epochs=s.trend_epochs), progress=progress)
    r.save(out)
    r.close()
    m = r.metrics
    return PartResult("trend", f"LSTM H={s.trend_hidden} tells rising from falling noisy sequences, "
                               f"{s.trend_epochs} epochs",
                      f"test accuracy {m['test_accuracy']:.2f} (target {m['target']:.2f})",
                      details={k: m[k] for k in ("test_accuracy", "train_accuracy", "reached_target")})


def _gradflow(out: Path, s: DemoSizes, progress: bool) -> PartResult:
    from lapnet.experiments.gradflow import GradflowConfig, run_gradflow

    r = run_gradflow(GradflowConfig(hidden=s.gradflow_hidden, length=s.gradflow_length, steps=s.gradflow_steps,
                                    clip_steps=s.gradflow_clip_steps, n_measure=16), progress=progress)
    r.save(out)
    r.close()
    m = r.metrics
    table = {a: {phase: {"ratio_first_to_last": e[phase]["ratio_first_to_last"],
                         "decay_per_step": e[phase]["decay_per_step"]} for phase in ("init", "trained") if phase in e}
             for a, e in m["archs"].items()}
    phase = "trained" if s.gradflow_steps else "init"
    text = ", ".join(f"{a.upper()} {v[phase]['ratio_first_to_last']:.0e}" for a, v in table.items()
                     if v[phase]["ratio_first_to_last"] is not None)
    agree = m.get("engines_max_rel_diff")
    return PartResult("gradflow", f"||dL/dh_t|| on the adding problem, T={s.gradflow_length}, torch and NumPy",
                      f"||dL/dh_1|| / ||dL/dh_T|| after {s.gradflow_steps} steps: {text}"
                      + (f"; engines agree to {agree:.0e}" if agree is not None else ""),
                      details={"archs": table, "engines_max_rel_diff": agree, "length": s.gradflow_length})


def _race(out: Path, s: DemoSizes, progress: bool, f1: Path | None) -> PartResult:
    from lapnet.race.evaluation import eval_race
    from lapnet.race.prediction import predict_race
    from lapnet.race.training import train_race
    from lapnet.race.training_config import RaceTrainConfig
    from lapnet.race.simulate import simulate

    out.mkdir(parents=True, exist_ok=True)
    train_laps = simulate(s.race_train_races, seed=s.seed + 7)
    test_laps = simulate(s.race_test_races, seed=s.seed + 1007)  # other seeds: races it never saw
    m = train_race(train_laps, out / "run", RaceTrainConfig(hidden_size=s.race_hidden, epochs=s.race_epochs,
                                                              patience=None, seed=s.seed, progress=progress))
    ev = eval_race(out / "run", test_laps)
    write_json(out / "eval_sim.json", {"summary": ev["summary"], "pit_within_3": ev["pit_within_3"],
                                       "phase_macro_f1": ev.get("phase_macro_f1"),
                                       "interval90_coverage": ev["interval90_coverage"]})
    driver = str(test_laps["Driver"].iloc[0])
    predict_race(out / "run", test_laps[test_laps["Race"] == test_laps["Race"].iloc[0]], driver=driver,
                 out=out / "predict")
    best, base = _race_headline(ev["summary"])
    f1s = ev.get("phase_macro_f1") or {}
    text = (f"simulated: MAE 1 lap ahead {best['mae_h1']:.3f} s vs best baseline {base['forecaster']} "
            f"{base['mae_h1']:.3f} s" + (f"; phase F1 {f1s['post_race']:.2f}" if "post_race" in f1s else ""))
    details = {"sim": {"summary": ev["summary"], "phase_macro_f1": f1s,
                       "pit_auc": (ev.get("pit_within_3") or {}).get("auc")}, "train": m.get("train")}
    pit_now = _pit_now(out, test_laps[test_laps["Race"] == test_laps["Race"].iloc[0]], driver)
    if pit_now is not None:
        details["pit_now"] = pit_now
        later = pit_now["now_vs_later"][0]
        text += (f"; pit now ({driver}, after lap {pit_now['lap']}): a new set gains {pit_now['gain_per_lap']:.2f} s/lap"
                 + (f", boxing now vs a lap later {later:+.2f} s by lap {pit_now['lap'] + 10}" if math.isfinite(later) else ""))
    if f1 is not None and s.race_real_files > 0:
        files = sorted(f1.glob("*.csv"))[: s.race_real_files]
        real = eval_race(out / "run", files)
        checks = real.get("phase_checks")  # phases learnt on the simulator, checked on real laps (no labels)
        write_json(out / "eval_real.json", {"races": real["races"], "summary": real["summary"], "phase_checks": checks})
        rbest, rbase = _race_headline(real["summary"])
        races = f"{len(files)} race{'' if len(files) == 1 else 's'}"
        text += (f"; real 2023 ({races}): {rbest['mae_h1']:.3f} s vs {rbase['forecaster']} "
                 f"{rbase['mae_h1']:.3f} s")
        auc = (checks or {}).get("post_race", {}).get("push_vs_conserve_auc", float("nan"))
        if auc == auc:  # NaN when a tiny model calls one phase only (--quick)
            text += f", laps called push vs conserve faster: AUC {auc:.2f}"
        details["real"] = {"races": real["races"], "summary": real["summary"], "phase_checks": checks}
    elif f1 is None:
        text += "; no real races found (give --f1-data DIR, or set LAPNET_F1_DATA, to score the run on them too)"
    return PartResult("race", f"GRU H={s.race_hidden} forecaster + bidirectional tagger on {s.race_train_races} "
                              f"simulated races, scored on {s.race_test_races} others",
                      text, details=details)


def _pit_now(out: Path, laps, driver: str) -> dict | None:
    """`lapnet race pit-now` for `driver` at the first lap from mid-race where a what-if is made
    -> pit_now.json, and the headline numbers; None when the run kept no FreshStart (its check on
    these tiny simulated runs may drop it: config.json says why) or no lap has a what-if."""
    import numpy as np

    from lapnet.race.inputs import load_laps, race_sequences, subset_sequences
    from lapnet.race.runs import load_run, run_net, to_seconds
    from lapnet.race.whatif import pit_now, pit_now_race

    run = load_run(out / "run")
    if getattr(run.model, "fresh", None) is None:
        return None
    seq, _ = race_sequences(load_laps(laps)[0])
    i = next(k for k, key in enumerate(seq.keys) if key[1] == driver)
    sub = subset_sequences(seq, np.array([i]))
    what = pit_now(run.model, sub, to_seconds(sub, run_net(run.model, sub)["mean"]))
    half = int(sub.lengths[0]) // 2
    at = [t for t in np.flatnonzero(what.possible[0]) if t >= half]
    if not at:
        return None
    res = pit_now_race(out / "run", laps, driver=driver, lap=int(sub.lap_number[0, at[0]]))
    write_json(out / "pit_now.json", res)
    new = res["compounds"][0]
    return {"lap": res["lap"], "gain_per_lap": new["gain_per_lap"], "delta": new["delta"],
            "now_vs_later": new["now_vs_later"], "stop_cost": new["stop_cost"]}


def _race_headline(summary: list[dict]) -> tuple[dict, dict]:
    """(the forecaster's row, the best baseline's row by MAE one lap ahead)."""
    rows = {r["forecaster"]: r for r in summary}
    base = min((r for n, r in rows.items() if n != "forecaster"), key=lambda r: r["mae_h1"])
    return rows["forecaster"], base


def _vocab(run: Path) -> list[str]:
    from lapnet.checkpoint import read_json

    v = read_json(run / "vocab.json")
    return list(v["chars"] if isinstance(v, dict) else v)


def _log2(n: int) -> float:
    return math.log2(max(n, 1))
