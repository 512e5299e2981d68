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
        """Write metrics.json and the PNGs into `out`; returns the written paths.

        A result already in `out` is replaced whole: the figures its metrics.json lists and
        this result does not write are removed (only those: any other file stays), so that
        `--force` leaves no figure of the earlier run for `lapnet report` to show.
        """
        out = Path(out)
        check_replaceable([*(out / f"{stem}.png" for stem in self.figures), out / "metrics.json"])  # before any write
        out.mkdir(parents=True, exist_ok=True)
        for old in stale_figures(out, {f"{stem}.png" for stem in self.figures}):
            old.unlink(missing_ok=True)
        paths = []
        for stem, fig in self.figures.items():
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi)
            path = out / f"{stem}.png"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
        self.metrics.setdefault("figures", [p.name for p in paths])
        self.metrics.setdefault("experiment", self.name)  # the mark `stale_figures` trusts
        write_json(out / "metrics.json", self.metrics)
        return paths + [out / "metrics.json"]

    def close(self) -> None:
        """Drop any of the figures pyplot holds. lapnet's own figures are made outside pyplot
        (`plots.new_figure`) and are freed with the result: for them this does nothing."""
        import sys

        plt = sys.modules.get("matplotlib.pyplot")  # not imported: it holds no figure
        if plt is not None:
            for fig in self.figures.values():
                plt.close(fig)  # a figure pyplot does not hold is left as it is


def listed_figures(metrics: Any) -> list[str] | None:
    """The figure file names a metrics.json lists ("figures": [names or paths], or one
    "figure"), as bare names; None when it lists none (a run that does not say)."""
    if not isinstance(metrics, dict):
        return None
    listed = metrics.get("figures", metrics.get("figure"))
    if isinstance(listed, str):
        listed = [listed]
    if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
        return None
    return [Path(x).name for x in listed]


EXPERIMENTS = frozenset({"adding", "feedforward", "gates", "gradflow", "sine", "temperature", "trend"})


def is_experiment_result(metrics: Any) -> bool:
    """Whether a metrics.json is one `ExperimentResult.save` wrote: its "experiment" names one
    of lapnet's experiments. Only such a file's figure list is trusted to name lapnet's files."""
    return isinstance(metrics, dict) and metrics.get("experiment") in EXPERIMENTS


def stale_figures(out: Path, keep: set[str]) -> list[Path]:
    """The figures the metrics.json in `out` lists that are not in `keep` and exist, when that
    metrics.json is an experiment's (`is_experiment_result`): a metrics.json someone else
    wrote names no file lapnet may remove."""
    from lapnet.checkpoint import read_json
    from lapnet.errors import CheckpointError

    try:
        old = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
    except (CheckpointError, OSError):
        return []
    if not is_experiment_result(old):
        return []
    names = listed_figures(old) or []
    return [out / n for n in names
            if n not in keep and n.lower().endswith((".png", ".jpg", ".jpeg", ".svg")) and (out / n).is_file()]


# what fit's "interrupted at step N; ..." line advises in an experiment: its figures and
# metrics.json are written only once every model has trained, and it has no --resume
INTERRUPT_HINT = "nothing was written (the experiments have no --resume): run the command again"


def stop_if_interrupted(train_result) -> None:
    """fit turns Ctrl-C (or SIGTERM) into a clean stop of the current training; an experiment
    that trains many models must then stop as a whole, not go on to the next model."""
    if getattr(train_result, "stopped", None) == "interrupted":
        raise KeyboardInterrupt
