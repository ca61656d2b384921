"""Classification with an explicit gradient-norm penalty: SGD's implicit regularizer made explicit.

Backward error analysis of gradient descent with step size eps (Barrett & Dherin 2021, "Implicit
gradient regularization", Eq. 1-2) shows that it follows, to first order in eps, the gradient flow of a
*modified* loss L + (eps / 4) ||grad L||^2. For SGD with m mini-batches per epoch (random shuffling,
batch losses L_k) Smith et al. 2021 ("On the origin of implicit regularization in stochastic gradient
descent", Sec. 2, Eq. 2-4) find, averaged over an epoch,

    L_SGD(w) = L(w) + (eps / (4 m)) sum_k ||grad L_k(w)||^2
             = L(w) + (eps / 4) ||grad L(w)||^2 + (eps / (4 m)) sum_k ||grad L_k(w) - grad L(w)||^2,

so SGD penalizes the mini-batch gradients' norms more strongly than full-batch gradient descent at the
same learning rate (the last term). Geiping et al. 2022 ("Stochastic training is not necessary for
generalization", Sec. 3) add the mini-batch term to full-batch training explicitly and close most of the
gap to SGD on CIFAR-10. :class:`GradientPenaltyTask` trains on

    L(w) + (lambda / 4) (1 / m) sum_k ||grad L_k(w)||^2

with the training batch split into m disjoint, fixed sub-batches of ``penalty_batch_size`` samples (the
last may be smaller), ``lambda`` = ``grad_penalty``; the gradient of the penalty is taken through the
gradients (double backward). ``grad_penalty = lr`` is Smith et al.'s coefficient; the penalty then adds
the whole mini-batch term once more on top of full-batch GD's own (eps/4)||grad L||^2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from whylearn.tasks.classification import ClassificationTask, classification_loss

METHODS = ("auto", "vmap", "loop")


def _has_batch_statistics(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def subbatch_gradient_penalty(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                              sub_batch: int, method: str = "auto") -> Tensor:
    """(1 / m) sum_k ||grad_w L_k(w)||^2 over the m disjoint sub-batches of (x, y) in order.

    Args:
        model: the network; its trainable parameters are w.
        loss_fn: mean loss ``loss_fn(outputs, y)`` of a sub-batch (L_k).
        x, y: the batch, (N, ...) and (N,).
        sub_batch: samples per sub-batch (the last, N mod sub_batch, is its own smaller sub-batch).
        method: ``vmap`` (the first m' = N // sub_batch sub-batches in one batched forward over copies of the
            parameters, their per-sub-batch gradients by one backward; the remainder separately), ``loop``
            (one sub-batch at a time; any module, e.g. with BatchNorm) or ``auto`` (vmap unless the model has
            BatchNorm layers). Both give the same value (tests/tasks/test_implicit_regularization.py).

    Returns:
        a scalar tensor that keeps the graph (``create_graph``): its gradient is the penalty's,
        (2 / m) sum_k H_k grad L_k.

    Raises:
        ValueError: sub_batch < 1, an empty batch or an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown penalty method {method!r}; allowed: {list(METHODS)}")
    n = x.shape[0]
    if sub_batch < 1 or n < 1:
        raise ValueError(f"need sub_batch >= 1 and a non-empty batch, got sub_batch={sub_batch}, batch of {n}")
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    full, rest = divmod(n, sub_batch)
    if method == "auto":
        method = "loop" if _has_batch_statistics(model) or full < 2 else "vmap"
    total = x.new_zeros(())
    starts = []
    if method == "vmap" and full >= 1:
        # every sub-batch gets its own view of the parameters (an expanded copy, no memory): one backward
        # of the summed sub-batch losses gives each sub-batch's gradient in its slice
        expanded = {k: p.unsqueeze(0).expand(full, *p.shape) for k, p in named}
        buffers = dict(model.named_buffers())

        def loss_k(p, xb, yb):
            return loss_fn(functional_call(model, (p, buffers), (xb,)), yb)

        xs = x[: full * sub_batch].reshape(full, sub_batch, *x.shape[1:])
        ys = y[: full * sub_batch].reshape(full, sub_batch, *y.shape[1:])
        losses = vmap(loss_k)(expanded, xs, ys)
        grads = torch.autograd.grad(losses.sum(), list(expanded.values()), create_graph=True)
        total = total + sum(g.pow(2).sum() for g in grads)
        starts = [full * sub_batch] if rest else []
    else:
        starts = list(range(0, n, sub_batch))
    for s in starts:
        gk = torch.autograd.grad(loss_fn(model(x[s : s + sub_batch]), y[s : s + sub_batch]), params, create_graph=True)
        total = total + sum(g.pow(2).sum() for g in gk)
    return total / (full + (1 if rest else 0))


class GradientPenaltyTask(ClassificationTask):
    """:class:`~whylearn.tasks.ClassificationTask` on L + (lambda / 4) (1/m) sum_k ||grad L_k||^2.

    Args:
        grad_penalty: lambda (0 turns the penalty off: plain classification). Smith et al. 2021 (Eq. 4):
            lambda = the learning rate eps for SGD's implicit regularizer.
        penalty_batch_size: samples per sub-batch k (null: the whole training batch, m = 1, which is
            full-batch GD's own implicit regularizer made explicit, Barrett & Dherin 2021).
        penalty_method: ``auto`` | ``vmap`` | ``loop`` (see :func:`subbatch_gradient_penalty`).
        model, num_classes, optimizer, loss, scheduler, scheduler_interval, log_every_n_steps,
        gradient_clip_val, gradient_clip_algorithm, compile: as :class:`~whylearn.tasks.ClassificationTask`.

    Logs, besides the classification scalars (``train/loss`` is the objective the optimizer descends,
    penalty included), ``train/grad_penalty`` = (1/m) sum_k ||grad L_k||^2 of the step (before the
    lambda / 4 factor) and ``train/loss_unpenalized`` = L every ``log_every_n_steps`` steps. Runs with and
    without the penalty compare on the plain loss through ``train_eval/loss`` (the generalization-gap
    callback: the whole training set in eval mode).

    Raises:
        ValueError: grad_penalty < 0, penalty_batch_size < 1, or an unknown penalty_method.
    """

    def __init__(self, model: nn.Module, num_classes: int, optimizer, grad_penalty: float = 0.0,
                 penalty_batch_size: int | None = None, penalty_method: str = "auto", loss: str = "cross_entropy",
                 scheduler=None, scheduler_interval: str = "step", log_every_n_steps: int = 50,
                 gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm",
                 compile: bool | str = False) -> None:
        super().__init__(model, num_classes, optimizer, loss=loss, scheduler=scheduler,
                         scheduler_interval=scheduler_interval, log_every_n_steps=log_every_n_steps,
                         gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm,
                         compile=compile)
        if grad_penalty < 0:
            raise ValueError(f"grad_penalty (lambda) must be >= 0, got {grad_penalty}")
        if penalty_batch_size is not None and int(penalty_batch_size) < 1:
            raise ValueError(f"penalty_batch_size must be >= 1 or null (the whole batch), got {penalty_batch_size}")
        if penalty_method not in METHODS:
            raise ValueError(f"unknown penalty_method {penalty_method!r}; allowed: {list(METHODS)}")
        self.grad_penalty = float(grad_penalty)
        self.penalty_batch_size = None if penalty_batch_size is None else int(penalty_batch_size)
        self.penalty_method = penalty_method

    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        logits = self.model(x)
        loss = classification_loss(self.loss_name, logits, y)
        if self.grad_penalty == 0:
            return loss, (logits.detach(), y, None)
        b = self.penalty_batch_size or x.shape[0]
        pen = subbatch_gradient_penalty(self.model, lambda out, t: classification_loss(self.loss_name, out, t), x, y, b,
                                        self.penalty_method)
        return loss + self.grad_penalty / 4 * pen, (logits.detach(), y, (loss.detach(), pen.detach()))

    def step_scalars(self, kept: Any) -> dict[str, Any]:
        logits, y, extra = kept
        out = {"train/acc": (logits.argmax(-1) == y).float().mean()}
        if extra is not None:
            out["train/grad_penalty"] = extra[1]
            out["train/loss_unpenalized"] = extra[0]
        return out

    def on_chunk_end(self, kept: list[Any]) -> None:
        super().on_chunk_end([(k[0], k[1]) for k in kept])
