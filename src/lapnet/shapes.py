"""The shape explorer: every tensor of nn.RNN / nn.LSTM / nn.GRU, measured, with what each axis means.

The notebook's section 6 prints the shapes of `input`, `output`, `h_n` and `c_n` and checks two
facts by hand. Here every shape and every fact is computed by running a real torch module in
float64 (and, when it is present, the NumPy engine `lapnet.scratch` on the same weights, which
must agree), never typed in. Unlike the rest of lapnet this module follows torch's own layout
switch: with `batch_first=False` (torch's default, the notebook's point) time comes first.

Shape glossary (the words printed beside each shape):

    seq_len     T, time steps              batch        B, sequences run side by side
    input_size  D, features per step       hidden       H, hidden units per direction
    num_layers  L, stacked layers          num_directions  1, or 2 when bidirectional
    gates       1 (RNN), 4 (LSTM: i|f|g|o), 3 (GRU: r|z|n) blocks stacked in each weight

Facts checked (each is a claim with `holds` computed from the values):

    - output's last step is the top layer's final hidden state (unidirectional);
    - bidirectional: the forward half of output at the LAST step is h_n[-2], the backward half
      at step 0 is h_n[-1] (the backward direction finishes at time 0), and the backward half
      at the last step is not h_n[-1] (the usual mistake);
    - packed sequences: the final state sits at each sequence's own last step, padded steps of
      output are zeros, output's last step is padding for the shorter sequences, and packing
      equals running each sequence alone, unpadded;
    - stacked: output holds the top layer only; LSTM: c_n never appears in output;
      h_n keeps batch on axis 1 whatever batch_first says.

The NumPy engine is batch-first, so torch's output is compared transposed; the facts are then
recomputed on the engine's own values, so a learner sees both engines obey the same rules.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lapnet.errors import LapnetError
from lapnet.host import own_torch_state
from lapnet.models.recurrent import ARCHS

GATES = {"rnn": ("tanh",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
ATOL = 1e-10  # float64 throughout: equal means equal to rounding, not "close-ish"


@dataclass(frozen=True)
class ShapeConfig:
    """What to build and feed. Sizes follow torch's constructor names.

    Attributes:
        arch: "rnn", "lstm" or "gru".
        input_size: D. hidden_size: H. num_layers: L.
        bidirectional: two directions per layer, outputs concatenated.
        batch_first: input/output as (B, T, .) instead of torch's default (T, B, .).
        batch: B. seq_len: T.
        lengths: true length of each of the B sequences (packed run), or None.
        seed: weights and input.
    """

    arch: str = "lstm"
    input_size: int = 10
    hidden_size: int = 20
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    batch: int = 3
    seq_len: int = 5
    lengths: tuple[int, ...] | None = None
    seed: int = 0

    def validate(self) -> "ShapeConfig":
        """Raise LapnetError (one line) on anything torch would choke on or silently misread."""
        arch = self.arch.lower()
        if arch not in ARCHS:
            raise LapnetError(f"unknown architecture {self.arch!r}: expected one of {', '.join(ARCHS)}")
        for name in ("input_size", "hidden_size", "num_layers", "batch", "seq_len"):
            v = getattr(self, name)
            if int(v) < 1:
                raise LapnetError(f"{name} must be at least 1, got {v}")
        if self.lengths is not None:
            lengths = tuple(int(n) for n in self.lengths)
            if len(lengths) != self.batch:
                raise LapnetError(f"lengths: got {len(lengths)} lengths for a batch of {self.batch} sequences")
            bad = [n for n in lengths if not 1 <= n <= self.seq_len]
            if bad:
                raise LapnetError(f"lengths: each must be between 1 and seq_len={self.seq_len}, got {bad[0]}")
        return self

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1


def parse_lengths(text: str | None) -> tuple[int, ...] | None:
    """'5,3,2' -> (5, 3, 2); None or '' -> None. One-line LapnetError on anything else."""
    if text is None or not text.strip():
        return None
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise LapnetError(f"lengths: expected comma-separated integers like 5,3,2, got {text!r}") from None


def build_module(cfg: ShapeConfig) -> nn.RNNBase:
    """The torch module the explorer measures: float64, torch's own batch_first switch, seeded."""
    torch.manual_seed(cfg.seed)
    module = _MODULES[cfg.arch.lower()](
        input_size=cfg.input_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        bidirectional=cfg.bidirectional,
        batch_first=cfg.batch_first,
    )
    return module.double().eval()


@own_torch_state()
def explore_shapes(cfg: ShapeConfig) -> dict[str, Any]:
    """Run one module and report every tensor's shape, its axes, its parameters and the facts.

    Args:
        cfg: the module and batch to build (validated here).

    Returns:
        A JSON-ready dict: "config"; "tensors" (input, output, h_n[, c_n]: name, shape, axes,
        axes_match); "h_n_slots" (which layer/direction each row of h_n holds, layers counted
        from 0 as in torch's weight names: layer 0 is weight_ih_l0); "parameters"
        (name, shape, axes, count) and "total_parameters"; "facts" (id, claim, holds,
        max_abs_diff); "scratch" (the NumPy engine's agreement, or why it was not run).
    """
    cfg = cfg.validate()
    arch = cfg.arch.lower()
    module = build_module(cfg)
    B, T, D = cfg.batch, cfg.seq_len, cfg.input_size
    x = _inputs(cfg)  # (B, T, D)
    lengths = cfg.lengths
    x_in = x if cfg.batch_first else x.transpose(0, 1).contiguous()  # (B, T, D) or (T, B, D)

    with torch.no_grad():
        out_raw, state = _run(module, x_in, lengths, cfg.batch_first)
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    out = out_raw if cfg.batch_first else out_raw.transpose(0, 1)  # (B, T, dirs*H) for the checks

    tensors = [
        _tensor_row("input", x_in, _io_axes(cfg, ("input_size", D))),
        _tensor_row("output", out_raw, _io_axes(cfg, ("num_directions * hidden", cfg.num_directions * cfg.hidden_size))),
        _tensor_row("h_n", h_n, _state_axes(cfg)),
    ]
    if c_n is not None:
        tensors.append(_tensor_row("c_n", c_n, _state_axes(cfg)))

    params = [_param_row(arch, cfg, name, p) for name, p in module.named_parameters()]
    report: dict[str, Any] = {
        "config": {**asdict(cfg), "arch": arch, "lengths": list(lengths) if lengths else None},
        "tensors": tensors,
        "h_n_slots": [
            f"h_n[{k}] = layer {k // cfg.num_directions} {'backward' if k % cfg.num_directions else 'forward'}"
            for k in range(cfg.num_layers * cfg.num_directions)
        ],
        "parameters": params,
        "total_parameters": int(sum(p["count"] for p in params)),
        "facts": _facts(cfg, _torch_alone(cfg, module), out, h_n, c_n),
        "scratch": _scratch_agreement(cfg, module, x, out, h_n, c_n),
    }
    return report


def _inputs(cfg: ShapeConfig) -> torch.Tensor:
    """The seeded batch, batch-first (B, T, D); steps past a sequence's length are zero padding."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    x = torch.randn(cfg.batch, cfg.seq_len, cfg.input_size, generator=gen, dtype=torch.float64)  # (B, T, D)
    if cfg.lengths is not None:
        mask = torch.arange(cfg.seq_len)[None, :] < torch.tensor(cfg.lengths)[:, None]  # (B, T)
        x = x * mask[:, :, None]
    return x


def _run(module: nn.RNNBase, x_in: torch.Tensor, lengths, batch_first: bool):
    """Run torch's module; with lengths, pack so the padding is never read."""
    if lengths is None:
        return module(x_in)
    packed = pack_padded_sequence(x_in, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x_in.shape[1 if batch_first else 0])
    return out, state


# ---------------------------------------------------------------------------------------------
# axes: each axis is (label, size the label's formula gives); the shape torch returned is then
# checked against the formula, so a wrong label would show up as axes_match = False.


def _io_axes(cfg: ShapeConfig, last: tuple[str, int]) -> list[tuple[str, int]]:
    first = [("batch", cfg.batch), ("seq_len", cfg.seq_len)]
    return (first if cfg.batch_first else first[::-1]) + [last]


def _state_axes(cfg: ShapeConfig) -> list[tuple[str, int]]:
    # batch_first never applies to the state: batch stays on axis 1
    return [("num_layers * num_directions", cfg.num_layers * cfg.num_directions), ("batch", cfg.batch), ("hidden", cfg.hidden_size)]


def _tensor_row(name: str, t: torch.Tensor, axes: list[tuple[str, int]]) -> dict[str, Any]:
    shape = list(t.shape)
    return {
        "name": name,
        "shape": shape,
        "axes": [a for a, _ in axes],
        "axes_match": shape == [n for _, n in axes],
    }


_PARAM = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")


def _param_row(arch: str, cfg: ShapeConfig, name: str, p: torch.Tensor) -> dict[str, Any]:
    """Name the axes of one weight: rows are the gate blocks, columns what it multiplies."""
    kind, src, layer, rev = _PARAM.fullmatch(name).groups()
    gates = GATES[arch]
    rows_label = f"{len(gates)} blocks {'|'.join(gates)} * hidden" if len(gates) > 1 else "hidden"
    rows = len(gates) * cfg.hidden_size
    if kind == "bias":
        axes = [(rows_label, rows)]
    elif src == "hh":
        axes = [(rows_label, rows), ("hidden", cfg.hidden_size)]
    elif int(layer) == 0:
        axes = [(rows_label, rows), ("input_size", cfg.input_size)]
    else:  # a stacked layer reads the layer below: both directions concatenated
        axes = [(rows_label, rows), ("num_directions * hidden", cfg.num_directions * cfg.hidden_size)]
    row = _tensor_row(name, p, axes)
    row["count"] = int(p.numel())
    row["direction"] = "backward" if rev else "forward"
    return row


# ---------------------------------------------------------------------------------------------
# facts


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _fact(fid: str, claim: str, diff: float, *, differs: bool = False) -> dict[str, Any]:
    """A claim that two tensors are equal (or, with `differs`, that they are not)."""
    equal = diff <= ATOL
    return {"id": fid, "claim": claim, "holds": (not equal) if differs else equal, "max_abs_diff": diff}


def _facts(cfg, run_alone, out, h_n, c_n) -> list[dict[str, Any]]:
    """The claims, checked on one engine's values.

    Args:
        run_alone: b -> final (h, c or None) of sequence b run by itself on its first
            lengths[b] steps (only called for packed batches).
        out: (B, T, dirs*H) batch-first here whatever the module's layout; claims name its layout.
        h_n, c_n: (L*dirs, B, H); c_n None unless LSTM.
    """
    H, T, dirs = cfg.hidden_size, cfg.seq_len, cfg.num_directions
    bf = cfg.batch_first

    def at(t: str, half: str = "") -> str:  # how the learner would index output in this layout
        if bf:
            return f"output[:, {t}{half}]"
        return f"output[{t}, :{half}]" if half else f"output[{t}]"

    fwd, bwd = (f", :{H}", f", {H}:") if dirs == 2 else ("", "")
    facts: list[dict[str, Any]] = []
    lengths = cfg.lengths
    full = lengths is None or all(n == T for n in lengths)
    top_fwd = h_n[-dirs]  # (B, H) the top layer's forward final state

    if lengths is None:
        facts.append(_fact(
            "last_output_is_final_hidden",
            f"{at('-1', fwd)} == h_n[{-dirs}]: the last step of output is the top layer's final "
            f"{'forward ' if dirs == 2 else ''}hidden state" + (" (h_n[0] with one layer)" if cfg.num_layers == 1 and dirs == 1 else ""),
            _diff(out[:, -1, :H], top_fwd),
        ))
    else:
        last = torch.tensor(lengths) - 1  # (B,)
        own_last = out[torch.arange(cfg.batch), last, :H]  # (B, H) each sequence's own last step
        facts.append(_fact(
            "packed_final_state_at_own_last_step",
            f"packed: the forward half of output at each sequence's own last step (lengths-1 = {last.tolist()}) == h_n[{-dirs}]",
            _diff(own_last, top_fwd),
        ))
        pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]  # (B, T)
        facts.append(_fact(
            "packed_padding_is_zero",
            "packed: output is exactly zero at every padded step (t >= length)",
            float(out[pad].abs().max()) if bool(pad.any()) else 0.0,
        ))
        if not full:
            short = torch.tensor([n < T for n in lengths])
            facts.append(_fact(
                "packed_last_step_is_not_final_state",
                f"packed: {at('-1', fwd)} != h_n[{-dirs}] for the shorter sequences (it is padding: read each sequence's own last step)",
                _diff(out[short, -1, :H], top_fwd[short]),
                differs=True,
            ))
        facts.append(_fact(
            "packed_equals_each_alone",
            "packed: h_n equals running each sequence alone on its first `length` steps, unpadded",
            _alone_diff(cfg, run_alone, h_n, c_n),
        ))

    if dirs == 2:
        top_bwd = h_n[-1]  # (B, H)
        facts.append(_fact(
            "backward_final_state_at_time_0",
            f"{at('0', bwd)} == h_n[-1]: the backward direction reads right to left, so its final state sits at time 0",
            _diff(out[:, 0, H:], top_bwd),
        ))
        if T > 1:
            if full:
                facts.append(_fact(
                    "backward_half_at_last_step_is_not_final",
                    f"{at('-1', bwd)} != h_n[-1]: at the last step the backward direction has read one element only",
                    _diff(out[:, -1, H:], top_bwd),
                    differs=True,
                ))
    if cfg.num_layers > 1:
        facts.append(_fact(
            "output_is_top_layer_only",
            f"h_n[0] (layer 0's final state, the bottom layer) != the final step of output: output holds the top layer only",
            _diff(h_n[0], top_fwd),
            differs=True,
        ))
    if c_n is not None:
        facts.append(_fact(
            "cell_state_not_in_output",
            "c_n != h_n: the LSTM's cell state (the conveyor belt) never appears in output; h = o * tanh(c)",
            _diff(c_n, h_n),
            differs=True,
        ))
    facts.append(_fact(
        "state_is_never_batch_first",
        f"h_n keeps batch on axis 1 (shape[1] == batch = {cfg.batch}) even with batch_first={cfg.batch_first}",
        0.0 if h_n.shape[1] == cfg.batch else float("inf"),
    ))
    return facts


def _alone_diff(cfg, run_alone, h_n, c_n) -> float:
    """Largest |difference| between the packed final state and running each sequence by itself."""
    worst = 0.0
    for b in range(cfg.batch):
        hb, cb = run_alone(b)  # (L*dirs, 1, H) each
        worst = max(worst, _diff(hb[:, 0], h_n[:, b]))
        if cb is not None:
            worst = max(worst, _diff(cb[:, 0], c_n[:, b]))
    return worst


def _split(state):
    return state if isinstance(state, tuple) else (state, None)


def _torch_alone(cfg, module):
    """run_alone for torch: sequence b, unpadded, in the module's own layout."""
    x = _inputs(cfg)

    def run(b: int):
        xb = x[b : b + 1, : cfg.lengths[b]]  # (1, n, D) unpadded
        xb = xb if cfg.batch_first else xb.transpose(0, 1)  # (n, 1, D) time first
        with torch.no_grad():
            return _split(module(xb)[1])

    return run


# ---------------------------------------------------------------------------------------------
# the NumPy engine on the same weights


def _scratch_agreement(cfg, module, x, out, h_n, c_n) -> dict[str, Any]:
    """Run lapnet.scratch on torch's weights; report shapes and max |difference| per tensor."""
    try:
        from lapnet import scratch
        cls = getattr(scratch, cfg.arch.upper())
        from_torch = cls.from_torch
    except (ImportError, AttributeError):
        return {"available": False, "reason": "lapnet.scratch has no RNN/LSTM/GRU with from_torch yet"}
    engine = from_torch(module)
    lengths = None if cfg.lengths is None else np.asarray(cfg.lengths)
    s_out, s_state, _ = engine.forward(x.numpy(), lengths=lengths)  # batch-first (B, T, dirs*H)
    s_h, s_c = _split(s_state)
    pairs = [("output", s_out, out), ("h_n", s_h, h_n)]
    if c_n is not None:
        pairs.append(("c_n", s_c, c_n))
    def run_alone(b: int):
        _, st, _ = engine.forward(x[b : b + 1, : cfg.lengths[b]].numpy())  # (1, n, D) unpadded
        hb, cb = _split(st)
        return torch.from_numpy(np.asarray(hb)), None if cb is None else torch.from_numpy(np.asarray(cb))

    # the same claims, checked on the NumPy engine's own values
    t_out, t_h = torch.from_numpy(np.asarray(s_out)), torch.from_numpy(np.asarray(s_h))
    t_c = None if s_c is None else torch.from_numpy(np.asarray(s_c))
    facts = _facts(cfg, run_alone, t_out, t_h, t_c)
    rows = []
    for name, s, t in pairs:
        s = np.asarray(s)
        same_shape = list(s.shape) == list(t.shape)
        diff = float(np.abs(s - t.numpy()).max()) if same_shape else float("inf")
        rows.append({"name": name, "shape": list(s.shape), "shape_match": same_shape, "max_abs_diff": diff})
    return {
        "available": True,
        "layout": "batch-first (scratch is batch-first everywhere; torch's output transposed to compare)",
        "tensors": rows,
        "agrees": all(r["shape_match"] and r["max_abs_diff"] <= 1e-9 for r in rows),
        "facts": [{"id": f["id"], "holds": f["holds"], "max_abs_diff": f["max_abs_diff"]} for f in facts],
        "facts_hold": all(f["holds"] for f in facts),
    }


# ---------------------------------------------------------------------------------------------
# text


def _shape(s: list[int]) -> str:
    return "(" + ", ".join(str(n) for n in s) + ("," if len(s) == 1 else "") + ")"


def format_shapes(report: dict[str, Any]) -> str:
    """The report as aligned text: tensors, parameters with counts, h_n slots, facts, scratch."""
    c = report["config"]
    flags = [f"input_size={c['input_size']}", f"hidden={c['hidden_size']}", f"layers={c['num_layers']}",
             "bidirectional" if c["bidirectional"] else "unidirectional",
             f"batch_first={c['batch_first']}", f"batch={c['batch']}", f"seq_len={c['seq_len']}"]
    if c["lengths"]:
        flags.append("lengths=" + ",".join(map(str, c["lengths"])))
    lines = [f"nn.{c['arch'].upper()}  " + "  ".join(flags) + f"  (float64, seed {c['seed']})", ""]

    def block(rows, with_count: bool) -> None:
        w_name = max(len(r["name"]) for r in rows) + 1
        w_shape = max(len(_shape(r["shape"])) for r in rows)
        for r in rows:
            count = f"{r['count']:>9,}  " if with_count else ""
            mark = "" if r["axes_match"] else "   <-- shape does not match its axes!"
            lines.append(f"  {r['name'] + ':':<{w_name}} {_shape(r['shape']):<{w_shape}}  {count}= ({', '.join(r['axes'])}){mark}")

    lines.append("tensors (shape = what each axis means)")
    block(report["tensors"], False)
    lines += ["", "  " + "   ".join(report["h_n_slots"]),
              "  (layers count from 0, as torch names the weights: layer 0 is weight_ih_l0, the bottom one)", ""]
    lines.append("parameters (shape, count = axes)")
    block(report["parameters"], True)
    lines.append(f"  total: {report['total_parameters']:,} parameters")
    lines += ["", "facts (computed from the values)"]
    for f in report["facts"]:
        lines.append(f"  [{'yes' if f['holds'] else 'NO '}] {f['claim']}  (max |diff| {f['max_abs_diff']:.1e})")
    s = report["scratch"]
    layout = "" if c["batch_first"] else " (it is batch-first: compared with torch's output transposed to (batch, seq_len, .))"
    lines += ["", f"NumPy engine (lapnet.scratch) on the same weights{layout}"]
    if not s["available"]:
        lines.append(f"  not run: {s['reason']}")
    else:
        for r in s["tensors"]:
            lines.append(f"  {r['name'] + ':':<8} {_shape(r['shape'])}  {'same shape' if r['shape_match'] else 'SHAPE DIFFERS'}, max |diff| vs torch {r['max_abs_diff']:.1e}")
        held = sum(f["holds"] for f in s["facts"])
        lines.append(f"  the facts above, recomputed on its values: {held}/{len(s['facts'])} hold")
        lines.append(f"  agrees with torch: {'yes' if s['agrees'] and s['facts_hold'] else 'NO'}")
    return "\n".join(lines)
