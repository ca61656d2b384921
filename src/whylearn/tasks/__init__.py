"""Tasks: thin LightningModules that say what is optimized and logged.

Experiments that are not one training run (sweeps of tiny models, multi-run studies) are studies, not
tasks: :mod:`whylearn.studies` (the Study protocol, :mod:`whylearn.studies.base`).
"""

from whylearn.tasks.adversarial import AdversarialTrainingTask
from whylearn.tasks.base import FastTask, History, NonFiniteLossError, get_history, log_scalars
from whylearn.tasks.classic import HopfieldTask, PerceptronTask
from whylearn.tasks.classification import ClassificationTask, classification_loss
from whylearn.tasks.continual import ContinualClassificationTask
from whylearn.tasks.ensemble import EnsembleClassificationTask
from whylearn.tasks.forecasting import ForecastTask
from whylearn.tasks.gradient_penalty import GradientPenaltyTask
from whylearn.tasks.language_model import LanguageModelTask

__all__ = [
    "AdversarialTrainingTask",
    "ClassificationTask",
    "ContinualClassificationTask",
    "EnsembleClassificationTask",
    "FastTask",
    "ForecastTask",
    "GradientPenaltyTask",
    "History",
    "HopfieldTask",
    "LanguageModelTask",
    "NonFiniteLossError",
    "PerceptronTask",
    "classification_loss",
    "get_history",
    "log_scalars",
]
