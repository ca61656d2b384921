"""Shared fixtures: this checkout's src/ first on the path, offline W&B, small composed configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MNIST/Fashion-MNIST/Tiny Shakespeare files beside the checkout (skip if absent)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA



# mnist1d_mlp as it was before it took the mnist1d quickstart's set-up (Adam, seed 42, [256, 256] residual,
# max_steps 6000, test split as validation, no shuffling): the plain small run that the mechanism tests
# (progress bars, callbacks, W&B) were written against. Append after "experiment=mnist1d_mlp".
MNIST1D_SGD = ["model.hidden=[100,100]", "model.residual=false", "optimizer=sgd", "optimizer.momentum=0.9", "seed=0",
               "trainer.max_steps=-1", "data.val_size=0.1", "data.shuffle=true"]


def compose(overrides: list[str], tmp_path: Path, config_name: str = "train"):
    """Compose a whylearn config as the CLI would (:func:`whylearn.config.compose_run`), its outputs under tmp_path
    and its run directory tmp_path/run."""
    from whylearn.config import compose_run

    return compose_run(overrides, tmp_path / "run", root_dir=tmp_path, config_name=config_name)


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg(overrides, sub="run") -> a composed config writing under tmp_path/sub."""

    def _make(overrides: list[str], sub: str = "run"):
        cfg = compose(overrides, tmp_path)
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / sub)
        return cfg

    return _make


@pytest.fixture
def one_thread():
    """Run a test with one intra-op torch thread (small models: no OpenMP spin-waits), then restore."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
