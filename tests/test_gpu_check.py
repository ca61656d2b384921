"""scripts/gpu_check.sh, the GPU readiness check, dry-run on the CPU: every command composes, covers what
issue 13 asks (trainer=gpu runs of every model family, bf16-mixed, 16-mixed, task.compile=true,
shakespeare_char), and runs; the whole dry run is marked slow (a dozen whylearn-train processes)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _commands(*flags: str, data: Path | None = None) -> dict[str, tuple[str, list[str]]]:
    extra = ["--data", str(data)] if data is not None else []
    done = subprocess.run(["bash", str(SCRIPT), "--list", *flags, *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = {}
    for line in done.stdout.strip().splitlines():
        name, needs, args = line.split("|")
        out[name] = (needs, shlex.split(args))
    return out


def test_gpu_commands_cover_the_families_precisions_compile_and_shakespeare():
    runs = _commands()
    text = " ".join(" ".join(a) for _, a in runs.values())
    assert all("trainer=gpu" in args for _, args in runs.values())
    for needle in ("experiment=mnist1d_mlp", "experiment=double_descent_mnist1d", "model=cnn", "model=resnet",
                   "experiment=kepler_mlp", "experiment=perceptron_separable", "experiment=hopfield_images",
                   "experiment=shakespeare_char", "trainer.precision=bf16-mixed", "trainer.precision=16-mixed",
                   "task.compile=true", "data.steps_per_chunk=1"):
        assert needle in text, needle


def test_dry_run_commands_compose_and_one_runs(tmp_path, one_thread):
    from omegaconf import open_dict

    from conftest import compose
    from whylearn.experiment import run

    runs = _commands("--dry-run", data=tmp_path)
    for name, (_, args) in runs.items():
        cfg = compose([a for a in args if not a.startswith(("hydra.", "paths.data_dir="))], tmp_path)
        assert cfg.trainer.accelerator == "cpu", name
    _, args = runs["mlp_fp16_scaler"]  # the fast loop under 16-mixed, as the GPU runs it (bf16 on the CPU)
    cfg = compose([a for a in args if not a.startswith("hydra.")], tmp_path)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    summary = run(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 6


@pytest.mark.slow
def test_the_whole_dry_run_passes(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=1800, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ": exit " in ln or ": skipped" in ln]
    assert len(lines) == len(_commands("--dry-run"))
    assert all(": exit 0" in ln or "skipped" in ln for ln in lines), lines
