#!/usr/bin/env bash
# ERASER Movie Reviews: HardKuma vs Bernoulli (REINFORCE) rationales at the same selection rate,
# accuracy and agreement with the human rationales (token P/R/F1, IOU-F1), 50-d GloVe.
#
#   bash recipes/movies/run.sh                 # HardKuma, Bernoulli and full text, in parallel
#   bash recipes/movies/run.sh hardkuma_0.1    # one run
#
# Environment: DATA_DIR (default ../shared/data from the repo root; needs movies/{train,val}.jsonl,
# movies/docs/ and glove/glove.6B.50d.filtered.txt.gz), OUT (default runs/movies), PARALLEL
# (default 3), MAX_MINUTES (default 14), MAX_LENGTH (tokens kept per review, default 400: the
# reviews average 770 tokens and a bi-LSTM over all of them does not fit a 15-minute CPU budget;
# metrics compare against the human rationale inside the kept prefix).
# Model selection uses 100 reviews held out of train.jsonl; the reported split is val.jsonl.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"
OUT="${OUT:-$ROOT/runs/movies}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PARALLEL="${PARALLEL:-3}"
MAX_MINUTES="${MAX_MINUTES:-14}"
MAX_LENGTH="${MAX_LENGTH:-400}"
PY="${PYTHON:-python}"
for f in movies/train.jsonl movies/val.jsonl movies/docs glove/glove.6B.50d.filtered.txt.gz; do
  [ -e "$DATA_DIR/$f" ] || { echo "missing $DATA_DIR/$f (set DATA_DIR)" >&2; exit 1; }
done

COMMON=(--format eraser --train "$DATA_DIR/movies/train.jsonl" --holdout 100 --test "$DATA_DIR/movies/val.jsonl"
        --embeddings "$DATA_DIR/glove/glove.6B.50d.filtered.txt.gz" --max-length "$MAX_LENGTH"
        --epochs 30 --batch-size 16 --lr 1e-3 --weight-decay 1e-5 --hidden-size 64 --dropout 0.3
        --pooling max --eval-every 25 --max-minutes "$MAX_MINUTES" --threads 1 --no-progress --seed 1)
declare -A RUNS=(
  [hardkuma_0.1]="--gate hardkuma --selection 0.1 --equality --lambda-init 0 --ab-map sigmoid --ab-clamp 0.1 10 --lagrange-lr 0.002 --lagrange-alpha 0.9"
  [bernoulli_0.1]="--gate bernoulli --sparsity-target 0.1 --sparsity-weight 2.0 --coherence-weight 1.0"
  [fulltext]="--gate none"
)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(hardkuma_0.1 bernoulli_0.1 fulltext)
cd "$ROOT"
for name in "${NAMES[@]}"; do
  [ -n "${RUNS[$name]+x}" ] || { echo "unknown run $name (known: ${!RUNS[*]})" >&2; exit 1; }
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
  echo "start $name -> $OUT/$name ($(date -u +%H:%M:%S))"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $PY -m hardkuma_attention.rationale train "${COMMON[@]}" ${RUNS[$name]} \
    --out "$OUT/$name" --name "movies_$name" > "$OUT/$name.log" 2>&1 &
done
wait
