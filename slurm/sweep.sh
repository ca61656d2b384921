#!/bin/bash
# A sweep on SLURM: run on the login node; Hydra's submitit launcher submits one job array (one task per
# combination) and waits for it. Requeue on USR2 (signal_delay_s before the time limit) by submitit; each
# job resumes in its own sweep subfolder. Options: conf/hydra/launcher/slurm.yaml.
#
#   bash slurm/sweep.sh experiment=mnist1d_mlp seed=0,1,2 optimizer.lr=0.01,0.1
#   bash slurm/sweep.sh experiment=mnist1d_mlp hparams_search=mnist1d_optuna hydra.sweeper.n_jobs=8
#
# Run it under tmux/screen (or nohup): the launcher process waits for the jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${WHYLEARN_PYTHON:-.venv/bin/python}
exec "$PY" -m whylearn.cli.train -m hydra/launcher=slurm \
  hydra.launcher.partition="${PARTITION:-gpu}" hydra.launcher.gpus_per_node="${GPUS:-1}" \
  hydra.launcher.timeout_min="${TIME_MIN:-240}" progress=lines "$@"
