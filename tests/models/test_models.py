"""The MLP: shapes, widths, activations, init scale."""

import pytest
import torch

from whylearn.models import MLP, mlp_num_params


def test_mlp_shapes_and_param_count():
    m = MLP(40, 10, hidden=[100, 100])
    assert m(torch.randn(7, 40)).shape == (7, 10)
    assert sum(p.numel() for p in m.parameters()) == mlp_num_params(40, [100, 100], 10) == 15210
    img = MLP(784, 10, width=32, depth=3)
    assert img(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert img.hidden == [32, 32, 32]
    assert MLP(5, 3, hidden=[])(torch.randn(4, 5)).shape == (4, 3)  # a linear model


def test_mlp_init_scale_multiplies_every_parameter():
    torch.manual_seed(0)
    a = MLP(10, 3, hidden=[8], init_scale=1.0)
    torch.manual_seed(0)
    b = MLP(10, 3, hidden=[8], init_scale=2.5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=False):
        torch.testing.assert_close(pb, 2.5 * pa)


def test_step_activation_has_zero_gradient():
    m = MLP(2, 2, hidden=[4], activation="step")
    loss = m(torch.randn(16, 2)).pow(2).sum()
    loss.backward()
    first = m.linear_layers()[0]
    assert torch.count_nonzero(first.weight.grad) == 0  # nothing flows back through the threshold


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*allowed"):
        MLP(4, 2, hidden=[3], activation="swish")
    with pytest.raises(ValueError, match="give the hidden widths"):
        MLP(4, 2)
    with pytest.raises(ValueError, match="not both"):
        MLP(4, 2, hidden=[3], width=3, depth=1)
