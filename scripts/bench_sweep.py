"""Benchmark: a whole sweep as one vectorized run against sequential single runs, with achieved FLOP/s.

The grid is UDL notebook 8.3's double-descent sweep by default (28 widths x 3 seeds of a 40-w-w-10
ReLU MLP on MNIST-1D, 4000 training examples, batch 100, SGD lr 0.01 momentum 0.9, each member its
own data order, 15% uniform label noise), all through whylearn's own training path (in-memory
chunked datamodule, Lightning Trainer, FastTask), validation off, so only training is timed.

- **vectorized**: one ``EnsembleClassificationTask`` with the grid, ``--steps`` optimizer steps, for
  each ``--variants`` entry (intra-op ``threads``, ``lanes``: threads the groups are split over,
  ``layout``); and the same for the wide members alone (widths >= ``--wide``);
- **sequential**: single runs (``ClassificationTask``, one thread), one seed per width, ``--seq-steps``
  steps each: a sample, extrapolated per width to every seed and to ``--steps`` steps (stated as such);
- **peak**: the machine's fp32 matmul rate measured in the same process: an n x n sgemm with 1 and
  with 2 intra-op threads, and two single-threaded sgemms on two threads at once. Each variant is
  compared with the peak of its own thread count (:func:`peak_for`); the best of the three is kept
  in the JSON as ``fraction_of_best_peak``.

Both sides train with torch's fused SGD (``fused=True``), as ``experiment=double_descent_mnist1d`` does.

Reported: seed-steps per second (members x steps / wall second), the wall-time speedup, matmul
FLOP/s (forward, weight and input gradients of every member at its own width; padding not counted)
and its fraction of the peak, and the projected wall time of the full protocol (``--epochs`` epochs).

    python scripts/bench_sweep.py --steps 400 --seq-steps 320 --json bench_sweep.json
    python scripts/bench_sweep.py --ablation      # one thread, CPU time: the training paths side by side
    python scripts/bench_sweep.py --efficiency --wide 250   # one thread, CPU time: the wide members' step
                                                            # level by level against the 1-thread peak
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import threading
import time
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.data import MNIST1DDataModule
from whylearn.models import MLP
from whylearn.models.ensemble import GEMM_FLOPS_PER_S, GROUP_OVERHEAD_S, mlp_step_flops
from whylearn.tasks import ClassificationTask, EnsembleClassificationTask

NOTEBOOK_WIDTHS = [2, 4, 6, 8, 10, 14, 18, 22, 26, 30, 35, 40, 45, 50, 55, 60, 70, 80, 90, 100, 120, 140, 160, 180,
                   200, 250, 300, 400]


def datamodule(order_seed: int | None = None) -> MNIST1DDataModule:
    return MNIST1DDataModule(num_samples=8000, train_split=0.5, val_size=0, batch_size=100, steps_per_chunk=64, seed=0,
                             label_noise=0.15, label_noise_mode="uniform", label_noise_seed=42, order_seed=order_seed)


def model(width: int) -> MLP:
    return MLP(40, 10, width=int(width), depth=2, init="he_uniform")


def seeded_members(widths, seeds) -> list[MLP]:
    """One network per (width, seed), width-major, each initialized after ``torch.manual_seed(seed)``."""
    members = []
    for w in widths:
        for s in seeds:
            torch.manual_seed(s)
            members.append(model(w))
    return members


def _trainer(steps: int, clock: Callback) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     callbacks=[clock],
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, max_epochs=-1)


class SteadyClock(Callback):
    """Wall and CPU time of the optimizer steps after the first chunk (fit's start-up excluded).

    Called once per chunk (``whylearn_batch_hooks = "per_chunk"``), so the fit runs whylearn's fast
    loop, as ``whylearn-train`` runs it; a batch hook without that declaration would make the task
    fall back to Lightning's own loop, one mini-batch per Lightning step (:mod:`whylearn.tasks.loop`)."""

    whylearn_batch_hooks = "per_chunk"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not hasattr(self, "t0"):
            self.t0, self.c0, self.s0 = time.perf_counter(), time.process_time(), trainer.global_step

    def on_train_end(self, trainer, pl_module):
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        self.steps = trainer.global_step - self.s0


class LightningLoopClock(SteadyClock):
    """:class:`SteadyClock` without the declaration: the fit falls back to Lightning's own loop (what
    this script timed before it declared it)."""

    whylearn_batch_hooks = None


def fit(task, steps: int, dm, fast_loop: bool = True) -> tuple[float, float, float]:
    """(wall seconds per step, CPU seconds per step, fit start-up wall seconds) of ``steps`` optimizer
    steps, the per-step times measured after the first chunk; ``fast_loop=False``: Lightning's own loop."""
    clock = SteadyClock() if fast_loop else LightningLoopClock()
    trainer = _trainer(steps, clock)
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    total = time.perf_counter() - t0
    assert trainer.global_step == steps and clock.steps > 0, (trainer.global_step, steps)
    per_wall, per_cpu = clock.wall / clock.steps, clock.cpu / clock.steps
    return per_wall, per_cpu, total - per_wall * steps


def cpu_s_per_call(fn, n: int) -> float:
    """CPU seconds (this process, all its threads: the machine's load does not count) per call of ``fn``, over ``n``
    calls in a row."""
    c0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) / n


def sgemm_cpu_rate(n: int, reps: int = 8) -> float:
    """FLOP per CPU second of an n x n fp32 sgemm on one thread (best of 5 timings of ``reps`` calls)."""
    torch.set_num_threads(1)
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = min(cpu_s_per_call(lambda: torch.mm(a, b, out=c), reps) for _ in range(5))
    return 2 * n**3 / best


def sgemm_rate(n: int, threads: int, concurrent: int = 1, seconds: float = 1.0) -> float:
    """Best wall FLOP/s of n x n fp32 matmuls: ``threads`` intra-op threads, ``concurrent`` callers at once."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    outs = [torch.empty(n, n) for _ in range(concurrent)]
    for _ in range(2):
        torch.mm(a, b, out=outs[0])
    best = 0.0
    for _ in range(5):
        counts = [0] * concurrent
        stop = time.perf_counter() + seconds / 5

        def work(i, counts=counts, stop=stop):
            while time.perf_counter() < stop:
                torch.mm(a, b, out=outs[i])
                counts[i] += 1

        t0 = time.perf_counter()
        threads_ = [threading.Thread(target=work, args=(i,)) for i in range(1, concurrent)]
        for t in threads_:
            t.start()
        work(0)
        for t in threads_:
            t.join()
        best = max(best, 2 * n**3 * sum(counts) / (time.perf_counter() - t0))
    return best


def peak_for(threads: int, lanes: int, peaks: dict[str, float]) -> float:
    """The measured peak of the same number of threads: one thread; two intra-op threads; two lanes
    of one thread each (two single-threaded sgemms at once); else the best measured."""
    if threads * lanes == 1:
        return peaks["sgemm_1_thread"]
    if (threads, lanes) == (2, 1):
        return peaks["sgemm_2_threads"]
    if (threads, lanes) == (1, 2):
        return peaks["sgemm_2_concurrent_1_thread"]
    return max(peaks.values())


def vectorized(widths, seeds, steps, threads, lanes, layout, fused_sgd: bool = True, fast_loop: bool = True):
    torch.set_num_threads(threads)
    # fused SGD as experiment=double_descent_mnist1d trains (optimizer.fused: true); False: torch's default
    opt = partial(torch.optim.SGD, lr=0.01, momentum=0.9, fused=fused_sgd)
    task = EnsembleClassificationTask(model(widths[0]), 10, opt, grid={"model.width": widths, "seed": seeds},
                                      data_order="member", layout=layout, model_factory=lambda **o: model(o["width"]),
                                      batch_size=100, lanes=lanes, log_every_n_steps=50)
    wall, cpu, startup = fit(task, steps, datamodule(), fast_loop)
    flops = len(seeds) * sum(mlp_step_flops([40, w, w, 10], 100) for w in widths)
    return {"members": task.num_members, "groups": len(task.model.groups), "layout": task.model.layout,
            "group_widths": [g["hidden"][0] for g in task.model.describe()], "wall_s_per_step": wall,
            "cpu_s_per_step": cpu, "startup_s": startup, "wall_s": wall * steps,
            "seed_steps_per_s": task.num_members / wall, "matmul_flop_per_s": flops / wall}


def sgd_step(ens, x: torch.Tensor, y: torch.Tensor, fused_loss: bool = True, fused_sgd: bool = True):
    """One training step of the member ensemble ``ens`` on the fixed batch ``(x, y)`` ((S, B, 40), (S, B)), as a
    function: the members' summed cross-entropy (whylearn's fused loss, or autograd through ``ens(x, per_member=True)``),
    backward, SGD lr 0.01 momentum 0.9 (torch's fused or foreach kernel)."""
    import torch.nn.functional as F

    from whylearn.tasks.ensemble import fused_member_losses

    S, B = y.shape
    opt = torch.optim.SGD(ens.parameters(), lr=0.01, momentum=0.9, fused=fused_sgd)

    def step():
        if fused_loss:
            loss = fused_member_losses(ens, x, y, "cross_entropy", True)[0].sum()
        else:
            out = ens(x, per_member=True)
            loss = F.cross_entropy(out.reshape(-1, 10), y.reshape(-1), reduction="none").view(S, B).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def ablation(widths, seeds, steps: int, rounds: int) -> list[dict]:
    """CPU time per step (one thread, a plain loop: model, loss, backward, SGD) of the ways to train the
    grid, side by side in rounds; and the cost model's two constants measured (models/ensemble.py)."""
    from whylearn.models.ensemble import MemberEnsemble

    torch.set_num_threads(1)
    members = seeded_members(widths, seeds)
    S, B = len(members), 100
    x, y = torch.randn(S, B, 40), torch.randint(0, 10, (S, B))

    def loop(ens, fused, sgd_fused):
        return sgd_step(ens, x, y, fused_loss=fused, fused_sgd=sgd_fused)

    exact, auto = MemberEnsemble(members, layout="exact"), MemberEnsemble(members, layout="auto")
    variants = {"autograd, exact groups, foreach SGD": loop(exact, False, False),
                "autograd, auto layout, fused SGD": loop(auto, False, True),
                "one node (fused loss), exact groups, fused SGD": loop(exact, True, True),
                "one node (fused loss), auto layout, fused SGD": loop(auto, True, True)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for f in variants.values():
        f()
    for _ in range(rounds):
        for k, f in variants.items():
            times[k].append(cpu_s_per_call(f, steps))
    flops = len(seeds) * sum(mlp_step_flops([40, w, w, 10], B) for w in widths)
    rows = [{"variant": k, "groups": len((exact if "exact" in k else auto).groups),
             "cpu_ms_per_step": 1e3 * sorted(v)[len(v) // 2], "matmul_gflop_per_cpu_s": flops / sorted(v)[len(v) // 2] / 1e9}
            for k, v in times.items()]
    # the cost model's constants: the marginal cost of a group of tiny members, and a wide group's rate
    tiny = MemberEnsemble([model(2 + g) for g in range(28) for _ in seeds], layout="exact")
    one = MemberEnsemble([model(2) for _ in seeds], layout="exact")
    wide = MemberEnsemble([model(400) for _ in seeds], layout="exact")

    def per_step(ens, n=steps):
        step = sgd_step(ens, torch.randn(ens.num_members, B, 40), torch.randint(0, 10, (ens.num_members, B)))
        step()
        return cpu_s_per_call(step, n)

    overhead = (per_step(tiny) - per_step(one)) / 27
    rate = len(seeds) * mlp_step_flops([40, 400, 400, 10], B) / per_step(wide)
    rows.append({"variant": "cost model", "group_overhead_s": overhead, "gemm_flop_per_s": rate,
                 "overhead_x_rate_mflop": overhead * rate / 1e6})
    return rows


def efficiency(widths, seeds, steps: int, rounds: int, gemm_n: int, lightning_steps: int) -> dict:
    """The wide members' training step against the one-thread fp32 matmul peak, one thread, CPU time,
    side by side in ``rounds`` rounds (each round: the peak, then every level below), medians reported.

    Levels, each a subset of the next: ``matmuls``: the step's batched matmuls alone (forward, weight
    and input gradients of every group, the same shapes, operand layouts and order: an upper bound
    for the step); ``kernels``: forward and backward of every group as the fused training path runs
    them (matmuls, bias, ReLU and its gradient), no loss, autograd or optimizer; ``optimizer``: torch's
    fused SGD step (momentum) alone over the same parameters, on one step's gradients; ``bound``:
    matmuls plus optimizer (their medians added, not timed: a step does both, one after the other, on
    one thread, whatever the order); ``step``: the fused
    training path's optimizer step in a plain loop (fused loss, backward, ``zero_grad``, torch's fused
    SGD with momentum); ``lightning``: whylearn's own training path (Trainer, FastTask, the chunked
    datamodule with every member its own data order and labels, the fast loop; ``vectorized``) with
    torch's fused SGD, as ``whylearn-train experiment=double_descent_mnist1d`` trains; and what this
    script timed before: Lightning's own loop (its clock callback made the task fall back to it) and
    torch's default (for-loop) SGD."""
    from whylearn.models.ensemble import MemberEnsemble
    from whylearn.tasks.ensemble import _group_backward, _group_forward

    torch.set_num_threads(1)
    members = seeded_members(widths, seeds)
    ens = MemberEnsemble(members, layout="auto")
    S, B = len(members), 100
    x, y = torch.randn(S, B, 40), torch.randint(0, 10, (S, B))
    flops = len(seeds) * sum(mlp_step_flops([40, w, w, 10], B) for w in widths)
    xs = [x[sl] for sl in ens._slices]
    with torch.no_grad():
        saved = [_group_forward(g, xg) for g, xg in zip(ens.groups, xs, strict=True)]
    dzs = [torch.randn(z.shape[0], z.shape[2], z.shape[1]).transpose(1, 2) for _, _, z in saved]  # as the loss's

    @torch.no_grad()
    def matmuls():
        for (hs, layers, _), dz in zip(saved, dzs, strict=True):
            for h, (w, b) in zip(hs, layers, strict=True):
                torch.baddbmm(b.unsqueeze(1), h, w)
            d = dz
            for i in range(len(layers) - 1, -1, -1):
                torch.bmm(hs[i].transpose(1, 2), d)
                if i > 0:
                    d = torch.bmm(d, layers[i][0].transpose(1, 2))

    @torch.no_grad()
    def kernels():
        for g, xg, dz in zip(ens.groups, xs, dzs, strict=True):
            hs, layers, _ = _group_forward(g, xg)
            _group_backward(hs, layers, dz)

    step = sgd_step(ens, x, y)
    # the same fused SGD step alone, on the gradients of one step (kept): no loss, no backward
    alone = torch.optim.SGD([p.detach().clone().requires_grad_() for p in ens.parameters()], lr=0.01, momentum=0.9,
                            fused=True)
    step()
    for q, p in zip(alone.param_groups[0]["params"], ens.parameters(), strict=True):
        q.grad = p.grad.clone()

    levels = {"matmuls": matmuls, "kernels": kernels, "optimizer": alone.step, "step": step}
    times: dict[str, list[float]] = {k: [] for k in [*levels, "lightning", "lightning, before: own loop, default SGD"]}
    peaks: list[float] = []
    for f in levels.values():
        f()
    for _ in range(rounds):
        peaks.append(sgemm_cpu_rate(gemm_n))
        for k, f in levels.items():
            times[k].append(cpu_s_per_call(f, steps))
        if lightning_steps:
            times["lightning"].append(vectorized(widths, seeds, lightning_steps, 1, 1, "auto")["cpu_s_per_step"])
            times["lightning, before: own loop, default SGD"].append(vectorized(
                widths, seeds, lightning_steps, 1, 1, "auto", fused_sgd=False, fast_loop=False)["cpu_s_per_step"])
    times = {k: v for k, v in times.items() if v}
    peak = sorted(peaks)[len(peaks) // 2]
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    # what no step can beat on one thread: its matmuls, then its optimizer update (medians added)
    med = {**{k: med[k] for k in ("matmuls", "kernels", "optimizer")},
           "bound: matmuls + optimizer": med["matmuls"] + med["optimizer"],
           **{k: v for k, v in med.items() if k not in ("matmuls", "kernels", "optimizer")}}
    return {"widths": list(widths), "seeds": list(seeds), "groups": [d["hidden"][0] for d in ens.describe()],
            "matmul_flop_per_step": flops, "peak_flop_per_cpu_s": peak, "peaks": peaks, "cpu_s_per_step": times,
            "rows": [{"level": k, "cpu_ms_per_step": 1e3 * t,
                      "gflop_per_cpu_s": flops / t / 1e9 if k != "optimizer" else None,
                      "fraction_of_peak": flops / t / peak if k != "optimizer" else None} for k, t in med.items()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=NOTEBOOK_WIDTHS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps of each vectorized run (timed after the first 64)")
    ap.add_argument("--seq-steps", type=int, default=320, help="steps of each sampled single run (timed after the first 64)")
    ap.add_argument("--variants", nargs="+", default=["threads=1,lanes=1", "threads=1,lanes=2", "threads=2,lanes=1"],
                    help="vectorized configurations: threads=T,lanes=L[,layout=auto|exact|padded]")
    ap.add_argument("--wide", type=int, default=200, help="widths >= this are 'the wide members'")
    ap.add_argument("--epochs", type=int, default=1000, help="for the projected full-protocol time")
    ap.add_argument("--gemm-n", type=int, default=1024)
    ap.add_argument("--no-sequential", action="store_true")
    ap.add_argument("--ablation", action="store_true", help="only the one-thread CPU-time comparison of the "
                    "training paths and the layout cost model's constants")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the ablation and of --efficiency")
    ap.add_argument("--efficiency", action="store_true", help="only the wide members' (widths >= --wide) training "
                    "step against the one-thread fp32 matmul peak, one thread, CPU time, level by level")
    ap.add_argument("--lightning-steps", type=int, default=200,
                    help="--efficiency: steps of the Lightning-path run per round (0: leave it out)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.ablation:
        rows = ablation(args.widths, list(range(args.seeds)), min(args.steps, 30), args.rounds)
        print("| training path (1 thread, plain loop) | groups | CPU ms / step (median) | matmul GFLOP per CPU second |")
        print("| --- | --- | --- | --- |")
        for r in rows[:-1]:
            print(f"| {r['variant']} | {r['groups']} | {r['cpu_ms_per_step']:.2f} | {r['matmul_gflop_per_cpu_s']:.1f} |")
        c = rows[-1]
        print(f"cost model: {c['group_overhead_s'] * 1e6:.0f} us per extra group, wide-group rate "
              f"{c['gemm_flop_per_s'] / 1e9:.0f} GFLOP/s: one group costs as much as {c['overhead_x_rate_mflop']:.1f} MFLOP "
              f"(models/ensemble.py uses {GROUP_OVERHEAD_S * GEMM_FLOPS_PER_S / 1e6:.1f})")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.efficiency:
        wide = [w for w in args.widths if w >= args.wide]
        res = efficiency(wide, list(range(args.seeds)), min(args.steps, 20), args.rounds, args.gemm_n,
                         args.lightning_steps)
        print(f"widths {wide} x {args.seeds} seeds (groups {res['groups']}), "
              f"{res['matmul_flop_per_step'] / 1e6:.0f} MFLOP of matmuls per step; one-thread fp32 peak "
              f"({args.gemm_n}^3 sgemm, median of {args.rounds} rounds): {res['peak_flop_per_cpu_s'] / 1e9:.1f} GFLOP/s")
        print("| level (1 thread, CPU time) | ms / step (median) | matmul GFLOP/s | of the 1-thread peak |")
        print("| --- | --- | --- | --- |")
        for r in res["rows"]:
            if r["level"] == "optimizer":  # no matmuls: its time only
                print(f"| {r['level']} | {r['cpu_ms_per_step']:.2f} | - | - |")
            else:
                print(f"| {r['level']} | {r['cpu_ms_per_step']:.2f} | {r['gflop_per_cpu_s']:.1f} | {r['fraction_of_peak']:.0%} |")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
        return
    seeds = list(range(args.seeds))
    steps_per_epoch = 40  # 4000 examples / batch 100

    peaks = {"sgemm_1_thread": sgemm_rate(args.gemm_n, 1), "sgemm_2_threads": sgemm_rate(args.gemm_n, 2),
             "sgemm_2_concurrent_1_thread": sgemm_rate(args.gemm_n, 1, concurrent=2)}
    peak = max(peaks.values())
    print(f"fp32 matmul peak ({args.gemm_n}^3 sgemm, best of 5): " +
          ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()) + f"; peak = {peak / 1e9:.1f} GFLOP/s")

    torch.set_num_threads(1)
    fit(ClassificationTask(model(8), 10, partial(torch.optim.SGD, lr=0.01, momentum=0.9)), 64, datamodule())  # warm-up
    seq = {}
    if not args.no_sequential:
        for w in args.widths:  # one seed per width: the sample
            torch.set_num_threads(1)
            torch.manual_seed(0)
            task = ClassificationTask(model(w), 10, partial(torch.optim.SGD, lr=0.01, momentum=0.9, fused=True),
                                      log_every_n_steps=50)
            wall, cpu, startup = fit(task, args.seq_steps, datamodule(order_seed=0))
            seq[w] = {"wall_s_per_step": wall, "cpu_s_per_step": cpu, "startup_s": startup}
        seq_wall = sum(v["wall_s_per_step"] for v in seq.values()) * len(seeds) * args.steps
        seq_startup = sum(v["startup_s"] for v in seq.values()) * len(seeds)
        print(f"sequential (one seed per width, {args.seq_steps} steps each, extrapolated to {len(seeds)} seeds x "
              f"{args.steps} steps): {seq_wall:.1f} s of steps, {len(args.widths) * len(seeds) * args.steps / seq_wall:.0f} "
              f"seed-steps/s (+ {seq_startup:.0f} s of fit start-ups for {len(args.widths) * len(seeds)} runs)")

    wide = [w for w in args.widths if w >= args.wide]
    rows = []
    for spec in args.variants:
        kv = dict(item.split("=") for item in spec.split(","))
        threads, lanes, layout = int(kv.get("threads", 1)), int(kv.get("lanes", 1)), kv.get("layout", "auto")
        load = os.getloadavg()[0]
        full = vectorized(args.widths, seeds, args.steps, threads, lanes, layout)
        wide_run = vectorized(wide, seeds, args.steps, threads, lanes, layout) if wide else None
        row = {"variant": spec, "threads": threads, "lanes": lanes, "layout": layout, "load_avg_1min": round(load, 1),
               "full": full, "wide": wide_run, "wide_widths": wide,
               "peak_same_threads": peak_for(threads, lanes, peaks),
               "fraction_of_peak": full["matmul_flop_per_s"] / peak_for(threads, lanes, peaks),
               "wide_fraction_of_peak": wide_run["matmul_flop_per_s"] / peak_for(threads, lanes, peaks) if wide_run else None,
               "fraction_of_best_peak": full["matmul_flop_per_s"] / peak,
               "projected_full_protocol_s": full["wall_s_per_step"] * steps_per_epoch * args.epochs}
        if seq:
            row["speedup_wall"] = seq_wall / full["wall_s"]
        rows.append(row)
    print(f"\n{len(args.widths)} widths x {len(seeds)} seeds = {len(args.widths) * len(seeds)} members, {args.steps} steps; "
          f"wide members: widths {wide}")
    print("| variant | load avg | groups | wall (s) | seed-steps/s | speedup (wall) vs sequential | matmul GFLOP/s | "
          "of peak (same threads) | wide members: GFLOP/s, of peak (same threads) | projected 1000 epochs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        f, wr = r["full"], r["wide"]
        print(f"| {r['variant']} | {r['load_avg_1min']} | {f['groups']} | {f['wall_s']:.1f} | {f['seed_steps_per_s']:.0f} | "
              f"{r.get('speedup_wall', float('nan')):.1f}x | {f['matmul_flop_per_s'] / 1e9:.1f} | {r['fraction_of_peak']:.0%} | "
              + (f"{wr['matmul_flop_per_s'] / 1e9:.1f}, {r['wide_fraction_of_peak']:.0%}" if wr else "-")
              + f" | {r['projected_full_protocol_s'] / 60:.1f} min |")
    res = {"widths": args.widths, "seeds": seeds, "steps": args.steps, "seq_steps": args.seq_steps, "peaks": peaks,
           "peak": peak, "sequential_sample": seq, "variants": rows, "torch": torch.__version__,
           "machine": platform.machine(), "cpus": os.cpu_count()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
