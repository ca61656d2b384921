"""whylearn: a PyTorch Lightning + Hydra research codebase for the phenomena that explain why machines learn."""

__version__ = "0.1.0"
