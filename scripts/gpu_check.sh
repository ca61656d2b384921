#!/usr/bin/env bash
# GPU readiness check (issue 13, item 8): one prepared script, under 8 minutes on one GPU.
#
#   scripts/gpu_check.sh [--dry-run] [--list] [--data DIR] [--out DIR]
#
# Runs `whylearn-train ... trainer=gpu` smoke runs of every model family (MLP, vectorized ensemble,
# CNN, ResNet, GPT, MLP forecaster, perceptron, Hopfield), the fast loop under precision=bf16-mixed
# and 16-mixed (fp16 with a GradScaler), task.compile=true, and nanoGPT's shakespeare_char recipe
# (experiment=shakespeare_char) for as many steps as fit in its time budget, and prints one line per
# run: status, steps, steps/s, tokens/s and perf/mfu (language models), the last val/loss or val/acc.
# Record the output in docs/benchmarks.md ("GPU readiness").
#
#   --dry-run  the same runs on the CPU, a few steps each, small models, compile with the eager
#              backend: checks that every command composes and runs (tests/test_gpu_check.py)
#   --list     print the commands (with --dry-run: the CPU ones) instead of running them
#   --data     where MNIST/ and tinyshakespeare/ are (default: ../shared/data, else ./data);
#              runs whose data is missing are reported as skipped
#   --out      root of the run directories (default: a new temporary directory)
set -u
DRY=0
LIST=0
DATA=""
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --list) LIST=1 ;;
    --data) DATA="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (allowed: --dry-run --list --data DIR --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "$DATA" ]; then
  if [ -d "$HERE/../shared/data" ]; then DATA="$HERE/../shared/data"; else DATA="$HERE/data"; fi
fi
DATA="$(cd "$DATA" 2>/dev/null && pwd || echo "$DATA")"
TRAIN="${WHYLEARN_TRAIN:-$HERE/.venv/bin/whylearn-train}"
[ -x "$TRAIN" ] || TRAIN="whylearn-train"
PY="${WHYLEARN_PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PY" ] || PY="python"

# name | needs (mnist, shakespeare or -) | overrides on the GPU | extra overrides for --dry-run (CPU)
RUNS=(
  "mlp_fast_loop|-|experiment=mnist1d_mlp trainer.max_epochs=20|trainer.max_steps=6"
  "mlp_bf16|-|experiment=mnist1d_mlp trainer.max_epochs=20 trainer.precision=bf16-mixed|trainer.max_steps=6"
  "mlp_fp16_scaler|-|experiment=mnist1d_mlp trainer.max_epochs=20 trainer.precision=16-mixed|trainer.max_steps=6"
  "mlp_lightning_loop|-|experiment=mnist1d_mlp trainer.max_epochs=20 data.steps_per_chunk=1|trainer.max_steps=6"
  "ensemble_84_members|-|experiment=double_descent_mnist1d trainer.max_epochs=20|trainer.max_steps=6 ensemble.grid.model.width=[4,8] ensemble.grid.seed=[0] ensemble.lanes=1"
  "forecaster_mlp|-|experiment=kepler_mlp data.num_train=3000 trainer.max_steps=2000|trainer.max_steps=6 data.num_train=300"
  "cnn_bf16|mnist|data=mnist model=cnn model.k=32 optimizer=adam optimizer.lr=0.001 trainer.max_steps=600 trainer.max_epochs=-1 trainer.precision=bf16-mixed|trainer.max_steps=3 model.k=2 data.train_size=2000"
  "resnet20_fp16|mnist|data=mnist model=resnet optimizer=sgd optimizer.lr=0.05 optimizer.momentum=0.9 trainer.max_steps=600 trainer.max_epochs=-1 trainer.precision=16-mixed|trainer.max_steps=3 model.depth=8 model.width=4 data.train_size=2000"
  "perceptron|-|experiment=perceptron_separable|trainer.max_epochs=2"
  "hopfield|-|experiment=hopfield_images|"
  "gpt_compile|shakespeare|experiment=shakespeare_char trainer.max_steps=300 trainer.precision=bf16-mixed task.compile=true|trainer.max_steps=3 scheduler.warmup_steps=1 task.compile=eager model.n_layer=1 model.n_embd=32 model.n_head=2 data.block_size=32 data.batch_size=4 data.max_eval_windows=16 task.sample_tokens=8"
  "shakespeare_char_nanogpt|shakespeare|experiment=shakespeare_char trainer.precision=bf16-mixed +trainer.max_time=00:00:03:00|trainer.max_steps=3 scheduler.warmup_steps=1 model.n_layer=1 model.n_embd=32 model.n_head=2 data.block_size=32 data.batch_size=4 data.max_eval_windows=16 task.sample_tokens=8"
)

has_data() {
  case "$1" in
    mnist) [ -d "$DATA/MNIST/raw" ] ;;
    shakespeare) [ -f "$DATA/tinyshakespeare/input.txt" ] ;;
    *) true ;;
  esac
}

if [ "$LIST" = 1 ]; then
  OUT="${OUT:-${TMPDIR:-/tmp}/gpu_check}"
else
  if [ -z "$OUT" ]; then OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"; fi
  mkdir -p "$OUT"
fi
if [ "$DRY" = 1 ]; then DEVICE="trainer=cpu threads=1"; else DEVICE="trainer=gpu"; fi
COMMON="paths.data_dir=$DATA logger=csv progress=lines test_after_fit=true"

if [ "$LIST" = 0 ]; then
  echo "gpu_check: $( [ "$DRY" = 1 ] && echo 'DRY RUN on the CPU' || echo GPU ), data $DATA, runs in $OUT"
  if [ "$DRY" = 0 ]; then
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")'
  fi
fi
START=$SECONDS
FAILED=0
for spec in "${RUNS[@]}"; do
  IFS='|' read -r name needs gpu dry <<< "$spec"
  args="$gpu $DEVICE $COMMON hydra.run.dir=$OUT/$name"
  [ "$DRY" = 1 ] && args="$args $dry"
  if [ "$LIST" = 1 ]; then echo "$name|$needs|$args"; continue; fi
  if ! has_data "$needs"; then echo "$name: skipped ($needs data not found under $DATA)"; continue; fi
  t0=$SECONDS
  # shellcheck disable=SC2086
  "$TRAIN" $args > "$OUT/$name.log" 2>&1
  rc=$?
  [ $rc = 0 ] || FAILED=$((FAILED + 1))
  "$PY" - "$OUT/$name/summary.json" "$name" "$rc" "$((SECONDS - t0))" <<'EOF'
import json, sys
path, name, rc, secs = sys.argv[1:5]
try:
    s = json.load(open(path))
except OSError:
    s = {}
keys = ("steps", "steps_per_s", "tokens_per_s", "mfu", "val/loss", "val/acc", "test/acc", "params")
shown = "  ".join(f"{k}={s[k]:.4g}" if isinstance(s.get(k), float) else f"{k}={s[k]}" for k in keys if s.get(k) is not None)
print(f"{name}: exit {rc}, {secs} s, status {s.get('status', 'none')}  {shown}", flush=True)
EOF
  [ $rc = 0 ] || tail -n 15 "$OUT/$name.log"
done
if [ "$LIST" = 0 ]; then
  echo "gpu_check: $FAILED failed, $((SECONDS - START)) s in all; logs and run directories in $OUT"
fi
exit $(( FAILED > 0 ))
