"""Progress in optimizer steps: the rich and tqdm bars in a real pseudo-terminal, the plain log lines.

On the main of 2026-12-01 (d9a78fc) the bar counted Lightning batches (chunks of K steps: ``4/4``
per epoch, ``it/s``) without loss or accuracy, and the log lines printed the last validation's
numbers beside the current step without saying when they were measured; these tests fail there.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import MNIST1D_SGD, ROOT, compose

# 450 optimizer steps: 15 per epoch (1440 training samples / 100) in chunks of 4, 30 epochs,
# validation every 5 epochs (at steps 75, 150, ..., 450), train/loss every 40 steps
RUN = ["experiment=mnist1d_mlp", *MNIST1D_SGD, "data.num_samples=2000", "trainer.max_epochs=30",
       "trainer.check_val_every_n_epoch=5",
       "data.steps_per_chunk=4", "logger=csv", "threads=1"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_pty(argv: list[str], cwd: Path, timeout: float = 600) -> tuple[int, list[str]]:
    """Run ``argv`` with a pseudo-terminal (200 x 50) as its stdin/stdout/stderr, as in a user's shell.

    Returns the exit status and the screen output split into lines at every carriage return or
    newline (each refresh of a bar is one line), with the terminal's escape sequences removed.
    """
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(PYTHONPATH=str(ROOT / "src"), TERM="xterm-256color", COLUMNS="200", LINES="50", WANDB_MODE="offline")
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    out, deadline = bytearray(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    if time.monotonic() >= deadline:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    text = ANSI.sub("", out.decode(errors="replace"))
    return os.waitstatus_to_exitcode(status), [line for line in re.split(r"[\r\n]", text) if line.strip()]


def _csv_value(run_dir: Path, key: str, step: int) -> float:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return next(float(r[key]) for r in csv.DictReader(f) if r.get(key) and int(r["step"]) == step)


def _one_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "outputs" / "mnist1d_mlp" / "runs").iterdir()
    return run_dir


def _check_bar(lines: list[str], run_dir: Path, *, final: str, rate: str, sep: str) -> None:
    """The training bar's refreshes (``lines``): counts in optimizer steps up to ``final``, a positive
    ``rate``, the logged values (``<key><sep><value>``, ``@<step>`` when older than the current step)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 450
    bars = [line for line in lines if line.lstrip().startswith("Epoch")]
    assert len(bars) > 10
    last = bars[-1]
    assert final in last, last
    assert float(re.search(rate, last).group(1)) > 0
    # the values shown are those logged: the final validation's, and train/loss with its step (logged every 40)
    for key in ("val/loss", "val/acc"):
        shown = float(re.search(rf"{key}{sep}([\d.]+)", last).group(1))
        assert shown == pytest.approx(summary[key], abs=5e-5), key
    m = re.search(rf"train/loss{sep}([\d.]+) @(\d+)", last)
    assert int(m.group(2)) == 440 and float(m.group(1)) == pytest.approx(_csv_value(run_dir, "train/loss", 440), abs=5e-5)
    # between two validations the bar says which step the validation numbers are from
    stale = [m for m in (re.search(rf"val/acc{sep}([\d.]+) @(\d+)", line) for line in bars) if m]
    assert stale and all(int(m.group(2)) % 75 == 0 for m in stale)
    assert {float(m.group(1)) for m in stale if m.group(2) == "375"} == {round(_csv_value(run_dir, "val/acc", 375), 4)}
    # the count only ever goes up, by optimizer steps, never restarting at an epoch
    counts = [int(m.group(1)) for m in (re.search(r" (\d+)/450", line) for line in bars) if m]
    assert counts == sorted(counts) and counts[-1] == 450 and max(counts[:-1], default=0) > 15


def test_rich_bar_in_a_terminal_counts_optimizer_steps_and_shows_loss_and_accuracy(tmp_path):
    whylearn_train = str(Path(sys.executable).parent / "whylearn-train")
    rc, lines = run_in_pty([whylearn_train, *RUN], tmp_path)  # progress=auto: rich, since stdout is a terminal
    assert rc == 0, "\n".join(lines[-30:])
    # `Epoch 29/29 ━━━ 450/450 steps 0:00:02 • 0:00:00 191 steps/s train/loss: 1.3523 @440 val/loss: 1.5983 ...`
    _check_bar(lines, _one_run_dir(tmp_path), final="Epoch 29/29 ", rate=r" (\d+) steps/s", sep=": ")
    assert any(" 450/450 steps " in line for line in lines)


def test_tqdm_bar_counts_optimizer_steps_and_shows_loss_and_accuracy(tmp_path, capsys):
    from whylearn.experiment import run

    cfg = compose(RUN + ["progress=tqdm"], tmp_path)
    run(cfg)
    lines = [line for line in re.split(r"[\r\n]", ANSI.sub("", capsys.readouterr().out)) if line.strip()]
    # `Epoch 29: 100%|███| 450/450 [00:02<00:00, 191.3step/s, train/loss=1.3523 @440, val/loss=1.5983, ...]`
    _check_bar(lines, Path(cfg.paths.output_dir), final=" 450/450 [", rate=r", ([\d.]+)step/s", sep="=")


def test_log_lines_give_each_value_with_the_step_it_was_measured_at(tmp_path, caplog):
    from whylearn.experiment import run

    cfg = compose(RUN + ["+callbacks.lines._target_=whylearn.callbacks.LogLines", "+callbacks.lines.every_n_seconds=0"],
                  tmp_path)
    with caplog.at_level("INFO", logger="whylearn"):
        summary = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) > 30  # one per chunk (every_n_seconds=0)
    checked = 0
    for line in lines:
        step = int(re.search(r"\| step (\d+)/450 \|", line).group(1))
        for key, value, at in re.findall(r"(train/loss|val/loss|val/acc|gap/acc) ([\d.-]+) @ step (\d+)", line):
            at = int(at)
            assert at <= step
            assert float(value) == pytest.approx(_csv_value(run_dir, key, at), abs=5e-5), (line, key)
            checked += 1
        if step > 75:  # after the first validation every line has the validation numbers, with their step
            assert re.search(r"val/acc [\d.]+ @ step \d+", line), line
    assert checked > 50
    last = lines[-1]
    assert "step 450/450" in last and f"val/acc {summary['val/acc']:.4f} @ step 450" in last
    assert re.search(r"\| (\d+) steps/s \|", last)
