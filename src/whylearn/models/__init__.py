"""Models: plain ``nn.Module``s, no Lightning, importable alone."""

from whylearn.models.adaline import Adaline, lms_bounds, lms_mean_square_edge, run_lms
from whylearn.models.cnn import CNN
from whylearn.models.cnn1d import CNN1D
from whylearn.models.convnet import ConvNet
from whylearn.models.ensemble import VmapEnsemble, reinitialize
from whylearn.models.gpt import GPT
from whylearn.models.hopfield import Hopfield, overlap
from whylearn.models.lstm import LSTMForecaster
from whylearn.models.mlp import MLP, Step, make_activation, mlp_num_params
from whylearn.models.perceptron import Perceptron, margin, novikoff_bound, train_perceptron
from whylearn.models.resnet import ResNet
from whylearn.models.torchvision_models import torchvision_model

__all__ = [
    "MLP",
    "Step",
    "make_activation",
    "mlp_num_params",
    "LSTMForecaster",
    "Adaline",
    "lms_bounds",
    "lms_mean_square_edge",
    "run_lms",
    "Hopfield",
    "overlap",
    "Perceptron",
    "margin",
    "novikoff_bound",
    "train_perceptron",
    "CNN",
    "CNN1D",
    "ConvNet",
    "ResNet",
    "VmapEnsemble",
    "reinitialize",
    "torchvision_model",
    "GPT",
]
