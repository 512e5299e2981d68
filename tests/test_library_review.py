"""lapnet used as a Python library: bad input is one LapnetError in the library's own words.

One test (or a few) per finding of the library review: meta tensors, decay_summary's Nones,
run_recurrent's checks before packing, the scratch layers' arguments, the models' batch axis,
library words (not CLI flags, which the CLI still says), sampling settings, trace_gates' input,
the training protocols' docstrings, articles in messages, and two statements of engine.md.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lapnet import scratch
from lapnet.errors import LapnetError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "guide"
NO_DATA = "has no data (meta device): load or initialise its weights first"


# --- 1. the meta device ---------------------------------------------------------------------


def test_a_module_on_the_meta_device_is_one_lapnet_error():
    meta = torch.nn.LSTM(3, 4, device="meta")
    with pytest.raises(LapnetError) as e:
        scratch.from_torch(meta)
    assert str(e.value) == f"from_torch: the LSTM {NO_DATA}"
    with pytest.raises(LapnetError) as e:
        scratch.LSTM(3, 4).load_state_dict(meta.state_dict())
    assert str(e.value) == f"state_dict['weight_ih_l0'] {NO_DATA}"
    with pytest.raises(LapnetError, match=r"^lstm input has no data \(meta device\)"):
        scratch.LSTM(3, 4).forward(torch.zeros(1, 2, 3, device="meta"))
    from lapnet.models import make_recurrent, run_recurrent

    with pytest.raises(LapnetError) as e:
        run_recurrent(make_recurrent("gru", 3, 4).to("meta"), torch.zeros(1, 2, 3))
    assert str(e.value) == f"the GRU {NO_DATA}"


# --- 2. decay_summary: None where a norm is 0 or no fit is possible -------------------------


def test_decay_summary_gives_none_instead_of_a_number_made_up_by_the_log_floor():
    from lapnet.experiments.gradflow import decay_summary

    d = decay_summary(np.array([1.0, 0.0, 0.25]))
    assert d == {"ratio_first_to_last": 0.25, "decay_per_step": 0.5, "first_step_factor": None,
                 "decay_fit_beyond_first": None}  # was 2.5e+299 (log(0) floored at 1e-300) and 0.0
    assert decay_summary(np.array([1.0, 0.5]))["decay_fit_beyond_first"] is None  # one point past the first: was NaN
    d = decay_summary(np.array([1.0, 0.5, 0.25, 0.125]))
    assert d["first_step_factor"] == 0.5 and d["decay_fit_beyond_first"] == pytest.approx(0.5, abs=1e-15)


def test_gradflow_at_t2_writes_null_not_nan_for_the_fit(run_cli, tmp_path):
    """The caller (`lapnet gradflow`, its table and metrics.json) takes the None: JSON null."""
    import json

    code, out, err = run_cli("gradflow", "--arch", "rnn", "--hidden", "4", "--length", "2", "--steps", "0",
                             "--clip-steps", "0", "--engine", "torch", "--out", tmp_path / "g", "--json")
    assert code == 0, err
    assert "NaN" not in out
    init = json.loads(out)["archs"]["rnn"]["init"]
    assert init["decay_fit_beyond_first"] is None and init["first_step_factor"] > 0


# --- 3. run_recurrent checks D and the state before packing ---------------------------------


def test_run_recurrent_checks_the_input_and_the_state_before_torch_does():
    from lapnet.models import make_recurrent, run_recurrent

    m = make_recurrent("lstm", 2, 4)
    x = torch.randn(3, 6, 2)
    with pytest.raises(LapnetError) as e:  # was torch's "INDICES element is out of DATA bounds"
        run_recurrent(m, x, [6, 2, 3], (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    assert str(e.value) == "h must have shape (1, 3, 4) = (layers*directions, B, H), got (1, 2, 4)"
    for lengths in ([6, 2, 3], None):  # was "mat1 and mat2 shapes cannot be multiplied (11x5 and 2x16)"
        with pytest.raises(LapnetError) as e:
            run_recurrent(m, torch.randn(3, 6, 5), lengths)
        assert str(e.value) == "x has D=5 features per step but the LSTM's input_size is 2: shape (3, 6, 5)"
    with pytest.raises(LapnetError, match=r"^an LSTM's state must be a pair \(h, c\)"):
        run_recurrent(m, x, [6, 2, 3], torch.zeros(1, 3, 4))
    g = make_recurrent("gru", 2, 4, 2, bidirectional=True)
    with pytest.raises(LapnetError) as e:
        run_recurrent(g, x, [6, 2, 3], torch.zeros(2, 3, 4))
    assert str(e.value) == "state must have shape (4, 3, 4) = (layers*directions, B, H), got (2, 3, 4)"
    with pytest.raises(LapnetError, match=r"^x is torch.float64 but the LSTM's weights are torch.float32"):
        run_recurrent(m, x.double(), [6, 2, 3])
    out, (h, c) = run_recurrent(m, x, [6, 2, 3], (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))  # the good call
    assert out.shape == (3, 6, 4) and h.shape == c.shape == (1, 3, 4)


# --- 4. the scratch layers' arguments -------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, "a", 1.5, True, [3, -1], []])
def test_a_bad_seed_is_a_lapnet_error(seed):
    for make in (lambda: scratch.LSTM(3, 4, seed=seed), lambda: scratch.Linear(3, 4, seed=seed),
                 lambda: scratch.Embedding(5, 2, seed=seed)):
        with pytest.raises(LapnetError) as e:
            make()
        assert str(e.value) == ("seed must be None, a non-negative integer (or a sequence of them), a SeedSequence "
                                f"or a numpy Generator, as np.random.default_rng takes it; got {seed!r}")
    a, b = scratch.GRU(3, 4, seed=np.int64(7)).state_dict(), scratch.GRU(3, 4, seed=7).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)  # a NumPy integer is an integer


def test_every_seed_numpy_takes_is_taken():
    want = scratch.GRU(3, 4, seed=[3, 1]).state_dict()
    for seed in ([3, 1], (3, 1), np.array([3, 1]), np.random.SeedSequence([3, 1]), np.random.PCG64([3, 1]),
                 np.random.default_rng([3, 1])):
        got = scratch.GRU(3, 4, seed=seed).state_dict()
        assert all(np.array_equal(got[k], want[k]) for k in want), type(seed)


def test_an_rng_without_random_draws_is_a_lapnet_error():
    lstm = scratch.LSTM(3, 4, 2, dropout=0.5, dtype="float64")
    x = np.zeros((2, 5, 3))
    with pytest.raises(LapnetError) as e:  # was AttributeError: 'int' object has no attribute 'random'
        lstm.forward(x, train=True, rng=0)
    assert str(e.value) == "rng must be a numpy Generator, np.random.default_rng(seed), got int"
    legacy, _, _ = lstm.forward(x + 1, train=True, rng=np.random.RandomState(0))  # NumPy's legacy generator draws too
    assert legacy.shape == (2, 5, 4)
    out, _, _ = lstm.forward(x, train=True, rng=np.random.default_rng(0))
    assert out.shape == (2, 5, 4)


def test_a_ragged_list_is_a_lapnet_error():
    gru = scratch.GRU(3, 4)
    with pytest.raises(LapnetError) as e:  # was NumPy's "inhomogeneous shape" ValueError
        gru.forward([[[1, 2, 3]], [[1, 2, 3], [1, 2, 3]]])
    assert str(e.value) == ("gru input is not a regular array: its nested lists have rows of different lengths "
                            "(ragged), so it has no one shape")
    assert gru.forward([[[1, 2, 3]], [[1, 2, 3]]])[0].shape == (2, 1, 4)  # a regular list still works


def test_proj_size_is_refused_like_bias_false():
    with pytest.raises(LapnetError) as e:  # was TypeError: unexpected keyword
        scratch.LSTM(3, 4, proj_size=2)
    assert str(e.value) == ("proj_size=2 is not supported: the engine's LSTM has no projections "
                            "(h has hidden_size units; leave proj_size at 0)")
    assert scratch.LSTM(3, 4, proj_size=0).hidden_size == 4  # torch's default is accepted
    # LSTM has its own __init__ now: the one-layer dropout warning still points at the caller's line
    with pytest.warns(UserWarning, match="dropout=0.5 has no effect") as w:
        scratch.LSTM(3, 4, dropout=0.5)
    assert w[0].filename == __file__


# --- 5. the models: the batch axis, dropout on one layer, ids, empty and misshapen inputs ---


def test_classifier_and_charlm_refuse_one_unbatched_sequence_as_forecaster_does():
    from lapnet.models import CharLM, CharLMConfig, Classifier, Forecaster

    hint = " (one sequence: add the batch axis with x[None])"
    with pytest.raises(LapnetError) as f:
        Forecaster("lstm", 2, 4)(torch.randn(6, 2))
    with pytest.raises(LapnetError) as c:  # was logits of shape (3,): one sequence's, not a batch's
        Classifier("gru", 2, 4, 3)(torch.randn(6, 2))
    assert str(c.value) == str(f.value) == f"x must be (B, T, D) = (batch, time, features), got shape (6, 2){hint}"
    lm = CharLM(CharLMConfig(vocab_size=10, embed=4, hidden=8))
    with pytest.raises(LapnetError) as e:  # was (T, V) logits
        lm(torch.randint(0, 10, (7,)))
    assert str(e.value) == f"x must be (B, T) = (batch, time) character ids, got shape (7,){hint}"
    assert Classifier("gru", 2, 4, 3)(torch.randn(1, 6, 2)).shape == (1, 3)


def test_charlm_checks_its_ids():
    from lapnet.models import CharLM, CharLMConfig

    lm = CharLM(CharLMConfig(vocab_size=10, arch="gru", embed=4, hidden=8))
    with pytest.raises(LapnetError) as e:  # was IndexError: index out of range in self
        lm(torch.tensor([[10]]))
    assert str(e.value) == "x holds ids outside the vocabulary [0, 10): min 10, max 10"
    with pytest.raises(LapnetError) as e:
        lm(torch.tensor([[-1, 3]]))
    assert str(e.value) == "x holds ids outside the vocabulary [0, 10): min -1, max 3"
    with pytest.raises(LapnetError, match=r"^x must hold integer character ids \(torch.int64\), got torch.float64$"):
        lm(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(LapnetError) as e:
        lm(torch.zeros(2, 3, dtype=torch.long), torch.zeros(1, 3, 8))
    assert str(e.value) == "state must have shape (1, 2, 8) = (layers*directions, B, H), got (1, 3, 8)"
    logits, h = lm(torch.tensor([[0, 9, 3]]))
    assert logits.shape == (1, 3, 10) and h.shape == (1, 1, 8)


def test_forecaster_refuses_no_steps_and_a_wrong_d():
    from lapnet.models import Forecaster

    f = Forecaster("lstm", 1, 8, 1, num_layers=2)
    with pytest.raises(LapnetError) as e:  # was "Expected sequence length to be larger than 0 in RNN"
        f(torch.randn(2, 0, 1))
    assert str(e.value) == "x has no time steps: shape (2, 0, 1), T=0 (give every sequence at least one step)"
    with pytest.raises(LapnetError) as e:  # was "input.size(-1) must be equal to input_size"
        f(torch.randn(2, 10, 3))
    assert str(e.value) == "x has D=3 features per step but the LSTM's input_size is 1: shape (2, 10, 3)"


def test_make_recurrent_warns_about_dropout_on_one_layer_as_torch_does():
    from lapnet.models import CharLM, CharLMConfig, make_recurrent

    with pytest.warns(UserWarning, match=r"^dropout=0.5 has no effect with num_layers=1") as w:
        m = make_recurrent("lstm", 1, 4, 1, dropout=0.5)
    assert len(w) == 1 and w[0].filename == __file__  # once (not torch's too), at the caller's line
    assert m.dropout == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_recurrent("lstm", 1, 4, 2, dropout=0.5).dropout == 0.5
        # a saved one-layer run with a dropout loads without a warning every time it samples
        # (`lapnet text train` names the no-op once, in its flags' words)
        assert CharLM(CharLMConfig(vocab_size=5, embed=4, hidden=8, dropout=0.5)).rnn.dropout == 0.0


# --- 6. library words, and the CLI still says its flags ---------------------------------------


def test_library_errors_name_arguments_not_flags():
    from lapnet.data.text import TextBatches, Vocab, split_ids
    from lapnet.diagnostics.hidden_evolution import hidden_evolution
    from lapnet.models import CharLM, CharLMConfig
    from lapnet.models.charlm import TorchStepper
    from lapnet.sampling import SampleConfig, generate
    from lapnet.series import SeriesConfig

    cases = [
        (lambda: CharLM(CharLMConfig(vocab_size=3, arch="gpt")), "arch='gpt': expected one of rnn, lstm, gru"),
        (lambda: CharLM(CharLMConfig(vocab_size=3, hidden=0)), "hidden must be a positive integer, got 0"),
        (lambda: split_ids(np.arange(100), 1.0), "val_frac must be in [0, 1), got 1.0"),
        (lambda: split_ids(np.arange(3), 0.5),
         "text has 3 characters: too short to split off 50% for validation (val_frac=0 trains on all of it)"),
        (lambda: TextBatches(np.arange(100), batch=0, seq_len=8), "seq_len and batch must be at least 1, got 8 and 0"),
        (lambda: TextBatches(np.arange(20), batch=4, seq_len=20),
         "training text has 20 characters, shorter than one training window (seq_len 20 + 1): give seq_len=19 or less"),
        (lambda: SeriesConfig(window=0).validate(), "window must be a positive integer, got 0"),
        (lambda: SeriesConfig(arch="tcn").validate(), "arch='tcn': expected one of rnn, lstm, gru"),
        (lambda: SeriesConfig(holdout=1).validate(), "holdout must be in [0, 1), got 1"),
        (lambda: SampleConfig(top_k=0).validate(), "top_k must be at least 1, got 0"),
        (lambda: SampleConfig(top_p=1.5).validate(), "top_p must be in (0, 1], got 1.5"),
        (lambda: SampleConfig(temperature=-1.0).validate(),
         "temperature must be a finite number, 0 (greedy) or positive, got -1.0"),
        (lambda: hidden_evolution(engine="jax"), "engine='jax': expected one of auto, numpy, torch"),
    ]
    vocab = Vocab("ab ")
    stepper = TorchStepper(CharLM(CharLMConfig(vocab_size=3, embed=4, hidden=8)))
    cases += [
        (lambda: generate(stepper, vocab, prime="ab", length=0, cfg=SampleConfig()), "length must be positive, got 0"),
        (lambda: generate(stepper, vocab, prime="ab", length=3, cfg=SampleConfig(top_k=0)),
         "top_k must be at least 1, got 0"),
        (lambda: generate(stepper, vocab, prime="abz", length=3, cfg=SampleConfig()),
         "prime has 1 character(s) the model never saw: 'z'"),
    ]
    for call, message in cases:
        with pytest.raises(LapnetError) as e:
            call()
        assert str(e.value) == message
        assert "--" not in str(e.value)


def test_arch_is_case_insensitive_everywhere():
    from lapnet.models import CharLM, CharLMConfig, make_recurrent
    from lapnet.series import SeriesConfig

    cfg = CharLMConfig(vocab_size=3, arch="LSTM", embed=4, hidden=8)
    lm = CharLM(cfg)  # was "--arch LSTM: expected one of rnn, lstm, gru"
    assert cfg.arch == "lstm" and isinstance(lm.rnn, torch.nn.LSTM) and lm.init_state(2)[0].shape == (1, 2, 8)
    assert isinstance(make_recurrent("GRU", 2, 3), torch.nn.GRU)
    assert CharLMConfig.from_json({"vocab_size": 5, "arch": "Gru"}).arch == "gru"
    s = SeriesConfig(arch="RNN")
    s.validate()
    assert s.arch == "rnn"


@pytest.mark.parametrize("args, message", [
    (["text", "train", "--arch", "transformer"], "--arch transformer: expected one of rnn, lstm, gru"),
    (["text", "train", "--hidden", "0"], "--hidden must be a positive integer, got 0"),
    (["text", "train", "--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
    (["text", "train", "--val-frac", "1.5"], "--val-frac must be in [0, 1), got 1.5"),
    (["text", "train", "TINY"],
     "TINY has 3 characters: too short to split off 10% for validation (--val-frac 0 trains on all of it)"),
    (["text", "train", "--seq-len", "0"], "--seq-len and --batch must be at least 1, got 0 and 32"),
    (["text", "train", "--batch", "0"], "--seq-len and --batch must be at least 1, got 128 and 0"),
    (["text", "sample", "NO_RUN", "--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["text", "sample", "NO_RUN", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["text", "sample", "NO_RUN", "--temperature", "-0.5"],
     "--temperature must be a finite number, 0 (greedy) or positive, got -0.5"),
    (["hidden", "--engine", "jax"], "--engine jax: expected one of auto, numpy, torch"),
    (["series", "train", "NO_CSV", "--window", "0"], "--window must be a positive integer, got 0"),
    (["series", "train", "NO_CSV", "--arch", "TCN"], "--arch 'tcn': expected one of rnn, lstm, gru"),
])
def test_the_cli_still_names_its_flags(run_cli, tmp_path, args, message):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc", encoding="utf-8")
    names = {"TINY": tiny, "NO_RUN": tmp_path / "no_run", "NO_CSV": tmp_path / "no.csv"}
    args = [names.get(a, a) for a in args]
    if args[:2] != ["text", "sample"]:  # the others write a directory: none must appear
        args += ["--out", tmp_path / "out"]
    code, out, err = run_cli(*args)
    message = message.replace("TINY", str(tiny))  # the refusal names the file
    assert code == 2 and err == f"lapnet: error: {message}\n", err
    assert not (tmp_path / "out").exists()


# --- 7. filter_probs refuses what would filter nothing ----------------------------------------


def test_filter_probs_validates_its_settings_and_logits():
    from lapnet.sampling import SampleConfig, filter_probs

    logits = np.array([[2.0, 1.0, 0.0, -1.0]])
    for cfg, message in ((SampleConfig(top_k=0), "top_k must be at least 1, got 0"),
                         (SampleConfig(top_p=1.5), "top_p must be in (0, 1], got 1.5"),
                         (SampleConfig(top_k=2.5), "top_k must be a whole number (or None: no limit), got 2.5")):
        with pytest.raises(LapnetError) as e:  # was: no filtering at all (top_k 0, top_p 1.5)
            filter_probs(logits, cfg)
        assert str(e.value) == message
    with pytest.raises(LapnetError) as e:  # was NumPy's AxisError
        filter_probs(logits[0], SampleConfig())
    assert str(e.value) == "logits must be (B, V) = (streams, vocabulary), got shape (4,) (one row: logits[None])"
    p = filter_probs(logits, SampleConfig(temperature=1.0, top_k=2))
    e2 = np.exp([2.0, 1.0])
    np.testing.assert_allclose(p, [[e2[0] / e2.sum(), e2[1] / e2.sum(), 0.0, 0.0]], rtol=1e-15)


# --- 8. trace_gates checks x's type ------------------------------------------------------------


def test_trace_gates_refuses_a_numpy_array():
    from lapnet.diagnostics.gates import trace_gates

    m = torch.nn.LSTM(3, 4, 2, batch_first=True)
    with pytest.raises(LapnetError) as e:  # was AttributeError: 'numpy.ndarray' object has no attribute 'detach'
        trace_gates(m, np.zeros((2, 5, 3)))
    assert str(e.value) == ("x must be a (B, T, D) torch tensor, got a ndarray (convert it with "
                            "torch.as_tensor(x, dtype=torch.float32))")
    with pytest.raises(LapnetError) as e:
        trace_gates(m, torch.zeros(2, 5, 3, dtype=torch.float64))
    assert str(e.value) == ("x must be (B, T, 3) of torch.float32, as the module's input_size and weights, got "
                            "(2, 5, 3) of torch.float64")
    assert trace_gates(m, torch.zeros(2, 5, 3)).layers[1]["f"].shape == (2, 5, 4)


# --- 9. the training protocols document their contract ----------------------------------------


def test_learner_and_batches_say_what_fit_needs():
    from lapnet.train import Batches, Learner

    for proto, methods in ((Batches, ("steps_per_epoch", "epoch(e)")),
                           (Learner, ("train_step(batch, carry, lr)", "evaluate()", "val_loss", "weights()",
                                      "state()", "load_state(arrays, meta)"))):
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            help(proto)
        shown = text.getvalue()
        assert "Base class for protocol classes" not in shown  # was typing.Protocol's own docstring
        for m in methods:
            assert m in proto.__doc__, (proto.__name__, m)


# --- 10. articles in messages -----------------------------------------------------------------


def test_articles_in_messages():
    from lapnet.models import make_recurrent

    with pytest.raises(LapnetError, match=r"^LSTM.from_torch got an LSTMCell: "):  # was "a LSTMCell"
        scratch.LSTM.from_torch(torch.nn.LSTMCell(3, 4))
    with pytest.raises(LapnetError, match=r"^LSTM.from_torch got a GRUCell: "):
        scratch.LSTM.from_torch(torch.nn.GRUCell(3, 4))
    with pytest.raises(LapnetError, match=r"^RNN.from_torch got an RNNCell: "):
        scratch.RNN.from_torch(torch.nn.RNNCell(3, 4))
    with pytest.raises(LapnetError) as e:  # was "an GRU's"
        make_recurrent("gru", 1, 4, nonlinearity="relu")
    assert str(e.value) == ("nonlinearity='relu' applies to the vanilla RNN only; a GRU's gates are fixed "
                            "(sigmoid and tanh)")
    with pytest.raises(LapnetError, match="; an LSTM's gates are fixed"):
        make_recurrent("lstm", 1, 4, nonlinearity="relu")


# --- 11 and 12. engine.md says what the code does ---------------------------------------------


def _engine_md() -> str:
    return (DOCS / "engine.md").read_text(encoding="utf-8")


def test_engine_md_reference_snippet_prints_what_the_docs_show():
    """The reference-vs-fast-kernel snippet: run as written, its line matches the one shown,
    or (on another machine's BLAS) differs only in rounding, which the docs then say."""
    doc = _engine_md()
    m = re.search(r"```python\n(import numpy as np\nfrom lapnet import scratch\nfrom lapnet.scratch import reference "
                  r"as ref\n.*?)```\n```\n(.*?)\n```\n\n(.*?)\n", doc, re.S)
    assert m, "the snippet is no longer in engine.md"
    code, shown, after = m.groups()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "engine.md", "exec"), {})
    printed = out.getvalue().strip()
    got, want = printed.split(") "), shown.split(") ")
    assert got[0] == want[0] == "(2, 5, 4"
    assert all(float(v) <= 5e-16 for v in got[1].split() + want[1].split())
    assert printed == shown or "may differ on another machine" in after, (printed, shown)


def test_engine_md_gru_parity_claim_holds_for_the_module_it_names():
    doc = _engine_md()
    m = re.search(r"`scratch\.GRU\.from_torch\((nn\.GRU\([^`]*\))\)` reproduces torch's hidden states to (1e-\d+)", doc)
    assert m, "the claim is no longer in engine.md"
    torch.manual_seed(0)
    module = eval(m.group(1), {"nn": torch.nn, "torch": torch})  # as the docs write it
    twin = scratch.GRU.from_torch(module)  # batch-first; the module as built is time-first
    x = torch.randn(2, 5, 3, dtype=module.weight_hh_l0.dtype)
    with torch.no_grad():
        want = module(x.transpose(0, 1))[0].transpose(0, 1).numpy()
    assert np.abs(twin.forward(x.numpy())[0] - want).max() <= float(m.group(2))  # float32 (the old text): 8.9e-08


def test_run_recurrent_leaves_the_dtype_to_autocast():
    from lapnet.models.recurrent import make_recurrent, run_recurrent

    m = make_recurrent("lstm", 2, 4)
    x = torch.randn(3, 6, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torch casts the weights itself: no refusal
        out, _ = run_recurrent(m, x.bfloat16(), [6, 2, 3])
    assert out.dtype == torch.bfloat16 and out.shape == (3, 6, 4)
    with pytest.raises(LapnetError, match=r"^x is torch.bfloat16 but the LSTM's weights are torch.float32"):
        run_recurrent(m, x.bfloat16(), [6, 2, 3])  # without autocast it is refused, before packing
