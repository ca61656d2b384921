"""Adversarial training: classification whose training batches are perturbed by an attack first.

Goodfellow, Shlens & Szegedy 2015 (Sec. 6, Eq. (3)) train on a mixture of clean and fast-gradient-sign
examples, ``J~ = alpha J(x, y) + (1 - alpha) J(x + epsilon sign(grad_x J), y)`` with alpha = 0.5;
Madry et al. 2018 (Sec. 3, Eq. (2.1)) minimize the loss at the worst perturbation PGD finds inside the
budget (alpha = 0 here, ``attack=pgd``). :class:`AdversarialTrainingTask` is
:class:`~whylearn.tasks.ClassificationTask` with :meth:`step_loss` replaced by that objective; the
attacks are :mod:`whylearn.analysis.adversarial`'s. ``attack=none`` is plain (natural) training.

The attack is computed with the model in eval mode (dropout off, BatchNorm on its running statistics,
the network an attacker faces at test time) and without touching the parameters' gradients; the
optimizer step then uses the gradient of the objective above, in training mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from whylearn.analysis.adversarial import fgsm, pgd
from whylearn.analysis.hessian import eval_mode
from whylearn.tasks.classification import ClassificationTask, classification_loss

TRAINING_ATTACKS = ("none", "fgsm", "pgd")


class AdversarialTrainingTask(ClassificationTask):
    """Train on adversarially perturbed batches (see the module docstring).

    Args:
        model, num_classes, optimizer, loss, scheduler, scheduler_interval, log_every_n_steps,
            gradient_clip_val: as for :class:`~whylearn.tasks.ClassificationTask`.
        attack: ``none`` (natural training), ``fgsm`` (Goodfellow et al.) or ``pgd`` (Madry et al.).
        epsilon: L-infinity budget in input units (MNIST in [0, 1]: Goodfellow 0.25, Madry 0.3).
        step_size: PGD step alpha at the full budget, input units (None: 2.5 epsilon / steps); scaled
            with the budget during the warm-up.
        steps: PGD steps per training batch (Madry et al. train with 40; CPU runs use fewer).
        random_start: PGD from a uniformly random point of the budget (Madry et al.).
        clean_weight: alpha, the weight of the clean loss (Goodfellow et al.: 0.5; Madry et al.: 0).
        epsilon_warmup_steps: ramp the training budget linearly from 0 to ``epsilon`` over this many
            optimizer steps (0: the full budget from the first step, as both papers do; short CPU runs
            of PGD training at epsilon 0.3 from the first step can get stuck predicting one class).
        bounds: the valid input range ``[low, high]`` (MNIST with ``normalize=false``: [0, 1]) or None.

    Logged besides ClassificationTask's scalars: ``train/adv_loss`` and ``train/adv_acc`` (on the
    perturbed batch) and ``train/epsilon`` (the budget of that step); ``train/acc`` stays the accuracy
    on the clean batch.

    Raises:
        ValueError: an unknown attack, a negative epsilon or warm-up, steps < 1 or clean_weight outside [0, 1].
    """

    def __init__(self, model: nn.Module, num_classes: int, optimizer: Callable[..., torch.optim.Optimizer],
                 attack: str = "pgd", epsilon: float = 0.3, step_size: float | None = None, steps: int = 7,
                 random_start: bool = True, clean_weight: float = 0.0, epsilon_warmup_steps: int = 0,
                 bounds: Sequence[float] | None = (0.0, 1.0),
                 loss: str = "cross_entropy", scheduler: Callable[..., Any] | None = None,
                 scheduler_interval: str = "step", log_every_n_steps: int = 50,
                 gradient_clip_val: float | None = None) -> None:
        super().__init__(model, num_classes, optimizer, loss, scheduler, scheduler_interval, log_every_n_steps,
                         gradient_clip_val)
        if attack not in TRAINING_ATTACKS:
            raise ValueError(f"unknown training attack {attack!r}; allowed: {list(TRAINING_ATTACKS)}")
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0 (an L-infinity radius in input units), got {epsilon}")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not 0.0 <= clean_weight <= 1.0:
            raise ValueError(f"clean_weight (alpha) must be in [0, 1], got {clean_weight}")
        if int(epsilon_warmup_steps) < 0:
            raise ValueError(f"epsilon_warmup_steps must be >= 0, got {epsilon_warmup_steps}")
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ValueError(f"bounds must be [low, high] with low < high, or null, got {bounds}")
        self.attack, self.epsilon, self.step_size = attack, float(epsilon), step_size
        self.steps, self.random_start, self.clean_weight = int(steps), bool(random_start), float(clean_weight)
        self.epsilon_warmup_steps = int(epsilon_warmup_steps)
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))

    def current_epsilon(self) -> float:
        """The training budget at this optimizer step: epsilon * min(1, (step + 1) / epsilon_warmup_steps)."""
        if self.epsilon_warmup_steps == 0:
            return self.epsilon
        step = self.trainer.global_step if self._trainer is not None else 0
        return self.epsilon * min(1.0, (step + 1) / self.epsilon_warmup_steps)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The adversarial version of a training batch x (B, ...) with labels y (B,), computed in eval mode."""
        loss_fn, eps = self._attack_loss, self.current_epsilon()
        step_size = None if self.step_size is None else self.step_size * eps / self.epsilon
        with eval_mode(self.model):
            if self.attack == "fgsm":
                return fgsm(self.model, x, y, eps, bounds=self.bounds, loss_fn=loss_fn)
            return pgd(self.model, x, y, eps, step_size=step_size, steps=self.steps,
                       random_start=self.random_start, bounds=self.bounds, loss_fn=loss_fn)

    def _attack_loss(self, logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        return classification_loss(self.loss_name, logits, y, reduction=reduction)

    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        if self.attack == "none" or self.epsilon == 0:
            return super().step_loss(x, y)
        eps = self.current_epsilon()
        x_adv = self.perturb(x, y)
        adv_logits = self.model(x_adv)
        adv_loss = classification_loss(self.loss_name, adv_logits, y)
        if self.clean_weight > 0:
            logits = self.model(x)
            loss = self.clean_weight * classification_loss(self.loss_name, logits, y) + (1 - self.clean_weight) * adv_loss
        else:
            with torch.no_grad():
                logits = self.model(x)
            loss = adv_loss
        return loss, (logits.detach(), y, adv_logits.detach(), adv_loss.detach(), eps)

    def step_scalars(self, kept: Any) -> dict[str, Any]:
        out = super().step_scalars(kept[:2])
        if len(kept) == 5:
            _, y, adv_logits, adv_loss, eps = kept
            out.update({"train/adv_loss": adv_loss, "train/adv_acc": (adv_logits.argmax(-1) == y).float().mean(),
                        "train/epsilon": eps})
        return out
