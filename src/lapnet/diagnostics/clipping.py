"""What gradient clipping does to a real gradient, measured at every training step.

Two rules (notebook section 3, "Gradient Clipping"):

- global norm: if ||g|| > c then g <- g * c / ||g||. Every component shrinks by the same
  factor, so the step keeps its direction (cosine with the raw gradient = 1);
- element-wise (value): g_j <- clip(g_j, -c, c). Large components are cut and small ones
  kept, so the direction changes (cosine < 1 whenever anything is cut).

`GradientRecorder` hooks the parameters of a torch module, so it sees each step's raw
gradient before any clipping the training loop applies afterwards.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def clipped_cosines(g: np.ndarray, max_norm: float | None, clip_value: float | None) -> dict[str, float]:
    """Cosine between the raw flat gradient g and its clipped versions."""
    out = {}
    n = float(np.linalg.norm(g))
    if n == 0:
        return {"norm": 1.0, "value": 1.0}
    if max_norm is not None:
        gn = g * min(1.0, max_norm / n)
        out["norm"] = float(g @ gn / (n * np.linalg.norm(gn)))
    if clip_value is not None:
        gv = np.clip(g, -clip_value, clip_value)
        nv = np.linalg.norm(gv)
        out["value"] = float(g @ gv / (n * nv)) if nv > 0 else 0.0
    return out


class GradientRecorder:
    """Record the raw global gradient norm of every backward pass through `model`.

    Each parameter's hook fires during backward with its raw gradient; a step is complete
    once every parameter has reported. A gradient whose norm is not finite (a diverging run)
    is recorded as norm inf (NaN if an entry is NaN) with NaN cosines.
    """

    def __init__(self, model: nn.Module, *, max_norm: float | None = None, clip_value: float | None = None):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.max_norm, self.clip_value = max_norm, clip_value
        self.norms: list[float] = []
        self.cos_norm: list[float] = []
        self.cos_value: list[float] = []
        self._pending: dict[int, np.ndarray] = {}
        self._handles = [p.register_hook(self._hook(i)) for i, p in enumerate(self.params)]

    def _hook(self, i: int):
        def hook(grad: torch.Tensor):
            self._pending[i] = grad.detach().double().reshape(-1).numpy().copy()
            if len(self._pending) == len(self.params):
                g = np.concatenate([self._pending[k] for k in range(len(self.params))])
                self._pending.clear()
                with np.errstate(over="ignore", invalid="ignore"):
                    n = float(np.linalg.norm(g))
                if not np.isfinite(n):  # an exploded step (SGD without clipping): no direction to compare
                    self.norms.append(float("nan") if np.any(np.isnan(g)) else float("inf"))
                    self.cos_norm.append(float("nan"))
                    self.cos_value.append(float("nan"))
                    return None
                self.norms.append(n)
                cos = clipped_cosines(g, self.max_norm or 1.0, self.clip_value or 0.1)
                self.cos_norm.append(cos["norm"])
                self.cos_value.append(cos["value"])
            return None

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
