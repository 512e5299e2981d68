"""Notebook Exercise 1, done properly: a GRU from scratch checked step by step against nn.GRU.

The notebook's check compares its GRUFromScratch (its own random weights) with an nn.GRU
(torch's own random weights) and asks only for "similar-magnitude values": two different
networks, so nothing is checked. Here one nn.GRU's weights are copied into the NumPy engine
(`lapnet.scratch.GRU`) in both of its forms and the hidden states are compared at every step:

    pytorch form   n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))    torch.nn.GRU's cell
    textbook form  n = tanh(W_in x_t + b_in + W_hn (r * h_{t-1}) + b_hn)    the notebook's cell

The pytorch form reproduces nn.GRU to rounding (about 1e-16 in float64). The textbook form,
given the same weights, is another function: the reset gate acts before W_hn instead of after
it, so its states differ from the first step on. The textbook weights go through the
notebook's own layout (one matrix per block on [h_{t-1}, x_t], one bias, its z = 1 - torch's
z): `notebook_weights_from_torch` makes the copy a student would make, and
`scratch.gru_weights_from_notebook` maps it back onto the engine.

The sizes, seeds and input are the notebook's: GRUFromScratch(input_size=3, hidden_size=4)
after np.random.seed(42), then five inputs of three features (test_seq), and
torch.manual_seed(42) before nn.GRU(3, 4). The notebook's own cell (its init, zero biases)
is run too, through `gru_weights_from_notebook`, to print the h_0 .. h_5 its commented code
expects.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lapnet.errors import LapnetError

FORMS = ("pytorch", "textbook")


def notebook_weights_from_torch(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """An nn.GRU's weights in the notebook's layout: the inverse of `gru_weights_from_notebook`.

    The notebook's GRUFromScratch keeps one (H, H + D) matrix per block acting on
    [h_{t-1}, x_t] and one bias, and weighs h_{t-1} by 1 - z where torch weighs it by z. So
    W_r = [W_hr | W_ir], W_h = [W_hn | W_in] and W_z = -[W_hz | W_iz] (sigmoid(-a) = 1 -
    sigmoid(a)); each bias is b_i* + b_h* (negated for z). Adding b_hn into b_h is exact only
    in the textbook form, where b_hn sits outside the reset gate: in torch's form it sits inside.

    Args:
        state_dict: weight_ih_l0 (3H, D), weight_hh_l0 (3H, H), bias_ih_l0, bias_hh_l0 (3H,),
            torch's block order r|z|n (tensors or arrays).

    Returns:
        W_z, W_r, W_h (H, H + D) and b_z, b_r, b_h (H,), float64: the arguments of
        `scratch.gru_weights_from_notebook`.
    """
    from lapnet.scratch.recurrent import as_numpy

    keys = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    if not isinstance(state_dict, Mapping) or any(k not in state_dict for k in keys):
        raise LapnetError(f"notebook_weights_from_torch: expected a one-layer GRU state_dict with {', '.join(keys)}")
    w = {k: as_numpy(state_dict[k], k).astype(np.float64) for k in keys}
    H = w["weight_hh_l0"].shape[-1] if w["weight_hh_l0"].ndim == 2 else 0
    D = w["weight_ih_l0"].shape[-1] if w["weight_ih_l0"].ndim == 2 else 0
    want = {"weight_ih_l0": (3 * H, D), "weight_hh_l0": (3 * H, H), "bias_ih_l0": (3 * H,), "bias_hh_l0": (3 * H,)}
    for k, shape in want.items():
        if H < 1 or D < 1 or w[k].shape != shape:
            raise LapnetError(f"notebook_weights_from_torch: {k} must be {shape} for a GRU with D={D}, H={H}, "
                              f"got {w[k].shape}")
    w_ir, w_iz, w_in = np.split(w["weight_ih_l0"], 3)  # (3H, D) -> 3 x (H, D)
    w_hr, w_hz, w_hn = np.split(w["weight_hh_l0"], 3)  # (3H, H) -> 3 x (H, H)
    b_r, b_z, b_n = np.split(w["bias_ih_l0"] + w["bias_hh_l0"], 3)  # (3H,) -> 3 x (H,)
    return {
        "W_z": -np.concatenate([w_hz, w_iz], axis=1),  # (H, H + D), columns [h, x]; negated: the notebook's z = 1 - torch's
        "b_z": -b_z,
        "W_r": np.concatenate([w_hr, w_ir], axis=1),
        "b_r": b_r,
        "W_h": np.concatenate([w_hn, w_in], axis=1),
        "b_h": b_n,
    }


def _notebook_cell(input_size: int, hidden_size: int, steps: int, seed: int):
    """The notebook's cell: np.random.seed(seed), GRUFromScratch's weights (W_z, W_r, W_h in
    that order, randn * sqrt(2 / (D + H)), zero biases), then test_seq, `steps` x (D,)."""
    rng = np.random.RandomState(seed)  # the stream np.random.seed(seed) gives, without touching the global one
    scale = np.sqrt(2.0 / (input_size + hidden_size))
    nb = {}
    for g in ("z", "r", "h"):
        nb[f"W_{g}"] = rng.randn(hidden_size, input_size + hidden_size) * scale  # (H, H + D)
        nb[f"b_{g}"] = np.zeros(hidden_size)
    test_seq = np.stack([rng.randn(input_size) for _ in range(steps)])  # (T, D)
    return nb, test_seq


def gru_forms(input_size: int = 3, hidden_size: int = 4, steps: int = 5, seed: int = 42) -> dict[str, Any]:
    """Run Exercise 1: nn.GRU against the NumPy engine's two GRU forms on nn.GRU's weights.

    Args:
        input_size: D (the notebook: 3).
        hidden_size: H (the notebook: 4).
        steps: T, inputs in test_seq (the notebook: 5).
        seed: np.random.seed for GRUFromScratch and test_seq, torch.manual_seed for nn.GRU
            (the notebook: 42 for both). Neither global generator is changed.

    Returns:
        A JSON-able dict: the sizes; `per_step`, one row per step t = 1..T with the max over
        units of |h_t - nn.GRU's h_t| for each form; `max_abs_diff` per form over all steps;
        `textbook_layout_roundtrip` (the textbook form on nn.GRU's state_dict directly against
        the copy through the notebook's layout: rounding only); `torch_h` (T, H), nn.GRU's
        float64 states; `notebook` (the notebook's own cell: `hidden_states` h_0..h_T from
        its init with zero biases, and `torch_final_hidden_float32`, the line the notebook prints).
    """
    import torch

    from lapnet import scratch

    for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("steps", steps)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise LapnetError(f"{name} must be an integer of at least 1, got {v!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise LapnetError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    D, H, T = int(input_size), int(hidden_size), int(steps)
    nb, test_seq = _notebook_cell(D, H, T, seed)  # (T, D)

    with torch.random.fork_rng(devices=[]):  # the notebook's torch.manual_seed(seed), kept local
        torch.manual_seed(seed)
        gru = torch.nn.GRU(input_size=D, hidden_size=H, batch_first=True)  # float32, as the notebook builds it
    with torch.no_grad():
        _, h32 = gru(torch.tensor(test_seq, dtype=torch.float32)[None])  # the notebook's float32 run
        gru = gru.double()  # the same weights (float32 values), now run in float64
        torch_out, _ = gru(torch.tensor(test_seq)[None])  # (1, T, H)
    torch_h = torch_out[0].numpy()  # (T, H)
    sd = {k: v.detach().numpy().copy() for k, v in gru.state_dict().items()}

    def engine(form: str, weights: Mapping[str, np.ndarray]) -> np.ndarray:
        layer = scratch.GRU(D, H, gru_form=form, dtype="float64")
        layer.load_state_dict(weights)
        return layer.forward(test_seq[None])[0][0]  # (1, T, H) -> (T, H)

    hs = {
        "pytorch": engine("pytorch", sd),  # nn.GRU's state_dict as it is
        "textbook": engine("textbook", scratch.gru_weights_from_notebook(**notebook_weights_from_torch(sd))),
    }
    roundtrip = float(np.abs(engine("textbook", sd) - hs["textbook"]).max())
    diff = {f: np.abs(hs[f] - torch_h).max(axis=1) for f in FORMS}  # (T,): max over units, per step
    own = engine("textbook", scratch.gru_weights_from_notebook(**nb))  # the notebook's own cell, (T, H)
    return {
        "input_size": D, "hidden_size": H, "steps": T, "seed": seed, "dtype": "float64",
        "per_step": [{"t": t + 1, **{f"{f}_form": float(diff[f][t]) for f in FORMS}} for t in range(T)],
        "max_abs_diff": {f"{f}_form": float(diff[f].max()) for f in FORMS},
        "textbook_layout_roundtrip": roundtrip,
        "torch_h": torch_h.tolist(),
        "notebook": {
            "hidden_states": [[0.0] * H, *own.tolist()],  # h_0 = 0, then h_1 .. h_T
            "torch_final_hidden_float32": h32[0, 0].numpy().astype(np.float64).tolist(),
        },
    }


def format_gru_forms(report: dict[str, Any]) -> str:
    """The report of `gru_forms` as the screen text of `lapnet gru-forms`."""
    D, H, T, seed = (report[k] for k in ("input_size", "hidden_size", "steps", "seed"))
    worst = report["max_abs_diff"]
    lines = [
        f"Exercise 1: a GRU from scratch (lapnet.scratch.GRU) against torch.nn.GRU, float64, D={D}, H={H}, T={T}, seed {seed}",
        f"weights: torch.manual_seed({seed}); nn.GRU({D}, {H}) with torch's init (non-zero biases), copied into both forms",
        f"input: the notebook's test_seq (np.random.seed({seed}), drawn after GRUFromScratch's weights); h_0 = 0",
        "",
        "max |h_t - nn.GRU's h_t| over the units",
        "  step  pytorch form  textbook form",
    ]
    lines += [f"  {r['t']:>4}  {r['pytorch_form']:>12.1e}  {r['textbook_form']:>13.1e}" for r in report["per_step"]]
    lines += [
        "",
        f"pytorch form, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): nn.GRU's cell, equal to rounding "
        f"(at most {worst['pytorch_form']:.1e}).",
        f"textbook form, n = tanh(W_in x + b_in + W_hn (r * h) + b_hn), the notebook's: the same weights give "
        f"other states (up to {worst['textbook_form']:.2g}),",
        "  because the reset gate acts on h before W_hn, not after it. Its weights went through the notebook's",
        "  layout (W_z = -[W_hz | W_iz], one bias per block) and back with scratch.gru_weights_from_notebook:",
        f"  {report['textbook_layout_roundtrip']:.1e} from loading nn.GRU's state_dict directly, so the copy is exact.",
        "",
        f"The notebook's own cell: GRUFromScratch({D}, {H}) after np.random.seed({seed}), its init, zero biases",
        f"  Number of hidden states: {len(report['notebook']['hidden_states'])}",
    ]
    lines += [f"  h_{t}: {np.round(h, 3) + 0.0}" for t, h in enumerate(report["notebook"]["hidden_states"])]
    lines.append(f"  PyTorch final hidden (float32, the notebook's line): "
                 f"{np.round(report['notebook']['torch_final_hidden_float32'], 3) + 0.0}")
    lines.append("  (nn.GRU has its own random weights here, as in the notebook: compare the table above, not these.)")
    return "\n".join(lines)
