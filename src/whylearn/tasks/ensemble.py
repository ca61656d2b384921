"""Classification with a vectorized ensemble: a whole sweep of small networks trained as one model.

``whylearn-train experiment=double_descent_mnist1d`` trains 28 widths x 3 seeds as one run:
``ensemble.grid: {model.width: [2, 4, ...], seed: [0, 1, 2]}`` expands (like a Hydra multirun, the
first key slowest) into members, each with its own settings, and trains them together in one
vectorized model (:class:`~whylearn.models.ensemble.MemberEnsemble`). Members may differ in

- ``seed``: the initialization seed (the model is built right after ``torch.manual_seed(seed)``);
- any ``model.*`` option (``model.width``, ``model.init_scale``, ``model.hidden``, ...): members of
  different architectures are grouped (``ensemble.layout``);
- ``optimizer.lr``, ``optimizer.weight_decay``, ``optimizer.momentum`` (SGD) - per-member
  hyperparameters of one element-wise optimizer (:class:`MemberSGD`, :class:`MemberAdam`);
- ``data.order_seed`` (its own data-order stream; ``ensemble.data_order: member`` gives every member
  its own), ``data.label_noise``, ``data.label_noise_seed``, ``data.label_noise_mode`` (its own noisy
  training labels).

Member i follows the trajectory of the single run ``whylearn-train <the same overrides>`` with its
settings (to float tolerance; tests/tasks/test_ensemble.py checks every axis). The data split and the
data seed are the run's (``data.seed``, not the member's ``seed``), as for every member.

Logged: for every metric of :class:`~whylearn.tasks.ClassificationTask` (``train/loss``,
``train/acc_epoch``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``) each member's value as
``<name>/<member label>`` (``val/acc/width40_seed1``; ``val/acc/seed3`` for a seed-only ensemble),
the mean over members under the usual name and their standard deviation as ``<name>_std``.
``summary.json`` gets the same for the final train/val/test numbers, and a ``members`` table (label,
settings, parameter count, metrics) that ``whylearn-analyze sweep`` reads as one row per member,
like the jobs of a multirun.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from whylearn.analysis.stats import describe_double_descent
from whylearn.models.ensemble import MemberEnsemble, _MLPGroup, mlp_step_flops, reinitialize
from whylearn.tasks.base import FastTask, SplitEval, get_history, log_scalars
from whylearn.tasks.classification import LOSSES, classification_loss

OPTIMIZER_AXES = ("optimizer.lr", "optimizer.weight_decay", "optimizer.momentum")
DATA_AXES = ("data.order_seed", "data.label_noise", "data.label_noise_seed", "data.label_noise_mode")
DATA_ORDERS = ("shared", "member")
# the axes whose members are replicates of one setting: what error bars are taken over
REPLICATE_AXES = ("seed", "data.order_seed", "data.label_noise_seed")


def member_losses(name: str, logits: Tensor, y: Tensor) -> Tensor:
    """Per-member, per-sample losses (S, B) of logits (S, B, C) against targets (B,) or (S, B)."""
    S, B, C = logits.shape
    y = y.expand(S, B) if y.dim() == 1 else y
    return classification_loss(name, logits.reshape(S * B, C), y.reshape(S * B), reduction="none").view(S, B)


def resolve_seeds(seeds: int | Sequence[int], base_seed: int) -> list[int]:
    """``seeds`` as a count S (-> base_seed, ..., base_seed + S - 1) or an explicit list."""
    if isinstance(seeds, int) or (isinstance(seeds, str) and seeds.isdigit()):
        n = int(seeds)
        if n < 1:
            raise ValueError(f"ensemble.seeds must be >= 1 (a count) or a list of seeds, got {seeds}")
        return [int(base_seed) + i for i in range(n)]
    return [int(s) for s in seeds]


def flatten_grid(grid: Mapping | None, prefix: str = "") -> dict[str, list]:
    """``{model: {width: [...]}, seed: [...]}`` or ``{"model.width": [...], ...}`` -> dotted keys to lists
    (a scalar is a one-value axis); the configured key order is kept."""
    out: dict[str, list] = {}
    for key, value in (grid or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_grid(value, name + "."))
        elif isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str)):
            out[name] = list(value)
        else:
            out[name] = [value]
    return out


def check_axes(axes: Mapping[str, list]) -> None:
    """Raise ValueError for an axis an ensemble cannot vary, or an empty or repeated one."""
    for key, values in axes.items():
        if not (key == "seed" or key.startswith("model.") or key in OPTIMIZER_AXES or key in DATA_AXES):
            raise ValueError(
                f"ensemble.grid cannot vary {key!r}: members share one data set, batch size, loss and trainer; allowed: "
                f"seed, model.<option>, {', '.join(OPTIMIZER_AXES)}, {', '.join(DATA_AXES)} "
                f"(sweep anything else with a multirun, -m)")
        if not values:
            raise ValueError(f"ensemble.grid.{key} is empty")
        if len({repr(v) for v in values}) != len(values):
            raise ValueError(f"ensemble.grid.{key} repeats a value: {values}")


def _short(key: str, keys: Sequence[str]) -> str:
    tail = key.rsplit(".", 1)[-1]
    return tail if sum(k.rsplit(".", 1)[-1] == tail for k in keys) == 1 else key.replace(".", "_")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt(x) for x in v)
    return str(v)


def member_label(settings: Mapping[str, Any], keys: Sequence[str]) -> str:
    """A member's name in metric keys: ``width40_seed1`` (``seed3`` for a seed-only ensemble)."""
    return "_".join(f"{_short(k, keys)}{_fmt(settings[k])}" for k in keys)


def expand_grid(grid: Mapping | None, seeds: int | Sequence[int] | None, base_seed: int,
                data_order: str = "shared") -> tuple[list[dict[str, Any]], list[str]]:
    """The members of an ensemble: one settings dict per point of the grid's Cartesian product.

    Args:
        grid: axis -> values (see the module docstring for the allowed axes); nested dicts are
            flattened to dotted keys. None: seeds only.
        seeds: a count or a list of initialization seeds, used as the last (fastest) axis when the
            grid has no ``seed`` axis; None: the grid's seeds, or just ``base_seed``.
        base_seed: the run's seed (first seed of a count).
        data_order: ``shared`` (every member the run's order) or ``member``: each member without a
            ``data.order_seed`` of its own gets ``data.order_seed = crc32(its settings) mod 2**31``,
            its own data-order stream (UDL notebook 8.3 draws a fresh shuffled order per model),
            recorded in its settings.

    Returns:
        (settings per member, in grid order, first axis slowest; the axes' keys).

    Raises:
        ValueError: an axis that cannot vary, an empty or repeated axis, seeds given twice, an
            unknown ``data_order``.
    """
    if data_order not in DATA_ORDERS:
        raise ValueError(f"unknown ensemble.data_order {data_order!r}; allowed: {list(DATA_ORDERS)}")
    axes = flatten_grid(grid)
    if "seed" in axes and seeds is not None:
        raise ValueError(f"seeds given twice: ensemble.grid.seed={axes['seed']} and ensemble.seeds={seeds}; keep one")
    if "seed" not in axes:
        axes["seed"] = resolve_seeds(seeds, base_seed) if seeds is not None else [int(base_seed)]
    check_axes(axes)
    keys = list(axes)
    members = [dict(zip(keys, point, strict=False)) for point in itertools.product(*axes.values())]
    for m in members:
        m["seed"] = int(m["seed"])
        if data_order == "member" and "data.order_seed" not in m:
            canon = ",".join(f"{k}={m[k]!r}" for k in keys)
            m["data.order_seed"] = zlib.crc32(canon.encode()) % 2**31
    return members, keys


# -- optimizers whose hyperparameters differ per member ---------------------------------------------
class _MemberOptimizer(torch.optim.Optimizer):
    """Base: each param group holds one stacked parameter and, per hyperparameter, a (S, 1, ...)
    tensor of the members' values (``member_<name>``). A scheduler's change of ``lr`` scales every
    member's rate by the same factor (``lr / initial_lr``), as it scales each single run's."""

    PER_MEMBER: tuple[str, ...] = ()

    def __init__(self, param_members: list[tuple[nn.Parameter, list[int]]], settings: dict[str, list[float]],
                 defaults: dict[str, Any]) -> None:
        groups = []
        for p, idx in param_members:
            g = {"params": [p]}
            shape = (len(idx),) + (1,) * (p.dim() - 1)
            for name, values in settings.items():
                g["member_" + name] = torch.tensor([float(values[i]) for i in idx], dtype=p.dtype,
                                                   device=p.device).view(shape)
            groups.append(g)
        super().__init__(groups, defaults)
        for g in self.param_groups:
            g.setdefault("initial_lr", g["lr"])

    def _rate(self, g: dict) -> Tensor | float:
        factor = g["lr"] / g["initial_lr"] if g["initial_lr"] else 0.0
        return g["member_lr"] * factor if "member_lr" in g else g["lr"]

    def _value(self, g: dict, name: str):
        return g.get("member_" + name, g[name])


class MemberSGD(_MemberOptimizer):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov, weight decay; its update, step for step)
    whose ``lr``, ``momentum`` and ``weight_decay`` may differ per ensemble member.

    Args:
        param_members: (stacked parameter, member index of each slice) pairs
            (:meth:`~whylearn.models.ensemble.MemberEnsemble.param_members`).
        settings: hyperparameter -> one value per member (in member order).
        lr, momentum, dampening, weight_decay, nesterov: the values of members not in ``settings``.
    """

    PER_MEMBER = ("lr", "momentum", "weight_decay")

    def __init__(self, param_members, settings: dict[str, list[float]], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, **unused) -> None:
        super().__init__(param_members, settings, dict(lr=lr, momentum=momentum, dampening=dampening,
                                                       weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            p = g["params"][0]
            if p.grad is None:
                continue
            d = p.grad
            wd, mom = self._value(g, "weight_decay"), self._value(g, "momentum")
            if isinstance(wd, Tensor) or wd != 0:
                d = d.add(p * wd) if isinstance(wd, Tensor) else d.add(p, alpha=wd)
            if isinstance(mom, Tensor) or mom != 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(mom).add_(d, alpha=1 - g["dampening"])
                d = d.add(buf * mom) if g["nesterov"] else buf
            rate = self._rate(g)
            if isinstance(rate, Tensor):
                p.sub_(d * rate)
            else:
                p.add_(d, alpha=-rate)
        return loss


class MemberAdam(_MemberOptimizer):
    """``torch.optim.Adam`` / ``AdamW`` (``decoupled=True``) whose ``lr`` and ``weight_decay`` may
    differ per ensemble member (betas and eps are shared); the update of torch's single-tensor
    implementation, step for step."""

    PER_MEMBER = ("lr", "weight_decay")

    def __init__(self, param_members, settings: dict[str, list[float]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False, **unused) -> None:
        super().__init__(param_members, settings, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                                       decoupled=decoupled))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            p = g["params"][0]
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            beta1, beta2 = g["betas"]
            lr, wd = self._rate(g), self._value(g, "weight_decay")
            if g["decoupled"]:
                p.mul_(1 - lr * wd)
            elif isinstance(wd, Tensor) or wd != 0:
                grad = grad.add(p * wd) if isinstance(wd, Tensor) else grad.add(p, alpha=wd)
            m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = lr / (1 - beta1**t)
            denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(g["eps"])
            if isinstance(step_size, Tensor):
                p.sub_(m / denom * step_size)
            else:
                p.addcdiv_(m, denom, value=-step_size)
        return loss


# -- one autograd node for the whole ensemble's training loss ---------------------------------------
def fusable(ensemble: MemberEnsemble) -> bool:
    """Whether :func:`fused_member_losses` can train ``ensemble``: grouped MLPs whose element-wise
    layers are all ReLU (no dropout, no other activation)."""
    return ensemble.method == "grouped" and all(
        isinstance(g, _MLPGroup) and all(k is None or type(k) is nn.ReLU for k in g.kinds) for g in ensemble.groups)


def _group_forward(g, h: Tensor) -> tuple[list[Tensor], list, Tensor]:
    """One grouped-MLP group's forward: (inputs of each layer, layer parameters, logits (S_g, B, C))."""
    hs = [h]
    layers = g.layer_params()
    for i, (w, b) in enumerate(layers):
        S, fan_in, out = w.shape
        if h.dim() == 2:  # shared input (B, in): one GEMM against the group's weights side by side
            flat = w.transpose(0, 1).reshape(fan_in, S * out)
            z = torch.addmm(b.reshape(-1), h, flat) if b is not None else h @ flat
            z = z.view(h.shape[0], S, out).transpose(0, 1)
        else:
            z = torch.baddbmm(b.unsqueeze(1), h, w) if b is not None else torch.bmm(h, w)
        if i == len(layers) - 1:
            return hs, layers, z
        h = z.relu_() if z.is_contiguous() else z.relu()
        hs.append(h)
    raise ValueError("a group without layers")


def _group_backward(hs: list[Tensor], layers: list, d: Tensor) -> list[Tensor]:
    """Gradients (weight_t, bias, ... in layer order) of one group from d loss / d logits (S_g, B, C)."""
    grads: list[Tensor] = []
    for i in range(len(layers) - 1, -1, -1):
        w, b = layers[i]
        hin = hs[i]
        if hin.dim() == 2:  # shared input: (in, B) @ (B, S*out)
            S_g, fan_in, out = w.shape
            dw = (hin.t() @ d.transpose(0, 1).reshape(hin.shape[0], S_g * out)).view(fan_in, S_g, out)
            dw = dw.transpose(0, 1).contiguous()
        else:
            dw = torch.bmm(hin.transpose(1, 2), d)
        if b is not None:
            grads.append(d.sum(1))
        grads.append(dw)
        if i > 0:
            d = torch.ops.aten.threshold_backward(torch.bmm(d, w.transpose(1, 2)), hin, 0)
    return grads[::-1]


_POOL = None


def _run_lanes(lanes: list[list[int]] | None, n: int, fn) -> list:
    """``fn(k)`` for k in range(n); with ``lanes`` (lists of k), each lane on its own thread (the
    first on the calling thread). Each op then runs single-threaded on its own core: the members are
    split across the cores instead of each small GEMM across threads."""
    global _POOL
    if not lanes or len(lanes) == 1:
        return [fn(k) for k in range(n)]
    if _POOL is None or _POOL._max_workers < len(lanes) - 1:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=len(lanes) - 1, thread_name_prefix="whylearn-lane")
    out: list = [None] * n

    def lane(ks):
        for k in ks:
            out[k] = fn(k)

    futures = [_POOL.submit(lane, ks) for ks in lanes[1:]]
    lane(lanes[0])
    for f in futures:
        f.result()
    return out


class _FusedMemberLosses(torch.autograd.Function):
    """Forward and backward of every member of a grouped-MLP ensemble and its loss, written out
    (one autograd node instead of about fifteen per group: the per-op bookkeeping of autograd costs
    more than the arithmetic of a small group). The gradients are those of autograd (same products,
    same order of the sums up to float rounding; tests/tasks/test_ensemble.py compares them)."""

    @staticmethod
    def forward(ctx, x, y, ensemble, loss_name, per_member, lanes, *params):
        groups = ensemble.groups

        def fwd(k):
            if per_member:
                xg = x[ensemble._slices[k]] if ensemble._slices is not None else x[ensemble._order_index(k)]
                return _group_forward(groups[k], xg.flatten(2))
            return _group_forward(groups[k], x.flatten(1))

        results = _run_lanes(lanes, len(groups), fwd)
        parts = [r[2] for r in results]
        logits = parts[0] if len(parts) == 1 else torch.cat(parts)  # internal member order
        S, B, C = logits.shape
        yy = y.expand(S, B) if y.dim() == 1 else (y if ensemble._slices is not None else y[ensemble._order])
        if loss_name == "cross_entropy":  # over the class axis in (S, C, B): torch's kernel for a last axis of 10 is slow
            logp = torch.log_softmax(logits.transpose(1, 2).contiguous(), 1)
            losses = -logp.gather(1, yy.unsqueeze(1)).squeeze(1).mean(1)
            ctx.saved = (logp, yy)
        else:  # mse against one-hot targets, averaged over classes
            diff = logits - torch.nn.functional.one_hot(yy, C).to(logits.dtype)
            losses = diff.pow(2).mean(-1).mean(-1)
            ctx.saved = (diff, yy)
        ctx.hs_all = [(r[0], r[1]) for r in results]
        ctx.ensemble, ctx.loss_name, ctx.lanes = ensemble, loss_name, lanes
        out_logits = logits if ensemble._slices is not None else logits[ensemble._inverse]
        ctx.mark_non_differentiable(out_logits)
        losses = losses if ensemble._slices is not None else losses[ensemble._inverse]
        return losses, out_logits

    @staticmethod
    def backward(ctx, grad_losses, _grad_logits):
        ensemble = ctx.ensemble
        a, yy = ctx.saved
        S, B = yy.shape
        gl = grad_losses if ensemble._slices is not None else grad_losses[ensemble._order]
        if ctx.loss_name == "cross_entropy":  # d/dz mean_b -log softmax(z)_y = (softmax - onehot) / B
            dz = a.exp_()  # (S, C, B)
            dz.scatter_add_(1, yy.unsqueeze(1), torch.full_like(yy, -1, dtype=dz.dtype).unsqueeze(1))
            dz = dz.mul_((gl / B).view(S, 1, 1)).transpose(1, 2)  # (S, B, C), strided
        else:  # d/dz mean_b mean_c (z - onehot)^2 = 2 (z - onehot) / (B C)
            C = a.shape[-1]
            dz = a.mul_((2 * gl / (B * C)).view(S, 1, 1))
        starts = [0]
        for _hs, layers in ctx.hs_all:
            starts.append(starts[-1] + layers[0][0].shape[0])

        def bwd(k):
            hs, layers = ctx.hs_all[k]
            return _group_backward(hs, layers, dz[starts[k]: starts[k + 1]])

        grads = [t for gs in _run_lanes(ctx.lanes, len(ctx.hs_all), bwd) for t in gs]
        ctx.hs_all = ctx.saved = None
        return (None, None, None, None, None, None, *grads)


def plan_lanes(ensemble: MemberEnsemble, lanes: int, batch_size: int) -> list[list[int]] | None:
    """Split the groups of ``ensemble`` into ``lanes`` lists of about equal matmul FLOPs (longest
    first onto the least-loaded lane); None for one lane."""
    if lanes <= 1:
        return None
    cost = []
    for k, g in enumerate(ensemble.groups):
        w = [lp[0] for lp in g.layer_params()]
        widths = [w[0].shape[1], *[t.shape[2] for t in w]]
        cost.append((w[0].shape[0] * mlp_step_flops(widths, batch_size) + 2e6, k))  # + a fixed cost per group
    load = [[0.0, []] for _ in range(lanes)]
    for c, k in sorted(cost, reverse=True):
        lane = min(load, key=lambda x: x[0])
        lane[0] += c
        lane[1].append(k)
    return [sorted(ks) for _, ks in load if ks]


def fused_member_losses(ensemble: MemberEnsemble, x: Tensor, y: Tensor, loss_name: str, per_member: bool,
                        lanes: list[list[int]] | None = None) -> tuple[Tensor, Tensor]:
    """Per-member training losses (S,), differentiable w.r.t. every stacked parameter, and the
    logits (S, B, C) (not differentiable), of a :func:`fusable` ensemble on a batch ``x`` (B, ...) or
    (S, B, ...) with ``per_member``, targets (B,) or (S, B). ``lanes``: groups per thread
    (:func:`plan_lanes`), forward and backward."""
    params = [t for g in ensemble.groups for w, b in g.layer_params() for t in ((w, b) if b is not None else (w,))]
    return _FusedMemberLosses.apply(x, y, ensemble, loss_name, per_member, lanes, *params)


MEMBER_OPTIMIZERS = {torch.optim.SGD: (MemberSGD, {}), torch.optim.Adam: (MemberAdam, {"decoupled": False}),
                     torch.optim.AdamW: (MemberAdam, {"decoupled": True})}
# schedulers that multiply the base rate by a factor: member i's rate stays lr_i x factor(t), as alone
MULTIPLICATIVE_SCHEDULERS = ("LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ExponentialLR", "ConstantLR",
                             "LinearLR")


class EnsembleClassificationTask(SplitEval, FastTask):
    """Train a grid of members at once; see the module docstring.

    Args:
        model: the template network (the run's ``model``); members that change no ``model.*``
            option are it, re-initialized with their seed.
        num_classes: C.
        optimizer: the optimizer factory (``torch.optim.SGD``, ``Adam``, ``AdamW`` or any element-wise
            one; with per-member hyperparameters only the first three).
        seeds: a count S (seeds base_seed .. base_seed+S-1) or a list of seeds; the last grid axis
            when ``grid`` has no ``seed``. None: 8 seeds without a grid, else the grid's.
        base_seed: the run's ``seed``.
        grid: axis -> values (see :func:`expand_grid`), e.g. ``{"model.width": [8, 16], "seed": [0, 1]}``.
        data_order: ``shared`` or ``member`` (see :func:`expand_grid`).
        layout: ``auto``, ``exact`` or ``padded`` (see :class:`~whylearn.models.ensemble.MemberEnsemble`).
        buckets: explicit padded groups for ``layout: padded``.
        model_factory: ``factory(**model_overrides) -> nn.Module`` building the run's model with some
            ``model.*`` options changed (``whylearn-train`` passes one); needed for ``model.*`` axes.
        batch_size: the training batch size (the layout planner's cost model; default 100).
        curve_x: a numeric grid axis (e.g. ``model.width``) along which ``summary.json`` gets the
            double-descent description (:func:`whylearn.analysis.stats.describe_double_descent`) of the
            members' mean train and test error.
        loss, scheduler, scheduler_interval, log_every_n_steps: as for ClassificationTask.
        gradient_clip_val: not supported (a global norm would couple the members); nor is
            ``trainer.gradient_clip_val``.
        compile: see :class:`~whylearn.tasks.base.FastTask`.
        method: ``auto``, ``grouped`` (MLP) or ``vmap`` (see :class:`~whylearn.models.ensemble.MemberEnsemble`).
        fused: train grouped ReLU MLPs through :func:`fused_member_losses` (one autograd node for the
            whole ensemble) where possible; False: plain autograd through the model's forward.
        lanes: split the groups over this many threads, each running its ops single-threaded
            (:func:`plan_lanes`): with ``threads=1``, the way to use several cores for an ensemble of
            small networks (intra-op threads split each small GEMM instead; see docs/benchmarks.md).

    Raises:
        ValueError: unknown loss, gradient clipping requested, a bad grid or seeds, ``model.*`` axes
            without a factory, per-member hyperparameters of an optimizer or scheduler that cannot
            honour them.
    """

    clips_gradients = False

    def __init__(self, model: nn.Module, num_classes: int, optimizer: Callable[..., torch.optim.Optimizer],
                 seeds: int | Sequence[int] | None = None, base_seed: int = 0, loss: str = "cross_entropy",
                 scheduler: Callable[..., Any] | None = None, scheduler_interval: str = "step",
                 log_every_n_steps: int = 50, gradient_clip_val: float | None = None, method: str = "auto",
                 grid: Mapping | None = None, data_order: str = "shared", layout: str = "auto",
                 buckets: Sequence[int] | None = None, model_factory: Callable[..., nn.Module] | None = None,
                 batch_size: int | None = None, curve_x: str | None = None, fused: bool = True,
                 lanes: int = 1, compile: bool | str = False) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, log_every_n_steps, None, compile=compile)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; allowed: {list(LOSSES)}")
        if gradient_clip_val is not None:
            raise ValueError("gradient clipping by global norm would couple the ensemble's members; "
                             "set task.gradient_clip_val=null for ensembles")
        if seeds is None and not grid:
            seeds = 8
        self.members, self.axes = expand_grid(grid, seeds, base_seed, data_order)
        if curve_x is not None and curve_x not in self.axes:
            raise ValueError(f"curve_x {curve_x!r} is not a grid axis; allowed: {self.axes}")
        self.curve_x = curve_x
        label_keys = self.axes if self.axes != ["seed"] else ["seed"]
        self.labels = [member_label(m, label_keys) for m in self.members]
        self.seeds = [m["seed"] for m in self.members]
        self.num_classes, self.loss_name = int(num_classes), loss
        nets = self._build_members(model, model_factory)
        self.member_params = [sum(p.numel() for p in n.parameters()) for n in nets]
        self.model = MemberEnsemble(nets, layout=layout, method=method, batch_size=batch_size or 100, buckets=buckets)
        self.fused = bool(fused) and fusable(self.model)
        if int(lanes) < 1:
            raise ValueError(f"ensemble.lanes must be >= 1, got {lanes}")
        if int(lanes) > 1 and not self.fused:
            raise ValueError(f"ensemble.lanes={lanes} needs the fused training path (grouped ReLU MLPs, task.fused=true)")
        self.lanes = int(lanes)
        self._lanes = plan_lanes(self.model, self.lanes, batch_size or 100)
        self._optimizer_settings = self._member_optimizer_settings(optimizer)
        self._member_labels: Tensor | None = None  # (S, N) training labels when they differ per member
        self._per_member_input = any("data.order_seed" in m for m in self.members) and \
            len({m.get("data.order_seed") for m in self.members}) > 1
        self._sums: dict[str, Tensor] = {}

    # -- construction ---------------------------------------------------------------------------
    def _build_members(self, model: nn.Module, factory: Callable[..., nn.Module] | None) -> list[nn.Module]:
        nets = []
        for m in self.members:
            overrides = {k.split(".", 1)[1]: v for k, v in m.items() if k.startswith("model.")}
            if not overrides:
                nets.append(reinitialize(model, m["seed"]))
                continue
            if factory is None:
                raise ValueError(f"ensemble.grid varies {sorted('model.' + k for k in overrides)}, which needs a "
                                 f"model_factory (whylearn-train passes one; from Python give model_factory=...)")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(m["seed"])  # as whylearn-train seed=<seed> builds it
                nets.append(factory(**overrides))
        return nets

    def _member_optimizer_settings(self, optimizer) -> dict[str, list[float]]:
        varied = {k.split(".", 1)[1]: [m[k] for m in self.members] for k in OPTIMIZER_AXES if k in self.axes}
        if not varied:
            return {}
        func = getattr(optimizer, "func", optimizer)
        if func not in MEMBER_OPTIMIZERS:
            raise ValueError(f"per-member {sorted(varied)} need torch.optim.SGD, Adam or AdamW, not {func}")
        cls, _ = MEMBER_OPTIMIZERS[func]
        bad = sorted(set(varied) - set(cls.PER_MEMBER))
        if bad:
            raise ValueError(f"{func.__name__} cannot take per-member {bad}; allowed: {list(cls.PER_MEMBER)}")
        return varied

    def configure_optimizers(self):
        if not self._optimizer_settings:
            return super().configure_optimizers()
        func, kwargs = self.optimizer_factory.func, dict(self.optimizer_factory.keywords)
        cls, extra = MEMBER_OPTIMIZERS[func]
        for key in ("foreach", "fused"):  # implementations of the same update: MemberSGD/MemberAdam are their own
            kwargs.pop(key, None)
        for key in ("maximize", "capturable", "differentiable", "amsgrad"):
            if kwargs.pop(key, None):
                raise ValueError(f"per-member optimizer hyperparameters do not support {key}=True")
        opt = cls(self.model.param_members(), self._optimizer_settings, **kwargs, **extra)
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        if type(sched).__name__ not in MULTIPLICATIVE_SCHEDULERS:
            raise ValueError(f"with per-member learning rates the scheduler must scale the rate by a factor "
                             f"({', '.join(MULTIPLICATIVE_SCHEDULERS)}), not {type(sched).__name__}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.scheduler_interval}}

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.lanes > 1 and torch.get_num_threads() > 1:
            import warnings

            warnings.warn(f"ensemble.lanes={self.lanes} with {torch.get_num_threads()} intra-op threads runs up to "
                          f"{self.lanes * torch.get_num_threads()} threads at once; set threads=1", stacklevel=2)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "noisy_train_labels"):
            if self._per_member_input or any(k in self.axes for k in DATA_AXES):
                raise ValueError(f"data axes {[k for k in self.axes if k in DATA_AXES]} or data_order=member need an "
                                 f"in-memory whylearn datamodule (InMemoryDataModule)")
            return
        dm.setup(stage)
        noise_keys = [k for k in self.axes if k.startswith("data.label_noise")]
        if noise_keys:
            rows = [dm.noisy_train_labels(**{k.split(".", 1)[1]: m[k] for k in noise_keys})[0] for m in self.members]
            self._member_labels = torch.stack(rows)
        order = [m["data.order_seed"] for m in self.members] if self._per_member_input else None
        if order is None and "data.order_seed" in self.members[0]:
            dm.order_seed = self.members[0]["data.order_seed"]  # one order stream, the same for all members
        if order is None and self._member_labels is None:
            dm.member_data = None
        else:
            dm.member_data = {"order_seeds": order, "labels": self._member_labels, "num_members": self.num_members}

    @property
    def num_members(self) -> int:
        return len(self.members)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # -- training ---------------------------------------------------------------------------
    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        if self.fused:
            per_member, logits = fused_member_losses(self.model, x, y, self.loss_name, self._per_member_input,
                                                     self._lanes)
        else:
            logits = self.model(x, per_member=self._per_member_input)
            per_member = member_losses(self.loss_name, logits, y).mean(1)  # (S,)
        total, mean = per_member.sum(), per_member.mean()
        # gradient of the sum (each member gets its own gradient), value of the mean (what is logged)
        loss = total - total.detach() + mean.detach()
        return loss, (per_member.detach(), (logits.detach().argmax(-1) == y).sum(1), y.shape[-1])

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._train_correct = torch.zeros(self.num_members, dtype=torch.long, device=self.device)
        self._train_count = 0

    def on_chunk_end(self, kept: list[Any]) -> None:
        for _, correct, n in kept:
            self._train_correct += correct
            self._train_count += int(n)
        # each member's training loss at the same steps as the mean train/loss
        start, every = self._chunk_start, self.log_every_n_steps
        for i, (losses, _, _) in enumerate(kept):
            step = start + i + 1
            if step % every == 0:
                log_scalars(
                    self,
                    {f"train/loss/{s}": v for s, v in zip(self.labels, losses.double().cpu().tolist(), strict=False)},
                    step=step,
                )

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self._train_count:
            self._log_vector("train/acc_epoch", self._train_correct.double() / self._train_count)

    # -- evaluation ----------------------------------------------------------------------------
    def _log_vector(self, name: str, values: Tensor, with_mean: bool = True) -> None:
        values = values.detach().double().cpu()
        metrics = {f"{name}/{s}": float(v) for s, v in zip(self.labels, values, strict=False)}
        if with_mean:
            metrics[name] = float(values.mean())
            metrics[f"{name}_std"] = float(values.std()) if values.numel() > 1 else 0.0
        log_scalars(self, metrics)

    @torch.no_grad()
    def eval_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Eval-mode logits (S, B, C) and per-member, per-sample losses (S, B); ``y`` (B,) or (S, B)."""
        logits = self.model(x)
        return logits, member_losses(self.loss_name, logits, y)

    @torch.no_grad()
    def evaluate_members(self, x: Tensor, y: Tensor, batch_size: int = 4096) -> dict[str, Tensor]:
        """Per-member loss and accuracy (S,) in eval mode on x (N, ...) and targets y (N,) or (S, N)."""
        was = self.model.training
        self.model.eval()
        loss = torch.zeros(self.num_members, dtype=torch.float64, device=x.device)
        correct = torch.zeros(self.num_members, dtype=torch.long, device=x.device)
        for i in range(0, x.shape[0], batch_size):
            yb = y[..., i: i + batch_size]
            logits, per = self.eval_batch(x[i: i + batch_size], yb)
            loss += per.double().sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
        self.model.train(was)
        n = max(x.shape[0], 1)
        return {"loss": loss / n, "acc": correct.double() / n}

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, batch_size: int = 4096) -> dict[str, float]:
        """Loss and accuracy averaged over members (the interface of ClassificationTask.evaluate)."""
        m = self.evaluate_members(x, y, batch_size)
        return {"loss": float(m["loss"].mean()), "acc": float(m["acc"].mean())}

    def _reset(self, prefix: str) -> None:
        S = self.num_members
        self._sums[prefix] = torch.zeros(3, S, dtype=torch.float64, device=self.device)  # loss sum, correct, count

    def _eval_step(self, prefix: str, batch) -> None:
        if prefix not in self._sums:
            self._reset(prefix)
        x, y = batch
        logits, per = self.eval_batch(x, y)
        s = self._sums[prefix]
        s[0] += per.double().sum(1)
        s[1] += (logits.argmax(-1) == y).sum(1).double()
        s[2] += y.shape[0]

    def _eval_end(self, prefix: str) -> None:
        s = self._sums.pop(prefix, None)
        if s is None:
            return
        s = self.trainer.strategy.reduce(s, reduce_op="sum") if self.trainer.world_size > 1 else s
        n = s[2].clamp_min(1)
        self._log_vector(f"{prefix}/loss", s[0] / n)
        self._log_vector(f"{prefix}/acc", s[1] / n)

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        """Per member and mean/std over members: final train and val loss and accuracy, the gaps, the
        test numbers; the ``members`` table; the layout; the double-descent description (``curve_x``)."""
        bs = getattr(datamodule, "eval_batch_size", 4096)
        train_y = self._member_labels.to(datamodule.train.y.device) if self._member_labels is not None \
            else datamodule.train.y
        out: dict[str, Any] = {"ensemble/members": self.num_members, "ensemble/seeds": list(self.seeds),
                               "ensemble/grid": {k: list(dict.fromkeys(m[k] for m in self.members)) for k in self.axes},
                               "ensemble/layout": self.model.layout, "ensemble/groups": self.model.describe(),
                               "params": sum(self.member_params),
                               "ensemble/stored_params": sum(p.numel() for p in self.model.parameters())}
        per = {"train": self.evaluate_members(datamodule.train.x, train_y, bs),
               "val": self.evaluate_members(datamodule.val.x, datamodule.val.y, bs)}
        per["gap"] = {"loss": per["val"]["loss"] - per["train"]["loss"], "acc": per["train"]["acc"] - per["val"]["acc"]}
        table = [{"label": lab, "settings": dict(m), "params": n} for lab, m, n in
                 zip(self.labels, self.members, self.member_params, strict=False)]
        for split, metrics in per.items():
            for k, v in metrics.items():
                v = v.double().cpu()
                out[f"{split}/{k}"] = float(v.mean())
                out[f"{split}/{k}_std"] = float(v.std()) if v.numel() > 1 else 0.0
                out.update({f"{split}/{k}/{s}": float(x) for s, x in zip(self.labels, v, strict=False)})
                for row, x in zip(table, v, strict=False):
                    row[f"{split}/{k}"] = float(x)
        hist = get_history(self)
        for key in ("test/loss", "test/acc"):
            for suffix in ["_std", *[f"/{s}" for s in self.labels]]:
                if hist.last(key + suffix) is not None:
                    out[key + suffix] = hist.last(key + suffix)
            for row, lab in zip(table, self.labels, strict=False):
                if hist.last(f"{key}/{lab}") is not None:
                    row[key] = hist.last(f"{key}/{lab}")
        out["members"] = table
        if self.curve_x is not None:
            out.update(self._curve_summary(table))
        return out

    def _curve_summary(self, table: list[dict]) -> dict[str, Any]:
        err = "test/acc" if any("test/acc" in r for r in table) else "val/acc"
        xs = sorted({r["settings"][self.curve_x] for r in table})

        def mean_at(x, key):
            vals = [1.0 - r[key] for r in table if r["settings"][self.curve_x] == x and key in r]
            return sum(vals) / len(vals) if vals else float("nan")

        params = {x: next(r["params"] for r in table if r["settings"][self.curve_x] == x) for x in xs}
        d = describe_double_descent(xs, [mean_at(x, "train/acc") for x in xs], [mean_at(x, err) for x in xs])
        out = {f"double_descent/{k}": v for k, v in d.items()}
        out["double_descent/x"] = self.curve_x
        out["double_descent/test_split"] = err.split("/")[0]
        for k in ("threshold_x", "peak_x", "first_min_x"):
            if d.get(k) is not None:
                out[f"double_descent/{k.replace('_x', '_params')}"] = params[d[k]]
        return out
