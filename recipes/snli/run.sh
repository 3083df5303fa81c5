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
# Train on a reduced training set: report the numbers as such, never as "SNLI" results.
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
t0=$(date +%s)
if [ "${PARALLEL:-1}" = 1 ]; then
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
train_s=$(( $(date +%s) - t0 ))

declare -A acc nz wps
for att in softmax hardkuma; do
    line="$(recipes/snli/evaluate.sh "$SNLI_WORK/$att/checkpoint_best.pt" valid)"
    echo "[run] $att: $line"
    acc[$att]="$(sed -n 's/.*accuracy=\([^ ]*\).*/\1/p' <<< "$line")"
    nz[$att]="$(sed -n 's/.*nonzero=\([^ ]*\).*/\1/p' <<< "$line")"
    wps[$att]=$(python recipes/snli/parse_log.py train "$SNLI_WORK/$att/train.log" | sed 's/ .*//; s/.*=//')
done
if [ "${PARALLEL:-1}" = 1 ]; then
    # Compare speeds only over the window where both trainings ran (same load for both).
    if both="$(python recipes/snli/parse_log.py overlap "$SNLI_WORK/softmax/train.log" "$SNLI_WORK/hardkuma/train.log")"; then
        wps[softmax]="$(sed -n 's/.*words_per_s_a=\([^ ]*\).*/\1/p' <<< "$both")"
        wps[hardkuma]="$(sed -n 's/.*words_per_s_b=\([^ ]*\).*/\1/p' <<< "$both")"
    fi
fi
python recipes/snli/heatmap.py "$SNLI_WORK/hardkuma/checkpoint_best.pt" --data "$SNLI_BIN" \
    --text "$SNLI_TEXT" --index "${HEATMAP_INDEX:-0}" --out "$SNLI_WORK/heatmap.png" > "$SNLI_WORK/heatmap.log" 2>&1 \
    || { cat "$SNLI_WORK/heatmap.log" >&2; snli_die "heatmap.py failed"; }

ntrain=$(wc -l < "$SNLI_TEXT/train.label"); ndev=$(wc -l < "$SNLI_TEXT/valid.label")
ratio=$(python -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "${wps[hardkuma]}" "${wps[softmax]}")
summary="$SNLI_WORK/summary.md"
{
    echo "Reduced training set: $ntrain SNLI train pairs, evaluated on SNLI dev ($ndev pairs); seed $SEED, $MAX_EPOCH epochs max; training took ${train_s}s wall (PARALLEL=${PARALLEL:-1}); HARDKUMA_ARGS='${HARDKUMA_ARGS:-}'."
    echo
    echo "| attention | dev accuracy (%) | non-zero attention cells (%) | training words/s (median of log intervals$([ "${PARALLEL:-1}" = 1 ] && echo ", both running")) |"
    echo "|---|---|---|---|"
    echo "| softmax | ${acc[softmax]} | ${nz[softmax]} | ${wps[softmax]} |"
    echo "| hardkuma | ${acc[hardkuma]} | ${nz[hardkuma]} | ${wps[hardkuma]} |"
    echo
    echo "words/s ratio hardkuma/softmax: $ratio; heatmap: $SNLI_WORK/heatmap.png"
} > "$summary.tmp"
mv "$summary.tmp" "$summary"
cat "$summary"
echo "[run] done in $(( $(date +%s) - start ))s"
