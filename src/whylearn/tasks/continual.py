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
- :class:`ForgettingStudyTask`: the study: every method x seed through the task sequence, the
  accuracy on every task measured along the way, the figure of Kirkpatrick et al.'s Fig. 2A.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from whylearn.analysis.fisher import fisher_diagonal, masked_logits  # noqa: E402
from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.data.continual import ContinualTask, TaskSplitsDataModule, permuted_tasks, split_tasks  # noqa: E402
from whylearn.tasks.base import FastTask  # noqa: E402
from whylearn.tasks.classic import SweepTask  # noqa: E402
from whylearn.tasks.studies import call_with_facts, is_smoke_test, quiet_trainer, write_summary  # noqa: E402

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


class ForgettingStudyTask(SweepTask):
    """Every method through the same task sequence, for each seed; the accuracy on every task along the way.

    Args:
        source: the datamodule whose train/test splits the tasks are cut from (set up here).
        network: model factory (Hydra ``_partial_: true``) called with the data's sizes.
        optimizer: optimizer factory (the run's ``optimizer`` group).
        methods: name -> options of :class:`ContinualClassificationTask` (``ewc_lambda``,
            ``l2_lambda``, ``replay_batch_size``) and ``buffer_per_task`` (examples stored per
            finished task); ``{}`` is plain sequential training.
        benchmark: ``permuted`` (``num_tasks`` permutations of the inputs) or ``split``
            (``classes_per_task`` classes per task).
        scenario: ``domain`` (permuted: one head, all classes), ``task`` (split: the task's
            classes only) or ``class`` (split: every class seen so far).
        seeds: a count (base_seed ..) or a list: the network's initialization and the data order.
        steps_per_task: optimizer steps on each task; batch_size: its mini-batch.
        eval_every: steps between two measurements of every task's test accuracy (the curves).
        eval_size: test samples per task for the curves (the final numbers use the whole test split).
        fisher_samples: training inputs per task for EWC's Fisher.
        permutation_seed: seeds the input permutations of the permuted benchmark.

    Raises:
        ValueError: unknown benchmark, scenario (or one that does not fit the benchmark), method
            keys; no methods.
    """

    def __init__(self, source, network: Callable[..., nn.Module], optimizer: Callable[..., torch.optim.Optimizer],
                 methods: Mapping[str, Mapping[str, Any]], benchmark: str = "permuted", scenario: str = "domain",
                 num_tasks: int = 3, classes_per_task: int = 2, seeds: int | Sequence[int] = 3, base_seed: int = 0,
                 steps_per_task: int = 1000, batch_size: int = 100, eval_every: int = 100, eval_size: int | None = 2000,
                 fisher_samples: int = 1000, permutation_seed: int = 0, model: nn.Module | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__(model)
        if benchmark not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {benchmark!r}; allowed: {list(BENCHMARKS)}")
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {list(SCENARIOS)}")
        if (benchmark == "permuted") != (scenario == "domain"):
            raise ValueError(f"scenario {scenario!r} does not fit benchmark {benchmark!r}: permuted tasks use "
                             f"'domain', split tasks 'task' or 'class'")
        if not methods:
            raise ValueError("the study needs at least one method (e.g. sgd: {})")
        for name, m in methods.items():
            unknown = set(m) - set(METHOD_KEYS)
            if unknown:
                raise ValueError(f"method {name!r} has unknown keys {sorted(unknown)}; allowed: {list(METHOD_KEYS)}")
        self.source, self.network, self.optimizer_factory = source, network, optimizer
        self.methods = {str(k): dict(v) for k, v in methods.items()}
        self.benchmark, self.scenario = benchmark, scenario
        self.num_tasks, self.classes_per_task = int(num_tasks), int(classes_per_task)
        self.seeds = (list(range(int(base_seed), int(base_seed) + int(seeds))) if isinstance(seeds, int)
                      else [int(s) for s in seeds])
        self.steps_per_task, self.batch_size = int(steps_per_task), int(batch_size)
        self.eval_every, self.eval_size = int(eval_every), (int(eval_size) if eval_size else None)
        self.fisher_samples, self.permutation_seed = int(fisher_samples), int(permutation_seed)

    def tasks(self) -> list[ContinualTask]:
        """The task sequence cut from ``source``."""
        src = self.source
        src.prepare_data()
        src.setup("fit")
        if self.benchmark == "permuted":
            return permuted_tasks(src.train, src.test, self.num_tasks, self.permutation_seed)
        return split_tasks(src.train, src.test, self.classes_per_task, src.num_classes)

    def allowed(self, tasks: Sequence[ContinualTask], num_classes: int) -> list[Tensor | None]:
        if self.scenario == "domain":
            return [None] * len(tasks)
        masks, seen = [], torch.zeros(num_classes, dtype=torch.bool)
        for t in tasks:
            own = torch.zeros(num_classes, dtype=torch.bool)
            own[t.classes] = True
            seen = seen | own
            masks.append(own if self.scenario == "task" else seen.clone())
        return masks

    def run_one(self, method: str, seed: int, tasks: list[ContinualTask], root: Path) -> dict[str, Any]:
        """Train one method with one seed through the sequence; return the accuracy matrix and curve."""
        opts = self.methods[method]
        num_classes = int(self.source.num_classes)
        shape = list(tasks[0].train.x.shape[1:])
        torch.manual_seed(seed)
        net = call_with_facts(self.network, input_size=int(np.prod(shape)), input_shape=shape, num_classes=num_classes)
        task = ContinualClassificationTask(net, num_classes, self.optimizer_factory, self.allowed(tasks, num_classes),
                                           ewc_lambda=opts.get("ewc_lambda", 0.0), l2_lambda=opts.get("l2_lambda", 0.0),
                                           replay_batch_size=opts.get("replay_batch_size", 0),
                                           own_heads=self.scenario == "task")
        task.eval_tasks, task.eval_size = tasks, self.eval_size
        matrix = []  # matrix[k][j]: accuracy on task j after training on task k
        t0 = time.perf_counter()
        for k, t in enumerate(tasks):
            dm = TaskSplitsDataModule(t, num_classes, batch_size=self.batch_size, steps_per_chunk=self.eval_every,
                                      seed=seed * 1000 + k)
            task.start_task(k, seed)
            task.step_offset = k * self.steps_per_task
            if k == 0:
                task.curve.append((0, task.task_accuracies(tasks, self.eval_size)))
            quiet_trainer(self.steps_per_task, self.device, root).fit(task, datamodule=dm)
            matrix.append(task.task_accuracies(tasks))
            task.consolidate(t, self.fisher_samples, int(opts.get("buffer_per_task", 0)), seed)
        out = {"method": method, "seed": seed, "options": opts, "tasks": [t.name for t in tasks], "acc_matrix": matrix,
               "curve_steps": [s for s, _ in task.curve], "curve_acc": [a for _, a in task.curve],
               "fit_time_s": round(time.perf_counter() - t0, 2)}
        write_summary(root / "runs" / f"{method}_seed{seed}" / "summary.json", out)
        return out

    def run_sweep(self) -> dict[str, Any]:
        root = Path(self.trainer.default_root_dir)
        if is_smoke_test(self.trainer):
            log.info("fast_dev_run: every method for 2 steps per task with 1 seed (a smoke test; its numbers mean nothing)")
            self.steps_per_task, self.eval_every, self.seeds, self.fisher_samples = 2, 1, self.seeds[:1], 10
        tasks = self.tasks()
        T = len(tasks)
        runs = {m: [] for m in self.methods}
        for m in self.methods:
            for s in self.seeds:
                r = self.run_one(m, s, tasks, root)
                runs[m].append(r)
                R = np.array(r["acc_matrix"])
                log.info("%-8s seed %d: task 1 %.3f after it, %.3f at the end; mean over tasks at the end %.3f (%.1f s)",
                         m, s, R[0, 0], R[-1, 0], R[-1].mean(), r["fit_time_s"])
                self.point_done({f"{m}/task1_final/seed{s}": float(R[-1, 0]), f"{m}/avg_final/seed{s}": float(R[-1].mean())})
        result: dict[str, Any] = {"benchmark": self.benchmark, "scenario": self.scenario, "tasks": [t.name for t in tasks],
                                  "seeds": self.seeds, "steps_per_task": self.steps_per_task, "methods": list(self.methods),
                                  "runs": {m: [{k: r[k] for k in ("seed", "acc_matrix")} for r in rs] for m, rs in runs.items()}}
        for m, rs in runs.items():
            Rs = np.array([r["acc_matrix"] for r in rs])  # (S, T, T)
            stats = {
                "task1_after_task1": Rs[:, 0, 0],
                "task1_final": Rs[:, -1, 0],
                "forgetting_task1": Rs[:, 0, 0] - Rs[:, -1, 0],
                "avg_final": Rs[:, -1, :].mean(1),  # mean accuracy over all tasks after the last one
                "avg_forgetting": (np.mean([Rs[:, j, j] - Rs[:, -1, j] for j in range(T - 1)], axis=0)
                                   if T > 1 else np.zeros(len(rs))),
                "last_task_final": Rs[:, -1, -1],
            }
            for key, v in stats.items():
                result[f"{m}/{key}"] = float(v.mean())
                result[f"{m}/{key}_std"] = float(v.std(ddof=1)) if v.size > 1 else 0.0
            for j in range(T):
                result[f"{m}/final/task{j + 1}"] = float(Rs[:, -1, j].mean())
            result[f"{m}/avg_seen_after"] = [float(Rs[:, k, :k + 1].mean()) for k in range(T)]
        self._runs = runs
        return result

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        runs, T = self._runs, len(result["tasks"])
        colors = dict(zip(self.methods, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
        fig, axes = plt.subplots(T + 1, 1, figsize=(7.0, 1.9 * (T + 1)), sharex=False)
        for j in range(T):
            ax = axes[j]
            for m, rs in runs.items():
                steps = np.array(rs[0]["curve_steps"])
                acc = np.array([[a[j] for a in r["curve_acc"]] for r in rs])  # (S, points)
                start = j * self.steps_per_task
                keep = steps > start  # from the first measurement after training on the task began
                mu, sd = acc.mean(0)[keep], acc.std(0)[keep]
                ax.plot(steps[keep], mu, color=colors[m], label=m)
                ax.fill_between(steps[keep], mu - sd, mu + sd, color=colors[m], alpha=0.2, lw=0)
            for k in range(1, T):
                ax.axvline(k * self.steps_per_task, color="gray", lw=0.8, ls=":")
            ax.set_xlim(0, T * self.steps_per_task)
            ax.set_ylim(top=1.0)
            ax.set_ylabel(f"task {j + 1}\n({result['tasks'][j]})", fontsize=8)
            if j == 0:
                ax.set_title(f"Test accuracy on each task along the sequence ({self.benchmark} tasks, "
                             f"{self.scenario}-incremental, {len(self.seeds)} seeds)", fontsize=9)
                ax.legend(fontsize=7, ncol=len(runs), loc="lower left")
        axes[T - 1].set_xlabel("training steps (task boundaries dotted)")
        ax = axes[T]
        for m in runs:
            ax.plot(range(1, T + 1), result[f"{m}/avg_seen_after"], "o-", color=colors[m], label=m)
        ax.set_xticks(range(1, T + 1))
        ax.set_xlabel("number of tasks trained")
        ax.set_ylabel("mean acc.\nover seen tasks", fontsize=8)
        save_figure(fig, figures / f"forgetting_{self.benchmark}.png")
