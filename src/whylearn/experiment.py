"""Run one experiment as its config says: validate, build, fit, test, and leave summary.json and figures.

The run orchestration behind ``whylearn-train`` (:mod:`whylearn.cli.train` is only its Hydra entry point)
and behind every script or test that runs an experiment in Python::

    from whylearn.experiment import run
    summary = run(cfg)          # cfg: a composed conf/train.yaml (e.g. tests/conftest.py's compose)

:func:`run` checks the config and its reference block before anything is written, takes the run folder
(:func:`whylearn.build.run_dir`) and its lock, plans a resume (:mod:`whylearn.runs.resume`), builds the
datamodule, model, task, callbacks, loggers and Trainer (:mod:`whylearn.build`), fits and tests, and writes
config.yaml, summary.json (status running, completed, failed or interrupted, with the error; atomically),
the figures, the W&B run's config, summary and images, and the run report (published beside measured).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from whylearn import reference  # light: the heavy modules (build, Lightning) are imported when a run starts
from whylearn.config import validate

log = logging.getLogger("whylearn")

SUMMARY_KEYS = ("train/loss", "val/loss", "test/loss", "train/acc", "val/acc", "test/acc", "gap/loss", "gap/acc",
                "weights/l2_total", "weights/dist_from_init", "params", "steps", "fit_time_s", "steps_per_s", "seed")


def quiet_third_parties() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*is an invalid configuration since model checkpoints.*")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def _start_loggers(loggers: list) -> None:
    """Start W&B now (it starts lazily at the first logged row otherwise, inside the training loop)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger) and lg._experiment is None:
            lg.experiment  # noqa: B018 - the property starts the run


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and test as ``cfg`` says, or run its study (``cfg.study``, :mod:`whylearn.studies.base`);
    return the summary (also written to ``summary.json``).

    Nothing is written before the config is valid (:func:`whylearn.config.validate`) and, for a resume,
    the checkpoint has loaded and its config agrees (:func:`whylearn.runs.resume.plan_resume`); a resume
    writes config.yaml only once Lightning restored the checkpoint, and a resume that fails before
    that leaves the run's summary.json, config.yaml, figures and CSV untouched.
    """
    validate(cfg)
    refs = reference.from_config(cfg)  # a malformed reference block fails here, before anything is written
    quiet_third_parties()
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    # start-up: Lightning is imported once a run starts (not for --help, --cfg or a multirun's launching process)
    from whylearn import build
    from whylearn.runs import resume

    out = build.run_dir(cfg)
    plan = resume.plan_resume(cfg, out)
    zero = rank_zero_only.rank == 0  # under DDP every rank runs this; rank 0 alone writes files
    out.mkdir(parents=True, exist_ok=True)
    reference.activate(refs)  # figures draw the published values they are named in
    if is_study(cfg):
        with resume.run_folder_lock(out):
            if resume.holds_run(out):  # another process wrote here since plan_resume looked
                resume.plan_resume(cfg, out)
            return _run_study(cfg, out, refs)
    if not zero:
        return _run(cfg, out, plan, zero, refs)
    with resume.run_folder_lock(out):
        if not plan.resuming and resume.holds_run(out):  # another process wrote here since plan_resume looked
            plan = resume.plan_resume(cfg, out)
        return _run(cfg, out, plan, zero, refs)


def is_study(cfg: DictConfig) -> bool:
    """The experiment is a study (a ``study:`` node), not a training run."""
    return cfg.get("study") is not None


def _run_study(cfg: DictConfig, out: Path, refs) -> dict[str, Any]:
    """A study's run (:mod:`whylearn.studies.base`): what a training run writes, without a Trainer."""
    import lightning as L
    import torch

    # start-up: Lightning is imported once a run starts (not for --help, --cfg or a multirun's launching process)
    from whylearn import build
    from whylearn.loggers import finish_wandb, log_config, log_images
    from whylearn.runs.preemption import Preempted
    from whylearn.studies.base import StudyRun, call_study, device_of

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    study = build.build_study(cfg)
    loggers = build.build_loggers(cfg, run_dir=out)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    smoke = bool(OmegaConf.select(cfg, "trainer.fast_dev_run", default=False))  # debug=fast_dev_run
    study_run = StudyRun(out, loggers, seed=int(cfg.seed), smoke=smoke, progress=build.progress_kind(cfg),
                         device=device_of(OmegaConf.select(cfg, "trainer.accelerator", default="cpu")))
    summary = _first_summary(cfg, out)
    ignored = ignored_by_study(summary.get("overrides"))
    if ignored:
        log.warning("a study reads only %s of the trainer node and no callbacks or test_after_fit; ignored: %s "
                    "(a study's own sizes and steps are study.* options)", " and ".join(STUDY_TRAINER_KEYS),
                    ", ".join(ignored))
    summary_path = out / "summary.json"
    t0 = time.perf_counter()

    def preempted(signum, frame):  # SIGTERM (SLURM, a kill): record the study as interrupted, then exit
        raise Preempted(signum, None, study_run.points)

    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, preempted) if on_main else None
    try:
        _start_loggers(loggers)
        log_config(loggers, cfg)  # the resolved config: W&B's run config, the CSV's hparams.yaml
        result = call_study(study, study_run)
        study_run.close()
        summary.update(result.summary)
        summary.update({"study_time_s": round(time.perf_counter() - t0, 2), "status": "completed"})
        study_run.log(result.summary)  # the summary's scalars, as the last row of every logger
    except BaseException as e:
        study_run.close()
        status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"
        summary.update({"study_time_s": round(time.perf_counter() - t0, 2), "status": status,
                        "error": f"{type(e).__name__}: {e}"})
        summary["reference"] = reference.evaluate(refs, summary)
        write_summary(summary_path, summary)
        try:  # the points logged before the failure stay in the CSV and the W&B run
            _save_loggers(loggers)
            finish_wandb(loggers, summary)
        except Exception as wandb_error:
            log.warning("could not finish the W&B run: %s", wandb_error)
        log.error("study %s: %s\nsummary (with the error): %s", status, e, summary_path)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    summary["reference"] = reference.evaluate(refs, summary)  # published beside measured, with verdicts
    write_summary(summary_path, summary)
    _save_loggers(loggers)
    log_images(loggers, {f"figures/{Path(p).stem}": p for p in result.figures})
    finish_wandb(loggers, summary)
    _report(cfg, out, summary, loggers)
    return summary


def _run(cfg: DictConfig, out: Path, plan, zero: bool, refs) -> dict[str, Any]:
    import lightning as L
    import torch

    # start-up: Lightning is imported once a run starts (not for --help, --cfg or a multirun's launching process)
    from whylearn import build
    from whylearn.analysis.figures import plot_run
    from whylearn.loggers import finish_wandb, log_config, log_images, log_members
    from whylearn.runs.preemption import GracefulStop, Preempted
    from whylearn.runs.record import RunRecord, put_back_csv, set_aside_csv
    from whylearn.tasks.base import flush_logs, get_history

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    dm = build.build_datamodule(cfg)
    model = build.build_model(cfg, dm)
    build.check_model_data(model, dm)
    task = build.build_task(cfg, model, dm)
    task.run_config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_dir = out / "checkpoints"
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)

    def write_config() -> None:
        if zero:
            (out / "config.yaml").write_text(config_yaml)

    def restored() -> None:  # a resume, once Lightning restored the checkpoint: the new config is the run's
        write_config()
        log_config(loggers, cfg)

    loggers = build.build_loggers(cfg, run_dir=out)
    record = RunRecord(task.run_config, plan, on_restored=restored, loggers=loggers,
                            planned_steps=build.planned_steps(cfg, dm) if cfg.get("scheduler") else None)
    callbacks = build.build_callbacks(cfg) + [record, GracefulStop(ckpt_dir / "last.ckpt")]
    trainer = build.build_trainer(cfg, callbacks, loggers)
    if not plan.resuming:
        write_config()
    summary = _first_summary(cfg, out, params=sum(p.numel() for p in model.parameters()),
                             **getattr(dm, "describe", dict)())
    summary_path = out / "summary.json"
    try:
        if plan.resuming:  # before any logger starts: Lightning's CSV writer deletes metrics.csv when it starts
            set_aside_csv(loggers)  # put back by the except below if the restore fails
        _start_loggers(loggers)
        if not plan.resuming:  # the resolved config: W&B's run config, the CSV's hparams.yaml, TensorBoard's hparams
            log_config(loggers, cfg)
        trainer.fit(task, datamodule=dm, ckpt_path=plan.ckpt_path, weights_only=True)
        record.mark_restored(trainer)  # a resume with nothing left to train has no train start
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)
        if cfg.get("test_after_fit", True):
            trainer.test(task, datamodule=dm, verbose=False)
        summary.update(task.summary_metrics(dm) if hasattr(task, "summary_metrics") else {})
        summary.update(_account(trainer, record, plan))
        summary.update({"epochs": int(trainer.current_epoch), "status": "completed"})
        hist = get_history(task)
        for key in ("test/loss", "test/acc"):
            if hist.last(key) is not None:
                summary[key] = hist.last(key)
        summary.update(_final_weight_norms(trainer, task))
    except BaseException as e:
        record.stop_clock()
        if not record.restored:  # the resume failed before the checkpoint was restored: the run is as it was
            put_back_csv(loggers)
            log.error("could not resume from %s: %s: %s\nnothing in %s was changed (summary.json, config.yaml, "
                      "figures and metrics.csv are as before)", plan.ckpt_path, type(e).__name__, e, out)
            try:
                finish_wandb(loggers)
            except Exception as wandb_error:
                log.warning("could not finish the W&B run: %s", wandb_error)
            raise
        status = "interrupted" if isinstance(e, (Preempted, KeyboardInterrupt, SystemExit)) else "failed"
        summary.update(_account(trainer, record, plan))
        summary.update({"status": status, "error": f"{type(e).__name__}: {e}"})
        summary["reference"] = reference.evaluate(refs, summary)
        if zero:
            write_summary(summary_path, summary)
            plot_run(get_history(task), out / "figures")
        try:  # a signal may also have stopped W&B's service process: keep the original error
            flush_logs(task, wait=True)
            finish_wandb(loggers, summary)
        except Exception as wandb_error:
            log.warning("could not finish the W&B run: %s", wandb_error)
        log.error("run %s at step %d: %s\nsummary (with the error): %s\ncheckpoints kept in: %s",
                  status, trainer.global_step, e, summary_path, ckpt_dir)
        raise
    if not zero:
        finish_wandb(loggers)
        return summary
    flush_logs(task, wait=True)
    figures = plot_run(get_history(task), out / "figures")
    summary["reference"] = reference.evaluate(refs, summary)  # published beside measured, with verdicts
    write_summary(summary_path, summary)
    _save_loggers(loggers)
    log_images(loggers, {f"figures/{p.stem}": p for p in figures})
    log_members(loggers, summary.get("members") or [])  # an ensemble run: one row per member
    finish_wandb(loggers, summary)
    _report(cfg, out, summary, loggers)
    return summary


STUDY_TRAINER_KEYS = ("trainer.fast_dev_run", "trainer.accelerator")  # what a study reads of the trainer node


def ignored_by_study(overrides: list[str] | None) -> list[str]:
    """The command-line overrides a study does not read: ``trainer.*`` keys other than
    :data:`STUDY_TRAINER_KEYS`, ``callbacks`` and ``test_after_fit`` (they belong to training runs)."""
    ignored = []
    for o in overrides or []:
        key = o.split("=", 1)[0].lstrip("+~")
        if (key.startswith("trainer.") and key not in STUDY_TRAINER_KEYS) or key == "test_after_fit" \
                or key.split(".")[0] == "callbacks":
            ignored.append(o)
    return ignored


def _first_summary(cfg: DictConfig, out: Path, **fields: Any) -> dict[str, Any]:
    """The summary a run starts with (status ``running``): seed, run folder, ``fields``, and the job's
    command-line overrides under Hydra."""
    summary: dict[str, Any] = {"seed": int(cfg.seed), "run_dir": str(out), "status": "running", **fields}
    overrides = _overrides()
    if overrides is not None:
        summary["overrides"] = overrides
    return summary


def _save_loggers(loggers: list) -> None:
    """Write what each logger holds (the CSV's rows) to disk."""
    for lg in loggers:
        if hasattr(lg, "save"):
            lg.save()


def _overrides() -> list[str] | None:
    """The command-line overrides of this job (Hydra's ``hydra.overrides.task``), None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    try:
        return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # noqa: BLE001 - a HydraConfig without overrides (composed by hand)
        return None


def _account(trainer, record, plan) -> dict[str, Any]:
    """Steps and fit time over every segment of the run (a start and each resume)."""
    fit_time = record.fit_time()
    out = {"steps": int(trainer.global_step), "fit_time_s": round(fit_time, 3),
           "steps_per_s": round(trainer.global_step / max(fit_time, 1e-9), 2),
           "segments": record.segments(trainer.global_step)}
    if plan.resuming:
        out["resumed"] = {"from": plan.ckpt_path, "step": plan.step,
                          "applied": {k: v[:2] for k, v in record.applied.items()}}
    return out


def _final_weight_norms(trainer, task) -> dict[str, float]:
    from whylearn.callbacks import WeightNorms  # start-up: see run()

    meter = next((cb for cb in trainer.callbacks if isinstance(cb, WeightNorms)), None) or WeightNorms(per_layer=False)
    m = meter.measure(task)
    return {k: m.get(k) for k in ("weights/l2_total", "weights/dist_from_init", "weights/rel_dist_from_init")}


def _report(cfg: DictConfig, out: Path, summary: dict, loggers: list) -> None:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    lines = [
        f"run directory: {out}",
        f"  summary:     {out / 'summary.json'}",
        *([f"  checkpoints: {out / 'checkpoints'}"] if (out / "checkpoints").is_dir() else []),
        f"  figures:     {', '.join(sorted(p.name for p in (out / 'figures').glob('*.png')))} in {out / 'figures'}",
    ]
    for lg in loggers:
        if isinstance(lg, CSVLogger):
            lines.append(f"  metrics CSV: {Path(lg.log_dir) / 'metrics.csv'}")
        if isinstance(lg, WandbLogger):
            mode = "offline" if lg._offline or os.environ.get("WANDB_MODE") in ("offline", "dryrun") else "online"
            lines.append(f"  W&B run:     {lg.save_dir}/wandb ({mode}; "
                         f"upload offline runs with `wandb sync {lg.save_dir}/wandb/offline-run-*`)")
    shown = {k: summary[k] for k in SUMMARY_KEYS if summary.get(k) is not None}
    lines.append("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    lines += reference.report_lines(summary.get("reference"))
    log.info("\n".join(lines))
