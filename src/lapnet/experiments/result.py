"""What an experiment hands back: its numbers and its figures, and how to write them."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lapnet.checkpoint import atomic_write_bytes, check_replaceable, write_json


@dataclass
class ExperimentResult:
    """Numbers and figures of one experiment.

    Attributes:
        name: the experiment ("sine", "adding", ...).
        metrics: JSON-able results; `save` writes them to metrics.json.
        figures: {file stem: matplotlib Figure}; `save` writes <stem>.png for each.
        arrays: optional {name: ndarray} for other viewers (not written by `save`).
    """

    name: str
    metrics: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)

    def save(self, out: str | Path, *, dpi: int = 110) -> list[Path]:
        """Write metrics.json and the PNGs into `out`; returns the written paths."""
        out = Path(out)
        check_replaceable([*(out / f"{stem}.png" for stem in self.figures), out / "metrics.json"])  # before any write
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for stem, fig in self.figures.items():
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi)
            path = out / f"{stem}.png"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
        self.metrics.setdefault("figures", [p.name for p in paths])
        write_json(out / "metrics.json", self.metrics)
        return paths + [out / "metrics.json"]

    def close(self) -> None:
        """Free the figures' memory (pyplot keeps every open figure alive)."""
        import matplotlib.pyplot as plt

        for fig in self.figures.values():
            plt.close(fig)


def stop_if_interrupted(train_result) -> None:
    """fit turns Ctrl-C (or SIGTERM) into a clean stop of the current training; an experiment
    that trains many models must then stop as a whole, not go on to the next model."""
    if getattr(train_result, "stopped", None) == "interrupted":
        raise KeyboardInterrupt
