"""Tasks: thin LightningModules that say what is optimized and logged."""

from whylearn.tasks.base import FastTask, History, NonFiniteLossError, get_history, log_scalars
from whylearn.tasks.analysis import AnalysisTask
from whylearn.tasks.classification import ClassificationTask, classification_loss
from whylearn.tasks.language_model import LanguageModelTask
from whylearn.tasks.forecasting import ForecastTask

__all__ = ["FastTask", "History", "NonFiniteLossError", "get_history", "log_scalars", "ClassificationTask", "classification_loss",
           "AnalysisTask", "ForecastTask"]
from whylearn.tasks.classic import (HopfieldCapacityTask, HopfieldTask, LMSSweepTask, PerceptronMarginSweepTask,
                                    PerceptronTask, SweepTask, XORSweepTask)

__all__ += ["HopfieldCapacityTask", "HopfieldTask", "LMSSweepTask", "PerceptronMarginSweepTask", "PerceptronTask",
            "SweepTask", "XORSweepTask"]
from whylearn.tasks.ensemble import EnsembleClassificationTask

__all__ += ["EnsembleClassificationTask"]
__all__ += ["LanguageModelTask"]
