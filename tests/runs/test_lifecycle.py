"""A run's life, tried as a user would (issue 14): its folder, its checkpoints, a resume, a bad value.

- run folders never collide (simultaneous starts) and are reused only when asked (item 6);
- checkpoints load as weights only: a crafted pickle runs nothing, through every entry point (item 7);
- a resume checks before it writes, keeps every logged row, accumulates its time, applies or refuses
  each changed value by name (item 8);
- a bad value names the key, the value and what is allowed, and creates no folder (item 10);
- multirun job folders and summaries name their overrides (item 2).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, compose
from whylearn.runs import preemption, resume
from whylearn.runs.checkpoints import CheckpointError, load_checkpoint

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
# 600 MNIST-1D samples: 432 training examples, batch 100 -> 5 steps an epoch
TINY = ["experiment=mnist1d_mlp", "data.num_samples=600", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
        "callbacks.model_checkpoint.every_n_epochs=1", "logger=csv", "threads=1"]
# tests/scaleout/test_resume.py's run: 18 steps an epoch, 3 epochs, momentum, a cosine schedule, dropout
# (SGD with momentum and seed 0 pinned: mnist1d_mlp itself now follows the mnist1d quickstart, Adam, seed 42)
RESUMABLE = [
    "experiment=mnist1d_mlp", "optimizer=sgd", "optimizer.momentum=0.9", "seed=0", "trainer.max_steps=-1",
    "data.num_samples=1250", "data.train_size=900", "data.batch_size=50",
    "data.steps_per_chunk=4", "model.hidden=[32,32]", "model.dropout=0.2", "scheduler=cosine",
    "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1", "task.log_every_n_steps=1", "optimizer.lr=0.05",
    "logger=csv", "callbacks.model_checkpoint.every_n_epochs=1", "callbacks.grad_norms=null", "threads=1",
]


def cli(module: str, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m <module> <args>``, as the console scripts run it, from ``cwd``."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha1 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def csv_steps(run_dir: Path, key: str = "train/loss") -> list[int]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed tiny run made through the CLI (so its folder has .hydra/ too)."""
    root = tmp_path_factory.mktemp("finished")
    run_dir = root / "run"
    res = cli("whylearn.cli.train", TINY + [f"paths.root_dir={root}", f"hydra.run.dir={run_dir}"], root)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


# -- item 6: run folders ------------------------------------------------------------------------------

def test_simultaneous_starts_get_distinct_folders_and_complete_logs(tmp_path):
    # three real whylearn-train processes that start at one instant, in the same second of the clock
    # (the timestamp is pinned, as when they start in the same second), then train side by side
    starter = tmp_path / "start_together.py"
    starter.write_text(
        "import datetime as dt, sys, time\n"
        "import whylearn.runs.identity as identity\n"
        "class SameSecond(dt.datetime):\n"
        "    @classmethod\n"
        "    def now(cls, tz=None):\n"
        "        return cls(2026, 1, 1, 12, 0, 0)\n"
        "identity.datetime = SameSecond\n"
        "from whylearn.cli.train import main\n"
        "start = float(sys.argv[1]); sys.argv = ['whylearn-train'] + sys.argv[2:]\n"
        "time.sleep(max(0.0, start - time.time()))\n"
        "main()\n")
    start = time.time() + 15
    procs = [subprocess.Popen([sys.executable, str(starter), str(start), *TINY, f"paths.root_dir={tmp_path}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV)
             for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    runs = sorted((tmp_path / "outputs" / "mnist1d_mlp" / "runs").iterdir())
    assert [r.name for r in runs] == ["2026-01-01_12-00-00", "2026-01-01_12-00-00_1", "2026-01-01_12-00-00_2"]
    for r in runs:
        summary = json.loads((r / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["run_dir"] == str(r)
        assert csv_steps(r, "train/loss_epoch") == [5, 10]  # each log whole, one row per epoch, its own
        assert (r / "checkpoints" / "last.ckpt").is_file()


def _make_dir_at_once(parent, barrier, queue):
    import datetime as dt

    import whylearn.runs.identity as identity

    class SameSecond(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 1, 12, 0, 0)

    identity.datetime = SameSecond
    barrier.wait()
    queue.put(str(identity.new_run_dir(parent)))


def test_new_run_dir_gives_each_of_many_simultaneous_processes_its_own_folder(tmp_path, monkeypatch):
    import multiprocessing as mp

    from whylearn.runs.identity import new_run_dir

    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    ctx = mp.get_context("fork")
    n = 8
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_make_dir_at_once, args=(tmp_path, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    got = sorted(queue.get(timeout=60) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
    assert len(set(got)) == n
    names = ["2026-01-01_12-00-00"] + [f"2026-01-01_12-00-00_{i}" for i in range(1, n)]
    assert sorted(Path(g).name for g in got) == sorted(names)
    assert all(Path(g).is_dir() for g in got)
    # inside SLURM the folder is the job's (a requeued job finds it again) and nothing is created
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert new_run_dir(tmp_path / "slurm") == tmp_path / "slurm" / "slurm-77"
    assert not (tmp_path / "slurm").exists()


def test_an_existing_run_folder_is_reused_only_when_asked(finished, tmp_path):
    from whylearn.experiment import run

    before = tree(finished)
    # the CLI without ckpt_path: refused before Hydra writes anything (.hydra/ included)
    res = cli("whylearn.cli.train", TINY + [f"paths.root_dir={tmp_path}", f"hydra.run.dir={finished}"], tmp_path)
    assert res.returncode == 1
    assert f"RunFolderInUse: the run folder {finished} already holds a run" in res.stderr
    assert f"ckpt_path=last hydra.run.dir={finished}" in res.stderr  # how to continue it
    # the same in Python, and with ckpt_path=fresh
    for extra in ([], ["ckpt_path=fresh"]):
        cfg = compose(TINY + extra, tmp_path)
        cfg.paths.output_dir = str(finished)
        with pytest.raises(resume.RunFolderInUse, match="status completed, step 10"):
            run(cfg)
    assert tree(finished) == before
    # another process holding the folder (a run in progress) keeps it, even with ckpt_path=last
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)", str(finished)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = compose(TINY + ["ckpt_path=last"], tmp_path)
        cfg.paths.output_dir = str(finished)
        with pytest.raises(resume.RunFolderInUse, match="in use by another whylearn process"):
            run(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert tree(finished) == before


# -- item 7: safe checkpoints -------------------------------------------------------------------------

class _CreatesAFile:
    """Unpickling this creates the file: what a crafted checkpoint could do instead of anything worse."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n") * 40


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny character-level language-model run (whylearn-sample needs one) from a generated text."""
    from whylearn.experiment import run

    tmp = tmp_path_factory.mktemp("lm")
    (tmp / "input.txt").write_text(TEXT)
    cfg = compose(["experiment=shakespeare_char_cpu", f"data.path={tmp / 'input.txt'}", f"data.cache_dir={tmp / 'cache'}",
                   "data.block_size=16", "data.batch_size=8", "data.steps_per_epoch=20", "data.steps_per_chunk=10",
                   "model.n_layer=1", "model.n_embd=16", "model.n_head=2", "trainer.max_steps=20", "logger=csv",
                   "scheduler.warmup_steps=2", "callbacks.attention_maps.prompt=To be",
                   "task.sample_tokens=0", "threads=1"], tmp)
    assert run(cfg)["status"] == "completed"
    return tmp / "run", cfg


def _crafted(run_dir: Path, marker: Path) -> Path:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    ckpt["callbacks"]["extra"] = _CreatesAFile(marker)
    path = run_dir / "checkpoints" / "crafted.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("entry", ["whylearn-eval", "whylearn-train", "whylearn-sample", "whylearn-landscape"])
def test_a_crafted_checkpoint_is_refused_naming_the_file_and_runs_nothing(lm_run, tmp_path, entry):
    run_dir, _ = lm_run
    marker = tmp_path / "created_by_unpickling"
    crafted = _crafted(run_dir, marker)
    # the object works as advertised: an unrestricted load would create the file
    torch.load(crafted, weights_only=False)
    assert marker.is_file()
    marker.unlink()
    module, args = {
        "whylearn-eval": ("whylearn.cli.eval", [f"ckpt_path={crafted}", f"paths.root_dir={tmp_path}"]),
        "whylearn-train": ("whylearn.cli.train", ["experiment=shakespeare_char_cpu", f"ckpt_path={crafted}",
                                              f"paths.root_dir={tmp_path}"]),
        "whylearn-sample": ("whylearn.cli.sample", [str(crafted), "--max-new-tokens", "5"]),
        "whylearn-landscape": ("whylearn.cli.landscape", ["sharpness", str(crafted), "--samples", "8"]),
    }[entry]
    res = cli(module, args, tmp_path)
    assert res.returncode != 0
    assert f"refused to load {crafted}: it holds a Python object of type io.open" in res.stderr
    assert not marker.exists()
    assert not (tmp_path / "outputs").exists() or entry == "whylearn-eval"  # whylearn-eval's own log folder only
    from whylearn.runs.checkpoints import UnsafeCheckpointError

    with pytest.raises(UnsafeCheckpointError, match="nothing in the file was executed"):
        load_checkpoint(crafted)
    assert not marker.exists()


def test_whylearns_checkpoints_and_lightnings_content_load_as_weights_only(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from whylearn.experiment import run
    from whylearn.runs.checkpoints import torch_load

    # every kind of task whylearn trains: classification, a classic learning rule (no optimizer), a forecaster,
    # a transformer on modular arithmetic; each checkpoint needs no global beyond torch's defaults
    for i, exp in enumerate(["mnist1d_mlp", "perceptron_separable", "kepler_mlp", "grokking"]):
        cfg = compose([f"experiment={exp}", "debug=fast_dev_run", "logger=csv", "threads=1"], tmp_path / str(i))
        run(cfg)
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], exp
        ckpt = load_checkpoint(path)  # weights only, and it names the run's config
        assert ckpt["whylearn_config"]["experiment_name"] == exp
        assert ckpt["callbacks"]["RunRecord"]["segments"][0]["start_step"] == 0

    # Lightning's own content: hyper-parameters (a Path among them), callback states with a monitor,
    # an optimizer and a plateau scheduler
    class Net(L.LightningModule):
        def __init__(self, hidden=(4, 4), lr=0.1, where=Path("/tmp/somewhere")):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, batch, _):
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val/loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
                                                       "monitor": "val/loss"}}

    data = DataLoader(TensorDataset(torch.randn(32, 3), torch.randn(32, 1)), batch_size=8)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val/loss"), EarlyStopping("val/loss")])
    trainer.fit(Net(), data, data)
    trainer.save_checkpoint(tmp_path / "lightning.ckpt")
    ckpt = torch_load(tmp_path / "lightning.ckpt")
    assert ckpt["hyper_parameters"]["where"] == Path("/tmp/somewhere")
    assert any(k.startswith("EarlyStopping") for k in ckpt["callbacks"]) and ckpt["lr_schedulers"][0]["mode"] == "min"


# -- item 8: resume ------------------------------------------------------------------------------------

def test_a_refused_or_failed_resume_leaves_the_run_untouched(finished, tmp_path):
    before = tree(finished)
    # a different model size: refused by name before anything is written (config.yaml, summary.json, .hydra/ ...)
    res = cli("whylearn.cli.train", TINY + [f"paths.root_dir={tmp_path}", f"hydra.run.dir={finished}", "ckpt_path=last",
                                        "model.hidden=[64,64]"], tmp_path)
    assert res.returncode == 1
    assert "ResumeRefused: cannot resume from" in res.stderr
    assert "model.hidden: [256, 256] in the checkpoint, [64, 64] now" in res.stderr
    assert tree(finished) == before
    # in Python: the same refusal (the truncated checkpoint: test_a_truncated_checkpoint_is_named_with_its_size)
    from whylearn.experiment import run

    cfg = compose(TINY + ["ckpt_path=last", "model.hidden=[64,64]"], tmp_path)
    cfg.paths.output_dir = str(finished)
    with pytest.raises(resume.ResumeRefused, match=r"model.hidden: \[256, 256\] in the checkpoint, \[64, 64\] now"):
        run(cfg)
    assert tree(finished) == before
    # a restore that fails inside Lightning (the planning let it through) leaves the run as it was too
    last = tmp_path / "truncated.ckpt"
    last.write_bytes((finished / "checkpoints" / "last.ckpt").read_bytes()[:20000])
    cfg = compose(TINY + ["ckpt_path=last"], tmp_path)
    cfg.paths.output_dir = str(finished)
    real = resume.plan_resume

    def plan_then_break(*a, **k):
        plan = real(*a, **k)
        plan.ckpt_path = str(last)  # the truncated one: Lightning's own load fails
        return plan

    resume.plan_resume, saved = plan_then_break, resume.plan_resume
    try:
        with pytest.raises(Exception, match="Invalid argument|truncated|PytorchStreamReader"):
            run(cfg)
    finally:
        resume.plan_resume = saved
    assert tree(finished) == before


def test_kill_9_loses_no_row_before_the_last_checkpoint_and_the_resume_accounts_both_segments(tmp_path):
    run_dir = tmp_path / "run"
    args = RESUMABLE + [f"paths.root_dir={tmp_path}", f"hydra.run.dir={run_dir}"]
    # SIGKILL at step 27 (epoch 1 of 3, 18 steps an epoch; the last checkpoint was at the end of epoch 0)
    res = cli("whylearn.cli.train", args + ["+callbacks.fault._target_=whylearn.runs.preemption.SignalAtStep",
                                            "+callbacks.fault.step=27", "+callbacks.fault.signal_name=SIGKILL"], tmp_path)
    assert res.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    saved_step = ckpt["global_step"]
    assert saved_step == 18
    assert csv_steps(run_dir)[:saved_step] == list(range(1, saved_step + 1))  # every row up to the checkpoint
    clock = ckpt["callbacks"]["RunRecord"]
    assert clock["fit_time_s"] > 0 and clock["segments"] == [
        {"start_step": 0, "end_step": 18, "fit_time_s": round(clock["fit_time_s"], 3)}]

    from whylearn.experiment import run

    cfg = compose(RESUMABLE + ["ckpt_path=last"], tmp_path)
    cfg.paths.output_dir = str(run_dir)
    run(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 54
    assert csv_steps(run_dir) == list(range(1, 55))  # each step once: the rows past the checkpoint were redone
    first, second = summary["segments"]
    assert first == clock["segments"][0]
    assert second["start_step"] == 18 and second["end_step"] == 54
    assert second["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    # the time is that of both segments (the killed segment's time after its checkpoint is not counted: redone)
    assert summary["fit_time_s"] == pytest.approx(clock["fit_time_s"] + second["fit_time_s"], abs=2e-3)
    assert summary["fit_time_s"] > clock["fit_time_s"]
    assert summary["steps_per_s"] == pytest.approx(54 / summary["fit_time_s"], rel=1e-2)
    assert summary["resumed"] == {"from": str(run_dir / "checkpoints" / "last.ckpt"), "step": 18, "applied": {}}


def test_a_resume_from_an_earlier_checkpoint_keeps_exactly_the_rows_on_disk_at_its_save(tmp_path):
    """Rows of the checkpoint's own step logged after the save (here the gradient norms of step 18, logged
    after the epoch-end checkpoint) were kept by step and logged again: one row twice. The checkpoint now
    records how many rows were on disk at its save, and the resume keeps exactly those."""
    run_dir = tmp_path / "run"
    args = [a for a in RESUMABLE if a != "callbacks.grad_norms=null"] + [
        f"paths.root_dir={tmp_path}", f"hydra.run.dir={run_dir}", "callbacks.model_checkpoint.save_top_k=-1"]
    # SIGKILL at step 45: checkpoints at steps 18 and 36, metrics.csv flushed up to the one at 36
    res = cli("whylearn.cli.train", args + ["+callbacks.fault._target_=whylearn.runs.preemption.SignalAtStep",
                                            "+callbacks.fault.step=45", "+callbacks.fault.signal_name=SIGKILL"], tmp_path)
    assert res.returncode == -signal.SIGKILL
    first = run_dir / "checkpoints" / "epoch000-step000018.ckpt"
    ckpt = load_checkpoint(first)
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        crashed = list(csv.DictReader(f))
    assert len(crashed) > ckpt[resume.CSV_ROWS_KEY][0]  # the crashed run wrote rows past the step-18 save
    assert any(int(r["step"]) == 18 for r in crashed[ckpt[resume.CSV_ROWS_KEY][0]:])  # some of them at step 18

    res = cli("whylearn.cli.train", args + [f"ckpt_path={first}"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        rows = [(int(r["step"]), tuple(sorted(k for k, v in r.items() if v))) for r in csv.DictReader(f)]
    assert len(rows) == len(set(rows)), [r for r in rows if rows.count(r) > 1][:3]  # no row twice
    assert csv_steps(run_dir) == list(range(1, 55))
    grads = csv_steps(run_dir, "grads/l2_total")
    assert len(grads) == len(set(grads)) == 54  # the gradient norms of each step once (steps 0..53)


def test_a_resume_applies_a_new_optimizer_setting_to_the_restored_optimizer_and_records_it(tmp_path):
    from omegaconf import OmegaConf

    from whylearn.experiment import run

    def make(extra, sub):
        cfg = compose(RESUMABLE + extra, tmp_path)
        cfg.paths.output_dir = str(tmp_path / sub)
        return cfg

    def lrs(sub):
        return dict(load_checkpoint(tmp_path / sub / "checkpoints" / "last.ckpt")["whylearn_history"]["lr"])

    run(make([], "straight"))
    with pytest.raises(preemption.Preempted) as stop:
        run(make(["+callbacks.fault._target_=whylearn.runs.preemption.SignalAtStep", "+callbacks.fault.step=27",
                  "+callbacks.fault.signal_name=SIGTERM"], "stopped"))
    k = stop.value.step
    resumed = run(make(["ckpt_path=last", "optimizer.lr=0.01", "optimizer.momentum=0.5"], "stopped"))
    assert resumed["resumed"]["applied"] == {"optimizer.lr": [0.05, 0.01], "optimizer.momentum": [0.9, 0.5]}
    straight, changed = lrs("straight"), lrs("stopped")
    for step in range(1, 55):  # the cosine schedule continues its shape from the new base rate
        expected = straight[step] * (1 if step <= k else 0.01 / 0.05)
        assert changed[step] == pytest.approx(expected, rel=1e-9), step
    state = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.ckpt")["optimizer_states"][0]["param_groups"][0]
    assert state["initial_lr"] == 0.01 and state["momentum"] == 0.5
    config = OmegaConf.load(tmp_path / "stopped" / "config.yaml")
    assert config.optimizer.lr == 0.01 and config.optimizer.momentum == 0.5  # written after the restore


def test_a_resume_refuses_what_a_run_in_progress_cannot_take_naming_each_value(tmp_path):
    from whylearn.experiment import run

    def make(extra):
        cfg = compose(RESUMABLE + ["trainer.max_epochs=1"] + extra, tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    first = run(make([]))
    before = tree(tmp_path / "run")
    cases = {
        "model.hidden=[8]": "model.hidden: [32, 32] in the checkpoint, [8] now",
        "seed=1": "seed: 0 in the checkpoint, 1 now",
        "data.batch_size=10": "data.batch_size: 50 in the checkpoint, 10 now",
        "task.loss=mse": "task.loss: 'cross_entropy' in the checkpoint, 'mse' now",
        "optimizer._target_=torch.optim.Adam": "optimizer._target_: 'torch.optim.SGD' in the checkpoint, 'torch.optim.Adam' now",
        "scheduler.warmup_steps=5": "scheduler.warmup_steps: 0 in the checkpoint, 5 now",
        # a longer run with the schedule's length "auto" would stretch the schedule mid-run
        "trainer.max_epochs=2": f"add scheduler.total_steps={first['steps']} to keep the schedule",
    }
    for override, message in cases.items():
        with pytest.raises(resume.ResumeRefused) as e:
            run(make(["ckpt_path=last", override]))
        assert message in str(e.value), override
    assert tree(tmp_path / "run") == before
    # pinned to the schedule it had, the longer run resumes (and trains past the schedule's end at its final rate)
    longer = run(make(["ckpt_path=last", "trainer.max_epochs=2", f"scheduler.total_steps={first['steps']}"]))
    assert longer["status"] == "completed" and longer["steps"] == 2 * first["steps"]


# -- item 10: bad values ------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected an integer >= -1 or null (-1: no limit)"),
    ("seed=abc", "seed='abc': expected an integer >= 0 and <= 4294967295"),
    ("optimizer.lr=abc", "optimizer.lr='abc': expected a number >= 0"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1: expected a number >= 0"),
    ("model.hidden=[0,-3]", "model.hidden=[0, -3]: expected a list of integers >= 1 or null"),
    ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1 or 'full'"),
    ("model.dropout=1.5", "model.dropout=1.5: expected a number >= 0 and < 1 (a probability)"),
    ("threads=0", "threads=0: expected an integer >= 1 or null"),
    ("trainer.precision=17", "trainer.precision=17: expected one of ["),
])
def test_a_bad_value_names_key_value_and_what_is_allowed_before_anything_is_written(tmp_path, override, message):
    """In-process through Hydra's entry point (the console script's path), then the config check itself."""
    from hydra.core.global_hydra import GlobalHydra

    from whylearn.cli.train import main
    from whylearn.config import ConfigError, Refused, validate

    argv = sys.argv
    sys.argv = ["whylearn-train", "experiment=mnist1d_mlp", override, f"paths.root_dir={tmp_path}", "logger=default"]
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(Refused) as e:
            main()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    assert e.value.code == f"ConfigError: {e.value.error}\n(refused before anything was written)"
    assert message in str(e.value.code)
    assert list(tmp_path.iterdir()) == []  # no run folder, no .hydra/, no W&B run
    with pytest.raises(ConfigError) as direct:
        validate(compose([override], tmp_path))
    assert message in str(direct.value)


def test_a_bad_value_through_the_console_script_exits_1_with_one_clear_message(tmp_path):
    res = cli("whylearn.cli.train", ["experiment=mnist1d_mlp", "trainer.max_epochs=abc", f"paths.root_dir={tmp_path}"], tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[0] == "ConfigError: invalid config value:"
    assert res.stderr.strip().splitlines()[-1] == "(refused before anything was written)"
    assert "trainer.max_epochs='abc'" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("entry", ["ckpt_path=last", "whylearn-sample", "whylearn-landscape"])
def test_a_truncated_checkpoint_is_named_with_its_size(lm_run, tmp_path, entry):
    import shutil

    run_dir, cfg = lm_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    last = copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    before = tree(copy)
    if entry == "ckpt_path=last":  # through Hydra and the resume check, in its own process
        res = cli("whylearn.cli.train", ["experiment=shakespeare_char_cpu", f"data.path={cfg.data.path}",
                                     f"data.cache_dir={cfg.data.cache_dir}", "ckpt_path=last", f"hydra.run.dir={copy}",
                                     f"paths.root_dir={tmp_path}"], tmp_path)
        assert res.returncode == 1
        message = res.stderr
    else:  # the console scripts' functions
        from whylearn.cli.landscape import main as landscape
        from whylearn.cli.sample import main as sample

        with pytest.raises(CheckpointError) as e:
            if entry == "whylearn-sample":
                sample([str(copy), "--max-new-tokens", "5"])
            else:
                landscape(["sharpness", str(last), "--samples", "8"])
        message = str(e.value)
    assert f"cannot read checkpoint {last} (5000 bytes)" in message and "truncated or corrupt" in message
    assert tree(copy) == before


def test_an_empty_or_foreign_file_is_named(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {empty} \\(0 bytes\\)"):
        load_checkpoint(empty)
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="is not a Lightning checkpoint"):
        load_checkpoint(plain)


# -- item 2: multirun job folders ---------------------------------------------------------------------

def test_multirun_job_folders_and_summaries_name_their_overrides(tmp_path):
    res = cli("whylearn.cli.train", ["-m", "experiment=mnist1d_mlp", "model.hidden=[8],[16,16]", "data.num_samples=600",
                                 "trainer.max_epochs=1", "logger=csv", "threads=1"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = next((tmp_path / "outputs" / "mnist1d_mlp" / "multiruns").iterdir())
    jobs_ = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs_ == ["0_model.hidden=[8]", "1_model.hidden=[16,16]"]  # what differs between the jobs, not what they share
    for name, hidden in zip(jobs_, ("[8]", "[16,16]"), strict=True):
        summary = json.loads((sweep / name / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert summary["overrides"] == ["experiment=mnist1d_mlp", f"model.hidden={hidden}", "data.num_samples=600",
                                        "trainer.max_epochs=1", "logger=csv", "threads=1"]
    table = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["job"] for j in table["jobs"]] == jobs_


def test_job_folder_names_are_safe_and_short(tmp_path):
    from whylearn.runs.identity import MAX_NAME_BYTES, job_subdir

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [experiment=mnist1d_mlp, 'seed=0,1', data.data_dir=/x/y, threads=1]\n")
    assert job_subdir(3, ["experiment=mnist1d_mlp", "seed=1", "data.data_dir=/x/y", "threads=1"], str(tmp_path)) == "3_seed=1"
    # a path value does not nest folders; excluded keys are left out; nothing of its own: just the number
    assert job_subdir(0, ["data.data_dir=/a/b", "threads=2"], None, ["threads"]) == "0_data.data_dir=%2Fa%2Fb"
    assert job_subdir(5, [], None) == "5"
    long = job_subdir(1, [f"model.hidden=[{','.join(['512'] * 60)}]"], None)
    assert len(long.encode()) <= MAX_NAME_BYTES and long.startswith("1_model.hidden=[512,512")
    assert long != job_subdir(1, [f"model.hidden=[{','.join(['512'] * 61)}]"], None)  # the hash keeps them apart
