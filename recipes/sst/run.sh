#!/usr/bin/env bash
# SST 5-class rationale experiments (Bastings et al. 2019, Sec. 6.1) on 50-d GloVe (the paper: 300-d).
#
#   bash recipes/sst/run.sh                      # every run below, PARALLEL at a time, then the plot
#   bash recipes/sst/run.sh fulltext hardkuma_0.3  # only these runs
#
# Environment: DATA_DIR (default ../shared/data from the repo root; needs sst/{train,dev,test}.txt
# and glove/glove.6B.50d.filtered.txt.gz), OUT (default runs/sst), PARALLEL (default 3),
# MAX_MINUTES (training budget per run, default 14), EPOCHS (default 30).
# Each run uses one torch thread (OMP_NUM_THREADS=1) and writes OUT/<name>/results.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"
OUT="${OUT:-$ROOT/runs/sst}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PARALLEL="${PARALLEL:-3}"
MAX_MINUTES="${MAX_MINUTES:-14}"
EPOCHS="${EPOCHS:-30}"
PY="${PYTHON:-python}"
for f in sst/train.txt sst/dev.txt sst/test.txt glove/glove.6B.50d.filtered.txt.gz; do
  [ -f "$DATA_DIR/$f" ] || { echo "missing $DATA_DIR/$f (set DATA_DIR)" >&2; exit 1; }
done

COMMON=(--format sst --train "$DATA_DIR/sst/train.txt" --dev "$DATA_DIR/sst/dev.txt"
        --test "$DATA_DIR/sst/test.txt" --embeddings "$DATA_DIR/glove/glove.6B.50d.filtered.txt.gz"
        --epochs "$EPOCHS" --batch-size 25 --lr 1e-3 --weight-decay 1e-5 --hidden-size 150 --dropout 0.5
        --eval-every 171 --max-minutes "$MAX_MINUTES" --threads 1 --no-progress --seed 1)
# HardKuma controller: equality constraint (lambda may turn negative; core additive update) with a
# slow multiplier (lr 0.002) and a short moving average (alpha 0.9); a, b in [0.1, 10] through a
# smooth sigmoid map (--ab-map sigmoid).  With the core's clamp(softplus) map, gates pushed past the
# clamp get exactly zero gradient: they sat at 1 while lambda wound up and then all switched off;
# faster multipliers (lr 0.01-0.05, alpha 0.99), a warm-up or an annealed target did not help
# (see README).
LAGRANGE="--equality --lambda-init 0 --ab-map sigmoid --ab-clamp 0.1 10 --lagrange-lr 0.002 --lagrange-alpha 0.9"
declare -A RUNS=(
  [fulltext]="--gate none"
  [hardkuma_0.1]="--gate hardkuma --selection 0.1 $LAGRANGE"
  [hardkuma_0.3]="--gate hardkuma --selection 0.3 $LAGRANGE"
  [hardkuma_0.5]="--gate hardkuma --selection 0.5 $LAGRANGE"
  [bernoulli_0.1]="--gate bernoulli --sparsity-target 0.1 --sparsity-weight 1.0"
  [bernoulli_0.3]="--gate bernoulli --sparsity-target 0.3 --sparsity-weight 1.0"
  [bernoulli_0.5]="--gate bernoulli --sparsity-target 0.5 --sparsity-weight 1.0"
)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(fulltext hardkuma_0.1 hardkuma_0.3 hardkuma_0.5 bernoulli_0.1 bernoulli_0.3 bernoulli_0.5)
mkdir -p "$OUT"
cd "$ROOT"
for name in "${NAMES[@]}"; do
  [ -n "${RUNS[$name]+x}" ] || { echo "unknown run $name (known: ${!RUNS[*]})" >&2; exit 1; }
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
  echo "start $name -> $OUT/$name ($(date -u +%H:%M:%S))"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $PY -m hardkuma_attention.rationale train "${COMMON[@]}" ${RUNS[$name]} \
    --out "$OUT/$name" --name "sst_$name" > "$OUT/$name.log" 2>&1 &
done
wait
ls "$OUT"/*/results.json >/dev/null 2>&1 && $PY -m hardkuma_attention.rationale plot "$OUT"/*/results.json \
  --out "$OUT/accuracy_vs_selected.png" --title "SST 5-class, 50-d GloVe"
