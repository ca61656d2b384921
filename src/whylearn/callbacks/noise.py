"""Gradient noise: how much the mini-batch gradient scatters around the full gradient.

With per-sample gradients g_i over n samples, mean G and covariance Sigma, a mini-batch of B samples
drawn at random has gradient noise E||g_B - G||^2 = tr(Sigma) / B. McCandlish et al. 2018 ("An empirical
model of large-batch training", Eq. 2.9) call B_simple = tr(Sigma) / ||G||^2 the simple noise scale: batches
much smaller than it are noise-dominated, much larger ones waste samples. Smith & Le 2018 relate the SGD
noise to lr / B, the ratio kept fixed by the linear scaling rule (Goyal et al. 2017).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.func import functional_call, grad, vmap

from whylearn.analysis.hessian import ParamSpec, eval_mode, flatten_params
from whylearn.callbacks.sharpness import add_summary, datamodule_split, fixed_subset, network, task_loss_fn
from whylearn.loggers import log_scalars


def gradient_noise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, chunk: int = 256) -> dict[str, float]:
    """Per-sample gradient statistics over (x, y) at the model's parameters (eval mode).

    Returns ``grad_norm_sq`` = ||G||^2, ``trace_cov`` = tr(Sigma) (unbiased, per sample) and
    ``simple_noise_scale`` = tr(Sigma) / ||G||^2.
    """
    spec = ParamSpec(model)
    theta = flatten_params(model)
    buffers = dict(model.named_buffers())

    def loss_one(t, xi, yi):
        out = functional_call(model, (spec.unflatten(t), buffers), (xi[None],))
        return loss_fn(out, yi[None])

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"gradient noise needs at least 2 samples, got {n}")
    s1 = torch.zeros_like(theta, dtype=torch.float64)
    s2 = torch.zeros((), dtype=torch.float64)
    with eval_mode(model):
        for i in range(0, n, chunk):
            g = per_sample(theta, x[i : i + chunk], y[i : i + chunk]).double()
            s1 += g.sum(0)
            s2 += g.pow(2).sum()
    G = s1 / n
    trace = (s2 - n * G.pow(2).sum()) / (n - 1)
    gn = float(G.pow(2).sum())
    return {"grad_norm_sq": gn, "trace_cov": float(trace), "simple_noise_scale": float(trace) / max(gn, 1e-30)}


class GradientNoise(Callback):
    """Log gradient-noise statistics every ``every_n_steps`` optimizer steps (and at the end of fit).

    Scalars: ``noise/grad_norm_sq``, ``noise/trace_cov`` (per-sample tr Sigma), ``noise/simple_noise_scale``
    (B_simple), ``noise/minibatch`` = tr(Sigma) / B for the training batch size B, and
    ``noise/lr_over_batch`` (lr / B). Measured on a seeded subset of ``num_samples`` training samples.
    """

    whylearn_batch_hooks = "per_step"  # measured after exactly every_n_steps steps, also inside a chunk

    def __init__(self, every_n_steps: int | None = 1000, num_samples: int | None = 1000, seed: int = 0) -> None:
        self.every_n_steps, self.num_samples, self.seed = every_n_steps, num_samples, seed
        self._last = -1

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        x, y = fixed_subset(datamodule_split(trainer, "train"), self.num_samples, self.seed)
        s = gradient_noise(network(pl_module), x, y, task_loss_fn(pl_module))
        B = int(getattr(trainer.datamodule, "batch_size", 1))
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        out = {f"noise/{k}": v for k, v in s.items()}
        out.update({"noise/minibatch": s["trace_cov"] / B, "noise/lr_over_batch": lr / B})
        return out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_steps
        if n and trainer.global_step // n != self._last:
            self._last = trainer.global_step // n
            log_scalars(pl_module, self.measure(trainer, pl_module))

    def on_train_end(self, trainer, pl_module) -> None:
        m = self.measure(trainer, pl_module)
        log_scalars(pl_module, m)
        add_summary(pl_module, m)
