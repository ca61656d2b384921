"""Tasks: thin LightningModules that say what is optimized and logged."""

from whylearn.tasks.base import FastTask, History, NonFiniteLossError, get_history, log_scalars
from whylearn.tasks.classification import ClassificationTask, classification_loss
from whylearn.tasks.language_model import LanguageModelTask

__all__ = ["FastTask", "History", "NonFiniteLossError", "get_history", "log_scalars", "ClassificationTask", "classification_loss", "LanguageModelTask"]
