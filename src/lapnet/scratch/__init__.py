"""lapnet.scratch: RNN, LSTM and GRU in NumPy, forward and backward through time.

Equal to torch.nn.RNN / LSTM / GRU (parameter names, shapes, and results in float64: the
tests assert 1e-10, and `lapnet demo` measures at most 1.8e-14 on the AVX-512 machine of
2026-11-27) and never imports torch.
Equal to rounding, not bit for bit: torch adds the two biases and its BLAS blocks the sums
in another order than NumPy's. Batch-first shapes: x (B, T, D) -> out (B, T, dirs*H);
state h (L*dirs, B, H), or (h, c) for the LSTM.

    from lapnet import scratch
    lstm = scratch.LSTM(input_size=32, hidden_size=128, num_layers=2, dtype="float64")
    out, state, cache = lstm.forward(x)                   # x (B, T, 32)
    dx, dstate0, grads = lstm.backward(dout, None, cache)  # grads keyed like state_dict()

To learn how the cells work, read `lapnet.scratch.reference` first: the same three cells
written as the equations read, one step at a time (tests check it against torch and against
the fast kernels in rnn.py, lstm.py and gru.py, which arrange the same arithmetic for speed).
Its docstring maps the notebook's notation (W_f [h, x] + b_f, C_t, h~_t, column vectors) to
the engine's (torch's w_ih/w_hh, two biases, g, c, n, row vectors), and
`gru_weights_from_notebook` loads Exercise 1's GRUFromScratch weights into
`GRU(gru_form="textbook")` exactly.
"""

from lapnet.scratch import reference
from lapnet.scratch.activations import log_softmax, sigmoid, softmax
from lapnet.scratch.blas import set_engine_threads
from lapnet.scratch.gradcheck import GradcheckResult, gradcheck
from lapnet.scratch.layers import Embedding, Linear
from lapnet.scratch.losses import mse_loss, softmax_cross_entropy
from lapnet.scratch.optim import SGD, Adagrad, Adam, clip_grad_norm, clip_grad_value
from lapnet.scratch.recurrent import GRU, LSTM, RNN, RecurrentCache, from_torch
from lapnet.scratch.reference import gru_weights_from_notebook
from lapnet.scratch.tbptt import chunks, detach, truncated_bptt

__all__ = [
    "RNN", "LSTM", "GRU", "RecurrentCache", "from_torch",
    "Embedding", "Linear",
    "sigmoid", "softmax", "log_softmax", "softmax_cross_entropy", "mse_loss",
    "SGD", "Adagrad", "Adam", "clip_grad_norm", "clip_grad_value",
    "gradcheck", "GradcheckResult",
    "truncated_bptt", "chunks", "detach",
    "set_engine_threads",
    "reference", "gru_weights_from_notebook",
]
