"""whylearn-train end to end: what a run leaves, the callbacks' numbers, determinism, bad input, W&B offline."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import ConfigCompositionException, MissingConfigException

from conftest import ROOT, compose
from whylearn import build
from whylearn.experiment import SUMMARY_KEYS, run
from whylearn.runs.checkpoints import CheckpointError, load_checkpoint

# the default experiment's data and model, trained briefly by shuffled SGD with a validation split
SMALL = ["experiment=mnist1d_mlp", "data.num_samples=1500", "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=1",
         "callbacks.model_checkpoint.every_n_epochs=1", "data.steps_per_chunk=8", "task.log_every_n_steps=5", "optimizer=sgd",
         "optimizer.lr=0.05", "data.val_size=0.1", "data.shuffle=true"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    cfg = compose(SMALL + ["logger=default"], tmp)
    summary = run(cfg)
    return cfg, summary, Path(cfg.paths.output_dir)


def test_a_run_leaves_config_checkpoint_csv_summary_and_figures(small_run):
    cfg, summary, out = small_run
    assert summary["status"] == "completed"
    for key in SUMMARY_KEYS:
        assert summary[key] is not None, key
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["test/acc"] == summary["test/acc"]
    assert summary["steps"] == 4 * math.ceil(1080 / 100)  # 1500 * 0.8 * 0.9 training samples, batch 100
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "val/loss", "val/acc", "test/loss", "gap/loss", "weights/l2_total", "grads/l2_total"):
        assert key in header
    for fig in ("loss", "accuracy", "generalization_gap", "weight_norms"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000
    # learning happened on MNIST-1D (chance is 0.1)
    assert summary["train/acc"] > 0.3 and summary["test/acc"] > 0.2


def _plain_eval(model, x, y):
    model.eval()
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(-1) == y).float().mean().item()


def test_weight_norms_and_gap_match_independent_computation(small_run):
    cfg, summary, out = small_run
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    final = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    # ||theta||: the norm of all parameters, computed here from the checkpoint
    l2 = torch.sqrt(sum(v.double().pow(2).sum() for v in final.values())).item()
    assert summary["weights/l2_total"] == pytest.approx(l2, rel=1e-5)
    # ||theta - theta_0||: rebuild the initial model from the seed, as the run did
    L.seed_everything(cfg.seed, verbose=False)
    dm = build.build_datamodule(cfg)
    init = build.build_model(cfg, dm).state_dict()
    dist = torch.sqrt(sum((final[k].double() - init[k].double()).pow(2).sum() for k in final)).item()
    assert summary["weights/dist_from_init"] == pytest.approx(dist, rel=1e-5)
    # the gap: separately evaluated train and validation losses of the final model
    model = build.build_model(cfg, dm)
    model.load_state_dict(final)
    tr_loss, tr_acc = _plain_eval(model, dm.train.x, dm.train.y)
    va_loss, va_acc = _plain_eval(model, dm.val.x, dm.val.y)
    assert summary["train/loss"] == pytest.approx(tr_loss, rel=1e-5)
    assert summary["gap/loss"] == pytest.approx(va_loss - tr_loss, rel=1e-5, abs=1e-6)
    assert summary["gap/acc"] == pytest.approx(tr_acc - va_acc, abs=1e-6)
    # the callback's last per-epoch gap (logged after the final epoch's validation) is the same number
    hist = ckpt["whylearn_history"]
    assert hist["gap/loss"][-1][1] == pytest.approx(va_loss - tr_loss, rel=1e-5, abs=1e-6)
    assert hist["weights/l2_total"][-1][1] == pytest.approx(l2, rel=1e-5)


def test_grad_norm_callback_matches_the_gradient_of_the_logged_step(tmp_path):
    from whylearn.callbacks import GradNorms

    seen = {}

    class Probe(GradNorms):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            super().on_before_optimizer_step(trainer, pl_module, optimizer)
            if trainer.global_step % self.every_n_steps == 0:
                grads = [p.grad for p in pl_module.model.parameters()]
                seen[trainer.global_step] = torch.sqrt(sum(g.double().pow(2).sum() for g in grads)).item()

    cfg = compose(SMALL + ["trainer.max_epochs=1", "logger=csv", "callbacks.grad_norms=null"], tmp_path)
    L.seed_everything(0, verbose=False)
    dm = build.build_datamodule(cfg)
    task = build.build_task(cfg, build.build_model(cfg, dm), dm)
    trainer = L.Trainer(max_epochs=1, callbacks=[Probe(every_n_steps=5)], logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    logged = dict(task.history.data["grads/l2_total"])
    assert sorted(logged) == sorted(seen) == [0, 5, 10]
    for step, value in seen.items():
        assert logged[step] == pytest.approx(value, rel=1e-5)
    assert trainer.global_step == 11


def test_same_seed_gives_identical_metrics(tmp_path):
    a = run(compose(SMALL + ["logger=csv", "trainer.max_epochs=2"], tmp_path / "a"))
    b = run(compose(SMALL + ["logger=csv", "trainer.max_epochs=2"], tmp_path / "b"))
    c = run(compose(SMALL + ["logger=csv", "trainer.max_epochs=2", "seed=1"], tmp_path / "c"))
    keys = ["train/loss", "val/loss", "test/loss", "test/acc", "weights/l2_total", "gap/loss"]
    assert [a[k] for k in keys] == [b[k] for k in keys]
    ha = (tmp_path / "a" / "run" / "csv" / "metrics.csv").read_text()
    hb = (tmp_path / "b" / "run" / "csv" / "metrics.csv").read_text()
    assert ha == hb
    assert a["train/loss"] != c["train/loss"]


def test_every_config_composes_and_passes_the_schema(tmp_path):
    from whylearn.config import validate

    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert "mnist1d_mlp" in experiments and "mnist_mlp" in experiments
    for name in experiments:
        cfg = compose([f"experiment={name}"], tmp_path)
        assert cfg.trainer._target_
        if "study" in cfg:  # a study (whylearn.studies.base): its own data and models, none of the run's
            assert cfg.study._target_ and not {"data", "model", "task", "optimizer"} & set(cfg), name
        else:
            assert cfg.data._target_ and cfg.model._target_ and cfg.task._target_, name
        assert cfg.task_name == cfg.experiment_name == name  # train.yaml's default: the experiment's file name
        validate(cfg)  # the shipped configs hold only allowed values (whylearn.config)
    for group in ("data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "debug", "task"):
        for opt in sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")):
            if group == "trainer" and opt == "default":
                continue
            validate(compose([f"{group}={opt}"], tmp_path))


def test_task_name_defaults_to_the_experiment_name(tmp_path):
    """train.yaml names a run after its experiment, once: no experiment file repeats its own name."""
    plain = compose([], tmp_path)
    assert (plain.task_name, plain.experiment_name) == ("train", None)
    assert compose(["experiment=knn", "task_name=mine"], tmp_path).task_name == "mine"  # an override still wins
    debug = compose(["experiment=knn", "debug=fast_dev_run"], tmp_path)  # debug configs name their own folder
    assert (debug.task_name, debug.experiment_name) == ("debug", "knn")
    for f in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        lines = f.read_text().splitlines()
        assert f"task_name: {f.stem}" not in lines and f"experiment_name: {f.stem}" not in lines, f.name


def test_logger_many_builds_csv_wandb_and_tensorboard(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    from whylearn.loggers import WandbRunLogger

    loggers = build.build_loggers(compose(["logger=many"], tmp_path))
    assert {type(lg) for lg in loggers} == {CSVLogger, WandbRunLogger, TensorBoardLogger}
    assert {type(lg) for lg in build.build_loggers(compose(["logger=wandb"], tmp_path))} == {CSVLogger, WandbRunLogger}
    assert issubclass(WandbRunLogger, WandbLogger)  # Lightning's W&B logger, continuing runs across resumes


@pytest.mark.parametrize("override, group", [("experiment=nosuch", "experiment"), ("model=nosuch", "model"),
                                             ("trainer=nosuch", "trainer")])
def test_unknown_group_option_lists_the_allowed_ones(tmp_path, override, group):
    with pytest.raises(MissingConfigException) as e:
        compose([override], tmp_path)
    assert f"Available options in '{group}'" in str(e.value)


def test_unknown_key_is_refused(tmp_path):
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.nosuch'"):
        compose(["model.nosuch=1"], tmp_path)


@pytest.mark.parametrize("override, message", [
    ("model.activation=swish", r"unknown activation 'swish'; allowed: \['gelu', 'relu', 'sigmoid', 'step', 'tanh'\]"),
    ("task.loss=hinge", r"unknown loss 'hinge'; allowed: \['cross_entropy', 'mse'\]"),
    ("data.label_noise=1.5", r"data.label_noise=1.5: expected a number >= 0 and <= 1"),
    ("progress=fancy", r"progress='fancy': expected one of \['auto', 'rich', 'tqdm', 'lines', 'none'\]"),
])
def test_bad_values_name_the_value_and_the_allowed_ones(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        run(compose(SMALL + ["logger=csv", override], tmp_path))


def test_shape_mismatch_is_caught_at_setup_naming_both_shapes(tmp_path):
    with pytest.raises(build.ShapeMismatchError, match=r"shape \(40,\) \(40 features\).*input_size=100"):
        run(compose(SMALL + ["logger=csv", "model.input_size=100"], tmp_path))
    with pytest.raises(build.ShapeMismatchError, match="outputs 7 logits per sample but the data has 10 classes"):
        run(compose(SMALL + ["logger=csv", "model.num_classes=7"], tmp_path))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_data_names_the_paths_searched(tmp_path):
    from whylearn.data.idx import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=str(tmp_path / "empty" / "MNIST" / "raw" / "train-images-idx3-ubyte")):
        run(
            compose(
                ["experiment=mnist_mlp", f"paths.data_dir={tmp_path / 'empty'}", "data.download=false", "logger=csv"], tmp_path
            )
        )


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from whylearn.tasks import NonFiniteLossError

    # the learning rate jumps by 1e12 after 30 steps: the loss overflows a few steps later
    cfg = compose(SMALL + ["logger=csv", "trainer.max_epochs=6", "scheduler=step", "scheduler.step_size=30",
                           "scheduler.gamma=1e12"], tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"training loss is (nan|inf) at step (\d+)") as e:
        run(cfg)
    bad_step = int(str(e.value).split(" at step ")[1].split()[0])
    assert bad_step >= 30
    out = Path(cfg.paths.output_dir)
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] <= bad_step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "NonFiniteLossError" in summary["error"]


def test_corrupt_checkpoint_is_refused_with_its_path_and_nothing_is_lost(small_run, tmp_path):
    from whylearn.cli.eval import evaluate

    _, _, out = small_run
    good = (out / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {bad}.*truncated or corrupt"):
        evaluate(str(bad))
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        evaluate(str(tmp_path / "missing.ckpt"))
    cfg = compose(SMALL + ["logger=csv", f"ckpt_path={bad}"], tmp_path / "resume")
    with pytest.raises(CheckpointError):
        run(cfg)
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()
    assert bad.read_bytes() == good[: len(good) // 2]


def test_eval_reproduces_the_runs_test_metrics(small_run):
    from whylearn.cli.eval import evaluate

    _, summary, out = small_run
    res = evaluate(str(out / "checkpoints" / "last.ckpt"), "both")
    assert res["test/acc"] == pytest.approx(summary["test/acc"])
    assert res["val/loss"] == pytest.approx(summary["val/loss"], rel=1e-5)


def test_offline_wandb_run_writes_its_summary_with_the_metrics(small_run):
    from whylearn.loggers import read_wandb_run

    _, summary, out = small_run
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1  # one run, finished (wandb.finish) so the next job gets its own
    wb = read_wandb_run(files[0])
    assert wb["summary"]["test/acc"] == pytest.approx(summary["test/acc"])
    assert wb["summary"]["val/loss"] == pytest.approx(summary["val/loss"], rel=1e-5)
    assert wb["summary"]["weights/l2_total"] == pytest.approx(summary["weights/l2_total"], rel=1e-5)
    steps = [row["trainer/global_step"] for row in wb["history"] if "train/loss" in row]
    assert steps == sorted(steps) and steps[-1] <= summary["steps"]  # per-step curve, x axis = optimizer steps
    assert any(k.startswith("figures/loss") for row in wb["history"] for k in row)  # figures logged as images
    # W&B rows are written from a background thread: every row of the CSV is there, in order, with its values
    with open(out / "csv" / "metrics.csv") as f:
        csv_rows = [r for r in csv.DictReader(f)]
    for key in ("train/loss", "train/loss_epoch", "val/loss", "grads/l2_total"):
        from_csv = [(int(r["step"]), float(r[key])) for r in csv_rows if r.get(key)]
        from_wandb = [(row["trainer/global_step"], row[key]) for row in wb["history"] if key in row]
        assert len(from_csv) > 1 and [s for s, _ in from_wandb] == [s for s, _ in from_csv], key
        assert [v for _, v in from_wandb] == pytest.approx([v for _, v in from_csv], rel=1e-6), key


def test_background_writer_keeps_order_and_hands_errors_to_the_caller():
    from whylearn.loggers import BackgroundWriter

    class Slow:
        def __init__(self):
            self.rows = []

        def log_metrics(self, row, step):
            if row.get("fail"):
                raise BrokenPipeError("service gone")
            time.sleep(0.001)
            self.rows.append((step, row["x"]))

    lg = Slow()
    w = BackgroundWriter(lg)
    for i in range(50):
        w.put({"x": float(i)}, i)
    w.drain()
    assert lg.rows == [(i, float(i)) for i in range(50)]
    w.put({"fail": 1}, 50)
    with pytest.raises(BrokenPipeError, match="service gone"):
        w.drain()
    w.put({"x": 51.0}, 51)  # the error was handed over once; the writer goes on
    w.drain()
    assert lg.rows[-1] == (51, 51.0)
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.put({"x": 0.0}, 52)


def test_background_writer_writes_in_bursts_and_on_its_own():
    from whylearn.loggers import BackgroundWriter

    class Rec:
        def __init__(self):
            self.rows = []

        def log_metrics(self, row, step):
            self.rows.append(step)

    lg = Rec()
    w = BackgroundWriter(lg, interval=30.0)  # far longer than the test: only drain() can end the wait
    for i in range(40):
        w.put({"x": float(i)}, i)
    assert lg.rows == []  # still waiting out the interval
    w.drain()
    assert lg.rows == list(range(40)) and w.bursts == 1  # one burst, in order
    w.close()
    quick = BackgroundWriter(Rec(), interval=0.01)  # without drain, rows are written after the interval
    quick.put({"x": 1.0}, 7)
    deadline = time.monotonic() + 30
    while not quick.logger.rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert quick.logger.rows == [7]
    with pytest.raises(RuntimeError, match="closed"):
        quick.close()
        quick.put({"x": 2.0}, 8)
    with pytest.raises(ValueError, match="interval"):
        BackgroundWriter(Rec(), interval=-1)


def test_cli_trains_and_reports_where_everything_is(tmp_path):
    cmd = [sys.executable, "-m", "whylearn.cli.train", "experiment=mnist1d_mlp", "trainer.max_epochs=2",
           "data.num_samples=1000", f"paths.root_dir={tmp_path}", "logger=csv"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "run directory:" in log and "summary.json" in log and "figures" in log
    run_dirs = list((tmp_path / "outputs" / "mnist1d_mlp" / "runs").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "summary.json").is_file()
    bad = subprocess.run(cmd[:3] + ["experiment=nosuch"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert bad.returncode != 0
    assert "Available options in 'experiment'" in bad.stderr and "mnist1d_mlp" in bad.stderr
