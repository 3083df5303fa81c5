#!/usr/bin/env bash
# Right for the right reasons on ERASER Movies: a plain full-text classifier vs the same classifier
# trained with the RRR penalty on the tokens outside the human rationales (`hardkuma-rationale train
# --rrr`, on a fraction of the training reviews), then on val.jsonl: accuracy, the share of the
# input-gradient mass inside the human rationales, and token F1 / IOU-F1 / AUPRC of the top input×gradient
# tokens (at the human rate) vs the human spans.
#
#   bash recipes/explain/movies_rrr.sh
#
# Settings = recipes/movies/run.sh fulltext (50-d GloVe, bi-LSTM 64, max pooling, first 400 tokens,
# 100 training reviews held out for model selection), the same seed and wall-clock budget for every
# run; all runs of one seed train side by side (one thread each).
# Environment: DATA_DIR (default ../shared/data from the repo root), OUT (default runs/explain/movies_rrr),
# SEEDS (default "1"), SCALE (RRR λ1 = SCALE × auto λ1, default 0.1: 1 kept the classifier at chance
# for 100+ updates on Movies, as on decoy digits the auto value over-regularises), MODES (RRR variants, default
# "sum per-dimension": the gradient summed over the embedding per token, and every embedding coordinate),
# FRACTION (share of the annotated training reviews that get the penalty, default 0.5),
# MAX_MINUTES (per run, default 20), MAX_LENGTH (default 400), EPOCHS (default 30).
# Writes the evaluation to $OUT/eval/rrr_eval.json (replaced on a rerun).
# Running it again retrains every model from scratch (each run folder is emptied first); a failed
# run stops the recipe with exit status 1 naming its log.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/recipes/setup_env.sh"   # the project venv, as recipes/snli/run.sh (PYTHON overrides the interpreter)
# shellcheck disable=SC1091
. "$ROOT/recipes/rationale_runs.sh"
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"
OUT="${OUT:-$ROOT/runs/explain/movies_rrr}"
SEEDS="${SEEDS:-1}"
SCALE="${SCALE:-0.1}"
MODES="${MODES:-sum per-dimension}"
FRACTION="${FRACTION:-0.5}"
MAX_MINUTES="${MAX_MINUTES:-20}"
MAX_LENGTH="${MAX_LENGTH:-400}"
EPOCHS="${EPOCHS:-30}"
PY="${PYTHON:-python}"
require_data "$DATA_DIR" "${MOVIES_DATA[@]}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"

movies_args "$EPOCHS"  # = recipes/movies/run.sh fulltext
COMMON=("${MOVIES_ARGS[@]}" --gate none)
train() {  # name seed [extra args]
  local name=$1 seed=$2; shift 2
  echo "start $name seed $seed ($(date -u +%H:%M:%S))"
  rm -rf "${OUT:?}/$name"
  OMP_NUM_THREADS=1 $PY -m hardkuma_attention.rationale train "${COMMON[@]}" --seed "$seed" "$@" \
    --out "$OUT/$name" > "$OUT/$name.log" 2>&1 || { echo "error: run $name failed: see $OUT/$name.log" >&2; return 1; }
  echo "done $name ($(date -u +%H:%M:%S))"
}
MODELS=()
for seed in $SEEDS; do
  pids=()
  train "plain_s$seed" "$seed" & pids+=($!)
  MODELS+=("plain_s$seed=$OUT/plain_s$seed/model.pt")
  for mode in $MODES; do
    case $mode in
      sum) name="rrr${SCALE}_s$seed"; extra=() ;;
      per-dimension) name="rrr${SCALE}dim_s$seed"; extra=(--rrr-per-dimension) ;;
      *) echo "unknown RRR mode $mode (sum | per-dimension)" >&2; exit 1 ;;
    esac
    train "$name" "$seed" --rrr --rrr-fraction "$FRACTION" --rrr-lambda1-scale "$SCALE" "${extra[@]}" & pids+=($!)
    MODELS+=("$name=$OUT/$name/model.pt")
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || exit 1
done
OMP_NUM_THREADS=1 $PY -m hardkuma_attention.explain rrr-eval --data "$DATA_DIR/movies/val.jsonl" \
  --models "${MODELS[@]}" --out "$OUT/eval" --overwrite --no-progress
