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
import os
import platform
import statistics
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


def _fit(task, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of trainer.fit."""
    dm = MNIST1DDataModule(val_size=0, batch_size=100, steps_per_chunk=64, seed=0)
    trainer = _trainer(steps)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(task, datamodule=dm)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert trainer.global_step == steps, (trainer.global_step, steps)
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    ap.add_argument("--rounds", type=int, default=1, help="alternate ensemble / sequential this many times")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    opt = partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    seeds = list(range(args.seeds))
    work = args.seeds * args.steps

    _fit(ClassificationTask(MLP(40, 10, args.hidden), 10, opt), 64)  # warm-up (allocator, first-call costs)
    rounds = []
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        ens = _fit(EnsembleClassificationTask(MLP(40, 10, args.hidden), 10, opt, seeds=seeds, log_every_n_steps=50),
                   args.steps)
        seq = [0.0, 0.0]
        for s in seeds:
            torch.manual_seed(s)
            w, c = _fit(ClassificationTask(MLP(40, 10, args.hidden), 10, opt, log_every_n_steps=50), args.steps)
            seq[0] += w
            seq[1] += c
        rounds.append({"round": r + 1, "load_avg_1min": round(load, 1),
                       "sequential_wall_s": round(seq[0], 2), "ensemble_wall_s": round(ens[0], 2),
                       "speedup_wall": round(seq[0] / ens[0], 2),
                       "sequential_cpu_s": round(seq[1], 2), "ensemble_cpu_s": round(ens[1], 2),
                       "speedup_cpu": round(seq[1] / ens[1], 2)})
    def med(k):
        return statistics.median(x[k] for x in rounds)
    res = {"seeds": args.seeds, "steps_per_seed": args.steps, "threads": args.threads, "hidden": args.hidden,
           "rounds": rounds, "median_speedup_wall": med("speedup_wall"), "median_speedup_cpu": med("speedup_cpu"),
           "torch": torch.__version__, "machine": platform.machine()}
    print(f"{args.seeds} seeds x {args.steps} steps ({work} seed-steps per side), {args.threads} thread(s)")
    print(
        "| round | load avg | sequential wall (s) | ensemble wall (s) | speedup (wall) | sequential CPU (s) | ensemble CPU (s) | speedup (CPU) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for x in rounds:
        print(f"| {x['round']} | {x['load_avg_1min']} | {x['sequential_wall_s']} | {x['ensemble_wall_s']} | {x['speedup_wall']}x "
              f"| {x['sequential_cpu_s']} | {x['ensemble_cpu_s']} | {x['speedup_cpu']}x |")
    print(f"median speedup: {res['median_speedup_wall']}x (wall), {res['median_speedup_cpu']}x (CPU time)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
