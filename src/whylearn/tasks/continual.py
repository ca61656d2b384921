"""Catastrophic forgetting, and two ways to keep what was learned: EWC and a small rehearsal buffer.

McCloskey & Cohen (1989) found that a network trained by backpropagation on a second set of
facts loses the first ("catastrophic interference"). Kirkpatrick et al. (2017, "Overcoming
catastrophic forgetting in neural networks", Fig. 2) show it on permuted MNIST: after training
on task B (and C) with plain SGD the accuracy on task A falls, while elastic weight consolidation
(EWC) keeps it: the loss on task B gets a quadratic penalty

    L(theta) = L_B(theta) + sum_i lambda / 2 * F_i (theta_i - theta*_A,i)^2        (their Eq. 3)

with F the diagonal Fisher information at task A's solution theta*_A (one such term per earlier
task). Their L2 baseline uses F_i = 1. Rehearsal (experience replay; Ratcliff 1990, Robins 1995;
Chaudhry et al. 2019, "On tiny episodic memories in continual learning") keeps a few stored
examples of each earlier task and trains on a mini-batch of them beside every new mini-batch.

- :class:`ContinualClassificationTask`: the LightningModule trained on one task after the other
  (a fresh quiet Trainer per task), with the EWC / L2 penalty and the replay mini-batch;
  :meth:`~ContinualClassificationTask.consolidate` closes a task (Fisher, anchor, buffer).
- the study (every method x seed through the task sequence, the accuracy on every task measured along
  the way, the figure of Kirkpatrick et al.'s Fig. 2A): :class:`whylearn.studies.forgetting.ForgettingStudy`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whylearn.analysis.fisher import fisher_diagonal, masked_logits
from whylearn.data.continual import ContinualTask
from whylearn.tasks.base import FastTask

log = logging.getLogger("whylearn")

BENCHMARKS = ("permuted", "split")
SCENARIOS = ("domain", "task", "class")
METHOD_KEYS = ("ewc_lambda", "l2_lambda", "buffer_per_task", "replay_batch_size")


class ContinualClassificationTask(FastTask):
    """Cross-entropy on the current task, plus the consolidation penalty and the replay mini-batch.

    Args:
        model: the network, inputs (B, ...) -> logits (B, C).
        num_classes: C.
        optimizer: optimizer factory; a fresh optimizer is made for every task (each task is its own fit).
        allowed: per task index, the classes the network may answer with (bool (C,)), or None for all
            (task- and class-incremental heads; None everywhere for permuted tasks).
        own_heads: True (task-incremental): every sample, replayed or evaluated, is answered with its
            own task's classes; False (class-incremental): with the classes of the task being trained
            (all classes seen so far).
        ewc_lambda: EWC's lambda (0: off).
        l2_lambda: the L2 baseline's lambda, F_i = 1 (0: off).
        replay_batch_size: stored examples replayed beside every mini-batch (0: off).
        log_every_n_steps: of ``train/loss`` in the task's history.

    Raises:
        ValueError: negative lambdas or replay batch size.
    """

    def __init__(self, model: nn.Module, num_classes: int, optimizer: Callable[..., torch.optim.Optimizer],
                 allowed: Sequence[Tensor | None] | None = None, ewc_lambda: float = 0.0, l2_lambda: float = 0.0,
                 replay_batch_size: int = 0, own_heads: bool = True, log_every_n_steps: int = 10**9) -> None:
        super().__init__(optimizer, log_every_n_steps=log_every_n_steps)
        if ewc_lambda < 0 or l2_lambda < 0 or replay_batch_size < 0:
            raise ValueError(f"ewc_lambda, l2_lambda and replay_batch_size must be >= 0, got {ewc_lambda}, "
                             f"{l2_lambda}, {replay_batch_size}")
        self.model, self.num_classes = model, int(num_classes)
        self.ewc_lambda, self.l2_lambda, self.replay_batch_size = float(ewc_lambda), float(l2_lambda), int(replay_batch_size)
        allowed = list(allowed or [None])
        self.allowed_table = torch.stack([torch.ones(self.num_classes, dtype=torch.bool) if a is None else a.bool()
                                          for a in allowed])  # (T, C)
        self.has_mask = any(a is not None for a in allowed)
        self.own_heads = bool(own_heads)
        self.current = 0
        self.anchors: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []  # (theta*, F) per finished task
        self.quadratic: dict[str, tuple[Tensor, Tensor]] = {}  # the merged penalty: name -> (weight, centre)
        self.buffer: tuple[Tensor, Tensor, Tensor] | None = None  # x, y, task index of the stored examples
        self.eval_tasks: list[ContinualTask] = []
        self.curve: list[tuple[int, list[float]]] = []  # (step in the whole sequence, accuracy per task)
        self.step_offset = 0
        self.eval_size: int | None = None
        self._replay_gen: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def allowed(self, task_index: int | Tensor) -> Tensor | None:
        """The answerable classes for samples of a task index (bool (C,)) or of a vector of them ((B, C));
        None: all. Without ``own_heads`` every sample gets the current task's classes."""
        if not self.has_mask:
            return None
        if not self.own_heads:
            task_index = self.current
        return self.allowed_table.to(self.device)[task_index]

    # -- the objective ---------------------------------------------------------------------------
    def penalty(self) -> Tensor:
        """sum over finished tasks k of sum_i lambda / 2 * F_k,i (theta_i - theta*_k,i)^2 (EWC; F = 1 for L2).

        The terms of all finished tasks are kept merged into one quadratic per parameter, weight
        w = sum_k lambda F_k and centre c = sum_k lambda F_k theta*_k / w, which has the same gradient
        and differs from the sum only by a constant; so a step costs the same whatever the number of tasks.
        """
        if not self.quadratic:
            return torch.zeros((), device=self.device)
        total = None
        for n, p in self.model.named_parameters():
            w, c = self.quadratic[n]
            term = 0.5 * (w * (p - c).pow(2)).sum()
            total = term if total is None else total + term
        return total

    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        logits = masked_logits(self.model(x), self.allowed(self.current))
        ce = F.cross_entropy(logits, y, reduction="sum")
        count = y.shape[0]
        if self.buffer is not None and self.replay_batch_size:
            bx, by, bt = self.buffer
            idx = torch.randint(0, by.shape[0], (self.replay_batch_size,), device=by.device, generator=self._replay_gen)
            replay = masked_logits(self.model(bx[idx]), self.allowed(bt[idx]))
            ce = ce + F.cross_entropy(replay, by[idx], reduction="sum")
            count += self.replay_batch_size
        return ce / count + self.penalty(), None

    # -- between tasks -------------------------------------------------------------------------------
    def start_task(self, index: int, seed: int) -> None:
        """Train on task ``index`` next (its head mask; the replay sampler seeded with ``seed``)."""
        self.current = int(index)
        # each task is a new fit on new data, not a resume: the previous task's last chunk, cut short by its
        # max_steps, leaves nothing to skip (FastTask would otherwise warn that the fit resumes inside a chunk)
        self._stopped_inside_chunk = False
        self._replay_gen = torch.Generator(device=self.device).manual_seed(int(seed) * 1000 + int(index))

    @torch.no_grad()
    def consolidate(self, task: ContinualTask, fisher_samples: int = 1000, buffer_per_task: int = 0,
                    seed: int = 0) -> None:
        """Close the current task: store theta* and its Fisher diagonal (if a penalty is on) and
        ``buffer_per_task`` random training examples (if replay is on)."""
        g = torch.Generator().manual_seed(int(seed) * 1000 + self.current)
        dev = self.device
        if self.ewc_lambda or self.l2_lambda:
            theta = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            if self.ewc_lambda:
                pick = torch.randperm(len(task.train), generator=g)[:fisher_samples]
                with torch.enable_grad():
                    fisher = fisher_diagonal(self.model, task.train.x[pick].to(dev), allowed=self.allowed(self.current),
                                             generator=torch.Generator(device=dev).manual_seed(int(seed)))
            else:
                fisher = {n: torch.zeros_like(p) for n, p in theta.items()}
            self.anchors.append((theta, fisher))
            for n, th in theta.items():
                w_new = self.ewc_lambda * fisher[n] + self.l2_lambda
                if n in self.quadratic:
                    w_old, c_old = self.quadratic[n]
                    w = w_old + w_new
                    c = torch.where(w > 0, (w_old * c_old + w_new * th) / w.clamp_min(1e-30), th)
                else:
                    w, c = w_new, th
                self.quadratic[n] = (w, c)
        if buffer_per_task:
            pick = torch.randperm(len(task.train), generator=g)[:buffer_per_task]
            x, y = task.train.x[pick].to(dev), task.train.y[pick].to(dev)
            t = torch.full_like(y, self.current)
            if self.buffer is None:
                self.buffer = (x, y, t)
            else:
                self.buffer = tuple(torch.cat([a, b]) for a, b in zip(self.buffer, (x, y, t), strict=True))

    # -- measurement ---------------------------------------------------------------------------------
    @torch.no_grad()
    def task_accuracies(self, tasks: Sequence[ContinualTask], limit: int | None = None) -> list[float]:
        """Test accuracy on each task (its first ``limit`` test samples), each with its own head mask."""
        was = self.model.training
        self.model.eval()
        accs = []
        for j, task in enumerate(tasks):
            x, y = task.test.x[:limit].to(self.device), task.test.y[:limit].to(self.device)
            pred = masked_logits(self.model(x), self.allowed(j)).argmax(-1)
            accs.append(float((pred == y).float().mean()))
        self.model.train(was)
        return accs

    def on_chunk_end(self, kept: list[Any]) -> None:
        if self.eval_tasks:
            accs = self.task_accuracies(self.eval_tasks, self.eval_size)
            self.curve.append((self.step_offset + self.trainer.global_step, accs))
