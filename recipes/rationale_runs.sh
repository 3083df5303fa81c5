#!/usr/bin/env bash
# Shared by recipes/sst/run.sh and recipes/movies/run.sh (source it; it runs nothing by itself).
#
# HARDKUMA_CONTROLLER: the HardKuma selection controller that converged on SST and is reused on
# Movies: equality constraint (lambda may turn negative; core additive update) with a slow
# multiplier (lr 0.002) and a short moving average (alpha 0.9); a, b in [0.1, 10] through a smooth
# sigmoid map (--ab-map sigmoid).  With the core's clamp(softplus) map, gates pushed past the clamp
# get exactly zero gradient: they sat at 1 while lambda wound up and then all switched off; faster
# multipliers (lr 0.01-0.05, alpha 0.99), a warm-up or an annealed target did not help (see README).
HARDKUMA_CONTROLLER="--equality --lambda-init 0 --ab-map sigmoid --ab-clamp 0.1 10 --lagrange-lr 0.002 --lagrange-alpha 0.9"

# launch_runs PREFIX NAME...: train each named run of the associative array RUNS (extra arguments)
# on top of the array COMMON, PARALLEL at a time, one torch thread each, into OUT/NAME (log in
# OUT/NAME.log, run name PREFIX_NAME); waits for all of them.  Uses PY, OUT, PARALLEL.
launch_runs() {
  local prefix="$1" name
  shift
  for name in "$@"; do
    [ -n "${RUNS[$name]+x}" ] || { echo "unknown run $name (known: ${!RUNS[*]})" >&2; return 1; }
  done
  for name in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
    echo "start $name -> $OUT/$name ($(date -u +%H:%M:%S))"
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $PY -m hardkuma_attention.rationale train "${COMMON[@]}" ${RUNS[$name]} \
      --out "$OUT/$name" --name "${prefix}_$name" > "$OUT/$name.log" 2>&1 &
  done
  wait
}
