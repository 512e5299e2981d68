"""Parameter counts of RNN, LSTM and GRU: the notebook's formula beside PyTorch's real modules.

The notebook counts one bias per gate block:

    params = gates * (D*H + H*H + H)        gates = 1 (RNN), 4 (LSTM), 3 (GRU)

PyTorch (following cuDNN) keeps two bias vectors per block, `bias_ih` and `bias_hh`, so a real
module holds gates * H more per layer and direction. For the RNN and the LSTM the two biases
only ever appear as a sum, so one of them is redundant: folding `bias_hh` into `bias_ih`
changes no output. The GRU's candidate is n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): b_hn
sits inside the reset gate's product, so there the second bias is a real extra degree of
freedom. Both claims are measured here on real modules, not asserted.
"""

from __future__ import annotations

import textwrap
from typing import Any

import torch
from torch import nn

from lapnet.errors import LapnetError
from lapnet.host import own_torch_state
from lapnet.scratch.recurrent import GATE_BLOCKS

_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

EXPLANATION = (
    "PyTorch keeps two bias vectors per block (bias_ih and bias_hh, the cuDNN layout), the notebook's "
    "formula one: the difference is blocks * hidden per layer and direction (a block is a gate or the "
    "candidate). For RNN and LSTM only their sum matters (folding bias_hh into bias_ih changes no output); "
    "in torch's GRU b_hn sits inside r * (W_hn h + b_hn), so there it is a real extra parameter (in the "
    "textbook GRU, W_hn (r * h) + b_hn, it would be redundant too)."
)


def notebook_formula(arch: str, input_size: int, hidden_size: int, num_layers: int = 1, num_directions: int = 1) -> int:
    """gates * (D*H + H*H + H) per layer and direction; a stacked layer reads num_directions*H features."""
    g, H = GATE_BLOCKS[arch], hidden_size
    total = 0
    for layer in range(num_layers):
        d = input_size if layer == 0 else num_directions * H
        total += num_directions * g * (d * H + H * H + H)
    return total


def build(arch: str, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False, seed: int = 0) -> nn.RNNBase:
    """A real float64 torch module with torch's default (non-zero) initialisation."""
    torch.manual_seed(seed)
    return _MODULES[arch](input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional).double()


def bias_fold_change(module: nn.RNNBase, blocks: int | None = None, seq_len: int = 6, batch: int = 2, seed: int = 0) -> float:
    """Max |change| of output and final state when bias_hh is folded into bias_ih.

    Args:
        module: a float64 torch RNN/LSTM/GRU.
        blocks: fold only the first `blocks` gate blocks of each bias (GRU: 2 = r and z), or all.

    Zero (to rounding) means the folded bias is redundant; clearly non-zero means it is not.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(seq_len, batch, module.input_size, generator=gen, dtype=torch.float64)  # (T, B, D)
    folded = type(module)(module.input_size, module.hidden_size, num_layers=module.num_layers,
                          bidirectional=module.bidirectional).double()
    folded.load_state_dict(module.state_dict())
    with torch.no_grad():
        for name, p in folded.named_parameters():
            if name.startswith("bias_hh"):
                n = p.shape[0] if blocks is None else blocks * module.hidden_size  # (blocks*H,)
                getattr(folded, name.replace("bias_hh", "bias_ih"))[:n].add_(p[:n])
                p[:n] = 0.0
        out_a, state_a = module(x)
        out_b, state_b = folded(x)
    h_a = state_a[0] if isinstance(state_a, tuple) else state_a
    h_b = state_b[0] if isinstance(state_b, tuple) else state_b
    return float(max((out_a - out_b).abs().max(), (h_a - h_b).abs().max()))


@own_torch_state()
def param_table(input_size: int = 100, hidden_size: int = 256, num_layers: int = 1, bidirectional: bool = False) -> dict[str, Any]:
    """The notebook's parameter table, computed from real modules.

    Args:
        input_size: D. hidden_size: H. num_layers: L. bidirectional: two directions per layer.

    Returns:
        {"config", "rows": [{arch, gate_blocks, notebook_formula, pytorch, difference,
        difference_formula, tensors: {name: count}, notebook_ratio_vs_rnn, pytorch_ratio_vs_rnn,
        second_bias_redundant, bias_fold_max_change}], "explanation"}.
    """
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if int(v) < 1:
            raise LapnetError(f"{name} must be at least 1, got {v}")
    dirs = 2 if bidirectional else 1
    rows = []
    for arch in ("rnn", "lstm", "gru"):
        module = build(arch, input_size, hidden_size, num_layers, bidirectional)
        tensors = {name: int(p.numel()) for name, p in module.named_parameters()}
        actual = sum(tensors.values())
        formula = notebook_formula(arch, input_size, hidden_size, num_layers, dirs)
        # the fold test on a small copy of the same architecture: the claim does not depend on size
        small = build(arch, 3, 4, num_layers, bidirectional, seed=1)
        change = bias_fold_change(small)
        rows.append({
            "arch": arch,
            "gate_blocks": GATE_BLOCKS[arch],
            "notebook_formula": formula,
            "pytorch": actual,
            "difference": actual - formula,
            "difference_formula": f"{GATE_BLOCKS[arch]} * {hidden_size} * {num_layers * dirs} (blocks * hidden * layers * directions)",
            "tensors": tensors,
            "second_bias_redundant": change < 1e-12,
            "bias_fold_max_change": change,
            # GRU: r and z see only the sum b_ir + b_hr (and b_iz + b_hz); only b_hn is needed
            "bias_fold_rz_max_change": bias_fold_change(small, blocks=2) if arch == "gru" else None,
        })
    for r in rows:
        r["notebook_ratio_vs_rnn"] = r["notebook_formula"] / rows[0]["notebook_formula"]
        r["pytorch_ratio_vs_rnn"] = r["pytorch"] / rows[0]["pytorch"]
    return {
        "config": {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers, "bidirectional": bidirectional},
        "rows": rows,
        "explanation": EXPLANATION,
    }


def format_param_table(table: dict[str, Any]) -> str:
    """Aligned text: one row per architecture, then the explanation."""
    c = table["config"]
    lines = [
        f"parameters at input_size={c['input_size']}, hidden={c['hidden_size']}, layers={c['num_layers']}"
        + (", bidirectional" if c["bidirectional"] else ""),
        "",
        f"  {'arch':<5} {'blocks':>6} {'notebook (1 bias)':>18} {'pytorch (2 biases)':>19} {'difference':>11} {'x RNN':>6}  second bias",
    ]
    for r in table["rows"]:
        lines.append(
            f"  {r['arch'].upper():<5} {r['gate_blocks']:>6} {r['notebook_formula']:>18,} {r['pytorch']:>19,} "
            f"{r['difference']:>11,} {r['pytorch_ratio_vs_rnn']:>6.2f}  "
            + ("redundant (fold changes outputs by %.0e)" % r["bias_fold_max_change"] if r["second_bias_redundant"]
               else "needed in torch's form (fold changes outputs by %.2g)" % r["bias_fold_max_change"])
        )
    gru = table["rows"][2]
    lines.append(f"  (GRU: folding only the r and z blocks changes outputs by {gru['bias_fold_rz_max_change']:.0e}: b_hn alone is the extra)")
    lines += [""] + textwrap.wrap(table["explanation"], 100, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)
