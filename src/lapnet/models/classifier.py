"""A sequence classifier (the notebook's Exercise 2): a recurrent layer reads the whole
sequence, a linear head maps its final state to class logits.

Variable lengths go through packed sequences, so each sequence's final state is taken at
its own last step, never at the padding. Bidirectional: the forward direction's state at
the last step and the backward direction's state at the first step are concatenated.
"""

from __future__ import annotations

import torch
from torch import nn

from lapnet.models.recurrent import check_batch, check_size, make_recurrent, run_recurrent


class Classifier(nn.Module):
    """Recurrent encoder + linear head on the final state.

    Args:
        arch: "rnn", "lstm" or "gru".
        input_size: D.
        hidden_size: H.
        num_classes: 1 gives one logit for BCEWithLogitsLoss; more gives softmax logits.
        num_layers: stacked layers (the head reads the top layer).
        bidirectional: read the sequence both ways.
    """

    def __init__(
        self,
        arch: str = "lstm",
        input_size: int = 1,
        hidden_size: int = 32,
        num_classes: int = 1,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.arch = arch
        self.bidirectional = bidirectional
        self.rnn = make_recurrent(arch, input_size, hidden_size, num_layers, bidirectional=bidirectional)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), check_size("num_classes", num_classes))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), lengths (B,) or None -> final features (B, dirs*H)."""
        check_batch(x, "x")  # torch takes an unbatched (T, D), but h_n[-1] would then be (H,), not one row per sequence
        _, state = run_recurrent(self.rnn, x, lengths)
        h_n = state[0] if isinstance(state, tuple) else state  # (L*dirs, B, H)
        if self.bidirectional:  # top layer: forward at its last step, backward at step 0
            return torch.cat([h_n[-2], h_n[-1]], dim=-1)  # (B, 2H)
        return h_n[-1]  # (B, H)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> logits (B, num_classes)."""
        return self.head(self.encode(x, lengths))
