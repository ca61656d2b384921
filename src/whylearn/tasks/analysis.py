"""A task whose fit runs a measurement once: the entry point of experiments that are not a training loop.

Distance concentration, k-NN and PCA sweeps, kernel comparisons and sweeps of many small
training runs are analyses: ``whylearn-train experiment=<name>`` builds this task around an
analysis function (Hydra: ``_partial_: true``) and ``Trainer.fit`` calls it once, in the first
training step. The function receives ``out_dir`` (the run directory), writes its figures to
``out_dir/figures`` and returns a dict of numbers, which goes into ``summary.json``.

A sweep of tiny models is the same kind of run: :class:`whylearn.tasks.classic.SweepTask`
subclasses :class:`AnalysisTask`, overrides :meth:`AnalysisTask.run_analysis`, and counts each
sweep point as one step with :meth:`AnalysisTask.point_done`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from whylearn.loggers import log_images
from whylearn.tasks.base import HistoryInCheckpoint, count_steps, log_scalars

log = logging.getLogger("whylearn")


class AnalysisTask(HistoryInCheckpoint):
    """Runs ``analysis(out_dir=<run directory>)`` once during fit; its result is the run's summary.

    Args:
        analysis: a callable taking ``out_dir`` (a Path) and returning a dict (numbers, lists,
            nested dicts); JSON-serialisable values go to ``summary.json``. Subclasses that
            override :meth:`run_analysis` pass None.
        model: the run's model (ignored by analyses; a :class:`~whylearn.models.placeholder.NoModel`).

    Raises:
        TypeError: ``analysis`` is not callable or does not return a dict.
    """

    def __init__(self, analysis: Callable[..., dict] | None = None, model: nn.Module | None = None) -> None:
        super().__init__()
        if type(self).run_analysis is AnalysisTask.run_analysis and not callable(analysis):
            raise TypeError(f"analysis must be a callable (Hydra: _partial_: true), got {type(analysis).__name__}")
        self.automatic_optimization = False
        self.analysis, self.model = analysis, model
        self.result: dict[str, Any] | None = None

    def run_analysis(self, out_dir: Path) -> dict[str, Any]:
        """The measurement: by default ``analysis(out_dir=out_dir)``."""
        return self.analysis(out_dir=out_dir)

    def point_done(self, metrics: dict[str, float]) -> None:
        """Count one step (a sweep point, say) in Lightning's progress and log its scalars at it."""
        count_steps(self.trainer)
        log_scalars(self, metrics)

    def training_step(self, batch, batch_idx: int) -> None:
        self.trainer.should_stop = True  # one step: the analysis
        if self.result is not None:
            return None
        out_dir = Path(self.trainer.default_root_dir)
        t0 = time.perf_counter()
        result = self.run_analysis(out_dir)
        if not isinstance(result, dict):
            raise TypeError(f"the analysis of {type(self).__name__} returned {type(result).__name__}, expected a dict")
        result["analysis_time_s"] = round(time.perf_counter() - t0, 2)
        self.result = result
        scalars = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:
            log_scalars(self, scalars)
        self._log_figures(out_dir / "figures")
        log.info("analysis finished in %.1f s; figures in %s", result["analysis_time_s"], out_dir / "figures")
        return None

    def _log_figures(self, folder: Path) -> None:
        """Send the analysis's figures to W&B, when a W&B logger is configured."""
        log_images(self.trainer.loggers, {f"figures/{p.stem}": p for p in sorted(folder.glob("*.png"))})

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        return dict(self.result or {})
