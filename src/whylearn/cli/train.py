"""``whylearn-train``: the Hydra entry point. It composes the config, runs the experiment
(:func:`whylearn.experiment.run`), records a failed job of a multirun (:mod:`whylearn.runs.multirun`) and
returns the optimized metric (for Hydra's sweepers).

    whylearn-train experiment=mnist1d_mlp
    whylearn-train experiment=mnist_mlp paths.data_dir=../shared/data trainer.max_epochs=3
    whylearn-train -m experiment=mnist1d_mlp model.width=16,64,256
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from whylearn.experiment import run  # light: Lightning is imported when a run starts

log = logging.getLogger("whylearn")

# The configs ship inside the package (an installed wheel runs); add your own folder with --config-dir.
CONFIG_DIR = "pkg://whylearn.conf"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # start-up: Lightning is imported once a run starts (not for --help, --cfg or a multirun's launching process)
    from whylearn import build
    from whylearn.runs import multirun

    try:
        summary = run(cfg)
    except Exception as e:  # in a multirun, one failing job must not stop the others (whylearn.runs.multirun)
        if not multirun.in_multirun():
            raise
        log.exception("job failed: %s", e)
        multirun.record_failure(build.run_dir(cfg), e)
        return None  # the Optuna sweeper records a trial without a float value as failed
    metric = cfg.get("optimized_metric")
    return summary.get(metric) if metric else None


if __name__ == "__main__":
    main()
