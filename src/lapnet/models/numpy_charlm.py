"""CharLM on the NumPy engine (`lapnet.scratch`): the same model, the same weight names.

    x (B, T) ids -> scratch.Embedding -> (B, T, E) -> scratch.LSTM/GRU/RNN -> (B, T, H)
                 -> scratch.Linear -> logits (B, T, V)

The parameters are keyed exactly as torch CharLM's state_dict (`embed.weight`,
`rnn.weight_ih_l0`, ..., `head.bias`), so one checkpoint serves both engines.

Also here: `NumpyCharLMLearner`, the `lapnet.train.fit` learner for this model (Adam, clipping,
truncated BPTT), and `NumpyStepper`, the one-character-at-a-time path for sampling.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lapnet import scratch
from lapnet.scratch.blas import engine_threads
from lapnet.scratch.recurrent import GATE_BLOCKS, all_finite
from lapnet.errors import LapnetError
from lapnet.train import numpy_learner_state, split_numpy_learner_state
from lapnet.models.charlm import CharLMConfig, param_names

_LAYERS = {"lstm": scratch.LSTM, "gru": scratch.GRU, "rnn": scratch.RNN}


class NumpyCharLM:
    """Embedding -> stacked recurrent layers -> linear head, in NumPy.

    Args:
        cfg: the model shape (same dataclass as the torch CharLM).
        arrays: weights keyed by torch CharLM's state_dict names.
        dtype: float32 (training, checkpoints) or float64 (parity tests).
    """

    def __init__(self, cfg: CharLMConfig, arrays: dict[str, np.ndarray], dtype: Any = np.float32):
        cfg.validate()
        self.cfg = cfg
        self.embed = scratch.Embedding(cfg.vocab_size, cfg.embed, dtype=dtype)
        self.rnn = _LAYERS[cfg.arch](cfg.embed, cfg.hidden, cfg.layers, dropout=cfg.dropout, dtype=dtype)
        self.head = scratch.Linear(cfg.hidden, cfg.vocab_size, dtype=dtype)
        self.load(arrays)

    def _parts(self):
        return (("embed.", self.embed), ("rnn.", self.rnn), ("head.", self.head))

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Load torch-named weights (every name and shape must match)."""
        want = param_names(self.cfg)
        if sorted(arrays) != sorted(want):
            raise LapnetError(f"weights do not match the model: expected {want[:3]}..., got {sorted(arrays)[:3]}...")
        for prefix, part in self._parts():
            part.load_state_dict({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})

    def parameters(self) -> dict[str, np.ndarray]:
        """The live arrays under torch's names (the optimizer updates them in place)."""
        return {prefix + k: v for prefix, part in self._parts() for k, v in part.parameters().items()}

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of the weights, in state_dict order, for a checkpoint."""
        live = self.parameters()
        return {k: live[k].copy() for k in param_names(self.cfg)}

    def forward(self, x: np.ndarray, state=None, *, train: bool = False, rng: np.random.Generator | None = None):
        """Logits for the next character at every position.

        Args:
            x: (B, T) int ids.
            state: h (L, B, H), or (h, c) for an LSTM; None for zeros.
            train: dropout between layers (needs `rng`).

        Returns:
            logits (B, T, V), the final state, and the cache for `backward`. When the
            embedding or the recurrent output is not finite (diverging weights) the logits are
            all NaN and the cache is None: the learner then reports divergence, and neither the
            recurrent layer nor the head sees NaN (they refuse it as bad input).
        """
        B, T = np.shape(x)
        e, c_emb = self.embed.forward(x)  # (B, T, E)
        if not all_finite(e):  # an embedding overflowed by training: the recurrent layer would refuse it as input
            return np.full((B, T, self.cfg.vocab_size), np.nan, e.dtype), state, None  # (B, T, V)
        out, state, c_rnn = self.rnn.forward(e, state, train=train, rng=rng)  # (B, T, H)
        if not all_finite(out):  # overflowed weights: NaN logits, so the learner reports divergence
            return np.full((B, T, self.cfg.vocab_size), np.nan, out.dtype), state, None  # (B, T, V)
        # the head as one 2-D product: NumPy's batched 3-D matmul misses the fast BLAS path
        logits, c_head = self.head.forward(out.reshape(B * T, -1))  # (B*T, V)
        return logits.reshape(B, T, -1), state, (c_emb, c_rnn, c_head)  # (B, T, V)

    def backward(self, dlogits: np.ndarray, cache) -> dict[str, np.ndarray]:
        """Gradients of every weight (torch's names) from dL/dlogits (B, T, V).

        The gradient on the final state is zero: under truncated BPTT the state handed to the
        next chunk is a constant there.
        """
        c_emb, c_rnn, c_head = cache
        B, T, V = dlogits.shape
        dout, g_head = self.head.backward(dlogits.reshape(B * T, V), c_head)  # (B*T, H)
        dout = dout.reshape(B, T, -1)  # (B, T, H)
        de, _, g_rnn = self.rnn.backward(dout, None, c_rnn)  # (B, T, E)
        if np.isfinite(de).all():
            g_emb = self.embed.backward(de, c_emb)
        else:  # the gradient overflowed in the recurrence: a NaN gradient, which the learner reports as divergence
            g_emb = {"weight": np.full_like(self.embed.state_dict()["weight"], np.nan)}
        grads = {"embed.weight": g_emb["weight"], "head.weight": g_head["weight"], "head.bias": g_head["bias"]}
        grads.update({"rnn." + k: v for k, v in g_rnn.items()})
        return grads


class NumpyCharLMLearner:
    """The `lapnet.train.fit` learner for NumpyCharLM: the same steps as TorchLearner
    (cross-entropy, backward, element-wise then global-norm clipping, Adam).

    Args:
        model: the NumpyCharLM to train (updated in place).
        evaluate_fn: () -> {"val_loss": ..., ...}.
        cfg: lapnet.train.TrainConfig (lr, clipping, weight decay, seed).
    """

    def __init__(self, model: NumpyCharLM, evaluate_fn: Callable[[], dict], cfg):
        self.model = model
        self.evaluate_fn = evaluate_fn
        self.cfg = cfg
        if cfg.weight_decay:  # torch's AdamW decays the weights directly; scratch.Adam adds it to the gradient
            raise LapnetError("--engine numpy does not support weight decay (AdamW); use --engine torch")
        self.opt = scratch.Adam(model.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng([cfg.seed, 1])  # dropout masks

    def train_step(self, batch, carry, lr: float):
        x, y = (np.asarray(b) for b in batch)  # (B, T) each
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported by fit, once
            logits, state, cache = self.model.forward(x, carry, train=True, rng=self.rng)  # (B, T, V)
            if not np.isfinite(logits).all():
                return float("nan"), carry, y.size  # fit() stops before any update
            loss, dlogits = scratch.softmax_cross_entropy(logits, y)
            if not np.isfinite(loss):
                return loss, carry, y.size
            grads = self.model.backward(dlogits, cache)
            if not all(np.isfinite(g).all() for g in grads.values()):  # overflowed: fit() stops before any update
                return float("nan"), carry, y.size
            if self.cfg.clip_value is not None:
                scratch.clip_grad_value(grads, self.cfg.clip_value)
            if self.cfg.clip is not None:
                scratch.clip_grad_norm(grads, self.cfg.clip)
            self.opt.step(grads, lr)
        # Truncated BPTT: the next chunk continues these rows from this state; NumPy keeps no
        # graph, so "detaching" is simply not sending a gradient back across the boundary.
        return loss, scratch.detach(state), y.size

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_fn()

    def weights(self) -> dict[str, np.ndarray]:
        return self.model.weights()

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return numpy_learner_state(self.weights(), self.opt, rng=self.rng.bit_generator.state)

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        weights, opt = split_numpy_learner_state(arrays, meta)
        self.model.load(weights)  # copied into the live arrays, which self.opt holds
        self.opt.load_state_dict(opt)
        self.rng.bit_generator.state = meta["rng"]


class NumpyStepper:
    """One character at a time for `lapnet.sampling`, on NumPy.

    The scratch layers are built for whole sequences (they re-lay the weights on every call);
    a sampling step is one time step, so the cell is written out here once more, on weights
    arranged once: layer 0's input projection is folded into a (V, G*H) table (an embedding
    followed by a linear map is a lookup), and each step is one (B, H) x (H, G*H) product per
    layer plus a few element-wise calls. `prime` runs the full forward pass once.

    Args:
        model: a NumpyCharLM; or None with `cfg`, `weights` and `prime_fn` (how the torch
            engine reuses this step on views of its own tensors).
    """

    def __init__(self, model: NumpyCharLM | None = None, *, cfg: CharLMConfig | None = None,
                 weights: dict[str, np.ndarray] | None = None, prime_fn: Callable | None = None):
        if model is not None:
            cfg, weights = model.cfg, model.parameters()
            prime_fn = self._numpy_prime
        self.model, self.cfg, self.prime_fn = model, cfg, prime_fn
        self.arch, self.H = cfg.arch, cfg.hidden
        w = weights
        H = cfg.hidden
        G = GATE_BLOCKS[cfg.arch]
        order, scale = np.arange(G * H), np.ones(G * H, np.float32)
        if cfg.arch == "lstm":
            # gates re-ordered o, i, f, g (torch's are i, f, g, o) so the three sigmoids are one
            # block, their rows halved so a single tanh activates all four (sigmoid(x) =
            # (1 + tanh(x / 2)) / 2), and (i, f) sit beside (g, c) in `stream`'s buffer
            order = np.arange(4 * H).reshape(4, H)[[3, 0, 1, 2]].ravel()
            scale[: 3 * H] = 0.5
        self.layers = []
        for k in range(cfg.layers):
            w_ih, w_hh = w[f"rnn.weight_ih_l{k}"][order], w[f"rnn.weight_hh_l{k}"][order]
            b_ih, b_hh = w[f"rnn.bias_ih_l{k}"][order], w[f"rnn.bias_hh_l{k}"][order]
            if cfg.arch != "gru":  # both biases simply add (the GRU's b_hn sits inside r * (...))
                b_ih, b_hh = b_ih + b_hh, np.zeros_like(b_hh)
            if k == 0:  # an embedding followed by a linear map is a lookup: (V, G*H), bias folded in
                with engine_threads():  # one BLAS thread: a second one would wake and spin for ~0.1 s
                    w_ih_t = ((w["embed.weight"] @ w_ih.T + b_ih) * scale).astype(np.float32)
            else:
                w_ih_t = np.ascontiguousarray((w_ih * scale[:, None]).T, dtype=np.float32)  # (H, G*H)
            self.layers.append((w_ih_t, np.ascontiguousarray((w_hh * scale[:, None]).T, dtype=np.float32),
                                (b_ih * scale).astype(np.float32), (b_hh * scale).astype(np.float32)))
        self.head_wt = np.ascontiguousarray(w["head.weight"].T, dtype=np.float32)  # (H, V)
        self.head_b = np.asarray(w["head.bias"], np.float32)
        # step_one's LSTM buffers, made once: per layer a (4H,) gate row (o, i, f, g) and its
        # views (the three sigmoid gates, i, f, o, g), so a character allocates nothing for them
        self._gates = [np.empty(4 * H, np.float32) for _ in self.layers] if cfg.arch == "lstm" else []
        self._views = [(a[: 3 * H], a[H: 2 * H], a[2 * H: 3 * H], a[:H], a[3 * H:]) for a in self._gates]

    def prime(self, ids: np.ndarray):
        """ids (B, P) -> (logits (B, V) after the last prime character, per-layer state)."""
        return self.prime_fn(np.asarray(ids))

    def _numpy_prime(self, ids: np.ndarray):
        logits, state, _ = self.model.forward(ids)  # (B, P, V)
        return logits[:, -1], split_layers(state, self.arch == "lstm")

    def step(self, ids, state):
        """ids (B,) -> (logits (B, V), new state): one character on, for every stream.

        Also takes one stream without the batch axis: an int id and (H,) states give (V,)
        logits (see `step_one`); np.dot on 1-D arrays is a matrix-vector product, cheaper
        per call than a (1, H) x (H, G*H) matrix product.
        """
        H = self.H
        new = []
        x = None
        for k, ((w_ih_t, w_hh_t, b_ih, b_hh), s) in enumerate(zip(self.layers, state)):
            if self.arch == "lstm":
                h, c = s
                a = np.dot(h, w_hh_t)  # (B, 4H), gates o, i, f, g with the sigmoid rows halved
                if k == 0:
                    a += w_ih_t[ids]
                else:
                    a += np.dot(x, w_ih_t)
                    a += b_ih
                np.tanh(a, out=a)
                sig = a[..., : 3 * H]
                sig *= 0.5
                sig += 0.5  # o, i, f now sigmoids
                c = a[..., 2 * H: 3 * H] * c
                c += a[..., H: 2 * H] * a[..., 3 * H:]  # c = f * c + i * g
                h = np.tanh(c)
                h *= a[..., :H]  # h = o * tanh(c)
                new.append((h, c))
            elif self.arch == "gru":
                gi = w_ih_t[ids] if k == 0 else np.dot(x, w_ih_t) + b_ih  # (B, 3H): r, z, n
                gh = np.dot(s, w_hh_t) + b_hh  # (B, 3H)
                rz = 1.0 / (1.0 + np.exp(-(gi[..., :2 * H] + gh[..., :2 * H])))
                n = np.tanh(gi[..., 2 * H:] + rz[..., :H] * gh[..., 2 * H:])
                z = rz[..., H:]
                h = (1.0 - z) * n + z * s
                new.append(h)
            else:
                a = np.dot(s, w_hh_t)  # (B, H)
                a += w_ih_t[ids] if k == 0 else np.dot(x, w_ih_t) + b_ih
                h = np.tanh(a)  # a CharLM's RNN is tanh (CharLMConfig has no nonlinearity)
                new.append(h)
            x = h  # (B, H)
        logits = np.dot(x, self.head_wt)  # (B, V)
        logits += self.head_b
        return logits, new

    def step_one(self, i: int, state):
        """One stream, one character: id i and per-layer (H,) [or (1, H)] states -> (V,)
        logits and (H,) states. The single-stream sampler's step.

        The LSTM, the default model, gets the same cell as `step` written out on 1-D arrays
        with a gate buffer and its four views made once: at ~40 us per character, the
        slicing and allocation a general step does each time is a noticeable share.
        """
        lstm = self.arch == "lstm"
        if state and (state[0][0] if lstm else state[0]).ndim == 2:  # from prime: (1, H)
            state = [tuple(a.reshape(-1) for a in s) if lstm else s.reshape(-1) for s in state]
        if not lstm:
            return self.step(i, state)
        new = []
        x = None
        for k, ((w_ih_t, w_hh_t, b_ih, _), (h, c), a, (sig, gi, gf, go, gg)) in enumerate(
                zip(self.layers, state, self._gates, self._views)):
            _lstm_gates(a, sig, h, x if k else i, w_ih_t, w_hh_t, b_ih)
            c = gf * c
            c += gi * gg  # c = f * c + i * g
            h = np.tanh(c)
            h *= go  # h = o * tanh(c)
            new.append((h, c))
            x = h
        logits = np.dot(x, self.head_wt)  # (V,)
        logits += self.head_b
        return logits, new

    def stream(self, j: int, state, length: int, head_scale: float, next_rows: Callable[[], np.ndarray],
               emit: Callable[[int], None] | None = None) -> list[int] | None:
        """The single-stream sampler's whole loop for the LSTM: feed id j, make `length` ids.

        Each step picks argmax(logits * head_scale + row), with rows taken in order from the
        (n, V) blocks `next_rows()` returns: Gumbel noise for sampling at temperature
        1 / head_scale, zeros for greedy decoding. The head's weights and bias are scaled
        once, the bias folded into each block of rows, so the choice is one product, one add
        and one argmax. Per layer and step, the cell is nine calls on buffers made once:

            buf = [o | i | f | g | c]       (5H,), the gates' pre-activations, then c
            a = W_hh h + table[j]           one product and one add (layer 0)
            tanh(a), then o, i, f *= 0.5, += 0.5   (the sigmoid rows were halved)
            [i*g, f*c] = [i, f] * [g, c]    one multiply of two (2, H) views
            c = i*g + f*c;  h = o * tanh(c)

        The same draws as `Chooser.one` on `step_one`'s logits; only the rounding of the
        scaled product differs, which can change a pick only when two characters tie to
        float32 precision. Returns None for GRU and RNN models (the caller steps instead).
        """
        if self.arch != "lstm":
            return None
        H = self.H
        head = (self.head_wt * head_scale).astype(np.float32)  # (H, V)
        bias = (self.head_b * head_scale).astype(np.float32)  # (V,)
        cells = []
        for k, ((w_ih_t, w_hh_t, b_ih, _), (h0, c0)) in enumerate(zip(self.layers, state)):
            buf = np.empty(5 * H, np.float32)
            buf[4 * H:] = np.asarray(c0, np.float32).reshape(-1)
            h = np.asarray(h0, np.float32).reshape(-1).copy()  # (H,)
            prod = np.empty((2, H), np.float32)
            cells.append((k, w_ih_t, w_hh_t, b_ih, buf[: 4 * H], buf[: 3 * H], buf[H: 3 * H].reshape(2, H),
                          buf[3 * H:].reshape(2, H), prod, prod[0], prod[1], buf[4 * H:], h, buf[:H]))
        logits = np.empty(len(bias), np.float32)
        ids: list[int] = []
        rows, r = next_rows() + bias, 0  # (n, V)
        x = None
        for _ in range(length):
            for k, w_ih_t, w_hh_t, b_ih, a, sig, i_f, g_c, prod, ig, fc, c, h, o in cells:
                _lstm_gates(a, sig, h, x if k else j, w_ih_t, w_hh_t, b_ih)
                np.multiply(i_f, g_c, out=prod)  # [i * g, f * c]
                np.add(ig, fc, out=c)
                np.tanh(c, out=h)
                h *= o
                x = h
            np.dot(x, head, out=logits)  # (V,), already divided by the temperature
            if r == len(rows):
                rows, r = next_rows() + bias, 0
            logits += rows[r]
            r += 1
            j = int(logits.argmax())
            ids.append(j)
            if emit is not None:
                emit(j)
        return ids


def _lstm_gates(a: np.ndarray, sig: np.ndarray, h: np.ndarray, x, w_ih_t, w_hh_t, b_ih) -> None:
    """One stream's LSTM gates in place: a (4H,) = o | i | f | g activated, sig = a[:3H].

    x is layer 0's input id (an int: a row of its (V, 4H) table, bias folded in) or the
    layer below's (H,) output. The sigmoid rows of the weights are halved, so one tanh
    activates all four gates: sigmoid(z) = (1 + tanh(z / 2)) / 2.
    """
    np.dot(h, w_hh_t, out=a)  # (4H,)
    if isinstance(x, np.ndarray):
        a += np.dot(x, w_ih_t)
        a += b_ih
    else:
        a += w_ih_t[x]
    np.tanh(a, out=a)
    sig *= 0.5
    sig += 0.5  # o, i, f now sigmoids


def split_layers(state, lstm: bool) -> list:
    """Stacked state (L, B, H) [or the (h, c) pair] -> a list of per-layer (B, H) [or pairs]."""
    if lstm:
        return [(np.ascontiguousarray(state[0][k]), np.ascontiguousarray(state[1][k])) for k in range(len(state[0]))]
    return [np.ascontiguousarray(state[k]) for k in range(len(state))]
