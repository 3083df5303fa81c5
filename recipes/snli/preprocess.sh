#!/usr/bin/env bash
# Step 2: binarise $SNLI_TEXT into $SNLI_BIN with fairseq-preprocess (layout: fairseq_plugins/nli/task.py).
#
#   recipes/snli/preprocess.sh
#
# Premises and hypotheses share one dictionary built on the training split (pair mode,
# --joined-dictionary); labels get their own dictionary (--padding-factor 1: exactly 3 symbols).
set -euo pipefail
. "$(dirname "$0")/common.sh"
snli_activate
[ -f "$SNLI_TEXT/train.input0" ] || snli_die "$SNLI_TEXT/train.input0 missing: run recipes/snli/prepare.sh first"
prefs=(--trainpref "$SNLI_TEXT/train" --validpref "$SNLI_TEXT/valid")
[ -f "$SNLI_TEXT/test.input0" ] && prefs+=(--testpref "$SNLI_TEXT/test")
rm -rf "$SNLI_BIN.tmp"
mkdir -p "$SNLI_BIN.tmp"
log="$SNLI_BIN.tmp/preprocess.out"
fairseq-preprocess --source-lang input0 --target-lang input1 --joined-dictionary \
    "${prefs[@]}" --destdir "$SNLI_BIN.tmp" --workers "${WORKERS:-1}" > "$log" 2>&1 \
    || { cat "$log" >&2; snli_die "fairseq-preprocess (sentences) failed"; }
fairseq-preprocess --only-source --source-lang label --padding-factor 1 \
    "${prefs[@]}" --destdir "$SNLI_BIN.tmp" --workers 1 >> "$log" 2>&1 \
    || { cat "$log" >&2; snli_die "fairseq-preprocess (labels) failed"; }
rm -rf "$SNLI_BIN" && mv "$SNLI_BIN.tmp" "$SNLI_BIN"
echo "[preprocess] $(($(wc -l < "$SNLI_BIN/dict.input0.txt"))) word types, labels: $(cut -d' ' -f1 "$SNLI_BIN/dict.label.txt" | tr '\n' ' ')-> $SNLI_BIN"
