"""Callbacks that measure, usable with any whylearn task and model."""

from whylearn.callbacks.figures import AttentionMaps, CurveFigure
from whylearn.callbacks.gap import GeneralizationGap
from whylearn.callbacks.norms import GradNorms, WeightNorms
from whylearn.callbacks.progress import LogLines

__all__ = ["GeneralizationGap", "GradNorms", "WeightNorms", "LogLines", "AttentionMaps", "CurveFigure"]
