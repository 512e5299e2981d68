"""The training loop and the torch models after a PyTorch practitioner's review: the best model
survives a kill between the two checkpoint writes, an evaluation off the schedule leaves the
resume state alone, a carry saved on a GPU resumes on a CPU, CUDA RNG states, weight decay on
resume, model input checks, the progress bar's numbers, and leaving a process group."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lapnet.train as train_mod
from lapnet.checkpoint import load_tensors, save_tensors
from lapnet.errors import LapnetError
from lapnet.train import TorchLearner, TrainConfig, _carry_from, fit, restored_result

class Waves:
    """64 points of y = sin(3 * sum(x)) in 4 shuffled batches of 16 per epoch (float64)."""

    x = torch.tensor(np.random.default_rng(0).normal(size=(64, 3)), dtype=torch.float64)
    y = torch.sin(3 * x.sum(1, keepdim=True))

    def steps_per_epoch(self):
        return 4

    def epoch(self, e):
        order = np.random.default_rng((1, e)).permutation(64)
        for i in range(4):
            idx = torch.as_tensor(order[i * 16:(i + 1) * 16])
            yield self.x[idx], self.y[idx]


def _run(out, cfg, *, resume=False, interrupt_at=None, dropout=0.0):
    """A fresh model and learner (as a new process would build), trained by fit; SIGINT is sent
    to this process during step `interrupt_at` (as Ctrl-C would be)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Dropout(dropout),
                                torch.nn.Linear(16, 1)).double()
    calls = [0]

    def loss_fn(net, batch, carry):
        calls[0] += 1
        if calls[0] == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        x, y = batch
        return torch.nn.functional.mse_loss(net(x), y), None, len(x)

    def evaluate(m):
        return {"val_loss": torch.nn.functional.mse_loss(m(Waves.x), Waves.y).item()}

    learner = TorchLearner(model, loss_fn, evaluate, cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        res = fit(learner, Waves(), cfg, out=out, resume=resume)
    return res, model, learner


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def _rows(history: list[dict]) -> list[tuple]:
    """What an evaluation row says about training (not the clock: elapsed, items_per_sec)."""
    return [(h["step"], h["epoch"], h["train_loss"], h["val_loss"], h["lr"]) for h in history]


def _logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]


# --- 1. a kill between the two checkpoint writes ----------------------------------------------


def test_a_kill_between_the_two_checkpoint_writes_keeps_the_best_model(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=2, lr=0.3, schedule="constant", progress=False)
    straight, _, _ = _run(tmp_path / "straight", cfg)
    vals = {h["step"]: h["val_loss"] for h in straight.history}
    assert vals[8] < vals[4]  # step 8, the last, is the best
    best_arrays, best_meta = load_tensors(tmp_path / "straight" / "model.safetensors")
    assert best_meta["step"] == 8 and best_meta["val_loss"] == straight.best_val

    real, order = train_mod.save_tensors, []

    class Killed(Exception):
        pass

    def dies_on_the_second_write(path, arrays, meta=None):
        name = Path(path).name
        step = meta["trainer"]["step"] if "trainer" in meta else meta["step"]
        order.append((step, name))
        if step == 8 and name == "last.safetensors":
            raise Killed  # the process dies here: the best model is written, the resume state is not
        return real(path, arrays, meta)

    out = tmp_path / "run"
    monkeypatch.setattr(train_mod, "save_tensors", dies_on_the_second_write)
    with pytest.raises(Killed):
        _run(out, cfg)
    monkeypatch.undo()
    assert order[-2:] == [(8, "model.safetensors"), (8, "last.safetensors")]  # the best weights go first
    _, last = load_tensors(out / "last.safetensors")
    assert last["trainer"]["step"] == 4  # the resume state is the previous evaluation's

    # written in the other order, last.safetensors would say step 8 is done (and the run finished)
    # while model.safetensors still held step 4's weights, for good
    resumed, _, _ = _run(out, cfg, resume=True)
    assert resumed.steps == 8 and _logged_steps(out) == [4, 8]
    arrays, meta = load_tensors(out / "model.safetensors")
    assert (meta["step"], meta["val_loss"]) == (8, straight.best_val) and resumed.best_val == straight.best_val
    _same_weights(arrays, best_arrays)


# --- 2. an evaluation off the schedule ----------------------------------------------------------

PATIENT = TrainConfig(epochs=40, lr=0.3, patience=1, schedule="constant", progress=False)


@pytest.fixture(scope="module")
def straight_patient(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    res, model, _ = _run(out, PATIENT)
    model_file = load_tensors(out / "model.safetensors")
    return out, res, {k: v.clone() for k, v in model.state_dict().items()}, model_file


def test_patience_counts_scheduled_evaluations_only(straight_patient):
    out, res, _, (_, meta) = straight_patient
    assert (res.stopped, res.steps) == ("early_stop", 20)
    assert [h["step"] for h in res.history] == [4, 8, 12, 16, 20]
    assert meta["step"] == 16 and res.best_val == pytest.approx(0.4557521902529149, abs=1e-12)


@pytest.mark.parametrize("k", range(1, 20))
def test_interrupt_then_resume_with_patience_equals_the_straight_run(tmp_path, straight_patient, k):
    s_out, straight, s_weights, (s_arrays, s_meta) = straight_patient
    out = tmp_path / "run"
    stopped, _, _ = _run(out, PATIENT, interrupt_at=k)
    assert (stopped.stopped, stopped.steps) == ("interrupted", k)
    resumed, model, _ = _run(out, PATIENT, resume=True)
    assert (resumed.stopped, resumed.steps, resumed.best_val) == (straight.stopped, straight.steps, straight.best_val)
    assert _rows(resumed.history) == _rows(straight.history)
    _same_weights({k_: v for k_, v in model.state_dict().items()}, s_weights)
    arrays, meta = load_tensors(out / "model.safetensors")
    _same_weights(arrays, s_arrays)
    assert (meta["step"], meta["val_loss"]) == (s_meta["step"], s_meta["val_loss"])
    assert _logged_steps(out) == _logged_steps(s_out)


@pytest.mark.parametrize("k", [17, 18])
def test_a_best_off_schedule_evaluation_is_saved_and_put_back_on_resume(tmp_path, straight_patient, k):
    """Steps 17 and 18 evaluate better than step 16 (the straight run's best): a run stopped
    there and never resumed keeps those weights as its model; a resume restores step 16's."""
    _, straight, _, (s_arrays, s_meta) = straight_patient
    out = tmp_path / "run"
    stopped, model, _ = _run(out, PATIENT, interrupt_at=k)
    final = stopped.history[-1]
    assert final["step"] == k and final["val_loss"] < s_meta["val_loss"]
    assert stopped.best_val == final["val_loss"] and stopped.last_metrics == {"val_loss": final["val_loss"]}
    arrays, meta = load_tensors(out / "model.safetensors")
    assert (meta["step"], meta["val_loss"]) == (k, final["val_loss"])
    _same_weights(arrays, {n: v.numpy() for n, v in model.state_dict().items()})
    _, last = load_tensors(out / "last.safetensors")
    assert last["trainer"]["best_val"] == s_meta["val_loss"] and last["trainer"]["bad_evals"] == 0
    assert [h["step"] for h in last["trainer"]["history"]] == [4, 8, 12, 16]
    assert last["model_before"]["step"] == 16

    resumed, _, _ = _run(out, PATIENT, resume=True)
    assert (resumed.stopped, resumed.steps, resumed.best_val) == (straight.stopped, straight.steps, straight.best_val)
    arrays, meta = load_tensors(out / "model.safetensors")
    assert meta == s_meta
    _same_weights(arrays, s_arrays)


def test_a_step_limit_between_evaluations_resumes_exactly_and_restores_its_result(tmp_path):
    cfg = dict(epochs=None, eval_every=3, lr=0.3, schedule="constant", progress=False)
    straight, s_model, _ = _run(tmp_path / "straight", TrainConfig(max_steps=12, **cfg))
    out = tmp_path / "run"
    first, _, _ = _run(out, TrainConfig(max_steps=7, **cfg))
    assert [h["step"] for h in first.history] == [3, 6, 7] and first.stopped == "max_steps"
    again, _, _ = _run(out, TrainConfig(max_steps=7, **cfg), resume=True)  # nothing to do: the same result
    assert (again.history, again.best_val, again.last_metrics) == (first.history, first.best_val, first.last_metrics)
    _, last = load_tensors(out / "last.safetensors")
    restored = restored_result(last["trainer"], "max_steps", 4)
    assert (restored.history, restored.best_val) == (first.history, first.best_val)

    resumed, model, _ = _run(out, TrainConfig(max_steps=12, **cfg), resume=True)
    assert [h["step"] for h in resumed.history] == [3, 6, 9, 12] == [h["step"] for h in straight.history]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.best_val == straight.best_val
    _same_weights(model.state_dict(), s_model.state_dict())
    _same_weights(load_tensors(out / "model.safetensors")[0], load_tensors(tmp_path / "straight" / "model.safetensors")[0])
    assert _logged_steps(out) == [3, 6, 9, 12]


# --- 3. a carry saved on another device ---------------------------------------------------------


from test_train_loop import Streams  # noqa: E402  two streams of 40 steps in 5 chunks per epoch


def _gru_run(out, cfg, resume=False):
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, batch_first=True).double()

    def loss_fn(net, batch, carry):
        y, h = net(batch[0], carry)
        return torch.nn.functional.mse_loss(y[..., :1], batch[1]), h.detach(), 2

    learner = TorchLearner(gru, loss_fn, lambda m: {"val_loss": 0.0}, cfg)
    fit(learner, Streams(), cfg, out=out, resume=resume)
    return gru


def test_a_carry_saved_on_a_gpu_resumes_on_the_cpu(tmp_path):
    full = TrainConfig(epochs=2, lr=0.05, schedule="constant", eval_every=1, progress=False)
    straight = _gru_run(tmp_path / "straight", full)
    out = tmp_path / "run"
    _gru_run(out, TrainConfig(epochs=2, max_steps=3, lr=0.05, schedule="constant", eval_every=1, progress=False))
    arrays, meta = load_tensors(out / "last.safetensors")
    assert meta["carry"]["devices"] == ["cpu"] and "carry.0" in arrays
    meta["carry"]["devices"] = ["cuda:0"]  # as a run on a GPU writes it
    save_tensors(out / "last.safetensors", arrays, meta)
    resumed = _gru_run(out, full, resume=True)  # was: "Torch not compiled with CUDA enabled"
    _same_weights(resumed.state_dict(), straight.state_dict())

    carry = _carry_from(arrays, meta["carry"], torch.device("cpu"))
    assert carry.device.type == "cpu" and torch.equal(carry, torch.from_numpy(arrays["carry.0"]))
    if not torch.cuda.is_available():  # no device given: the saved one only when this machine has it
        assert _carry_from(arrays, meta["carry"]).device.type == "cpu"


# --- 4. CUDA RNG states -------------------------------------------------------------------------


def _small_learner(cfg=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1)).double()
    cfg = cfg or TrainConfig(lr=0.05, progress=False)
    return TorchLearner(model, lambda net, b, c: (net(b).pow(2).mean(), None, len(b)), lambda m: {"val_loss": 0.0}, cfg)


def test_a_cpu_checkpoint_is_unchanged_and_a_gpu_one_loads_on_the_cpu():
    learner = _small_learner()
    learner.train_step(torch.ones(4, 3, dtype=torch.float64), None, 0.05)
    arrays, meta = learner.state()
    assert {k.split(".")[0] for k in arrays} == {"model", "optim", "rng"} and "rng.cuda" not in arrays
    assert [k for k in arrays if k.startswith("rng.")] == ["rng.torch"]
    cpu_rng = arrays["rng.torch"].copy()
    torch.rand(10)  # move the CPU generator on
    other = _small_learner()
    other.load_state({**arrays, "rng.cuda": np.zeros(16, np.uint8)}, meta)  # a GPU run's checkpoint, on the CPU
    np.testing.assert_array_equal(torch.get_rng_state().numpy(), cpu_rng)
    _same_weights(other.weights(), learner.weights())


def test_the_cuda_generator_is_saved_and_restored_on_a_gpu(monkeypatch):
    """No GPU here: the learner is told it is on cuda:0 and torch.cuda's RNG calls are recorded."""
    learner = _small_learner()  # no step yet: no optimizer state to move to the device
    learner.device = torch.device("cuda", 0)
    fake = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": fake.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state.clone(), device)))
    arrays, meta = learner.state()
    np.testing.assert_array_equal(arrays["rng.cuda"], fake.numpy())
    learner.load_state(arrays, meta)
    assert len(restored) == 1 and torch.equal(restored[0][0], fake) and restored[0][1] == torch.device("cuda", 0)


# --- 5. weight decay on resume ------------------------------------------------------------------


def test_a_changed_weight_decay_on_resume_is_named_in_a_warning():
    learner = _small_learner(TrainConfig(lr=0.05, weight_decay=0.0, progress=False))
    learner.train_step(torch.ones(4, 3, dtype=torch.float64), None, 0.05)
    arrays, meta = learner.state()
    other = _small_learner(TrainConfig(lr=0.05, weight_decay=0.5, progress=False))
    with pytest.warns(UserWarning, match=r"weight_decay 0.5 is not applied on resume: .*keeps weight_decay 0\b"):
        other.load_state(arrays, meta)
    assert other.opt.param_groups[0]["weight_decay"] == 0.0  # the checkpoint's, as the warning says
    same = _small_learner(TrainConfig(lr=0.05, weight_decay=0.0, progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.load_state(arrays, meta)  # unchanged: no warning


# --- 6-9. the models ----------------------------------------------------------------------------


def test_charlm_init_state_follows_the_models_dtype():
    from lapnet.models import CharLM, CharLMConfig

    m = CharLM(CharLMConfig(5, hidden=8, embed=4, layers=2)).double()
    h, c = m.init_state(2)
    assert h.dtype == c.dtype == torch.float64 and h.shape == (2, 2, 8) and not h.any()
    logits, _ = m(torch.zeros(2, 3, dtype=torch.long), m.init_state(2))
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits, m(torch.zeros(2, 3, dtype=torch.long))[0], rtol=0, atol=0)  # zeros = None
    assert m.init_state(1, dtype=torch.float32)[0].dtype == torch.float32
    g = CharLM(CharLMConfig(5, arch="gru", hidden=8, embed=4))
    assert g.init_state(3).dtype == torch.float32 and g.init_state(3).shape == (1, 3, 8)


@pytest.mark.parametrize("field,value,message", [
    ("vocab_size", 5.7, "vocab_size must be a positive integer, got 5.7"),
    ("hidden", 8.0, "hidden must be a positive integer, got 8.0"),  # the library names its fields
    ("embed", "4", "embed must be a positive integer, got '4'"),
    ("layers", True, "layers must be a positive integer, got True"),
    ("hidden", 0, "hidden must be a positive integer, got 0"),
    ("dropout", "0.1", "dropout must be in [0, 1), got '0.1'"),
])
def test_charlm_config_refuses_sizes_that_are_not_whole_numbers(field, value, message):
    from lapnet.models import CharLM, CharLMConfig

    cfg = CharLMConfig(**{"vocab_size": 5, field: value})
    with pytest.raises(LapnetError) as e:
        CharLM(cfg)
    assert str(e.value) == message


def test_charlm_config_takes_numpy_integers_as_ints():
    from lapnet.models import CharLM, CharLMConfig

    cfg = CharLMConfig(np.int64(5), hidden=np.int32(8), embed=4)
    CharLM(cfg)
    assert type(cfg.vocab_size) is int and type(cfg.hidden) is int and cfg.hidden == 8


def test_an_empty_batch_with_lengths_is_refused_in_one_line():
    from lapnet.models import Classifier, make_recurrent, run_recurrent

    with pytest.raises(LapnetError, match=r"^an empty batch \(B=0 sequences\) cannot be packed"):
        Classifier("gru", 3, 4)(torch.zeros(0, 5, 3), [])
    with pytest.raises(LapnetError, match="empty batch"):
        run_recurrent(make_recurrent("lstm", 3, 4), torch.zeros(0, 5, 3), torch.zeros(0, dtype=torch.long))
    assert Classifier("gru", 3, 4)(torch.zeros(0, 5, 3)).shape == (0, 1)  # without lengths torch handles it


def test_forecaster_refuses_an_unbatched_window():
    from lapnet.models import Forecaster

    torch.manual_seed(0)
    f = Forecaster("lstm", 2, 8, 2)
    with pytest.raises(LapnetError, match=r"x must be \(B, T, D\).*got shape \(5, 2\).*x\[None\]"):
        f(torch.randn(5, 2))
    with pytest.raises(LapnetError, match=r"got shape \(1, 5, 2, 1\)"):
        f(torch.randn(1, 5, 2, 1))
    with pytest.raises(LapnetError, match="rollout window must be a .* tensor, got a ndarray"):
        f.rollout(np.zeros((2, 4, 2)), 3)
    x = torch.randn(5, 2)
    pred, _ = f(x[None])
    out, _ = f.rnn(x[None])
    torch.testing.assert_close(pred, f.head(out[:, -1]), rtol=0, atol=0)


# --- 10. the progress bar -----------------------------------------------------------------------


class _Stub:
    """A learner whose step loss is 0.16183 and whose evaluation is 1.8342e-6."""

    def train_step(self, batch, carry, lr):
        return 0.16183, None, 4

    def evaluate(self):
        return {"val_loss": 1.8342e-6}

    def weights(self):
        return {"w": np.zeros(2)}

    def state(self):
        return {"model.w": np.zeros(2)}, {}

    def load_state(self, arrays, meta):
        pass


class _Three:
    def steps_per_epoch(self):
        return 3

    def epoch(self, e):
        return iter(range(3))


def test_the_progress_bar_shows_three_significant_digits_and_says_which_loss(monkeypatch):
    from rich.console import Console

    buf = io.StringIO()
    monkeypatch.setattr(train_mod, "console", Console(file=buf, width=200, force_terminal=False, color_system=None))
    fit(_Stub(), _Three(), TrainConfig(epochs=2, progress=True), eval_label="fit MSE", describe="sine")
    line = buf.getvalue()
    assert "step loss 0.162  fit MSE 1.83e-06  " in line, line
    assert "0.0000" not in line and "loss 0.1618" not in line


# --- 11. leaving the process group --------------------------------------------------------------

GROUP_SCRIPT = textwrap.dedent("""
    import gc, json, sys, weakref
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from lapnet import distributed
    from lapnet.train import TorchLearner, TrainConfig, fit

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
    report = {}

    class Data:
        x = torch.linspace(-1, 1, 32, dtype=torch.float64)[:, None]
        def steps_per_epoch(self): return 2
        def epoch(self, e):
            for i in range(2): yield self.x[i * 16:(i + 1) * 16], torch.sin(self.x[i * 16:(i + 1) * 16])

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1).double()
    lf = lambda net, b, c: (torch.nn.functional.mse_loss(net(b[0]), b[1]), None, len(b[0]))
    cfg = TrainConfig(epochs=2, lr=0.05, progress=False)
    learner = TorchLearner(model, lf, lambda m: {"val_loss": 0.0}, cfg)
    report["wrapped"] = isinstance(learner.net, DistributedDataParallel)
    first = weakref.ref(learner.net)
    fit(learner, Data(), cfg)
    report["released"] = learner.net is None
    learner.train_step(next(Data().epoch(0)), None, 0.05)  # a later step wraps the model again
    report["rewrapped"] = isinstance(learner.net, DistributedDataParallel)
    learner.release()
    distributed.shutdown()
    report["first_freed"] = first() is None
    report["left"] = not dist.is_initialized()

    # a peer that died before the final barrier: one clear line, and the group is still left
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1] + "2", rank=0, world_size=1)
    def dead_peer():
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer\\n[127.0.0.1]:29500")
    dist.barrier = dead_peer
    try:
        distributed.shutdown()
        report["lost"] = None
    except distributed.PeerLost as e:
        report["lost"] = str(e)
    report["left_after_loss"] = not dist.is_initialized()

    # leaving on an error: no barrier at all
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1] + "3", rank=0, world_size=1)
    calls = []
    dist.barrier = lambda: calls.append(1)
    try:
        raise ValueError("bad input on this rank")
    except ValueError:
        distributed.shutdown()
    report["barrier_on_error"] = len(calls)
    report["left_on_error"] = not dist.is_initialized()
    print(json.dumps(report))
""")


def test_fit_drops_its_ddp_wrapper_and_shutdown_frees_it_and_names_a_lost_peer(tmp_path):
    script = tmp_path / "group.py"
    script.write_text(GROUP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["wrapped"] and report["released"] and report["rewrapped"]
    assert report["first_freed"] and report["left"]
    lost = report["lost"]
    assert lost is not None and "\n" not in lost, lost
    assert lost.startswith("rank 0 finished its work, but another rank of the job had already left")
    assert "Connection closed by peer [127.0.0.1]:29500" in lost
    assert report["left_after_loss"]
    assert report["barrier_on_error"] == 0 and report["left_on_error"]

