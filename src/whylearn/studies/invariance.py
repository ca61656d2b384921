"""Build the invariance in, or blast it with data: Greydanus 2020's MNIST-1D benchmark, in one study.

Greydanus ("Scaling down deep learning", 2020; mnist1d README table and the
``mnist1d-classification`` notebook) trains logistic regression, an MLP, a CNN and a GRU on
MNIST-1D (4000 train / 1000 test, 40 positions) with Adam lr 1e-2, batch 100, 6000 steps, and again
with the 40 positions shuffled by one fixed permutation. Test accuracy: 32% / 68% / 94% / 91%,
shuffled 32% / 68% / 56% / 57%. The CNN's advantage is its built-in translation equivariance;
shuffling destroys the neighbourhoods it relies on, while the MLP (which never used them) does not
care. An MLP can instead be shown the invariance: translation augmentation, or more data.

:class:`InvarianceStudy` (a :class:`~whylearn.studies.base.SweepStudy`, the Study protocol; built from the
experiment's ``study:`` node, ``conf/study/invariance.yaml``) trains every *arm* (a model, shuffled or not, with or without
shifts or more data) as an ensemble of seeds (:class:`~whylearn.tasks.EnsembleClassificationTask`,
one vectorized model) through its own quiet Lightning Trainer, writes ``runs/<arm>/summary.json``,
logs each arm's numbers as one step, and draws the comparison figure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.data.shift import ShiftedMNIST1DDataModule  # noqa: E402
from whylearn.studies.base import SweepStudy  # noqa: E402
from whylearn.studies.common import call_with_facts, quiet_trainer, write_summary  # noqa: E402
from whylearn.tasks.ensemble import EnsembleClassificationTask  # noqa: E402

log = logging.getLogger("whylearn")

ARM_KEYS = ("model", "shuffle", "max_shift", "num_samples")


class InvarianceStudy(SweepStudy):
    """Train each arm as an ensemble of seeds on MNIST-1D; test accuracy mean and sd per arm.

    Args:
        models: name -> model factory (Hydra ``_partial_: true``), called with the data's
            ``input_size`` / ``input_shape`` / ``num_classes`` where its signature names them.
        arms: arm name -> ``{model: <name in models>, shuffle: bool (the generator's fixed
            permutation of positions), max_shift: int (translation augmentation, 0 = off),
            num_samples: int (train + test generated; default from ``data``)}``.
        optimizer: optimizer factory (Hydra ``_partial_: true``; the experiment puts an ``optimizer`` group option here).
        data: arguments of :class:`~whylearn.data.shift.ShiftedMNIST1DDataModule` shared by all arms.
        seeds: initialization seeds per arm (a count: base_seed .. base_seed + seeds - 1).
        base_seed: the first seed; also the data order's seed.
        max_steps: optimizer steps per arm.
        published: arm -> published test accuracy (drawn beside the measured bars).
        only: run just these arms (names of ``arms``); None runs all. New arms are added on the
            command line with ``+study.arms.<name>={model: mlp, max_shift: 5}``.

    Raises:
        ValueError: an arm naming an unknown model or key, no arms, an unknown name in ``only``,
            seeds < 1, max_steps < 1.
    """

    def __init__(self, models: Mapping[str, Callable[..., nn.Module]], arms: Mapping[str, Mapping[str, Any]],
                 optimizer: Callable[..., torch.optim.Optimizer], data: Mapping[str, Any] | None = None, seeds: int = 3,
                 base_seed: int = 0, max_steps: int = 6000, published: Mapping[str, float] | None = None,
                 only: list[str] | None = None) -> None:
        self.models, self.optimizer_factory = dict(models), optimizer
        self.arms = {str(k): dict(v) for k, v in arms.items()}
        if only is not None:
            missing = [a for a in only if a not in self.arms]
            if missing:
                raise ValueError(f"study.only names unknown arms {missing}; allowed: {sorted(self.arms)}")
            self.arms = {a: self.arms[a] for a in only}
        if not self.arms:
            raise ValueError("the study needs at least one arm")
        for name, arm in self.arms.items():
            unknown = set(arm) - set(ARM_KEYS)
            if unknown:
                raise ValueError(f"arm {name!r} has unknown keys {sorted(unknown)}; allowed: {list(ARM_KEYS)}")
            if arm.get("model") not in self.models:
                raise ValueError(f"arm {name!r} names model {arm.get('model')!r}; allowed: {sorted(self.models)}")
        if int(seeds) < 1 or int(max_steps) < 1:
            raise ValueError(f"seeds and max_steps must be >= 1, got seeds={seeds}, max_steps={max_steps}")
        self.data = dict(data or {})
        self.num_seeds, self.base_seed, self.max_steps = int(seeds), int(base_seed), int(max_steps)
        self.published = {str(k): float(v) for k, v in (published or {}).items()}
        self._datamodules: dict[str, ShiftedMNIST1DDataModule] = {}
        self._smoke = False

    def datamodule(self, arm: Mapping[str, Any]) -> ShiftedMNIST1DDataModule:
        """The arm's MNIST-1D: the shared ``data`` options, shuffled positions and shifts as the arm says.

        Arms that differ only in ``max_shift`` share one generated data set (generating MNIST-1D is
        the slow part: about 1 s per 1000 sequences); the shift generator restarts for every arm.
        """
        opts = dict(self.data)
        gen = dict(opts.pop("generator_args", {}) or {})
        if arm.get("shuffle"):
            gen["shuffle_seq"] = True
        if arm.get("num_samples") and not self._smoke:
            opts["num_samples"] = int(arm["num_samples"])
        opts.setdefault("seed", self.base_seed)
        key = repr((sorted(opts.items()), sorted(gen.items())))
        if key not in self._datamodules:
            dm = ShiftedMNIST1DDataModule(generator_args=gen, **opts)
            dm.setup()
            self._datamodules[key] = dm
        dm = self._datamodules[key]
        dm.max_shift = int(arm.get("max_shift") or 0)
        dm._shift_generators.clear()  # every arm's shifts start from the datamodule's seed
        return dm

    def train_arm(self, name: str, arm: Mapping[str, Any], root: Path) -> dict[str, Any]:
        """Train one arm's ensemble; return its row (per-seed and mean/sd train and test accuracy)."""
        dm = self.datamodule(arm)
        shape = list(dm.input_shape)
        net = call_with_facts(self.models[arm["model"]], input_size=int(np.prod(shape)), input_shape=shape,
                              num_classes=dm.num_classes)
        task = EnsembleClassificationTask(net, dm.num_classes, self.optimizer_factory, seeds=self.num_seeds,
                                          base_seed=self.base_seed, log_every_n_steps=10**9)
        trainer = quiet_trainer(self.max_steps, root / "runs" / name, device=self.device)
        t0 = time.perf_counter()
        trainer.fit(task, datamodule=dm)
        fit_time = time.perf_counter() - t0
        dev = task.device
        test = task.evaluate_members(dm.test.x.to(dev), dm.test.y.to(dev))
        train = task.evaluate_members(dm.train.x.to(dev), dm.train.y.to(dev))
        row: dict[str, Any] = {
            "arm": name, "model": arm["model"], "shuffle": bool(arm.get("shuffle", False)),
            "max_shift": int(arm.get("max_shift") or 0), "train_size": len(dm.train), "test_size": len(dm.test),
            "params": sum(p.numel() for p in net.parameters()), "steps": int(trainer.global_step),
            "seeds": list(task.seeds), "fit_time_s": round(fit_time, 2),
        }
        for split, m in (("train", train), ("test", test)):
            for key in ("acc", "loss"):
                v = m[key].double().cpu()
                row[f"{split}/{key}"] = float(v.mean())
                row[f"{split}/{key}_std"] = float(v.std()) if v.numel() > 1 else 0.0
                row[f"{split}/{key}/per_seed"] = [float(x) for x in v]
        if name in self.published:
            row["published_test_acc"] = self.published[name]
        write_summary(root / "runs" / name / "summary.json", row)
        return row

    def run_sweep(self) -> dict[str, Any]:
        root = self.out_dir
        if self.smoke:
            log.info("fast_dev_run: every arm for 2 steps with 1 seed and the default data size (a smoke test; "
                     "its numbers mean nothing)")
            self.max_steps, self.num_seeds, self._smoke = 2, 1, True
        rows = []
        self.announce(len(self.arms), "invariance: arms")
        for name, arm in self.arms.items():
            row = self.train_arm(name, arm, root)
            rows.append(row)
            log.info("%-18s test acc %.3f +- %.3f (train %.3f; %d seeds, %d steps, %.1f s)%s", name, row["test/acc"],
                     row["test/acc_std"], row["train/acc"], len(row["seeds"]), row["steps"], row["fit_time_s"],
                     f"; published {self.published[name]:.2f}" if name in self.published else "")
            self.point_done({f"{name}/test/acc": row["test/acc"], f"{name}/test/acc_std": row["test/acc_std"],
                             f"{name}/train/acc": row["train/acc"]})
        result: dict[str, Any] = {"rows": rows, "seeds": rows[0]["seeds"], "max_steps": self.max_steps}
        for r in rows:
            for key in ("test/acc", "test/acc_std", "train/acc", "train/acc_std", "test/loss"):
                result[f"{r['arm']}/{key}"] = r[key]
        acc = {r["arm"]: r["test/acc"] for r in rows}
        # what shuffling costs each model, and how much of the MLP-to-CNN gap the MLP's helpers close
        for m in ("logistic", "mlp", "cnn"):
            if m in acc and f"{m}_shuffled" in acc:
                result[f"{m}/shuffle_drop"] = acc[m] - acc[f"{m}_shuffled"]
        if "mlp" in acc and "cnn" in acc and acc["cnn"] > acc["mlp"]:
            for name in acc:
                if name.startswith("mlp_") and name != "mlp_shuffled":
                    result[f"{name}/gap_closed"] = (acc[name] - acc["mlp"]) / (acc["cnn"] - acc["mlp"])
        return result

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        rows = {r["arm"]: r for r in result["rows"]}
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        xs, labels = [], []
        labelled: set[str] = set()
        x = 0.0
        for m in ("logistic", "mlp", "cnn"):
            for suffix, hatch, color in (("", None, "tab:blue"), ("_shuffled", "//", "tab:orange")):
                arm = m + suffix
                if arm not in rows:
                    continue
                r = rows[arm]
                label = "original positions" if not suffix else "positions shuffled"
                ax.bar(x, r["test/acc"], 0.8, yerr=r["test/acc_std"], color=color, hatch=hatch, alpha=0.85,
                       capsize=3, label=None if label in labelled else label)
                labelled.add(label)
                if arm in self.published:
                    ax.plot([x - 0.4, x + 0.4], [self.published[arm]] * 2, "k-", lw=2,
                            label=None if "published" in labelled else "Greydanus 2020")
                    labelled.add("published")
                xs.append(x)
                labels.append(f"{m}\n{'shuffled' if suffix else ''}")
                x += 1.0
            x += 0.5
        for arm, r in rows.items():
            if arm.startswith("mlp_") and arm != "mlp_shuffled":
                ax.bar(x, r["test/acc"], 0.8, yerr=r["test/acc_std"], color="tab:green", alpha=0.85, capsize=3)
                xs.append(x)
                desc = f"shift\n±{r['max_shift']}" if r["max_shift"] else f"{r['train_size'] // 1000}k\ntrain"
                labels.append(f"mlp\n{desc}")
                x += 1.0
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"test accuracy ({len(result['seeds'])} seeds, mean and sd)")
        ax.set_title("MNIST-1D: build the invariance in (CNN), shuffle it away, or teach it (shifts, more data)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        save_figure(fig, figures / "invariance_mnist1d.png")
