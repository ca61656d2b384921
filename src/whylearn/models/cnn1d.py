"""The baseline 1-D CNN of MNIST-1D (Greydanus 2020, "Scaling down deep learning"; ``ConvBase`` in
the mnist1d repository's ``notebooks/models.py``).

Three Conv1d-ReLU layers of ``channels`` filters (kernel 5, 3, 3; stride 2; padding 1), the
feature map flattened into one linear classifier. No pooling and no normalization: the
convolutions share their weights across positions (translation equivariance), the linear head
then reads each position separately. On the 40-sample MNIST-1D sequences the lengths are
40 -> 19 -> 10 -> 5, so the head is Linear(25 * 5, 10) and the network has 5,210 parameters,
as in the paper's benchmark (about 94% test accuracy; 56% with the positions shuffled).
A plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a Conv1d: floor((L + 2 padding - kernel) / stride) + 1."""
    return (length + 2 * padding - kernel) // stride + 1


class CNN1D(nn.Module):
    """Greydanus's MNIST-1D CNN: 3 strided Conv1d + ReLU, flatten, Linear.

    Args:
        input_shape: one sample's shape, ``(L,)`` (one channel) or ``(C, L)``; ``auto`` in the
            config takes it from the data.
        num_classes: outputs (logits).
        channels: filters per conv layer (25 in the paper).
        kernels, strides, padding: of the three conv layers ((5, 3, 3), (2, 2, 2), 1 in the paper).

    Shapes: input (B, L) or (B, C, L); output (B, num_classes).

    Raises:
        ValueError: an input shape that is not (L,) or (C, L), a sequence too short for the
            convolutions, channels or num_classes < 1, kernels and strides of different lengths.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10, channels: int = 25,
                 kernels: Sequence[int] = (5, 3, 3), strides: Sequence[int] = (2, 2, 2), padding: int = 1) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (1, 2):
            raise ValueError(f"CNN1D takes sequences of shape (L,) or (C, L), got input_shape={shape}")
        if channels < 1 or num_classes < 1:
            raise ValueError(f"channels and num_classes must be >= 1, got {channels} and {num_classes}")
        if len(kernels) != len(strides):
            raise ValueError(f"one stride per kernel: got kernels={list(kernels)}, strides={list(strides)}")
        self.in_channels = 1 if len(shape) == 1 else shape[0]
        self.length, self.num_classes, self.channels = shape[-1], int(num_classes), int(channels)
        layers: list[nn.Module] = []
        c_in, length = self.in_channels, self.length
        for k, s in zip(kernels, strides, strict=True):
            length = conv_length(length, int(k), int(s), int(padding))
            if length < 1:
                raise ValueError(f"input length {self.length} is too short for kernels {list(kernels)} and strides "
                                 f"{list(strides)}")
            layers += [nn.Conv1d(c_in, self.channels, int(k), stride=int(s), padding=int(padding)), nn.ReLU()]
            c_in = self.channels
        self.features = nn.Sequential(*layers)
        self.feature_length = length
        self.head = nn.Linear(self.channels * length, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(1) if x.ndim == 2 and self.in_channels == 1 else x  # (B, L) -> (B, 1, L)
        if h.ndim != 3 or h.shape[1] != self.in_channels or h.shape[2] != self.length:
            alt = f" or (B, {self.length})" if self.in_channels == 1 else ""
            raise ValueError(f"CNN1D expects (B, {self.in_channels}, {self.length}){alt}, got shape {tuple(x.shape)}")
        return self.head(self.features(h).flatten(1))
