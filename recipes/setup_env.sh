#!/usr/bin/env bash
# Create (or reuse) the project virtualenv in .venv and install the project with every extra.
# Source it:  . recipes/setup_env.sh      (idempotent: reinstalls only when setup.py changed)
# torch is pinned to 2.13.0 first: an unpinned torch pulls a multi-GB CUDA build.
_hk_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_hk_venv="${HARDKUMA_VENV:-$_hk_root/.venv}"
if [ ! -x "$_hk_venv/bin/python" ]; then
    python3 -m venv "$_hk_venv"
fi
# shellcheck disable=SC1091
. "$_hk_venv/bin/activate"
_hk_stamp="$_hk_venv/.hardkuma-installed"
_hk_want="$(sha256sum "$_hk_root/setup.py" | cut -d' ' -f1)"
if [ "$(cat "$_hk_stamp" 2>/dev/null)" != "$_hk_want" ]; then
    echo "[setup_env] installing into $_hk_venv (a few minutes the first time)" >&2
    python -m pip install -q --upgrade pip wheel setuptools
    python -m pip install -q torch==2.13.0 "numpy>=2" cython
    # fairseq-fixed compiles extensions against the installed torch: no build isolation.
    python -m pip install -q --no-build-isolation -e "$_hk_root[all]"
    echo "$_hk_want" > "$_hk_stamp"
fi
export PYTHONPATH="$_hk_root${PYTHONPATH:+:$PYTHONPATH}"
unset _hk_root _hk_venv _hk_stamp _hk_want
