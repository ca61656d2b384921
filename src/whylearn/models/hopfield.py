"""The Hopfield network (Hopfield 1982): Hebbian storage, asynchronous sign updates, an energy that never rises.

Storage (Hebb's rule, Hopfield 1982 eq. 2 in +-1 form): W = (1/N) sum_mu xi^mu xi^mu^T with
zero diagonal. Dynamics: pick a neuron i, set s_i <- sign(sum_j W_ij s_j) (ties keep
s_i). Energy E = -1/2 s^T W s (eq. 7); with symmetric W and zero diagonal an
asynchronous update of neuron i changes E by -h_i (s_i' - s_i) <= 0 (h_i = sum_j W_ij s_j),
so the network settles into a fixed point. Capacity: random patterns are retrieved as stable states up to
about P = 0.138 N (Amit, Gutfreund & Sompolinsky 1985), where retrieval collapses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Hopfield(nn.Module):
    """N binary (+-1) neurons with symmetric weights W (N, N), zero diagonal.

    Args:
        num_neurons: N. (``input_size`` is accepted as an alias so configs can size it from data.)

    Shapes: :meth:`store` patterns (P, N); :meth:`forward` / :meth:`settle` states (B, N) -> (B, N);
    :meth:`energy` (B, N) -> (B,). Raises ValueError on a width other than N or on non +-1 patterns.
    """

    def __init__(self, num_neurons: int | None = None, input_size: int | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        n = num_neurons if num_neurons is not None else input_size
        if n is None or int(n) < 1:
            raise ValueError(f"Hopfield needs num_neurons (or input_size) >= 1, got {n}")
        self.num_neurons = int(n)
        self.register_buffer("weight", torch.zeros(self.num_neurons, self.num_neurons))
        self.num_stored = 0

    def _check(self, s: Tensor) -> Tensor:
        s = s.flatten(1).to(self.weight.dtype)
        if s.shape[1] != self.num_neurons:
            raise ValueError(f"Hopfield network has {self.num_neurons} neurons, got states of width {s.shape[1]}")
        return s

    @torch.no_grad()
    def store(self, patterns: Tensor) -> None:
        """Add patterns (P, N) in {-1, +1} by Hebb's rule: W += (1/N) xi^T xi, diagonal kept at zero."""
        xi = self._check(patterns)
        if not bool(((xi == 1) | (xi == -1)).all()):
            raise ValueError("Hopfield patterns must have entries in {-1, +1}")
        self.weight += xi.T @ xi / self.num_neurons
        self.weight.fill_diagonal_(0.0)
        self.num_stored += xi.shape[0]

    def energy(self, s: Tensor) -> Tensor:
        """E = -1/2 s^T W s for each state (B, N) -> (B,)."""
        s = self._check(s)
        return -0.5 * ((s @ self.weight) * s).sum(1)

    @torch.no_grad()
    def sweep(
        self, s: Tensor, generator: torch.Generator | None = None, energies: list[Tensor] | None = None
    ) -> tuple[Tensor, int]:
        """One asynchronous sweep: each neuron once, in a random order, s_i <- sign(h_i) (h_i = 0 keeps s_i).

        All B states in the batch are updated in parallel but each state neuron by neuron.
        If ``energies`` is a list, the energy after every single-neuron update is appended.
        Returns (new states (B, N), number of bits flipped).
        """
        s = self._check(s).clone()
        flips = 0
        for i in torch.randperm(self.num_neurons, generator=generator).tolist():
            h = s @ self.weight[:, i]
            new = torch.where(h > 0, 1.0, torch.where(h < 0, -1.0, s[:, i]))
            flips += int((new != s[:, i]).sum())
            s[:, i] = new
            if energies is not None:
                energies.append(self.energy(s))
        return s, flips

    @torch.no_grad()
    def settle(self, s: Tensor, max_sweeps: int = 50, seed: int = 0) -> tuple[Tensor, int]:
        """Asynchronous sweeps until no bit flips (a fixed point) or ``max_sweeps``; returns (states, sweeps run)."""
        g = torch.Generator().manual_seed(seed)
        for k in range(1, max_sweeps + 1):
            s, flips = self.sweep(s, g)
            if flips == 0:
                return s, k
        return s, max_sweeps

    def forward(self, s: Tensor) -> Tensor:
        """The settled states (B, N) from initial states (B, N)."""
        return self.settle(s)[0]


def overlap(s: Tensor, xi: Tensor) -> Tensor:
    """Overlap m = (1/N) s . xi per row, in [-1, 1] (1: identical, 0: unrelated): (B, N), (B, N) -> (B,)."""
    return (s * xi).sum(-1) / s.shape[-1]
