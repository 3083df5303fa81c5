#!/usr/bin/env bash
# Shared by recipes/sst/run.sh, recipes/movies/run.sh and recipes/explain/movies_rrr.sh (source it;
# it runs nothing by itself).
#
# HARDKUMA_CONTROLLER: the HardKuma selection controller (SST, reused on Movies): the package defaults,
# named: --controller rationale (hardkuma_attention.config.ControllerConfig preset "rationale": equality
# constraint, lambda may turn negative, core additive update; a slow multiplier, lr 0.002; a short moving
# average, alpha 0.9; a proportional term, damping 1: the selector is pushed by lambda + 1 * (rate - target),
# so it reacts before lambda has wound up; the multiplier tracks the share of tokens the deterministic
# test-time decision keeps, observe "decoded") with the package's --selection-gradient open
# ((1 - P(z=0) + P(z=1)) / 2 gives the gradient: unlike the expected L0 its gradient survives when every
# gate is confidently open; with the expected L0, SST seed 3 at target 0.3 sat at 100 % until lambda had
# wound up to 4.8 and then switched every gate off) and gate preset "rationale" (a, b in [0.1, 10] through
# a smooth sigmoid map: --ab-map sigmoid --ab-range 0.1 10).
# Until issue 13 this line spelled the same settings out:
#   --equality --lambda-init 0 --ab-map sigmoid --ab-clamp 0.1 10 --lagrange-lr 0.002 --lagrange-alpha 0.9
#   --lagrange-damping 1 --selection-measure decoded --selection-gradient open
# (tests/rationale/test_config_compat.py checks that both give the same model and objective).
# History (README.md): with the core's clamp(softplus) map, gates pushed past the clamp get exactly
# zero gradient: they sat at 1 while lambda wound up and then all switched off; faster multipliers
# (lr 0.01-0.05, alpha 0.99), a warm-up or an annealed target did not help.  Without the proportional
# term target 0.5 still collapsed, and tracking the expected L0 left the test-time selection at 23 %
# for target 0.3.
HARDKUMA_CONTROLLER="--controller rationale"

# launch_runs PREFIX NAME...: train each named run of the associative array RUNS (extra arguments)
# on top of the array COMMON, PARALLEL at a time, one torch thread each, into OUT/NAME (log in
# OUT/NAME.log, run name PREFIX_NAME, arguments recorded in OUT/NAME.args); waits for all of them.
# Uses PY, OUT, PARALLEL, FRESH.
# Rerun: a finished run (OUT/NAME/results.json) with the same arguments is reused, not trained
# again; a run recorded with other arguments stops everything before any training (FRESH=1
# retrains it; or choose another OUT); an interrupted run continues from its checkpoint_last.pt
# (`train --resume`, bit-identical to an uninterrupted run); a run without OUT/NAME.args or without
# a checkpoint is trained again from scratch.  FRESH=1 retrains every named run.  Returns non-zero, naming each
# failed run and its log, when a run did not write its results.json.
launch_runs() {
  local prefix="$1" name args fresh="${FRESH:-0}" failed=0
  shift
  local -A want=() resume=()
  local todo=()
  for name in "$@"; do
    [ -n "${RUNS[$name]+x}" ] || { echo "unknown run $name (known: ${!RUNS[*]})" >&2; return 1; }
    # shellcheck disable=SC2086
    want[$name]="$(printf '%s\n' "${COMMON[@]}" ${RUNS[$name]} --name "${prefix}_$name")"
    if [ "$fresh" != 1 ] && [ -f "$OUT/$name.args" ] && [ "$(cat "$OUT/$name.args")" != "${want[$name]}" ]; then
      echo "error: $OUT/$name was trained with other arguments (FRESH=1 retrains it; or set OUT to another folder):" >&2
      diff <(cat "$OUT/$name.args") <(printf '%s\n' "${want[$name]}") | grep '^[<>]' | head -n 6 >&2 || true
      return 2
    fi
  done
  for name in "$@"; do
    if [ "$fresh" != 1 ] && [ -f "$OUT/$name.args" ] && [ -f "$OUT/$name/results.json" ]; then
      echo "reuse $name: $OUT/$name/results.json (finished with the same arguments; FRESH=1 retrains)"
    else
      todo+=("$name")
    fi
  done
  for name in "${todo[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
    resume[$name]=""
    if [ "$fresh" != 1 ] && [ -f "$OUT/$name.args" ] && [ -f "$OUT/$name/checkpoint_last.pt" ]; then
      resume[$name]="--resume"
      echo "resume $name -> $OUT/$name ($(date -u +%H:%M:%S); log appended to $OUT/$name.log)"
    else
      rm -rf "${OUT:?}/$name" "$OUT/$name.args" "$OUT/$name.log"
      printf '%s\n' "${want[$name]}" > "$OUT/$name.args"
      echo "start $name -> $OUT/$name ($(date -u +%H:%M:%S))"
    fi
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $PY -m hardkuma_attention.rationale train "${COMMON[@]}" ${RUNS[$name]} \
      --out "$OUT/$name" --name "${prefix}_$name" ${resume[$name]} >> "$OUT/$name.log" 2>&1 &
  done
  wait
  for name in "${todo[@]}"; do
    [ -f "$OUT/$name/results.json" ] || { echo "error: run $name failed: see $OUT/$name.log" >&2; failed=1; }
  done
  return "$failed"
}

# require_data DIR PATH...: stop with a message naming the first PATH missing under DIR.
require_data() {
  local dir="$1" f
  shift
  for f in "$@"; do
    [ -e "$dir/$f" ] || { echo "missing $dir/$f (set DATA_DIR)" >&2; exit 1; }
  done
}

MOVIES_DATA=(movies/train.jsonl movies/val.jsonl movies/docs glove/glove.6B.50d.filtered.txt.gz)

# movies_args EPOCHS: the ERASER Movies classifier settings of recipes/movies/run.sh (every run there, and
# both models of recipes/explain/movies_rrr.sh) into the array MOVIES_ARGS, seed and gate not
# included.  Uses DATA_DIR, MAX_LENGTH (empty: whole reviews, no --max-length) and MAX_MINUTES.
movies_args() {
  MOVIES_ARGS=(--format eraser --train "$DATA_DIR/movies/train.jsonl" --holdout 100 --test "$DATA_DIR/movies/val.jsonl"
               --embeddings "$DATA_DIR/glove/glove.6B.50d.filtered.txt.gz" ${MAX_LENGTH:+--max-length "$MAX_LENGTH"}
               --epochs "$1" --batch-size 16 --lr 1e-3 --weight-decay 1e-5 --hidden-size 64 --dropout 0.3
               --pooling max --eval-every 25 --max-minutes "$MAX_MINUTES" --threads 1 --no-progress)
}
