"""Build notebooks/rnn_f1_edition.ipynb from the cells below (no outputs are ever stored).

    .venv/bin/python notebooks/build_notebook.py          # rewrite the notebook
    .venv/bin/python notebooks/build_notebook.py --check  # exit 1 if the .ipynb is stale

The notebook walks the seed notebook's path (sections 1-7, the three exercises, the
summary) in lapnet's words. Every code cell calls lapnet: the numbers are measured by the
library and the figures come from `lapnet.diagrams`, `lapnet.plots` and the experiments;
nothing is re-implemented here. Sizes follow one switch at the top, QUICK, which the test
suite turns on (LAPNET_NOTEBOOK_QUICK=1) to execute the whole notebook in about a minute.
Keeping the cells in this script makes every change reviewable as a plain diff.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
TARGET = HERE / "rnn_f1_edition.ipynb"

CELLS: list[tuple[str, str]] = []


def md(text: str) -> None:
    CELLS.append(("md", text.strip("\n")))


def code(text: str) -> None:
    CELLS.append(("code", text.strip("\n")))


# ------------------------------------------------------------------------------------------
md(r"""
# Recurrent neural networks, the Formula 1 edition, rebuilt on lapnet

A race is a sequence: lap 45 only makes sense with laps 1 to 44 behind it (tyres wear, fuel
burns off, the track rubbers in). Recurrent networks carry such a history in a hidden state.
This notebook follows the path of the original *"RNNs: the Formula 1 edition"* (sections 1
to 7, three exercises, a summary), but every number and every figure here is produced by
**lapnet**, the tested library behind the `lapnet` command: the NumPy engine
(`lapnet.scratch`), the torch models, the shared training loop, the experiments and the
plots. Nothing is re-implemented in the notebook: read a cell, then read the function it
calls.

**Sizes.** One switch, `QUICK`, picks toy sizes (what the test suite runs, about a minute) or
the notebook's own sizes (a few minutes on a laptop CPU). Set it below or through the
environment variable `LAPNET_NOTEBOOK_QUICK=1`.
""")

code(r"""
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

%matplotlib inline
plt.ioff()  # a figure shows where a cell returns it, once (the library draws several per call)
QUICK = os.environ.get("LAPNET_NOTEBOOK_QUICK", "0") == "1"   # True: toy sizes (the tests)
OUT = Path(os.environ.get("LAPNET_NOTEBOOK_OUT", "runs/notebook"))  # runs written by this notebook
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)  # the models here are tiny: one thread is faster than two
SIZE = dict(
    sine_epochs=10 if QUICK else 200, sine_hidden=(4, 16) if QUICK else (2, 8, 32, 128),
    grad_length=12 if QUICK else 50, grad_steps=5 if QUICK else 300, clip_steps=5 if QUICK else 200,
    text_steps=30 if QUICK else 600, text_hidden=32 if QUICK else 128,
    trend_epochs=5 if QUICK else 50, trend_train=64 if QUICK else 500,
)
print("QUICK" if QUICK else "full sizes", SIZE)
""")

# ------------------------------------------------------------------------------------------
md(r"""
## 1. Why sequences need special treatment

A feedforward network takes a fixed-size input all at once, with its own weights for each
position: it keeps the order inside its window, but cannot read a longer sequence, and learns
the same pattern again at every position. A sequence model reads one step at a time, shares
its weights across steps and keeps a **memory** of what it has seen, so the same network
handles any length (`lapnet feedforward` measures both on sequences longer than the window). In race terms: the feedforward engineer
looks at one photo of the car; the recurrent one has watched every lap.
""")

code(r"""
from lapnet import diagrams

diagrams.feedforward_vs_sequential()
""")

# ------------------------------------------------------------------------------------------
md(r"""
## 2. The vanilla RNN

One equation, applied at every step with the **same** weights:

$$h_t = \tanh(W_{ih}\,x_t + b_{ih} + W_{hh}\,h_{t-1} + b_{hh})$$

$x_t$ is the input at step $t$ (this lap's data), $h_{t-1}$ the memory so far (the car's
state), and $h_t$ the updated memory. lapnet uses PyTorch's names and layouts: `weight_ih_l0`
of shape (H, D), `weight_hh_l0` (H, H) and two biases, so weights move between the NumPy
engine and `torch.nn.RNN` unchanged. Unrolled through time, the loop becomes a chain of
identical cells:
""")

code(r"""
diagrams.rnn_unrolled()
""")

md(r"""
### The RNN from scratch, in NumPy

`lapnet.scratch.RNN` is the vanilla RNN written in NumPy with its own backward pass. A
sequence of 5 steps with 3 features each (batch-first: `(B, T, D)`) gives one hidden state
per step; the last one is also the final state `h_n`. The same weights loaded into
`torch.nn.RNN` give the same numbers.
""")

code(r"""
from lapnet import scratch

rnn = scratch.RNN(input_size=3, hidden_size=4, dtype="float64", seed=42)
x = np.random.default_rng(42).standard_normal((1, 5, 3))      # (B=1, T=5, D=3)
out, h_n, cache = rnn.forward(x)                               # out (1, 5, 4), h_n (1, 1, 4)
print("output", out.shape, " h_n", h_n.shape)
print("h_1 .. h_5:\n", out[0].round(3))

torch_rnn = torch.nn.RNN(3, 4, batch_first=True, dtype=torch.float64)
torch_rnn.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
print("max |NumPy - torch| =", float(np.abs(torch_rnn(torch.from_numpy(x))[0].detach().numpy() - out).max()))
""")

md(r"""
### Watching the hidden state evolve

Feed a sine wave through an untrained RNN with 8 hidden units: each unit responds to the
input in its own way, a different, delayed, squashed view of the same signal. This
"memory" is what training will shape.
""")

code(r"""
from lapnet.diagnostics.hidden_evolution import hidden_evolution, plot_hidden_evolution

evolution = hidden_evolution(hidden_size=8, n_points=50)
plot_hidden_evolution(evolution)
""")

# ------------------------------------------------------------------------------------------
md(r"""
## 3. Backpropagation through time

Training unrolls the network over the sequence and runs backpropagation through every
step. The gradient reaching step $t$ from a loss at the last step $T$ is a product of $T-t$
Jacobians $\partial h_{k}/\partial h_{k-1}$. If their size stays below 1 the product
**vanishes** exponentially with distance; above 1 it **explodes**. The original notebook
illustrated this with assumed factors $0.9^k$; lapnet **measures** it: for a model on the
adding problem, $\lVert \partial L_T / \partial h_t \rVert$ at every $t$, by torch autograd
and by the NumPy engine (the two must agree), at initialisation and after training.
""")

code(r"""
from lapnet.experiments.gradflow import GradflowConfig, run_gradflow

grad = run_gradflow(GradflowConfig(hidden=16, length=SIZE["grad_length"], steps=SIZE["grad_steps"],
                                   clip_steps=SIZE["clip_steps"], n_measure=16))
for arch, e in grad.metrics["archs"].items():
    print(f"{arch.upper():5s} ||dL/dh_1|| / ||dL/dh_T|| at init {e['init']['ratio_first_to_last']:.1e}, "
          f"per-step factor {e['init']['decay_per_step']:.3f}")
print("autograd vs NumPy engine, max relative difference:", grad.metrics.get("engines_max_rel_diff"))
grad.figures["gradflow"]
""")

md(r"""
### Exploding gradients and clipping

When gradients explode, one step can throw the weights far away. **Clipping** bounds the
step: by the global norm of all gradients (direction kept) or element by element (direction
changed). Below, an RNN whose $W_{hh}$ is scaled to make gradients explode, trained three
ways.
""")

code(r"""
grad.figures.get("clipping")
""")

# ------------------------------------------------------------------------------------------
md(r"""
## 4. LSTM: long short-term memory

The LSTM adds a **cell state** $c_t$, a conveyor belt that runs through time with only
element-wise changes, and three gates that decide what to forget, what to write and what to
show:

$$
\begin{aligned}
i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) &\text{input gate}\\
f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) &\text{forget gate}\\
g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) &\text{candidate}\\
o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) &\text{output gate}\\
c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)
\end{aligned}
$$

On the pit wall: the forget gate drops stale tyre data after a stop, the input gate stores
the new compound, the output gate decides what the strategist reports this lap. Because
$\partial c_t / \partial c_{t-1} = f_t$, a forget gate near 1 lets the gradient travel far.
""")

code(r"""
diagrams.lstm_cell()
""")

md(r"""
### The LSTM cell, one step at a time

The equations above are, line for line, the loop body of `lapnet.scratch.reference.lstm_forward`:
the engine's cells written to be read (the fast kernel in `scratch/lstm.py` arranges the same
arithmetic for speed, and a test holds the two to 1e-12). Its source, and a check that the
readable cell, the fast engine and `torch.nn.LSTM` give the same hidden states:
""")

code(r"""
import inspect

from lapnet.scratch import reference

print(inspect.getsource(reference.lstm_forward))
lstm = scratch.LSTM(input_size=3, hidden_size=4, dtype="float64", seed=0)
w = [lstm.state_dict()[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
x = np.random.default_rng(0).standard_normal((2, 5, 3))              # (B=2, T=5, D=3)
zeros = np.zeros((2, 4))
hs, (h, c), _ = reference.lstm_forward(x, zeros, zeros, *w)          # hs (2, 5, 4)
out, _, _ = lstm.forward(x)
torch_lstm = torch.nn.LSTM(3, 4, batch_first=True, dtype=torch.float64)
torch_lstm.load_state_dict({k: torch.from_numpy(v) for k, v in lstm.state_dict().items()})
print("max |readable - engine| =", float(np.abs(hs - out).max()))
print("max |readable - torch|  =", float(np.abs(hs - torch_lstm(torch.from_numpy(x))[0].detach().numpy()).max()))
""")

md(r"""
The measured gradient flow above compares RNN, LSTM and GRU on the same task. The spectrum
of the recurrent weights $W_{hh}$ (eigenvalues inside the unit circle shrink the signal,
outside grow it) before and after training is part of the same experiment:
""")

code(r"""
grad.figures["spectrum"]
""")

# ------------------------------------------------------------------------------------------
md(r"""
## 5. GRU: gated recurrent unit

The GRU merges the cell and hidden state and uses two gates, reset $r$ and update $z$
(PyTorch's form, which lapnet follows exactly):

$$
\begin{aligned}
r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr})\\
z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})\\
n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn}))\\
h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
\end{aligned}
$$

The original notebook writes the GRU as $h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde{h}_t$
with $\tilde{h}_t = \tanh(W_h [r_t \odot h_{t-1}, x_t] + b_h)$: its $z$ is PyTorch's $1 - z$,
and its reset gate multiplies $h_{t-1}$ before the product (the textbook form, Cho et al.)
where PyTorch's multiplies $W_{hn} h_{t-1} + b_{hn}$. Exercise 1 below maps one onto the other.

Fewer gates means fewer parameters for the same hidden size. The counts below come from
real torch modules, next to the notebook's formula (which counts one bias per gate where
PyTorch keeps two).
""")

code(r"""
from lapnet.diagnostics.param_count import format_param_table, param_table

print(format_param_table(param_table(input_size=100, hidden_size=256)))
diagrams.architecture_comparison()
""")

# ------------------------------------------------------------------------------------------
md(r"""
## 6. RNNs in PyTorch

`torch.nn.RNN`, `LSTM` and `GRU` return **two** things: `output`, the top layer's hidden
state at every step, and `h_n` (plus `c_n` for the LSTM), the final state of every layer and
direction. lapnet's shape explorer runs a real module and prints every tensor's shape with
what each axis means, then checks the facts people get wrong (which slice of a
bidirectional `output` equals which row of `h_n`, where a packed sequence's final state
sits). Here a 2-layer bidirectional LSTM with a packed batch of lengths 5, 3 and 2:
""")

code(r"""
from lapnet.shapes import ShapeConfig, explore_shapes, format_shapes

report = explore_shapes(ShapeConfig(arch="lstm", input_size=10, hidden_size=20, num_layers=2,
                                    bidirectional=True, batch=3, seq_len=5, lengths=(5, 3, 2)))
print(format_shapes(report))
""")

md(r"""
### How hidden size and architecture change what a model can learn

The notebook's experiment: predict the next value of $\sin(t)$ from a window of 20 values,
for several hidden sizes (LSTM) and for the three architectures, trained full-batch with
Adam. `run_sine` trains every model through lapnet's training loop and also measures a
forecast that feeds each prediction back in, beyond the training wave.
""")

code(r"""
from lapnet.experiments.sine import SineConfig, run_sine

sine = run_sine(SineConfig(hidden_sizes=SIZE["sine_hidden"], archs=("rnn", "lstm", "gru"),
                           arch_hidden=SIZE["sine_hidden"][-1], epochs=SIZE["sine_epochs"]))
for row in sine.metrics["table"]:
    print(row)
sine.figures["loss_curves"]
""")

code(r"""
sine.figures["forecast"]
""")

# ------------------------------------------------------------------------------------------
md(r"""
## 7. Text generation: a character-level language model

A character model reads text one character at a time and predicts the next. lapnet's
`train_text` trains an embedding, an LSTM and a linear head on the bundled Hamlet passage
with truncated backpropagation through time (each chunk starts from the previous chunk's
state, detached), gradient clipping and Adam, through the same training loop as every other
model, and writes a run directory (`config.json`, `vocab.json`, `model.safetensors`,
`log.jsonl`, `metrics.json`).

The passage is only about 800 characters, so the model memorises it: the training loss
goes to nearly zero while the loss on the held-out last lines stays high. The checkpoint
kept is the one with the best held-out loss.
""")

code(r"""
from lapnet.models.charlm import CharLMConfig
from lapnet.text_runs import TextDataConfig, sample_text, text_train_config, train_text

TEXT_RUN = OUT / "hamlet"
metrics = train_text(None, TEXT_RUN, force=True, samples=False,
                     model=CharLMConfig(vocab_size=1, arch="lstm", embed=32, hidden=SIZE["text_hidden"]),
                     data=TextDataConfig(seq_len=64, batch=4),
                     train=text_train_config(max_steps=SIZE["text_steps"], eval_every=max(1, SIZE["text_steps"] // 6),
                                             lr=5e-3, progress=False))
print({k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()})
print(sample_text(TEXT_RUN, prime="To be", length=200, temperature=0.5, seed=0)[0])
""")

md(r"""
### Temperature

Sampling divides the logits by a temperature $T$ before the softmax,
$P(c) = e^{z_c/T} / \sum_j e^{z_j/T}$: low $T$ sharpens the distribution (safe, repetitive),
high $T$ flattens it (adventurous, error-prone). The left figure uses the original
notebook's eight logits; the right one the trained model's real next-character distribution
after the prime; then samples at several temperatures from the same seed.
""")

code(r"""
from lapnet.experiments.temperature import TemperatureConfig, run_temperature

temp = run_temperature(TEXT_RUN, TemperatureConfig(prime="To be", length=100))
for t, text in temp.metrics["samples"].items():
    print(f"T={t}: {' '.join(text.split())!r}")
temp.figures["temperature"]
""")

code(r"""
temp.figures["temperature_model"]
""")

# ------------------------------------------------------------------------------------------
md(r"""
## Exercises, solved with lapnet

### Exercise 1: a GRU from scratch

`lapnet.scratch.GRU` is a GRU from scratch in NumPy, with a backward pass, in two forms. The
exercise's `GRUFromScratch` is the *textbook* form (the reset gate multiplies $h_{t-1}$
before the product) with one matrix on $[h_{t-1}, x_t]$, one bias per gate, and
$h_t = (1 - z_t) h_{t-1} + z_t \tilde{h}_t$, the update gate the other way round from
section 5. `scratch.gru_weights_from_notebook` maps its weights onto
`scratch.GRU(gru_form="textbook")` exactly: each matrix split into its $h$ and $x$ columns,
the bias into `bias_ih`, the $z$ block negated since $\sigma(-a) = 1 - \sigma(a)$. Here
the exercise's own weights and test sequence (seed 42, the same draws in the same order):
the hidden states a correct `GRUFromScratch.forward(test_seq)` returns after the initial one.
""")

code(r"""
np.random.seed(42)                                      # the exercise's cell, draw for draw
scale = np.sqrt(2.0 / (3 + 4))
W_z, b_z = np.random.randn(4, 7) * scale, np.zeros(4)   # (H, H + D): columns [h, x]
W_r, b_r = np.random.randn(4, 7) * scale, np.zeros(4)
W_h, b_h = np.random.randn(4, 7) * scale, np.zeros(4)
test_seq = [np.random.randn(3) for _ in range(5)]
gru_tb = scratch.GRU(3, 4, gru_form="textbook", dtype="float64")
gru_tb.load_state_dict(scratch.gru_weights_from_notebook(W_z, b_z, W_r, b_r, W_h, b_h))
out_tb, _, _ = gru_tb.forward(np.stack(test_seq)[None])  # (1, 5, 4)
print("GRUFromScratch's hidden_states[1:], h_1 .. h_5:\n", out_tb[0].round(4))
""")

md(r"""
PyTorch's form (the default `gru_form`) is what `torch.nn.GRU` computes: load a
`torch.nn.GRU`'s weights into it and every hidden state agrees; then check its gradients
against finite differences (no torch involved).
""")

code(r"""
torch.manual_seed(42)
gru_pt = torch.nn.GRU(input_size=3, hidden_size=4, batch_first=True, dtype=torch.float64)
gru_np = scratch.from_torch(gru_pt)                     # the same weights, PyTorch's names and layout
seq = np.random.default_rng(42).standard_normal((1, 5, 3))
out_np, h_np, _ = gru_np.forward(seq)
out_pt, h_pt = gru_pt(torch.from_numpy(seq))
print("hidden states h_1 .. h_5:\n", out_np[0].round(3))
print("max |NumPy - torch| =", float(np.abs(out_np - out_pt.detach().numpy()).max()))
check = scratch.gradcheck(gru_np, seq)
print(f"gradient check: worst relative error {check.max_rel_error:.1e} over {len(check.rows)} tensors")
""")

md(r"""
### Exercise 2: is the pace improving or degrading?

Classify noisy sequences as trending up (degrading lap times) or down (improving): an LSTM
with a linear head on its final state, binary cross-entropy, Adam; the original notebook
expects a test accuracy above 0.90.
""")

code(r"""
from lapnet.experiments.trend import TrendConfig, run_trend

trend = run_trend(TrendConfig(epochs=SIZE["trend_epochs"], n_train=SIZE["trend_train"]))
print(f"test accuracy {trend.metrics['test_accuracy']:.2f} (target {trend.metrics['target']})")
trend.figures["trend_training"]
""")

code(r"""
trend.figures["trend_examples"]
""")

md(r"""
### Exercise 3: inside the LSTM's gates

Feed "To be or not to be" through the trained character model and record, at every
character, the gates $i, f, g, o$ and the cell state $c$ (lapnet recomputes them from the
layer's weights and checks that they reproduce torch's own hidden states).
""")

code(r"""
from lapnet.experiments.gates import GatesConfig, run_gates

gates = run_gates(TEXT_RUN, GatesConfig(text="To be or not to be"))
gates.figures["gates"]
""")

code(r"""
gates.figures["hidden"]  # the hidden state at every character, as the original exercise drew it
""")

# ------------------------------------------------------------------------------------------
md(r"""
## Summary

- **Sequences need memory.** An RNN applies one cell at every step and carries a hidden
  state; the same weights serve every step and every length.
- **Vanilla RNN:** $h_t = \tanh(W_{ih}x_t + b_{ih} + W_{hh}h_{t-1} + b_{hh})$. Simple, and
  its gradient fades with distance, as measured in section 3.
- **BPTT** multiplies one Jacobian per step: gradients vanish or explode exponentially;
  clipping tames the explosion, gating tames the vanishing.
- **LSTM:** a cell state changed only element-wise, with forget, input and output gates;
  the forget gate is the gradient's highway.
- **GRU:** two gates, no separate cell, fewer parameters, often as good.
- **PyTorch:** `output` holds every step of the top layer, `h_n` the last step of every
  layer and direction; bidirectional and packed sequences have their own rules.
- **Text generation:** a character model trained with truncated BPTT; temperature trades
  safety for variety.

Where to go next with lapnet: `lapnet demo` runs the whole tour (and a race forecaster on
simulated and real laps) and writes an HTML report; `lapnet text train your.txt` trains on
your own text; `lapnet race simulate`, `race train` and `race eval` put recurrent models on
the pit wall.
""")


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in CELLS]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: rebuilding gives the same file
    return nb


def main(argv: list[str]) -> int:
    text = nbformat.writes(build()) + "\n"
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run python notebooks/build_notebook.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET} ({len(CELLS)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
