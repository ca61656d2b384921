"""Probes for the Lightning conformance tests: a tiny generated data set, a recording logger, hook counters,
and ``fit``, which trains a whylearn ClassificationTask with a given steps_per_chunk and Lightning features.

Imported by tests/tasks/test_lightning_conformance.py and run as a script (``python tests/tasks/lightning_probe.py
<out_dir>``) for the 2-process DDP (gloo) case, which Lightning starts by launching this script again.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from whylearn.data.base import InMemoryDataModule, Split  # noqa: E402
from whylearn.models import MLP  # noqa: E402
from whylearn.tasks import ClassificationTask  # noqa: E402

STEP_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")


class Blobs(InMemoryDataModule):
    """Three Gaussian classes in 8 dimensions: 300 samples (60 of them validation), 100 test, seeded."""

    num_classes = 3
    name = "blobs"

    def __init__(self, n: int = 300, **kwargs: Any) -> None:
        kwargs.setdefault("val_size", 60)
        super().__init__(**kwargs)
        self.n = n

    def load_splits(self) -> dict[str, Split]:
        g = torch.Generator().manual_seed(1234)
        centers = 2.0 * torch.randn(3, 8, generator=g)

        def draw(m: int) -> Split:
            y = torch.randint(0, 3, (m,), generator=g)
            return Split(centers[y] + torch.randn(m, 8, generator=g), y)

        return {"train": draw(self.n), "test": draw(100)}


class Recorder(Logger):
    """Keeps every row written to it: ``rows`` is a list of ``(step, {key: value})``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((int(step), {k: float(v) for k, v in metrics.items()}))

    def triples(self, skip: tuple[str, ...] = ()) -> list[tuple[int, str, float]]:
        """Sorted (step, key, value) of every row: independent of how rows were merged."""
        return sorted((s, k, v) for s, m in self.rows for k, v in m.items() if k not in skip)


class StepHookCounter(Callback):
    """Counts the per-step optimization hooks, with the step (trainer.global_step) at each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def _record(self, name: str, trainer: L.Trainer) -> None:
        self.calls.append((name, trainer.global_step))

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        self._record("on_before_zero_grad", trainer)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._record("on_before_backward", trainer)

    def on_after_backward(self, trainer, pl_module) -> None:
        self._record("on_after_backward", trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._record("on_before_optimizer_step", trainer)

    def counts(self) -> Counter:
        return Counter(name for name, _ in self.calls)


class BatchCounter(Callback):
    """A user callback with per-batch hooks (no whylearn declaration): records (hook, step, batch_idx, batch size)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.calls.append(("start", trainer.global_step, batch_idx, int(batch[1].shape[-1])))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.calls.append(("end", trainer.global_step, batch_idx, int(batch[1].shape[-1])))


class DeclaredBatchCounter(BatchCounter):
    """The same, declared safe to call at every optimizer step inside a chunk."""

    whylearn_batch_hooks = "per_step"


class ModuleHookTask(ClassificationTask):
    """A ClassificationTask whose own per-step hooks count their calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module_calls: Counter = Counter()

    def on_before_zero_grad(self, optimizer) -> None:
        self.module_calls["on_before_zero_grad"] += 1

    def on_before_backward(self, loss) -> None:
        self.module_calls["on_before_backward"] += 1

    def on_after_backward(self) -> None:
        self.module_calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, optimizer) -> None:
        self.module_calls["on_before_optimizer_step"] += 1


def make_task(task_cls: type = ClassificationTask, lr: float = 0.05, scheduler: Any = None,
              dropout: float = 0.1, **kwargs: Any) -> ClassificationTask:
    torch.manual_seed(7)
    model = MLP(8, 3, hidden=[16, 16], dropout=dropout)

    def optimizer(params):
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    kwargs.setdefault("log_every_n_steps", 1)
    return task_cls(model, 3, optimizer, scheduler=scheduler, **kwargs)


def fit(root: Path, k: int, callbacks: list | None = None, task: ClassificationTask | None = None,
        dm_kwargs: dict | None = None, **trainer_kwargs: Any) -> dict[str, Any]:
    """Train on Blobs with steps_per_chunk=k; return what the conformance tests compare."""
    torch.manual_seed(0)
    task = task if task is not None else make_task()
    dm = Blobs(**{"batch_size": 10, "steps_per_chunk": k, "seed": 3, **(dm_kwargs or {})})
    recorder = Recorder()
    trainer_kwargs.setdefault("max_epochs", 2)
    trainer_kwargs.setdefault("enable_checkpointing", any(type(c).__name__ == "ModelCheckpoint" for c in callbacks or []))
    trainer = L.Trainer(accelerator="cpu", devices=trainer_kwargs.pop("devices", 1), logger=[recorder],
                        callbacks=callbacks or [], enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=str(root), **trainer_kwargs)
    trainer.fit(task, datamodule=dm)
    return {"trainer": trainer, "task": task, "recorder": recorder, "steps": trainer.global_step,
            "params": {n: p.detach().clone() for n, p in task.named_parameters()}}


def same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


# -- the 2-process DDP case (run as a script) -----------------------------------------------------------
def ddp_main(out: Path) -> None:
    """Under 2-process CPU DDP (gloo): hook counts per optimizer step (callbacks and module) and fp16 mixed
    precision with a GradScaler. Each rank writes ``rank<r>.json`` into ``out``."""
    from lightning.pytorch.plugins import MixedPrecision

    torch.set_num_threads(1)
    result: dict[str, Any] = {}
    counter = StepHookCounter()
    task = make_task(ModuleHookTask)
    r = fit(out / "hooks", 4, callbacks=[counter], task=task, strategy="ddp", devices=2, dm_kwargs={"batch_size": 5})
    result["hooks"] = {"steps": r["steps"], "callback": dict(counter.counts()), "module": dict(task.module_calls),
                       "steps_at_calls": sorted({s for _, s in counter.calls})}
    plugin = MixedPrecision("16-mixed", "cpu")
    r = fit(out / "fp16", 4, task=make_task(dropout=0.0), strategy="ddp", devices=2, plugins=[plugin],
            dm_kwargs={"batch_size": 5})
    losses = [m["train/loss"] for _, m in r["recorder"].rows if "train/loss" in m]
    result["fp16"] = {"steps": r["steps"], "scale": float(plugin.scaler.get_scale()),
                      "losses_finite": all(math.isfinite(v) for v in losses), "n_losses": len(losses),
                      "params": {n: p.tolist() for n, p in r["params"].items()}}
    rank = r["trainer"].global_rank
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    ddp_main(Path(sys.argv[1]))
