"""Speed of whylearn's hot loop against a plain PyTorch loop, side by side in one process.

Both train the same MLP 40-100-100-10 on the same MNIST-1D tensors (4000 training
samples, batch 100, SGD lr 0.01 momentum 0.9) for the same number of optimizer steps,
alternating A B A B ... so drifts of the machine's speed hit both. whylearn runs its
``mnist1d_mlp`` experiment as ``whylearn-train`` would, with the default callbacks
(checkpoint, weight norms, grad norms, generalization gap) and loggers (CSV + W&B offline),
through :func:`whylearn.experiment.run`.

Reported, per pair, and as medians:
  - steps/s of the training loop (Lightning's on_train_start to on_train_end: every
    optimizer step plus whatever the callbacks, validation, logging and checkpoints do);
  - the same whylearn run with one mini-batch per Lightning step, two ways: ``data.steps_per_chunk=1``
    (the fast loop with K=1) and Lightning's own loop (automatic optimization, what a fit falls back
    to when it uses a feature the fast loop cannot honour, see whylearn.tasks.loop);
  - steps/s of the whole fit call (adds Lightning's and W&B's start-up);
  - the plain loop's steps/s: training only (the goal's baseline); with the same evaluation of the
    validation split at the same epochs; and doing by hand the same measurements as whylearn's
    default callbacks at the same intervals (validation, training-set evaluation for the gap, weight
    and gradient norms, checkpoints, one CSV row per epoch; no W&B), which isolates the framework's
    own overhead from the cost of the measurements.

The machine's speed drifts, and drift only ever slows a run down, so besides the median of the
per-pair ratios the best (fastest) run of each side is compared, as ``timeit`` does.

    python scripts/bench_overhead.py                 # 50 epochs x 3 pairs
    python scripts/bench_overhead.py --epochs 100 --pairs 5 --threads 2
    python scripts/bench_overhead.py --pairs 6 --threads 1 --no-k1   # without the two K=1 runs
    python scripts/bench_overhead.py --pairs 6 --threads 1 --clock cpu   # CPU time: for a machine shared with others
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from whylearn.config import compose_run  # noqa: E402
from whylearn.data import make_mnist1d  # noqa: E402
from whylearn.experiment import run  # noqa: E402
from whylearn.loggers import flush_logs  # noqa: E402
from whylearn.models import MLP  # noqa: E402


class LightningLoop(Callback):
    """A callback with a per-batch hook: its fit runs Lightning's own loop (the fallback of whylearn.tasks.loop)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pass


CLOCK = time.perf_counter  # --clock cpu: time.process_time (this process's CPU time: steadier on a loaded machine)


class LoopTimer(Callback):
    """From the first optimizer step until every row logged during training is written (W&B's too)."""

    def on_train_start(self, trainer, pl_module):
        self.t0 = CLOCK()

    def on_train_end(self, trainer, pl_module):
        flush_logs(pl_module, wait=True)  # what the task's own on_train_end does next, timed here
        self.seconds = CLOCK() - self.t0
        self.steps = trainer.global_step


def whylearn_run(epochs: int, val_every: int, out: Path, extra: list[str], lightning_loop: bool = False
                 ) -> tuple[float, float, int]:
    cfg = compose_run(["experiment=mnist1d_mlp", f"trainer.max_epochs={epochs}", f"trainer.check_val_every_n_epoch={val_every}",
                       "data.val_size=0", "progress=none", *extra], out)
    with open_dict(cfg):
        cfg.callbacks.loop_timer = {"_target_": f"{__name__}.LoopTimer"}
        if lightning_loop:
            cfg.callbacks.lightning_loop = {"_target_": f"{__name__}.LightningLoop"}
    timer = {}
    orig = L.Trainer.fit

    def fit(self, *a, **k):
        t = CLOCK()
        res = orig(self, *a, **k)
        timer["fit"] = CLOCK() - t
        timer["loop"] = next(cb for cb in self.callbacks if isinstance(cb, LoopTimer))
        return res

    L.Trainer.fit = fit
    gc.collect()  # so that no collection of earlier garbage lands in the timed loop (the plain side does the same)
    try:
        run(cfg)
    finally:
        L.Trainer.fit = orig
    lt = timer["loop"]
    return lt.steps / lt.seconds, lt.steps / timer["fit"], lt.steps


def plain_run(epochs: int, val_every: int | None, x, y, xv, yv, seed: int = 0, measure: Path | None = None,
              log_every: int = 40, ckpt_every: int = 25) -> float:
    """Steps/s of a plain loop; with ``val_every`` it evaluates the validation split at those epochs.

    With ``measure`` (a folder), it also does by hand what whylearn's default callbacks measure, at the
    same intervals: grad norms (per tensor and total) every ``log_every`` steps, at each validation the
    eval-mode loss and accuracy on the training set (the gap) and the weight norms and distance from
    initialization, a checkpoint (model + optimizer) every ``ckpt_every`` epochs, and every epoch a CSV
    row with the epoch's mean training loss and accuracy. No W&B.
    """
    gc.collect()
    torch.manual_seed(seed)
    model = MLP(40, 10, hidden=[100, 100])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    n, b, steps = x.shape[0], 100, 0
    init = [p.detach().clone() for p in model.parameters()] if measure else None
    csv = open(measure / "metrics.csv", "w") if measure else None
    t = CLOCK()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g)
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for i in range(0, n, b):
            idx = perm[i : i + b]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if measure is not None and steps % log_every == 0:
                norms = torch._foreach_norm([p.grad for p in model.parameters()])
                row = [float(v) for v in norms] + [float(torch.linalg.vector_norm(torch.stack(norms)))]
            opt.step()
            steps += 1
            if measure is not None:
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(-1) == y[idx]).sum()
        if measure is not None:
            csv.write(f"{epoch},{steps},{float(loss_sum) / (n // b)},{int(correct) / n},{row}\n")
        if val_every and (epoch + 1) % val_every == 0:
            model.eval()
            with torch.no_grad():
                F.cross_entropy(model(xv), yv).item()
                if measure is not None:
                    tr = model(x)
                    F.cross_entropy(tr, y).item(), (tr.argmax(-1) == y).float().mean().item()
                    params = list(model.parameters())
                    torch.linalg.vector_norm(torch.stack(torch._foreach_norm(params))).item()
                    torch.linalg.vector_norm(torch.stack(torch._foreach_norm(torch._foreach_sub(params, init)))).item()
            model.train()
        if measure is not None and (epoch + 1) % ckpt_every == 0:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, measure / "last.ckpt")
    sps = steps / (CLOCK() - t)
    if csv is not None:
        csv.close()
    return sps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--val-every", type=int, default=10, help="validation interval in epochs (the experiment's)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--num-samples", type=int, default=5000,
                    help="MNIST-1D samples (80%% train): 5000 gives 40 steps per epoch, 25000 gives 200")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time, the CPU time of this process (its threads "
                         "included, W&B's service process not): steadier when other processes share the core")
    ap.add_argument("--no-k1", action="store_true", help="skip the two K=1 runs of whylearn (steps_per_chunk=1, "
                    "Lightning's own loop)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the whylearn side")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    d = make_mnist1d(num_samples=args.num_samples)
    args.overrides = [f"data.num_samples={args.num_samples}", *args.overrides]
    steps_per_epoch = math.ceil(d["train"].x.shape[0] / 100)
    x, y, xv, yv = d["train"].x, d["train"].y, d["test"].x, d["test"].y
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain_run(2, None, x, y, xv, yv)  # warm-up
        for i in range(args.pairs):
            loop_sps, fit_sps, steps = whylearn_run(args.epochs, args.val_every, Path(tmp) / f"r{i}", args.overrides)
            p = plain_run(args.epochs, None, x, y, xv, yv)
            pv = plain_run(args.epochs, args.val_every, x, y, xv, yv)
            pm = plain_run(args.epochs, args.val_every, x, y, xv, yv, measure=Path(tmp))
            k1 = lk = float("nan")
            if not args.no_k1:
                k1 = whylearn_run(args.epochs, args.val_every, Path(tmp) / f"k{i}", [*args.overrides, "data.steps_per_chunk=1"])[0]
                lk = whylearn_run(args.epochs, args.val_every, Path(tmp) / f"l{i}", args.overrides, lightning_loop=True)[0]
            rows.append((loop_sps, fit_sps, p, pv, pm, k1, lk))
            print(f"pair {i}: whylearn loop {loop_sps:7.0f} steps/s, whole fit {fit_sps:7.0f} | plain {p:7.0f}, "
                  f"plain+val {pv:7.0f}, plain+measurements {pm:7.0f} | K=1 {k1:7.0f}, Lightning's loop {lk:7.0f} | "
                  f"ratio loop/plain {loop_sps / p:.3f}, loop/plain+measurements {loop_sps / pm:.3f}, "
                  f"fit/plain {fit_sps / p:.3f}  ({steps} steps)", flush=True)
    def med(j):
        return statistics.median(r[j] for r in rows)
    def best(j):
        return max(r[j] for r in rows)
    def pair(a, b):
        return [r[a] / r[b] for r in rows]
    print(f"\nclock {args.clock}, threads {torch.get_num_threads()}, {args.epochs} epochs x {steps_per_epoch} steps, "
          f"validation every {args.val_every} epochs, {len(rows)} pairs")
    print("| measure | steps/s (median) | steps/s (best) |\n| --- | --- | --- |")
    names = ["whylearn training loop (default callbacks + CSV + W&B offline)", "whylearn whole fit call (with start-up)",
             "plain PyTorch loop", "plain loop + same validation", "plain loop + the same measurements by hand",
             "whylearn, data.steps_per_chunk=1 (fast loop, K=1)", "whylearn, Lightning's own loop (the K=1 fallback)"]
    shown = (2, 3, 4, 0, 1) if args.no_k1 else (2, 3, 4, 0, 1, 5, 6)
    for j in shown:
        print(f"| {names[j]} | {med(j):.0f} | {best(j):.0f} |")
    print("\nratio of steps/s: median of the pairs (range) | best whylearn / best plain")
    ratios = [(0, 2, "whylearn loop / plain loop"), (0, 3, "whylearn loop / plain loop with the same validation"),
              (0, 4, "whylearn loop / plain loop with the same measurements"), (1, 2, "whylearn whole fit / plain loop")]
    if not args.no_k1:
        ratios += [(5, 2, "whylearn K=1 (fast loop) / plain loop"), (6, 2, "whylearn, Lightning's own loop / plain loop"),
                   (6, 4, "whylearn, Lightning's own loop / plain loop with the same measurements")]
    for a, b, what in ratios:
        p = pair(a, b)
        print(f"{what}: {statistics.median(p):.3f} ({min(p):.3f}-{max(p):.3f}) | {best(a) / best(b):.3f}")

if __name__ == "__main__":
    main()
