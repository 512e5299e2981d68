"""CharLM: the notebook's CharLSTM as a real model (torch engine).

    x (B, T) ids -> embed -> (B, T, E) -> L stacked RNN/LSTM/GRU layers -> (B, T, H)
                 -> head (Linear H -> V) -> logits (B, T, V)

Dropout is applied between stacked layers (torch's rule, `dropout` of the recurrent layer).
The state_dict names (`embed.weight`, `rnn.weight_ih_l0`, ..., `head.weight`, `head.bias`)
are the checkpoint format of BOTH engines: `lapnet.models.numpy_charlm` reads and writes the
same names, so a run trained with one engine samples and evaluates with the other.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
from torch import nn

from lapnet.errors import LapnetError
from lapnet.models.recurrent import ARCHS, check_batch, check_size, make_recurrent, run_recurrent


@dataclass
class CharLMConfig:
    """The model's shape; saved as config.json["model"] beside every checkpoint."""

    vocab_size: int
    arch: str = "lstm"
    embed: int = 64  # E
    hidden: int = 256  # H
    layers: int = 1  # L
    dropout: float = 0.0  # between stacked layers only

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Check the fields, and normalise them: `arch` to lower case (as make_recurrent takes
        it, "LSTM" is "lstm"), sizes to int.

        Args:
            flags: field -> the command-line flag that set it (`lapnet text train` passes
                {"arch": "--arch", ...}), for errors that name the flag; by default they name
                the field, e.g. "arch='transformer': expected one of rnn, lstm, gru".
        """
        flags = flags or {}
        arch = self.arch.lower() if isinstance(self.arch, str) else self.arch
        if arch not in ARCHS:
            shown = f"{flags['arch']} {self.arch}" if "arch" in flags else f"arch={self.arch!r}"
            raise LapnetError(f"{shown}: expected one of {', '.join(ARCHS)}")
        self.arch = arch
        for name in ("vocab_size", "embed", "hidden", "layers"):  # whole numbers: 5.7 would reach torch as a size
            setattr(self, name, check_size(flags.get(name, name), getattr(self, name)))
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0.0 <= d < 1.0:  # NaN fails the range
            raise LapnetError(f"{flags.get('dropout', 'dropout')} must be in [0, 1), got {d!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, where: str = "config.json") -> "CharLMConfig":
        """The saved model config (config.json["model"]), checked field by field.

        A hand-edited or foreign file must fail here, naming the file and the field, not
        deep inside torch; and not in `validate`'s words, which are about command-line flags.
        Missing fields other than vocab_size take their defaults; unknown ones are ignored.
        """
        if not isinstance(obj, dict):
            raise LapnetError(f"{where}: model must be an object of model settings, got {_shown(obj)}")
        if "vocab_size" not in obj:
            raise LapnetError(f"{where}: model.vocab_size is missing")
        values = {f.name: obj.get(f.name, f.default) for f in fields(cls)}
        for name in ("vocab_size", "embed", "hidden", "layers"):
            saved_positive_int(values[name], f"{where}: model.{name}")
        if not isinstance(values["arch"], str) or values["arch"].lower() not in ARCHS:
            raise LapnetError(f"{where}: model.arch must be one of {', '.join(ARCHS)}, got {_shown(values['arch'])}")
        values["arch"] = values["arch"].lower()  # as validate: "LSTM" is "lstm"
        d = values["dropout"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:  # NaN fails the range too
            raise LapnetError(f"{where}: model.dropout must be a number in [0, 1), got {_shown(d)}")
        return cls(**{**values, "dropout": float(d)})


def saved_positive_int(v: Any, label: str, error: type[LapnetError] = LapnetError) -> int:
    """A saved setting that must be a whole number >= 1 (JSON true would pass as 1 in Python)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise error(f"{label} must be a positive integer, got {_shown(v)}")
    return v


def _shown(value: Any, limit: int = 40) -> str:
    """A config value as the user wrote it (repr: '16' for a string), cut to one short piece."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def param_names(cfg: CharLMConfig) -> list[str]:
    """The checkpoint's tensor names, in state_dict order (both engines use exactly these)."""
    names = ["embed.weight"]
    for k in range(cfg.layers):
        names += [f"rnn.weight_ih_l{k}", f"rnn.weight_hh_l{k}", f"rnn.bias_ih_l{k}", f"rnn.bias_hh_l{k}"]
    return names + ["head.weight", "head.bias"]


class CharLM(nn.Module):
    """Embedding -> stacked recurrent layers -> linear head over the vocabulary."""

    def __init__(self, cfg: CharLMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        # one layer: the config keeps its dropout (a no-op, which `lapnet text train` names in a
        # warning when it trains), but the model is built without it, so loading a run to sample
        # from it does not warn every time
        self.rnn = make_recurrent(cfg.arch, cfg.embed, cfg.hidden, cfg.layers,
                                  dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(self, x: torch.Tensor, state=None):
        """Logits for the next character at every position.

        Args:
            x: (B, T) int64 character ids.
            state: the recurrent state to start from (h (L, B, H), or (h, c) for an LSTM), or
                None for zeros.

        Returns:
            logits (B, T, V) and the final state (same layout as `state`).
        """
        self._check_ids(x)
        e = self.embed(x)  # (B, T, E)
        out, state = run_recurrent(self.rnn, e, state=state)  # (B, T, H); checks the state's shape
        return self.head(out), state  # (B, T, V)

    def _check_ids(self, x) -> None:
        """x is (B, T) integer ids in [0, V) on the model's device: checked here, where torch's
        embedding would fail with an IndexError (or a device-side assert on a GPU)."""
        check_batch(x, "x", "(B, T)", "(B, T) = (batch, time) character ids")
        w = self.embed.weight
        if w.is_meta:
            raise LapnetError("the CharLM has no data (meta device): load or initialise its weights first")
        if x.dtype not in (torch.int64, torch.int32):
            raise LapnetError(f"x must hold integer character ids (torch.int64), got {x.dtype}")
        if x.shape[1] < 1:
            raise LapnetError(f"x has no time steps: shape {tuple(x.shape)}, T=0")
        if x.device != w.device:
            raise LapnetError(f"x is on {x.device} but the CharLM is on {w.device}: move x with x.to('{w.device}')")
        lo, hi = (int(x.min()), int(x.max())) if x.numel() else (0, 0)
        if lo < 0 or hi >= self.cfg.vocab_size:
            raise LapnetError(f"x holds ids outside the vocabulary [0, {self.cfg.vocab_size}): min {lo}, max {hi}")

    def init_state(self, batch: int, device=None, dtype=None):
        """Zeros in torch's layout: h (L, B, H), or (h, c) for an LSTM; on the model's device
        and in its dtype unless given (a model made .double() takes a float64 state)."""
        w = self.head.weight
        h = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=w.device if device is None else device,
                        dtype=w.dtype if dtype is None else dtype)
        return (h, torch.zeros_like(h)) if self.cfg.arch == "lstm" else h


def detach_state(state):
    """Cut the autograd graph at a chunk boundary, keeping the values (see TBPTT)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


class TorchStepper:
    """Step a CharLM one character at a time for sampling (see `lapnet.sampling`).

    `prime` runs the whole priming text through the module in one call. For the steps: one
    stream on a CPU is a few small matrix-vector products per character, where torch's
    per-op dispatch (microseconds per call) would cost more than the arithmetic, so on the
    CPU the step runs NumPy's cell (`NumpyStepper`) on zero-copy views of this module's own
    tensors. On a GPU each layer is one fused cell op (`torch.lstm_cell` etc.) under
    inference_mode.
    """

    _CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}

    def __init__(self, model: CharLM, numpy_steps: bool | None = None):
        """numpy_steps: None picks NumPy on the CPU and torch cells elsewhere."""
        self.model = model.eval()
        cfg = model.cfg
        self.lstm = cfg.arch == "lstm"
        self.device = model.embed.weight.device
        self.fast = None
        if numpy_steps is None:
            numpy_steps = self.device.type == "cpu" and getattr(model.rnn, "nonlinearity", "tanh") == "tanh"
        if numpy_steps:
            from lapnet.models.numpy_charlm import NumpyStepper

            weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}  # views, no copies
            self.fast = NumpyStepper(cfg=cfg, weights=weights, prime_fn=self._prime)
            self.step_one = self.fast.step_one  # the single-stream sampler's fast path
            self.stream = self.fast.stream  # its fused loop (LSTM)
            return
        self.cell = self._CELLS[cfg.arch]  # a CharLM's RNN is tanh (CharLMConfig has no nonlinearity)
        r = model.rnn
        self.layers = [tuple(getattr(r, f"{n}_l{k}").detach() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                       for k in range(cfg.layers)]
        self.emb = model.embed.weight.detach()
        self.head_wt = model.head.weight.detach().t().contiguous()  # (H, V) so addmm reads rows
        self.head_b = model.head.bias.detach()

    def _prime(self, ids):
        from lapnet.models.numpy_charlm import split_layers

        with torch.inference_mode():
            logits, state = self.model(torch.as_tensor(ids, device=self.device))  # (B, P, V): the whole prefix at once
            state = tuple(s.cpu().numpy() for s in state) if self.lstm else state.cpu().numpy()
            return logits[:, -1].float().cpu().numpy(), split_layers(state, self.lstm)

    def prime(self, ids):
        if self.fast is not None:
            return self.fast.prime(ids)
        logits, state = self._prime(ids)
        if self.lstm:
            state = [(torch.from_numpy(h).to(self.device), torch.from_numpy(c).to(self.device)) for h, c in state]
        else:
            state = [torch.from_numpy(h).to(self.device) for h in state]
        return logits, state

    def step(self, ids, state):
        if self.fast is not None:
            return self.fast.step(ids, state)
        with torch.inference_mode():
            x = self.emb[torch.from_numpy(ids).to(self.device)]  # (B, E)
            new = []
            for (w_ih, w_hh, b_ih, b_hh), s in zip(self.layers, state):
                s = self.cell(x, s, w_ih, w_hh, b_ih, b_hh)  # (B, H) or ((B, H), (B, H))
                new.append(s)
                x = s[0] if self.lstm else s  # (B, H); no dropout at inference
            logits = torch.addmm(self.head_b, x, self.head_wt)  # (B, V)
            return logits.cpu().numpy(), new
