"""The bad-input sweep: every command, fed bad input, keeps the same contract.

Exit code 2, one line on stderr starting `lapnet: error:` that names the problem, no Python
traceback, and no file created or changed. Plus Hypothesis fuzzing of the text and
lap-table loaders: any input either loads or raises LapnetError, never anything else.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lapnet.errors import LapnetError

LAP_COLUMNS = "Driver,Team,LapNumber,LapTime,Stint,Compound,TyreLife,TrackStatus,Position"


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A directory of bad (and a few good) inputs, and a tiny trained text run."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 40)
    (d / "latin1.txt").write_bytes("caf\xe9 au lait, na\xefve ".encode("latin-1") * 50)
    (d / "short.txt").write_text("abc")
    (d / "a_file").write_text("I am a file, not a directory\n")
    (d / "precious.npz").write_bytes(b"someone else's arrays")
    (d / "notes.html").write_text("<!DOCTYPE html><p>my own notes</p>\n")
    (d / "huge_line.csv").write_text(LAP_COLUMNS + "\n" + "x" * 2_000_000 + "\n")
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text(LAP_COLUMNS + "\n")
    (d / "wrong_columns.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    rows = [f"VER,Red Bull,{i},{90 + 0.1 * i},1,SOFT,{i},1,1" for i in range(1, 8)]
    (d / "bad_time.csv").write_text(LAP_COLUMNS + "\n" + "\n".join(rows[:3] + ["VER,Red Bull,4,soon,1,SOFT,4,1,1"]) + "\n")
    (d / "negative.csv").write_text(LAP_COLUMNS + "\n" + "\n".join(rows[:3] + ["VER,Red Bull,4,-91.0,1,SOFT,4,1,1"]) + "\n")
    (d / "bad_compound.csv").write_text(LAP_COLUMNS + "\n" + "\n".join(rows[:3] + ["VER,Red Bull,4,91.0,1,BANANA,4,1,1"]) + "\n")
    (d / "duplicate.csv").write_text(LAP_COLUMNS + "\n" + "\n".join(rows[:3] + [rows[2]]) + "\n")
    (d / "nan_times.csv").write_text(LAP_COLUMNS + "\n" + "\n".join(
        f"VER,Red Bull,{i},,1,SOFT,{i},1,1" for i in range(1, 8)) + "\n")
    (d / "calib_bad.json").write_text('{"not": "a calibration"}')
    (d / "calib_garbage.json").write_text("{{{{")
    # runs that are not runs
    (d / "run_missing_weights").mkdir()
    for name, payload in {
        "run_pickle": pickle.dumps({"weight": np.zeros(3)}),  # a pickle named like a checkpoint: never unpickled
        "run_truncated": None,
        "run_garbage": b"\x00\x01garbage" * 100,
        "run_foreign": None,
        "run_bitflip": None,
    }.items():
        (d / name).mkdir()
        if payload is not None:
            (d / name / "model.safetensors").write_bytes(payload)
    return d


@pytest.fixture(scope="module")
def text_run(world):
    """A tiny real text run, and corrupt copies of it."""
    from lapnet.cli import main

    run = world / "text_run"
    try:
        main(["text", "train", "--hidden", "8", "--embed", "4", "--seq-len", "16", "--batch", "4",
              "--epochs", "1", "--out", str(run), "--quiet"])
    except SystemExit as e:
        assert e.code in (0, None)
    good = (run / "model.safetensors").read_bytes()
    for name in ("run_truncated", "run_foreign", "run_pickle", "run_garbage", "run_missing_weights", "run_bitflip"):
        for f in ("config.json", "vocab.json"):
            (world / name / f).write_bytes((run / f).read_bytes())
    (world / "run_truncated" / "model.safetensors").write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[-3] ^= 0x10  # one bit of the last weight: the layout still reads, the contents do not
    (world / "run_bitflip" / "model.safetensors").write_bytes(bytes(flipped))
    from safetensors.numpy import save

    (world / "run_foreign" / "model.safetensors").write_bytes(save({"embedding": np.zeros((2, 2), np.float32)}))
    return run


TEXT_CASES = [
    # (name, argv with {w} = bad-input dir, {run} = a good text run, what stderr must mention)
    ("missing file", "text train {w}/nope.txt --out {w}/o1", "nope.txt"),
    ("empty file", "text train {w}/empty.txt --out {w}/o1", "empty"),
    ("binary file", "text train {w}/binary.bin --out {w}/o1", "UTF-8"),
    ("not utf-8", "text train {w}/latin1.txt --out {w}/o1", "UTF-8"),
    ("shorter than a window", "text train {w}/short.txt --out {w}/o1", "short"),
    ("a directory as file", "text train {w} --out {w}/o1", ""),
    ("hidden 0", "text train --hidden 0 --out {w}/o1", "hidden"),
    ("hidden negative", "text train --hidden -4 --out {w}/o1", "hidden"),
    ("layers 0", "text train --layers 0 --out {w}/o1", "layers"),
    ("seq-len 0", "text train --seq-len 0 --out {w}/o1", "seq"),
    ("batch 0", "text train --batch 0 --out {w}/o1", "batch"),
    ("lr negative", "text train --lr -1 --out {w}/o1", "lr"),
    ("lr nan", "text train --lr nan --out {w}/o1", "lr"),
    ("dropout 1.5", "text train --dropout 1.5 --out {w}/o1", "dropout"),
    ("epochs 0", "text train --epochs 0 --out {w}/o1", "epochs"),
    ("minutes negative", "text train --minutes -1 --out {w}/o1", "minutes"),
    ("unknown arch", "text train --arch transformer --out {w}/o1", "transformer"),
    ("unknown engine", "text train --engine jax --out {w}/o1", "jax"),
    ("val-frac 1.5", "text train --val-frac 1.5 --out {w}/o1", "val"),
    ("unknown device", "text train --device tpu --out {w}/o1", "tpu"),
    ("unknown option", "text train --frobnicate 3", "frobnicate"),
    ("out is a file", "text train --out {w}/a_file", "a_file"),
    ("run dir exists", "text train --epochs 1 --out {run}", "already holds a run"),
    ("resume nothing", "text train --resume --out {w}/o2", "resume"),
    ("sample: no run", "text sample {w}/no_run", "no_run"),
    ("sample: missing weights", "text sample {w}/run_missing_weights", "model.safetensors"),
    ("sample: truncated checkpoint", "text sample {w}/run_truncated", "run_truncated"),
    ("sample: garbage checkpoint", "text sample {w}/run_garbage", "run_garbage"),
    ("sample: pickle checkpoint", "text sample {w}/run_pickle", "run_pickle"),
    ("sample: foreign checkpoint", "text sample {w}/run_foreign", "run_foreign"),
    ("sample: bit-flipped checkpoint", "text sample {w}/run_bitflip", "checksum"),
    ("sample: temperature < 0", "text sample {run} --temperature -0.5", "temperature"),
    ("sample: length 0", "text sample {run} --length 0", "length"),
    ("sample: top-p 0", "text sample {run} --top-p 0", "top-p"),
    ("sample: top-p > 1", "text sample {run} --top-p 1.5", "top-p"),
    ("sample: top-k 0", "text sample {run} --top-k 0", "top-k"),
    ("sample: prime outside vocab", "text sample {run} --prime Zebra#~", "~"),
    ("sample: num-samples 0", "text sample {run} --num-samples 0", "num-samples"),
    ("eval: missing file", "text eval {run} {w}/nope.txt", "nope.txt"),
    ("eval: empty file", "text eval {run} {w}/empty.txt", "empty"),
    ("eval: binary file", "text eval {run} {w}/binary.bin", "UTF-8"),
    ("eval: pickle checkpoint", "text eval {w}/run_pickle {w}/short.txt", "run_pickle"),
]

EXPERIMENT_CASES = [
    ("sine: hidden 0", "sine --hidden 8,0 --out {w}/e1", "hidden"),
    ("sine: unknown arch", "sine --archs rnn,bogus --out {w}/e1", "bogus"),
    ("sine: out is a file", "sine --out {w}/a_file", "a_file"),
    ("sine: epochs 0", "sine --epochs 0 --out {w}/e1", "epochs"),
    ("trend: hidden 0", "trend --hidden 0 --out {w}/e1", "hidden"),
    ("trend: out is a file", "trend --out {w}/a_file", "a_file"),
    ("adding: unknown arch", "adding --archs lstm,cnn --out {w}/e1", "cnn"),
    ("adding: T 0", "adding --lengths 0 --out {w}/e1", "0"),
    ("trend: unknown engine", "trend --engine jax --out {w}/e1", "jax"),
    ("adding: unknown engine", "adding --engine jax --out {w}/e1", "jax"),
    ("trend: unknown device", "trend --device tpu --out {w}/e1", "tpu"),
    ("adding: unknown device", "adding --device tpu --out {w}/e1", "tpu"),
    ("sine: unknown device", "sine --device tpu --out {w}/e1", "tpu"),
    ("gradflow: unknown arch", "gradflow --archs mamba --out {w}/e1", "mamba"),
    ("gradflow: hidden 0", "gradflow --hidden 0 --out {w}/e1", "hidden"),
    ("gradflow: radius past overflow", "gradflow --radius 1e300 --out {w}/e1", "--radius must be at most 100"),
    ("gates: no run", "gates {w}/no_run --text abc --out {w}/e1", "no_run"),
    ("gates: pickle run", "gates {w}/run_pickle --text abc --out {w}/e1", "run_pickle"),
    ("gates: text outside vocab", "gates {run} --text Zq~# --out {w}/e1", "~"),
    ("gates: empty text", "gates {run} --text '' --out {w}/e1", "text"),
    ("temperature: negative", "temperature --temperatures 0.5,-1 --out {w}/e1", "temperature"),
    ("shapes: hidden 0", "shapes --hidden 0", "hidden"),
    ("shapes: input-size negative", "shapes --input-size -2", "input"),
    ("shapes: lengths too long", "shapes --batch 3 --seq-len 5 --lengths 9,3,2", "9"),
    ("shapes: lengths vs batch", "shapes --batch 3 --seq-len 5 --lengths 5,3", "batch"),
    ("shapes: unknown arch", "shapes --arch transformer", "transformer"),
    ("params: hidden 0", "params --hidden 0", "hidden"),
    ("diagrams: out is a file", "diagrams --out {w}/a_file", "a_file"),
    ("hidden: out is a file", "hidden --out {w}/a_file", "a_file"),
    ("gates: export over a file", "gates {run} --export {w}/precious.npz --out {w}/e1", "precious.npz"),
    ("report: no run", "report {w}/no_run", "no_run"),
    ("report: run is a file", "report {w}/a_file", "a_file"),
    ("report: out over a file", "report {run} --out {w}/a_file", "a_file"),
    ("report: out over an html page", "report {run} --out {w}/notes.html", "notes.html"),
    ("demo: out is a file", "demo --quick --out {w}/a_file", "a_file"),
]

RACE_CASES = [
    ("simulate: races 0", "race simulate --races 0 --out {w}/sim.csv", "races"),
    ("simulate: races negative", "race simulate --races -3 --out {w}/sim.csv", "races"),
    ("simulate: bad suffix", "race simulate --out {w}/sim.xlsx", "xlsx"),
    ("simulate: garbage calibration", "race simulate --calibration {w}/calib_garbage.json --out {w}/sim.csv", "calib"),
    ("simulate: foreign calibration", "race simulate --calibration {w}/calib_bad.json --out {w}/sim.csv", "calib"),
    ("simulate: overwrite a file", "race simulate --out {w}/a_file", "a_file"),
    ("calibrate: missing", "race calibrate {w}/nope.csv --out {w}/c.json", "nope.csv"),
    ("calibrate: empty", "race calibrate {w}/empty.csv --out {w}/c.json", "empty"),
    ("calibrate: wrong columns", "race calibrate {w}/wrong_columns.csv --out {w}/c.json", "Driver"),
    ("train: missing", "race train {w}/nope.csv --out {w}/r1", "nope.csv"),
    ("train: empty", "race train {w}/empty.csv --out {w}/r1", "empty"),
    ("train: header only", "race train {w}/header_only.csv --out {w}/r1", ""),
    ("train: binary", "race train {w}/binary.bin --out {w}/r1", ""),
    ("train: huge line", "race train {w}/huge_line.csv --out {w}/r1", ""),
    ("train: wrong columns", "race train {w}/wrong_columns.csv --out {w}/r1", "Driver"),
    ("train: unparseable time", "race train {w}/bad_time.csv --out {w}/r1", "LapTime"),
    ("train: negative time", "race train {w}/negative.csv --out {w}/r1", "negative"),
    ("train: unknown compound", "race train {w}/bad_compound.csv --out {w}/r1", "BANANA"),
    ("train: duplicate laps", "race train {w}/duplicate.csv --out {w}/r1", "duplicate"),
    ("train: no usable laps", "race train {w}/nan_times.csv --out {w}/r1", ""),
    ("train: out is a file", "race train {w}/negative.csv --out {w}/a_file", ""),
    ("eval: no run", "race eval {w}/no_run {w}/header_only.csv", "no_run"),
    ("eval: pickle run", "race eval {w}/run_pickle {w}/header_only.csv", "run_pickle"),
    ("eval: a text run", "race eval {run} {w}/header_only.csv", ""),
    ("predict: no run", "race predict {w}/no_run {w}/header_only.csv", "no_run"),
    ("live: garbage run", "race live {w}/run_garbage {w}/header_only.csv", "run_garbage"),
]


def _argv(template: str, world: Path, run: Path) -> list[str]:
    import shlex

    return shlex.split(template.format(w=world, run=run))


@pytest.mark.parametrize("name,template,mention", TEXT_CASES + EXPERIMENT_CASES + RACE_CASES,
                         ids=[c[0] for c in TEXT_CASES + EXPERIMENT_CASES + RACE_CASES])
def test_bad_input_contract(name, template, mention, world, text_run, run_cli):
    before = _snapshot(world)
    code, out, err = run_cli(*_argv(template, world, text_run))
    assert code == 2, f"exit {code}\nstdout: {out[-500:]}\nstderr: {err[-1500:]}"
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in err.splitlines() if line.startswith("lapnet: error:")]
    assert len(errors) == 1, err[-1500:]
    assert mention.lower() in errors[0].lower(), errors[0]
    assert _snapshot(world) == before, "a file was created or changed"


def test_force_replaces_an_existing_export_or_page_and_a_report_replaces_its_own(world, text_run, run_cli, tmp_path):
    npz, page = tmp_path / "states.npz", tmp_path / "page.html"
    npz.write_bytes(b"old")
    page.write_text("my notes")
    code, _, err = run_cli("gates", text_run, "--export", npz, "--out", tmp_path / "g", "--quiet", "--force")
    assert code == 0 and set(np.load(npz)) >= {"ids", "chars"}, err
    code, _, err = run_cli("report", text_run, "--out", page, "--force")
    assert code == 0 and page.read_text().startswith("<!DOCTYPE html>"), err
    code, _, err = run_cli("report", text_run, "--out", page)  # an earlier report is regenerated without --force
    assert code == 0, err


def test_unpickling_is_never_attempted(world, text_run, monkeypatch):
    """Loading a pickle named like a checkpoint must not call pickle at all."""
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    from lapnet.checkpoint import load_tensors

    with pytest.raises(LapnetError):
        load_tensors(world / "run_pickle" / "model.safetensors")
    assert calls == []


# --- fuzzing the loaders -------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_fuzz_text_loader(tmp_path, data):
    from lapnet.data.text import read_text

    path = tmp_path / "fuzz.txt"
    path.write_bytes(data)
    try:
        text = read_text(path)
    except LapnetError:
        return
    assert isinstance(text, str) and len(text) > 0


_cell = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                  st.text(max_size=8), st.sampled_from(["SOFT", "MEDIUM", "HARD", "0 days 00:01:31.5", "24", "VER"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(*[_cell] * 9), min_size=0, max_size=6),
       drop=st.sets(st.sampled_from(LAP_COLUMNS.split(",")), max_size=3))
def test_fuzz_lap_table_loader(tmp_path, rows, drop):
    import pandas as pd

    from lapnet.race.clean import clean_laps
    from lapnet.race.io import read_laps

    df = pd.DataFrame(rows, columns=LAP_COLUMNS.split(",")).drop(columns=sorted(drop))
    path = tmp_path / "fuzz.csv"
    df.to_csv(path, index=False)
    try:
        laps = read_laps(path)
        clean_laps(laps)
    except LapnetError:
        return
