"""The notebook's experiments, measured on real models.

Each experiment is a library function `run_<name>(...) -> ExperimentResult` holding the
numbers (`metrics`, JSON-able) and the matplotlib figures; `ExperimentResult.save(out)`
writes `metrics.json` and one PNG per figure. The `lapnet` commands of the same names
only validate their options and call these functions.
"""

from lapnet.experiments.result import ExperimentResult

__all__ = ["ExperimentResult"]
