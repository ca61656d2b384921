"""Catastrophic forgetting, as a study: every method (plain SGD, EWC, L2, a rehearsal buffer) x seed through
a sequence of tasks, the accuracy on every task measured along the way (Kirkpatrick et al. 2017, Fig. 2A).

The science of the methods (the EWC penalty, Eq. 3; the replay mini-batch) is the LightningModule
:class:`whylearn.tasks.continual.ContinualClassificationTask`, trained on one task after the other, each
through a fresh quiet Trainer. :class:`ForgettingStudy` is a :class:`~whylearn.studies.base.SweepStudy` (the
Study protocol): ``whylearn-train experiment=forgetting_permuted_mnist`` builds it from ``study:``
(``conf/study/forgetting.yaml``); no Lightning fit around it.
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
from torch import Tensor, nn  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.data.continual import ContinualTask, TaskSplitsDataModule, permuted_tasks, split_tasks  # noqa: E402
from whylearn.studies.base import SweepStudy  # noqa: E402
from whylearn.studies.common import call_with_facts, quiet_trainer, write_summary  # noqa: E402
from whylearn.tasks.continual import BENCHMARKS, METHOD_KEYS, SCENARIOS, ContinualClassificationTask  # noqa: E402

log = logging.getLogger("whylearn")


class ForgettingStudy(SweepStudy):
    """Every method through the same task sequence, for each seed; the accuracy on every task along the way.

    Args:
        source: the datamodule whose train/test splits the tasks are cut from (set up here).
        network: model factory (Hydra ``_partial_: true``) called with the data's sizes.
        optimizer: optimizer factory (Hydra ``_partial_: true``; the experiment puts an ``optimizer`` group option here).
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
                 fisher_samples: int = 1000, permutation_seed: int = 0) -> None:
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
            quiet_trainer(self.steps_per_task, root, device=self.device).fit(task, datamodule=dm)
            matrix.append(task.task_accuracies(tasks))
            task.consolidate(t, self.fisher_samples, int(opts.get("buffer_per_task", 0)), seed)
        out = {"method": method, "seed": seed, "options": opts, "tasks": [t.name for t in tasks], "acc_matrix": matrix,
               "curve_steps": [s for s, _ in task.curve], "curve_acc": [a for _, a in task.curve],
               "fit_time_s": round(time.perf_counter() - t0, 2)}
        write_summary(root / "runs" / f"{method}_seed{seed}" / "summary.json", out)
        return out

    def run_sweep(self) -> dict[str, Any]:
        root = self.out_dir
        if self.smoke:
            log.info("fast_dev_run: every method for 2 steps per task with 1 seed (a smoke test; its numbers mean nothing)")
            self.steps_per_task, self.eval_every, self.seeds, self.fisher_samples = 2, 1, self.seeds[:1], 10
        tasks = self.tasks()
        T = len(tasks)
        runs = {m: [] for m in self.methods}
        self.announce(len(self.methods) * len(self.seeds), "forgetting: methods x seeds")
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
