#!/usr/bin/env bash
# ERASER Movie Reviews on WHOLE reviews (no --max-length; 761 tokens on average on val) with the CNN
# encoder (--encoder cnn, README "Whole documents"): HardKuma selection + lasso, HardKuma selection
# only, and Bernoulli (REINFORCE) with coherence, for each seed of SEEDS; then one table.
#
#   bash recipes/movies/full_docs.sh                        # 3 methods x SEEDS="1 2 3"
#   SEEDS=1 bash recipes/movies/full_docs.sh hardkuma_lasso # one method, seed 1
#
# Environment: DATA_DIR (default ../shared/data), OUT (default runs/movies_full), PARALLEL (default 2),
# MAX_MINUTES (default 14 per model, one thread each), EPOCHS (default 20 = 1,880 updates; the seed-1
# pilots' best dev checkpoints were at updates 1,650-1,750 of 2,820, and nothing in training depends on
# the epoch count, so a shorter run is the longer one cut off), SEEDS (default "1 2 3"), LASSO (default
# 0.25: runs of 2/0.25 = 8 tokens; the human rationales on val come in runs of 6.6 tokens, 7.6 runs per
# review), SELECTOR_DILATION (default 1: the selector CNN's second layer has dilation D, a window of
# 1 + 4 (1 + D) tokens: 9 for 1, 21 for 4; every method's selector; D = 4 on the seed-1 pilot: 5.5 points
# more accuracy, but more scattered selections, README "Whole documents"), WARMUP (default 400 updates),
# ANNEAL (default 400 updates).
# HardKuma: the open warm-up (--warmup-gates open): for WARMUP updates the classifier reads every
# token (the CNN needs ~350 updates before it beats the majority class; with the old warm-up the task
# loss shut every gate first) while the selection constraint holds the gates open (annealed target 1),
# then the target falls linearly from 1 to 0.1 over ANNEAL updates.  --score-penalty 0.01 keeps the
# selector's scores inside the sigmoid a/b map's working range (without it they reached |s| = 20-300
# after the warm-up, where no gradient reaches the selector any more, and the selection stayed at 1.0
# or switched off all at once); a multiplier 10x faster than the preset's (--lagrange-lr 0.02, as in
# the span tests) follows the annealed target; --selection-gradient log_open keeps a gradient at the
# closed corner.  The pilot behind these settings (seed 1, one 22-minute run) is in README.md
# ("Whole documents").
# Rerun/resume/refuse semantics of recipes/rationale_runs.sh (launch_runs); exit status 1 naming the
# log when a run failed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/recipes/setup_env.sh"
# shellcheck disable=SC1091
. "$ROOT/recipes/rationale_runs.sh"
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"
OUT="${OUT:-$ROOT/runs/movies_full}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PARALLEL="${PARALLEL:-2}"
MAX_MINUTES="${MAX_MINUTES:-14}"
EPOCHS="${EPOCHS:-20}"
MAX_LENGTH=""   # whole reviews
SEEDS="${SEEDS:-1 2 3}"
LASSO="${LASSO:-0.25}"
SELECTOR_DILATION="${SELECTOR_DILATION:-1}"
WARMUP="${WARMUP:-400}"
ANNEAL="${ANNEAL:-400}"
PY="${PYTHON:-python}"
require_data "$DATA_DIR" "${MOVIES_DATA[@]}"

movies_args "$EPOCHS"
COMMON=("${MOVIES_ARGS[@]}" --eval-every 50 --encoder cnn --selector-dilation "$SELECTOR_DILATION")
HK="--gate hardkuma --selection 0.1 $HARDKUMA_CONTROLLER --lagrange-lr 0.02 --selection-gradient log_open --score-penalty 0.01
    --constraint-warmup $WARMUP --selection-anneal $ANNEAL --warmup-gates open"
declare -A METHODS=(
  [hardkuma_lasso]="$HK --lasso $LASSO"
  [hardkuma]="$HK"
  [bernoulli]="--gate bernoulli --sparsity-target 0.1 --sparsity-weight 2.0 --coherence-weight 0.2"
)
WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=(hardkuma_lasso hardkuma bernoulli)
declare -A RUNS=()
NAMES=()
for m in "${WANT[@]}"; do
  [ -n "${METHODS[$m]+x}" ] || { echo "unknown method $m (known: ${!METHODS[*]})" >&2; exit 2; }
  for s in $SEEDS; do
    RUNS[${m}_s$s]="${METHODS[$m]} --seed $s"
    NAMES+=("${m}_s$s")
  done
done
cd "$ROOT"
status=0
launch_runs movies_full "${NAMES[@]}" || status=$?
[ "$status" -eq 0 ] || { echo "error: full-document runs failed (status $status)" >&2; exit "$status"; }
RESULTS=()
for n in "${NAMES[@]}"; do RESULTS+=("$OUT/$n/results.json"); done
$PY -m hardkuma_attention.rationale table "${RESULTS[@]}" --split test \
  --columns accuracy,selected,transitions,token_precision,token_recall,token_f1,iou_f1,comprehensiveness,sufficiency
