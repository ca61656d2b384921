"""The width-scalable 5-layer CNN of Nakkiran et al. 2019 ("Deep double descent", experimental details in the appendix).

Four Conv-BatchNorm-ReLU-MaxPool layers of widths k, 2k, 4k, 8k (3x3 kernels,
stride 1, padding 1) and a fully connected output layer. The paper's max-pool
sizes are [1, 2, 2, 8] for 32x32 CIFAR images; here the last pool is a global
max pool, which is the same 8x8 pool on 32x32 inputs and also accepts other
sizes (28x28 MNIST: 28 -> 28 -> 14 -> 7 -> 1). A plain ``nn.Module``.
"""

from __future__ import annotations

from torch import Tensor, nn

NORMS = ("batch", "none")


class CNN(nn.Module):
    """Nakkiran et al.'s 5-layer CNN of width ``k``: conv widths (k, 2k, 4k, 8k), then Linear(8k, num_classes).

    Args:
        in_channels: channels of the input images (3 for CIFAR-10, 1 for MNIST).
        num_classes: outputs (logits).
        k: the width parameter (the paper sweeps k = 1..64; k = 64 is the largest).
        norm: ``batch`` (BatchNorm2d after each conv, as in the paper) or ``none``.

    Shapes: input (B, in_channels, H, W) with H, W >= 4; output (B, num_classes).

    Raises:
        ValueError: k < 1, in_channels < 1, num_classes < 1 or an unknown ``norm``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, k: int = 64, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; allowed: {list(NORMS)}")
        if k < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(f"k, in_channels and num_classes must be >= 1, got k={k}, in_channels={in_channels}, "
                             f"num_classes={num_classes}")
        self.k, self.in_channels, self.num_classes, self.norm = int(k), int(in_channels), int(num_classes), norm
        widths = [self.in_channels, k, 2 * k, 4 * k, 8 * k]
        pools: list[nn.Module] = [nn.Identity(), nn.MaxPool2d(2), nn.MaxPool2d(2), nn.AdaptiveMaxPool2d(1)]
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(widths[i + 1]))
            layers += [nn.ReLU(inplace=True), pools[i]]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(8 * k, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CNN expects images (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        return self.head(self.features(x).flatten(1))
