"""whylearn's GPT training step against a plain PyTorch loop: same model, data, optimizer, schedule, clipping.

    PYTHONPATH=src python scripts/bench_gpt.py --steps 200 --pairs 3 --threads 1 \
        --data-dir ../shared/data --out docs/gpt_bench.json

Both sides train a fresh GPT of the ``shakespeare_char_cpu`` configuration (4 layers, 4 heads,
128 embedding, block 64, batch 12, no dropout, no biases) on Tiny Shakespeare's character windows:
 - plain: a ``for`` loop over the same ``WindowLoader`` chunks: forward, cross-entropy, backward,
   clip_grad_norm_(1.0), AdamW (no-decay groups) step, warm-up + cosine LambdaLR step;
 - whylearn: ``whylearn.experiment``'s objects (datamodule, model, LanguageModelTask, Lightning Trainer)
   built from the composed experiment config, ``trainer.fit`` for the same number of steps
   (validation and measuring callbacks off, CSV logger on, as a bare ``whylearn-train`` run).
Each pair runs both sides back to back, plain first in even pairs and whylearn first in odd ones,
so that warm-up and load drift on a shared machine hit both sides;
the table reports tokens/s of each and their ratio per pair and the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from whylearn.config import compose_run  # noqa: E402


def plain_loop(cfg, steps: int, seed: int) -> float:
    """tokens/s of a hand-written loop over the same model, data and optimizer."""
    from whylearn import build
    from whylearn.optim import warmup_cosine
    from whylearn.tasks.language_model import split_decay

    torch.manual_seed(seed)
    dm = build.build_datamodule(cfg)
    model = build.build_model(cfg, dm)
    decay, no_decay = split_decay(model, bool(cfg.task.get("decay_embeddings", False)))
    o = cfg.optimizer
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=o.lr,
                            betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched = warmup_cosine(opt, total_steps=steps, warmup_steps=cfg.scheduler.warmup_steps,
                          min_lr_ratio=cfg.scheduler.min_lr_ratio,
                          warmup_style=cfg.scheduler.get("warmup_style", "linear"))
    from whylearn.data.text import WindowLoader

    loader = WindowLoader(dm.train_tokens, dm.block_size, dm.batch_size, steps, dm.steps_per_chunk, seed)
    tokens = 0
    t0 = time.perf_counter()
    for xs, ys in loader:
        for x, y in zip(xs, ys, strict=False):
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tokens += x.numel()
        if not torch.isfinite(loss):
            raise FloatingPointError("plain loop diverged")
    return tokens / (time.perf_counter() - t0)


def whylearn_fit(cfg, steps: int, seed: int) -> float:
    """tokens/s of whylearn's Trainer.fit for ``steps`` optimizer steps (fit wall time, setup included)."""
    import lightning as L

    from whylearn import build

    L.seed_everything(seed, verbose=False)
    dm = build.build_datamodule(cfg)
    model = build.build_model(cfg, dm)
    task = build.build_task(cfg, model, dm)
    trainer = build.build_trainer(cfg, build.build_callbacks(cfg), build.build_loggers(cfg))
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    dt = time.perf_counter() - t0
    assert trainer.global_step == steps, trainer.global_step
    return steps * dm.batch_size * dm.block_size / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="shakespeare_char_cpu")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    tmp = tempfile.mkdtemp(prefix="bench_gpt_")
    cfg = compose_run([f"experiment={args.experiment}", f"paths.data_dir={args.data_dir}", f"trainer.max_steps={args.steps}",
                       f"data.steps_per_epoch={args.steps}", "+trainer.limit_val_batches=0", "callbacks=none",
                       "logger=csv", "test_after_fit=false", "task.sample_tokens=0"], tmp, root_dir=tmp)
    rows = []
    for i in range(args.pairs):
        if i % 2 == 0:  # alternate which side goes first, so that warm-up and load drift hit both
            plain = plain_loop(cfg, args.steps, seed=i)
            ours = whylearn_fit(cfg, args.steps, seed=i)
        else:
            ours = whylearn_fit(cfg, args.steps, seed=i)
            plain = plain_loop(cfg, args.steps, seed=i)
        rows.append({"pair": i, "plain_tokens_per_s": round(plain, 1), "whylearn_tokens_per_s": round(ours, 1),
                     "ratio": round(ours / plain, 4)})
        print(f"pair {i}: plain {plain:9.1f} tok/s   whylearn {ours:9.1f} tok/s   ratio {ours / plain:.3f}", flush=True)
    result = {"experiment": args.experiment, "steps": args.steps, "threads": args.threads,
              "tokens_per_step": cfg.data.batch_size * cfg.data.block_size, "pairs": rows,
              "median_ratio": statistics.median(r["ratio"] for r in rows), "torch": torch.__version__}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
