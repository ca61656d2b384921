"""The two-convolution network of the TensorFlow MNIST tutorial, as Madry et al. 2018 attack and defend it.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018 ("Towards deep learning models resistant to adversarial
attacks", Sec. 5 and their ``mnist_challenge`` code, ``model.py``): conv 5x5 with 32 channels, ReLU,
2x2 max-pool; conv 5x5 with 64 channels, ReLU, 2x2 max-pool; a fully connected layer of 1024 ReLUs;
the output layer. ``channels`` and ``hidden`` scale it down for CPU runs. A plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class ConvNet(nn.Module):
    """conv(5x5, c1) - ReLU - maxpool 2 - conv(5x5, c2) - ReLU - maxpool 2 - Linear(hidden) - ReLU - Linear(C).

    Args:
        input_shape: (C, H, W) of the images (from the data: ``auto``), H and W >= 4.
        num_classes: outputs (logits).
        channels: (c1, c2); Madry et al.'s MNIST model: (32, 64).
        hidden: width of the fully connected layer; Madry et al.: 1024.

    Shapes: input (B, C, H, W); output (B, num_classes). Convolutions are padded ("same"), pools floor.

    Raises:
        ValueError: input_shape not (C, H, W) with H, W >= 4, or a width < 1.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64),
                 hidden: int = 1024) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or shape[1] < 4 or shape[2] < 4:
            raise ValueError(f"ConvNet needs images (C, H, W) with H, W >= 4, got input_shape {list(shape)}")
        c1, c2 = (int(c) for c in channels)
        if min(c1, c2, int(hidden), int(num_classes)) < 1:
            raise ValueError(f"channels, hidden and num_classes must be >= 1, got {list(channels)}, {hidden}, {num_classes}")
        self.input_shape, self.num_classes = shape, int(num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(shape[0], c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = c2 * (shape[1] // 4) * (shape[2] // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, int(hidden)), nn.ReLU(), nn.Linear(int(hidden), self.num_classes))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"ConvNet expects images (B, {', '.join(map(str, self.input_shape))}), got shape {tuple(x.shape)}")
        return self.head(self.features(x))
