#!/usr/bin/env bash
# Step 1: SNLI jsonl -> tokenised text (train/valid[/test].{input0,input1,label}) in $SNLI_TEXT.
#
#   recipes/snli/prepare.sh [SNLI_DIR]
#
# SNLI_DIR (argument or env var): a directory with snli_1.0_train.jsonl (or the workplace's
#   snli_1.0_train_sample.jsonl), snli_1.0_dev.jsonl and optionally snli_1.0_test.jsonl.
#   Not given: ../shared/data/snli when it exists, else the official snli_1.0.zip is downloaded
#   ($SNLI_URL) into $SNLI_WORK/download (needs internet).
# EXTRA_TRAIN: comma-separated extra training jsonl files, e.g. the MultiNLI train file.
# TRAIN_SIZE: keep this many training pairs (seeded shuffle, SEED; 0 = all; default 0).
# Rows with gold_label "-" are dropped; bad rows stop with file:line.
set -euo pipefail
. "$(dirname "$0")/common.sh"
snli_activate

dir="${1:-${SNLI_DIR:-}}"
if [ -z "$dir" ]; then
    if [ -d "$SNLI_SHARED_DEFAULT" ]; then
        dir="$SNLI_SHARED_DEFAULT"
    else
        dl="$SNLI_WORK/download"
        if [ ! -f "$dl/snli_1.0/snli_1.0_dev.jsonl" ]; then
            mkdir -p "$dl"
            echo "[prepare] no SNLI_DIR given: downloading $SNLI_URL" >&2
            curl -fL --retry 3 -o "$dl/snli_1.0.zip.part" "$SNLI_URL" \
                || snli_die "download of $SNLI_URL failed (offline?); pass SNLI_DIR=<dir with snli_1.0_*.jsonl>"
            mv "$dl/snli_1.0.zip.part" "$dl/snli_1.0.zip"
            (cd "$dl" && python -m zipfile -e snli_1.0.zip .)
        fi
        dir="$dl/snli_1.0"
    fi
fi
[ -d "$dir" ] || snli_die "SNLI_DIR=$dir is not a directory"
train="$dir/snli_1.0_train.jsonl"
[ -f "$train" ] || train="$dir/snli_1.0_train_sample.jsonl"
[ -f "$train" ] || snli_die "$dir has neither snli_1.0_train.jsonl nor snli_1.0_train_sample.jsonl"
[ -f "$dir/snli_1.0_dev.jsonl" ] || snli_die "$dir/snli_1.0_dev.jsonl missing"
if [ -n "${EXTRA_TRAIN:-}" ]; then
    IFS=, read -ra extra <<< "$EXTRA_TRAIN"
    for f in "${extra[@]}"; do [ -f "$f" ] || snli_die "EXTRA_TRAIN file $f missing"; done
    train="$train,$EXTRA_TRAIN"
fi
splits=(--split "train=$train" --split "valid=$dir/snli_1.0_dev.jsonl")
[ -f "$dir/snli_1.0_test.jsonl" ] && splits+=(--split "test=$dir/snli_1.0_test.jsonl")
python -m fairseq_plugins.nli.prepare_data --out "$SNLI_TEXT" "${splits[@]}" \
    --max-examples "train=${TRAIN_SIZE:-0}" --max-examples "valid=${VALID_SIZE:-0}" --seed "${SEED:-1}"
