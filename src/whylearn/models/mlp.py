"""The multilayer perceptron (Rumelhart, Hinton & Williams 1986): affine maps and pointwise nonlinearities.

A plain ``nn.Module`` with no training code. Input (B, ...) is flattened to
(B, input_size); output is logits (B, num_classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from whylearn.models.batchnorm import NoisyBatchNorm1d


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)  # the true derivative, 0 almost everywhere


class Step(nn.Module):
    """Heaviside threshold unit, 1 if x > 0 else 0 (McCulloch & Pitts 1943; Rosenblatt 1958).

    Its derivative is zero almost everywhere, so backpropagation through it gives
    zero gradients to every layer below it: the reason the sigmoid replaced the threshold.
    """

    def forward(self, x: Tensor) -> Tensor:
        return _Heaviside.apply(x)


ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "step": Step}


def make_activation(name: str) -> nn.Module:
    """Build an activation by name. Raises ValueError naming the allowed names."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}") from None


class MLP(nn.Module):
    """Fully connected network: ``input_size -> hidden[0] -> ... -> hidden[-1] -> num_classes``.

    Args:
        input_size: features per sample after flattening (e.g. 40 for MNIST-1D, 784 for MNIST).
        num_classes: outputs (logits).
        hidden: widths of the hidden layers; or give ``width`` and ``depth`` instead
            (``depth`` hidden layers of ``width`` units). ``[]`` / depth 0 is a linear model.
        activation: ``relu``, ``sigmoid``, ``tanh``, ``gelu`` or ``step``.
        init: ``default`` (PyTorch's ``nn.Linear`` initialization: weights and biases uniform in
            +-1/sqrt(fan_in)) or ``he_uniform`` (He et al. 2015, Eq. 10, the uniform variant:
            ``nn.init.kaiming_uniform_`` weights, bound sqrt(6 / fan_in), and zero biases; the
            initialization of Understanding Deep Learning's notebooks, e.g. 8.3 double descent,
            applied after the layers are built, as they do, so a seeded run draws the same weights).
        init_scale: multiplier on the initialization of every weight and bias (the
            "initialization scale" of Liu et al. 2022, Omnigrok).
        bias: use biases.
        dropout: dropout probability after each hidden activation.
        residual: every hidden layer after the first adds its input, h <- h + act(W h + b) (needs equal
            widths): the MLP of MNIST-1D's baselines (``MLPBase`` in greydanus/mnist1d ``notebooks/models.py``,
            ``h = linear1(x).relu(); h = h + linear2(h).relu(); linear3(h)``).
        norm: ``none``, ``batch`` (BatchNorm after each hidden linear layer, before its activation: Ioffe &
            Szegedy 2015, Sec. 3.2) or ``noisy_batch`` (the same with Santurkar et al. 2018's time-varying noise
            after each BatchNorm, :class:`~whylearn.models.batchnorm.NoisyBatchNorm1d`).
        bn_noise_mean, bn_noise_std: the noise of ``noisy_batch``: per-step shift in +-bn_noise_mean and scale
            in [1, bn_noise_std] (ignored otherwise).

    Shapes: input (B, *) with prod(*) == input_size; output (B, num_classes).

    Raises:
        ValueError: an unknown activation, init or norm, both/neither of ``hidden`` and ``width``, or ``residual``
            with hidden layers of different widths.
    """

    INITS = ("default", "he_uniform")
    NORMS = ("none", "batch", "noisy_batch")

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden: Sequence[int] | None = None,
        width: int | None = None,
        depth: int | None = None,
        activation: str = "relu",
        init_scale: float = 1.0,
        bias: bool = True,
        dropout: float = 0.0,
        init: str = "default",
        residual: bool = False,
        norm: str = "none",
        bn_noise_mean: float = 0.5,
        bn_noise_std: float = 1.5,
    ) -> None:
        super().__init__()
        if init not in self.INITS:
            raise ValueError(f"unknown init {init!r}; allowed: {list(self.INITS)}")
        if norm not in self.NORMS:
            raise ValueError(f"unknown norm {norm!r}; allowed: {list(self.NORMS)}")
        self.norm = norm
        if hidden is None:
            if width is None or depth is None:
                raise ValueError("give the hidden widths as `hidden: [w1, w2, ...]` or as `width` and `depth`")
            hidden = [int(width)] * int(depth)
        elif width is not None:
            raise ValueError(f"give either hidden={list(hidden)} or width={width} x depth={depth}, not both")
        self.input_size, self.num_classes = int(input_size), int(num_classes)
        self.hidden = [int(h) for h in hidden]
        self.init_scale, self.init = float(init_scale), init
        self.residual = bool(residual)
        if self.residual and len(set(self.hidden)) > 1:
            raise ValueError(f"residual hidden layers add their input, so they need equal widths; got hidden={self.hidden}")
        widths = [self.input_size, *self.hidden]
        layers: list[nn.Module] = []
        self._block_starts: list[int] = []  # index in net of each hidden layer's Linear
        for i in range(len(self.hidden)):
            self._block_starts.append(len(layers))
            layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            elif norm == "noisy_batch":
                layers.append(NoisyBatchNorm1d(widths[i + 1], bn_noise_mean, bn_noise_std))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], self.num_classes, bias=bias))
        self.net = nn.Sequential(*layers)
        self._init_after_build()

    def _init_after_build(self) -> None:
        with torch.no_grad():
            if self.init == "he_uniform":
                for layer in self.linear_layers():
                    nn.init.kaiming_uniform_(layer.weight)
                    if layer.bias is not None:
                        layer.bias.zero_()
            if self.init_scale != 1.0:
                for p in self.parameters():
                    p.mul_(self.init_scale)

    def reset_parameters(self) -> None:
        """Draw fresh parameters from the global RNG exactly as construction does (every layer's
        default initialization in order, then ``init``, then ``init_scale``)."""
        for layer in self.net:
            if isinstance(layer, (nn.Linear, nn.BatchNorm1d)):
                layer.reset_parameters()
        self._init_after_build()

    def forward(self, x: Tensor) -> Tensor:
        if not self.residual:
            return self.net(x.flatten(1))
        h = x.flatten(1)
        bounds = [*self._block_starts, len(self.net) - 1]
        for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            out = self.net[a:b](h)
            h = out if j == 0 else h + out  # the first layer changes the width; the others add their input
        return self.net[-1](h)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]


def mlp_num_params(input_size: int, hidden: Sequence[int], num_classes: int, bias: bool = True) -> int:
    """Parameter count of :class:`MLP` without building it: sum over layers of in*out (+ out)."""
    widths = [input_size, *hidden, num_classes]
    return sum(a * b + (b if bias else 0) for a, b in zip(widths[:-1], widths[1:], strict=False))
