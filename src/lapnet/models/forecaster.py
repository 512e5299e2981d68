"""The notebook's forecaster: a recurrent layer reads a window, a linear head predicts the next value.

    h_1..h_T = Recurrent(x_1..x_T)      x (B, T, D) -> out (B, T, H)
    y_hat    = W h_T + b                (B, H) -> (B, D_out)
"""

from __future__ import annotations

import torch
from torch import nn

from lapnet.errors import LapnetError
from lapnet.models.recurrent import check_batch, check_size, make_recurrent, run_recurrent


class Forecaster(nn.Module):
    """Recurrent layer + linear head on the last hidden state (section 6 of the notebook).

    Args:
        arch: "rnn", "lstm" or "gru".
        input_size: D, features per step.
        hidden_size: H.
        output_size: values predicted from the last step.
        num_layers: stacked recurrent layers.
    """

    def __init__(self, arch: str = "lstm", input_size: int = 1, hidden_size: int = 32, output_size: int = 1, num_layers: int = 1):
        super().__init__()
        self.arch = arch
        self.rnn = make_recurrent(arch, input_size, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, check_size("output_size", output_size))

    def forward(self, x: torch.Tensor, state=None):
        """x (B, T, D) -> (prediction (B, output_size), final state)."""
        check_batch(x, "x")  # torch takes an unbatched (T, D), but out[:, -1] on (T, H) would be a hidden unit
        out, state = run_recurrent(self.rnn, x, state=state)  # (B, T, H)
        return self.head(out[:, -1]), state  # (B, output_size)

    @torch.no_grad()
    def rollout(self, window: torch.Tensor, steps: int) -> torch.Tensor:
        """Forecast `steps` values ahead by feeding each prediction back in as an input.

        Each step reads the latest `T` values (observed, then predicted) from a zero state,
        exactly as the model was trained on windows of T, so errors come from the model's
        own predictions only, not from running the recurrence longer than it ever saw.

        Args:
            window: (B, T, D) the last observed values (D must equal output_size).
            steps: how many future values to predict.

        Returns:
            (B, steps, D) predictions.
        """
        D, K = self.rnn.input_size, self.head.out_features
        check_batch(window, "rollout window")
        if K != D:
            raise LapnetError(f"rollout feeds each prediction back in as the next input, so output_size ({K}) "
                              f"must equal input_size ({D})")
        if window.shape[2] != D or window.shape[1] < 1:  # check_batch has made it (B, T, D)
            raise LapnetError(f"rollout window must be (B, T, D) with D = input_size = {D}, got shape {tuple(window.shape)}")
        check_size("steps", steps)
        T = window.shape[1]
        seq = window
        preds = []
        for _ in range(steps):
            pred, _ = self(seq[:, -T:])  # (B, D)
            preds.append(pred)
            seq = torch.cat([seq, pred[:, None, :]], dim=1)  # (B, T + k, D)
        return torch.stack(preds, dim=1)  # (B, steps, D)
