#!/usr/bin/env bash
# Right for the right reasons on decoy digits (scikit-learn's 8x8 digits, shipped with the package:
# no download) + 2-D input-mask explanations of both models.
#
#   bash recipes/explain/decoy_digits.sh            # 3 seeds, 2x2 and 3x3 decoy patches (~3 min on 1 core)
#
# Environment: OUT (default runs/explain/decoy_digits), PNG (default docs/explain/decoy_digits_masks.png),
# SEEDS (default "0 1 2"), PATCH (default "2 3"), EXTRA (more arguments, e.g. "--lambda1-scale 0.1").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/recipes/setup_env.sh"   # the project venv, as recipes/snli/run.sh (PYTHON overrides the interpreter)
OUT="${OUT:-$ROOT/runs/explain/decoy_digits}"
PNG="${PNG:-$ROOT/docs/explain/decoy_digits_masks.png}"
SEEDS="${SEEDS:-0 1 2}"
PATCH="${PATCH:-2 3}"
PY="${PYTHON:-python}"
cd "$ROOT"
# shellcheck disable=SC2086
OMP_NUM_THREADS=1 $PY -m hardkuma_attention.explain decoy-digits --out "$OUT" --overwrite --png "$PNG" \
  --seeds $SEEDS --patch $PATCH --mask-examples 6 ${EXTRA:-}
