"""Nanda et al.'s progress measures during a grokking run (x + y mod p, a GPT with an embedding ``wte``).

Every ``every_n_steps`` optimizer steps the callback keeps a copy of the weights (on the CPU; a
1-layer grokking model is about 0.9 MB) and logs the Fourier spectrum of the embedding: its Gini
coefficient (``grok/embed_gini``) and the share of its norm in the five largest frequencies
(``grok/embed_top5_fraction``). At the end of fit it takes the key frequencies of the final
embedding (:func:`whylearn.analysis.grokking.key_frequencies`) and evaluates every kept copy on all
p^2 pairs: ``grok/train_loss``, ``grok/test_loss``, ``grok/test_acc``, ``grok/restricted_loss``
(all pairs, as Nanda et al.'s ``calculate_trig_loss``), ``grok/restricted_loss_test``,
``grok/excluded_loss`` (training pairs) and ``grok/sum_sq_weights``, logged at the steps they belong
to; the key frequencies' embedding norms ``grok/embed_norm_k<k>``; the phase boundaries
(:func:`whylearn.analysis.grokking.phase_steps`) go to summary.json as
``grok/memorization_end_step``, ``grok/circuit_formation_end_step``, ``grok/cleanup_end_step``, with
``grok/key_frequencies``; ``figures/progress_measures.png`` draws them as Nanda et al.'s Fig. 7 does
(losses, excluded and restricted loss, weights and Gini, the phases shaded).
"""

from __future__ import annotations

import copy

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.analysis import grokking as G
from whylearn.analysis.plotting import save_figure, subplots
from whylearn.callbacks.sharpness import add_summary, network, run_dir
from whylearn.data.modular import modular_table
from whylearn.loggers import get_history, log_scalars


class ProgressMeasures(Callback):
    """Nanda et al. 2023's progress measures (key frequencies, restricted and excluded loss) over a grokking run.

    Args:
        every_n_steps: interval (optimizer steps) of the kept weights and the embedding spectrum; step 0 included.
        key_fraction: None: the key frequencies of the final embedding are those above the largest gap of its
            sorted squared Fourier norms; a number: those whose squared norm is at least that fraction of the
            largest (:func:`~whylearn.analysis.grokking.key_frequencies`).
        max_key: consider at most this many frequencies.
        figure: draw ``figures/progress_measures.png``.

    Raises:
        ValueError: (at the start of fit) a datamodule that is not modular addition with an odd p, or a
            model without a token embedding ``wte`` of p + 1 or more rows and p outputs.
    """

    def __init__(self, every_n_steps: int = 100, key_fraction: float | None = None, max_key: int = 20,
                 figure: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if key_fraction is not None and not 0 < key_fraction <= 1:
            raise ValueError(f"key_fraction must be None or in (0, 1], got {key_fraction}")
        self.every_n_steps, self.key_fraction, self.max_key, self.figure = every_n_steps, key_fraction, max_key, figure
        self.snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []
        self._last = -1

    # -- setting up ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if getattr(dm, "op", None) != "+" or not hasattr(dm, "sequences"):
            raise ValueError(f"ProgressMeasures measures x + y mod p: it needs a ModularArithmeticDataModule with op "
                             f"'+', got {type(dm).__name__} with op {getattr(dm, 'op', None)!r}")
        p = dm.p
        G.fourier_basis(p)  # odd p
        model = network(pl_module)
        if not hasattr(model, "wte") or model.wte.weight.shape[0] < p or getattr(model, "num_classes", p) != p:
            raise ValueError(f"ProgressMeasures needs a model with a token embedding `wte` (>= {p} rows) and {p} outputs "
                             f"(whylearn.models.GPT with last_token_only), got {type(model).__name__}")
        x, y, c = modular_table(p, "+")
        self.p, self.inputs, self.labels = p, dm.sequences(x, y), c
        pairs = lambda split: split.x[:, 0].cpu() * p + split.x[:, -2].cpu()  # noqa: E731 - operands: first and before "="
        self.train_index, self.test_index = pairs(dm.train).sort().values, pairs(dm.test).sort().values
        self.snapshots, self._last = [], -1

    # -- during training ---------------------------------------------------------------------------
    def _keep(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last = step
        model = network(pl_module)
        self.snapshots.append((step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}))
        norms = G.embedding_fourier_norms(model.wte.weight, self.p)
        sq = norms.pow(2)
        log_scalars(pl_module, {"grok/embed_gini": G.gini(norms),
                                "grok/embed_top5_fraction": float(sq.sort(descending=True).values[:5].sum() / sq.sum())},
                    step=step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self._last:
            self._keep(trainer, pl_module, step)

    # -- at the end --------------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule) -> dict:
        """Evaluate every kept copy with the final key frequencies; returns the series and the phases."""
        model = network(pl_module)
        freqs = G.key_frequencies(G.embedding_fourier_norms(model.wte.weight, self.p), self.key_fraction, self.max_key)
        probe = copy.deepcopy(model).to("cpu").eval()
        series: dict[str, list[float]] = {}
        steps = []
        for step, state in self.snapshots:
            probe.load_state_dict(state)
            logits = probe(self.inputs)
            m = G.progress_measures(logits, self.labels, self.train_index, self.test_index, self.p, freqs)
            m["sum_sq_weights"] = float(sum(v.double().pow(2).sum() for k, v in state.items() if v.is_floating_point()))
            norms = G.embedding_fourier_norms(state["wte.weight"], self.p)
            m.update({f"embed_norm_k{k}": float(norms[k - 1]) for k in freqs})
            steps.append(step)
            for k, v in m.items():
                series.setdefault(k, []).append(v)
        phases = G.phase_steps(steps, series.get("test_loss", []), series.get("excluded_loss", []),
                               series.get("test_acc", []))
        return {"steps": steps, "series": series, "key_frequencies": freqs, "phases": phases}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last:
            self._keep(trainer, pl_module, trainer.global_step)
        result = self.measure(pl_module)
        for i, step in enumerate(result["steps"]):
            log_scalars(pl_module, {f"grok/{k}": v[i] for k, v in result["series"].items()}, step=step)
        phases, series = result["phases"], result["series"]
        add_summary(pl_module, {
            "grok/key_frequencies": result["key_frequencies"], "grok/num_key_frequencies": len(result["key_frequencies"]),
            "grok/memorization_end_step": phases["memorization_end"],
            "grok/circuit_formation_end_step": phases["circuit_formation_end"],
            "grok/cleanup_end_step": phases["cleanup_end"],
            **{f"grok/final_{k}": series[k][-1] for k in ("restricted_loss", "excluded_loss", "test_loss") if series.get(k)},
        })
        if self.figure and trainer.is_global_zero:
            plot_progress_measures(result, run_dir(trainer) / "figures" / "progress_measures.png")


def plot_progress_measures(result: dict, path, title: str | None = None):
    """Nanda et al.'s Fig. 7 layout: (0) train and test loss, (1) excluded loss, (2) restricted loss,
    (3) sum of squared weights; the three measured phases shaded, a linear step axis."""
    steps, s, phases = result["steps"], result["series"], result["phases"]
    fig, axes = subplots(2, 2, width=5.2, height=3.4)
    axes = axes.flatten()
    xs = steps
    axes[0].plot(xs, s["train_loss"], label="train loss")
    axes[0].plot(xs, s["test_loss"], label="test loss")
    axes[1].plot(xs, s["excluded_loss"], color="tab:red", label="excluded loss (train)")
    axes[1].plot(xs, s["train_loss"], color="tab:blue", lw=0.8, alpha=0.6, label="train loss")
    axes[2].plot(xs, s["restricted_loss"], color="tab:green", label="restricted loss (all pairs)")
    axes[2].plot(xs, s["test_loss"], color="tab:orange", lw=0.8, alpha=0.6, label="test loss")
    axes[3].plot(xs, s["sum_sq_weights"], color="k", label="sum of squared weights")
    for ax, name in zip(axes[:3], ("loss", "excluded loss", "restricted loss"), strict=True):
        ax.set_yscale("log")
        ax.set_ylabel(name)
    axes[3].set_ylabel("sum of squared weights")
    bounds = [0, phases.get("memorization_end"), phases.get("circuit_formation_end"), phases.get("cleanup_end")]
    colors = ("tab:blue", "tab:orange", "tab:green")
    for ax in axes:
        for (a, b), col in zip(zip(bounds[:-1], bounds[1:], strict=True), colors, strict=True):
            if a is not None and b is not None and b > a:
                ax.axvspan(a, b, color=col, alpha=0.07)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    k = ", ".join(map(str, result["key_frequencies"][:8])) + (" ..." if len(result["key_frequencies"]) > 8 else "")
    fig.suptitle(title or f"Progress measures (as Nanda et al. 2023, Fig. 7), key frequencies {k}\n"
                          f"measured phases shaded: memorization, circuit formation, clean-up", fontsize=9)
    return save_figure(fig, path, grid=False)


class FirstReach(Callback):
    """At the end of fit, the first step at which a logged scalar reached a threshold, into summary.json.

    Reads the run's logged series of ``key`` (e.g. ``val/acc``, or ``train_eval/acc`` from
    :class:`~whylearn.callbacks.GeneralizationGap`), so its resolution is that of the logging.

    Args:
        key: the logged scalar.
        threshold: the value to reach (``>=``).
        name: the summary key (default ``<key>_reaches_<threshold>_step``); None in the summary if never reached.
    """

    def __init__(self, key: str, threshold: float, name: str | None = None) -> None:
        self.key, self.threshold = key, float(threshold)
        self.name = name or f"{key}_reaches_{threshold:g}_step"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps, values = get_history(pl_module).series(self.key)
        first = next((s for s, v in zip(steps, values, strict=True) if v >= self.threshold), None)
        add_summary(pl_module, {self.name: first})
