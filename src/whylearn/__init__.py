"""whylearn: a PyTorch Lightning + Hydra research codebase for the phenomena that explain why machines learn."""

__version__ = "0.1.0"

from whylearn.runs.identity import register_resolvers as _register_resolvers

_register_resolvers()
