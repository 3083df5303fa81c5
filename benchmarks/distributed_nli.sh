#!/usr/bin/env bash
# Training words/s of the SNLI HardKuma model with 1 vs NPROC data-parallel processes (one thread
# each), as a ratio to the 1-process run of the same round.
#
#   SNLI_WORK=/tmp/snli_bench bash benchmarks/distributed_nli.sh [SNLI_DIR]
#
# Prepares + binarises the SNLI training sample into $SNLI_WORK when $SNLI_WORK/bin is missing
# (recipes/snli/prepare.sh, preprocess.sh), then per round trains `recipes/snli/train.sh hardkuma`
# for EPOCHS epochs (2) with NPROC=1 and NPROC=$NPROC (2), no validation, no checkpoints, and reads
# fairseq's wps of the last epoch from each train.log (fairseq sums the words of all ranks).
# ROUNDS (2) rounds, the two settings alternating so a load change hits both.  Prints `uptime`
# before each run: on a shared machine the figure is only as good as the load it was taken at.
# One update of the NPROC run sees NPROC x BATCH_SIZE pairs, so it makes NPROC times fewer updates:
# words/s compare, optimisation steps do not.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-2}" EPOCHS="${EPOCHS:-2}" NPROC="${NPROC:-2}"
export SNLI_WORK="${SNLI_WORK:?set SNLI_WORK to a scratch directory}"
[[ "$NPROC" =~ ^[2-9]$|^[1-9][0-9]+$ ]] || { echo "distributed_nli.sh: NPROC=$NPROC: expected an integer >= 2" >&2; exit 2; }
if [ ! -f "$SNLI_WORK/bin/dict.input0.txt" ]; then
    recipes/snli/prepare.sh "$@" && recipes/snli/preprocess.sh
fi
wps() {  # wps of the last epoch summary line of a train.log
    python - "$1" <<'EOF'
import re, sys
rows = re.findall(r"(?:\| train \| |INFO:train:)epoch \d+ \|.*?\bwps ([0-9.]+)", open(sys.argv[1]).read())
print(rows[-1])
EOF
}
declare -A total=([1]=0 ["$NPROC"]=0)
for round in $(seq "$ROUNDS"); do
    for n in 1 "$NPROC"; do
        echo "round $round NPROC=$n  uptime: $(uptime)"
        dir="$SNLI_WORK/bench_np${n}_r$round"
        NPROC=$n THREADS=1 MAX_EPOCH="$EPOCHS" SAVE_DIR="$dir" LOG_INTERVAL=1000 \
            recipes/snli/train.sh hardkuma --disable-validation --no-save > /dev/null
        w="$(wps "$dir/train.log")"
        echo "round $round NPROC=$n  words/s $w"
        total[$n]="$(python -c "print(${total[$n]} + $w)")"
    done
done
echo "uptime at the end: $(uptime)"
python -c "print(f'words/s ratio NPROC=$NPROC / NPROC=1 (sum over $ROUNDS rounds): {${total[$NPROC]} / ${total[1]}:.2f}')"
