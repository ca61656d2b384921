"""Models: plain ``nn.Module``s, no Lightning, importable alone."""

from whylearn.models.gpt import GPT
from whylearn.models.mlp import MLP, Step, make_activation, mlp_num_params

__all__ = ["GPT", "MLP", "Step", "make_activation", "mlp_num_params"]
