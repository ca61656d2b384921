"""Vectorized ensembles: many small networks, possibly of different widths, trained as one module.

Small networks spend most of a training step in per-step overhead (Python, kernel launches,
the optimizer loop), not arithmetic, so training S of them as one model with a leading member
axis on every parameter multiplies throughput (``docs/benchmarks.md``). Each member's
parameters are a slice ``param[j]`` of one stacked tensor of its *group*; any element-wise
optimizer (SGD with momentum and weight decay, Adam, AdamW; or
:mod:`whylearn.optim_members` for hyperparameters that differ per member) applied to the stacked
tensors updates each slice exactly as it would update that member alone, provided the training
loss is the *sum* of the members' losses (then d loss / d param[j] is member j's own gradient).

Members that differ in architecture are grouped (:class:`MemberEnsemble`):

- ``exact`` layout: one group per distinct architecture (e.g. per width), each layer of a group one
  batched matmul (``torch.baddbmm``) over the group's members;
- ``padded`` layout (MLPs whose activation maps 0 to 0: ReLU, tanh, GELU, step): members of
  similar widths share a group whose hidden widths are the largest of them; a narrower member's
  extra units start with zero incoming and outgoing weights and zero bias, so they output 0, get
  exactly zero gradient (every gradient entry of such a weight is a product with a zero) and stay
  zero under SGD, momentum, weight decay and Adam: the member computes what it computes alone.
  Fewer groups cost less per-step overhead, padding costs arithmetic; ``auto`` picks the groups
  that minimize a measured cost model (:func:`plan_buckets`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from whylearn.models.mlp import MLP

# Cost model of one training step of a padded MLP group, for the layout planner: a fixed cost per
# group (dispatch of its ~25 tensor ops, forward and backward, and its optimizer bookkeeping) and the
# group's matmul FLOPs at a wide group's rate. Only their product matters (one group costs as much as
# 16 MFLOP of padding); measured on the development machine (Xeon, AVX-512, torch 2.13 CPU, one
# thread, CPU time): 205 us and 81 GFLOP/s, `python scripts/bench_sweep.py --ablation`, docs/benchmarks.md.
GROUP_OVERHEAD_S = 2.0e-4
GEMM_FLOPS_PER_S = 8.0e10


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with fresh parameters drawn from ``torch.manual_seed(seed)``.

    A model with its own ``reset_parameters`` (:class:`~whylearn.models.MLP`: every layer's default
    initialization, then its ``init`` scheme and ``init_scale``) draws them as its constructor does;
    otherwise every submodule with ``reset_parameters`` is reset in registration order, which for
    whylearn's models is construction order. Either way the copy equals the model built right after
    ``torch.manual_seed(seed)`` (what ``whylearn-train seed=<seed>`` builds). The global RNG state
    is left as it was.
    """
    member = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if callable(getattr(type(member), "reset_parameters", None)):
            member.reset_parameters()
        else:
            for m in member.modules():
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
    return member


def _key(name: str) -> str:
    return name.replace(".", "__")


def mlp_step_flops(widths: Sequence[int], batch: int) -> int:
    """Matmul FLOPs of one SGD step of an MLP with layer widths ``widths`` (input, hidden..., output)
    on ``batch`` samples: forward (2 B a b per layer), weight gradients (2 B a b per layer) and input
    gradients (2 B a b per layer but the first). Element-wise work (biases, activations, loss, the
    update) is not counted: the convention of MFU (PaLM, appendix B)."""
    pairs = list(zip(widths[:-1], widths[1:], strict=False))
    macs = sum(a * b for a, b in pairs)
    return 2 * batch * (2 * macs + macs - pairs[0][0] * pairs[0][1])


def _is_mlp(m: nn.Module) -> bool:
    """A plain whylearn MLP: the grouped path runs its ``net`` layer by layer, so residual MLPs (skips) take vmap."""
    return type(m) is MLP and not getattr(m, "residual", False)


def _zero_preserving(act: nn.Module) -> bool:
    with torch.no_grad():
        return bool(act(torch.zeros(3)).eq(0).all())


def _mlp_family(m: nn.Module) -> tuple:
    """What must agree for two MLPs to share a padded group: all but the hidden widths."""
    kinds = tuple(type(layer).__name__ for layer in m.net)
    dropout = tuple(float(layer.p) for layer in m.net if isinstance(layer, nn.Dropout))
    return (m.input_size, m.num_classes, len(m.hidden), kinds, dropout, m.linear_layers()[0].bias is not None)


def _mlp_shape(m: nn.Module) -> tuple:
    return (*_mlp_family(m), tuple(m.hidden))


def plan_buckets(widths: Sequence[int], counts: Sequence[int], step_flops, overhead_s: float = GROUP_OVERHEAD_S,
                 flops_per_s: float = GEMM_FLOPS_PER_S) -> list[list[int]]:
    """Split sorted distinct ``widths`` (with ``counts`` members each) into contiguous buckets that
    minimize the modelled step time ``sum over buckets (overhead_s + n_bucket * step_flops(max width)
    / flops_per_s)`` (dynamic programming over the cut points, exact for this model).

    Returns the buckets as lists of indices into ``widths``.
    """
    n = len(widths)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):  # buckets widths[i:j]
        for i in range(j):
            cost = best[i] + overhead_s + sum(counts[i:j]) * step_flops(widths[j - 1]) / flops_per_s
            if cost < best[j]:
                best[j], cut[j] = cost, i
    out, j = [], n
    while j > 0:
        out.append(list(range(cut[j], j)))
        j = cut[j]
    return out[::-1]


class _MLPGroup(nn.Module):
    """Members of one (padded) MLP architecture: each layer one batched matmul over the group.

    Weights are stored transposed, ``stacked["net__<i>__weight_t"]`` of shape (S, in, out), so the
    forward matmul and the weight gradient are both plain row-major batched GEMMs and autograd hands
    back a gradient already in the parameter's layout (no copy per step)."""

    def __init__(self, members: list[nn.Module], hidden: list[int]) -> None:
        super().__init__()
        template = members[0]
        self.kinds: list[nn.Module | None] = []  # None for a Linear, else the element-wise module
        shapes = [template.input_size, *hidden, template.num_classes]
        self.stacked = nn.ParameterDict()
        self._layers: list[tuple[str, str | None]] = []
        li = 0
        for i, layer in enumerate(template.net):
            if isinstance(layer, nn.Linear):
                out_f, in_f = shapes[li + 1], shapes[li]
                w = torch.zeros(len(members), in_f, out_f)
                b = torch.zeros(len(members), out_f) if layer.bias is not None else None
                for j, m in enumerate(members):
                    src = m.net[i]
                    w[j, : src.in_features, : src.out_features] = src.weight.detach().t()
                    if b is not None:
                        b[j, : src.out_features] = src.bias.detach()
                self.stacked[f"net__{i}__weight_t"] = nn.Parameter(w)
                if b is not None:
                    self.stacked[f"net__{i}__bias"] = nn.Parameter(b)
                self.kinds.append(None)
                self._layers.append((f"net__{i}__weight_t", f"net__{i}__bias" if b is not None else None))
                li += 1
            else:
                self.kinds.append(copy.deepcopy(layer))
                self._layers.append(("", None))
        self._modules_elementwise = nn.ModuleList([k for k in self.kinds if k is not None])

    def layer_params(self) -> list[tuple[Tensor, Tensor | None]]:
        """(weight_t (S, in, out), bias (S, out) or None) of each Linear layer, in order."""
        p = self.stacked._parameters
        return [(p[w], p[b] if b is not None else None) for w, b in self._layers if w]

    def forward(self, x: Tensor, per_member: bool) -> Tensor:
        h = x.flatten(2) if per_member else x.flatten(1)
        p = self.stacked
        for kind, (wname, bname) in zip(self.kinds, self._layers, strict=False):
            if kind is not None:  # activation or dropout: element-wise, parameter-free
                h = kind(h)
                continue
            w = p[wname]  # (S, in, out)
            b = p[bname] if bname is not None else None
            S, fan_in, out = w.shape
            if h.dim() == 2:  # shared input (B, in): one GEMM against all members' weights side by side
                flat = w.transpose(0, 1).reshape(fan_in, S * out)
                h = torch.addmm(b.reshape(-1), h, flat) if b is not None else h @ flat
                h = h.view(h.shape[0], S, out).transpose(0, 1)  # (S, B, out)
            elif b is not None:  # (S, B, in) -> (S, B, out), bias fused
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            else:
                h = torch.bmm(h, w)
        return h

    def member_state(self, j: int, template: nn.Module) -> dict[str, Tensor]:
        out = {}
        for name, t in self.stacked.items():
            if name.endswith("__weight_t"):
                pname = name[: -len("__weight_t")].replace("__", ".") + ".weight"
                ref = template.get_parameter(pname)
                out[pname] = t[j][: ref.shape[1], : ref.shape[0]].t().detach()
            else:
                pname = name.replace("__", ".")
                ref = template.get_parameter(pname)
                out[pname] = t[j][: ref.shape[0]].detach()
        return out


class _VmapGroup(nn.Module):
    """Members of one architecture, any module: ``torch.func.vmap`` over ``functional_call``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(members)
        self._names, self._buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterDict({_key(n): nn.Parameter(t.detach().clone()) for n, t in params.items()})
        for n, t in buffers.items():
            self.register_buffer("buf__" + _key(n), t.detach().clone())
        object.__setattr__(self, "_base", copy.deepcopy(members[0]).to("meta"))  # not a submodule

    def train(self, mode: bool = True) -> _VmapGroup:
        super().train(mode)
        self._base.train(mode)
        return self

    def forward(self, x: Tensor, per_member: bool) -> Tensor:
        params = {n: self.stacked[_key(n)] for n in self._names}
        buffers = {n: getattr(self, "buf__" + _key(n)) for n in self._buffer_names}

        def one(p, b, inp):
            return functional_call(self._base, (p, b), (inp,))

        return vmap(one, in_dims=(0, 0, 0 if per_member else None), randomness="different")(params, buffers, x)

    def member_state(self, j: int, template: nn.Module) -> dict[str, Tensor]:
        out = {n: self.stacked[_key(n)][j].detach() for n in self._names}
        out.update({n: getattr(self, "buf__" + _key(n))[j] for n in self._buffer_names})
        return out


class MemberEnsemble(nn.Module):
    """S networks as one module: input (B, ...) shared by all, or (S, B, ...) one batch per member
    (``per_member=True``) -> logits (S, B, C), member order as given.

    Args:
        members: the networks, each already initialized (their parameters are copied); all must
            output the same number of classes C.
        layout: how members of different architectures are grouped: ``exact`` (one group per
            architecture), ``padded`` (MLPs only, activation(0) = 0: widths padded into buckets,
            see the module docstring), ``auto`` (``padded`` with the buckets of
            :func:`plan_buckets` where allowed, else ``exact``).
        method: ``auto`` (``grouped`` for :class:`~whylearn.models.MLP` members, ``vmap`` for
            anything else), ``grouped`` (MLP only: each layer one batched matmul over a group) or
            ``vmap`` (``torch.func.vmap`` over ``functional_call``: any module).
        batch_size: the training batch size B, for the layout planner's cost model.
        buckets: explicit padded groups: ascending upper widths (e.g. ``[20, 60, 400]``: widths up
            to 20 in one group, 21..60 in the next, ...), used with layout ``padded``.

    Parameters live in ``groups[k].stacked`` with a leading member axis; :meth:`param_members` says
    which member each slice belongs to and :meth:`member` returns member i as a plain module.

    Raises:
        ValueError: no members, members with BatchNorm layers, an unknown layout or method, ``grouped``
            for a non-MLP, ``padded`` for members it cannot pad (non-MLP, or an activation that does not map 0 to 0, e.g.
            sigmoid), buckets that leave a width out.
    """

    LAYOUTS = ("auto", "exact", "padded")
    METHODS = ("auto", "grouped", "vmap")

    def __init__(self, members: Sequence[nn.Module], layout: str = "auto", method: str = "auto",
                 batch_size: int = 100, buckets: Sequence[int] | None = None) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if layout not in self.LAYOUTS:
            raise ValueError(f"unknown ensemble layout {layout!r}; allowed: {list(self.LAYOUTS)}")
        if method not in self.METHODS:
            raise ValueError(f"unknown ensemble method {method!r}; allowed: {list(self.METHODS)}")
        if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for m in members for mod in m.modules()):
            raise ValueError("members with BatchNorm layers (e.g. model.norm=batch) cannot be trained as one "
                             "vectorized ensemble: their running statistics are updated in place; sweep them "
                             "with a multirun (-m) instead")
        all_mlp = all(_is_mlp(m) for m in members)
        if method == "grouped" and not all_mlp:
            bad = next(type(m).__name__ for m in members if not _is_mlp(m))
            raise ValueError(f"method 'grouped' supports whylearn.models.MLP (without residual layers) only, not {bad}; "
                             f"use 'vmap'")
        self.method = "grouped" if (method in ("auto", "grouped") and all_mlp) else "vmap"
        paddable = self.method == "grouped" and all(
            _zero_preserving(a) for m in members for a in m.net if not isinstance(a, (nn.Linear, nn.Dropout)))
        if layout == "padded" and not paddable:
            raise ValueError("layout 'padded' needs whylearn.models.MLP members whose activation maps 0 to 0 "
                             "(relu, tanh, gelu, step; not sigmoid) and method 'grouped'; use layout 'exact'")
        if buckets is not None and layout != "padded":
            raise ValueError(f"buckets={list(buckets)} need layout 'padded', got {layout!r}")
        self.layout = "padded" if (layout == "padded" or (layout == "auto" and paddable)) else "exact"
        self.num_classes = self._check_classes(members)
        templates = [copy.deepcopy(m).to("meta") for m in members]
        object.__setattr__(self, "_templates", templates)  # each member's own architecture (meta)
        plan = self._plan(members, buckets, batch_size)
        self.groups = nn.ModuleList()
        self.group_members: list[list[int]] = []
        self.group_hidden: list[list[int] | None] = []
        for idx, hidden in plan:
            group = [members[i] for i in idx]
            self.groups.append(_MLPGroup(group, hidden) if self.method == "grouped" else _VmapGroup(group))
            self.group_members.append(idx)
            self.group_hidden.append(hidden)
        order = [i for idx in self.group_members for i in idx]
        self._slices = None
        if order == list(range(len(members))):  # groups are contiguous runs: slices, no gathers
            bounds = [0]
            for idx in self.group_members:
                bounds.append(bounds[-1] + len(idx))
            self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=False)]
        self.register_buffer("_order", torch.tensor(order), persistent=False)
        self.register_buffer("_inverse", torch.argsort(torch.tensor(order)), persistent=False)

    @staticmethod
    def _check_classes(members: list[nn.Module]) -> int | None:
        classes = {getattr(m, "num_classes", None) for m in members}
        if len(classes) > 1:
            raise ValueError(f"ensemble members must output the same number of classes, got {sorted(map(str, classes))}")
        return classes.pop()

    def _plan(self, members: list[nn.Module], buckets, batch_size: int) -> list[tuple[list[int], list[int] | None]]:
        """(member indices, padded hidden widths or None) per group, groups in first-appearance order."""
        if self.method == "vmap":
            keys: dict = {}
            for i, m in enumerate(members):
                k = (repr(m), tuple((n, tuple(p.shape)) for n, p in m.named_parameters()))
                keys.setdefault(k, []).append(i)
            return [(idx, None) for idx in keys.values()]
        if self.layout == "exact":
            keys = {}
            for i, m in enumerate(members):
                keys.setdefault(_mlp_shape(m), []).append(i)
            return [(idx, list(members[idx[0]].hidden)) for idx in keys.values()]
        families: dict = {}
        for i, m in enumerate(members):
            families.setdefault(_mlp_family(m), []).append(i)
        plan = []
        for idx in families.values():
            size = {i: max(members[i].hidden, default=0) for i in idx}
            widths = sorted(set(size.values()))
            counts = [sum(1 for i in idx if size[i] == w) for w in widths]
            m0 = members[idx[0]]
            if buckets is not None:
                tops = sorted(int(b) for b in buckets)
                if widths and widths[-1] > tops[-1]:
                    raise ValueError(f"buckets {tops} leave out widths above {tops[-1]} (largest member: {widths[-1]})")
                cuts, start = [], 0
                for top in tops:
                    end = start
                    while end < len(widths) and widths[end] <= top:
                        end += 1
                    if end > start:
                        cuts.append(list(range(start, end)))
                    start = end
            else:
                def flops(w, m0=m0):
                    return mlp_step_flops([m0.input_size, *[w] * len(m0.hidden), m0.num_classes], batch_size)
                cuts = plan_buckets(widths, counts, flops)
            for cut in cuts:
                allowed = {widths[c] for c in cut}
                members_in = [i for i in idx if size[i] in allowed]
                depth = len(m0.hidden)
                hidden = [max(members[i].hidden[d] for i in members_in) for d in range(depth)]
                plan.append((members_in, hidden))
        return plan

    @property
    def num_members(self) -> int:
        return len(self._templates)

    def forward(self, x: Tensor, per_member: bool = False) -> Tensor:
        outs = []
        for k, group in enumerate(self.groups):
            if per_member:
                xg = x[self._slices[k]] if self._slices is not None else x[self._order_index(k)]
            else:
                xg = x
            outs.append(group(xg, per_member))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out if self._slices is not None else out[self._inverse]

    def _order_index(self, k: int) -> Tensor:
        return torch.tensor(self.group_members[k], device=self._order.device)

    def param_members(self) -> list[tuple[nn.Parameter, list[int]]]:
        """Every stacked parameter with the member index of each slice along its first axis."""
        return [(p, self.group_members[k]) for k, g in enumerate(self.groups) for p in g.stacked.values()]

    def member(self, i: int) -> nn.Module:
        """Member ``i`` as an ordinary module of its own architecture (a copy, on the ensemble's device)."""
        for k, idx in enumerate(self.group_members):
            if i in idx:
                group, j = self.groups[k], idx.index(i)
                break
        else:
            raise IndexError(f"member {i} out of range for {self.num_members} members")
        template = self._templates[i]
        device = next(group.parameters()).device
        m = copy.deepcopy(template).to_empty(device=device)
        m.load_state_dict(group.member_state(j, template), strict=False)
        return m.train(self.training)

    def describe(self) -> list[dict]:
        """The groups: members, padded hidden widths (or None for vmap groups), parameter count."""
        return [{"members": idx, "hidden": hidden, "params": sum(p.numel() for p in g.parameters())}
                for idx, hidden, g in zip(self.group_members, self.group_hidden, self.groups, strict=False)]


class VmapEnsemble(MemberEnsemble):
    """S members of one architecture differing only in their initialization seed: input (B, ...)
    -> logits (S, B, C).

    Args:
        model: the template network (its own parameters are not used).
        seeds: one initialization seed per member (see :func:`reinitialize`).
        method: as for :class:`MemberEnsemble`.

    Raises:
        ValueError: no seeds, repeated seeds, an unknown method, ``grouped`` for a non-MLP.
    """

    def __init__(self, model: nn.Module, seeds: Sequence[int], method: str = "auto") -> None:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("an ensemble needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"ensemble seeds must be distinct, got {seeds}")
        if method not in self.METHODS:
            raise ValueError(f"unknown ensemble method {method!r}; allowed: {list(self.METHODS)}")
        if method == "grouped" and not _is_mlp(model):
            raise ValueError(f"method 'grouped' supports whylearn.models.MLP (without residual layers) only, not "
                             f"{type(model).__name__}; use 'vmap'")
        super().__init__([reinitialize(model, s) for s in seeds], layout="exact", method=method)
        self.seeds = seeds
