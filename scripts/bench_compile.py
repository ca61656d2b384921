"""task.compile=true against eager: the same whylearn run twice in one process, alternating.

Reports, per round: the whole fit's wall time (compilation included: TorchInductor compiles on the first
steps) and the steps/s of the training loop after the first epoch (the compiled model's steady state),
for eager and compiled, and the final training loss of both (the same training up to float tolerance).

    python scripts/bench_compile.py --threads 1                                   # MNIST-1D MLP, 20 epochs
    python scripts/bench_compile.py --threads 1 experiment=shakespeare_char_cpu trainer.max_steps=300
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from whylearn.config import compose_run  # noqa: E402
from whylearn.experiment import run  # noqa: E402


class SteadyTimer(Callback):
    """Steps/s from the end of the first epoch to the end of training."""

    def on_train_epoch_end(self, trainer, pl_module):
        if not hasattr(self, "t0"):
            self.t0, self.s0 = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer, pl_module):
        t0, s0 = getattr(self, "t0", None), getattr(self, "s0", 0)
        self.sps = (trainer.global_step - s0) / (time.perf_counter() - t0) if t0 else float("nan")


TIMERS: list[SteadyTimer] = []


def make_timer() -> SteadyTimer:
    TIMERS.append(SteadyTimer())
    return TIMERS[-1]


def one(overrides: list[str], out: Path, compiled: bool) -> tuple[float, float, float]:
    cfg = compose_run([*overrides, f"task.compile={str(compiled).lower()}", "progress=none", "logger=csv",
                       "test_after_fit=false"], out)
    with open_dict(cfg):
        cfg.callbacks.steady_timer = {"_target_": f"{__name__}.make_timer"}
    t = time.perf_counter()
    summary = run(cfg)
    return time.perf_counter() - t, TIMERS[-1].sps, summary.get("train/loss", float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (default: experiment=mnist1d_mlp trainer.max_epochs=20)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = args.overrides or ["experiment=mnist1d_mlp", "trainer.max_epochs=20"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            e = one(overrides, Path(tmp) / f"e{i}", False)
            c = one(overrides, Path(tmp) / f"c{i}", True)
            rows.append((e, c))
            print(f"round {i}: eager fit {e[0]:.1f} s, {e[1]:.0f} steps/s after epoch 1 | compiled fit {c[0]:.1f} s, "
                  f"{c[1]:.0f} steps/s | train/loss {e[2]:.5f} vs {c[2]:.5f}", flush=True)
    med = statistics.median
    print(f"\nthreads {torch.get_num_threads()}, {' '.join(overrides)}, {len(rows)} rounds (median)")
    print("| | whole fit (s) | steps/s after the first epoch | final train/loss |\n| --- | --- | --- | --- |")
    for j, name in ((0, "eager"), (1, "task.compile=true")):
        print(f"| {name} | {med(r[j][0] for r in rows):.1f} | {med(r[j][1] for r in rows):.0f} | "
              f"{med(r[j][2] for r in rows):.5f} |")


if __name__ == "__main__":
    main()
