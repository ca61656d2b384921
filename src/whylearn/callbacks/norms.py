"""Weight and gradient norms: how far training moves the parameters, and how hard it pushes."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.loggers import log_scalars


def _named_params(pl_module: L.LightningModule):
    # The task's network is `model`; fall back to the whole module for other LightningModules.
    root = getattr(pl_module, "model", pl_module)
    return [(n, p) for n, p in root.named_parameters() if p.requires_grad]


class WeightNorms(Callback):
    """Logs the L2 norm of the weights and their distance from initialization.

    Scalars (at every validation, and every ``every_n_steps`` optimizer steps if set):
      - ``weights/l2_total``: sqrt of the sum of squares of all parameters;
      - ``weights/l2/<name>``: per parameter tensor (if ``per_layer``);
      - ``weights/dist_from_init``: ||theta - theta_0||_2 over all parameters;
      - ``weights/rel_dist_from_init``: that distance over ||theta_0||_2.

    theta_0 is copied at the start of fit and saved with the callback's state in checkpoints,
    so a resumed run measures from the same initialization.
    """

    whylearn_batch_hooks = "per_step"  # measured after exactly every_n_steps steps, also inside a chunk

    def __init__(self, every_n_steps: int | None = None, per_layer: bool = True) -> None:
        self.every_n_steps, self.per_layer = every_n_steps, per_layer
        self.init: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.init is None:
            self.init = {n: p.detach().clone() for n, p in _named_params(pl_module)}
        else:
            self.init = {n: t.to(pl_module.device) for n, t in self.init.items()}

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule) -> dict[str, float]:
        params = _named_params(pl_module)
        if not params:  # e.g. a perceptron or Hopfield network, updated by hand, or a sweep task
            return {}
        sq = {n: p.detach().float().pow(2).sum() for n, p in params}
        total = torch.stack(list(sq.values())).sum().sqrt()
        out = {"weights/l2_total": total}
        if self.per_layer:
            out.update({f"weights/l2/{n}": v.sqrt() for n, v in sq.items()})
        if self.init is not None:
            d = torch.stack([(p.detach().float() - self.init[n].float()).pow(2).sum() for n, p in params]).sum().sqrt()
            n0 = torch.stack([t.float().pow(2).sum() for t in self.init.values()]).sum().sqrt()
            out["weights/dist_from_init"] = d
            out["weights/rel_dist_from_init"] = d / n0.clamp_min(1e-12)
        return {k: float(v) for k, v in out.items()}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            log_scalars(pl_module, self.measure(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # after every optimizer step (whylearn's fast loop calls it inside a chunk too)
        n = self.every_n_steps
        if n and trainer.global_step // n != getattr(self, "_last_bucket", 0):
            self._last_bucket = trainer.global_step // n
            log_scalars(pl_module, self.measure(pl_module))

    def state_dict(self) -> dict:
        return {"init": {n: t.cpu() for n, t in (self.init or {}).items()}} if self.init is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "init" in state:
            self.init = state["init"]


class GradNorms(Callback):
    """Logs ``grads/l2_total`` and per-tensor ``grads/l2/<name>`` every ``every_n_steps`` optimizer steps.

    Measured in ``on_before_optimizer_step``, i.e. on the gradient of the step about to be taken,
    before gradient clipping (as Lightning calls that hook: after unscaling, before clipping).
    """

    def __init__(self, every_n_steps: int = 50, per_layer: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.per_layer = every_n_steps, per_layer
        self._step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step = trainer.global_step  # (a resumed run starts at its checkpoint's step)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        # Called before every optimizer step, so it counts the steps itself: reading
        # trainer.global_step (a chain of properties) costs about 2% of a small MLP's step.
        step = self._step
        self._step = step + 1
        if step % self.every_n_steps == 0:
            log_scalars(pl_module, self.measure(pl_module), step=step)

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        """The norms of the current gradients: ``grads/l2_total`` and (if ``per_layer``) ``grads/l2/<name>``."""
        named = [(n, p.grad) for n, p in _named_params(pl_module) if p.grad is not None]
        if not named:
            return {}
        norms = torch._foreach_norm([g.detach().float() for _, g in named])  # one fused call for all tensors
        out = {"grads/l2_total": torch.linalg.vector_norm(torch.stack(norms))}
        if self.per_layer:
            out.update({f"grads/l2/{n}": v for (n, _), v in zip(named, norms, strict=False)})
        return out
