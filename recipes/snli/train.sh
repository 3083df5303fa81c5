#!/usr/bin/env bash
# Step 3: train decomposable attention with softmax or HardKuma attention.
#
#   recipes/snli/train.sh softmax|hardkuma [extra fairseq-train args...]
#
# Env (defaults): SAVE_DIR ($SNLI_WORK/<attention>), SEED (1), MAX_EPOCH (10), MAX_UPDATE (0 = no cap),
#   BATCH_SIZE (32), LR (0.001, Adam), DROPOUT (0.2), THREADS (1: torch threads),
#   GLOVE (../shared/data/glove/glove.6B.50d.filtered.txt.gz when present; "none": train embeddings
#   from scratch, EMBED_DIM then defaults to 300; any GloVe text file works, its size is read from it),
#   HardKuma only: L0_TARGET (0.1), L0_LR (0.05: multiplier step; the paper's 0.01 is too slow
#   for runs of a few thousand updates), L0_LAMBDA_INIT (1e-4), NORMALIZE (none | sum | softmax).
# NPROC (1): N > 1 trains data-parallel with N processes on this machine
#   (torchrun --standalone --nproc_per_node N -m fairseq_plugins.launch; gloo on CPU); BATCH_SIZE is
#   per process, so one update sees N x BATCH_SIZE pairs; keep N x THREADS <= the cores.
# The log goes to $SAVE_DIR/train.log; the best checkpoint (dev accuracy) to $SAVE_DIR/checkpoint_best.pt.
# Rerun in the same SAVE_DIR (recipes/fairseq_runs.sh): same settings and budget -> the finished model
# is reused (nothing trained); a larger budget or an interrupted run -> resumes checkpoint_last.pt;
# other settings -> error.  FRESH=1 trains from scratch.
set -euo pipefail
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/../fairseq_runs.sh"
snli_activate
attention="${1:-}"; shift || true
case "$attention" in
    softmax) arch=decomposable_attention; extra=() ;;
    hardkuma) arch=decomposable_attention_hardkuma
        extra=(--l0-target "${L0_TARGET:-0.1}" --l0-lagrange-lr "${L0_LR:-0.05}"
               --l0-lambda-init "${L0_LAMBDA_INIT:-1e-4}" --attention-normalize "${NORMALIZE:-none}") ;;
    *) snli_die "usage: $0 softmax|hardkuma [fairseq-train args]" ;;
esac
nproc="${NPROC:-1}"
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || snli_die "NPROC=$nproc: expected a positive integer"
[ -f "$SNLI_BIN/dict.input0.txt" ] || snli_die "$SNLI_BIN/dict.input0.txt missing: run recipes/snli/preprocess.sh first"
save="${SAVE_DIR:-$SNLI_WORK/$attention}"
user_dir="$(fairseq_user_dir)" || exit 2
glove="${GLOVE:-}"
if [ -z "$glove" ] && [ -f "$GLOVE_DEFAULT" ]; then glove="$GLOVE_DEFAULT"; fi
emb=()
if [ -n "$glove" ] && [ "$glove" != none ]; then
    [ -f "$glove" ] || snli_die "GLOVE=$glove: no such file (official vectors: $GLOVE_URL)"
    dim="$(python -c "import gzip,sys; f=sys.argv[1]; o=gzip.open if f.endswith('.gz') else open; print(len(o(f,'rt',encoding='utf-8').readline().split())-1)" "$glove")"
    emb=(--embeddings-path "$glove" --embed-dim "${EMBED_DIM:-$dim}")
else
    emb=(--embed-dim "${EMBED_DIM:-300}")
fi
export OMP_NUM_THREADS="${THREADS:-1}" MKL_NUM_THREADS="${THREADS:-1}"
args=("$SNLI_BIN" --user-dir "$user_dir"
    --task nli --arch "$arch" --criterion nli_cross_entropy "${extra[@]}" "${emb[@]}"
    --dropout "${DROPOUT:-0.2}"
    --optimizer adam --lr "${LR:-0.001}" --batch-size "${BATCH_SIZE:-32}" --required-batch-size-multiple 1
    --max-epoch "${MAX_EPOCH:-10}" --max-update "${MAX_UPDATE:-0}" --seed "${SEED:-1}"
    --cpu --num-workers 0 --save-dir "$save" --no-epoch-checkpoints
    --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric
    --log-format simple --log-interval "${LOG_INTERVAL:-100}" "$@")
fairseq_run_begin "$save" "${args[@]}" || exit 0  # finished before with these settings: reuse
t0=$SECONDS
train=(fairseq-train)
if [ "$nproc" -gt 1 ]; then train=(torchrun --standalone --nproc_per_node "$nproc" -m fairseq_plugins.launch); fi
"${train[@]}" "${args[@]}" 2>&1 \
    | grep --line-buffered -v -e tensorboardX -e Warning -e "super().__init__" -e "autocast(" \
    | tee -a "$save/train.log"
test "${PIPESTATUS[0]}" -eq 0
fairseq_run_end "$save" $(( SECONDS - t0 )) "parallel=${PARALLEL:-0}" "${args[@]}"
