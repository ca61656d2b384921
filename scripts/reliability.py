"""Try bad inputs and faults on whylearn's entry points, as a user would, and write docs/reliability.md.

    python scripts/reliability.py                     # all cases, writes docs/reliability.md
    python scripts/reliability.py --only K --keep     # the checkpoint cases; keep the work folder

Each case runs real commands (the console scripts of this environment) in a fresh folder and
records the first line of what whylearn says and a verdict. A case passes when whylearn says what is
wrong (a line matching the case's pattern: the key, the value, the file ...) and loses nothing (the
case's checks: no folder written, a finished run untouched, every logged row kept, ...). A case that
exits 0 without a word, or damages what was saved, is a FAIL.

Categories: C config, D data, N numerics, K checkpoints, S signals, X kill -9, P concurrency,
W W&B, M sampling. Needs the real MNIST files for the D cases (``--data``, default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# mnist1d_mlp as a plain SGD run (the experiment itself follows the mnist1d quickstart: Adam, seed 42, [256, 256]
# residual, max_steps 6000, the test split as validation); the pins of tests/conftest.py's MNIST1D_SGD (sgd.yaml has momentum 0.9)
PLAIN = ("model.hidden=[100,100] model.residual=false optimizer=sgd seed=0 trainer.max_steps=-1 "
         "data.val_size=0.1 data.shuffle=true")
TINY = ("experiment=mnist1d_mlp data.num_samples=600 trainer.max_epochs=2 trainer.check_val_every_n_epoch=1 "
        "callbacks.model_checkpoint.every_n_epochs=1 logger=csv threads=1 " + PLAIN)
# 18 steps an epoch, 3 epochs, one row per step: for the signal and kill -9 cases
LONG = ("experiment=mnist1d_mlp data.num_samples=1250 data.train_size=900 data.batch_size=50 data.steps_per_chunk=4 "
        "model.hidden=[32,32] trainer.max_epochs=3 trainer.check_val_every_n_epoch=1 task.log_every_n_steps=1 "
        "callbacks.model_checkpoint.every_n_epochs=1 callbacks.grad_norms=null logger=csv threads=1 "
        "model.residual=false optimizer=sgd seed=0 trainer.max_steps=-1 data.val_size=0.1 "
        "data.shuffle=true")
LM = ("experiment=shakespeare_char_cpu data.path=$W/text/input.txt data.cache_dir=$W/text/cache data.block_size=16 "
      "data.batch_size=8 data.steps_per_epoch=20 data.steps_per_chunk=10 model.n_layer=1 model.n_embd=16 model.n_head=2 "
      "trainer.max_steps=20 scheduler.warmup_steps=2 task.sample_tokens=0 callbacks.attention_maps.prompt=ROMEO logger=csv "
      "threads=1")
TEXT = ("ROMEO: To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n") * 40
ENTRIES = {"whylearn-train": "whylearn.cli.train", "whylearn-eval": "whylearn.cli.eval", "whylearn-sample": "whylearn.cli.sample",
           "whylearn-landscape": "whylearn.cli.landscape"}
CATEGORIES = {"C": "config", "D": "data", "N": "numerics", "K": "checkpoints", "S": "signals", "X": "kill -9",
              "P": "concurrency", "W": "W&B", "M": "sampling"}
CODE = re.compile(r"^(raise |return |File \"|[~^]+$|Error executing job with overrides)|\bf[\"']")  # not messages
LOG_PREFIX = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[\w+\] - ")


# -- running -------------------------------------------------------------------------------------------

@dataclass
class Result:
    rc: int
    out: str
    seconds: float


def entry_argv(entry: str) -> list[str]:
    script = Path(sys.executable).parent / entry
    return [str(script)] if script.is_file() else [sys.executable, "-m", ENTRIES[entry]]


def env() -> dict[str, str]:
    e = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT / "src")}
    e.pop("HYDRA_FULL_ERROR", None)
    return e


def expand(template: str, ctx: Ctx, case_dir: Path) -> list[str]:
    text = template.replace("$TINY", TINY).replace("$LONG", LONG).replace("$LM", LM)
    for key, value in (("$CASE", case_dir), ("$W", ctx.work), ("$DATA", ctx.data)):
        text = text.replace(key, str(value))
    return shlex.split(text)


def run(argv: list[str], cwd: Path, timeout: float = 600, extra_env: dict | None = None) -> Result:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                           env={**env(), **(extra_env or {})}, stdin=subprocess.DEVNULL)
        return Result(p.returncode, p.stderr + "\n" + p.stdout, time.perf_counter() - t0)
    except subprocess.TimeoutExpired as e:
        out = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Result(124, out + f"\n(timed out after {timeout:.0f} s)", time.perf_counter() - t0)


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def first_line(out: str, pattern: str) -> str | None:
    """The first line of ``out`` matching ``pattern`` (log prefixes and colour codes removed)."""
    rx = re.compile(pattern)
    previous = ""
    for raw in out.splitlines():
        line = LOG_PREFIX.sub("", re.sub(r"\x1b\[[0-9;]*m", "", raw)).strip()
        source = previous.startswith('File "')  # a traceback shows the source line after each File "..." line
        previous = line
        if line and rx.search(line) and not source and not CODE.match(line):
            return line
    return None


def csv_steps(run_dir: Path, key: str = "train/loss") -> list[int]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get(key)]


def summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# -- fixtures --------------------------------------------------------------------------------------------

@dataclass
class Ctx:
    work: Path
    data: Path
    made: dict[str, Path] = field(default_factory=dict)

    def fixture(self, name: str) -> Path:
        if name not in self.made:
            self.made[name] = FIXTURES[name](self)
        return self.made[name]

    def copy(self, name: str, case_dir: Path, to: str = "run") -> Path:
        dst = case_dir / to
        shutil.copytree(self.fixture(name), dst)
        return dst


def _train_fixture(ctx: Ctx, name: str, template: str) -> Path:
    folder = ctx.work / "fixtures" / name
    res = run(entry_argv("whylearn-train") + expand(template + f" hydra.run.dir={folder} paths.root_dir=$W/fixtures",
                                                    ctx, folder), ctx.work)
    if res.rc != 0:
        raise RuntimeError(f"fixture {name} failed:\n{res.out[-3000:]}")
    return folder


def _text(ctx: Ctx) -> Path:
    (ctx.work / "text").mkdir(exist_ok=True)
    (ctx.work / "text" / "input.txt").write_text(TEXT)
    return ctx.work / "text"


def _mnist(ctx: Ctx) -> Path:
    src = ctx.data / "MNIST" / "raw"
    if not src.is_dir():
        raise RuntimeError(f"the D cases need the MNIST files: {src} not found (pass --data)")
    dst = ctx.work / "mnist_data" / "MNIST" / "raw"
    shutil.copytree(src, dst)
    return dst.parent.parent


FIXTURES: dict[str, Callable[[Ctx], Path]] = {
    "finished": lambda ctx: _train_fixture(ctx, "finished", "$TINY"),
    "text": _text,
    "lm": lambda ctx: (ctx.fixture("text"), _train_fixture(ctx, "lm", "$LM"))[1],
    "mnist": _mnist,
}


class _CreatesAFile:
    """Unpickling this creates a file: what a crafted checkpoint could do instead of anything worse."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def craft(ctx: Ctx, case_dir: Path, fixture: str = "lm") -> Path:
    """A copy of a run whose checkpoint ``crafted.ckpt`` would create ``$CASE/PWNED`` when unpickled."""
    import torch

    run_dir = ctx.copy(fixture, case_dir)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["callbacks"]["extra"] = _CreatesAFile(str(case_dir / "PWNED"))
    torch.save(ckpt, run_dir / "checkpoints" / "crafted.ckpt")
    return run_dir


def truncate(path: Path, size: int = 5000) -> None:
    path.write_bytes(path.read_bytes()[:size])


# -- cases -----------------------------------------------------------------------------------------------

@dataclass
class Case:
    cat: str
    fault: str
    cmd: str                                  # shown in the table; $TINY, $LONG, $LM, $CASE, $W, $DATA expanded to run it
    says: str                                 # regex of the line that says what is wrong (or what happened)
    rc: str = "error"                         # error (non-zero) | 0 | -9 | 143 | 130 | any
    setup: Callable[[Ctx, Path], None] | None = None
    checks: list[Callable[[Ctx, Path, Result], str | None]] = field(default_factory=list)
    runner: Callable[[Ctx, Path, Case], Result] | None = None
    verdict: str = "refused, named"           # what a pass means, in words
    env: dict = field(default_factory=dict)


def nothing_written(ctx, case_dir, res) -> str | None:
    made = [p for p in (case_dir / "outputs", case_dir / "root" / "outputs") if p.exists()]
    return f"wrote {made[0]}" if made else None


def run_untouched(ctx, case_dir, res) -> str | None:
    before = json.loads((case_dir / "tree.json").read_text())
    after = tree(case_dir / "run")
    return None if after == before else f"the run changed: {sorted(set(before.items()) ^ set(after.items()))[:3]}"


def snapshot(ctx, case_dir) -> None:
    (case_dir / "tree.json").write_text(json.dumps(tree(case_dir / "run")))


def finished_copy(ctx, case_dir) -> None:
    ctx.copy("finished", case_dir)
    snapshot(ctx, case_dir)


def no_pwned(ctx, case_dir, res) -> str | None:
    return "the crafted pickle ran: PWNED exists" if (case_dir / "PWNED").exists() else None


def status_is(expected: str, folder: str = "run") -> Callable:
    def check(ctx, case_dir, res):
        got = summary(case_dir / folder).get("status")
        return None if got == expected else f"summary.json status {got!r}, expected {expected!r}"
    return check


def _mnist_case(corrupt: Callable[[Path], None]) -> Callable:
    def setup(ctx, case_dir):
        data = case_dir / "data"
        shutil.copytree(ctx.fixture("mnist"), data)
        corrupt(data / "MNIST" / "raw")
    return setup


def _swap_labels(raw: Path) -> None:
    """A labels file with the right size and header but wrong content (every label shifted by one)."""
    import gzip

    for name in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"):
        p = raw / name
        if p.is_file():
            data = gzip.decompress(p.read_bytes()) if name.endswith(".gz") else p.read_bytes()
            shifted = data[:8] + bytes((b + 1) % 10 for b in data[8:])
            p.write_bytes(gzip.compress(shifted) if name.endswith(".gz") else shifted)


def _truncate_gz(raw: Path) -> None:
    gz = raw / "train-images-idx3-ubyte.gz"
    plain = raw / "train-images-idx3-ubyte"
    if plain.is_file():
        plain.unlink()
    if gz.is_file():
        truncate(gz, 100_000)


def _signal_runner(sig: int, template: str = "$LONG", at_step: int = 27) -> Callable:
    """Start a run, freeze it at ``at_step`` (SIGSTOP), send ``sig`` from outside, let it go on (SIGCONT).

    The run then handles ``sig`` as it would any external signal; the resume is checked by
    :func:`resumed_completes` (same ``template``, ``ckpt_path=last``).
    """
    def runner(ctx, case_dir, case) -> Result:
        run_dir = case_dir / "run"
        (case_dir / "template.txt").write_text(template)
        argv = entry_argv("whylearn-train") + expand(f"{template} hydra.run.dir={run_dir} paths.root_dir=$CASE", ctx, case_dir)
        t0 = time.perf_counter()
        p = subprocess.Popen(argv + ["+callbacks.freeze._target_=whylearn.runs.preemption.SignalAtStep", f"+callbacks.freeze.step={at_step}",
                                     "+callbacks.freeze.signal_name=SIGSTOP"],
                             cwd=case_dir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = []
        for line in p.stdout:
            out.append(line)
            if "SignalAtStep: sending SIGSTOP" in line:
                time.sleep(0.5)  # the process is stopped now
                p.send_signal(sig)
                p.send_signal(signal.SIGCONT)
                break
        out.append(p.stdout.read())
        p.wait()
        first = Result(p.returncode, "".join(out), time.perf_counter() - t0)
        (case_dir / "first.json").write_text(json.dumps({"rc": first.rc, "steps": csv_steps(run_dir),
                                                         "summary": summary(run_dir)}))
        return first
    return runner


def resumed_completes(ctx, case_dir, res) -> str | None:
    first = json.loads((case_dir / "first.json").read_text())
    template = (case_dir / "template.txt").read_text() if (case_dir / "template.txt").is_file() else "$LONG"
    run_dir = case_dir / "run"
    again = run(entry_argv("whylearn-train") + expand(f"{template} hydra.run.dir={run_dir} paths.root_dir=$CASE ckpt_path=last",
                                                       ctx, case_dir), case_dir)
    if again.rc != 0:
        return f"the resume failed: {first_line(again.out, 'Error') or again.out[-300:]}"
    steps = csv_steps(run_dir)
    if steps != list(range(1, 55)):
        return f"after the resume metrics.csv has steps {steps[:5]}...{steps[-3:]} ({len(steps)} rows), not 1..54 once each"
    s = summary(run_dir)
    if s.get("status") != "completed" or len(s.get("segments", [])) != 2:
        return f"resumed summary: status {s.get('status')}, {len(s.get('segments', []))} segments"
    if first["summary"] and first["summary"].get("status") != "interrupted":
        return f"the stopped run's summary says {first['summary'].get('status')}"
    return None


def kill9_runner(ctx, case_dir, case, template: str = "$LONG") -> Result:
    run_dir = case_dir / "run"
    (case_dir / "template.txt").write_text(template)
    res = run(entry_argv("whylearn-train") + expand(
        f"{template} hydra.run.dir={run_dir} paths.root_dir=$CASE +callbacks.fault._target_=whylearn.runs.preemption.SignalAtStep "
        f"+callbacks.fault.step=27 +callbacks.fault.signal_name=SIGKILL", ctx, case_dir), case_dir)
    (case_dir / "first.json").write_text(json.dumps({"rc": res.rc, "steps": csv_steps(run_dir), "summary": summary(run_dir)}))
    steps = csv_steps(run_dir)
    res.out += f"\nafter kill -9: metrics.csv holds steps {steps[0] if steps else '-'}..{steps[-1] if steps else '-'}"
    return res


def rows_up_to_checkpoint(ctx, case_dir, res) -> str | None:
    import torch

    step = torch.load(case_dir / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    steps = json.loads((case_dir / "first.json").read_text())["steps"]
    return None if steps[:step] == list(range(1, step + 1)) else f"rows up to the checkpoint (step {step}) are missing"


def simultaneous_runner(ctx, case_dir, case) -> Result:
    starter = case_dir / "start_together.py"
    starter.write_text(
        "import datetime as dt, sys, time\nimport whylearn.runs.identity as identity\n"
        "class SameSecond(dt.datetime):\n    @classmethod\n    def now(cls, tz=None):\n        return cls(2026, 1, 1, 12, 0, 0)\n"
        "identity.datetime = SameSecond\nfrom whylearn.cli.train import main\n"
        "start = float(sys.argv[1]); sys.argv = ['whylearn-train'] + sys.argv[2:]\n"
        "time.sleep(max(0.0, start - time.time()))\nmain()\n")
    start = time.time() + 15
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(starter), str(start), *expand("$TINY paths.root_dir=$CASE", ctx, case_dir)],
                              cwd=case_dir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(3)]
    outs = [p.communicate()[0] for p in procs]
    runs = sorted((case_dir / "outputs" / "mnist1d_mlp" / "runs").iterdir())
    note = "3 runs started in the same second: folders " + ", ".join(r.name for r in runs)
    return Result(max(p.returncode for p in procs), "\n".join(outs) + "\n" + note, time.perf_counter() - t0)


def three_complete(ctx, case_dir, res) -> str | None:
    runs = sorted((case_dir / "outputs" / "mnist1d_mlp" / "runs").iterdir())
    if len(runs) != 3:
        return f"{len(runs)} folder(s) for 3 runs"
    bad = [r.name for r in runs if summary(r).get("status") != "completed" or csv_steps(r, "train/loss_epoch") != [5, 10]]
    return f"damaged: {bad}" if bad else None


def in_use_runner(ctx, case_dir, case) -> Result:
    """A run holds its folder; a second process asks to continue it meanwhile."""
    run_dir = ctx.copy("finished", case_dir)
    holder = subprocess.Popen(entry_argv("whylearn-train") + expand(
        f"$TINY trainer.max_epochs=400 paths.root_dir=$CASE hydra.run.dir={run_dir} ckpt_path=last", ctx, case_dir),
        cwd=case_dir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in holder.stdout:  # the first run is training (its folder held) once it logs an epoch
            if "epoch" in line and "step" in line:
                break
        res = run(entry_argv("whylearn-train") + expand(case.cmd.split(" ", 1)[1], ctx, case_dir), case_dir)
    finally:
        holder.terminate()
        holder.wait()
    return res


def wandb_rows_once(ctx, case_dir, res) -> str | None:
    sys.path.insert(0, str(ROOT / "src"))
    from whylearn.loggers import read_wandb_run

    files = sorted((case_dir / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    steps = [row.get("trainer/global_step") for f in files for row in read_wandb_run(f)["history"] if "train/loss" in row]
    return None if sorted(steps) == sorted(set(steps)) else f"{len(steps) - len(set(steps))} train/loss rows twice in W&B"


def cases() -> list[Case]:
    C, D, N, K, S, X, P, W, M = "CDNKSXPWM"
    t = "whylearn-train $TINY paths.root_dir=$CASE "
    resume = "whylearn-train $TINY paths.root_dir=$CASE hydra.run.dir=$CASE/run ckpt_path=last "
    bad_value = dict(checks=[nothing_written], verdict="refused before anything was written, key and value named")
    return [
        # -- config ---------------------------------------------------------------------------------
        Case(C, "non-numeric epochs", t + "trainer.max_epochs=abc", r"trainer\.max_epochs='abc'", **bad_value),
        Case(C, "non-numeric seed", t + "seed=abc", r"seed='abc'", **bad_value),
        Case(C, "non-numeric learning rate", t + "optimizer.lr=abc", r"optimizer\.lr='abc'", **bad_value),
        Case(C, "negative layer widths", t + "model.hidden=[0,-3]", r"model\.hidden=\[0, -3\]", **bad_value),
        Case(C, "negative learning rate", t + "optimizer.lr=-0.1", r"optimizer\.lr=-0\.1", **bad_value),
        Case(C, "batch size 0", t + "data.batch_size=0", r"data\.batch_size=0", **bad_value),
        Case(C, "dropout above 1", t + "model.dropout=1.5", r"model\.dropout=1\.5", **bad_value),
        Case(C, "zero threads", t + "threads=0", r"threads=0", **bad_value),
        Case(C, "unknown precision", t + "trainer.precision=17", r"trainer\.precision=17", **bad_value),
        Case(C, "unknown progress bar", t + "progress=fancy", r"progress='fancy'", **bad_value),
        Case(C, "label noise above 1", t + "data.label_noise=1.5", r"data\.label_noise=1\.5", **bad_value),
        Case(C, "Adam betas with one value", t + "optimizer=adam optimizer.betas=[0.9]", r"optimizer\.betas=\[0\.9\]", **bad_value),
        Case(C, "negative warm-up", t + "scheduler=cosine scheduler.warmup_steps=-1", r"scheduler\.warmup_steps=-1", **bad_value),
        Case(C, "unknown experiment", t.replace("$TINY", "experiment=nosuch"), r"Could not find 'experiment/nosuch'",
             checks=[nothing_written], verdict="refused by Hydra, the available experiments listed"),
        Case(C, "unknown key", t + "model.nosuch=1", r"Could not override 'model\.nosuch'", checks=[nothing_written],
             verdict="refused by Hydra, the key named"),
        Case(C, "unknown activation", t + "model.activation=swish", r"unknown activation 'swish'; allowed",
             verdict="refused at build, value and allowed values named (Hydra's .hydra/ only in the folder)"),
        Case(C, "unknown loss", t + "task.loss=hinge", r"unknown loss 'hinge'; allowed",
             verdict="refused at build, value and allowed values named"),
        Case(C, "input size that does not fit the data", t + "model.input_size=100",
             r"shape \(40,\) \(40 features\).*input_size=100", verdict="refused at setup, both shapes named"),
        Case(C, "one bad job in a sweep", "whylearn-train -m $TINY paths.root_dir=$CASE data.label_noise=1.5,0.2",
             r"SweepFailed: 1 of 2 jobs failed: job 0_data\.label_noise=1\.5",
             checks=[lambda ctx, d, r: None if any(summary(p).get("status") == "completed" for p in
                                                   (d / "outputs").rglob("1_data.label_noise=0.2")) else "job 1 lost"],
             verdict="the bad job named with its error, the other job completed, exit 1"),
        # -- data -----------------------------------------------------------------------------------
        Case(D, "MNIST files missing", "whylearn-train experiment=mnist_mlp paths.data_dir=$CASE/empty data.download=false "
             "logger=csv paths.root_dir=$CASE", r"DataNotFound|not found", verdict="refused, the paths searched named"),
        Case(D, "MNIST labels with wrong content", "whylearn-train experiment=mnist_mlp paths.data_dir=$CASE/data "
             "data.download=false trainer.max_steps=5 logger=csv paths.root_dir=$CASE", r"checksum|sha256|does not match",
             setup=_mnist_case(_swap_labels), verdict="refused, the file and the fix named"),
        Case(D, "truncated MNIST .gz", "whylearn-train experiment=mnist_mlp paths.data_dir=$CASE/data data.download=false "
             "trainer.max_steps=5 logger=csv paths.root_dir=$CASE", r"train-images-idx3-ubyte",
             setup=_mnist_case(_truncate_gz), verdict="refused, the file named"),
        Case(D, "empty text file", "whylearn-train $LM data.path=$CASE/empty.txt data.cache_dir=$CASE/cache paths.root_dir=$CASE",
             r"empty\.txt", setup=lambda ctx, d: (ctx.fixture("text"), (d / "empty.txt").write_text(""))[1],
             verdict="refused, the file named"),
        Case(D, "text shorter than one block", "whylearn-train $LM data.path=$CASE/short.txt data.cache_dir=$CASE/cache "
             "paths.root_dir=$CASE", r"short\.txt|too short|at least",
             setup=lambda ctx, d: (ctx.fixture("text"), (d / "short.txt").write_text("to be or"))[1],
             verdict="refused, the minimum length named"),
        Case(D, "text file missing", "whylearn-train $LM data.path=$CASE/nosuch.txt data.cache_dir=$CASE/cache "
             "paths.root_dir=$CASE", r"nosuch\.txt", setup=lambda ctx, d: ctx.fixture("text"), verdict="refused, the file named"),
        Case(D, "text changed after its token cache was built", "whylearn-train $LM data.path=$CASE/t.txt "
             "data.cache_dir=$CASE/cache paths.root_dir=$CASE", r"cache|stale|rebuil|t\.txt", rc="any",
             setup=_stale_cache, verdict="the cache is checked against its text (rebuilt or refused, and said)"),
        # -- numerics -------------------------------------------------------------------------------
        Case(N, "learning rate jumps by 1e12", t + "trainer.max_epochs=6 scheduler=step scheduler.step_size=8 "
             "scheduler.gamma=1e12 hydra.run.dir=$CASE/run", r"NonFiniteLossError: training loss is (nan|inf) at step",
             checks=[status_is("failed")], verdict="stopped at the step, last good checkpoint kept, status failed"),
        Case(N, "huge learning rate", t + "optimizer.lr=1e6 hydra.run.dir=$CASE/run",
             r"NonFiniteLossError: training loss is (nan|inf) at step", checks=[status_is("failed")],
             verdict="stopped at the step, status failed"),
        Case(N, "huge initialization", t + "model.init_scale=1e30 hydra.run.dir=$CASE/run",
             r"NonFiniteLossError: training loss is (nan|inf) at step", checks=[status_is("failed")],
             verdict="stopped at the step, status failed"),
        # -- checkpoints ----------------------------------------------------------------------------
        Case(K, "ckpt_path to a missing file", t + "ckpt_path=$CASE/nosuch.ckpt", r"no such checkpoint file",
             checks=[nothing_written], verdict="refused before anything was written, path named"),
        Case(K, "ckpt_path to a truncated file", t + "ckpt_path=$CASE/run/checkpoints/last.ckpt",
             r"cannot read checkpoint .*last\.ckpt \(5000 bytes\)",
             setup=lambda ctx, d: truncate(ctx.copy("finished", d) / "checkpoints" / "last.ckpt"),
             checks=[nothing_written], verdict="refused, file and size named, nothing written"),
        Case(K, "ckpt_path to a crafted pickle", "whylearn-train $LM paths.root_dir=$CASE ckpt_path=$CASE/run/checkpoints/crafted.ckpt",
             r"refused to load .*crafted\.ckpt", setup=craft, checks=[no_pwned, nothing_written],
             verdict="refused, nothing in the pickle ran"),
        Case(K, "whylearn-eval on a crafted pickle", "whylearn-eval ckpt_path=$CASE/run/checkpoints/crafted.ckpt paths.root_dir=$CASE",
             r"refused to load .*crafted\.ckpt", setup=craft, checks=[no_pwned], verdict="refused, nothing in the pickle ran"),
        Case(K, "whylearn-sample on a crafted pickle", "whylearn-sample $CASE/run/checkpoints/crafted.ckpt",
             r"refused to load .*crafted\.ckpt", setup=craft, checks=[no_pwned], verdict="refused, nothing in the pickle ran"),
        Case(K, "whylearn-landscape on a crafted pickle", "whylearn-landscape sharpness $CASE/run/checkpoints/crafted.ckpt",
             r"refused to load .*crafted\.ckpt", setup=craft, checks=[no_pwned], verdict="refused, nothing in the pickle ran"),
        Case(K, "whylearn-eval on a truncated checkpoint", "whylearn-eval ckpt_path=$CASE/run/checkpoints/last.ckpt "
             "paths.root_dir=$CASE", r"cannot read checkpoint .*\(5000 bytes\)",
             setup=lambda ctx, d: truncate(ctx.copy("finished", d) / "checkpoints" / "last.ckpt"), verdict="refused, file named"),
        Case(K, "whylearn-sample on a truncated checkpoint", "whylearn-sample $CASE/run", r"cannot read checkpoint .*\(5000 bytes\)",
             setup=lambda ctx, d: truncate(ctx.copy("lm", d) / "checkpoints" / "last.ckpt"), verdict="refused, file named"),
        Case(K, "whylearn-landscape on a truncated checkpoint", "whylearn-landscape slice $CASE/run/checkpoints/last.ckpt --grid 3",
             r"cannot read checkpoint .*\(5000 bytes\)",
             setup=lambda ctx, d: truncate(ctx.copy("finished", d) / "checkpoints" / "last.ckpt"), verdict="refused, file named"),
        Case(K, "an empty file as checkpoint", "whylearn-eval ckpt_path=$CASE/empty.ckpt paths.root_dir=$CASE",
             r"cannot read checkpoint .*empty\.ckpt \(0 bytes\)", setup=lambda ctx, d: (d / "empty.ckpt").write_bytes(b""),
             verdict="refused, file named"),
        Case(K, "a plain state_dict as checkpoint", "whylearn-eval ckpt_path=$CASE/weights.pt paths.root_dir=$CASE",
             r"not a Lightning checkpoint", setup=lambda ctx, d: _plain_weights(d / "weights.pt"), verdict="refused, file named"),
        Case(K, "random bytes as checkpoint", t + "ckpt_path=$CASE/random.ckpt", r"cannot read checkpoint .*random\.ckpt",
             setup=lambda ctx, d: (d / "random.ckpt").write_bytes(os.urandom(4096)), checks=[nothing_written],
             verdict="refused, file named, nothing written"),
        Case(K, "ckpt_path=last without the run's folder", t + "ckpt_path=last", r"ckpt_path=last resumes the run in a given folder",
             checks=[nothing_written], verdict="refused, says to add hydra.run.dir"),
        Case(K, "ckpt_path=last in a folder without checkpoint", t + "ckpt_path=last hydra.run.dir=$CASE/empty_run",
             r"no checkpoint at .*empty_run/checkpoints/last\.ckpt", checks=[lambda ctx, d, r: "folder made" if (
                 d / "empty_run").exists() else None], verdict="refused, the path named, no folder made"),
        Case(K, "resume with another model size", resume + "model.hidden=[64,64]",
             r"model\.hidden: \[100, 100\] in the checkpoint, \[64, 64\] now", setup=finished_copy, checks=[run_untouched],
             verdict="refused by name, the finished run untouched (.hydra/ too)"),
        Case(K, "resume with another seed", resume + "seed=3", r"seed: 0 in the checkpoint, 3 now", setup=finished_copy,
             checks=[run_untouched], verdict="refused by name, run untouched"),
        Case(K, "resume with another optimizer", resume + "optimizer=adam",
             r"optimizer\._target_: 'torch\.optim\.SGD' in the checkpoint, 'torch\.optim\.Adam' now", setup=finished_copy,
             checks=[run_untouched], verdict="refused by name, run untouched"),
        Case(K, "resume stretching an auto-length schedule", "whylearn-train $TINY scheduler=cosine paths.root_dir=$CASE "
             "hydra.run.dir=$CASE/run ckpt_path=last trainer.max_epochs=4", r"scheduler\.total_steps=auto",
             setup=lambda ctx, d: (_train_with(ctx, d, "$TINY scheduler=cosine"), snapshot(ctx, d)),
             checks=[run_untouched], verdict="refused, says which total_steps keeps the schedule"),
        Case(K, "resume with a truncated last.ckpt", resume, r"cannot read checkpoint .*last\.ckpt \(5000 bytes\)",
             setup=lambda ctx, d: (truncate(ctx.copy("finished", d) / "checkpoints" / "last.ckpt"), snapshot(ctx, d)),
             checks=[run_untouched], verdict="refused, file named, run untouched"),
        Case(K, "resume with a new learning rate", resume + "trainer.max_epochs=4 optimizer.lr=0.02",
             r"resume: optimizer\.lr changed from 0\.01 \(checkpoint\) to 0\.02", rc="0", setup=finished_copy,
             checks=[lambda ctx, d, r: None if summary(d / "run").get("resumed", {}).get("applied") == {"optimizer.lr": [0.01, 0.02]}
                     else "not recorded in summary.json"], verdict="applied to the restored optimizer, logged and recorded"),
        # -- signals --------------------------------------------------------------------------------
        Case(S, "SIGTERM (kill, preemption)", "whylearn-train $LONG hydra.run.dir=$CASE/run; kill -TERM <pid> at step 27; "
             "then ckpt_path=last", r"stopped by SIGTERM; checkpoint saved at step", rc="143", runner=_signal_runner(signal.SIGTERM),
             checks=[resumed_completes], verdict="checkpoint at the next chunk, status interrupted; the resume logs each step once"),
        Case(S, "SIGINT (Ctrl-C)", "whylearn-train $LONG hydra.run.dir=$CASE/run; kill -INT <pid> at step 27; then ckpt_path=last",
             r"stopped by SIGINT; checkpoint saved at step", rc="130", runner=_signal_runner(signal.SIGINT),
             checks=[resumed_completes], verdict="checkpoint at the next chunk; the resume logs each step once"),
        Case(S, "SIGUSR2 (time-limit warning)", "whylearn-train $LONG hydra.run.dir=$CASE/run; kill -USR2 <pid> at step 27; "
             "then ckpt_path=last", r"stopped by SIGUSR2; checkpoint saved at step", rc="140",
             runner=_signal_runner(signal.SIGUSR2), checks=[resumed_completes],
             verdict="checkpoint at the next chunk; the resume logs each step once"),
        # -- kill -9 --------------------------------------------------------------------------------
        Case(X, "kill -9 mid-epoch, then resume", "whylearn-train $LONG hydra.run.dir=$CASE/run +callbacks.fault."
             "_target_=whylearn.runs.preemption.SignalAtStep +callbacks.fault.step=27 +callbacks.fault.signal_name=SIGKILL; "
             "then ckpt_path=last", r"after kill -9: metrics\.csv holds steps 1\.\.", rc="-9", runner=kill9_runner,
             checks=[rows_up_to_checkpoint, resumed_completes],
             verdict="every row up to the last checkpoint kept; the resume redoes the rest, each step once"),
        Case(X, "kill -9, then a fresh start in the same folder", "whylearn-train $TINY hydra.run.dir=$CASE/run paths.root_dir=$CASE",
             r"RunFolderInUse: the run folder .* already holds a run",
             setup=lambda ctx, d: (kill9_runner(ctx, d, None), snapshot(ctx, d)), checks=[run_untouched],
             verdict="refused, the command that continues it given; nothing overwritten"),
        # -- concurrency ----------------------------------------------------------------------------
        Case(P, "three runs started in the same second", "3 x whylearn-train $TINY, started at one instant, same timestamp",
             r"3 runs started in the same second: folders", rc="0", runner=simultaneous_runner, checks=[three_complete],
             verdict="three folders (_1, _2 suffixes), three complete logs"),
        Case(P, "a second process on a run in progress", "whylearn-train $TINY paths.root_dir=$CASE hydra.run.dir=$CASE/run "
             "ckpt_path=last trainer.max_epochs=400", r"in use by another whylearn process", runner=in_use_runner,
             verdict="refused while the first one runs"),
        Case(P, "start in a finished run's folder", t + "hydra.run.dir=$CASE/run", r"RunFolderInUse: the run folder .* already holds",
             setup=finished_copy, checks=[run_untouched], verdict="refused, says ckpt_path=last continues it; untouched"),
        Case(P, "ckpt_path=fresh in a finished run's folder", t + "hydra.run.dir=$CASE/run ckpt_path=fresh",
             r"RunFolderInUse: ckpt_path=fresh", setup=finished_copy, checks=[run_untouched], verdict="refused, untouched"),
        # -- W&B ------------------------------------------------------------------------------------
        Case(W, "W&B offline (no login)", "whylearn-train $TINY logger=default paths.root_dir=$CASE hydra.run.dir=$CASE/run",
             r"W&B run: .*offline", rc="0", verdict="trains; says where the offline run is and how to upload it"),
        Case(W, "W&B online without an API key", "whylearn-train $TINY logger=default logger.wandb.mode=online "
             "paths.root_dir=$CASE", r"API key|wandb login|not logged in", env={"WANDB_MODE": ""},
             verdict="refused, says how to log in (no prompt)"),
        Case(W, "unknown W&B mode", "whylearn-train $TINY logger=default logger.wandb.mode=fancy paths.root_dir=$CASE",
             r"mode 'fancy'; allowed", verdict="refused, the allowed modes named"),
        Case(W, "log_model=true while offline", "whylearn-train $TINY logger=default logger.wandb.log_model=true "
             "paths.root_dir=$CASE hydra.run.dir=$CASE/run", r"log_model|artifact", rc="any",
             verdict="no crash: the final checkpoint as an artifact, or a clear refusal"),
        Case(W, "W&B after kill -9 and resume", "whylearn-train $LONG logger=default hydra.run.dir=$CASE/run +callbacks.fault."
             "_target_=whylearn.runs.preemption.SignalAtStep +callbacks.fault.step=27 +callbacks.fault.signal_name=SIGKILL; then "
             "ckpt_path=last", r"after kill -9: metrics\.csv holds steps 1\.\.", rc="-9",
             runner=lambda ctx, d, c: kill9_runner(ctx, d, c, "$LONG logger=default"),
             checks=[resumed_completes, wandb_rows_once], verdict="one train/loss row per step in W&B after the resume"),
        # -- sampling -------------------------------------------------------------------------------
        Case(M, "sampling a model that is not a language model", "whylearn-sample $CASE/run", r"no text tokenizer",
             setup=lambda ctx, d: ctx.copy("finished", d), verdict="refused, says it needs a language model"),
        Case(M, "a prompt character not in the vocabulary", "whylearn-sample $CASE/run --prompt 'Zebra' --max-new-tokens 5",
             r"character 'Z' \(U\+005A\) at position 0 not in the vocabulary", setup=lambda ctx, d: ctx.copy("lm", d), verdict="refused, the character named"),
        Case(M, "a non-ASCII prompt character", "whylearn-sample $CASE/run --prompt 'to bé' --max-new-tokens 5",
             r"character 'é' \(U\+00E9\) at position 4 not in the vocabulary", setup=lambda ctx, d: ctx.copy("lm", d),
             verdict="refused, the character named as typed"),
        Case(M, "a backslash in the prompt", "whylearn-sample $CASE/run --prompt 'to\\nbe' --max-new-tokens 5",
             r"character '\\\\' \(U\+005C\) at position 2 not in the vocabulary|^to\\nbe", rc="any", setup=lambda ctx, d: ctx.copy("lm", d),
             verdict="taken literally"),
        Case(M, "a run folder without a checkpoint", "whylearn-sample $CASE/nothing", r"no checkpoint at .*nothing",
             setup=lambda ctx, d: (d / "nothing").mkdir(), verdict="refused, the path named"),
        Case(M, "negative temperature", "whylearn-sample $CASE/run --temperature -1 --max-new-tokens 5", r"temperature",
             setup=lambda ctx, d: ctx.copy("lm", d), verdict="refused, the value named"),
        Case(M, "zero samples", "whylearn-sample $CASE/run --num-samples 0 --max-new-tokens 5", r"num.samples|num_samples",
             setup=lambda ctx, d: ctx.copy("lm", d), verdict="refused, the value named"),
    ]


def _stale_cache(ctx: Ctx, case_dir: Path) -> None:
    (case_dir / "t.txt").write_text(TEXT)
    _train_with(ctx, case_dir, "$LM data.path=$CASE/t.txt data.cache_dir=$CASE/cache", folder="first")
    (case_dir / "t.txt").write_text(TEXT.upper())  # the same length, other characters


def _plain_weights(path: Path) -> None:
    import torch

    torch.save({"w": torch.ones(3)}, path)


def _train_with(ctx: Ctx, case_dir: Path, template: str, folder: str = "run") -> Path:
    run_dir = case_dir / folder
    res = run(entry_argv("whylearn-train") + expand(f"{template} hydra.run.dir={run_dir} paths.root_dir=$CASE", ctx, case_dir),
              case_dir)
    if res.rc != 0:
        raise RuntimeError(res.out[-2000:])
    return run_dir


# -- the table -------------------------------------------------------------------------------------------

def judge(case: Case, ctx: Ctx, case_dir: Path, res: Result) -> tuple[str, str]:
    line = first_line(res.out, case.says)
    problems = []
    if line is None:
        problems.append("silent: no line says what happened")
    if case.rc == "error" and res.rc == 0:
        problems.append("exit status 0")
    elif case.rc not in ("error", "any") and str(res.rc) != case.rc:
        problems.append(f"exit status {res.rc}, expected {case.rc}")
    for check in case.checks:
        try:
            why = check(ctx, case_dir, res)
        except Exception as e:  # noqa: BLE001 - a check that cannot run is a failure to show
            why = f"check failed: {type(e).__name__}: {e}"
        if why:
            problems.append(why)
    if line is None:
        tail = [x for x in res.out.strip().splitlines() if x.strip()]
        line = tail[-1].strip() if tail else "(nothing)"
    verdict = case.verdict if not problems else "FAIL: " + "; ".join(problems)
    return line, verdict


def md(text: str, limit: int = 230) -> str:
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--only", default="", help="category letters (e.g. CK) or words in the fault")
    p.add_argument("--work", default=None, help="work folder (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="whylearn-reliability-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(work, Path(args.data).resolve())
    by_category = bool(args.only) and all(ch in CATEGORIES for ch in args.only)
    chosen = [c for c in cases() if not args.only or (c.cat in args.only if by_category else args.only.lower() in c.fault.lower())]
    rows, t_start = [], time.perf_counter()
    for i, case in enumerate(chosen, 1):
        case_dir = work / f"case{i:02d}"
        case_dir.mkdir()
        try:
            if case.setup:
                case.setup(ctx, case_dir)
            if case.runner:
                res = case.runner(ctx, case_dir, case)
            else:
                entry, rest = case.cmd.split(" ", 1)
                res = _run_with_env(entry_argv(entry) + expand(rest, ctx, case_dir), case_dir, case.env)
            line, verdict = judge(case, ctx, case_dir, res)
        except Exception as e:  # noqa: BLE001 - a case that cannot be set up is reported, not hidden
            res, line, verdict = Result(-1, "", 0.0), f"(the case could not run: {type(e).__name__}: {e})", "FAIL: setup"
        rows.append((case, res, line, verdict))
        print(f"[{i}/{len(chosen)}] {CATEGORIES[case.cat]}: {case.fault}: rc={res.rc} {res.seconds:.0f}s\n    {line}\n    "
              f"-> {verdict}", flush=True)
    failed = [r for r in rows if r[3].startswith("FAIL")]
    write_table(Path(args.out), rows, time.perf_counter() - t_start, " ".join(sys.argv[1:]))
    print(f"{len(rows) - len(failed)} of {len(rows)} cases pass; table in {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def _run_with_env(argv: list[str], cwd: Path, changes: dict) -> Result:
    """Run with environment variables set (value) or removed (empty value)."""
    t0 = time.perf_counter()
    e = env()
    for k, v in changes.items():
        if v:
            e[k] = v
        else:
            e.pop(k, None)
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=e, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stderr + "\n" + p.stdout, time.perf_counter() - t0)


def write_table(out: Path, rows: list, seconds: float, cli_args: str) -> None:
    failed = sum(r[3].startswith("FAIL") for r in rows)
    by_cat = {}
    for case, *_ in rows:
        by_cat[CATEGORIES[case.cat]] = by_cat.get(CATEGORIES[case.cat], 0) + 1
    lines = [
        "# Reliability: bad inputs and faults, tried",
        "",
        "Each row is a real run of the command, made by `scripts/reliability.py` (regenerate the whole table with",
        "`python scripts/reliability.py`; it takes about "
        f"{seconds / 60:.0f} minutes here). \"whylearn says\" is the first line of the output that says what is",
        "wrong (log prefixes removed); the verdict is the script's check of the exit status and of what was left on",
        "disk (no folder written, a finished run byte for byte untouched, every logged row kept ...). A FAIL row is",
        "a fault that is silent or loses data.",
        "",
        "In the commands: `$TINY` = `" + TINY + "`;",
        "`$LONG` = `" + LONG + "` (54 steps, a checkpoint every 18);",
        "`$LM` = a one-layer character model on a generated text (`" + LM.split(" data.cache_dir")[0] + " ...`);",
        "`$CASE` = the case's own empty folder, `$CASE/run` a copy of a finished run (or a run made by the case).",
        "",
        f"{len(rows)} cases ({', '.join(f'{n} {c}' for c, n in by_cat.items())}); {len(rows) - failed} pass, {failed} fail.",
        "",
        "| # | category | fault | command | whylearn says (first line) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, (case, _res, line, verdict) in enumerate(rows, 1):
        lines.append(f"| {i} | {CATEGORIES[case.cat]} | {md(case.fault)} | `{md(case.cmd, 300)}` | {md(line)} | "
                     f"{'**' + md(verdict, 300) + '**' if verdict.startswith('FAIL') else md(verdict, 300)} |")
    lines += ["", f"Generated with `python scripts/reliability.py {cli_args}`".rstrip() + "."]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
