"""recipes/movies/full_docs.sh: methods x SEEDS on whole reviews through ``launch_runs`` (one run per
method and seed, no ``--max-length``, the open warm-up for HardKuma), one table at the end, and a
loud failure naming the log when a run fails.  A fake venv and a fake ``$PYTHON`` (no training)."""
import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PY = r"""#!/usr/bin/env bash
# fake `python -m hardkuma_attention.rationale train|table ...`
if [ "$3" = table ]; then echo "TABLE $*"; exit 0; fi
out=""; name=""
for a in "$@"; do [ "$prev" = --out ] && out="$a"; [ "$prev" = --name ] && name="$a"; prev="$a"; done
echo "$name $*" >> "$CALLS"
mkdir -p "$out"
[ "$name" = "${FAIL_NAME:-}" ] && { echo "boom" >&2; exit 3; }
echo '{}' > "$out/results.json"
"""


def _run(tmp_path, *methods, **env):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "activate").write_text("")
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".hardkuma-installed").write_text(hashlib.sha256((ROOT / "setup.py").read_bytes()).hexdigest() + "\n")
    data = tmp_path / "data"
    for f in ("movies/train.jsonl", "movies/val.jsonl", "glove/glove.6B.50d.filtered.txt.gz"):
        (data / f).parent.mkdir(parents=True, exist_ok=True)
        (data / f).write_text("")
    (data / "movies" / "docs").mkdir(exist_ok=True)
    py = tmp_path / "fake_py"
    py.write_text(FAKE_PY)
    py.chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    full = dict(os.environ, HARDKUMA_VENV=str(venv), DATA_DIR=str(data), OUT=str(tmp_path / "out"),
                PYTHON=str(py), CALLS=str(calls), **env)
    proc = subprocess.run(["bash", str(ROOT / "recipes/movies/full_docs.sh"), *methods], capture_output=True,
                          text=True, timeout=60, env=full)
    return proc, [line.split(" ", 1) for line in calls.read_text().splitlines()]


def test_every_method_and_seed_trains_on_whole_reviews_then_one_table(tmp_path):
    proc, calls = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = sorted(name for name, _ in calls)
    assert names == sorted(f"movies_full_{m}_s{s}" for m in ("hardkuma_lasso", "hardkuma", "bernoulli")
                           for s in (1, 2, 3))
    for name, args in calls:
        assert "--max-length" not in args and "--encoder cnn" in args and f"--seed {name[-1]}" in args
        assert ("--warmup-gates open" in args) == ("hardkuma" in name)
        assert ("--lasso 0.25" in args) == ("lasso" in name)
        assert "--epochs 20 " in args and "--selector-dilation 1 " in args and "--max-minutes 14 " in args
    table = [line for line in proc.stdout.splitlines() if line.startswith("TABLE")]
    assert len(table) == 1 and table[0].count("results.json") == 9


def test_a_failed_run_fails_the_recipe_loudly_and_prints_no_table(tmp_path):
    proc, calls = _run(tmp_path, "hardkuma", SEEDS="1 2", FAIL_NAME="movies_full_hardkuma_s2")
    assert proc.returncode == 1 and len(calls) == 2
    assert "error: run hardkuma_s2 failed" in proc.stderr and "TABLE" not in proc.stdout
    proc, _ = _run(tmp_path, "nonsense")
    assert proc.returncode == 2 and "unknown method nonsense" in proc.stderr


def test_epochs_lasso_and_selector_dilation_come_from_the_environment(tmp_path):
    proc, calls = _run(tmp_path, SEEDS="2", EPOCHS="3", LASSO="0.35", SELECTOR_DILATION="4")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 3
    for name, args in calls:
        assert "--epochs 3 " in args and "--selector-dilation 4 " in args and "--seed 2" in args
        assert ("--lasso 0.35" in args) == ("lasso" in name)
