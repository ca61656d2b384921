"""The width-scalable 5-layer CNN of Nakkiran et al. 2019 ("Deep double descent", experimental details in the appendix).

Four Conv-BatchNorm-ReLU-MaxPool layers of widths k, 2k, 4k, 8k (3x3 kernels,
stride 1, padding 1) and a fully connected output layer. The paper's max-pool
sizes are [1, 2, 2, 8] for 32x32 CIFAR images; here the last pool is a global
max pool, which is the same 8x8 pool on 32x32 inputs and also accepts other
sizes (28x28 MNIST: 28 -> 28 -> 14 -> 7 -> 1). With ``spatial_dims=1`` the same network is
built from Conv1d / BatchNorm1d / MaxPool1d for sequences such as MNIST-1D (40 -> 40 -> 20 ->
10 -> 1). A plain ``nn.Module``.
"""

from __future__ import annotations

from torch import Tensor, nn

NORMS = ("batch", "none")
SPATIAL_DIMS = (1, 2)


class CNN(nn.Module):
    """Nakkiran et al.'s 5-layer CNN of width ``k``: conv widths (k, 2k, 4k, 8k), then Linear(8k, num_classes).

    Args:
        in_channels: channels of the input images (3 for CIFAR-10, 1 for MNIST).
        num_classes: outputs (logits).
        k: the width parameter (the paper sweeps k = 1..64; k = 64 is the largest).
        norm: ``batch`` (BatchNorm after each conv, as in the paper) or ``none``.
        spatial_dims: 2 for images (Conv2d, the paper's network), 1 for sequences (Conv1d,
            the same layers in one dimension).

    Shapes: images (B, in_channels, H, W) with H, W >= 4; sequences (B, in_channels, L), or
    (B, L) when in_channels is 1, with L >= 4; output (B, num_classes).

    Raises:
        ValueError: k < 1, in_channels < 1, num_classes < 1, an unknown ``norm`` or ``spatial_dims``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, k: int = 64, norm: str = "batch",
                 spatial_dims: int = 2) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; allowed: {list(NORMS)}")
        if spatial_dims not in SPATIAL_DIMS:
            raise ValueError(f"unknown spatial_dims {spatial_dims!r}; allowed: {list(SPATIAL_DIMS)}")
        if k < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(f"k, in_channels and num_classes must be >= 1, got k={k}, in_channels={in_channels}, "
                             f"num_classes={num_classes}")
        self.k, self.in_channels, self.num_classes, self.norm = int(k), int(in_channels), int(num_classes), norm
        self.spatial_dims = int(spatial_dims)
        conv, bn, pool, gpool = ((nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d) if spatial_dims == 2
                                 else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveMaxPool1d))
        widths = [self.in_channels, k, 2 * k, 4 * k, 8 * k]
        pools: list[nn.Module] = [nn.Identity(), pool(2), pool(2), gpool(1)]
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(conv(widths[i], widths[i + 1], 3, padding=1, bias=norm == "none"))
            if norm == "batch":
                layers.append(bn(widths[i + 1]))
            layers += [nn.ReLU(inplace=True), pools[i]]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(8 * k, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.spatial_dims == 1 and x.ndim == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)  # (B, L) -> (B, 1, L)
        if x.ndim != 2 + self.spatial_dims or x.shape[1] != self.in_channels:
            want = (f"images (B, {self.in_channels}, H, W)" if self.spatial_dims == 2
                    else f"sequences (B, {self.in_channels}, L) (spatial_dims=1)")
            raise ValueError(f"CNN expects {want}, got shape {tuple(x.shape)}")
        return self.head(self.features(x).flatten(1))
