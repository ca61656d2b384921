"""Language modelling: next-token cross-entropy, AdamW with no-decay groups, bits per token, tokens/s, MFU.

The training recipe of GPT-2/3 and nanoGPT: the loss is the mean cross-entropy
-log p(x_{t+1} | x_{<=t}) over all positions of a batch of windows; weight decay
applies to the matrices of the linear layers only, not to biases, LayerNorm gains
or embeddings (Loshchilov & Hutter 2019 decouple it; GPT-3, Brown et al. 2020,
App. B), or, with ``decay_embeddings``, also to the embeddings (nanoGPT); the learning
rate warms up linearly and decays by a cosine
(``whylearn.optim.warmup_cosine``); the global gradient norm is clipped
(``gradient_clip_val``).

Model FLOPs utilization (Chowdhery et al. 2022, App. B): achieved model FLOP/s
(tokens/s x the model's ``flops_per_token``, 6 N + 12 L H D T) over the device's
peak FLOP/s, logged only where the peak is known (:data:`PEAK_FLOPS`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whylearn.tasks.base import FastTask, log_scalars

# Dense peak FLOP/s from the vendors' data sheets: (substring of the CUDA device name, precision) -> FLOP/s
PEAK_FLOPS = {
    ("A100", "bf16"): 312e12, ("A100", "32"): 19.5e12, ("A100", "tf32"): 156e12,
    ("H100", "bf16"): 989e12, ("H100", "32"): 67e12, ("H100", "tf32"): 494e12,
    ("H200", "bf16"): 989e12, ("H200", "32"): 67e12, ("H200", "tf32"): 494e12,
    ("V100", "16"): 125e12, ("V100", "32"): 15.7e12,
    ("A10G", "bf16"): 125e12, ("L4", "bf16"): 121e12, ("4090", "bf16"): 165e12,
}


def device_peak_flops(device: torch.device, precision: str = "32") -> float | None:
    """The device's dense peak FLOP/s at ``precision`` ("32", "tf32", "16", "bf16", or Lightning's
    "32-true", "bf16-mixed" ...), or None if unknown (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    precision = str(precision).split("-")[0]  # Lightning's "32-true", "bf16-mixed", "16-mixed"
    name = torch.cuda.get_device_name(device)
    if precision == "32" and torch.backends.cuda.matmul.allow_tf32:
        precision = "tf32"
    for (key, prec), peak in PEAK_FLOPS.items():
        if key in name and prec == precision:
            return peak
    return None


def split_decay(model: nn.Module, decay_embeddings: bool = False) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) parameters.

    ``decay_embeddings=False`` (GPT-3's rule, the default): weights of ``nn.Linear`` layers are
    decayed; biases, norms and embeddings (also an output layer tied to an embedding) are not.
    ``decay_embeddings=True`` (nanoGPT's ``configure_optimizers``): every parameter with two or more
    dimensions is decayed, i.e. the linear weights and the token and position embeddings (with the
    tied output layer); biases and norm gains are not.
    """
    decay_ids = set()
    no_decay_ids = set()
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if decay_embeddings:
                is_decayed = p.ndim >= 2
            else:
                is_decayed = isinstance(m, nn.Linear) and name == "weight"
            (decay_ids if is_decayed else no_decay_ids).add(id(p))
    params = {id(p): p for p in model.parameters()}  # de-duplicates tied parameters
    if not decay_embeddings:
        decay_ids -= no_decay_ids  # tied output layer = embedding: not decayed
    decay = [p for i, p in params.items() if i in decay_ids]
    no_decay = [p for i, p in params.items() if i not in decay_ids]
    return decay, no_decay


class LanguageModelTask(FastTask):
    """Train a next-token predictor ``model`` ((B, T) ids -> (B, T, V) logits) on windows of text.

    Logs ``train/loss`` (every ``log_every_n_steps`` steps), ``lr``, ``perf/tokens_per_s`` and
    (on a GPU whose peak is known) ``perf/mfu``; after each validation ``val/loss``,
    ``val/bits_per_token`` (= loss / ln 2) and ``val/bits_per_char`` (bits per token over the
    validation part's characters per token; equal for character tokens).

    Args:
        model: the network (e.g. :class:`whylearn.models.GPT`).
        optimizer: callable taking parameter groups (Hydra ``_partial_``); the no-decay group
            gets ``weight_decay=0`` (set ``decay_all`` to decay every parameter instead).
        decay_embeddings: also decay the token and position embeddings (nanoGPT's rule: every
            parameter with dim >= 2); default False, the GPT-3 groups (see :func:`split_decay`).
        sample_prompt, sample_tokens: a text sample generated at the end, kept in the summary.
        scheduler, scheduler_interval, log_every_n_steps, gradient_clip_val, gradient_clip_algorithm, compile:
            see :class:`FastTask`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
        log_every_n_steps: int = 50,
        gradient_clip_val: float | None = 1.0,
        gradient_clip_algorithm: str = "norm",
        compile: bool | str = False,
        decay_all: bool = False,
        decay_embeddings: bool = False,
        precision: str = "32",
        sample_prompt: str = "\n",
        sample_tokens: int = 300,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, log_every_n_steps, gradient_clip_val,
                         gradient_clip_algorithm, compile)
        self.model, self.decay_all, self.precision = model, decay_all, str(precision)
        self.decay_embeddings = bool(decay_embeddings)
        self.sample_prompt, self.sample_tokens = sample_prompt, int(sample_tokens)
        self._tokens = 0
        self._time = 0.0
        self._val_sum: Tensor | None = None
        self._val_count = 0

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(idx)

    def parameter_groups(self) -> Iterable:
        if self.decay_all:
            return self.parameters()
        decay, no_decay = split_decay(self.model, self.decay_embeddings)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    # -- training -------------------------------------------------------------------------------
    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        logits = self.model(x)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1)), x.numel()

    def training_step(self, chunk, chunk_idx: int):
        t0 = time.perf_counter()
        before = self.trainer.global_step
        out = super().training_step(chunk, chunk_idx)  # syncs: it checks the losses are finite
        self._time += time.perf_counter() - t0
        # the steps this batch made: the fast loop has counted them; Lightning's loop counts its one step after this
        after = before + 1 if self.automatic_optimization else self.trainer.global_step
        every = self.log_every_n_steps
        if after // every != before // every and self._time > 0:
            tps = self._tokens / self._time
            metrics = {"perf/tokens_per_s": tps}
            peak = device_peak_flops(self.device, self.precision)
            if peak is not None and hasattr(self.model, "flops_per_token"):
                metrics["perf/mfu"] = tps * self.model.flops_per_token() / peak
            log_scalars(self, metrics, step=after)
            self._tokens, self._time = 0, 0.0
        return out

    def on_chunk_end(self, kept: list[Any]) -> None:
        self._tokens += sum(kept)

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def token_loss_sum(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self.model(x)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").double()

    @torch.no_grad()
    def evaluate_windows(self, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
        """Mean next-token loss (nats) in eval mode over windows x, y (N, T)."""
        was = self.model.training
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for i in range(0, x.shape[0], batch_size):
            total += self.token_loss_sum(x[i : i + batch_size], y[i : i + batch_size])
        self.model.train(was)
        return (total / max(y.numel(), 1)).item()

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_count = 0

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self._val_sum += self.token_loss_sum(x, y)
        self._val_count += y.numel()

    def _val_metrics(self, prefix: str) -> dict[str, float]:
        loss = (self._val_sum / max(self._val_count, 1)).item()
        cpt = getattr(self.trainer.datamodule, "chars_per_token", 1.0) if self.trainer.datamodule is not None else 1.0
        bits = loss / math.log(2)
        return {f"{prefix}/loss": loss, f"{prefix}/bits_per_token": bits, f"{prefix}/bits_per_char": bits / cpt}

    def on_validation_epoch_end(self) -> None:
        log_scalars(self, self._val_metrics("val"))

    on_test_epoch_start = on_validation_epoch_start
    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        log_scalars(self, self._val_metrics("test"))

    # -- the end --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, tokenizer, prompt: str = "\n", max_new_tokens: int = 300, temperature: float = 1.0,
               top_k: int | None = None, seed: int = 0) -> str:
        """Text generated by the model from ``prompt`` (eval mode, seeded)."""
        was = self.model.training
        self.model.eval()
        ids = tokenizer.encode(prompt) or [0]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        g = torch.Generator(device=self.device).manual_seed(seed)
        out = self.model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=g)
        self.model.train(was)
        return tokenizer.decode(out[0].tolist())

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        """Final eval-mode loss on the validation windows and on as many training windows; a text sample."""
        val = datamodule._eval_val
        n = len(val)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(datamodule.train), generator=g)[:n].to(datamodule.train.x.device)
        bs = datamodule.eval_batch_size
        train_loss = self.evaluate_windows(datamodule.train.x[idx], datamodule.train.y[idx], bs)
        val_loss = self.evaluate_windows(val.x, val.y, bs)
        hist = self.history
        tps = [v for _, v in hist.data.get("perf/tokens_per_s", [])]
        out = {"train/loss": train_loss, "val/loss": val_loss, "val/bits_per_token": val_loss / math.log(2),
               "val/bits_per_char": val_loss / math.log(2) / datamodule.chars_per_token,
               "gap/loss": val_loss - train_loss,
               "tokens_per_s": sum(tps) / len(tps) if tps else None}
        mfu = [v for _, v in hist.data.get("perf/mfu", [])]
        if mfu:
            out["mfu"] = sum(mfu) / len(mfu)
        if getattr(datamodule, "tokenizer", None) is not None and self.sample_tokens > 0:
            out["sample"] = self.sample(datamodule.tokenizer, self.sample_prompt, self.sample_tokens, seed=0)
        return out
