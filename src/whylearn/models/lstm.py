"""A long short-term memory forecaster (Hochreiter & Schmidhuber 1997): reads a sequence, predicts the next values.

A plain ``nn.Module`` with no training code. It takes a window of observations, either
as a sequence (B, T, F) or flattened (B, T * F) as whylearn's forecasting datamodules give
it, runs an ``nn.LSTM`` over the T steps and maps the last hidden state to ``num_classes``
outputs (for Kepler's planets: the next position, 2 numbers).
"""

from __future__ import annotations

from torch import Tensor, nn


class LSTMForecaster(nn.Module):
    """LSTM over the steps of a window, linear read-out of the last hidden state.

    Args:
        input_size: numbers per sample when flattened, T * F.
        num_classes: outputs (e.g. 2 for a position in the plane).
        features_per_step: F, numbers observed at each step (2 for a planar position).
        hidden_size, num_layers: of the ``nn.LSTM``.

    Shapes: input (B, T * F) or (B, T, F); output (B, num_classes).

    Raises:
        ValueError: ``input_size`` is not a multiple of ``features_per_step``, or an input whose
            size does not match.
    """

    def __init__(self, input_size: int, num_classes: int, features_per_step: int = 2, hidden_size: int = 64,
                 num_layers: int = 1) -> None:
        super().__init__()
        if input_size % features_per_step:
            raise ValueError(f"input_size={input_size} is not a multiple of features_per_step={features_per_step}")
        self.input_size, self.num_classes, self.features_per_step = int(input_size), int(num_classes), int(features_per_step)
        self.lstm = nn.LSTM(features_per_step, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            if x.shape[1] != self.input_size:
                raise ValueError(f"expected inputs (B, {self.input_size}), got {tuple(x.shape)}")
            x = x.view(x.shape[0], -1, self.features_per_step)
        out, _ = self.lstm(x)
        return self.head(out[:, -1])
