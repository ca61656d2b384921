"""Callbacks that measure, usable with any whylearn task and model."""

from whylearn.callbacks.boundary import DecisionBoundary
from whylearn.callbacks.figures import AttentionMaps, CurveFigure
from whylearn.callbacks.gap import GeneralizationGap
from whylearn.callbacks.grokking import FirstReach, ProgressMeasures
from whylearn.callbacks.landscape import LinearRegions, LossLandscape, TimeToFit
from whylearn.callbacks.noise import GradientNoise
from whylearn.callbacks.norms import GradNorms, WeightNorms
from whylearn.callbacks.progress import LogLines, StepProgressBar, StepTQDMProgressBar
from whylearn.callbacks.robustness import RobustAccuracy
from whylearn.callbacks.sharpness import Sharpness
from whylearn.callbacks.smoothness import BatchNormModeGap, GradientPredictiveness
from whylearn.callbacks.wandb_run import WandbRunSync, WandbWatch

__all__ = ["DecisionBoundary", "GeneralizationGap", "GradNorms", "WeightNorms", "LogLines", "Sharpness", "LossLandscape",
           "LinearRegions", "TimeToFit", "GradientNoise", "RobustAccuracy"]
__all__ += ["AttentionMaps", "CurveFigure", "FirstReach", "ProgressMeasures", "StepProgressBar", "StepTQDMProgressBar",
            "WandbRunSync", "WandbWatch"]
__all__ += ["GradientPredictiveness", "BatchNormModeGap"]
