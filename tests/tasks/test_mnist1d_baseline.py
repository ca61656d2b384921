"""The default experiment is MNIST-1D's own MLP baseline: the quickstart's set-up and its published accuracy."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from whylearn.data import make_mnist1d

pytestmark = pytest.mark.usefixtures("one_thread")


class MLPBase(nn.Module):
    """greydanus/mnist1d notebooks/models.py: h = relu(W1 x); h = h + relu(W2 h); W3 h."""

    def __init__(self, input_size=40, output_size=10, hidden_size=256):
        super().__init__()
        self.linear1 = nn.Linear(input_size, hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.linear3 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


def reference_training(steps: int, seed: int = 42):
    """notebooks/train.py train_model with get_model_args(): Adam lr 1e-2, no weight decay, batches of 100 in order."""
    data = make_mnist1d()
    x, y = data["train"].x, data["train"].y
    torch.manual_seed(seed)
    model = MLPBase()
    opt = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=0)
    for step in range(steps):
        bix = (step * 100) % len(x)
        loss = F.cross_entropy(model(x[bix:bix + 100]), y[bix:bix + 100])
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        logits = model(data["test"].x)
    return model, (logits.argmax(-1) == data["test"].y).float().mean().item(), F.cross_entropy(logits, data["test"].y).item()


def test_mnist1d_mlp_trains_exactly_as_the_mnist1d_reference_code(make_cfg, tmp_path):
    from whylearn.experiment import run
    from whylearn.runs.checkpoints import load_checkpoint

    steps = 400
    cfg = make_cfg(["experiment=mnist1d_mlp", f"trainer.max_steps={steps}", "logger=csv"])
    assert cfg.seed == 42 and cfg.data.val_size == 0 and cfg.data.shuffle is False
    summary = run(cfg)
    ref, acc, loss = reference_training(steps)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    ours = {k[len("model.net."):]: v for k, v in state.items() if k.startswith("model.net.")}
    theirs = {"0": ref.linear1, "2": ref.linear2, "4": ref.linear3}
    for i, layer in theirs.items():
        torch.testing.assert_close(ours[f"{i}.weight"], layer.weight.detach(), atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(ours[f"{i}.bias"], layer.bias.detach(), atol=1e-4, rtol=1e-3)
    assert summary["test/acc"] == pytest.approx(acc, abs=0.002)
    assert summary["test/loss"] == pytest.approx(loss, rel=1e-3)
    assert summary["train_size"] == 4000 and summary["test_size"] == 1000


@pytest.mark.slow
def test_mnist1d_mlp_reaches_the_published_mlp_baseline_over_three_seeds(make_cfg):
    """Greydanus 2020 (README): MLP 68%; the default experiment's mean over 3 seeds is within 2 points."""
    from whylearn.experiment import run

    accs = []
    for seed in (42, 0, 1):
        summary = run(make_cfg(["experiment=mnist1d_mlp", f"seed={seed}", "logger=csv", "threads=1"], sub=f"s{seed}"))
        accs.append(summary["test/acc"])
        assert summary["steps"] == 6000
    assert abs(statistics.fmean(accs) - 0.68) <= 0.02, accs


def test_residual_mlp_is_mlpbase_and_needs_equal_widths():
    from whylearn.models import MLP

    torch.manual_seed(3)
    ours = MLP(40, 10, hidden=[32, 32], residual=True)
    torch.manual_seed(3)
    theirs = MLPBase(hidden_size=32)
    x = torch.randn(7, 40)
    torch.testing.assert_close(ours(x), theirs(x))
    with pytest.raises(ValueError, match=r"need equal widths; got hidden=\[8, 16\]"):
        MLP(40, 10, hidden=[8, 16], residual=True)
