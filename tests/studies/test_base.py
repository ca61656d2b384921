"""The Study protocol (whylearn.studies.base): a study runs through whylearn.experiment.run like a training run,
without Trainer.fit and without placeholder data or models, and leaves what a training run leaves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException

from conftest import compose

# the kernels study (generated data, no files needed), small: about a second
KERNELS = ["experiment=kernels", "study.degrees=[1,2]", "study.num_points=120", "study.timing_points=40",
           "study.timing_inputs=2"]


def test_a_study_run_leaves_config_summary_figures_csv_and_wandb_run(tmp_path):
    from whylearn.experiment import run
    from whylearn.loggers import read_wandb_run

    cfg = compose([*KERNELS, "logger=wandb", "logger.wandb.write_interval_s=0"], tmp_path)
    assert "study" in cfg and not any(k in cfg for k in ("data", "model", "task", "optimizer"))
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    assert summary["status"] == "completed"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["lift/z/train_acc"] == summary["lift/z/train_acc"] == 1.0  # the study's own numbers
    assert on_disk["seed"] == cfg.seed and on_disk["run_dir"] == str(out)
    # the reference block: published beside measured, with verdicts, as for a training run
    assert [e["quantity"] for e in on_disk["reference"]] == [r.quantity for r in cfg.reference]
    assert all(e["verdict"] in ("pass", "fail", "not_measured") for e in on_disk["reference"])
    # no field of a placeholder fit
    assert not {"dataset", "params", "epochs", "steps", "segments", "weights/l2_total"} & set(on_disk)
    assert yaml.safe_load((out / "config.yaml").read_text())["study"]["degrees"] == [1, 2]
    assert (out / "figures" / "kernels.png").stat().st_size > 5000
    assert not (out / "checkpoints").exists()
    # the loggers: the resolved config (CSV hparams.yaml, W&B run config) and the summary's scalars
    assert yaml.safe_load((out / "csv" / "hparams.yaml").read_text())["study"]["num_points"] == 120
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "lift/z/train_acc" in header
    wb = read_wandb_run(next((out / "wandb").glob("offline-run-*/run-*.wandb")))
    assert wb["config"]["study"]["_target_"] == "whylearn.analysis.kernels.kernels_experiment"
    assert wb["summary"]["lift/z/train_acc"] == 1.0 and wb["finished"]
    assert any(k.startswith("figures/kernels") for row in wb["history"] for k in row)  # the figure, as a wandb.Image


def test_a_failing_study_records_failed_with_the_error(tmp_path):
    from whylearn.experiment import run

    cfg = compose([*KERNELS, "logger=csv", "+study.no_such_option=1"], tmp_path)
    with pytest.raises(TypeError, match="no_such_option"):
        run(cfg)
    out = Path(cfg.paths.output_dir)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and s["error"].startswith("TypeError") and "no_such_option" in s["error"]
    assert [e["verdict"] for e in s["reference"]] == ["not_measured"] * len(cfg.reference)
    assert (out / "config.yaml").is_file()


def test_a_study_names_the_training_overrides_it_ignores(tmp_path, caplog):
    """trainer.max_epochs, callbacks, test_after_fit mean nothing to a study: the run says so, naming them;
    trainer.fast_dev_run and trainer.accelerator, which it reads, are not named."""
    from whylearn.experiment import ignored_by_study, run

    assert ignored_by_study(["trainer.max_epochs=3", "trainer.accelerator=cpu", "+trainer.fast_dev_run=true",
                             "callbacks=default", "test_after_fit=false", "study.num_points=120", "trainer=gpu"]) == \
        ["trainer.max_epochs=3", "callbacks=default", "test_after_fit=false"]
    cfg = compose([*KERNELS, "logger=csv", "trainer.max_epochs=3", "trainer.accelerator=cpu"], tmp_path)
    with caplog.at_level("WARNING", logger="whylearn"):
        assert run(cfg)["status"] == "completed"
    warned = [r.getMessage() for r in caplog.records if "a study reads only" in r.getMessage()]
    assert len(warned) == 1 and warned[0].endswith("ignored: trainer.max_epochs=3 (a study's own sizes and steps "
                                                    "are study.* options)")


def test_a_study_refuses_data_model_and_checkpoints_before_anything_is_written(tmp_path):
    from whylearn.config import ConfigError
    from whylearn.experiment import run

    for extra, message in ((["data=mnist1d"], "a study (study._target_=whylearn.analysis.kernels.kernels_experiment) "
                                               "takes no data node"),
                           (["model=mlp", "optimizer=sgd"], "takes no model/optimizer node"),
                           (["ckpt_path=last"], "a study does not resume from a checkpoint")):
        cfg = compose([*KERNELS, *extra], tmp_path)
        with pytest.raises(ConfigError, match=re.escape(message)):
            run(cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("experiment, old", [("kernels", "task.analysis.num_points=100"), ("xor_sweep", "task.widths=[2]"),
                                             ("lms_sweep", "data.eigenvalues=[8,1]"),
                                             ("forgetting_split_mnist1d", "optimizer.lr=0.2")])
def test_the_old_override_paths_fail_loudly(tmp_path, experiment, old):
    """Before the Study protocol a study's options were task.analysis.* (or task.*, data.*, optimizer.* of the
    placeholder fit); they are study.* now, and Hydra refuses the old paths (no task, data or optimizer node)."""
    with pytest.raises(ConfigCompositionException, match=f"Could not override '{old.split('=')[0]}'"):
        compose([f"experiment={experiment}", old], tmp_path)


def test_study_run_logs_points_to_every_logger_at_their_step(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from whylearn.studies.base import StudyResult, StudyRun, call_study

    def sweep(run: StudyRun, widths=(1, 2, 3)) -> StudyResult:
        run.sweep(len(widths), "widths")
        for w in widths:
            run.point_done({"width": w, "square": w * w, "ok": True, "name": "skipped"})
        return StudyResult({"widths": list(widths)}, [])

    csv = CSVLogger(tmp_path, name="csv", version="")
    run = StudyRun(tmp_path, [csv], progress="tqdm")
    result = call_study(sweep, run)
    csv.save()
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["square", "step", "width"] and rows[1:] == ["1.0,1,1.0", "4.0,2,2.0", "9.0,3,3.0"]
    assert result.summary == {"widths": [1, 2, 3]} and run.points == 3

    def measurement(out_dir: Path, n: int = 2) -> dict:  # the instruments' form: out_dir in, a dict out
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        (out_dir / "figures" / "m.png").write_bytes(b"png")
        return {"n": n}

    result = call_study(measurement, StudyRun(tmp_path / "m"))
    assert result.summary == {"n": 2} and result.figures == [tmp_path / "m" / "figures" / "m.png"]
    with pytest.raises(TypeError, match="takes neither `run`"):
        call_study(lambda x: {}, StudyRun(tmp_path))
    with pytest.raises(TypeError, match="returned list"):
        call_study(lambda run: [], StudyRun(tmp_path))


def test_a_study_stopped_by_sigterm_records_interrupted(tmp_path, monkeypatch):
    """SLURM's SIGTERM (preemption, scancel) during a study: summary.json says interrupted, with the signal."""
    import os
    import signal

    from whylearn import build
    from whylearn.experiment import run
    from whylearn.runs.preemption import Preempted
    from whylearn.studies.base import StudyRun

    def killed(run: StudyRun):
        run.point_done({"x": 1.0})
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(build, "build_study", lambda cfg: killed)
    cfg = compose([*KERNELS, "logger=csv"], tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted):
        run(cfg)
    s = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["error"] == "Preempted: stopped by SIGTERM; no checkpoint saved (step 1)"
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the study's only while it runs
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[1:] == ["1,1.0"]  # step, x


def test_a_multirun_of_studies_records_the_failed_job_and_keeps_the_other(tmp_path, monkeypatch):
    """In a multirun (Hydra's basic launcher, in this process) a failing study job leaves summary.json status
    failed and the sweep's record; the other job completes (whylearn.runs.multirun, as for training jobs)."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from whylearn.cli.train import main

    sweep = tmp_path / "sweep"
    kernels = [o for o in KERNELS if not o.startswith("study.num_points=")]
    monkeypatch.setattr(sys, "argv", ["whylearn-train", "-m", *kernels, "study.num_points=120,abc", "logger=csv",
                                      "progress=none", f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={sweep}"])
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(BaseException, match="1 of 2 jobs failed"):
            main()
    finally:
        GlobalHydra.instance().clear()
    ok, bad = (json.loads((sweep / f"{i}_study.num_points={v}" / "summary.json").read_text())
               for i, v in enumerate(("120", "abc")))
    assert ok["status"] == "completed" and ok["lift/z/train_acc"] == 1.0
    assert bad["status"] == "failed" and bad["error"].startswith("TypeError")
    table = json.loads((sweep / "sweep_summary.json").read_text())
    assert (table["completed"], table["failed"]) == (1, 1)
