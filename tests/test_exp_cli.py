"""`lapnet sine | trend | adding | gradflow | gates | temperature` at tiny sizes: real numbers,
decodable PNGs, metrics.json as --help promises, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from lapnet.checkpoint import save_tensors, write_json


def _load(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    for name in metrics["figures"]:
        img = plt.imread(out / name)  # decodes, or raises
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300, name
    return metrics


def test_sine_tiny(run_cli, tmp_path):
    out = tmp_path / "sine"
    code, stdout, err = run_cli("sine", "--hidden", "2,4", "--archs", "rnn,gru", "--arch-hidden", "4",
                                "--epochs", "8", "--horizon", "5", "--out", out, "--quiet", "--json")
    assert code == 0, err
    m = _load(out)
    assert json.loads(stdout)["table"] == m["table"]
    assert set(m["figures"]) == {"loss_curves.png", "forecast.png"}
    assert set(m["hidden_size"]) == {"2", "4"} and set(m["architecture"]) == {"rnn", "gru"}
    for r in [*m["hidden_size"].values(), *m["architecture"].values()]:
        assert len(r["loss_curve"]) == 8 and len(r["forecast"]) == 5
        assert r["loss_curve"][-1] < r["loss_curve"][0]  # Adam at lr 0.01 lowers the loss in 8 steps
        assert r["final_mse"] == pytest.approx(r["final_mse"]) and r["final_mse"] > 0


def test_trend_reaches_the_notebooks_target(run_cli, tmp_path):
    out = tmp_path / "trend"
    code, _, err = run_cli("trend", "--out", out, "--quiet")  # the notebook's full set-up: ~2 s
    assert code == 0, err
    m = _load(out)
    assert m["test_accuracy"] >= 0.90 and m["reached_target"] is True
    assert len(m["curves"]["test_accuracy"]) == 50 and m["config"]["hidden"] == 32
    assert m["config"]["n_train"] == 500 and m["config"]["n_test"] == 100


def test_trend_bidirectional_variable_length(run_cli, tmp_path):
    out = tmp_path / "trend2"
    code, _, err = run_cli("trend", "--bidirectional", "--variable-length", "--min-length", "4", "--arch", "gru",
                           "--hidden", "8", "--epochs", "15", "--train", "200", "--test", "60", "--out", out, "--quiet")
    assert code == 0, err
    m = _load(out)
    assert m["config"]["bidirectional"] is True and m["config"]["min_len"] == 4
    assert m["test_accuracy"] > 0.8


def test_adding_lstm_beats_rnn_at_the_smallest_setting(run_cli, tmp_path):
    out = tmp_path / "adding"
    code, _, err = run_cli("adding", "--archs", "rnn,lstm", "--lengths", "10", "--hidden", "16", "--max-steps", "200",
                           "--eval-every", "50", "--keep-going", "--seed", "0", "--out", out, "--quiet")
    assert code == 0, err
    m = _load(out)
    rnn, lstm = m["runs"]["rnn"]["10"], m["runs"]["lstm"]["10"]
    assert lstm["steps"] == [50, 100, 150, 200] and len(lstm["test_mse"]) == 4
    assert m["baseline_mse"] == pytest.approx(1 / 6)
    assert lstm["final_test_mse"] < 0.1 < m["baseline_mse"]  # learning, not guessing the mean
    assert lstm["final_test_mse"] < rnn["final_test_mse"]
    assert {r["arch"] for r in m["table"]} == {"RNN", "LSTM"}


def test_gradflow_engines_agree(run_cli, tmp_path):
    out = tmp_path / "gf"
    code, _, err = run_cli("gradflow", "--archs", "rnn,lstm,gru", "--hidden", "4", "--length", "8", "--steps", "3",
                           "--clip-steps", "4", "--engine", "both", "--out", out, "--quiet")
    assert code == 0, err
    m = _load(out)
    assert set(m["figures"]) == {"gradflow.png", "spectrum.png", "clipping.png"}
    assert m["engines_max_rel_diff"] < 1e-9
    for arch in ("rnn", "lstm", "gru"):
        for phase in ("init", "trained"):
            e = m["archs"][arch][phase]
            assert len(e["norms"]) == 8
            np.testing.assert_allclose(e["norms"], e["norms_numpy"], rtol=1e-9)
            assert e["norms"][-1] < e["norms"][0]  # the gradient fades with distance at T=8
    assert set(m["archs"]["lstm"]["init"]["spectrum"]) == {"i", "f", "g", "o"}
    clip = m["clipping"]["runs"]
    assert set(clip) == {"none", "global norm", "element-wise"}
    assert clip["global norm"]["mean_cosine_norm_clip"] == pytest.approx(1.0)


def _tiny_run(path: Path, arch: str = "lstm", layers: int = 1) -> Path:
    from lapnet.data.text import Vocab
    from lapnet.models.charlm import CharLM, CharLMConfig

    vocab = Vocab.from_text("To be or not to be, that is the question")
    cfg = CharLMConfig(vocab_size=len(vocab), arch=arch, embed=6, hidden=10, layers=layers)
    torch.manual_seed(0)
    model = CharLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "bias" in n:
                p.normal_(0.0, 1.0)  # non-zero biases: the recomputation must use both
    path.mkdir()
    write_json(path / "config.json", {"kind": "charlm", "engine": "torch", "model": cfg.to_json()})
    write_json(path / "vocab.json", vocab.to_json())
    save_tensors(path / "model.safetensors", {k: v.numpy() for k, v in model.state_dict().items()}, {})
    return path


@pytest.mark.parametrize("arch,layers", [("lstm", 1), ("gru", 2)])
def test_gates_reproduce_the_runs_hidden_states(run_cli, tmp_path, arch, layers):
    from lapnet.text_runs import load_run

    run = _tiny_run(tmp_path / "run", arch, layers)
    out, npz = tmp_path / "gates", tmp_path / "states.npz"
    code, _, err = run_cli("gates", run, "--text", "To be or not to be", "--export", npz, "--out", out, "--quiet")
    assert code == 0, err
    m = _load(out)
    assert set(m["figures"]) == {"gates.png", "hidden.png"}
    assert m["reproduces_model"] is True and m["max_abs_diff"] < 1e-5 and m["layer"] == layers - 1
    names = ("i", "f", "g", "o") if arch == "lstm" else ("r", "z", "n")
    assert set(m["gates"]) == set(names)
    states = np.load(npz)
    assert "".join(states["chars"]) == "To be or not to be"
    for g in names:
        v = states[f"layer{layers - 1}_{g}"]
        assert v.shape == (18, 10)
        lo, hi = (-1, 1) if g in "gn" else (0, 1)
        assert v.min() >= lo and v.max() <= hi
        if g not in "gn":
            s = m["gates"][g]
            assert s["share_below_0.1"] == pytest.approx(np.mean(v < 0.1), abs=1e-6)
    # the exported top-layer h is the model's own output
    loaded = load_run(run)
    ids = torch.from_numpy(loaded.vocab.encode("To be or not to be"))[None]
    with torch.no_grad():
        out_h, _ = loaded.model.rnn(loaded.model.embed(ids))
    np.testing.assert_allclose(states[f"layer{layers - 1}_h"], out_h[0].numpy(), atol=1e-5)


def test_temperature_with_and_without_a_run(run_cli, tmp_path):
    out = tmp_path / "t"
    code, _, err = run_cli("temperature", "--out", out, "--quiet")
    assert code == 0, err
    m = _load(out)
    e = {t: v["entropy_bits"] for t, v in m["notebook"].items()}
    assert e["0.2"] < e["1.0"] < e["2.0"] <= 3.0  # 8 outcomes: at most 3 bits
    np.testing.assert_allclose(m["notebook"]["1.0"]["probs"], torch.softmax(torch.tensor(m["logits"]), 0).numpy(),
                               rtol=1e-6)
    run = _tiny_run(tmp_path / "run")
    out2 = tmp_path / "t2"
    code, _, err = run_cli("temperature", run, "--temperatures", "0.5,1.5", "--prime", "To be", "--length", "12",
                           "--out", out2, "--quiet")
    assert code == 0, err
    m2 = _load(out2)
    assert set(m2["figures"]) == {"temperature.png", "temperature_model.png"}
    assert set(m2["samples"]) == {"0.5", "1.5"}
    assert all(s.startswith("To be") and len(s) == 5 + 12 for s in m2["samples"].values())


@pytest.mark.parametrize("args,needle", [
    (("sine", "--archs", "rnn,transformer"), "unknown architecture 'transformer'"),
    (("adding", "--archs", "lstm,foo"), "unknown architecture 'foo'"),
    (("trend", "--hidden", "0"), "hidden size must be at least 1"),
    (("sine", "--hidden", "8,0"), "hidden size must be at least 1"),
    (("adding", "--lengths", "50,abc"), "--lengths"),
    (("gradflow", "--engine", "jax"), "--engine"),
    (("temperature", "--temperatures", "0.5,-1"), "0 (greedy) or positive, got -1.0"),
])
def test_bad_input_is_one_line_exit_2(run_cli, tmp_path, args, needle):
    code, _, err = run_cli(*args, "--out", tmp_path / "x", "--quiet")
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing written


def test_out_that_is_a_file_and_text_outside_the_vocabulary(run_cli, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    code, _, err = run_cli("trend", "--out", f, "--quiet")
    assert code == 2 and "is a file" in err and err.count("\n") == 1
    assert f.read_text() == "keep me"
    run = _tiny_run(tmp_path / "run")
    code, _, err = run_cli("gates", run, "--text", "To be #or Z", "--out", tmp_path / "g", "--quiet")
    assert code == 2 and "'#'" in err and "'Z'" in err and err.count("\n") == 1
    for args, needle in ((("--layer", "3"), "--layer 3"), (("--export", tmp_path / "no" / "s.npz"), "does not exist"),
                         (("--text", ""), "empty")):
        code, _, err = run_cli("gates", run, *args, "--out", tmp_path / "g", "--quiet", "--force")
        assert code == 2 and needle in err and err.count("\n") == 1, err
    code, _, err = run_cli("gates", tmp_path / "missing", "--out", tmp_path / "g", "--quiet")
    assert code == 2 and "no such run directory" in err


def test_sine_on_the_numpy_engine_learns(run_cli, tmp_path):
    code, out, err = run_cli("sine", "--hidden", "8", "--archs", "gru", "--arch-hidden", "8", "--epochs", "40",
                             "--engine", "numpy", "--out", tmp_path / "s", "--json", "--quiet")
    assert code == 0, err
    m = json.loads(out)
    assert m["config"]["engine"] == "numpy"
    for r in (m["hidden_size"]["8"], m["architecture"]["gru"]):
        assert r["final_mse"] < 0.1 * r["loss_curve"][0]  # the NumPy engine's loss falls by 10x
    assert (tmp_path / "s" / "loss_curves.png").stat().st_size > 0


def test_sine_unknown_engine_is_refused(run_cli, tmp_path):
    code, _, err = run_cli("sine", "--engine", "jax", "--out", tmp_path / "s")
    assert code == 2 and "jax" in err


def test_threads_reach_numpys_blas_as_in_text_train(run_cli, tmp_path):
    """`--threads` sets torch's, OpenBLAS's and the NumPy engine's threads alike, as
    `text train --threads` does (before, sine/trend/adding set torch's only)."""
    from lapnet.cli.common import set_threads
    from lapnet.scratch import blas

    set_threads(1)
    try:
        code, _, err = run_cli("sine", "--hidden", "2", "--archs", "rnn", "--arch-hidden", "2", "--epochs", "2",
                               "--horizon", "2", "--engine", "numpy", "--threads", "2", "--out", tmp_path / "s",
                               "--quiet")
        assert code == 0, err
        assert torch.get_num_threads() == 2
        assert blas.blas_threads() in (2, None)  # None: this NumPy's BLAS cannot be reached
        assert blas._ENGINE_THREADS == 2  # the engine's kernels use them too
    finally:
        set_threads(1)  # conftest's setting, for the tests after this one
    assert torch.get_num_threads() == 1 and blas._ENGINE_THREADS == 1


@pytest.mark.parametrize("given", [
    ("--arch", "rnn", "lstm", "gru"),  # as DESIGN.md writes it
    ("--arch", "rnn", "--arch", "lstm", "--arch", "gru"),
    ("--arch", "rnn,lstm", "gru"),
    ("--archs", "rnn,lstm,gru"),  # the older spelling still works
    ("rnn", "lstm", "gru"),  # the ARCH arguments alone (the usage line shows them)
    (),  # the default: all three
])
def test_gradflow_arch_spellings(run_cli, tmp_path, given):
    code, out, err = run_cli("gradflow", *given, "--hidden", "3", "--length", "4", "--steps", "0", "--clip-steps", "0",
                             "--engine", "torch", "--out", tmp_path / "gf", "--quiet", "--json")
    assert code == 0, err
    assert list(json.loads(out)["archs"]) == ["rnn", "lstm", "gru"]


@pytest.mark.parametrize("cmd", ["sine", "adding"])
def test_sine_and_adding_take_arch_as_written(run_cli, tmp_path, cmd):
    sizes = (("--hidden", "2", "--arch-hidden", "2", "--epochs", "1", "--horizon", "1") if cmd == "sine" else
             ("--lengths", "5", "--hidden", "2", "--batch", "2", "--max-steps", "1", "--eval-every", "1"))
    code, out, err = run_cli(cmd, "--arch", "gru", "rnn", *sizes, "--out", tmp_path / cmd, "--quiet", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert list(m["architecture"] if cmd == "sine" else m["runs"]) == ["gru", "rnn"]


@pytest.mark.parametrize("args,needle", [
    (("gradflow", "--arch", "rnn", "--archs", "gru"), "give --arch or --archs, not both"),
    (("gradflow", "--arch", "rnn", "transformer"), "--arch: unknown architecture 'transformer'"),
    (("sine", "--arch", "lstm", "gpt"), "--arch: unknown architecture 'gpt'"),
])
def test_arch_mistakes_are_one_line(run_cli, tmp_path, args, needle):
    code, _, err = run_cli(*args, "--out", tmp_path / "o")
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_gates_and_temperature_take_device(run_cli, tmp_path):
    """DESIGN: every command that runs a trained net takes --device; this machine has no CUDA."""
    run = _tiny_run(tmp_path / "run")
    for args in (("gates", run), ("temperature", run), ("temperature",)):
        code, _, err = run_cli(*args, "--device", "cuda", "--out", tmp_path / "o", "--quiet")
        assert code == 2 and err == "lapnet: error: --device cuda: no CUDA device is available on this machine\n", err
        assert not (tmp_path / "o").exists()
        code, _, err = run_cli(*args, "--device", "tpu", "--out", tmp_path / "o", "--quiet")
        assert code == 2 and "--device tpu: expected auto, cpu or cuda" in err
    code, _, err = run_cli("gates", run, "--device", "cpu", "--out", tmp_path / "g", "--quiet")
    assert code == 0 and (tmp_path / "g" / "gates.png").is_file(), err


def test_numpy_engine_refuses_a_gpu_in_the_same_words_everywhere(run_cli, tmp_path):
    """`sine`/`trend`/`adding` and `text train` once worded the same refusal differently (the
    experiments said 'no CUDA device', which on a machine with one would not be the reason)."""
    want = "lapnet: error: --device cuda: --engine numpy runs on the CPU only (use --device cpu or auto)\n"
    for args in (("sine",), ("trend",), ("text", "train", "-")):
        code, _, err = run_cli(*args, "--engine", "numpy", "--device", "cuda", "--out", tmp_path / "o")
        assert (code, err) == (2, want), (args, err)
        assert not (tmp_path / "o").exists()
