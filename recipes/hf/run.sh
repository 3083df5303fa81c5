#!/usr/bin/env bash
# Hugging Face demonstration: a small BERT-style encoder built from a config (no download) trained
# on binary SST twice, with attn_implementation="sdpa" and "hardkuma" (L0 constraint through
# HardKumaTrainer); prints and writes a table of accuracy and % non-zero attention.
#
#   bash recipes/hf/run.sh [SST_DIR]
#
# Environment (defaults):
#   SST_DIR / $1   ../shared/data/sst   SST PTB trees: train.txt dev.txt test.txt
#   HF_WORK        runs/hf              outputs: sdpa/, hardkuma/ (args.json, metrics.json, last
#                                       checkpoint), sdpa.log, hardkuma.log, summary.md
#   EPOCHS 4   LAYERS 2   HIDDEN 128   HEADS 4   TARGET 0.3 (E[L0] <= TARGET)   SEED 1
#   MAX_TRAIN 0 (all)   PARALLEL 1 (both models at once, one thread each)
#   HARDKUMA_USE_ACTIVE_ENV=1  use the already active Python environment (hardkuma-attention
#                              installed in it) instead of sourcing recipes/setup_env.sh (which
#                              creates/updates .venv)
# A rerun with the same settings resumes an interrupted model from its last epoch checkpoint;
# a finished model is not retrained (delete its folder to redo it).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${HARDKUMA_USE_ACTIVE_ENV:-0}" != 1 ]; then  # else: the active environment has the package
    # shellcheck disable=SC1091
    . recipes/setup_env.sh
fi
SST_DIR="${1:-${SST_DIR:-../shared/data/sst}}"
HF_WORK="${HF_WORK:-runs/hf}"
for f in train.txt dev.txt test.txt; do
    [ -f "$SST_DIR/$f" ] || { echo "recipes/hf/run.sh: error: SST_DIR $SST_DIR has no $f" >&2; exit 2; }
done
mkdir -p "$HF_WORK"
common=(--data "$SST_DIR" --epochs "${EPOCHS:-4}" --layers "${LAYERS:-2}" --hidden "${HIDDEN:-128}"
        --heads "${HEADS:-4}" --target "${TARGET:-0.3}" --seed "${SEED:-1}" --max-train "${MAX_TRAIN:-0}")

train_one() {  # attn -> trains unless metrics.json exists; log appended to $HF_WORK/<attn>.log
    local out="$HF_WORK/$1" log="$HF_WORK/$1.log"
    if [ -f "$out/metrics.json" ]; then echo "[hf] $1: done already ($out/metrics.json)"; return 0; fi
    echo "[hf] training $1 -> $out (log: $log)"
    OMP_NUM_THREADS=1 nice -n 10 python recipes/hf/train.py "${common[@]}" --attn "$1" --out "$out" \
        --threads 1 >> "$log" 2>&1
}

start=$(date +%s)
status=0
if [ "${PARALLEL:-1}" = 1 ]; then
    train_one sdpa & pid_s=$!
    train_one hardkuma & pid_h=$!
    wait "$pid_s" || status=1
    wait "$pid_h" || status=1
else
    train_one sdpa || status=1
    train_one hardkuma || status=1
fi
if [ "$status" != 0 ]; then
    echo "recipes/hf/run.sh: error: training failed, see $HF_WORK/{sdpa,hardkuma}.log" >&2
    exit 1
fi
python - "$HF_WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
rows = ["| attn_implementation | dev acc % | test acc % | non-zero attention % (test) | train s |",
        "|---|---|---|---|---|"]
for attn in ("sdpa", "hardkuma"):
    m = json.load(open(os.path.join(work, attn, "metrics.json")))
    rows.append(f"| {attn} | {m['dev_accuracy']:.1f} | {m['test_accuracy']:.1f} | {m['test_nonzero_pct']:.1f} | {m['train_seconds']:.0f} |")
text = "\n".join(rows) + "\n"
tmp = os.path.join(work, "summary.md.tmp")
open(tmp, "w").write(text)
os.replace(tmp, os.path.join(work, "summary.md"))
print(text, end="")
PY
echo "[hf] done in $(( $(date +%s) - start )) s; table in $HF_WORK/summary.md"
