#!/usr/bin/env bash
# Evaluate a Multi30k checkpoint: beam search, detokenise, sacrebleu; attention sparsity; heatmap.
#
#   bash recipes/multi30k/evaluate.sh CKPT_DIR [SUBSET]
#
# CKPT_DIR: a train.sh save dir (uses $CHECKPOINT, default checkpoint_best.pt).  SUBSET: test
# (test_2016_flickr, default) or valid.  Data: $DATA_BIN (runs/multi30k/data-bin) and $TEXT_DIR
# (runs/multi30k/text: spm.model and raw references), both made by prepare.sh.
# Env: BEAM (5), BATCH (64), THREADS (1), HEATMAP_INDEX (0), OUT_DIR (CKPT_DIR).
# Writes into OUT_DIR: gen.SUBSET.txt (fairseq-generate), hyp.SUBSET.txt (detokenised),
# bleu.SUBSET.json, sparsity.SUBSET.json, rows.SUBSET.json (cross-attention rows per layer: % empty,
# open cells, max weight), heatmap.SUBSET.png.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CKPT_DIR="${1:?usage: evaluate.sh CKPT_DIR [test|valid]}"
SUBSET="${2:-test}"
DATA_BIN="${DATA_BIN:-$ROOT/runs/multi30k/data-bin}"
TEXT_DIR="${TEXT_DIR:-$ROOT/runs/multi30k/text}"
CKPT="$CKPT_DIR/${CHECKPOINT:-checkpoint_best.pt}"
OUT="${OUT_DIR:-$CKPT_DIR}"
mkdir -p "$OUT"
THREADS="${THREADS:-1}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
[[ -f "$CKPT" ]] || { echo "evaluate.sh: no checkpoint $CKPT" >&2; exit 2; }
[[ -f "$TEXT_DIR/raw/$SUBSET.en" ]] || { echo "evaluate.sh: no reference $TEXT_DIR/raw/$SUBSET.en (run prepare.sh)" >&2; exit 2; }
# shellcheck disable=SC1091
. "$ROOT/recipes/fairseq_runs.sh"
USER_DIR="$(fairseq_user_dir)" || exit 2

fairseq-generate "$DATA_BIN" --user-dir "$USER_DIR" --path "$CKPT" \
  --task translation --source-lang de --target-lang en --gen-subset "$SUBSET" \
  --beam "${BEAM:-5}" --batch-size "${BATCH:-64}" --required-batch-size-multiple 1 \
  --cpu --num-workers 0 > "$OUT/gen.$SUBSET.txt" 2> "$OUT/gen.$SUBSET.log" \
  || { bad="$(grep -m1 -o 'CheckpointError: .*' "$OUT/gen.$SUBSET.log" || true)"  # corrupt / foreign checkpoint
       [[ -z "$bad" ]] || { echo "evaluate.sh: ${bad#CheckpointError: }" >&2; exit 2; }
       tail -n 20 "$OUT/gen.$SUBSET.log" >&2; exit 1; }
# hypotheses in corpus order: "H-<id>\t<score>\t<pieces>"
grep '^H-' "$OUT/gen.$SUBSET.txt" | sed 's/^H-//' | sort -n -k1,1 | cut -f3 \
  | python -m fairseq_plugins.translation.text detok --spm "$TEXT_DIR/spm.model" --lang en > "$OUT/hyp.$SUBSET.txt"
python "$ROOT/recipes/multi30k/score.py" --hyp "$OUT/hyp.$SUBSET.txt" --ref "$TEXT_DIR/raw/$SUBSET.en" \
  --json "$OUT/bleu.$SUBSET.json"
python -m fairseq_plugins.translation.analyze sparsity --data-bin "$DATA_BIN" --path "$CKPT" --subset "$SUBSET" \
  --json "$OUT/sparsity.$SUBSET.json" --rows-json "$OUT/rows.$SUBSET.json" 2>&1 | grep -v tensorboardX
python -m fairseq_plugins.translation.analyze heatmap --data-bin "$DATA_BIN" --path "$CKPT" --subset "$SUBSET" \
  --index "${HEATMAP_INDEX:-0}" --out "$OUT/heatmap.$SUBSET.png" 2>&1 | grep -v tensorboardX
