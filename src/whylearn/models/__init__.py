"""Models: plain ``nn.Module``s, no Lightning, importable alone."""

from whylearn.models.cnn import CNN
from whylearn.models.ensemble import VmapEnsemble, reinitialize
from whylearn.models.mlp import MLP, Step, make_activation, mlp_num_params
from whylearn.models.resnet import ResNet
from whylearn.models.torchvision_models import torchvision_model

__all__ = ["MLP", "Step", "make_activation", "mlp_num_params", "CNN", "ResNet", "VmapEnsemble", "reinitialize",
           "torchvision_model"]
