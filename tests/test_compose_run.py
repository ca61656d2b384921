"""whylearn.config.compose_run: the config `whylearn-train <overrides>` runs, composed in Python (benchmarks, tests)."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from whylearn.config import compose_run, validate


def test_compose_run_is_the_cli_config_with_its_folders_and_quiet_progress(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_run(["experiment=mnist1d_mlp", "optimizer.lr=3e-1", "+trainer.limit_val_batches=0"],
                      tmp_path / "run", root_dir=tmp_path)
    assert cfg.experiment_name == "mnist1d_mlp" and cfg.optimizer.lr == 0.3 and cfg.trainer.limit_val_batches == 0
    assert cfg.paths.output_dir == str(tmp_path / "run") and cfg.paths.root_dir == str(tmp_path)
    assert cfg.progress == "none" and "hydra" not in cfg
    assert HydraConfig.get().runtime.choices["experiment"] == "mnist1d_mlp"  # set as in a run: ${hydra:...} resolve
    OmegaConf.resolve(cfg)
    validate(cfg)
    default_root = compose_run(["progress=lines"], tmp_path / "other")
    assert default_root.progress == "lines"  # an explicit progress is kept
    assert default_root.paths.root_dir != str(tmp_path)  # root_dir left to the config when not given


def test_compose_run_refuses_an_unknown_key_naming_it(tmp_path):
    with pytest.raises(ConfigCompositionException, match="model.nosuch"):
        compose_run(["experiment=mnist1d_mlp", "model.nosuch=1"], tmp_path)
