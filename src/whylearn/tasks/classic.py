"""Tasks for the classic learning rules, applied by hand (no autograd), and for the sweeps of their story.

- :class:`PerceptronTask`: Rosenblatt's rule on mistakes, epoch after epoch until an epoch
  without mistakes (``trainer.max_epochs`` is the cap); logs mistakes per epoch and in total.
- :class:`HopfieldTask`: Hebbian storage of the training patterns, retrieval of the corrupted
  test probes by asynchronous updates.

The sweeps of their story (XOR over widths, Novikoff's bound over margins, LMS over step sizes, Hopfield
capacity over loads) are studies, not tasks: :mod:`whylearn.studies.classic`.

Every rule application counts as one optimizer step in Lightning's progress tracker, as
:class:`~whylearn.tasks.base.FastTask` does; scalars go through :func:`~whylearn.tasks.base.log_scalars`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.data.base import Chunk  # noqa: E402
from whylearn.models.hopfield import Hopfield, overlap  # noqa: E402
from whylearn.models.perceptron import Perceptron, _pm1, linearly_separable, margin, novikoff_bound  # noqa: E402
from whylearn.tasks.base import HistoryInCheckpoint, count_steps, get_history, log_scalars  # noqa: E402


def _figures_dir(task: L.LightningModule) -> Path:
    return Path(task.trainer.default_root_dir) / "figures"


def _samples(chunk) -> Any:
    xs, ys = chunk[0], chunk[1]  # a Chunk (xs, ys) of K mini-batches, or a plain (x, y) batch (its samples)
    if not isinstance(chunk, Chunk):
        xs, ys = [xs], [ys]
    for x, y in zip(xs, ys, strict=False):
        yield from zip(x, y, strict=False)


# -- the perceptron ----------------------------------------------------------------------------------
class PerceptronTask(HistoryInCheckpoint):
    """Train a :class:`~whylearn.models.Perceptron` by the perceptron rule (Rosenblatt 1958).

    Each training sample of each mini-batch is visited in the datamodule's (seeded, shuffled)
    order; a mistake (y (w.x + b) <= 0) moves the weights by lr * y * x. Each visit counts as one
    step. After an epoch without mistakes training stops (the data were separated); otherwise
    it runs until ``trainer.max_epochs``. Labels 0/1 are used as -1/+1.

    Logs: ``perceptron/mistakes_epoch``, ``perceptron/mistakes_total``, ``train/acc_epoch``
    (accuracy of the weights at the end of each epoch), ``val/acc``, ``test/acc``.
    Summary: train/val/test accuracy, mistakes per epoch and total, whether the training set was
    separated (``separated``) and whether it is separable at all (``linearly_separable``, by a linear
    program), and Novikoff's bound (R/gamma)^2 with the data's known separating hyperplane (toy
    ``separable`` data) and with the learned one if it separates (any separating hyperplane gives a
    valid bound; the learned one gives a loose one). Where the bound does not apply (a training set
    that is not separable, e.g. with label noise) ``novikoff/applies`` is False with the reason.

    Args:
        model: the perceptron. lr: step size (irrelevant from w = 0, kept for completeness).
        check_separable: also decide whether the training set is linearly separable at all, by a
            linear program (:func:`~whylearn.models.perceptron.linearly_separable`), reported as
            ``linearly_separable``.
    """

    def __init__(self, model: Perceptron, lr: float = 1.0, check_separable: bool = True,
                 num_classes: int | None = None) -> None:
        super().__init__()
        if not isinstance(model, Perceptron):
            raise TypeError(f"PerceptronTask trains a whylearn.models.Perceptron, got {type(model).__name__}")
        self.automatic_optimization = False
        self.model, self.lr, self.check_separable = model, float(lr), bool(check_separable)
        self.mistakes_per_epoch: list[int] = []
        self._epoch_mistakes = 0
        self._eval_sum = [0, 0]  # correct, seen

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        self._epoch_mistakes = 0

    def training_step(self, chunk, chunk_idx: int) -> None:
        n = 0
        for x, y in _samples(chunk):
            self._epoch_mistakes += int(self.model.perceptron_update(x, 2 * int(y) - 1, self.lr))
            n += 1
        count_steps(self.trainer, n)

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        return float((self.model.predict(x) == _pm1(y)).float().mean())

    def on_train_epoch_end(self) -> None:
        self.mistakes_per_epoch.append(self._epoch_mistakes)
        dm = self.trainer.datamodule
        log_scalars(self, {"perceptron/mistakes_epoch": self._epoch_mistakes,
                           "perceptron/mistakes_total": sum(self.mistakes_per_epoch),
                           "train/acc_epoch": self.accuracy(dm.train.x, dm.train.y)})
        if self._epoch_mistakes == 0:
            self.trainer.should_stop = True

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self._eval_sum[0] += int((self.model.predict(x) == _pm1(y)).sum())
        self._eval_sum[1] += len(y)

    def _eval_end(self, key: str) -> None:
        c, n = self._eval_sum
        self._eval_sum = [0, 0]
        if n:
            log_scalars(self, {key: c / n})

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val/acc")

    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        self._eval_end("test/acc")

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        dm = datamodule
        train_x, train_y = dm.train.x.cpu(), dm.train.y.cpu()
        out: dict[str, Any] = {
            "train/acc": self.accuracy(train_x, train_y), "val/acc": self.accuracy(dm.val.x.cpu(), dm.val.y.cpu()),
            "mistakes_total": int(sum(self.mistakes_per_epoch)), "mistakes_per_epoch": list(self.mistakes_per_epoch),
            "epochs_run": len(self.mistakes_per_epoch),
            "separated": bool(self.mistakes_per_epoch and self.mistakes_per_epoch[-1] == 0),
        }
        if self.check_separable:
            out["linearly_separable"] = linearly_separable(train_x, train_y)
        out.update(self._novikoff(dm, train_x, train_y, out))
        if out["separated"]:
            w, b = self.model.weight.detach().cpu().double(), float(self.model.bias) * self.model.bias_input
            gamma_hat = margin(train_x.flatten(1).double(), train_y, w, b if self.model.use_bias else 0.0)
            r = (
                float(self.model.augmented(train_x.double()).norm(dim=1).max())
                if self.model.use_bias
                else float(train_x.flatten(1).norm(dim=1).max())
            )
            out.update({"learned/margin": gamma_hat, "learned/bound": (r / gamma_hat) ** 2 if gamma_hat > 0 else None})
        self._plot_mistakes()
        return out

    def _novikoff(self, dm, train_x: Tensor, train_y: Tensor, out: dict[str, Any]) -> dict[str, Any]:
        """Novikoff's bound where it applies: the data's known hyperplane (w*, b*) separates the training set.

        It does not apply to a training set that is not linearly separable (label noise, XOR,
        MNIST 4 vs 9 at 20x20): no hyperplane has a positive margin, and the perceptron cycles
        forever (Minsky & Papert 1969); then ``novikoff/applies`` is False with the reason, and no
        bound is reported. (A separable training set without a known hyperplane gets no bound either.)
        """
        bias_input = self.model.bias_input if self.model.use_bias else None
        w_star = getattr(dm, "w_star", None)
        if out.get("linearly_separable") is False:
            return {"novikoff/applies": False,
                    "novikoff/reason": "the training set is not linearly separable (linear program): no hyperplane has a "
                                       "positive margin, so the bound does not apply and the perceptron cannot stop"}
        if w_star is None:
            return {}
        w, b = w_star.double(), float(dm.b_star)
        if margin(train_x.flatten(1).double(), train_y, w, b) <= 0:  # the sign of the margin: the same in any space
            noisy = getattr(dm, "noisy_indices", None)
            why = f" ({len(noisy)} training labels flipped by label noise)" if noisy is not None and len(noisy) else ""
            return {"novikoff/applies": False,
                    "novikoff/reason": f"the data's hyperplane w* no longer separates the training set{why}; "
                                       "no bound is computed from it"}
        nb = novikoff_bound(train_x, train_y, w_star, dm.b_star, bias_input)
        return {"novikoff/applies": True, "novikoff/R": nb["R"], "novikoff/gamma": nb["gamma"], "novikoff/bound": nb["bound"],
                "novikoff/within_bound": out["mistakes_total"] <= nb["bound"],
                "novikoff/mistakes_over_bound": out["mistakes_total"] / nb["bound"]}

    def _plot_mistakes(self) -> None:
        if not self.mistakes_per_epoch:
            return
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ep = list(range(1, len(self.mistakes_per_epoch) + 1))
        ax.plot(ep, self.mistakes_per_epoch, "o-" if len(ep) < 40 else "-", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mistakes (updates) in the epoch")
        ax.set_title(f"Perceptron: {sum(self.mistakes_per_epoch)} mistakes in {len(ep)} epochs")
        top, low = max(self.mistakes_per_epoch), min(self.mistakes_per_epoch)
        if top > 20 * max(low, 1):  # a wide range (e.g. falling to 0): log-like; otherwise linear, with its ticks
            ax.set_yscale("symlog", linthresh=1)
        else:
            ax.set_ylim(0, 1.05 * top + 1)
        ax.grid(alpha=0.3)
        save_figure(fig, _figures_dir(self) / "mistakes_per_epoch.png", grid=False)


# -- the Hopfield network ------------------------------------------------------------------------------
class HopfieldTask(HistoryInCheckpoint):
    """Store the training patterns in a :class:`~whylearn.models.Hopfield` network; retrieve the test probes.

    Training applies Hebb's rule once per stored pattern (one step each); the test settles
    every corrupted probe by asynchronous sweeps and logs the mean overlap with its stored
    pattern before and after (``test/overlap_start``, ``test/overlap``) and the fraction
    recalled (overlap >= 0.95, ``test/recalled``). With N = 100 neurons the patterns are drawn
    as 10x10 images: stored, corrupted, retrieved.

    Args:
        model: the network. max_sweeps: cap on asynchronous sweeps per probe. seed: update order.
    """

    def __init__(self, model: Hopfield, max_sweeps: int = 30, seed: int = 0, num_classes: int | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model, self.max_sweeps, self.seed = model, int(max_sweeps), int(seed)
        self.result: dict[str, Any] = {}

    def training_step(self, chunk, chunk_idx: int) -> None:
        for x, _ in _samples(chunk):
            self.model.store(x[None])
            count_steps(self.trainer)

    def on_train_epoch_end(self) -> None:
        self.trainer.should_stop = True  # Hebbian storage is one pass

    def on_test_epoch_start(self) -> None:
        self._parts: list[dict[str, Tensor]] = []

    def test_step(self, batch, batch_idx: int) -> None:
        probes, idx = batch
        stored = self.trainer.datamodule.train.x.to(probes.device)[idx]
        settled, sweeps = self.model.settle(probes, self.max_sweeps, seed=self.seed + batch_idx)
        self._parts.append({"probes": probes.cpu(), "settled": settled.cpu(), "stored": stored.cpu(),
                            "sweeps": torch.tensor([sweeps])})

    def on_test_epoch_end(self) -> None:
        r = {k: torch.cat([p[k] for p in self._parts]) for k in ("probes", "settled", "stored", "sweeps")}
        m0, m1 = overlap(r["probes"], r["stored"]), overlap(r["settled"], r["stored"])
        self.result = r
        log_scalars(self, {"test/overlap_start": m0.mean(), "test/overlap": m1.mean(),
                           "test/recalled": (m1 >= 0.95).float().mean(), "test/sweeps": r["sweeps"].max()})

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        hist = get_history(self)
        out = {k: hist.last(k) for k in ("test/overlap_start", "test/overlap", "test/recalled", "test/sweeps")}
        n, p = self.model.num_neurons, self.model.num_stored
        out.update({"N": n, "P": p, "load": p / n})
        if self.result and n == 100:
            self._plot_images(getattr(datamodule, "pattern_names", []))
        return out

    def _plot_images(self, names: Sequence[str]) -> None:
        r = self.result
        k = min(len(r["probes"]), 8)
        fig, axes = plt.subplots(3, k, figsize=(1.3 * k, 4.2), squeeze=False)
        for j in range(k):
            for i, (key, label) in enumerate((("stored", "stored"), ("probes", "corrupted"), ("settled", "retrieved"))):
                ax = axes[i, j]
                ax.imshow(r[key][j].reshape(10, 10), cmap="gray_r", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(label, fontsize=8)
            m = float(overlap(r["settled"][j], r["stored"][j]))
            axes[2, j].set_xlabel(f"m = {m:.2f}", fontsize=8)
        fig.suptitle(f"Hopfield network, N = 100, P = {self.model.num_stored}", fontsize=9)
        save_figure(fig, _figures_dir(self) / "hopfield_images.png", grid=False)
