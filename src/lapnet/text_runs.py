"""Character language-model runs: the library behind `lapnet text train|sample|eval`.

    train_text(...)  text file -> run directory (config.json, vocab.json, model.safetensors,
                     last.safetensors, log.jsonl, metrics.json), with either engine
    load_run(dir, engine=...)  -> a Run: the model on the chosen engine, its vocab and config
    sample_text(...) run -> samples, streamed as they are made
    eval_text(...)   run + text file -> nats/char, bits/char, perplexity

Both engines read and write the same checkpoint (torch CharLM's state_dict names), so a run
trained with one engine samples and evaluates with the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lapnet.checkpoint import load_tensors, read_json, write_json
from lapnet.console import console
from lapnet.data.text import (BOM, TextBatches, Vocab, check_streams, decode_text, eval_layout, eval_tail, read_text,
                              split_ids)
from lapnet.errors import CheckpointError, LapnetError
from lapnet.host import own_torch_state
from lapnet.models.charlm import CharLMConfig, param_names, saved_positive_int
from lapnet.scratch.recurrent import GATE_BLOCKS
from lapnet.run_dir import (check_out_dir, make_dir, refuse_input_as_output, refuse_linked_run_files, release_run_lock,
                            shown_path)
from lapnet.sampling import SampleConfig, generate
from lapnet.train import TrainConfig, TrainingDiverged, check_resume_meta, finished, fit, restored_result

ENGINES = ("torch", "numpy")
CHECKPOINTS = ("best", "last")  # model.safetensors (what training chose) | last.safetensors (the final step)
DEFAULT_BATCH = 32  # streams, when --batch is not given and the text holds that many windows
# At each evaluation during training, at most this many characters are scored: the start of
# the validation text (with --val-frac 0, of the training text). A 10% split of a 40 MB text
# took about 27 s to score on the shared 2-core machine, twice in a one-minute run; 100,000
# characters take about a second with the default model.
FIT_EVAL_CHARS = 100_000
RUN_FILES = ("config.json", "vocab.json", "model.safetensors", "last.safetensors", "log.jsonl", "metrics.json",
             "samples.txt")
SAMPLE_CHARS = 200  # per sample in samples.txt
EVAL_CHUNK = 256  # characters per stream per evaluation forward pass (at most); the state carries across chunks
# float32 logits (streams x chunk x V x 4 bytes) of one evaluation forward pass, at most; the
# float64 copy they are scored in and its log-softmax take twice this each, so a chunk peaks
# near 5 x 32 MB whatever the vocabulary (a CJK text's 20,000 characters needed 3.5 GB with
# chunks of 256)
EVAL_LOGITS_BYTES = 32 * 2**20


@dataclass
class TextDataConfig:
    """How the text becomes batches; saved as config.json["data"]."""

    seq_len: int = 128  # T, the truncation length of back-propagation through time
    batch: int | None = 32  # B parallel streams; None: DEFAULT_BATCH, or fewer without a warning if the text is short
    val_frac: float = 0.1  # the END of the text; 0: no validation (train on all of it, as the notebook)
    source: str | None = None  # the training file's absolute path ("-": standard input; None: the bundled passage)
    sha256: str | None = None  # of the text, so --resume can refuse a different file


def text_train_config(**overrides: Any) -> TrainConfig:
    """TrainConfig with the defaults chosen for character LMs (see benchmarks/text.py)."""
    base = dict(epochs=None, minutes=None, lr=1e-2, schedule="cosine", min_lr_frac=0.1, warmup_steps=0,
                clip=5.0, clip_value=None)
    base.update({k: v for k, v in overrides.items() if v is not None or k in ("clip", "clip_value")})
    if base["epochs"] is None and base["minutes"] is None and base.get("max_steps") is None:
        base["minutes"] = 1.0  # neither given: a one-minute budget
    return TrainConfig(**base)


def perplexity(nats: float) -> float:
    """exp(nats/char), or inf when that is beyond float64 (a loss above about 709.78 nats/char:
    a diverged model). JSON has no infinity: metrics.json, log.jsonl and --json write it as
    null (`checkpoint.json_text`); the summary tables show inf. (It used to be clamped to
    exp(700) = 1.01e304, a finite number no model earns.)"""
    try:
        return math.exp(nats)
    except OverflowError:
        return math.inf


def nats_to_metrics(nats: float, prefix: str = "val_") -> dict[str, float]:
    """Loss in nats/char -> the same in bits/char and perplexity (see `perplexity`)."""
    return {f"{prefix}loss": nats, f"{prefix}bpc": nats / math.log(2), f"{prefix}ppl": perplexity(nats)}


# ---------------------------------------------------------------------------------------
# the model on either engine


@dataclass
class Run:
    """A trained model ready to use: `model` is a torch CharLM or a NumPy CharLM."""

    path: Path | None
    engine: str
    model: Any
    vocab: Vocab
    config: dict = field(default_factory=dict)
    checkpoint: str = "best"  # which file the weights came from (see load_run)
    step: int | None = None  # the training step those weights are from, when the file says

    def stepper(self):
        """The engine's one-character-at-a-time stepper for `lapnet.sampling`."""
        if self.engine == "torch":
            from lapnet.models.charlm import TorchStepper

            return TorchStepper(self.model)
        from lapnet.models.numpy_charlm import NumpyStepper

        return NumpyStepper(self.model)

    def nll(self, ids: np.ndarray, streams: int | None = None) -> tuple[float, int]:
        """Total negative log-likelihood (nats) and character count of a text, scored
        statefully: S contiguous streams side by side (`eval_layout`; `streams` fixes S),
        each from a zero state and carried through chunks (`eval_chunk`: at most EVAL_CHUNK
        characters, fewer for a large vocabulary); the last stream goes on over the
        characters left after the rows (`eval_tail`), so every character but the first is
        scored: count = len(ids) - 1."""
        rows = eval_layout(ids, streams=streams)  # (S, L+1)
        tail = eval_tail(ids, rows)  # (R+1,), R < S
        if self.engine == "torch":
            return _torch_nll(self.model, rows, tail, len(self.vocab))
        return _numpy_nll(self.model, rows, tail, len(self.vocab))


def eval_chunk(streams: int, vocab_size: int) -> int:
    """Characters per stream in one evaluation forward pass: EVAL_CHUNK, or fewer (at least
    1) so that the pass's float32 logits, streams x chunk x vocab_size x 4 bytes, stay within
    EVAL_LOGITS_BYTES. Each chunk's loss is summed in float64 from its own logits: no
    float64 copy of more than one chunk exists at a time."""
    return int(max(1, min(EVAL_CHUNK, EVAL_LOGITS_BYTES // (4 * max(1, streams) * max(1, vocab_size)))))


def _torch_nll(model, rows: np.ndarray, tail: np.ndarray, vocab_size: int) -> tuple[float, int]:
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def step(x: np.ndarray, y: np.ndarray, state):
        logits, state = model(torch.from_numpy(x).to(device), state)  # (S, t, V)
        target = torch.from_numpy(y).to(device).reshape(-1)
        return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), target, reduction="sum")), state

    with torch.inference_mode():
        out = _stream_nll(step, rows, tail, vocab_size)
    model.train(was_training)
    return out


def _numpy_nll(model, rows: np.ndarray, tail: np.ndarray, vocab_size: int) -> tuple[float, int]:
    from lapnet import scratch

    def step(x: np.ndarray, y: np.ndarray, state):
        logits, state, _ = model.forward(x, state)  # (S, t, V)
        logp = scratch.log_softmax(logits.astype(np.float64))
        return -float(np.take_along_axis(logp, y[..., None], axis=-1).sum()), state

    return _stream_nll(step, rows, tail, vocab_size)


def _stream_nll(step, rows: np.ndarray, tail: np.ndarray, vocab_size: int) -> tuple[float, int]:
    """Total NLL (nats) and count of the streams `rows` (S, L+1), each from a zero state and
    carried through chunks of `eval_chunk(S, vocab_size)` characters, then of `tail` (R+1,)
    from the last stream's state. `step(x, y, state) -> (nats, state)` scores one chunk
    (S, t) with either engine; the total is a float64 sum of the chunks' losses, inf as soon as
    one chunk's is not finite (a diverged model: the rest is not scored)."""
    total, count = 0.0, 0

    def score(r: np.ndarray, state):
        nonlocal total, count
        L = r.shape[1] - 1
        chunk = eval_chunk(r.shape[0], vocab_size)
        for s in range(0, L, chunk):
            e = min(s + chunk, L)
            nats, state = step(r[:, s:e], r[:, s + 1 : e + 1], state)  # the state carries to the next chunk
            total += nats
            count += r.shape[0] * (e - s)
            if not math.isfinite(total):  # a diverged model: its state is NaN too, which the next chunk refuses as input
                return None
        return state

    state = score(rows, None)
    if state is not None and len(tail) > 1:  # the last stream goes on from its own state: (layers, 1, H)
        def last(h):
            return h[:, -1:].contiguous() if hasattr(h, "contiguous") else np.ascontiguousarray(h[:, -1:])

        score(np.ascontiguousarray(tail[None, :]), tuple(map(last, state)) if isinstance(state, tuple) else last(state))
    return total, count


def build_model(cfg: CharLMConfig, engine: str, seed: int, device: str = "cpu"):
    """A freshly initialised CharLM on `engine`; the torch init (seeded) is the reference,
    so both engines start from the same weights for the same seed."""
    import torch

    from lapnet.models.charlm import CharLM

    if engine not in ENGINES:
        raise LapnetError(f"--engine {engine}: expected torch or numpy")
    torch.manual_seed(seed)
    model = CharLM(cfg)
    if engine == "torch":
        return model.to(device)
    from lapnet.models.numpy_charlm import NumpyCharLM

    return NumpyCharLM(cfg, {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()})


@own_torch_state()
def load_run(path: str | Path, engine: str = "torch", device: str = "cpu", checkpoint: str = "best") -> Run:
    """Load a run directory written by `train_text` onto either engine.

    Args:
        path: the run directory.
        engine: "torch" or "numpy".
        device: torch device (the NumPy engine runs on the CPU).
        checkpoint: "best", model.safetensors (the step with the lowest validation loss; with
            no validation, the last step), or "last", the weights of the final step, from
            last.safetensors (the file --resume continues from).

    Raises:
        CheckpointError: a missing, corrupt or truncated file, or weights that do not match
            config.json (names or shapes). Nothing is ever unpickled.
    """
    path = Path(path)
    if engine not in ENGINES:
        raise LapnetError(f"--engine {engine}: expected torch or numpy")
    if checkpoint not in CHECKPOINTS:
        raise LapnetError(f"--checkpoint {checkpoint}: expected best or last")
    if not path.is_dir():
        raise LapnetError(f"{path}: no such run directory")
    config, mcfg = read_run_config(path)
    vocab = read_vocab(path, mcfg)
    arrays, step, where = read_weights(path, checkpoint)
    check_charlm_weights(arrays, mcfg, where)
    if engine == "torch":
        import torch

        from lapnet.models.charlm import CharLM

        model = CharLM(mcfg)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        model = model.to(device).eval()
    else:
        from lapnet.models.numpy_charlm import NumpyCharLM

        model = NumpyCharLM(mcfg, arrays)
    return Run(path, engine, model, vocab, config, checkpoint, step)


def read_weights(path: Path, checkpoint: str = "best") -> tuple[dict[str, np.ndarray], int | None, Path]:
    """The model weights of a run's best or last checkpoint, the step they are from (None
    when the file does not say) and the file they came from."""
    if checkpoint == "last":
        where = path / "last.safetensors"
        arrays, meta = load_tensors(where)
        weights = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
        trainer = meta.get("trainer")
        step = trainer.get("step") if isinstance(trainer, dict) else None
    else:
        where = path / "model.safetensors"
        weights, meta = load_tensors(where)
        step = meta.get("step")
    return weights, step if isinstance(step, int) and not isinstance(step, bool) else None, where


def read_run_config(path: Path) -> tuple[dict[str, Any], CharLMConfig]:
    """A run's config.json and its model config, checked: the one place a saved run's
    settings are validated, for every command that loads a run and for --resume."""
    where = path / "config.json"
    if not where.is_file():
        other = _what_is_there(path)
        if other:
            raise CheckpointError(f"{path} is not a text run (it holds {other}): give a run directory "
                                  f"written by `lapnet text train`")
    config = read_json(where)
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: not a text run (no model config)")
    kind = config.get("kind")
    if kind == "lapnet-race" or (kind is None and ("features" in config or "races" in config)):
        # a race run has a "model" too: without this its first missing text field would be named
        raise CheckpointError(f"{path} is a race run, not a text run: give it to `lapnet race eval|predict|live`, "
                              f"or give a run directory written by `lapnet text train`")
    if "model" not in config or (kind is not None and kind != "charlm"):
        raise CheckpointError(f"{path} is not a lapnet text run ({where} "
                              f"{'has kind ' + repr(kind) if 'model' in config else 'holds no model config'})")
    return config, CharLMConfig.from_json(config["model"], where=str(where))


def _what_is_there(path: Path) -> str | None:
    """What another lapnet command left in `path`, from its metrics.json ("a sine
    experiment's output"), or None when that cannot be told."""
    try:
        metrics = read_json(path / "metrics.json")
    except (CheckpointError, OSError):
        return None
    kind = metrics.get("experiment") if isinstance(metrics, dict) else None
    return f"a {kind} experiment's output" if isinstance(kind, str) and kind else None


def check_run(path: str | Path) -> None:
    """Refuse, without loading any weights, a RUN that is not a text run directory (missing,
    a race run, a foreign config.json or vocab.json): commands that also write an --out
    call this first, so that a wrong RUN is named before --out is checked or created."""
    path = Path(path)
    if not path.is_dir():
        raise LapnetError(f"{path}: no such run directory")
    _, cfg = read_run_config(path)
    read_vocab(path, cfg)


def read_vocab(path: Path, cfg: CharLMConfig) -> Vocab:
    """The run's vocab.json, which must have one character per output unit of the model."""
    vocab = Vocab.from_json(read_json(path / "vocab.json"), where=str(path / "vocab.json"))
    if len(vocab) != cfg.vocab_size:
        raise CheckpointError(f"{path}: vocab.json has {len(vocab)} characters, config.json says {cfg.vocab_size}")
    return vocab


_LAYER_NAME = re.compile(r"rnn\.weight_ih_l[0-9]+")  # one per recurrent layer (see param_names)


def check_charlm_weights(arrays: dict[str, np.ndarray], cfg: CharLMConfig, where: Path) -> None:
    """Refuse a char-LM's weights whose names or shapes do not match its config, or that are not
    floating point or not finite (the char-LM's own check; `checkpoint.check_weights` serves the
    other models, against a state_dict).

    The layer count is compared with the checkpoint's first: config.json is as easily edited
    as any file, and the names of 10**8 layers took 5.4 GB and 16 s to build."""
    held = sum(1 for name in arrays if _LAYER_NAME.fullmatch(name))
    if held != cfg.layers:
        raise CheckpointError(f"{where}: weights do not match config.json (config.json says model.layers "
                              f"{cfg.layers}, the checkpoint holds {held} layer{'s' if held != 1 else ''})")
    want = param_names(cfg)
    if sorted(arrays) != sorted(want):
        missing = sorted(set(want) - set(arrays))
        extra = sorted(set(arrays) - set(want))
        raise CheckpointError(f"{where}: weights do not match config.json (missing {missing[:3]}, unexpected {extra[:3]})")
    G = GATE_BLOCKS[cfg.arch]
    shapes = {"embed.weight": (cfg.vocab_size, cfg.embed), "head.weight": (cfg.vocab_size, cfg.hidden),
              "head.bias": (cfg.vocab_size,)}
    for k in range(cfg.layers):
        shapes |= {f"rnn.weight_ih_l{k}": (G * cfg.hidden, cfg.embed if k == 0 else cfg.hidden),
                   f"rnn.weight_hh_l{k}": (G * cfg.hidden, cfg.hidden),
                   f"rnn.bias_ih_l{k}": (G * cfg.hidden,), f"rnn.bias_hh_l{k}": (G * cfg.hidden,)}
    for name, shape in shapes.items():
        if arrays[name].dtype.kind != "f":
            raise CheckpointError(f"{where}: {name} is {arrays[name].dtype}, not floating point")
        if tuple(arrays[name].shape) != shape:
            raise CheckpointError(f"{where}: {name} has shape {tuple(arrays[name].shape)}, config.json needs {shape}")
        if not np.all(np.isfinite(arrays[name])):
            raise CheckpointError(f"{where}: {name} holds NaN or inf")


# ---------------------------------------------------------------------------------------
# training


def recorded_engine(out: str | Path) -> str | None:
    """The engine a run directory was trained with (config.json's "engine"), or None when
    that cannot be read (no run there, a corrupt file: `train_text` names the problem)."""
    try:
        config = read_json(Path(out) / "config.json")
    except (CheckpointError, OSError):
        return None
    engine = config.get("engine") if isinstance(config, dict) else None
    return engine if engine in ENGINES else None


def _saved_data_config(saved: dict[str, Any], where: Path) -> TextDataConfig:
    """config.json["data"] of a run being resumed, checked field by field (a hand-edited
    value must be named here, not fail later in words about command-line flags)."""
    obj = saved.get("data")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: not a text run (no data config)")
    values = {f.name: obj.get(f.name, f.default) for f in fields(TextDataConfig)}
    if values["batch"] is None:  # not recorded: the default of the time
        values["batch"] = DEFAULT_BATCH
    for name in ("seq_len", "batch"):
        saved_positive_int(values[name], f"{where}: data.{name}", CheckpointError)
    v = values["val_frac"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise CheckpointError(f"{where}: data.val_frac must be a number in [0, 1), got {v!r}")
    for name in ("source", "sha256"):
        if values[name] is not None and not isinstance(values[name], str):
            raise CheckpointError(f"{where}: data.{name} must be a string or null, got {values[name]!r}")
    return TextDataConfig(**values)


def _check_resume_checkpoint(where: Path, cfg: CharLMConfig) -> dict[str, Any]:
    """Refuse a last.safetensors that is corrupt or whose weights do not fit the saved model
    config (a hand-edited config.json): checked before --resume rewrites config.json.
    Returns the trainer's saved position ({} when the file does not hold one)."""
    arrays, meta = load_tensors(where)
    weights = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        check_charlm_weights(weights, cfg, where)
    except CheckpointError as e:
        raise CheckpointError(f"--resume: checkpoint does not fit this model: {e}") from None
    if isinstance(meta, dict) and "trainer" in meta and "learner" in meta:
        check_resume_meta(meta, where)  # a crafted trainer state: one line now, not a KeyError mid-resume
    trainer = meta.get("trainer")
    return trainer if isinstance(trainer, dict) else {}


def _read_source(path: str | Path | None) -> str:
    """The training or evaluation text: a file, "-" for standard input, None for the bundled
    passage; a leading byte-order mark is dropped (`decode_text`)."""
    if path is not None and str(path) == "-":
        import sys

        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        return decode_text(raw, "standard input")
    return read_text(path)


def _source_name(source: str | None) -> str:
    """How a recorded or given data.source reads in a message."""
    return "the bundled text" if source is None else "standard input" if source == "-" else source


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_SHA256 = re.compile(r"[0-9a-f]{64}")
_BOM_BYTES = BOM.encode("utf-8")
HASH_CHUNK = 1 << 20  # bytes read at a time to hash a file


def _file_hashes(path: str | Path) -> tuple[str, str]:
    """The `_sha256` of a text file's text as `read_text` returns it (a leading byte-order mark
    dropped), and of that text with the mark (see `_same_text`), read in chunks: a file that is
    not the run's text is refused without being read whole. (UTF-8 decoding changes no byte,
    so the text's hash is the file's bytes' hash.)"""
    plain, marked = hashlib.sha256(), hashlib.sha256(_BOM_BYTES)
    try:
        with open(path, "rb") as f:
            first = f.read(HASH_CHUNK)
            chunk = first[len(_BOM_BYTES):] if first.startswith(_BOM_BYTES) else first
            while chunk:
                plain.update(chunk)
                marked.update(chunk)
                chunk = f.read(HASH_CHUNK)
    except OSError as e:
        raise LapnetError(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from None
    return plain.hexdigest(), marked.hexdigest()


def _same_text(text: str, sha: str) -> str | None:
    """`text` as the run saw it when its sha256 is `sha` (None: it is another text). A run
    trained before byte-order marks were dropped has the mark in its hash and vocabulary:
    the text is then handed back with it, so that the run continues on exactly what it learnt."""
    if _sha256(text) == sha:
        return text
    if _sha256(BOM + text) == sha:
        return BOM + text
    return None


def _recorded_sha256(data: TextDataConfig, out: Path) -> str:
    """The run's data.sha256, which must be a sha256: without one nothing tells the run's text
    from any other, and config.json's data.source could name any file (~/.aws/credentials) for
    the resume to train on and print in samples.txt.

    Raises:
        CheckpointError: missing, null or not 64 hex digits, saying how to go on.
    """
    sha = data.sha256
    if isinstance(sha, str) and _SHA256.fullmatch(sha.lower()):
        return sha.lower()
    shown = "missing (or null)" if sha is None else f"{sha!r}"[:40]
    raise CheckpointError(f"--resume: {out / 'config.json'}: data.sha256 is {shown}, not the sha256 of a text, so "
                          f"the text this run was trained on cannot be checked: a resume goes on only on that text; "
                          f"train again from your text FILE (lapnet text train FILE --out {out} --force, or a new "
                          f"--out)")


def _resume_text(path: str | Path | None, data: TextDataConfig, out: Path) -> tuple[str, str | Path | None]:
    """The text a resumed run continues on. With no FILE given, the run's recorded source is
    reused when it still exists with the same content; otherwise the error names it. A
    relative source (recorded before sources were stored as absolute paths) is looked for
    from the current directory.

    Nothing but the text whose sha256 the run recorded is ever trained on (`_recorded_sha256`):
    a file is hashed in chunks before it is read whole, and the text read is checked again."""
    sha = _recorded_sha256(data, out)
    if path is None and data.source is not None:
        recorded = data.source
        if recorded == "-":
            raise LapnetError(f"--resume: {out} was trained on standard input; pipe the same text in again and give - as FILE")
        if not Path(recorded).is_file():
            raise LapnetError(f"--resume: {out} was trained on {recorded} (config.json's data.source), which is not "
                              f"there now; give that text as FILE")
        changed = LapnetError(f"--resume: {recorded}, the text {out} was trained on, has changed since; "
                              f"give the original text as FILE")
        if sha not in _file_hashes(recorded):
            raise changed
        text = _same_text(read_text(recorded), sha)  # again: the file may have changed since it was hashed
        if text is None:
            raise changed
        return text, recorded
    other = LapnetError(f"--resume: {'the bundled text' if path is None else _source_name(str(path))} is not the "
                        f"text this run was trained on ({_source_name(data.source)}, config.json's data.source)")
    if path is not None and str(path) != "-" and Path(path).is_file() and sha not in _file_hashes(path):
        raise other
    text = _same_text(_read_source(path), sha)
    if text is None:
        raise other
    return text, path


# What --resume keeps from the run, by the command-line flag that would change it: a resumed
# run goes on with its own shape, data and training settings (a new --seed would even move
# the batches' offsets mid-run). Only the budget (--epochs, --minutes), --eval-every and the
# output options apply.
RESUME_KEEPS = {"--arch": ("model", "arch"), "--embed": ("model", "embed"), "--hidden": ("model", "hidden"),
                "--layers": ("model", "layers"), "--dropout": ("model", "dropout"), "--seq-len": ("data", "seq_len"),
                "--batch": ("data", "batch"), "--val-frac": ("data", "val_frac"), "--lr": ("train", "lr"),
                "--schedule": ("train", "schedule"), "--clip": ("train", "clip"),
                "--clip-value": ("train", "clip_value"), "--seed": ("train", "seed")}


def _resumed_train_config(saved: dict[str, Any], asked: TrainConfig, where: Path) -> TrainConfig:
    """The TrainConfig a resumed run goes on with: its own (config.json's "train") with the
    budget (epochs, minutes, max_steps), progress and, when given, eval_every of `asked`."""
    obj = saved.get("train")
    names = {f.name for f in fields(TrainConfig)}
    values = asdict(asked)
    if isinstance(obj, dict):
        values.update({k: v for k, v in obj.items() if k in names})
    values.update(epochs=asked.epochs, minutes=asked.minutes, max_steps=asked.max_steps, progress=asked.progress)
    if asked.eval_every is not None:
        values["eval_every"] = asked.eval_every
    cfg = TrainConfig(**values)
    try:
        cfg.validate()
    except LapnetError as e:  # `asked` was checked already: what is wrong is the saved value
        raise CheckpointError(f"{where}: train.{e}") from None
    return cfg


def _flag_value(flag: str, v: Any) -> str:
    """A setting as it is typed on the command line (a clip of None is --clip 0)."""
    if v is None and flag in ("--clip", "--clip-value"):
        return "0"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _ignored_options(typed: tuple[str, ...], asked: dict[str, Any], kept: dict[str, Any]) -> list[str]:
    """The flags in `typed` whose value differs from the resumed run's, as "--lr 0.5 (the run's: 0.01)"."""
    shown = []
    for flag in dict.fromkeys(typed):
        if flag not in RESUME_KEEPS:
            continue
        section, name = RESUME_KEEPS[flag]
        a, k = getattr(asked[section], name), getattr(kept[section], name)
        if flag == "--arch" and isinstance(a, str) and isinstance(k, str):
            a, k = a.lower(), k.lower()
        if a != k:
            shown.append(f"{flag} {_flag_value(flag, a)} (the run's: {_flag_value(flag, k)})")
    return shown


def _never_checkpointed(out: Path) -> bool:
    """True when `out` holds only what `train_text` writes before its first checkpoint
    (config.json of a text run, vocab.json, perhaps log.jsonl and a temporary file): a run
    killed before it had anything to resume. A plain rerun takes such a directory over."""
    if not out.is_dir():
        return False
    names = {p.name for p in out.iterdir()}
    leftovers = {"config.json", "vocab.json", "log.jsonl"}
    if "config.json" not in names or any(n not in leftovers and not (n.startswith(".") and n.endswith(".tmp"))
                                         for n in names):
        return False
    if not all((out / n).is_file() for n in names):
        return False
    try:
        config = read_json(out / "config.json")
    except (CheckpointError, OSError):
        return False
    return isinstance(config, dict) and config.get("kind") == "charlm"


def _stored_metrics(out: Path, step: Any) -> dict[str, Any] | None:
    """The run's metrics.json when it is complete for the checkpoint at `step` (readable, of
    that step, with samples.txt beside it), else None."""
    try:
        metrics = read_json(out / "metrics.json")
    except (CheckpointError, OSError):
        return None
    if not isinstance(metrics, dict) or metrics.get("steps") != step or not (out / "samples.txt").is_file():
        return None
    return metrics


@contextlib.contextmanager
def _sigint_ignored():
    """Ctrl-C (and SIGTERM, which the CLI treats alike) is ignored while a run's final files
    are written (the main thread only: signal handlers live there). The first Ctrl-C stops
    training; a second one a moment later used to land in these writes and leave the run
    without metrics.json or samples.txt."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _too_short(name: str, n: int, n_train: int, n_val: int, data: TextDataConfig) -> str:
    """Why the training part of a text cannot fill one window of seq_len + 1 characters, and
    the --seq-len that would."""
    window = f"one training window (--seq-len {data.seq_len} + 1)"
    if n_val:
        return (f"{name} has {n} characters, of which --val-frac {data.val_frac:g} holds out the last {n_val} for "
                f"validation: the {n_train} left to train on are shorter than {window}; give --seq-len "
                f"{n_train - 1} or less, or --val-frac 0 to train on all {n} (then --seq-len {n - 1} or less), "
                f"or a longer text")
    return (f"{name} has {n} characters, shorter than {window}; give --seq-len {n - 1} or less, "
            f"or a longer text")


def _releasing_run_lock(train_fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """`train_fn(path, out, ...)` that drops the run-directory lock it took on `out` when it
    returns or fails, so a library caller does not hold the directory until its process exits."""
    import functools

    @functools.wraps(train_fn)
    def wrapper(path, out, **kwargs):
        try:
            return train_fn(path, out, **kwargs)
        finally:
            release_run_lock(Path(out))

    return wrapper


@own_torch_state()
@_releasing_run_lock
def train_text(
    path: str | Path | None,
    out: str | Path,
    *,
    model: CharLMConfig | None = None,
    data: TextDataConfig | None = None,
    train: TrainConfig | None = None,
    engine: str | None = None,
    device: str = "cpu",
    resume: bool = False,
    force: bool = False,
    samples: bool = True,
    typed: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train a character LM on a UTF-8 text file and write a run directory.

    Args:
        path: the text file (None: the bundled Hamlet passage; "-": standard input). Its
            absolute path is recorded as config.json's data.source, with the text's sha256.
        out: the run directory (refused if it holds a run, unless resume or force; a directory
            left by a run stopped before its first checkpoint, which has nothing to resume, is
            taken over).
        model: model shape; `vocab_size` is set from the text. With `resume` the saved one wins.
        data: seq_len, batch, val_frac. With `resume` the saved one wins.
        train: the TrainConfig (`text_train_config()` gives this module's defaults). With
            `resume` the saved one wins except for the budget (epochs, minutes, max_steps),
            eval_every (when not None) and progress; each resume is recorded in config.json's
            "resumes" list ({"from_step", "epochs", "minutes", "eval_every", ...}), its
            "train" stays the run's own.
        engine: "torch" or "numpy"; None: with `resume` the run's own (config.json's "engine"),
            else torch. With `resume`, an engine other than the run's is refused.
        device: torch device (the NumPy engine runs on the CPU).
        resume: continue `out` until `train`'s totals (epochs/minutes) are reached. A run that
            already reached them is left as it is: its stored metrics are returned (with a
            warning saying so) and no file is rewritten.
        force: overwrite an existing run.
        samples: print a short sample after each evaluation.
        typed: with `resume`, the command-line flags the caller was given (e.g. "--hidden",
            "--lr"): those whose value differs from the run's (RESUME_KEEPS) are named in one
            warning, since the run keeps its own.

    Returns:
        The metrics, also written to out/metrics.json: `stopped` (why training ended:
        "epochs", "minutes", "max_steps", "early_stop" or "interrupted"), `steps`, `epochs`,
        `seconds` (wall clock, across resumes), `chars_per_sec`, `train_loss` (the last
        step's, nats/char), `validation` (whether text was held out); with validation
        `val_loss`, `val_bpc` and `val_ppl` of the last evaluation and `best_val_loss` (the
        loss of the weights in model.safetensors), without it `text_loss`, `text_bpc` and
        `text_ppl` on the training text and `best_val_loss` None; `saved_model` ({"file",
        "step", "val_loss", "chosen_by"}: which step model.safetensors holds and why);
        `early_stopping`, `params`, `train_chars`, `val_chars`, `val_scored_chars` (or
        `text_scored_chars`: the characters the loss was computed on), `batch`, `seq_len`,
        `engine`. A loss of NaN or inf raises TrainingDiverged (a LapnetError), after
        metrics.json ("stopped": "diverged") is written from the last good checkpoint, if any.

    Ctrl-C (SIGINT, or SIGTERM) stops training at the next step: the checkpoint,
    metrics.json and samples.txt are written and the metrics returned, with `stopped` ==
    "interrupted" (continue with `resume=True`). A second Ctrl-C while they are written is
    ignored; one during the last evaluation raises KeyboardInterrupt after metrics.json and
    samples.txt are written from the last checkpoint.
    """
    out = Path(out)
    if engine is not None and engine not in ENGINES:
        raise LapnetError(f"--engine {engine}: expected torch or numpy")
    unstarted = _never_checkpointed(out)
    if resume and unstarted:
        raise LapnetError(f"--resume: nothing was checkpointed in {out} (its run stopped before the first "
                          f"checkpoint): run the same command without --resume")
    take_over = unstarted and not force and not resume
    if path is not None and str(path) != "-":  # a text named like a run file inside --out: never written over
        refuse_input_as_output([path], [out / name for name in RUN_FILES])
    # refuse an existing run unless asked; the directory is made only once the inputs are good
    check_out_dir(out, force=force or take_over, resume=resume, writes=RUN_FILES, holds="a run", create=False,
                  kind="charlm")
    train = train or text_train_config()
    train.validate()
    data = data or TextDataConfig()
    model = model or CharLMConfig(vocab_size=1)
    asked = {"model": model, "data": data, "train": train}
    saved: dict[str, Any] = {}
    if resume:  # the run's own shape, data and training settings; the command line may only extend it
        # the resume reads, appends to and rewrites these: through a link that is outside the run
        refuse_linked_run_files(out, RUN_FILES)
        saved, model = read_run_config(out)
        if saved.get("engine", engine or "torch") not in ENGINES:
            raise CheckpointError(f"{out / 'config.json'}: engine must be torch or numpy, got {saved['engine']!r}")
        if engine is None:  # not given: the run's own, as every other training setting
            engine = saved.get("engine", "torch")
        if saved.get("engine", engine) != engine:
            raise LapnetError(f"--resume: {out} was trained with --engine {saved['engine']}, not {engine}: leave "
                              f"--engine out (a resume keeps the run's engine) or give --engine {saved['engine']} "
                              f"(its weights load into either engine for sample and eval)")
        data = _saved_data_config(saved, out / "config.json")
        train = _resumed_train_config(saved, train, out / "config.json")
        text, path = _resume_text(path, data, out)
        vocab = read_vocab(out, model)
        position = _check_resume_checkpoint(out / "last.safetensors", model)  # fails now, before anything is rewritten
        ignored = _ignored_options(typed, asked, {"model": model, "data": data, "train": train})
        if ignored:
            warnings.warn(f"{', '.join(ignored)} ignored: a resumed run keeps its shape, data and training settings "
                          f"({out / 'config.json'}); only --epochs, --minutes and --eval-every apply")
    else:
        engine = engine or "torch"
        text = _read_source(path)
        position, ignored = {}, []
        vocab = Vocab.from_text(text)
        model = CharLMConfig(**{**asdict(model), "vocab_size": len(vocab)})
        source = None if path is None else "-" if str(path) == "-" else str(Path(path).absolute())
        data = TextDataConfig(**{**asdict(data), "source": source, "sha256": _sha256(text)})
    model.validate()
    if not resume and model.dropout > 0 and model.layers == 1:
        warnings.warn(f"--dropout {model.dropout:g} does nothing with --layers 1: dropout is applied between "
                      f"stacked layers (torch.nn.LSTM's rule); give --layers 2 or more to use it")
    source_name = "the bundled text" if path is None else _source_name(str(path))
    ids = vocab.encode(text, what=source_name)
    train_ids, val_ids = split_ids(ids, data.val_frac, what=source_name)
    if len(train_ids) < data.seq_len + 1:
        raise LapnetError(_too_short(source_name, len(ids), len(train_ids), len(val_ids), data))
    validation = len(val_ids) > 0  # --val-frac 0: none, the notebook's setting
    requested = data.batch
    # None: the default; 0 or less reaches TextBatches, which refuses it (`asked or ...` took 0 for the default)
    batches = TextBatches(train_ids, DEFAULT_BATCH if requested is None else requested, data.seq_len, seed=train.seed)
    if requested is not None and batches.batch < requested and not resume:  # every stream needs one window of seq_len + 1
        warnings.warn(f"--batch {requested}: the training text holds only {batches.batch} windows of "
                      f"--seq-len {data.seq_len} + 1 characters; training with --batch {batches.batch}")
    data = replace(data, batch=batches.batch)  # config.json records the batch actually used
    if train.eval_every is None:  # every epoch, but not every few steps on a tiny text nor rarely on a big one
        train = replace(train, eval_every=min(max(batches.steps_per_epoch(), 50), 200))

    finishing = False  # a resume with nothing to train whose final files are missing: write only those
    if resume:
        # fit's own rule (lapnet.train.finished), asked before anything is written: a run that
        # already meets the totals is returned as it is, every file untouched
        try:
            done = finished(position, train)
            restored = restored_result(position, done, batches.steps_per_epoch()) if done else None
        except (KeyError, TypeError, ValueError):  # not a trainer position: fit names the checkpoint
            done = restored = None
        if done is not None:
            warnings.warn(_nothing_to_train(restored, train, position))
            stored = _stored_metrics(out, position.get("step"))
            if stored is not None:
                # the stored result, untouched; an earlier interruption is no reason to exit 130 now
                return {**stored, "stopped": done} if stored.get("stopped") == "interrupted" else stored
            finishing = True

    net = build_model(model, engine, train.seed, device)
    run = Run(out, engine, net, vocab)
    scored = (val_ids if validation else train_ids)[:FIT_EVAL_CHARS]  # each evaluation's cost is bounded
    if engine == "torch":
        learner = _torch_learner(net, run, scored, train, device, validation)
    else:
        from lapnet.models.numpy_charlm import NumpyCharLMLearner

        learner = NumpyCharLMLearner(net, lambda: _val_metrics(run, scored, validation), train)

    # inputs are valid: only now touch the run directory (under torchrun rank 0 clears it, and no
    # rank goes on before it has: a slower rank's unlink would delete what rank 0 just wrote)
    from lapnet import distributed

    if engine == "numpy" and distributed.world_size() > 1:
        warnings.warn("--engine numpy does not shard across torchrun's ranks: every rank trains the same "
                      "model on the whole batch (use --engine torch to scale out)")
    if take_over:
        warnings.warn(f"--out {out} held only the start of a run stopped before its first checkpoint "
                      f"(nothing to resume): starting it again")
    make_dir(out)  # a new --out is locked here (check_out_dir locked an existing one): nothing is cleared unlocked
    if (force or take_over) and distributed.rank() == 0:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    distributed.barrier()
    if not resume:
        config = {"kind": "charlm", "engine": engine, "model": model.to_json(), "data": asdict(data),
                  "train": asdict(train)}
        write_json(out / "config.json", config)
        write_json(out / "vocab.json", vocab.to_json())

    def record_resume() -> None:
        """The run's own settings stay; what this resume used is added to its record, once fit
        has checked the checkpoint, its state and the log (a refused resume changes no file)."""
        entry = {"from_step": position.get("step"), "epochs": train.epochs, "minutes": train.minutes,
                 **({"max_steps": train.max_steps} if train.max_steps is not None else {}),
                 "eval_every": train.eval_every, **({"ignored": ignored} if ignored else {})}
        before = saved.get("resumes")
        write_json(out / "config.json", {**saved, "resumes": [*(before if isinstance(before, list) else []), entry]})

    on_eval = None
    if samples and train.progress:
        prime = vocab.decode(train_ids[:1])

        def on_eval(step: int, metrics: dict[str, float]) -> None:
            # weights on their way to diverging overflow here first; fit reports the divergence itself
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                text_ = generate(run.stepper(), vocab, prime=prime, length=120, cfg=SampleConfig(0.8), seed=step)[0]
            what = "val" if validation else "training text"
            console.print(f"[dim]step {step}  {what} {metrics['val_loss']:.3f} nats/char "
                          f"({metrics['val_loss'] / math.log(2):.3f} bits/char):[/dim] {' '.join(text_.split())!r}",
                          highlight=False, markup=True)

    meta = {"kind": "charlm", "engine": engine, "model": model.to_json()}
    final = dict(out=out, engine=engine, device=device, meta=meta, validation=validation, train=train,
                 data=data, batches=batches, vocab=vocab, train_ids=train_ids, val_ids=val_ids)
    try:
        result = fit(learner, batches, train, out=out, resume=resume, on_eval=on_eval, meta=meta,
                     describe=f"text {engine} {model.arch}", eval_label="val" if validation else "training text",
                     on_resumed=None if finishing else record_resume)
    except KeyboardInterrupt:
        # a second Ctrl-C while fit was finishing (its last evaluation and checkpoint): the
        # run's results are still written, from the last checkpoint, before the interrupt goes on
        with _sigint_ignored():
            _finish_interrupted(final)
        raise
    except TrainingDiverged as e:
        # a NaN/inf stop: the run's results are written from its last good checkpoint, as an
        # interrupted run's, before the error is reported
        with _sigint_ignored():
            _finish_diverged(final, e, fresh=not resume)
        raise
    with _sigint_ignored():
        return _final_files(result, learner.weights(), **final)


def _final_files(result, weights: dict[str, np.ndarray], *, out: Path, engine: str, device: str,
                 meta: dict[str, Any], validation: bool, train: TrainConfig, data: TextDataConfig, batches,
                 vocab: Vocab, train_ids: np.ndarray, val_ids: np.ndarray,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run writes once training has stopped: model.safetensors when there is no
    validation (the last step), metrics.json, samples.txt. Returns the metrics. `extra`: more
    fields for metrics.json, after "stopped" (a divergence's step).

    metrics.json's "seconds" is the run's wall-clock time (training steps, evaluations,
    checkpoints; totals across resumes); "chars_per_sec" counts the training steps' time only."""
    if not validation:
        _save_last_as_model(out, weights, meta, result)
    last = result.last_metrics
    train_losses = [r["train_loss"] for r in result.history if r.get("train_loss") is not None]
    # which step model.safetensors holds, by fit's rule (the first evaluation with the lowest
    # val_loss), from the history every rank has: under torchrun only rank 0 writes the file
    rows = [r for r in result.history if "val_loss" in r]
    best = min(rows, key=lambda r: r["val_loss"]) if rows and validation else None
    saved = {"file": "model.safetensors",
             "step": best["step"] if best else (result.steps if not validation else None),
             "val_loss": best["val_loss"] if best else None,
             "chosen_by": "lowest validation loss" if validation else "last step (--val-frac 0: no validation)"}
    metrics = {
        "engine": engine,
        "stopped": result.stopped,
        **(extra or {}),
        "steps": result.steps,
        "epochs": round(result.epochs, 4),
        "seconds": round(result.seconds, 3),
        "chars_per_sec": round(result.items_per_sec, 1),
        "train_loss": train_losses[-1] if train_losses else None,
        "validation": validation,
        **({k: last[k] for k in ("val_loss", "val_bpc", "val_ppl") if k in last} if validation else
           {k.replace("val_", "text_"): v for k, v in nats_to_metrics(last["val_loss"]).items()} if "val_loss" in last
           else {}),
        "best_val_loss": result.best_val if validation else None,
        "saved_model": saved,
        "early_stopping": train.patience is not None,
        "params": int(sum(np.asarray(v).size for v in weights.values())),
        "train_chars": int(len(train_ids)),
        "val_chars": int(len(val_ids)),
        # the characters val_loss (text_loss with --val-frac 0) is computed on: at most
        # FIT_EVAL_CHARS from the start of the validation (training) text
        f"{'val' if validation else 'text'}_scored_chars": int(min(len(val_ids if validation else train_ids),
                                                                    FIT_EVAL_CHARS)),
        "batch": batches.batch,
        "seq_len": data.seq_len,
    }
    write_json(out / "metrics.json", metrics)
    _write_samples(out, engine, device, vocab.decode(train_ids[:1]), saved["step"])
    return metrics


def _finish_interrupted(final: dict[str, Any]) -> None:
    """After a second Ctrl-C inside fit: the final files from the last checkpoint, if there is one."""
    from lapnet.train import is_rank0

    where = final["out"] / "last.safetensors"
    if not is_rank0() or not where.is_file():
        return
    try:
        arrays, meta = load_tensors(where)
        result = restored_result(meta["trainer"], "interrupted", final["batches"].steps_per_epoch())
    except (CheckpointError, KeyError, TypeError, ValueError):
        return  # nothing readable to report from: --resume will say what is wrong
    if _stored_metrics(final["out"], result.steps) is not None:
        return  # interrupted before this run trained a step: its files already describe the checkpoint
    weights = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    _final_files(result, weights, **final)


def _finish_diverged(final: dict[str, Any], err: TrainingDiverged, *, fresh: bool) -> None:
    """After a NaN/inf stop inside fit: metrics.json ("stopped": "diverged", "diverged_at_step")
    and samples.txt from the last good checkpoint, as for an interrupted run ("steps" is the
    checkpoint's step). A new run that diverged before its first checkpoint has nothing to
    describe or resume: the config.json, vocab.json and log.jsonl it wrote are removed."""
    from lapnet.train import is_rank0

    out = final["out"]
    where = out / "last.safetensors"
    if not is_rank0():
        return
    if not where.is_file():
        if fresh:
            for name in ("config.json", "vocab.json", "log.jsonl"):
                (out / name).unlink(missing_ok=True)
        return
    try:
        arrays, meta = load_tensors(where)
        result = restored_result(meta["trainer"], "diverged", final["batches"].steps_per_epoch())
    except (CheckpointError, KeyError, TypeError, ValueError):
        return  # nothing readable to report from
    weights = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    # samples.txt from weights on their way to diverging overflow: the divergence is reported already
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _final_files(result, weights, **final, extra={"diverged_at_step": err.step, "divergence": str(err)})


def _write_samples(out: Path, engine: str, device: str, prime: str, step: int | None) -> None:
    """samples.txt: what the saved model (model.safetensors) writes, greedy and at T = 0.8,
    so that the run directory (and `lapnet report`) shows the model's text, not only numbers."""
    from lapnet.checkpoint import atomic_write_bytes
    from lapnet.train import is_rank0

    if not is_rank0():
        return
    run = load_run(out, engine, device)
    # shown_path: under the C locale `out` may hold surrogate escapes, which UTF-8 cannot encode
    parts = [f"model.safetensors (step {step}), {SAMPLE_CHARS} characters after {prime!r}; "
             f"`lapnet text sample {shown_path(out)}` makes more\n"]
    for label, temp in (("greedy (--temperature 0)", 0.0), ("--temperature 0.8 --seed 0", 0.8)):
        text = generate(run.stepper(), run.vocab, prime=prime, length=SAMPLE_CHARS, cfg=SampleConfig(temp), seed=0)[0]
        parts.append(f"--- {label}\n{text}\n")
    # backslashreplace: a crafted vocab.json may hold a lone surrogate, which UTF-8 cannot encode
    atomic_write_bytes(out / "samples.txt", "\n".join(parts).encode("utf-8", "backslashreplace"))


def _nothing_to_train(result, train: TrainConfig, position: dict[str, Any]) -> str:
    """Why a resumed run trained nothing: its totals already meet the new ones."""
    if result.stopped == "epochs" and train.epochs is not None:
        return f"already at {result.epochs:.4g} epochs >= --epochs {train.epochs} (totals): nothing to train"
    if result.stopped == "minutes" and train.minutes is not None:
        return (f"already trained {float(position.get('elapsed', 0.0)) / 60:.3g} minutes >= --minutes {train.minutes:g} "
                f"(totals): nothing to train")
    if result.stopped == "max_steps" and train.max_steps is not None:
        return f"already at step {result.steps} >= {train.max_steps} steps (totals): nothing to train"
    return f"the run had already stopped ({result.stopped}): nothing to train"


def _save_last_as_model(out: Path, weights: dict[str, np.ndarray], meta: dict[str, Any], result) -> None:
    """With no validation text there is nothing to choose a best step by: model.safetensors
    holds the final weights (those in last.safetensors), so sample, eval, gates and
    temperature use the fully trained model."""
    from lapnet.checkpoint import save_tensors
    from lapnet.train import is_rank0

    if is_rank0():
        last = result.last_metrics.get("val_loss")
        save_tensors(out / "model.safetensors", weights,
                     {**meta, "step": result.steps, "val_loss": None, "text_loss": last, "checkpoint": "last"})


def _val_metrics(run: Run, ids: np.ndarray, validation: bool = True) -> dict[str, float]:
    """The validation text's loss (nats, bits/char, perplexity). With no validation text,
    `ids` is the start of the training text and only its loss is returned, as "val_loss"
    because `fit` chooses and logs by that name (log.jsonl then holds the training text's
    loss under it; metrics.json calls it text_loss)."""
    total, count = run.nll(ids)
    return nats_to_metrics(total / count) if validation else {"val_loss": total / count}


def tbptt_loss_fn(device: str = "cpu") -> Callable:
    """The TorchLearner loss for contiguous chunks: (model, (x, y), carry) -> (loss, carry, n)."""
    import torch
    import torch.nn.functional as F

    from lapnet.models.charlm import detach_state

    def loss_fn(model, batch, carry):
        x, y = (torch.as_tensor(b, device=device) for b in batch)  # (B, T) each
        logits, state = model(x, carry)  # (B, T, V); carry is None at the start of each epoch
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        # Truncated BPTT: row b of the next chunk continues row b of this one, so it starts
        # from this state; detached, so gradients stop at the chunk boundary and each step
        # costs O(T) time and memory instead of back-propagating through the whole text.
        return loss, detach_state(state), y.numel()

    return loss_fn


def _torch_learner(net, run: Run, ids: np.ndarray, train: TrainConfig, device: str, validation: bool = True):
    from lapnet.train import TorchLearner

    return TorchLearner(net, tbptt_loss_fn(device), lambda model: _val_metrics(run, ids, validation), train, device)


# ---------------------------------------------------------------------------------------
# sampling and evaluation


@own_torch_state()
def sample_text(
    run_dir: str | Path,
    *,
    prime: str = "",
    length: int = 300,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    engine: str = "torch",
    device: str = "cpu",
    on_chars: Callable[[list[str]], None] | None = None,
    checkpoint: str = "best",
) -> list[str]:
    """Samples from a run: each is prime + `length` new characters (see lapnet.sampling).
    `checkpoint`: "best" (model.safetensors) or "last" (the final step's weights)."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise LapnetError(f"--temperature must be a finite number, 0 (greedy) or positive, got {temperature}")
    cfg = SampleConfig(temperature, top_k, top_p)
    cfg.validate()  # bad options fail before the checkpoint is even read
    if length <= 0:
        raise LapnetError(f"--length must be positive, got {length}")
    run = load_run(run_dir, engine, device, checkpoint)
    run.vocab.encode(prime, what="--prime")  # names unknown characters before any output
    return generate(run.stepper(), run.vocab, prime=prime, length=length, cfg=cfg, num_samples=num_samples,
                    seed=seed, on_chars=on_chars)


@own_torch_state()
def eval_text(run_dir: str | Path, path: str | Path, *, engine: str = "torch", device: str = "cpu",
              write: bool = True, skip_unknown: bool = False, checkpoint: str = "best",
              streams: int | None = None) -> dict[str, Any]:
    """Score a text file with a run: nats/char, bits/char, perplexity (stateful, see Run.nll).

    How: the first character is only read; each later one is predicted from the characters
    before it in its stream. The text is cut into S contiguous streams run side by side
    (`streams`, else one per 2048 characters, at most 32), each starting from a zero state;
    the last one also scores the (N - 1) mod S characters left over, so all N - 1 are
    scored ("chars"), and "streams" records S. A cold start costs its stream's first
    characters some context: `streams=1` is the exact score of the text read in one pass.

    Characters outside the run's vocabulary have no output unit to score them: they are an
    error, or with `skip_unknown` they are taken out of the text first, and the result says
    how many and which (`skipped_unknown`), since the score is then of the remaining text.
    With `write`, the result is stored as metrics.json["eval"] in the run directory
    (`save_eval`; `lapnet text eval` calls that itself, after showing the result).
    `path` "-" reads standard input; `checkpoint` "best" (model.safetensors) or "last" (the
    final step's weights), recorded in the result with the step.
    """
    check_streams(streams)  # before the run and the file are read
    run = load_run(run_dir, engine, device, checkpoint)
    text = _read_source(path)
    name = "standard input" if str(path) == "-" else str(path)
    if len(text) < 2:
        raise LapnetError(f"{name} has {len(text)} character: scoring needs at least 2 (the first is only "
                          f"read, each later one is predicted)")
    skipped: dict[str, Any] = {"count": 0, "chars": []}
    bad = run.vocab.unknown(text)
    if bad and skip_unknown:
        gone = set(bad)
        kept = "".join(ch for ch in text if ch not in gone)
        skipped = {"count": len(text) - len(kept), "chars": bad}
        text = kept
        if len(text) < 2:
            raise LapnetError(f"{name}: nothing left to score once the {skipped['count']} unknown characters are skipped")
    elif bad:
        raise LapnetError(run.vocab.unknown_message(text, bad, name,
                                                    advice="--skip-unknown leaves them out"))
    ids = run.vocab.encode(text, what=name)
    total, count = run.nll(ids, streams)
    nats = total / count
    result = {"file": str(path), "engine": engine, "checkpoint": checkpoint, "step": run.step,
              "chars": count, "streams": int(eval_layout(ids, streams=streams).shape[0]), "nats_per_char": nats,
              "bits_per_char": nats / math.log(2), "perplexity": perplexity(nats),
              "skipped_unknown": skipped}
    if write:
        save_eval(run_dir, result)
    return result


def save_eval(run_dir: str | Path, result: dict[str, Any]) -> Path:
    """Store an evaluation as metrics.json["eval"] in the run directory, keeping the rest.

    Raises:
        OSError: the run directory cannot be written (read-only, full disk); the CLI shows
            the result first, so a failure here costs only the stored copy.
    """
    metrics_path = Path(run_dir) / "metrics.json"
    try:
        metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    except CheckpointError:
        metrics = {}
    if not isinstance(metrics, dict):  # valid JSON but not a metrics object: as unreadable
        metrics = {}
    write_json(metrics_path, {**metrics, "eval": result})
    return metrics_path
