"""The Study protocol: an experiment that is not one training run.

A sweep of tiny models, a k-NN or PCA measurement, Kepler's sample-efficiency study, lottery tickets:
none of them is one ``Trainer.fit`` of one model on one datamodule. Such an experiment configures a
top-level ``study:`` node instead of ``data``, ``model`` and ``task``::

    # conf/experiment/knn.yaml
    defaults:
      - override /data: null
      - override /model: null
      - override /task: null
      - override /optimizer: null
      - override /callbacks: none
    study:
      _target_: whylearn.analysis.dimensions.knn_experiment
      _partial_: true          # Hydra binds the node's values; the run supplies the rest
      num_test: 2000

and ``whylearn-train experiment=knn`` runs it through :func:`whylearn.experiment.run`, the path every
training run takes for what they share: the config and its reference block checked before anything
is written, the run folder, config.yaml, the loggers (W&B's run config, the CSV), summary.json
(status ``completed``, ``failed`` or ``interrupted`` with the error, written atomically), the figures
(also to W&B), the reference block's verdicts, the run report and a multirun's failure records.
There is no outer ``Trainer.fit``: a study that trains models builds its own quiet Trainers
(:func:`whylearn.studies.common.quiet_trainer`). Of the run's ``trainer`` node a study reads only
``fast_dev_run`` (``debug=fast_dev_run``: :attr:`StudyRun.smoke`) and ``accelerator`` (:attr:`StudyRun.device`);
``test_after_fit``, callbacks and checkpoints belong to training runs (``ckpt_path`` is refused; a
command line's other ``trainer.*``, ``callbacks`` and ``test_after_fit`` overrides are named in a warning,
:func:`whylearn.experiment.ignored_by_study`). A SIGTERM
(SLURM preemption, scancel) or Ctrl-C during a study leaves summary.json with status ``interrupted``; a study
has no checkpoint, so a SLURM requeue starts it again from the beginning (in its job's folder).

Reusable studies have a config group, ``conf/study/`` (``override /study: xor_sweep`` in an experiment's
defaults); one-off ones write their ``study:`` node in the experiment file.

The protocol (:class:`Study`): a callable that takes the run (:class:`StudyRun`: the run folder, the
loggers, :meth:`StudyRun.log`, a progress display, the smoke-test flag) as ``run`` and returns a
:class:`StudyResult` (the summary dict and the figures it wrote). A measurement function of the
instruments layer (:mod:`whylearn.analysis`, which cannot know this module) that takes ``out_dir``,
writes its figures to ``out_dir/figures`` and returns a dict is a study too: :func:`call_study` passes
it the run folder and collects the PNGs it wrote.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("whylearn")

PROGRESS_KINDS = ("rich", "tqdm", "lines", "none")


@dataclass
class StudyResult:
    """What a study returns: ``summary`` (JSON-serialisable numbers, lists and nested dicts; it goes
    into summary.json beside the run's own fields) and ``figures`` (the PNG files it wrote)."""

    summary: dict[str, Any]
    figures: list[Path] = field(default_factory=list)


@dataclass
class StudyRun:
    """The run a study works in: where it writes, where its scalars go, how it shows progress.

    Args:
        out_dir: the run folder (:func:`whylearn.build.run_dir`); figures go to ``out_dir/figures``.
        loggers: Lightning loggers (CSV, W&B ...): :meth:`log` sends scalars to each (``log_metrics``).
        seed: the run's ``seed`` (already given to ``lightning.seed_everything``).
        smoke: True under ``debug=fast_dev_run`` (``trainer.fast_dev_run``): a study then runs every part
            for a couple of steps to show it runs end to end (its numbers mean nothing).
        progress: ``rich`` (a rich.progress bar), ``tqdm``, ``lines`` (log lines) or ``none``.
        device: where a study that trains puts its models (``cpu`` or ``cuda``; from ``trainer.accelerator``,
            :func:`device_of`).
    """

    out_dir: Path
    loggers: list = field(default_factory=list)
    seed: int = 0
    smoke: bool = False
    progress: str = "lines"
    device: str = "cpu"
    points: int = 0  # sweep points done (:meth:`point_done`): the step of the scalars logged
    _bar: Any = field(default=None, repr=False)
    _total: int | None = field(default=None, repr=False)
    _shown: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.progress not in PROGRESS_KINDS:
            raise ValueError(f"unknown progress {self.progress!r}; allowed: {list(PROGRESS_KINDS)}")

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Send the numeric entries of ``metrics`` (bools and non-numbers left out) to every logger at ``step``
        (default: the points done so far)."""
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not scalars:
            return
        for lg in self.loggers:
            lg.log_metrics(scalars, step=self.points if step is None else int(step))

    def sweep(self, total: int, description: str = "study") -> None:
        """Announce a sweep of ``total`` points: the progress display counts them as :meth:`point_done` is called."""
        self.close()
        self._total = int(total)
        if self.progress == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar.start()
            self._bar.add_task(description, total=self._total)
        elif self.progress == "tqdm":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._total, desc=description, unit="point")

    def point_done(self, metrics: Mapping[str, Any] | None = None) -> None:
        """One point of the sweep is done: count it, log its scalars at it, advance the progress display."""
        self.points += 1
        if metrics:
            self.log(metrics)
        if self._bar is not None and self.progress == "rich":
            self._bar.update(self._bar.tasks[0].id, advance=1)
        elif self._bar is not None:
            self._bar.update(1)
        elif self.progress == "lines" and time.monotonic() - self._shown >= 10.0:
            self._shown = time.monotonic()
            log.info("study: %d%s points done", self.points, f" of {self._total}" if self._total else "")

    def close(self) -> None:
        """Stop the progress display (the run calls this when the study returns or fails)."""
        if self._bar is not None and self.progress == "rich":
            self._bar.stop()
        elif self._bar is not None:
            self._bar.close()
        self._bar = None


@runtime_checkable
class Study(Protocol):
    """``study(run=StudyRun) -> StudyResult``: an experiment that is not one training run (see the module)."""

    def __call__(self, run: StudyRun) -> StudyResult: ...


def device_of(accelerator: str | None) -> str:
    """``trainer.accelerator`` as a torch device for a study: ``gpu``/``cuda`` -> ``cuda``, ``auto`` -> ``cuda``
    when one is available, anything else (``cpu``, null) -> ``cpu``."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto":
        import torch  # start-up: torch only when a run asks for the device

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


class SweepStudy:
    """A study that sweeps tiny models (the classic sweeps, forgetting, invariance): a :class:`Study` object.

    Subclasses implement :meth:`run_sweep` (the sweep; calls :meth:`point_done` after each point; returns
    the summary, rows under ``rows``) and :meth:`plot` (its figures into ``figures``). While it runs,
    :attr:`run` is the :class:`StudyRun`. Built by Hydra without ``_partial_`` (the object is the study).
    """

    run: StudyRun | None = None

    def __call__(self, run: StudyRun) -> StudyResult:
        self.run = run
        result = self.run_sweep()
        self.plot(result, run.figures_dir)
        figures = sorted(run.figures_dir.glob("*.png")) if run.figures_dir.is_dir() else []
        return StudyResult(result, figures)

    @property
    def out_dir(self) -> Path:
        return self.run.out_dir

    @property
    def smoke(self) -> bool:
        """``debug=fast_dev_run``: run every part for a couple of steps (numbers that mean nothing)."""
        return bool(self.run and self.run.smoke)

    @property
    def device(self) -> str:
        return self.run.device if self.run else "cpu"

    def announce(self, total: int, description: str) -> None:
        """The sweep has ``total`` points: :meth:`StudyRun.sweep` (the progress display counts them)."""
        if self.run is not None:
            self.run.sweep(total, description)

    def point_done(self, metrics: Mapping[str, Any] | None = None) -> None:
        """One sweep point done: :meth:`StudyRun.point_done` (counted, its scalars logged at it, progress shown)."""
        if self.run is not None:
            self.run.point_done(metrics)

    def run_sweep(self) -> dict[str, Any]:
        raise NotImplementedError

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        raise NotImplementedError


def call_study(study: Callable[..., Any], run: StudyRun) -> StudyResult:
    """Run ``study`` in ``run``: a :class:`Study` (its signature names ``run``) gets the run; a measurement
    function (it names ``out_dir``, returns a dict, writes its figures to ``out_dir/figures``) gets the run
    folder, and its figures are the PNGs in ``run.figures_dir`` afterwards.

    Raises:
        TypeError: ``study`` is not callable, takes neither ``run`` nor ``out_dir``, or returns neither a
            :class:`StudyResult` nor a dict.
    """
    if not callable(study):
        raise TypeError(f"a study must be callable (Hydra: _partial_: true), got {type(study).__name__}")
    target = getattr(study, "func", study)  # a functools.partial (Hydra's _partial_: true): the function's own names
    name = getattr(target, "__qualname__", type(study).__name__)
    params = inspect.signature(target).parameters
    if "run" in params:
        result = study(run=run)
    elif "out_dir" in params:
        result = study(out_dir=run.out_dir)
    else:
        raise TypeError(f"the study {name} takes neither `run` (a StudyRun) nor `out_dir` (the run folder); "
                        f"its parameters: {list(params)}")
    if isinstance(result, StudyResult):
        return result
    if isinstance(result, Mapping):
        figures = sorted(run.figures_dir.glob("*.png")) if run.figures_dir.is_dir() else []
        return StudyResult(dict(result), figures)
    raise TypeError(f"the study {name} returned {type(result).__name__}; expected a StudyResult or a dict")
