"""The options Lightning-Hydra users reach for first: early stopping and a model summary as callbacks
options, debug=profiler, colored job logging (hydra-colorlog). Real runs."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import MNIST1D_SGD, ROOT, compose

# MNIST-1D, 720 training samples in batches of 100: 8 optimizer steps an epoch (one chunk)
SMALL = ["experiment=mnist1d_mlp", *MNIST1D_SGD, "data.num_samples=1000", "data.steps_per_chunk=8", "threads=1", "logger=csv"]


def _early_stopping_state(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping")]
    return state


def test_early_stopping_stops_when_val_loss_stops_improving(tmp_path):
    from whylearn.experiment import run

    # lr 0: the weights never move, val/loss is the same at every validation: the first check sets the
    # best score, the next two do not improve on it, and with patience 2 training stops after epoch 2
    cfg = compose(SMALL + ["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=2",
                           "optimizer.lr=0", "trainer.max_epochs=30", "trainer.check_val_every_n_epoch=1"], tmp_path)
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["steps"] == 3 * 8 and summary["epochs"] == 3  # not 30 epochs
    state = _early_stopping_state(Path(cfg.paths.output_dir))
    assert state["stopped_epoch"] == 2 and state["wait_count"] == 2


@pytest.mark.parametrize("every", [1, 2])  # Lightning checks at the train epoch's end (1) or the validation's end (2)
def test_early_stopping_sees_each_validations_val_loss(tmp_path, every):
    from whylearn.experiment import run

    cfg = compose(SMALL + ["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=100",
                           "optimizer.lr=0.3", "trainer.max_epochs=12", f"trainer.check_val_every_n_epoch={every}"],
                  tmp_path)
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    with open(run_dir / "csv" / "metrics.csv") as f:
        val = [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(val) == 12 // every
    best = min(range(len(val)), key=lambda i: val[i][1])
    state = _early_stopping_state(run_dir)
    # the best score is the lowest val/loss of all validations, and the number of checks since it is
    # the number of validations after it: EarlyStopping read every validation's own value, once
    assert float(state["best_score"]) == pytest.approx(val[best][1], rel=1e-6)
    assert state["wait_count"] == len(val) - 1 - best
    assert best < len(val) - 1  # (lr 0.3 overfits: the best validation is not the last one)


@pytest.fixture(scope="module")
def options_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One whylearn-train process with the three options that only a real command line shows: the model
    summary, debug=profiler, colored job logging."""
    tmp = tmp_path_factory.mktemp("options")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(PYTHONPATH=str(ROOT / "src"), WANDB_MODE="offline")
    res = subprocess.run([sys.executable, "-m", "whylearn.cli.train", *SMALL, "trainer.max_epochs=3",
                          "callbacks=[default,model_summary]", "debug=profiler",
                          "hydra/job_logging=colorlog", "hydra/hydra_logging=colorlog"],
                         capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir,) = (tmp / "outputs" / "mnist1d_mlp" / "runs").iterdir()
    return res, run_dir


def test_model_summary_option_prints_the_parameter_counts(options_run):
    res, run_dir = options_run
    params = json.loads((run_dir / "summary.json").read_text())["params"]
    assert params == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert re.search(r"│ 1 │ model\.net\s+│ Sequential\s+│ 15\.2 K", res.stdout)  # one row per module, depth 2
    assert re.search(r"Total params: 15\.2 K", res.stdout)


def test_debug_profiler_writes_its_report_into_the_run_folder(options_run):
    _, run_dir = options_run
    report = (run_dir / "fit-profile.txt").read_text()
    assert report.startswith("FIT Profiler Report")  # SimpleProfiler: 3 epochs of one chunk, 3 training batches
    assert re.search(r"\|\s+run_training_batch\s+\|\s+[\d.e-]+\s+\|\s+3\s+\|", report)
    assert (run_dir / "test-profile.txt").is_file()


def test_debug_profiler_takes_the_advanced_profiler(tmp_path):
    from whylearn.experiment import run

    cfg = compose(SMALL + ["trainer.max_epochs=2", "debug=profiler",
                           "trainer.profiler._target_=lightning.pytorch.profilers.AdvancedProfiler"], tmp_path)
    run(cfg)
    report = (Path(cfg.paths.output_dir) / "fit-profile.txt").read_text()
    assert "Profile stats for: run_training_batch" in report and "ncalls" in report  # cProfile per action


def test_colorlog_job_logging_colors_the_console_and_writes_a_plain_log_in_the_run_folder(options_run):
    res, run_dir = options_run
    assert re.search(r"\[\x1b\[32mINFO\x1b\[0m\] - run directory: ", res.stdout)  # INFO in green
    log = (run_dir / "train.log").read_text()
    assert "[whylearn][INFO] - run directory: " in log and "\x1b[" not in log
    assert not (run_dir.parents[3] / "train.log").exists()  # not in the launching directory (the plugin's own config)
