#!/usr/bin/env bash
# Train a Multi30k de->en transformer (softmax or HardKuma attention) with fairseq-train.
#
#   bash recipes/multi30k/train.sh ATTENTION [SAVE_DIR] [extra fairseq-train args...]
#
# ATTENTION: softmax | hardkuma (HardKuma cross-attention) | hardkuma_all (self + cross)
# SAVE_DIR : default runs/multi30k/ckpt_ATTENTION.  Data: $DATA_BIN (default runs/multi30k/data-bin,
#            made by prepare.sh).
# Env: ARCH (transformer_hardkuma_small), MAX_UPDATE (3000), MAX_TOKENS (2048), LR (1e-3),
#      WARMUP (500), STOP_HOURS (0.9: wall-clock cap, fairseq --stop-time-hours), L0_TARGET (0.1), L0_LR (0.05: faster multiplier than the paper's 0.01 so the
#      constraint bites within a short CPU run), NORMALIZE (sum), SEED (1), THREADS (1).
# Always passes --required-batch-size-multiple 1 (else this fairseq silently drops the last
# partial batch).  Checkpoints load on torch >= 2.6 because fairseq_plugins sets
# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
ATTENTION="${1:?usage: train.sh softmax|hardkuma|hardkuma_all [SAVE_DIR] [fairseq args...]}"
SAVE_DIR="${2:-$ROOT/runs/multi30k/ckpt_$ATTENTION}"
shift $(( $# >= 2 ? 2 : 1 ))
DATA_BIN="${DATA_BIN:-$ROOT/runs/multi30k/data-bin}"
THREADS="${THREADS:-1}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

case "$ATTENTION" in
  softmax)      ATTN_ARGS=(--hardkuma-attention none) ;;
  hardkuma)     ATTN_ARGS=(--hardkuma-attention cross --l0-target "${L0_TARGET:-0.1}" --l0-keys cross) ;;
  hardkuma_all) ATTN_ARGS=(--hardkuma-attention all --l0-target "${L0_TARGET:-0.1}") ;;
  *) echo "train.sh: ATTENTION must be softmax, hardkuma or hardkuma_all, got '$ATTENTION'" >&2; exit 2 ;;
esac
[[ -f "$DATA_BIN/dict.de.txt" ]] || { echo "train.sh: no binarised data in $DATA_BIN (run prepare.sh)" >&2; exit 2; }

mkdir -p "$SAVE_DIR"
fairseq-train "$DATA_BIN" --user-dir "$ROOT/fairseq_plugins" \
  --task translation --source-lang de --target-lang en \
  --arch "${ARCH:-transformer_hardkuma_small}" --share-all-embeddings \
  "${ATTN_ARGS[@]}" --hardkuma-normalize "${NORMALIZE:-sum}" \
  --criterion label_smoothed_cross_entropy_l0 --label-smoothing 0.1 \
  --l0-lagrange-lr "${L0_LR:-0.05}" \
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr "${LR:-1e-3}" \
  --lr-scheduler inverse_sqrt --warmup-updates "${WARMUP:-500}" --weight-decay 0.0001 \
  --max-tokens "${MAX_TOKENS:-2048}" --required-batch-size-multiple 1 \
  --max-update "${MAX_UPDATE:-3000}" --stop-time-hours "${STOP_HOURS:-0.9}" --seed "${SEED:-1}" \
  --num-workers 0 --cpu --log-format simple --log-interval "${LOG_INTERVAL:-50}" \
  --no-epoch-checkpoints --keep-last-epochs 1 --save-dir "$SAVE_DIR" \
  --tensorboard-logdir '' \
  "$@" 2>&1 | grep --line-buffered -v tensorboardX | tee "$SAVE_DIR/train.log"
exit "${PIPESTATUS[0]}"
