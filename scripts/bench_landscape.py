"""Benchmark the landscape instruments against plain loops, side by side in one run.

    PYTHONPATH=src python scripts/bench_landscape.py --threads 1 --repeats 3

1. A 21x21 2D slice (441 parameter points) of the MNIST-1D MLP (40-100-100-10, 15,210 parameters)
   on the 3,600 MNIST-1D training samples: ``slice_2d(method='vmap')`` with several batch sizes of
   points, against ``method='loop'`` (load each point into the model, plain forward).
2. One sharpness estimate (power iteration, a fixed 20 iterations) of the training loss on the same
   data: forward-over-reverse HVPs with torch.func, double backward over the whole batch, and a plain
   loop of double backward over mini-batches of 100 samples; plus the top-3 eigenvalues by subspace
   iteration with vmap-batched HVPs against the same k HVPs one at a time.

Prints a Markdown table (median of ``--repeats`` wall times after one warm-up).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from whylearn.analysis import hessian as H
from whylearn.analysis import landscape as LS
from whylearn.data import make_mnist1d
from whylearn.models import MLP


def timeit(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--grid", type=int, default=21)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = make_mnist1d()["train"]
    x, y = train.x[:3600], train.y[:3600]
    model = MLP(40, 10, hidden=[100, 100])
    data = {"train": (x, y)}
    rows = []
    print(f"# torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"MLP 40-100-100-10 ({sum(p.numel() for p in model.parameters())} parameters), {x.shape[0]} samples")

    for n_small in (256,):
        small = {"train": (x[:n_small], y[:n_small])}
        for label, kw in [
            ("plain loop", dict(method="loop")),
            ("vmap, 32 points per batch", dict(method="vmap", points_per_batch=32)),
        ]:
            t, _ = timeit(lambda small=small, kw=kw: LS.slice_2d(model, small, grid=args.grid, seed=0, **kw), args.repeats)
            rows.append((f"{args.grid}x{args.grid} slice on {n_small} samples: {label}", t, ""))
    ref = None
    for label, kw in [("plain loop, one point at a time", dict(method="loop")),
                      ("vmap, 8 points per batch", dict(method="vmap", points_per_batch=8)),
                      ("vmap, 32 points per batch", dict(method="vmap", points_per_batch=32)),
                      ("vmap, 64 points per batch", dict(method="vmap", points_per_batch=64))]:
        t, sl = timeit(lambda kw=kw: LS.slice_2d(model, data, grid=args.grid, seed=0, **kw), args.repeats)
        z = sl.values["train/loss"]
        ref = z if ref is None else ref
        err = float(abs(z - ref).max())
        rows.append((f"{args.grid}x{args.grid} slice: {label}", t, f"max |diff| vs loop {err:.1e}"))

    def power(method, chunk=None):
        op = H.HVP(model, x, y, method=method, chunk_size=chunk)
        g = torch.Generator().manual_seed(0)
        return H.power_iteration(op, op.numel, iters=args.iters, tol=0.0, generator=g).top

    base = None
    for label, fn in [("plain loop: double backward per mini-batch of 100", lambda: power("autograd", 100)),
                      ("double backward, whole batch", lambda: power("autograd")),
                      ("torch.func jvp(grad), whole batch", lambda: power("func"))]:
        t, lam = timeit(fn, args.repeats)
        base = lam if base is None else base
        rows.append((f"sharpness ({args.iters} power iterations): {label}", t, f"lambda_max {lam:.4f}"))

    def topk(method):
        op = H.HVP(model, x, y, method=method)
        return H.subspace_iteration(op.batch, op.numel, 3, iters=args.iters, tol=0.0,
                                    generator=torch.Generator().manual_seed(0)).values.tolist()

    for label, m in [("3 HVPs one at a time (double backward)", "autograd"), ("3 HVPs batched by vmap (torch.func)", "func")]:
        t, vals = timeit(lambda m=m: topk(m), args.repeats)
        rows.append((f"top-3 eigenvalues ({args.iters} subspace iterations): {label}", t,
                     "values " + ", ".join(f"{v:.4f}" for v in vals)))

    print("| computation | wall time (s) | check |")
    print("| --- | --- | --- |")
    for name, t, note in rows:
        print(f"| {name} | {t:.3f} | {note} |")


if __name__ == "__main__":
    main()
