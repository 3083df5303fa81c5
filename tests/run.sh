#!/usr/bin/env bash
# The test command: set up .venv (see recipes/setup_env.sh) and run the test suite.
# Extra arguments go to pytest, e.g.  bash tests/run.sh -k distributions
set -euo pipefail
cd "$(dirname "$0")/.."
. recipes/setup_env.sh
python -m pytest -q tests "$@"
