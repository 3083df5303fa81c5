# Shared settings of the SNLI recipe scripts (sourced, not run).
# Every variable can be set in the environment; paths are relative to the repository root.
SNLI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SNLI_WORK="${SNLI_WORK:-$SNLI_ROOT/runs/snli}"            # outputs (gitignored)
SNLI_TEXT="${SNLI_TEXT:-$SNLI_WORK/text}"                 # prepare.sh output
SNLI_BIN="${SNLI_BIN:-$SNLI_WORK/bin}"                    # preprocess.sh output
SNLI_SHARED_DEFAULT="$SNLI_ROOT/../shared/data/snli"      # local data of this workplace
SNLI_URL="https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
MNLI_URL="https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip"
GLOVE_DEFAULT="$SNLI_ROOT/../shared/data/glove/glove.6B.50d.filtered.txt.gz"
GLOVE_URL="https://nlp.stanford.edu/data/glove.6B.zip"

snli_die() { echo "error: $*" >&2; exit 2; }
snli_activate() {
    # Use the project venv when nothing else is active (run.sh sources recipes/setup_env.sh).
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$SNLI_ROOT/.venv/bin/python" ]; then
        # shellcheck disable=SC1091
        . "$SNLI_ROOT/.venv/bin/activate"
    fi
}
