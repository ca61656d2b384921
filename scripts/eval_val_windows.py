"""Mean next-token cross-entropy of a trained whylearn language model on the WHOLE validation part.

    PYTHONPATH=src python scripts/eval_val_windows.py <run dir or last.ckpt> [more runs ...] [--threads 1]

Each run's model (rebuilt from its ``config.yaml``, weights from ``checkpoints/last.ckpt``) is evaluated
in eval mode on every window of the validation tokens at offsets 0, T, 2T, ... (x = tokens[i : i+T],
y = tokens[i+1 : i+T+1], T = block_size; each validation token after the first is predicted exactly once,
the context restarting every T tokens), i.e. ``TextDataModule.val`` with no ``max_eval_windows`` subset.
The loss is the sum of the token losses over the number of predicted tokens (nats).

This is the common yardstick for comparing runs whose own validation estimates use different windows
(e.g. whylearn's 240 fixed windows and nanoGPT's 20 random batches of 12): the sha256 of the validation
token ids (as little-endian uint16) is printed, so another program's evaluation can show it used the same
tokens. Also printed: the standard deviation of the per-window losses, and from it the standard error of
an estimate from 240 random windows (nanoGPT's ``eval_iters=20`` x ``batch_size=12``). One JSON line per run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import torch
import torch.nn.functional as F


def token_hash(tokens: torch.Tensor) -> str:
    """sha256 of token ids stored as little-endian uint16 (the layout of nanoGPT's val.bin)."""
    return hashlib.sha256(tokens.cpu().numpy().astype("<u2").tobytes()).hexdigest()


@torch.no_grad()
def window_losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean cross-entropy (nats) of each window, (N,) float64, of ``model`` ((B, T) -> (B, T, V) logits)
    on windows x, y (N, T), in eval mode."""
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i : i + batch_size])
        loss = F.cross_entropy(logits.transpose(1, 2), y[i : i + batch_size], reduction="none")  # (B, T)
        out.append(loss.double().mean(dim=1))
    return torch.cat(out)


def evaluate_run(path: str) -> dict:
    from omegaconf import OmegaConf

    from whylearn import build
    from whylearn.cli.sample import find_checkpoint
    from whylearn.runs.checkpoints import load_checkpoint

    ckpt, run = find_checkpoint(path)
    cfg = OmegaConf.load(run / "config.yaml")
    dm = build.build_datamodule(cfg)
    dm.setup()
    model = build.build_model(cfg, dm)
    state = load_checkpoint(ckpt)
    model.load_state_dict({k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")})
    val = dm.val  # all windows, stride block_size
    per_window = window_losses(model, val.x, val.y)
    return {"run": str(run), "seed": cfg.get("seed"), "global_step": state.get("global_step"),
            "val_tokens": int(dm.val_tokens.shape[0]), "val_tokens_sha256": token_hash(dm.val_tokens),
            "windows": len(val), "block_size": dm.block_size, "predicted_tokens": int(val.y.numel()),
            "val_loss_all_windows": per_window.mean().item(),  # windows of equal length: = the token mean
            # the spread of an estimate from n random windows (n = 240: nanoGPT's eval_iters 20 x batch 12)
            "window_loss_sd": per_window.std().item(), "se_of_240_window_estimate": per_window.std().item() / 240 ** 0.5}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="whylearn-train run directories or .ckpt files")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for path in args.runs:
        print(json.dumps(evaluate_run(path)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
