#!/usr/bin/env bash
# The SNLI recipe end to end: set up .venv, prepare, preprocess, train softmax and HardKuma
# decomposable attention, evaluate both on SNLI dev, draw one HardKuma heatmap, print a summary.
#
#   bash recipes/snli/run.sh [SNLI_DIR]
#
# Defaults (all overridable from the environment, see the step scripts):
#   SNLI_DIR      ../shared/data/snli (else the official zip is downloaded; see prepare.sh)
#   SNLI_WORK     runs/snli          outputs: text/, bin/, softmax/, hardkuma/, heatmap.png, summary.md
#   TRAIN_SIZE    6520               training pairs kept (the local sample has 6,514 labelled ones)
#   MAX_EPOCH     12                 same budget for both models
#   PARALLEL      1                  train both models at the same time, one torch thread each
#                                    (2 cores; words/s of the two then compare under equal load)
#   SEED          1
#   HARDKUMA_ARGS ""                 extra fairseq-train args of the HardKuma model only,
#                                    e.g. "--hardkuma-attend-mlp shared" or "--attention-normalize sum"
#   FRESH         0                  1: retrain both models from scratch (see below)
# Train on a reduced training set: report the numbers as such, never as "SNLI" results.
#
# Running it again in the same SNLI_WORK with the same settings reuses the finished models (no
# training; recipes/fairseq_runs.sh), re-evaluates them and prints the same table (fairseq_plugins.nli.summary);
# an interrupted training resumes from checkpoint_last.pt; a larger MAX_EPOCH / MAX_UPDATE
# continues the finished runs; other settings stop with an error naming the folder.  FRESH=1
# retrains from scratch in the same folder; another SNLI_WORK keeps both runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
. recipes/setup_env.sh
. recipes/snli/common.sh
export SNLI_WORK SNLI_TEXT SNLI_BIN
export TRAIN_SIZE="${TRAIN_SIZE:-6520}" MAX_EPOCH="${MAX_EPOCH:-12}" SEED="${SEED:-1}"
mkdir -p "$SNLI_WORK"
start=$(date +%s)

recipes/snli/prepare.sh "$@"
recipes/snli/preprocess.sh

echo "[run] training softmax and hardkuma (MAX_EPOCH=$MAX_EPOCH${MAX_UPDATE:+, MAX_UPDATE=$MAX_UPDATE}, seed $SEED); logs in $SNLI_WORK/{softmax,hardkuma}/train.log"
export PARALLEL="${PARALLEL:-1}"
if [ "$PARALLEL" = 1 ]; then
    THREADS=1 SAVE_DIR="$SNLI_WORK/softmax" recipes/snli/train.sh softmax > /dev/null & pid_s=$!
    THREADS=1 SAVE_DIR="$SNLI_WORK/hardkuma" recipes/snli/train.sh hardkuma ${HARDKUMA_ARGS:-} > /dev/null & pid_h=$!
    status=0
    wait "$pid_s" || status=$?
    wait "$pid_h" || status=$?
    [ "$status" = 0 ] || snli_die "training failed: see $SNLI_WORK/{softmax,hardkuma}/train.log"
else
    SAVE_DIR="$SNLI_WORK/softmax" recipes/snli/train.sh softmax > /dev/null
    SAVE_DIR="$SNLI_WORK/hardkuma" recipes/snli/train.sh hardkuma ${HARDKUMA_ARGS:-} > /dev/null
fi

for att in softmax hardkuma; do
    line="$(recipes/snli/evaluate.sh "$SNLI_WORK/$att/checkpoint_best.pt" valid)"
    echo "[run] $att: $line"
    echo "$line" > "$SNLI_WORK/$att/eval.valid.txt.tmp" && mv "$SNLI_WORK/$att/eval.valid.txt.tmp" "$SNLI_WORK/$att/eval.valid.txt"
done
python -m fairseq_plugins.nli.heatmap "$SNLI_WORK/hardkuma/checkpoint_best.pt" --data "$SNLI_BIN" \
    --text "$SNLI_TEXT" --index "${HEATMAP_INDEX:-0}" --out "$SNLI_WORK/heatmap.png" > "$SNLI_WORK/heatmap.log" 2>&1 \
    || { cat "$SNLI_WORK/heatmap.log" >&2; snli_die "fairseq_plugins.nli.heatmap failed"; }
python -m fairseq_plugins.nli.summary "$SNLI_WORK" --seed "$SEED" --max-epoch "$MAX_EPOCH" --hardkuma-args "${HARDKUMA_ARGS:-}"
echo "[run] done in $(( $(date +%s) - start ))s"
