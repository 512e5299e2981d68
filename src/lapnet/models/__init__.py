"""torch models, all built on one Recurrent factory (batch-first, packed sequences)."""

from lapnet.models.charlm import CharLM, CharLMConfig
from lapnet.models.classifier import Classifier
from lapnet.models.forecaster import Forecaster
from lapnet.models.recurrent import ARCHS, make_recurrent, run_recurrent

__all__ = ["ARCHS", "make_recurrent", "run_recurrent", "CharLM", "CharLMConfig", "Classifier", "Forecaster"]
