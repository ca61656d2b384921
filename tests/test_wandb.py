"""W&B as its users expect, read back from real offline run files (``whylearn.loggers.read_wandb_run``):
the resolved config, name / group / job_type / tags per job, log_model offline, watch, no duplicate
rows after a kill -9 and a resume, and the ``wandb sweep`` / ``wandb agent`` recipe of docs/wandb.md.

Each test here fails on the main of 2026-12-01 (d9a78fc): an empty config, one name for every job of
a multirun and no job_type, ``log_model=true`` crashing offline, steps between the last checkpoint and
the kill twice in the W&B run.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import MNIST1D_SGD, ROOT, compose

# 54 optimizer steps (3 epochs of 18, K=4: chunk boundaries inside epochs), a row at every step, the
# gradient norms every 3 steps, a checkpoint at each epoch's end; W&B rows written at once.
RESUMABLE = [
    "experiment=mnist1d_mlp", "data.num_samples=1250", "data.train_size=900", "data.batch_size=50",
    "data.steps_per_chunk=4", "model.hidden=[32,32]", "model.dropout=0.2", "scheduler=cosine",
    "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1", "task.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_epochs=1", "callbacks.grad_norms.every_n_steps=3", "threads=1",
    "logger=wandb", "logger.wandb.id=killtest", "logger.wandb.write_interval_s=0",
]
CURVES = ("train/loss", "lr", "grads/l2_total", "train/loss_epoch", "val/loss", "val/acc", "gap/acc", "weights/l2_total")
SMALL = ["experiment=mnist1d_mlp", *MNIST1D_SGD, "data.num_samples=1000", "trainer.max_epochs=2", "data.steps_per_chunk=8",
         "task.log_every_n_steps=5", "optimizer.lr=0.05", "threads=1"]


def _env(**extra) -> dict:
    # not this process's W&B service (wandb exports WANDB_SERVICE): a job runs with its own, as on a cluster
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}", "WANDB_MODE": "offline", **extra}


def _run_file(run_dir: Path) -> Path:
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def test_offline_run_holds_the_resolved_config_name_group_job_type_and_tags(tmp_path):
    from whylearn.experiment import run
    from whylearn.loggers import read_wandb_run

    cfg = compose(["experiment=mnist1d_mlp", "data.num_samples=1000", "trainer.max_epochs=2", "optimizer.lr=0.05",
                   "threads=1", "logger=many", "tags=[first-hour]", "model.hidden=[24,24]"], tmp_path)
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    wb = read_wandb_run(_run_file(out))
    # the resolved config, nested as Hydra composes it: every top-level group, the values of this run
    for key in ("data", "model", "task", "optimizer", "trainer", "callbacks", "seed", "experiment_name"):
        assert key in wb["config"], key
    assert wb["config"]["model"]["hidden"] == [24, 24] and wb["config"]["optimizer"]["lr"] == 0.05
    assert wb["config"]["paths"]["output_dir"] == str(out)  # resolved, not "${hydra:runtime.output_dir}"
    assert wb["config"]["trainer"]["max_epochs"] == 2 and wb["config"]["seed"] == cfg.seed == 42  # mnist1d_mlp's own seed
    # who the run is
    assert wb["run"]["name"] == "mnist1d_mlp data.num_samples=1000 trainer.max_epochs=2 optimizer.lr=0.05 model.hidden=[24,24]"
    assert wb["run"]["group"] == "mnist1d_mlp" and wb["run"]["job_type"] == "train"
    assert wb["run"]["tags"] == ["first-hour", "mnist1d_mlp"]
    assert wb["summary"]["test/acc"] == pytest.approx(summary["test/acc"])
    # the same config in the CSV logger's hparams.yaml and TensorBoard's
    for logger_dir in ("csv", "tensorboard"):
        hparams = yaml.safe_load((out / logger_dir / "hparams.yaml").read_text())
        assert hparams["model"]["hidden"] == [24, 24] and hparams["optimizer"]["lr"] == 0.05, logger_dir


def test_multirun_jobs_have_their_own_names_one_group_and_the_sweep_job_type(tmp_path):
    from whylearn.loggers import read_wandb_run

    cmd = [sys.executable, "-m", "whylearn.cli.train", "-m", "experiment=mnist1d_mlp", "data.num_samples=1000",
           "trainer.max_epochs=1", "threads=1", "logger=wandb", "model.hidden=[8],[16]"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = next((tmp_path / "outputs" / "mnist1d_mlp" / "multiruns").iterdir())
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0_model.hidden=[8]", "1_model.hidden=[16]"]  # <job number>_<its overrides>
    runs = [read_wandb_run(_run_file(job))["run"] for job in jobs]
    common = "mnist1d_mlp data.num_samples=1000 trainer.max_epochs=1"
    assert [r["name"] for r in runs] == [f"{common} model.hidden=[8] #0", f"{common} model.hidden=[16] #1"]
    assert {r["group"] for r in runs} == {f"mnist1d_mlp/multiruns/{sweep.name}"}  # the sweep, as its folder says
    assert {r["job_type"] for r in runs} == {"sweep-job"}
    assert runs[0]["id"] != runs[1]["id"]


def test_log_model_offline_logs_the_final_checkpoint_as_a_model_artifact(tmp_path, monkeypatch, caplog):
    from whylearn.experiment import run
    from whylearn.loggers import read_wandb_run

    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # W&B stages artifact files here
    caplog.set_level(logging.INFO, logger="whylearn.loggers")
    cfg = compose(SMALL + ["logger=wandb", "logger.wandb.log_model=true", "logger.wandb.mode=offline"], tmp_path)
    summary = run(cfg)  # main: MisconfigurationException "log_model=True and offline=True is an invalid configuration"
    assert summary["status"] == "completed"
    out = Path(cfg.paths.output_dir)
    wb = read_wandb_run(_run_file(out))
    models = [a for a in wb["artifacts"] if a["type"] == "model"]
    assert models and {a["name"] for a in models} == {f"model-{wb['run']['id']}"}
    final = out / "checkpoints" / "last.ckpt"
    digest = base64.b64encode(hashlib.md5(final.read_bytes()).digest()).decode()
    # the last version logged is the checkpoint the run ended with, byte for byte
    assert models[-1]["files"]["model.ckpt"] == {"digest": digest, "size": final.stat().st_size}
    assert "latest" in models[-1]["aliases"]
    # and the run says so (docs/reliability.md: before, nothing in the output mentioned the artifact)
    said = [r.getMessage() for r in caplog.records if r.name == "whylearn.loggers"]
    assert any("model artifact model-" in m and "wandb sync" in m for m in said), said


def test_long_names_keep_the_experiment_and_the_job(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from whylearn.loggers import wandb_identity

    many = [f"+extra.option_number_{i}={i}" for i in range(12)]
    cfg = compose(["experiment=mnist1d_mlp", *many], tmp_path)
    hc = HydraConfig.get()
    with read_write(hc), open_dict(hc):
        hc.mode, hc.job.num = RunMode.MULTIRUN, 7
    name = wandb_identity(cfg)["name"]
    assert len(name) <= 128 and name.startswith("mnist1d_mlp ...") and name.endswith("extra.option_number_11=11 #7")


def test_bad_wandb_options_are_refused_naming_the_option(tmp_path):
    from hydra.errors import InstantiationException

    from whylearn import build

    for override, message in (
        ("logger.wandb.log_model=yes", r"logger.wandb.log_model='yes' is not allowed; allowed: \[false, true, all\]"),
        ("logger.wandb.watch=weights", r"logger.wandb.watch='weights' is not allowed"),
        ("logger.wandb.watch_log_freq=0", r"watch_log_freq must be an integer >= 1"),
    ):
        with pytest.raises((ValueError, InstantiationException), match=message):
            build.build_loggers(compose(["logger=wandb", override], tmp_path))


def test_watch_logs_gradient_histograms_at_their_steps(tmp_path):
    from whylearn.experiment import run
    from whylearn.loggers import read_wandb_run

    # 16 steps (8 per epoch, chunks of 8): a histogram of each parameter's gradient at steps 0, 4, 8, 12
    run(compose(SMALL + ["logger=wandb", "logger.wandb.watch=gradients", "logger.wandb.watch_log_freq=4"], tmp_path))
    wb = read_wandb_run(_run_file(tmp_path / "run"))
    key = "gradients/model.net.0.weight"  # W&B's own key for it (nested: /_type, /bins, /values)
    rows = [row for row in wb["history"] if f"{key}/values" in row]
    assert [row["trainer/global_step"] for row in rows] == [0, 4, 8, 12]
    assert {row[f"{key}/_type"] for row in rows} == {"histogram"}
    assert all(len(row[f"{key}/bins"]) == 65 and sum(row[f"{key}/values"]) == 40 * 100 for row in rows)  # every entry
    assert len({tuple(row[f"{key}/bins"]) for row in rows}) == 4  # four different gradients
    assert not any(k.startswith("parameters/") for row in wb["history"] for k in row)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A run killed with SIGKILL at step 30 (epoch 1; last checkpoint at step 18) after its W&B run
    file holds the rows up to step 29. Returns its folder (W&B run id ``killtest``)."""
    from whylearn.runs.record import checkpoint_step

    tmp = tmp_path_factory.mktemp("killed")
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "whylearn.cli.train", *RESUMABLE, f"hydra.run.dir={run_dir}", "progress=none",
           "+callbacks.fault._target_=wandb_faults.KillWhenWandbHolds", "+callbacks.fault.step=27"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=_env(), timeout=600)
    assert res.returncode == -9, res.stderr[-3000:]
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 18
    return run_dir


def _resume_and_read(make_cfg, tmp_path: Path, src: Path, sub: str, truncate_below: int | None = None):
    from whylearn.experiment import run
    from whylearn.loggers import read_wandb_run, read_wandb_segments
    from whylearn.runs.record import checkpoint_step

    run_dir = tmp_path / sub  # where make_cfg(sub=sub) runs
    shutil.copytree(src, run_dir)
    stopped = _run_file(run_dir)
    if truncate_below is not None:  # the file of a process killed before W&B's service wrote its last rows
        data = stopped.read_bytes()
        size = len(data)
        while max(r.get("trainer/global_step", -1) for r in read_wandb_run(stopped)["history"]) >= truncate_below:
            size -= 256
            stopped.write_bytes(data[:size])
    held = [r["trainer/global_step"] for r in read_wandb_run(stopped)["history"] if "trainer/global_step" in r]
    resumed = run(make_cfg(RESUMABLE + ["ckpt_path=last"], sub=sub))
    assert resumed["status"] == "completed" and resumed["steps"] == 54
    segments = read_wandb_segments(run_dir / "wandb", "killtest")
    return run_dir, held, checkpoint_step(run_dir / "checkpoints" / "last.ckpt"), segments


def _assert_one_row_per_step_as_in_the_history(run_dir: Path, segments: list[dict]) -> None:
    """The W&B run (its segments, in the order `wandb sync` uploads them) holds every logged value once,
    at its step, as the run's own history says (the complete record, kept in the final checkpoint)."""
    import torch

    assert len(segments) == 2  # the stopped segment and the resumed one, one run id
    rows = [row for seg in segments for row in seg["history"]]
    wb_steps = [row["_step"] for row in rows]
    assert wb_steps == sorted(set(wb_steps))  # W&B's own step keeps increasing from one segment to the next
    history = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["whylearn_history"]
    for key in CURVES:
        from_wandb = sorted((row["trainer/global_step"], row[key]) for row in rows if key in row)
        expected = sorted(history[key])
        steps = [s for s, _ in from_wandb]
        twice = sorted({s for s in steps if steps.count(s) > 1})
        assert not twice, f"{key}: steps twice in the W&B run: {twice}"
        assert len(expected) >= 3 and steps == [s for s, _ in expected], key  # none missing, none added
        assert [v for _, v in from_wandb] == pytest.approx([v for _, v in expected], rel=1e-6), key


def test_kill_9_and_resume_leave_each_step_once_in_the_wandb_run(killed_run, make_cfg, tmp_path):
    run_dir, held, _, segments = _resume_and_read(make_cfg, tmp_path, killed_run, "resumed")
    assert max(held) >= 29 > 18  # the stopped run had logged steps past its checkpoint (18): they are trained again
    _assert_one_row_per_step_as_in_the_history(run_dir, segments)


def test_rows_lost_with_the_killed_process_are_sent_from_the_checkpoint(killed_run, make_cfg, tmp_path):
    # W&B's service drops the rows still in flight when its client is killed; here the stopped
    # segment's file ends before step 12, so steps 12..18 (before the checkpoint) are missing from it
    run_dir, held, _, segments = _resume_and_read(make_cfg, tmp_path, killed_run, "truncated", truncate_below=12)
    assert 0 < max(held) < 12
    _assert_one_row_per_step_as_in_the_history(run_dir, segments)


def test_wandb_sweep_recipe_composes_the_agent_command_and_runs_offline(tmp_path):
    """sweeps/wandb_mnist1d.yaml as `wandb agent` would run one of its trials (offline: no server)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils
    from wandb.sdk.lib import config_util

    from whylearn.experiment import SUMMARY_KEYS
    from whylearn.loggers import read_wandb_run

    sweep = yaml.safe_load((ROOT / "sweeps" / "wandb_mnist1d.yaml").read_text())
    assert sweep["method"] in ("grid", "random", "bayes") and sweep["metric"]["name"] in SUMMARY_KEYS
    assert sweep["metric"]["goal"] in ("minimize", "maximize")
    # a trial: one value of each parameter, as the sweep controller would send it
    trial = {}
    for name, spec in sweep["parameters"].items():
        trial[name] = spec["values"][1] if "values" in spec else round((spec["min"] * spec["max"]) ** 0.5, 6)
    cfg = compose([*[c for c in sweep["command"] if "=" in c], *[f"{k}={v}" for k, v in trial.items()]], tmp_path)
    assert cfg.optimizer.lr == trial["optimizer.lr"] and list(cfg.model.hidden) == [100, 100]
    # the agent's own command building (wandb_agent.Agent._command_run): macros replaced by lists
    command = sweep_utils.create_sweep_command(list(sweep["command"]))
    sweep_vars = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in trial.items()}})
    sweep_vars.update(env=["/usr/bin/env"], program=[sweep["program"]], interpreter=["python"])
    argv = []
    for token in command:
        argv += sweep_vars[token[2:-1]] if token.startswith("${") and token.endswith("}") else [token]
    assert argv[:3] == ["/usr/bin/env", "whylearn-train", "experiment=mnist1d_mlp"]
    assert argv[3:] == ["optimizer.lr=" + str(trial["optimizer.lr"]), "model.hidden=[100,100]", "seed=1"]
    # run it as the agent does (its environment: the run id and sweep id it was given), shortened only
    # by appended overrides
    params = tmp_path / "sweep-params.yaml"
    config_util.save_config_file_from_dict(str(params), {k: {"value": v} for k, v in trial.items()})
    argv[1] = str(Path(sys.executable).parent / "whylearn-train")
    res = subprocess.run(argv + ["data.num_samples=1000", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env=_env(WANDB_SWEEP_ID="swp123", WANDB_RUN_ID="trial01", WANDB_SWEEP_PARAM_PATH=str(params)))
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next((tmp_path / "outputs" / "mnist1d_mlp" / "runs").iterdir())
    wb = read_wandb_run(_run_file(run_dir))
    assert wb["run"]["id"] == "trial01"  # the run the sweep controller handed to the agent
    assert wb["run"]["group"] == "mnist1d_mlp wandb-sweep swp123" and wb["run"]["job_type"] == "sweep-job"
    assert wb["config"]["optimizer"]["lr"] == trial["optimizer.lr"] and wb["config"]["seed"] == 1
    assert sweep["metric"]["name"] in wb["summary"]
