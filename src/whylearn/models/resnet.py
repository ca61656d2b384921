"""Residual networks: the pre-activation ResNet18 of width k and the CIFAR ResNets of He et al. 2016.

- ``arch="preact18"``: the pre-activation ResNet18 (He, Zhang, Ren & Sun 2016b,
  "Identity mappings in deep residual networks", Fig. 4(e)) with stage widths
  (k, 2k, 4k, 8k), the family of Nakkiran et al. 2019 ("Deep double descent",
  appendix); k = 64 is the standard ResNet18 (11.2M parameters on CIFAR-10).
  A 3x3 stem conv of k channels, four stages of two pre-activation basic blocks
  (strides 1, 2, 2, 2), a final norm + ReLU, global average pool and a linear layer.
  A shortcut that changes shape is a 1x1 convolution with that stride.
- ``arch="cifar"``: the CIFAR-10 ResNets of He, Zhang, Ren & Sun 2016a ("Deep
  residual learning", Sec. 4.2): depth 6n+2 (20, 32, 44, 56, 110), a 3x3 stem
  conv of w channels, three stages of n post-activation basic blocks with widths
  (w, 2w, 4w) (w = 16 in the paper), global average pool and a linear layer.
  The shortcut that changes shape is the paper's option A: identity on a
  stride-2 subsample, zero-padded to the new width (no parameters).

``shortcut=False`` drops every skip connection (the "plain" networks of He et al.,
and ResNet-56-noshort of Li et al. 2018, "Visualizing the loss landscape");
``norm="none"`` drops every BatchNorm (the convolutions then get biases).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ARCHS = ("preact18", "cifar")
NORMS = ("batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


def _conv3x3(cin: int, cout: int, stride: int, norm: str) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=norm == "none")


class PadShortcut(nn.Module):
    """He et al. 2016a option A: subsample by ``stride`` and zero-pad the channels from ``cin`` to ``cout``."""

    piecewise_linear = True  # a linear map: region counting (whylearn.analysis.regions) accepts it

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """Post-activation basic block (He et al. 2016a): relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: bool, norm: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, cout, stride, norm), _norm(norm, cout)
        self.conv2, self.bn2 = _conv3x3(cout, cout, 1, norm), _norm(norm, cout)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, not F.relu: region counting hooks every ReLU
        self.shortcut: nn.Module | None = None
        if shortcut:
            self.shortcut = PadShortcut(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu2(out)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b): conv(relu(bn(conv(relu(bn(x)))))) + shortcut(x)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: bool, norm: str) -> None:
        super().__init__()
        self.bn1, self.conv1 = _norm(norm, cin), _conv3x3(cin, cout, stride, norm)
        self.bn2, self.conv2 = _norm(norm, cout), _conv3x3(cout, cout, 1, norm)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.shortcut: nn.Module | None = None
        if shortcut:
            self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=norm == "none")
                             if (stride != 1 or cin != cout) else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu2(self.bn2(out)))
        if self.shortcut is not None:
            # identity shortcuts add x itself; projections act on the pre-activated x (He et al. 2016b)
            out = out + (self.shortcut(x) if isinstance(self.shortcut, nn.Identity) else self.shortcut(pre))
        return out


class ResNet(nn.Module):
    """A residual network for small images; see the module docstring for the two families.

    Args:
        in_channels: channels of the input images (3 for CIFAR-10, 1 for MNIST).
        num_classes: outputs (logits).
        arch: ``preact18`` (Nakkiran's ResNet18 of width k) or ``cifar`` (He et al.'s ResNet-6n+2).
        depth: for ``cifar``, 6n+2 (20, 56, ...; default 20); for ``preact18`` 18 (the default).
        width: k of ``preact18`` (stage widths k, 2k, 4k, 8k; 64 = standard ResNet18) or the
            first-stage width w of ``cifar`` (stage widths w, 2w, 4w; 16 in the paper).
        shortcut: keep the skip connections (False: plain network).
        norm: ``batch`` or ``none``.

    Shapes: input (B, in_channels, H, W) (32x32 for CIFAR; any H, W >= 8 works); output (B, num_classes).

    Raises:
        ValueError: unknown ``arch`` or ``norm``, a depth the arch does not allow, width < 1.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, arch: str = "cifar", depth: int | None = None,
                 width: int | None = None, shortcut: bool = True, norm: str = "batch") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown ResNet arch {arch!r}; allowed: {list(ARCHS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; allowed: {list(NORMS)}")
        depth = int(depth if depth is not None else (20 if arch == "cifar" else 18))
        if arch == "cifar" and (depth < 8 or (depth - 2) % 6):
            raise ValueError(f"a CIFAR ResNet has depth 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        if arch == "preact18" and depth != 18:
            raise ValueError(f"arch preact18 has depth 18, got depth={depth} (use arch=cifar for depth 6n+2)")
        width = int(width if width is not None else (16 if arch == "cifar" else 64))
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.arch, self.depth, self.width, self.shortcut, self.norm = arch, depth, width, bool(shortcut), norm
        if arch == "cifar":
            n = (depth - 2) // 6
            widths, strides, blocks, block = [width, 2 * width, 4 * width], [1, 2, 2], [n] * 3, BasicBlock
            self.stem = nn.Sequential(_conv3x3(self.in_channels, width, 1, norm), _norm(norm, width), nn.ReLU())
            self.final = nn.Identity()
        else:
            widths, strides, blocks, block = [width, 2 * width, 4 * width, 8 * width], [1, 2, 2, 2], [2] * 4, PreActBlock
            self.stem = _conv3x3(self.in_channels, width, 1, norm)
            self.final = nn.Sequential(_norm(norm, widths[-1]), nn.ReLU())
        layers: list[nn.Module] = []
        cin = width
        for cout, stride, count in zip(widths, strides, blocks, strict=False):
            for i in range(count):
                layers.append(block(cin, cout, stride if i == 0 else 1, self.shortcut, norm))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(cin, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet expects images (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        out = self.final(self.blocks(self.stem(x)))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))
