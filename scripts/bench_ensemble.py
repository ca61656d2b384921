"""Benchmark: an S-seed vectorized ensemble against S sequential single runs of the MNIST-1D MLP.

Both sides use whylearn's own training path (in-memory chunked data, FastTask, Lightning
Trainer) with the same model (40-100-100-10 MLP), data (MNIST-1D, 4000 training samples,
batch 100), optimizer (SGD 0.01, momentum 0.9) and number of optimizer steps per seed;
validation is off so only training is timed. Throughput = seed-steps per second
(seeds x steps / fit wall time).

    PYTHONPATH=src python scripts/bench_ensemble.py --seeds 8 --steps 2000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings
from functools import partial

import lightning as L
import torch

from whylearn.data import MNIST1DDataModule
from whylearn.models import MLP
from whylearn.tasks import ClassificationTask, EnsembleClassificationTask


def _trainer(steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, max_epochs=-1)


def _fit(task, steps: int) -> float:
    dm = MNIST1DDataModule(val_size=0, batch_size=100, steps_per_chunk=64, seed=0)
    trainer = _trainer(steps)
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    elapsed = time.perf_counter() - t0
    assert trainer.global_step == steps, (trainer.global_step, steps)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    opt = partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    seeds = list(range(args.seeds))

    _fit(ClassificationTask(MLP(40, 10, args.hidden), 10, opt), 64)  # warm-up (allocator, first-call costs)

    seq = []
    for s in seeds:
        torch.manual_seed(s)
        seq.append(_fit(ClassificationTask(MLP(40, 10, args.hidden), 10, opt, log_every_n_steps=50), args.steps))
    ens = _fit(EnsembleClassificationTask(MLP(40, 10, args.hidden), 10, opt, seeds=seeds, log_every_n_steps=50),
               args.steps)
    total_seq = sum(seq)
    res = {
        "seeds": args.seeds, "steps_per_seed": args.steps, "threads": args.threads, "hidden": args.hidden,
        "sequential_fit_s": round(total_seq, 2), "sequential_seed_steps_per_s": round(args.seeds * args.steps / total_seq, 1),
        "ensemble_fit_s": round(ens, 2), "ensemble_seed_steps_per_s": round(args.seeds * args.steps / ens, 1),
        "speedup": round(total_seq / ens, 2), "torch": torch.__version__, "machine": platform.machine(),
    }
    print("| run | fit wall time (s) | seed-steps/s |")
    print("| --- | --- | --- |")
    print(f"| {args.seeds} sequential single runs x {args.steps} steps | {total_seq:.2f} | {res['sequential_seed_steps_per_s']} |")
    print(f"| one {args.seeds}-seed vmap ensemble x {args.steps} steps | {ens:.2f} | {res['ensemble_seed_steps_per_s']} |")
    print(f"speedup: {res['speedup']}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
