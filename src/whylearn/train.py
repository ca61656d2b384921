"""``whylearn-train``: compose the config, build, fit, test, and leave summary.json and figures.

    whylearn-train experiment=mnist1d_mlp
    whylearn-train experiment=mnist_mlp paths.data_dir=../shared/data trainer.max_epochs=3
    whylearn-train -m experiment=mnist1d_mlp model.width=16,64,256
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from whylearn import build, reference

log = logging.getLogger("whylearn")

# The configs ship inside the package (an installed wheel runs); add your own folder with --config-dir.
CONFIG_DIR = "pkg://whylearn.conf"

SUMMARY_KEYS = ("train/loss", "val/loss", "test/loss", "train/acc", "val/acc", "test/acc", "gap/loss", "gap/acc",
                "weights/l2_total", "weights/dist_from_init", "params", "steps", "fit_time_s", "steps_per_s", "seed")


def _quiet_third_parties() -> None:
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
    """Train and test as ``cfg`` says; return the summary (also written to ``summary.json``)."""
    import lightning as L
    import torch

    from whylearn import jobs
    from whylearn.analysis.figures import plot_run
    from whylearn.loggers import finish_wandb, log_config, log_images, log_members
    from whylearn.tasks.base import flush_logs, get_history

    _quiet_third_parties()
    refs = reference.from_config(cfg)  # a malformed reference block fails here, before anything is written
    reference.activate(refs)  # figures draw the published values they are named in
    out = build.run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    zero = rank_zero_only.rank == 0  # under DDP every rank runs this; rank 0 alone writes files
    if zero:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
        from whylearn.checkpoints import load_checkpoint

        load_checkpoint(ckpt_path)  # a clear error for a missing or corrupt file, before anything is written
    dm = build.build_datamodule(cfg)
    model = build.build_model(cfg, dm)
    build.check_model_data(model, dm)
    task = build.build_task(cfg, model, dm)
    task.run_config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_dir = out / "checkpoints"
    resume_from = jobs.resolve_ckpt_path(cfg.get("ckpt_path"), out)
    callbacks = build.build_callbacks(cfg) + [jobs.GracefulStop(ckpt_dir / "last.ckpt")]
    loggers = build.build_loggers(cfg, run_dir=out)
    if resume_from:
        jobs.continue_csv_loggers(loggers, jobs.checkpoint_step(resume_from))
    trainer = build.build_trainer(cfg, callbacks, loggers)
    _start_loggers(loggers)
    log_config(loggers, cfg)  # the resolved config: W&B's run config, the CSV's hparams.yaml, TensorBoard's hparams
    summary: dict[str, Any] = {"seed": int(cfg.seed), "run_dir": str(out), "status": "running",
                               "params": sum(p.numel() for p in model.parameters()), **getattr(dm, "describe", dict)()}
    summary_path = out / "summary.json"
    try:
        t0 = time.perf_counter()
        trainer.fit(task, datamodule=dm, ckpt_path=resume_from)
        fit_time = time.perf_counter() - t0
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)
        if cfg.get("test_after_fit", True):
            trainer.test(task, datamodule=dm, verbose=False)
        summary.update(task.summary_metrics(dm) if hasattr(task, "summary_metrics") else {})
        summary.update({
            "steps": int(trainer.global_step), "epochs": int(trainer.current_epoch),
            "fit_time_s": round(fit_time, 3), "steps_per_s": round(trainer.global_step / max(fit_time, 1e-9), 2),
            "status": "completed",
        })
        hist = get_history(task)
        for key in ("test/loss", "test/acc"):
            if hist.last(key) is not None:
                summary[key] = hist.last(key)
        summary.update(_final_weight_norms(trainer, task))
    except BaseException as e:
        status = "interrupted" if isinstance(e, (jobs.Preempted, KeyboardInterrupt, SystemExit)) else "failed"
        summary.update({"status": status, "error": f"{type(e).__name__}: {e}", "steps": int(trainer.global_step)})
        summary["reference"] = reference.evaluate(refs, summary)
        if zero:
            write_summary(summary_path, summary)
            plot_run(get_history(task), out / "figures")
        try:  # a signal may also have stopped W&B's service process: keep the original error
            flush_logs(task, wait=True)
            finish_wandb(loggers, summary)
        except Exception as wandb_error:
            log.warning("could not finish the W&B run: %s", wandb_error)
        log.error("run failed at step %d: %s\nsummary (with the error): %s\ncheckpoints kept in: %s",
                  trainer.global_step, e, summary_path, ckpt_dir)
        raise
    if not zero:
        finish_wandb(loggers)
        return summary
    flush_logs(task, wait=True)
    figures = plot_run(get_history(task), out / "figures")
    summary["reference"] = reference.evaluate(refs, summary)  # published beside measured, with verdicts
    write_summary(summary_path, summary)
    for lg in loggers:
        if hasattr(lg, "save"):
            lg.save()
    log_images(loggers, {f"figures/{p.stem}": p for p in figures})
    log_members(loggers, summary.get("members") or [])  # an ensemble run: one row per member
    finish_wandb(loggers, summary)
    _report(cfg, out, summary, loggers)
    return summary


def _final_weight_norms(trainer, task) -> dict[str, float]:
    from whylearn.callbacks import WeightNorms

    meter = next((cb for cb in trainer.callbacks if isinstance(cb, WeightNorms)), None) or WeightNorms(per_layer=False)
    m = meter.measure(task)
    return {k: m.get(k) for k in ("weights/l2_total", "weights/dist_from_init", "weights/rel_dist_from_init")}


def _report(cfg: DictConfig, out: Path, summary: dict, loggers: list) -> None:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    lines = [
        f"run directory: {out}",
        f"  summary:     {out / 'summary.json'}",
        f"  checkpoints: {out / 'checkpoints'}",
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from whylearn import sweeps

    try:
        summary = run(cfg)
    except Exception as e:  # in a multirun, one failing job must not stop the others (whylearn.sweeps)
        if not sweeps.in_multirun():
            raise
        log.exception("job failed: %s", e)
        sweeps.record_failure(build.run_dir(cfg), e)
        return None  # the Optuna sweeper records a trial without a float value as failed
    metric = cfg.get("optimized_metric")
    return summary.get(metric) if metric else None


if __name__ == "__main__":
    main()
