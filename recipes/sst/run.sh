#!/usr/bin/env bash
# SST 5-class rationale experiments (Bastings et al. 2019, Sec. 6.1) on 50-d GloVe (the paper: 300-d).
#
#   bash recipes/sst/run.sh                      # every run below, PARALLEL at a time, then the plot
#   bash recipes/sst/run.sh fulltext hardkuma_0.3  # only these runs
#
# Environment: DATA_DIR (default ../shared/data from the repo root; needs sst/{train,dev,test}.txt
# and glove/glove.6B.50d.filtered.txt.gz), OUT (default runs/sst), PARALLEL (default 3),
# MAX_MINUTES (training budget per run, default 14), EPOCHS (default 30), SEED (default 1).
# Each run uses one torch thread (OMP_NUM_THREADS=1) and writes OUT/<name>/results.json.
# Running it again reuses every finished run whose arguments are unchanged (prints "reuse NAME")
# and redraws the plot; FRESH=1 retrains the named runs; runs with changed arguments stop the recipe
# before any training (recipes/rationale_runs.sh: launch_runs).  Exit status 1 when a run fails
# (named with its log), 2 for changed arguments.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/recipes/setup_env.sh"   # the project venv, as recipes/snli/run.sh (PYTHON overrides the interpreter)
# shellcheck disable=SC1091
. "$ROOT/recipes/rationale_runs.sh"
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"
OUT="${OUT:-$ROOT/runs/sst}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PARALLEL="${PARALLEL:-3}"
MAX_MINUTES="${MAX_MINUTES:-14}"
EPOCHS="${EPOCHS:-30}"
PY="${PYTHON:-python}"
require_data "$DATA_DIR" sst/train.txt sst/dev.txt sst/test.txt glove/glove.6B.50d.filtered.txt.gz

COMMON=(--format sst --train "$DATA_DIR/sst/train.txt" --dev "$DATA_DIR/sst/dev.txt"
        --test "$DATA_DIR/sst/test.txt" --embeddings "$DATA_DIR/glove/glove.6B.50d.filtered.txt.gz"
        --epochs "$EPOCHS" --batch-size 25 --lr 1e-3 --weight-decay 1e-5 --hidden-size 150 --dropout 0.5
        --eval-every 171 --max-minutes "$MAX_MINUTES" --threads 1 --no-progress --seed "${SEED:-1}")
# HardKuma controller: HARDKUMA_CONTROLLER of recipes/rationale_runs.sh.
declare -A RUNS=(
  [fulltext]="--gate none"
  [hardkuma_0.1]="--gate hardkuma --selection 0.1 $HARDKUMA_CONTROLLER"
  [hardkuma_0.3]="--gate hardkuma --selection 0.3 $HARDKUMA_CONTROLLER"
  [hardkuma_0.5]="--gate hardkuma --selection 0.5 $HARDKUMA_CONTROLLER"
  [bernoulli_0.1]="--gate bernoulli --sparsity-target 0.1 --sparsity-weight 1.0"
  [bernoulli_0.3]="--gate bernoulli --sparsity-target 0.3 --sparsity-weight 1.0"
  [bernoulli_0.5]="--gate bernoulli --sparsity-target 0.5 --sparsity-weight 1.0"
)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(fulltext hardkuma_0.1 hardkuma_0.3 hardkuma_0.5 bernoulli_0.1 bernoulli_0.3 bernoulli_0.5)
mkdir -p "$OUT"
cd "$ROOT"
launch_runs sst "${NAMES[@]}"
ls "$OUT"/*/results.json >/dev/null 2>&1 && $PY -m hardkuma_attention.rationale plot "$OUT"/*/results.json \
  --out "$OUT/accuracy_vs_selected.png" --title "SST 5-class, 50-d GloVe"
