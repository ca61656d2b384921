"""Vectorized seed ensembles: S copies of one network, differing only in their initialization seed,
evaluated as one batched model with ``torch.func.stack_module_state`` + ``vmap``.

Small networks spend most of a training step in per-step overhead (Python, kernel launches,
the optimizer loop), not arithmetic, so running S seeds as one model with a leading seed axis
on every parameter multiplies throughput (``docs/benchmarks.md``). Each member's
parameters are a slice ``param[s]`` of one stacked tensor; any element-wise optimizer (SGD
with momentum and weight decay, Adam, AdamW) applied to the stacked tensors updates each
slice exactly as it would update that member alone, provided the training loss is the *sum*
of the members' losses (then d loss / d param[s] is member s's own gradient).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with fresh parameters drawn from ``torch.manual_seed(seed)``.

    Every submodule with ``reset_parameters`` is reset in registration order, which for
    whylearn's models is construction order, so the copy equals the model built right after
    ``torch.manual_seed(seed)`` (what ``whylearn-train seed=<seed>`` builds). A model with an
    ``init_scale`` attribute (:class:`~whylearn.models.MLP`) has it re-applied. The global RNG
    state is left as it was.
    """
    member = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for m in member.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
        scale = float(getattr(member, "init_scale", 1.0))
        if scale != 1.0:
            with torch.no_grad():
                for p in member.parameters():
                    p.mul_(scale)
    return member


def _key(name: str) -> str:
    return name.replace(".", "__")


class VmapEnsemble(nn.Module):
    """S members of one architecture as one module: input (B, ...) -> logits (S, B, C).

    Args:
        model: the template network (its own parameters are not used).
        seeds: one initialization seed per member (see :func:`reinitialize`).
        method: ``auto`` (grouped layers for an :class:`~whylearn.models.MLP`, ``vmap`` for
            anything else), ``grouped`` (MLP only: each layer one batched matmul over the seed
            axis, the least per-step overhead) or ``vmap`` (``torch.func.vmap`` over
            ``functional_call``: any module).

    Parameters are stored stacked, shape (S, *shape) for each of the template's parameters,
    as ``ensemble.<name with dots as __>``. ``member(i)`` returns member i as a plain module.

    Raises:
        ValueError: no seeds, repeated seeds, an unknown method, ``grouped`` for a non-MLP.
    """

    METHODS = ("auto", "grouped", "vmap")

    def __init__(self, model: nn.Module, seeds: Sequence[int], method: str = "auto") -> None:
        super().__init__()
        from whylearn.models.mlp import MLP

        if method not in self.METHODS:
            raise ValueError(f"unknown ensemble method {method!r}; allowed: {list(self.METHODS)}")
        plain_mlp = isinstance(model, MLP) and not model.residual  # grouped runs net layer by layer: no skips
        if method == "grouped" and not plain_mlp:
            raise ValueError(f"method 'grouped' supports whylearn.models.MLP without residual layers only, not "
                             f"{type(model).__name__}; use 'vmap'")
        self.method = "grouped" if (method == "auto" and plain_mlp) else ("vmap" if method == "auto" else method)
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("an ensemble needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"ensemble seeds must be distinct, got {seeds}")
        self.seeds = seeds
        members = [reinitialize(model, s) for s in seeds]
        params, buffers = stack_module_state(members)
        self._names = list(params)
        self._buffer_names = list(buffers)
        self.stacked = nn.ParameterDict({_key(n): nn.Parameter(t.detach().clone()) for n, t in params.items()})
        for n, t in buffers.items():
            self.register_buffer("buf__" + _key(n), t.detach().clone())
        base = copy.deepcopy(model).to("meta")
        object.__setattr__(self, "_base", base)  # not a submodule: its (meta) parameters are not ours

    @property
    def num_members(self) -> int:
        return len(self.seeds)

    def train(self, mode: bool = True) -> VmapEnsemble:
        super().train(mode)
        self._base.train(mode)
        return self

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params = {n: self.stacked[_key(n)] for n in self._names}
        buffers = {n: getattr(self, "buf__" + _key(n)) for n in self._buffer_names}
        return params, buffers

    def forward(self, x: Tensor) -> Tensor:
        params, buffers = self._state()
        if self.method == "grouped":
            return self._grouped_mlp(x, params)

        def one(p, b, inp):
            return functional_call(self._base, (p, b), (inp,))

        return vmap(one, in_dims=(0, 0, None), randomness="different")(params, buffers, x)

    def _grouped_mlp(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        # MLP.forward = net(x.flatten(1)), net = Linear / elementwise modules: one batched matmul per Linear
        h = x.flatten(1)
        for i, layer in enumerate(self._base.net):
            if isinstance(layer, nn.Linear):
                w, b = params[f"net.{i}.weight"], params.get(f"net.{i}.bias")  # (S, out, in), (S, out)
                S, out, fan_in = w.shape
                if h.dim() == 2:  # shared input (B, in): one GEMM against all members' weights side by side
                    flat = w.reshape(S * out, fan_in).t()
                    h = (torch.addmm(b.reshape(-1), h, flat) if b is not None else h @ flat)
                    h = h.view(h.shape[0], S, out).transpose(0, 1)  # (S, B, out)
                elif b is not None:  # (S, B, in) -> (S, B, out), bias fused
                    h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                else:
                    h = torch.bmm(h, w.transpose(1, 2))
            else:  # activation or dropout: elementwise, parameter-free
                h = layer(h)
        return h

    def member(self, i: int) -> nn.Module:
        """Member ``i`` as an ordinary module (a copy, on the ensemble's device)."""
        params, buffers = self._state()
        device = next(iter(params.values())).device
        m = copy.deepcopy(self._base).to_empty(device=device)
        m.load_state_dict({**{n: t[i].detach() for n, t in params.items()}, **{n: t[i] for n, t in buffers.items()}},
                          strict=False)
        return m.train(self.training)
