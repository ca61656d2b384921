"""Build the invariance in, or blast it with data (Greydanus 2020, MNIST-1D): 1-D CNNs, shuffled
positions, translation augmentation, and the study that compares them."""

from __future__ import annotations

import pytest
import torch

from whylearn.models import CNN, CNN1D


# -- models on 1-D inputs ----------------------------------------------------------------------------
def test_cnn1d_is_greydanus_convbase():
    net = CNN1D(input_shape=[40], num_classes=10)
    # the mnist1d benchmark's ConvBase: 40 -> 19 -> 10 -> 5 positions, 25 channels, 5,210 parameters
    assert net.feature_length == 5 and net.head.in_features == 125
    assert sum(p.numel() for p in net.parameters()) == 5210
    assert net(torch.randn(7, 40)).shape == (7, 10) and net(torch.randn(7, 1, 40)).shape == (7, 10)
    two = CNN1D(input_shape=[2, 40], num_classes=3)
    assert two(torch.randn(4, 2, 40)).shape == (4, 3)
    with pytest.raises(ValueError, match=r"expects \(B, 1, 40\) or \(B, 40\), got shape \(4, 39\)"):
        net(torch.randn(4, 39))
    with pytest.raises(ValueError, match="too short"):
        CNN1D(input_shape=[2])
    with pytest.raises(ValueError, match=r"\(L,\) or \(C, L\)"):
        CNN1D(input_shape=[1, 28, 28])


def test_cnn_has_a_one_dimensional_form():
    net = CNN(in_channels=1, num_classes=10, k=2, spatial_dims=1)
    kinds = {type(m).__name__ for m in net.modules()}
    assert {"Conv1d", "BatchNorm1d", "AdaptiveMaxPool1d"} <= kinds and "Conv2d" not in kinds
    assert net(torch.randn(5, 40)).shape == (5, 10) and net(torch.randn(5, 1, 40)).shape == (5, 10)
    with pytest.raises(ValueError, match=r"spatial_dims=1 expects \(B, 1, L\)"):
        net(torch.randn(5, 1, 8, 8))
    with pytest.raises(ValueError, match=r"unknown spatial_dims 3; allowed: \[1, 2\]"):
        CNN(1, 10, k=2, spatial_dims=3)
    assert CNN(1, 10, k=2)(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # images unchanged


@pytest.mark.parametrize("model", ["cnn", "cnn1d", "logistic"])
def test_models_train_on_mnist1d_through_whylearn_train(make_cfg, model):
    """Failed on main before: ``model=cnn data=mnist1d`` passed in_channels='auto' to the CNN (a TypeError)."""
    from whylearn.train import run

    extra = ["model.k=2"] if model == "cnn" else []
    cfg = make_cfg(["data=mnist1d", f"model={model}", "logger=csv", "data.num_samples=600", "trainer.max_steps=20",
                    "trainer.max_epochs=-1", "data.steps_per_chunk=5", *extra])
    summary = run(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 20 and 0 <= summary["test/acc"] <= 1
