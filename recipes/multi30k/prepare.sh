#!/usr/bin/env bash
# Multi30k de->en: raw text -> Moses tokens -> joint SentencePiece -> fairseq-preprocess.
#
#   bash recipes/multi30k/prepare.sh [RAW_DIR] [WORK_DIR]
#
# RAW_DIR  (or $MULTI30K_DIR): folder with {train,val,test_2016_flickr}.{de,en}[.gz];
#          default ../shared/data/multi30k from the repo root.  If no directory was given and the
#          default does not exist, the official raw files are downloaded (needs internet).
# WORK_DIR (or $MULTI30K_WORK): outputs; default runs/multi30k.  Writes WORK_DIR/text (pieces,
#          spm.model, raw references) and WORK_DIR/data-bin (binarised, joined dictionary).
# Env: VOCAB_SIZE (8000), MAX_TRAIN (0 = all pairs), MAX_EVAL (0 = all valid/test pairs; for smoke
#      tests only: BLEU on a truncated test set is not the test_2016 score), WORKERS (1).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RAW_DIR="${1:-${MULTI30K_DIR:-}}"
WORK_DIR="${2:-${MULTI30K_WORK:-$ROOT/runs/multi30k}}"
VOCAB_SIZE="${VOCAB_SIZE:-8000}"
MAX_TRAIN="${MAX_TRAIN:-0}"
MAX_EVAL="${MAX_EVAL:-0}"
WORKERS="${WORKERS:-1}"
URL=https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw

if [[ -z "$RAW_DIR" ]]; then
  RAW_DIR="$ROOT/../shared/data/multi30k"
  if [[ ! -d "$RAW_DIR" ]]; then
    RAW_DIR="$WORK_DIR/download"
    mkdir -p "$RAW_DIR"
    for stem in train val test_2016_flickr; do
      for lang in de en; do
        [[ -f "$RAW_DIR/$stem.$lang.gz" ]] || curl -fsSL -o "$RAW_DIR/$stem.$lang.gz" "$URL/$stem.$lang.gz"
      done
    done
  fi
fi
[[ -d "$RAW_DIR" ]] || { echo "prepare.sh: raw data directory $RAW_DIR does not exist" >&2; exit 2; }

python -m fairseq_plugins.translation.text prepare --raw-dir "$RAW_DIR" --out-dir "$WORK_DIR/text" \
  --vocab-size "$VOCAB_SIZE" --max-train "$MAX_TRAIN" --max-eval "$MAX_EVAL"
rm -rf "$WORK_DIR/data-bin"
fairseq-preprocess --source-lang de --target-lang en \
  --trainpref "$WORK_DIR/text/train" --validpref "$WORK_DIR/text/valid" --testpref "$WORK_DIR/text/test" \
  --destdir "$WORK_DIR/data-bin" --joined-dictionary --workers "$WORKERS" 2>&1 | grep -v tensorboardX || true
[[ -f "$WORK_DIR/data-bin/test.de-en.en.bin" ]] || { echo "prepare.sh: fairseq-preprocess failed" >&2; exit 1; }
echo "prepared: $WORK_DIR/data-bin (raw references in $WORK_DIR/text/raw)"
