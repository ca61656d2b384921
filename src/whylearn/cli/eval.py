"""``whylearn-eval``: evaluate a checkpoint on the validation and/or test split.

    whylearn-eval ckpt_path=outputs/mnist1d_mlp/runs/<time>/checkpoints/last.ckpt
    whylearn-eval ckpt_path=... split=val data.data_dir=/my/data

The run's composed config travels inside the checkpoint, so the datamodule,
model and task are rebuilt exactly as trained (seeded splits included); any
``data.*`` override given here is applied on top (e.g. a different data_dir).
Writes ``eval_<split>.json`` next to the run's summary and prints the metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from whylearn.cli.train import CONFIG_DIR
from whylearn.experiment import quiet_third_parties

log = logging.getLogger("whylearn")

SPLITS = ("val", "test", "both")


def evaluate(ckpt_path: str, split: str = "test", overrides: dict | None = None, accelerator: str = "cpu") -> dict:
    """Rebuild the run of ``ckpt_path``, load its weights and evaluate.

    Raises:
        ValueError: an unknown split.
        whylearn.runs.checkpoints.CheckpointError: missing or corrupt checkpoint.
    """
    import lightning as L

    # start-up: Lightning is imported once a run starts (not for --help, --cfg or a multirun's launching process)
    from whylearn import build

    quiet_third_parties()
    from whylearn.runs.checkpoints import load_checkpoint  # start-up: torch and Lightning, once the command line is parsed
    from whylearn.tasks.base import get_history

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
    ckpt = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(ckpt["whylearn_config"])
    if overrides:
        cfg = OmegaConf.merge(cfg, overrides)
    L.seed_everything(cfg.seed, verbose=False)
    dm = build.build_datamodule(cfg)
    model = build.build_model(cfg, dm)
    task = build.build_task(cfg, model, dm)
    task.load_state_dict(ckpt["state_dict"])
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    results: dict = {"ckpt_path": str(ckpt_path), "step": ckpt.get("global_step")}
    if split in ("val", "both"):
        trainer.validate(task, datamodule=dm, verbose=False)
        results.update({k: get_history(task).last(k) for k in ("val/loss", "val/acc") if get_history(task).last(k) is not None})
    if split in ("test", "both"):
        trainer.test(task, datamodule=dm, verbose=False)
        results.update({k: get_history(task).last(k) for k in ("test/loss", "test/acc") if get_history(task).last(k) is not None})
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    overrides = OmegaConf.to_container(cfg.get("data"), resolve=True) if cfg.get("data") else None
    results = evaluate(cfg.ckpt_path, cfg.split, {"data": overrides} if overrides else None, cfg.accelerator)
    run_dir = Path(cfg.ckpt_path).resolve().parent.parent
    out = run_dir / f"eval_{cfg.split}.json"
    out.write_text(json.dumps(results, indent=2))
    log.info("%s\nwritten to %s", "  ".join(f"{k}={v}" for k, v in results.items()), out)


if __name__ == "__main__":
    main()
