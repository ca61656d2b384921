"""Classification with a vectorized seed ensemble: S initialization seeds trained as one model.

``whylearn-train experiment=double_descent_mnist1d ensemble.seeds=8`` trains 8 copies of the
configured network, identical but for the seed of their initialization, on the same data in the
same order, in one vectorized model (:class:`~whylearn.models.ensemble.VmapEnsemble`). Member s
follows exactly the trajectory of ``whylearn-train seed=<s>`` with the data seed held fixed
(to float tolerance; tests/test_vision.py checks it).

Logged: for every metric of :class:`~whylearn.tasks.ClassificationTask` (``train/loss``,
``train/acc_epoch``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``) the mean over
members under the usual name, the standard deviation as ``<name>_std``, and each member's value
as ``<name>/seed<s>``. ``summary.json`` gets the same for the final train/val/test numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from whylearn.models.ensemble import VmapEnsemble
from whylearn.tasks.base import FastTask, SplitEval, get_history, log_scalars
from whylearn.tasks.classification import LOSSES, classification_loss


def member_losses(name: str, logits: Tensor, y: Tensor) -> Tensor:
    """Per-member, per-sample losses (S, B) of logits (S, B, C) against targets (B,)."""
    S, B, C = logits.shape
    return classification_loss(name, logits.reshape(S * B, C), y.repeat(S), reduction="none").view(S, B)


def resolve_seeds(seeds: int | Sequence[int], base_seed: int) -> list[int]:
    """``seeds`` as a count S (-> base_seed, ..., base_seed + S - 1) or an explicit list."""
    if isinstance(seeds, int) or (isinstance(seeds, str) and seeds.isdigit()):
        n = int(seeds)
        if n < 1:
            raise ValueError(f"ensemble.seeds must be >= 1 (a count) or a list of seeds, got {seeds}")
        return [int(base_seed) + i for i in range(n)]
    return [int(s) for s in seeds]


class EnsembleClassificationTask(SplitEval, FastTask):
    """Train S seeds of ``model`` at once; see the module docstring.

    Args:
        model: the template network; each member is it re-initialized with its seed.
        num_classes: C.
        optimizer: an element-wise optimizer factory (SGD, Adam, AdamW: each member's slice
            is then updated as if alone).
        seeds: a count S (seeds base_seed .. base_seed+S-1) or a list of seeds.
        base_seed: the first seed when ``seeds`` is a count (the run's ``seed``).
        loss, scheduler, scheduler_interval, log_every_n_steps: as for ClassificationTask.
        gradient_clip_val: not supported (a global norm would couple the members); nor is
            ``trainer.gradient_clip_val``.
        compile: see :class:`~whylearn.tasks.base.FastTask`.
        method: how the members are batched: ``auto``, ``grouped`` (MLP) or ``vmap``
            (see :class:`~whylearn.models.ensemble.VmapEnsemble`).

    Raises:
        ValueError: unknown loss, gradient clipping requested, bad seeds.
    """

    clips_gradients = False

    def __init__(self, model: nn.Module, num_classes: int, optimizer: Callable[..., torch.optim.Optimizer],
                 seeds: int | Sequence[int] = 8, base_seed: int = 0, loss: str = "cross_entropy",
                 scheduler: Callable[..., Any] | None = None, scheduler_interval: str = "step",
                 log_every_n_steps: int = 50, gradient_clip_val: float | None = None, method: str = "auto",
                 compile: bool | str = False) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, log_every_n_steps, None, compile=compile)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; allowed: {list(LOSSES)}")
        if gradient_clip_val is not None:
            raise ValueError("gradient clipping by global norm would couple the ensemble's members; "
                             "set task.gradient_clip_val=null for ensembles")
        self.seeds = resolve_seeds(seeds, base_seed)
        self.model = VmapEnsemble(model, self.seeds, method)
        self.num_classes, self.loss_name = int(num_classes), loss
        self._sums: dict[str, Tensor] = {}

    @property
    def num_members(self) -> int:
        return len(self.seeds)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # -- training ---------------------------------------------------------------------------
    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        logits = self.model(x)
        per_member = member_losses(self.loss_name, logits, y).mean(1)  # (S,)
        total, mean = per_member.sum(), per_member.mean()
        # gradient of the sum (each member gets its own gradient), value of the mean (what is logged)
        loss = total - total.detach() + mean.detach()
        return loss, (per_member.detach(), (logits.detach().argmax(-1) == y).sum(1), y.shape[0])

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
                    {f"train/loss/seed{s}": v for s, v in zip(self.seeds, losses.double().cpu().tolist(), strict=False)},
                    step=step,
                )

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self._train_count:
            self._log_vector("train/acc_epoch", self._train_correct.double() / self._train_count)

    # -- evaluation ----------------------------------------------------------------------------
    def _log_vector(self, name: str, values: Tensor, with_mean: bool = True) -> None:
        values = values.detach().double().cpu()
        metrics = {f"{name}/seed{s}": float(v) for s, v in zip(self.seeds, values, strict=False)}
        if with_mean:
            metrics[name] = float(values.mean())
            metrics[f"{name}_std"] = float(values.std()) if values.numel() > 1 else 0.0
        log_scalars(self, metrics)

    @torch.no_grad()
    def eval_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Eval-mode logits (S, B, C) and per-member, per-sample losses (S, B)."""
        logits = self.model(x)
        return logits, member_losses(self.loss_name, logits, y)

    @torch.no_grad()
    def evaluate_members(self, x: Tensor, y: Tensor, batch_size: int = 4096) -> dict[str, Tensor]:
        """Per-member loss and accuracy (S,) in eval mode on tensors x (N, ...), y (N,)."""
        was = self.model.training
        self.model.eval()
        loss = torch.zeros(self.num_members, dtype=torch.float64, device=x.device)
        correct = torch.zeros(self.num_members, dtype=torch.long, device=x.device)
        for i in range(0, x.shape[0], batch_size):
            logits, per = self.eval_batch(x[i: i + batch_size], y[i: i + batch_size])
            loss += per.double().sum(1)
            correct += (logits.argmax(-1) == y[i: i + batch_size]).sum(1)
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
        """Final per-member and mean/std train and val loss and accuracy, the gaps, and the test numbers."""
        bs = getattr(datamodule, "eval_batch_size", 4096)
        out: dict[str, Any] = {"ensemble/seeds": list(self.seeds), "ensemble/members": self.num_members}
        per = {"train": self.evaluate_members(datamodule.train.x, datamodule.train.y, bs),
               "val": self.evaluate_members(datamodule.val.x, datamodule.val.y, bs)}
        per["gap"] = {"loss": per["val"]["loss"] - per["train"]["loss"], "acc": per["train"]["acc"] - per["val"]["acc"]}
        for split, metrics in per.items():
            for k, v in metrics.items():
                v = v.double().cpu()
                out[f"{split}/{k}"] = float(v.mean())
                out[f"{split}/{k}_std"] = float(v.std()) if v.numel() > 1 else 0.0
                out.update({f"{split}/{k}/seed{s}": float(x) for s, x in zip(self.seeds, v, strict=False)})
        hist = get_history(self)
        for key in ("test/loss", "test/acc"):
            for suffix in ["_std", *[f"/seed{s}" for s in self.seeds]]:
                if hist.last(key + suffix) is not None:
                    out[key + suffix] = hist.last(key + suffix)
        return out
