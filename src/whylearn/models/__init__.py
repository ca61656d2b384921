"""Models: plain ``nn.Module``s, no Lightning, importable alone."""

from whylearn.models.lstm import LSTMForecaster
from whylearn.models.mlp import MLP, Step, make_activation, mlp_num_params
from whylearn.models.placeholder import NoModel

__all__ = ["MLP", "Step", "make_activation", "mlp_num_params", "NoModel", "LSTMForecaster"]
