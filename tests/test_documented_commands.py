"""Every documented command is a tested command (issue 14, "What to build" 1).

``tests/doc_commands.py`` finds every command of the docs (```` ```bash ```` blocks of README.md,
docs/**/*.md, slurm/*.md) and classifies it; a form it does not know, a placeholder without a
substitution, or a command outside a bash block fails ``test_every_documented_command_is_known``
with what to do. A new command in the docs is therefore covered without anyone adding it here.

Each block runs in a fresh folder outside the repository (``work/``, beside ``shared/`` -> the real
data, so ``paths.data_dir=../shared/data`` means what it means in a clone; ``scripts``, ``slurm``,
``Makefile`` and ``.venv`` are linked in, the rest of the repository is not there). Commands run in
order; a placeholder (``<time>``, ``<date>``) is replaced by the folder an earlier command of the same
block made. Runs are shortened only by appended overrides: ``debug=fast_dev_run``, or
``trainer.max_steps=N`` for a run whose folder a later command reads (fast_dev_run renames the task).

Default suite (``test_documented_block``), in this process to spare ~5 s of imports per command:
- ``whylearn-train ...``: Hydra's main of whylearn.cli.train with ``sys.argv`` = the command's words plus
  the shortening. The run is composed, built (data, model, task, loggers, trainer) and stopped at its
  first optimizer step, once a loss and its gradients exist (a study, ``study:`` of whylearn.studies.base,
  whose one call is the whole study: built, and stopped as it is called); it runs to its shortened end
  when a later whylearn-eval, whylearn-sample or resume of the block reads it. A multirun launches its
  first job so and composes its last (config resolved, folder made), then stops. The joblib and SLURM
  launchers are replaced in this process by Hydra's basic one (they run for real in the slow suite). GPU
  commands (``trainer=gpu``, a SLURM partition or GPUs this machine does not have) and multi-process DDP
  are composed; a single ``trainer=gpu`` run must fail here with an error naming the GPU. A command already run in another
  block (same words) is not run again.
- ``whylearn-eval``, ``whylearn-sample``: run. ``whylearn-analyze``, ``whylearn-landscape``: their
  arguments parsed, placeholders resolved against the folders the block made (they read whole sweeps).
- ``python scripts/X.py ...``: the script with its arguments until they are parsed (benchmarks take minutes).
- shell lines (loops, ``$(...)``, heredocs, ``mkdir``, ``bash slurm/sweep.sh``): bash runs them with
  stand-ins for whylearn's entry points on PATH that record each call; the calls are then run as above
  (the second and later calls of a loop composed).
- ``make train``: a real ``make train ARGS=debug=fast_dev_run`` in the fresh folder.
- a ```` ```python ```` block: executed (compiled only if it names a reader's run by placeholders).
With WHYLEARN_ROOT (``test_documented_block_with_whylearn_root``): every whylearn-train command composed
(no training) from a fresh folder with WHYLEARN_ROOT set elsewhere: its outputs must be under the root and
nothing may be written to the working folder that the command does not name.
Cost, measured (2026-12-01, 118 default tests, load ~20 on 2 cores): the default part of this file used
206 s of CPU (user 190 + sys 17, children included; 10 min wall under that load). It runs in one process, so on
an idle core that is about 3.5 min. The largest items: scripts/gpu_check.sh's 12 GPU calls (their first started
to check it fails naming the GPU, the rest composed: 12 s), `make train` (a real process, 11 s), the first job of
the ResNet-56 landscape sweep (11 s), README's run that whylearn-eval reads (10 s).
Slow suite (``-m slow``, ``test_documented_block_runs_as_written``): every command as a real process,
``bash -c`` on the text as written, stand-ins that append the shortening to whylearn-train; every job
of a sweep, real launchers, the benchmark scripts in full. GPU commands are skipped there with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import doc_commands as dc

ROOT = dc.ROOT
BLOCKS, PROBLEMS = dc.discover()
REPO_LINKS = ("scripts", "slurm", "Makefile", "pyproject.toml", "constraints.txt", ".venv")


def test_every_documented_command_is_known():
    n = sum(len(c) for c in BLOCKS.values())
    assert n > 50, f"only {n} documented commands found: is the discovery broken?"
    assert not PROBLEMS, "\n\n".join(f"{p.where}: {p.message}" for p in PROBLEMS)


# -- the run of one block ---------------------------------------------------------------------------------------
class CommandFailed(AssertionError):
    pass


class _SweepStarted(BaseException):
    """Stops a multirun in this process after its first and last job (the slow suite runs every job)."""


class _RunStarted(BaseException):
    """Stops a run once it started (see _stop_after_first_step): it composed, built and trained (the default suite)."""


def _stop_after_first_step():
    """A callback that ends a run once it has started: at its first optimizer step, once the loss and its
    gradients are computed (or after the first training batch, for tasks that update by hand). A study (a
    sweep of tiny models, a kernel or PCA study; no Trainer) is stopped as it is called (``hydra_main``)."""
    from lightning.pytorch.callbacks import Callback

    class StopAfterFirstStep(Callback):
        def on_before_optimizer_step(self, *args, **kwargs):  # a loss and its gradients were computed
            raise _RunStarted()

        def on_train_batch_end(self, *args, **kwargs):
            raise _RunStarted()

    return StopAfterFirstStep()


_MNIST1D: dict = {}


def _memoize_mnist1d(mp: pytest.MonkeyPatch) -> None:
    """MNIST-1D generated once per argument set in this test process: it is deterministic (~1 s of CPU each)."""
    from whylearn.data import mnist1d

    real = mnist1d.make_mnist1d

    def memo(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in _MNIST1D:
            _MNIST1D[key] = real(*args, **kwargs)
        return {k: type(v)(v.x.clone(), v.y.clone()) for k, v in _MNIST1D[key].items()}

    mp.setattr(mnist1d, "make_mnist1d", memo)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the measure of cost on a shared machine)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_DONE: dict = {}  # commands already run in this session (same words, environment and mode): (block, where)


class _Parsed(Exception):
    """Raised by a script's ArgumentParser.parse_args once its arguments parsed (the default suite stops there)."""


def _local_partitions() -> set[str]:
    if shutil.which("sinfo") is None:
        return set()
    r = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    return set(r.stdout.split()) if r.returncode == 0 else set()


def _value(args: list[str], key: str) -> str | None:
    vals = [a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+~") == key]
    return vals[-1] if vals else None


def gpu_reason(args: list[str]) -> str | None:
    """Why a whylearn-train command needs hardware this machine lacks (GPUs, a SLURM GPU partition), or None."""
    import torch

    if not torch.cuda.is_available() and (_value(args, "trainer") == "gpu"
                                          or _value(args, "trainer.accelerator") in ("gpu", "cuda")):
        return "asks for a GPU (trainer=gpu); this machine has none"
    if _value(args, "hydra/launcher") in ("slurm", "submitit_slurm"):
        part = _value(args, "hydra.launcher.partition")
        if _value(args, "hydra.launcher.gpus_per_node") not in (None, "null", "0"):
            return "asks SLURM for GPUs; the local cluster has none"
        if part is not None and part not in _local_partitions():
            return f"asks for the SLURM partition {part!r}; the local cluster has {sorted(_local_partitions())}"
    return None


def multiprocess_reason(args: list[str]) -> str | None:
    """Why a whylearn-train command starts several processes (DDP, the joblib launcher), or None.

    Such a command must not run inside this test process (Lightning's DDP launcher starts copies of the
    program and ends them all when one fails): the default suite composes it, the slow suite runs it."""
    devices = _value(args, "trainer.devices")
    if _value(args, "trainer") == "ddp" or (devices is not None and devices not in ("1", "auto")):
        return f"DDP over {devices or 'several'} devices: one process each (real in the slow suite)"
    return None


def slurm_down(argv: list[str]) -> str | None:
    """For sinfo/squeue: why they cannot run here (no SLURM, or its controller is down), or None. As the SLURM
    tests, a reason and not a failure: the cluster is started by `sudo bash slurm/local_cluster.sh` (not run here)."""
    if not argv or argv[0] not in ("sinfo", "squeue"):
        return None
    if shutil.which(argv[0]) is None:
        return f"not run: {argv[0]} is not installed here (no SLURM)"
    up = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
    if up.returncode != 0:
        return f"not run: the SLURM controller is not up here ({(up.stderr or up.stdout).strip()[:120]})"
    return None


def sbatch_gpu_reason(argv: list[str]) -> str | None:
    script = next((a for a in argv[1:] if a.endswith(".sbatch")), None)
    text = (ROOT / script).read_text() if script and (ROOT / script).is_file() else ""
    if any(a.startswith("--gpus") for a in argv) or re.search(r"^#SBATCH\s+--gpus", text, re.M):
        return "asks SLURM for GPUs; the local cluster has none"
    return None


def task_name(args: list[str]) -> str:
    """The task_name a whylearn-train command runs under (names outputs/<task_name>/): an explicit override,
    else the debug or experiment config's own (read from its yaml), else the experiment's name (train.yaml's
    default), else ``train``."""
    import yaml

    def value(key):
        vals = [a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+") == key]
        return vals[-1] if vals else None

    if value("task_name"):
        return value("task_name")
    for group in ("debug", "experiment"):  # debug comes after experiment in train.yaml's defaults
        name = value(group)
        f = ROOT / "conf" / group / f"{name}.yaml"
        if name and f.is_file() and (yaml.safe_load(f.read_text()) or {}).get("task_name"):
            return yaml.safe_load(f.read_text())["task_name"]
    return value("experiment") or "train"


class BlockRun:
    """Runs the commands of one block in a fresh folder. mode: "start" (default suite), "compose", "real" (slow)."""

    def __init__(self, block: str, tmp: Path, mode: str, use_root: bool) -> None:
        self.block, self.cmds, self.mode = block, BLOCKS[block], mode
        self.base = tmp
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (tmp / "shared").symlink_to(shared)
        self.cwd = tmp / "work"
        self.cwd.mkdir()
        for name in REPO_LINKS:
            if (ROOT / name).exists():
                (self.cwd / name).symlink_to(ROOT / name)
        self.root = tmp / "root" if use_root else None
        self.env = {k: v for k, v in os.environ.items() if k not in ("WHYLEARN_ROOT", "PYTHONPATH")}
        self.env.update(WANDB_MODE="offline", WANDB_SILENT="true")
        if self.root:
            self.root.mkdir()
            self.env["WHYLEARN_ROOT"] = str(self.root)
        self.shims = dc.write_shims(tmp / "shims")
        self.log: list[str] = []
        self.failures: list[str] = []
        self.cpu = 0.0
        self._last_start = 0.0

    def feeds_later(self, i: int, args: list[str] | None = None, consumers: tuple[str, ...] | None = None) -> bool:
        """Does a later command of the block read this one's run folder (``outputs/<its task>/``)? Then the run
        keeps its folder (trainer.max_steps instead of fast_dev_run, which renames the task). ``consumers``: only
        later commands of these kinds count. Without ``args`` (a shell line, whose calls are not known yet): any
        later outputs/ path."""
        later = " ".join(c.text for c in self.cmds[i + 1:] if consumers is None or c.kind in consumers)
        if args is None:
            return "outputs/" in later
        task = task_name(args)
        return f"outputs/{task}/" in later or later.rstrip().endswith(f"outputs/{task}")

    def shortening(self, args: list[str], feeds: bool) -> list[str]:
        if not feeds:
            return list(dc.SHORT)
        exp = next((a.split("=", 1)[1] for a in args if a.startswith("experiment=")), "")
        return [f"trainer.max_steps={dc.CHAIN_STEPS_BY_EXPERIMENT.get(exp, dc.CHAIN_STEPS)}"]

    def run(self) -> None:
        for i, cmd in enumerate(self.cmds):
            t0, c0 = time.perf_counter(), _cpu()
            before = set(os.listdir(self.cwd))
            try:
                self.index = i
                note = self.one(cmd, self.feeds_later(i))
                if self.root and not note.startswith("same command"):
                    self.check_root(cmd, before)
            except (KeyboardInterrupt, pytest.skip.Exception):
                raise
            except BaseException as e:  # noqa: BLE001 - every failure is reported with its command
                msg = f"{type(e).__name__}: {e}"
                self.failures.append(f"{cmd.where}: `{cmd.text}`\n    {msg[-3000:]}")
                note = "FAILED"
            cpu = _cpu() - c0
            self.cpu += cpu
            self.log.append(f"{cmd.where} [{cmd.kind}] {time.perf_counter() - t0:5.1f}s wall {cpu:5.1f}s cpu  {note}")

    # -- one command --------------------------------------------------------------------------------------------
    def one(self, cmd: dc.Command, feeds: bool) -> str:
        if cmd.kind == "not_run":
            return f"not run: {cmd.reason}"
        if cmd.kind == "python_block":
            if self.mode == "compose":
                return "python block: run in the default suite"
            return self.python_block(cmd)
        if self.mode == "real":
            return self.real(cmd, feeds)
        if cmd.kind in ("shell", "slurm_script"):
            down = slurm_down(cmd.argv)
            if down:
                return down
            text = dc.substitute(cmd.text, self.cwd, self.roots)
            calls = dc.record(text, self.cwd, self.env, self.shims, cmd.where)
            notes = [self.dispatch(c, feeds, first=(j == 0), cwd=Path(c.cwd)) for j, c in enumerate(calls)]
            return "shell" + (": " + "; ".join(notes) if notes else "")
        return self.dispatch(cmd, feeds, first=True, cwd=self.cwd)

    @property
    def roots(self) -> list[Path]:
        return [self.root] if self.root else []

    def dispatch(self, cmd: dc.Command, feeds: bool, first: bool, cwd: Path) -> str:
        env = {**self.env, **cmd.env}
        if self.mode == "compose" and cmd.kind not in ("train", "sbatch", "shell"):
            return "runs in the default suite (here: whylearn-train commands, composed)"
        if cmd.placeholders:
            text = dc.substitute(cmd.text, cwd, self.roots)
            _, argv = dc.peel(shlex.split(text))
            kind, argv = dc.classify_argv(argv)
        else:
            argv, kind = cmd.argv, cmd.kind
        if "../shared/data" in " ".join(argv) and not (self.base / "shared").is_dir():
            return "skipped: the real data (../shared/data) is not beside this checkout"
        if kind == "train":
            return self.train(argv[1:], env, feeds, first, cwd, cmd)
        if kind in ("eval", "analyze", "sample", "landscape"):
            return self.entry_point(kind, argv[1:], env, cwd)
        if kind == "script":
            return self.script(argv, env, cwd)
        if kind == "make":
            return self.make(argv, env)
        if kind == "sbatch":
            return self.sbatch(argv, env, cwd)
        if kind == "shell":  # a simple utility (mkdir, cat, sinfo): bash runs it as written
            if shutil.which(argv[0]) is None:
                return f"{argv[0]} is not installed here" + (" (no SLURM)" if argv[0] in ("sinfo", "squeue") else "")
            down = slurm_down(argv)
            if down:
                return down
            dc.record(cmd.text, cwd, env, self.shims, cmd.where)
            return "ran"
        raise CommandFailed(f"no runner for kind {kind!r}")

    # -- whylearn-train in this process -------------------------------------------------------------------------
    def train(self, args: list[str], env: dict, feeds: bool, first: bool, cwd: Path, cmd: dc.Command) -> str:
        """whylearn-train in this process: started (stopped after its first training batch), run to its shortened
        end when a later command reads it, or composed (GPU commands, the calls of a loop after the first)."""
        multirun = "-m" in args or "--multirun" in args
        why_not = gpu_reason(args) or multiprocess_reason(args)
        feeds = feeds and self.feeds_later(self.index, args)
        # runs to its end only if a later command runs on its results here (eval, sample, a resume); the others
        # (analyze, landscape, scripts) only parse their arguments in the default suite
        complete = feeds and self.feeds_later(self.index, args, consumers=("eval", "sample", "train"))
        argv = [*args, *self.shortening(args, feeds)]
        key = (tuple(argv), tuple(sorted(cmd.env.items())), self.mode, self.root is not None)
        if not feeds and key in _DONE and _DONE[key][0] != self.block:  # within a block, a repeat means something
            return f"same command as {_DONE[key][1]}: not run again"
        _DONE.setdefault(key, (self.block, cmd.where))
        if gpu_reason(args) and not multirun and "trainer=gpu" in args and self.mode == "start" and first:
            # a GPU run on this CPU machine must fail at once, naming the GPU (the later calls of a loop: composed)
            try:
                self.hydra_main("whylearn-train", argv, env, cwd, jobs="start")
            except BaseException as e:  # noqa: BLE001
                if not re.search(r"gpu|cuda", str(e), re.I):
                    raise CommandFailed(f"a GPU run on this CPU machine failed without naming the GPU: {e}") from e
            else:
                raise CommandFailed("trainer=gpu started on a machine without a GPU")
        if self.mode == "compose" or why_not or not first:
            try:
                n = self.hydra_main("whylearn-train", argv, env, cwd, jobs="compose")
            except CommandFailed as e:
                # a resume of a run this mode only composed: whylearn checks for the checkpoint before building
                # anything (docs/reliability.md); the default suite's "start" mode runs both commands for real
                if self.mode == "compose" and "ckpt_path=last: no checkpoint at" in str(e):
                    return "composed up to the resume's checkpoint check (the run it resumes was only composed)"
                raise
            return f"composed ({n} job(s))" + (f"; {why_not}" if why_not else "")
        n = self.hydra_main("whylearn-train", argv, env, cwd, jobs="complete" if complete else "start")
        what = "ran to its end" if complete else "started"
        return what + (f" (job 0 of {n}; the last composed)" if multirun else "")

    def check_root(self, cmd: dc.Command, before: set[str]) -> None:
        """With WHYLEARN_ROOT, runs go under the root: the working folder gets only what the command names."""
        new = set(os.listdir(self.cwd)) - before
        stray = sorted(n for n in new if n not in cmd.text and not n.startswith("record-"))
        assert not stray, f"with WHYLEARN_ROOT={self.root}, this wrote {stray} into the working folder {self.cwd}"
        if cmd.kind == "train" and not re.search(r"hydra\.(run|sweep)\.dir=", cmd.text):
            assert (self.root / "outputs").is_dir(), f"with WHYLEARN_ROOT={self.root}, no outputs/ under the root"

    def hydra_main(self, prog: str, args: list[str], env: dict, cwd: Path, jobs: str = "complete") -> int:
        """Hydra's main of whylearn.cli.train (or whylearn.cli.eval) in this process; the number of jobs of a multirun.

        jobs: "complete", "start" (a run stops after its first training batch) or "compose" (no run is built).
        A multirun launches its first job (as ``jobs`` says) and its last (composed), then stops.
        """
        import torch
        from hydra.core.plugins import Plugins
        from omegaconf import OmegaConf

        import whylearn.cli.train as T
        from whylearn import build

        seen = []
        real_run, real_callbacks, real_study = T.run, build.build_callbacks, build.build_study

        def run(cfg):
            seen.append(str(build.run_dir(cfg)))
            if jobs != "compose" and len(seen) == 1:
                return real_run(cfg)
            OmegaConf.to_container(cfg, resolve=True)  # every interpolation of the job resolves
            metric = cfg.get("optimized_metric")
            return {metric: 0.0} if metric else {}

        def callbacks(cfg):
            return [*real_callbacks(cfg), *([_stop_after_first_step()] if jobs == "start" else [])]

        def study(cfg):  # a study (whylearn.studies.base) computes its whole result in one call: stopped as it starts
            made = real_study(cfg)
            if jobs != "start":
                return made

            def started(run):
                raise _RunStarted()

            return started

        real_launcher = Plugins.instantiate_launcher
        total = []

        def first_and_last(plugins, hydra_context, task_function, config):
            from hydra._internal.core_plugins.basic_launcher import BasicLauncher

            launcher = real_launcher(plugins, hydra_context=hydra_context, task_function=task_function, config=config)
            if not isinstance(launcher, BasicLauncher):  # joblib, submitit: real in the slow suite
                launcher = BasicLauncher()
                launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)
            launch = launcher.launch

            def trimmed(job_overrides, initial_job_idx):
                ovs = list(job_overrides)
                total.append(len(ovs))
                launch(ovs[:1], initial_job_idx)
                if len(ovs) > 1:
                    launch(ovs[-1:], initial_job_idx + len(ovs) - 1)
                raise _SweepStarted()

            launcher.launch = trimmed
            return launcher

        main = T.main if prog == "whylearn-train" else __import__("whylearn.cli.eval", fromlist=["main"]).main
        self._wait_next_second()
        with _isolated(cwd, env) as mp:
            mp.setattr(sys, "argv", [prog, *args])
            mp.setattr(T, "run", run)
            mp.setattr(build, "build_callbacks", callbacks)
            mp.setattr(build, "build_study", study)
            mp.setattr(Plugins, "instantiate_launcher", first_and_last)
            _memoize_mnist1d(mp)
            threads = torch.get_num_threads()
            try:
                main()
            except (_SweepStarted, _RunStarted):
                pass
            except SystemExit as e:
                if e.code not in (0, None):
                    raise CommandFailed(f"exit status {e.code}: {e}") from None
            finally:
                torch.set_num_threads(threads)
        return total[0] if total else max(len(seen), 1)

    def _wait_next_second(self) -> None:
        # run folders are named by the second (two runs in one second share one: issue 14, finding 5)
        while int(time.time()) == int(self._last_start):
            time.sleep(0.05)
        self._last_start = time.time()

    # -- the other entry points, scripts, make, sbatch ----------------------------------------------------------
    def entry_point(self, kind: str, args: list[str], env: dict, cwd: Path) -> str:
        """whylearn-eval and whylearn-sample run; whylearn-analyze and whylearn-landscape, which read whole sweeps
        (here only started), parse their arguments (they run in the slow suite)."""
        if kind == "eval":
            self.hydra_main("whylearn-eval", args, env, cwd)
            return "ran"
        import importlib

        module = importlib.import_module(dict((v, k) for k, v in dc.MODULES.items())[kind])
        return self._argparse_main(lambda: module.main(args), env, cwd, parse_only=kind in ("analyze", "landscape"))

    def script(self, argv: list[str], env: dict, cwd: Path) -> str:
        """A script of scripts/: its arguments parsed (benchmarks take minutes: they run in the slow suite)."""
        path = cwd / argv[0]
        if not path.is_file():
            raise CommandFailed(f"{argv[0]} not found from the working folder")

        def main():
            sys.argv = [str(path), *argv[1:]]
            sys.path.insert(0, str(path.parent))
            try:
                runpy.run_path(str(path), run_name="__main__")
            finally:
                sys.path.remove(str(path.parent))

        return self._argparse_main(main, env, cwd, parse_only=True)

    def _argparse_main(self, main, env: dict, cwd: Path, parse_only: bool) -> str:
        parse_args = argparse.ArgumentParser.parse_args

        def parsed(parser, args=None, namespace=None):
            raise _Parsed(parse_args(parser, args, namespace))

        with _isolated(cwd, env) as mp:
            mp.setattr(sys, "argv", list(sys.argv))
            if parse_only:
                mp.setattr(argparse.ArgumentParser, "parse_args", parsed)
            try:
                rc = main()
            except _Parsed:
                return "arguments parsed (it runs in the slow suite)"
            except SystemExit as e:
                rc = e.code
        if rc not in (0, None):
            raise CommandFailed(f"exit status {rc}")
        return "ran"

    def make(self, argv: list[str], env: dict) -> str:
        if self.mode != "start":
            return "make: default suite"
        if not (ROOT / ".venv" / ".installed").is_file() or subprocess.run(
                ["make", "-q", ".venv/.installed"], cwd=ROOT, capture_output=True).returncode != 0:
            pytest.skip("the Makefile's .venv is missing or out of date (`make install`)")
        r = subprocess.run([*argv, f"ARGS={' '.join(dc.SHORT)}"], cwd=self.cwd, env=env, capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise CommandFailed(f"exit status {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return "ran (a real process)"

    def sbatch(self, argv: list[str], env: dict, cwd: Path) -> str:
        why_not = sbatch_gpu_reason(argv)
        script = next(a for a in argv[1:] if not a.startswith("-"))
        r = subprocess.run(["bash", "-n", script], cwd=cwd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CommandFailed(f"bash -n {script}: {r.stderr}")
        overrides = argv[argv.index(script) + 1:]
        self.hydra_main("whylearn-train", [*overrides, *dc.SHORT], env, cwd, jobs="compose")
        return "script checked, its overrides composed" + (f" ({why_not})" if why_not else " (submitted in the slow suite)")

    def python_block(self, cmd: dc.Command) -> str:
        if dc.PLACEHOLDER_RE.search(cmd.text):  # an example over a run of the reader's (<run>, <id>): compiled only
            compile(cmd.text, cmd.where, "exec")
            return "compiled (it names a run of the reader's by placeholders)"
        with _isolated(self.cwd, self.env):
            exec(compile(cmd.text, cmd.where, "exec"), {"__name__": "__doc_block__"})
        return "executed"

    # -- the slow suite: real processes -------------------------------------------------------------------------
    def real(self, cmd: dc.Command, feeds: bool) -> str:
        text = dc.substitute(cmd.text, self.cwd, self.roots)
        if cmd.kind == "make":
            return self._bash(f"{text} ARGS='{' '.join(dc.SHORT)}'", [])
        calls = dc.record(text, self.cwd, self.env, self.shims, cmd.where) if cmd.kind != "sbatch" else []
        for c in calls:
            if c.kind == "train" and gpu_reason(c.argv[1:]):
                return f"skipped: {gpu_reason(c.argv[1:])}"
        if cmd.kind == "sbatch":
            why_not = sbatch_gpu_reason(cmd.argv)
            if why_not:
                return f"skipped: {why_not}"
            return self._sbatch_wait(text)
        if cmd.kind == "train" and gpu_reason(cmd.argv[1:]):
            return f"skipped: {gpu_reason(cmd.argv[1:])}"
        train_args = [c.argv[1:] for c in calls if c.kind == "train"] or ([cmd.argv[1:]] if cmd.kind == "train" else [])
        short = self.shortening(train_args[0], feeds) if train_args else []
        return self._bash(text, short)

    def _bash(self, text: str, append: list[str]) -> str:
        env = dc.shim_env(self.env, self.shims)
        env.update(DOCTEST_MODE="append", DOCTEST_APPEND=json.dumps(append))
        r = subprocess.run(["bash", "-c", text], cwd=self.cwd, env=env, capture_output=True, text=True, timeout=6 * 3600)
        if r.returncode != 0:
            raise CommandFailed(f"exit status {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return "ran (a real process)"

    def _sbatch_wait(self, text: str) -> str:
        r = subprocess.run(["bash", "-c", text], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=60)
        job = re.search(r"Submitted batch job (\d+)", r.stdout)
        if r.returncode != 0 or not job:
            raise CommandFailed(f"sbatch failed: {r.stdout}{r.stderr}")
        while subprocess.run(["squeue", "-h", "-j", job.group(1)], capture_output=True, text=True).stdout.strip():
            time.sleep(2)
        return f"job {job.group(1)} ran"


class _isolated:
    """chdir, environment, root logging handlers and signal handlers as they were, after an in-process command."""

    def __init__(self, cwd: Path, env: dict) -> None:
        self.cwd, self.env = cwd, env

    def __enter__(self) -> pytest.MonkeyPatch:
        self.mp = pytest.MonkeyPatch()
        self.mp.chdir(self.cwd)
        for k in set(os.environ) - set(self.env):
            self.mp.delenv(k)
        for k, v in self.env.items():
            self.mp.setenv(k, v)
        self.mp.setenv("HYDRA_FULL_ERROR", "1")
        root = logging.getLogger()
        self.handlers, self.level = root.handlers[:], root.level
        self.signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
        return self.mp

    def __exit__(self, *exc) -> None:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        root = logging.getLogger()
        for h in root.handlers[:]:
            if h not in self.handlers:
                root.removeHandler(h)
                h.close()
        for h in self.handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(self.level)
        for s, h in self.signals.items():
            signal.signal(s, h)
        self.mp.undo()


# -- the tests ----------------------------------------------------------------------------------------------------
def _report(run: BlockRun) -> str:
    return "\n".join(run.log)


BLOCK_IDS = list(BLOCKS)


@pytest.mark.parametrize("block", BLOCK_IDS)
def test_documented_block(block, tmp_path):
    run = BlockRun(block, tmp_path, "start", use_root=False)
    run.run()
    print(_report(run))
    assert not run.failures, "commands of the docs that do not work as written:\n" + "\n".join(run.failures)


def _root_param(block: str):
    """README's blocks (a new user's first commands) in the default suite; the rest of the docs in the slow one,
    which keeps `make test` near its time budget (every block is also run without WHYLEARN_ROOT by default)."""
    return block if block.startswith("README.md") else pytest.param(block, marks=pytest.mark.slow)


@pytest.mark.parametrize("block", [_root_param(b) for b in BLOCK_IDS
                                   if any(c.kind in ("train", "shell", "slurm_script", "sbatch") for c in BLOCKS[b])])
def test_documented_block_with_whylearn_root(block, tmp_path):
    run = BlockRun(block, tmp_path, "compose", use_root=True)
    run.run()
    print(_report(run))
    assert not run.failures, "with WHYLEARN_ROOT set:\n" + "\n".join(run.failures)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCK_IDS)
def test_documented_block_runs_as_written(block, tmp_path):
    run = BlockRun(block, tmp_path, "real", use_root=False)
    run.run()
    print(_report(run))
    assert not run.failures, "as real processes:\n" + "\n".join(run.failures)
