"""Adversarial robustness at the end of training: accuracy under FGSM and PGD for a list of budgets."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.analysis import adversarial as A
from whylearn.callbacks.sharpness import add_summary, datamodule_split, network, run_dir
from whylearn.loggers import log_scalars


class RobustAccuracy(Callback):
    """When training ends, attack the model on the first ``num_examples`` test examples (eval mode).

    Args:
        epsilons: L-infinity budgets in input units (MNIST in [0, 1]: 0.1, 0.25, 0.3).
        attacks: any of ``fgsm`` (Goodfellow et al. 2015) and ``pgd`` (Madry et al. 2018).
        num_examples: test examples attacked (the first N of the test split).
        pgd_steps, pgd_step_size, pgd_restarts: the PGD evaluation attack (step None: 2.5 epsilon / steps).
        bounds: valid input range [low, high] or None (must match the data: [0, 1] needs ``normalize=false``).
        seed: seeds PGD's random starts.
        figure: draw ``figures/robustness.png`` (accuracy against epsilon) and ``figures/adversarial_triptych.png``
            (the first test example, clean / PGD-perturbed at the largest epsilon / difference).

    Scalars and summary.json: ``robust/<attack>_acc@<eps>`` (fractions in [0, 1]).

    Raises:
        ValueError: an unknown attack, an empty epsilon list, a negative epsilon or num_examples < 1.
    """

    def __init__(self, epsilons: Sequence[float] = (0.1, 0.2, 0.3), attacks: Sequence[str] = ("fgsm", "pgd"),
                 num_examples: int = 1000, pgd_steps: int = 20, pgd_step_size: float | None = None,
                 pgd_restarts: int = 1, bounds: Sequence[float] | None = (0.0, 1.0), seed: int = 0,
                 figure: bool = True) -> None:
        bad = [a for a in attacks if a not in A.ATTACKS]
        if bad:
            raise ValueError(f"unknown attacks {bad}; allowed: {list(A.ATTACKS)}")
        if not epsilons or any(not e >= 0 for e in epsilons):
            raise ValueError(f"epsilons must be a non-empty list of budgets >= 0, got {list(epsilons)}")
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        self.epsilons, self.attacks = [float(e) for e in epsilons], list(attacks)
        self.num_examples, self.seed, self.figure = int(num_examples), int(seed), bool(figure)
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        self.pgd = {"steps": int(pgd_steps), "step_size": pgd_step_size, "restarts": int(pgd_restarts), "bounds": self.bounds}

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, list[float]]:
        """``{attack: [accuracy per epsilon]}`` on the first ``num_examples`` test examples."""
        test = datamodule_split(trainer, "test")
        x, y = test.x[: self.num_examples], test.y[: self.num_examples]
        model = network(pl_module)
        torch.manual_seed(self.seed)
        return {a: A.robust_accuracy(model, x, y, self.epsilons, a, **(self.pgd if a == "pgd" else {"bounds": self.bounds}))
                for a in self.attacks}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        curves = self.measure(trainer, pl_module)
        values = {f"robust/{a}_acc@{e:g}": acc for a, accs in curves.items() for e, acc in zip(self.epsilons, accs, strict=True)}
        log_scalars(pl_module, values)
        add_summary(pl_module, values)
        if not self.figure:
            return
        figures = run_dir(trainer) / "figures"
        A.plot_accuracy_curves({"model": curves}, self.epsilons, {"model": type(network(pl_module)).__name__},
                               figures / "robustness.png")
        test = datamodule_split(trainer, "test")
        ex = A.adversarial_example(network(pl_module), test.x[:1], test.y[:1], max(self.epsilons), **self.pgd)
        A.plot_triptych([(type(network(pl_module)).__name__, ex)], figures / "adversarial_triptych.png")
