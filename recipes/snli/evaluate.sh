#!/usr/bin/env bash
# Step 4: accuracy and % non-zero attention cells of a checkpoint on one split (deterministic gates).
#
#   recipes/snli/evaluate.sh CHECKPOINT [SPLIT]        (SPLIT: valid = SNLI dev (default), test, train)
#
# Runs fairseq-validate (eval mode: HardKuma gates take their deterministic value) with
# --required-batch-size-multiple 1 so that every pair is counted, and prints one line:
#   accuracy=<%> nonzero=<% of valid attention cells, NULL cells included> pairs=<n> split=<split>
set -euo pipefail
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/../fairseq_runs.sh"
snli_activate
ckpt="${1:-}"; split="${2:-valid}"
[ -f "$ckpt" ] || snli_die "usage: $0 CHECKPOINT [SPLIT]; checkpoint '$ckpt' not found"
[ -f "$SNLI_BIN/dict.input0.txt" ] || snli_die "$SNLI_BIN/dict.input0.txt missing: run recipes/snli/preprocess.sh first"
export OMP_NUM_THREADS="${THREADS:-1}" MKL_NUM_THREADS="${THREADS:-1}"
user_dir="$(fairseq_user_dir)" || exit 2
log="$(mktemp)"; trap 'rm -f "$log"' EXIT
fairseq-validate "$SNLI_BIN" --user-dir "$user_dir" --path "$ckpt" \
    --model-overrides "{'data': '$SNLI_BIN'}" --task nli --valid-subset "$split" \
    --batch-size "${EVAL_BATCH_SIZE:-256}" --required-batch-size-multiple 1 --cpu --num-workers 0 \
    --log-format simple > "$log" 2>&1 || {
        # a corrupt / foreign checkpoint: fairseq's traceback ends in one CheckpointError line; show only that
        bad="$(grep -m1 -o 'CheckpointError: .*' "$log" || true)"
        [ -z "$bad" ] || snli_die "${bad#CheckpointError: }"
        cat "$log" >&2; snli_die "fairseq-validate failed"; }
python -m fairseq_plugins.nli.parse_log validate "$log" --split "$split"
