"""Tasks: thin LightningModules that say what is optimized and logged."""

from whylearn.tasks.adversarial import AdversarialTrainingTask
from whylearn.tasks.analysis import AnalysisTask
from whylearn.tasks.base import FastTask, History, NonFiniteLossError, get_history, log_scalars
from whylearn.tasks.classic import (
    HopfieldCapacityTask,
    HopfieldTask,
    LMSSweepTask,
    PerceptronMarginSweepTask,
    PerceptronTask,
    SweepTask,
    XORSweepTask,
)
from whylearn.tasks.classification import ClassificationTask, classification_loss
from whylearn.tasks.continual import ContinualClassificationTask, ForgettingStudyTask
from whylearn.tasks.ensemble import EnsembleClassificationTask
from whylearn.tasks.forecasting import ForecastTask
from whylearn.tasks.gradient_penalty import GradientPenaltyTask
from whylearn.tasks.invariance import InvarianceStudyTask
from whylearn.tasks.language_model import LanguageModelTask

__all__ = [
    "AdversarialTrainingTask",
    "AnalysisTask",
    "ClassificationTask",
    "ContinualClassificationTask",
    "EnsembleClassificationTask",
    "FastTask",
    "ForgettingStudyTask",
    "ForecastTask",
    "GradientPenaltyTask",
    "History",
    "HopfieldCapacityTask",
    "HopfieldTask",
    "InvarianceStudyTask",
    "LMSSweepTask",
    "LanguageModelTask",
    "NonFiniteLossError",
    "PerceptronMarginSweepTask",
    "PerceptronTask",
    "SweepTask",
    "XORSweepTask",
    "classification_loss",
    "get_history",
    "log_scalars",
]
