"""BatchNorm with injected "covariate shift" (Santurkar et al. 2018, "How does batch normalization help
optimization?", Sec. 2.1 and Fig. 2): a test of BatchNorm's stated reason.

Ioffe & Szegedy 2015 motivate BatchNorm by *internal covariate shift*: the distribution of each layer's
inputs changes as the layers below train. Santurkar et al. inject noise after every BatchNorm layer whose
mean and variance are not 0 and 1 and change at every training step, so the next layer sees a distribution
that shifts all the time (more covariate shift than without BatchNorm), and find that such "noisy"
BatchNorm networks train about as well as plain BatchNorm ones: reducing covariate shift is not why
BatchNorm helps.

:class:`NoisyBatchNorm1d` is ``nn.BatchNorm1d`` followed, in training mode only, by

    y[b, j] = s[t, j] * BN(x)[b, j] + m[t, j] + e[b, j],   e[b, j] ~ N(0, (s[t, j] - 1)^2) i.i.d.,

with a fresh per-unit shift m[t, j] ~ U(-noise_mean, noise_mean) and scale s[t, j] ~ U(1, noise_std) drawn at
every step t: every unit's output has mean m[t, j] (not 0) and variance s^2 + (s - 1)^2 (not 1), different at
each step, and each sample is perturbed i.i.d. Santurkar et al. describe the noise as i.i.d. per activation
and per sample, from a non-zero-mean, non-unit-variance distribution that changes at every time step
(Sec. 2.1); the uniform ranges of the shift and scale are this implementation's reading of that description.
In eval mode the layer applies the noise's expectation, y = E[s] BN(x) + E[m] = ((1 + noise_std) / 2) BN(x) with
the running statistics (as dropout scales by its keep probability): the next layer was trained on inputs of
that average scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NoisyBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d(num_features)`` plus time-varying noise in training mode (see the module docstring).

    Args:
        num_features: units (C) of the (B, C) input.
        noise_mean: half-width of the per-step shift m ~ U(-noise_mean, noise_mean) (>= 0).
        noise_std: upper end of the per-step scale s ~ U(1, noise_std) (>= 1).
        **kwargs: ``nn.BatchNorm1d``'s (eps, momentum, affine, track_running_stats).

    Shapes: (B, C) -> (B, C). The noise is drawn from torch's global generator (seeded by the run).

    Raises:
        ValueError: noise_mean < 0 or noise_std < 1.
    """

    def __init__(self, num_features: int, noise_mean: float = 0.5, noise_std: float = 1.5, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if noise_mean < 0 or noise_std < 1:
            raise ValueError(f"need noise_mean >= 0 and noise_std >= 1, got noise_mean={noise_mean}, noise_std={noise_std}")
        self.noise_mean, self.noise_std = float(noise_mean), float(noise_std)

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if not self.training:
            return y * ((1 + self.noise_std) / 2)
        c = y.shape[-1]
        shift = (torch.rand(c, device=y.device, dtype=y.dtype) * 2 - 1) * self.noise_mean
        scale = 1 + torch.rand(c, device=y.device, dtype=y.dtype) * (self.noise_std - 1)
        jitter = torch.randn_like(y) * (scale - 1)
        return y * scale + shift + jitter

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, noise_mean={self.noise_mean}, noise_std={self.noise_std}"
