#!/usr/bin/env bash
# Post-hoc rationales of a full-text ERASER Movies classifier: input-mask optimisation (sigmoid and
# HardKuma gates) vs input×gradient and integrated gradients, against the human rationales
# (token F1, IOU-F1, AUPRC) and ERASER faithfulness (comprehensiveness / sufficiency, AOPC 5-95 %).
#
#   bash recipes/explain/movies_mask.sh
#
# Environment: DATA_DIR (default ../shared/data from the repo root), OUT (default runs/explain/movies),
# MODEL (a model.pt from `hardkuma-rationale train --gate none`; default: train one with
# recipes/movies/run.sh fulltext into $OUT/train), LIMIT (first N val docs, default 0 = all 200;
# note val.jsonl lists the 100 NEG reviews first), STEPS (mask optimisation steps, default 50:
# a mask step for 50 docs x 400 tokens costs ~1.5-6 s on one CPU core depending on contention, all
# 200 docs took ~10 min per mask variant; the paper's 900 steps are for a GPU), PARALLEL (default 2:
# the sigmoid and HardKuma mask runs side by side), RATIONALE_MODEL (optional model.pt of a HardKuma
# rationale model, e.g. from recipes/movies/run.sh hardkuma_0.1: its own rationales get a row too),
# OCCLUSION (occlusion rows after the mask runs, "WINDOW:MODE ...", default "1:remove 3:remove 1:baseline";
# empty: none; each costs one classifier pass per window position, ~8 min for the 200 docs on one core).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/recipes/setup_env.sh"   # the project venv, as recipes/snli/run.sh (PYTHON overrides the interpreter)
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"
OUT="${OUT:-$ROOT/runs/explain/movies}"
LIMIT="${LIMIT:-0}"
STEPS="${STEPS:-50}"
PARALLEL="${PARALLEL:-2}"
PY="${PYTHON:-python}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
if [ -z "${MODEL:-}" ]; then
  OUT="$OUT/train" DATA_DIR="$DATA_DIR" bash recipes/movies/run.sh fulltext
  MODEL="$OUT/train/fulltext/model.pt"
fi
COMMON=(--model "$MODEL" --data "$DATA_DIR/movies/val.jsonl" --format eraser --limit "$LIMIT" --batch-size 50
        --max-steps "$STEPS" --no-progress)
RM=()
[ -z "${RATIONALE_MODEL:-}" ] || RM=(--rationale-model "$RATIONALE_MODEL")
run() {  # name, methods... (a trailing --rationale-model PATH is passed through)
  local name=$1; shift
  echo "start $name ($(date -u +%H:%M:%S))"
  OMP_NUM_THREADS=1 $PY -m hardkuma_attention.explain mask "${COMMON[@]}" --methods "$@" --out "$OUT/$name" --overwrite \
    > "$OUT/$name.log" 2>&1 || { echo "error: run $name failed: see $OUT/$name.log" >&2; return 1; }
}
if [ "$PARALLEL" -ge 2 ]; then
  run sigmoid mask input-x-gradient integrated-gradients & pid_s=$!
  run hardkuma mask-hardkuma "${RM[@]}" & pid_h=$!
  status=0
  wait "$pid_s" || status=1
  wait "$pid_h" || status=1
  [ "$status" = 0 ] || exit 1
else
  run sigmoid mask input-x-gradient integrated-gradients; run hardkuma mask-hardkuma "${RM[@]}"
fi
LOGS=("$OUT/sigmoid.log" "$OUT/hardkuma.log")
for occ in ${OCCLUSION-1:remove 3:remove 1:baseline}; do
  run "occlusion_w${occ%%:*}_${occ#*:}" occlusion --occlusion-window "${occ%%:*}" --occlusion-mode "${occ#*:}"
  LOGS+=("$OUT/occlusion_w${occ%%:*}_${occ#*:}.log")
done
cat "${LOGS[@]}" | grep '^{' || true
