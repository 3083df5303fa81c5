"""Issue #18 / #12: the SST and Movies recipes run twice (``launch_runs`` of
``recipes/rationale_runs.sh``): finished runs with the same arguments are reused, other arguments
stop before any training, FRESH=1 retrains, a failed run is named with its log.  The trainer is a
fake ``$PY`` that writes ``results.json`` (no training)."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PY = r"""#!/usr/bin/env bash
# fake `python -m hardkuma_attention.rationale train ... --out DIR --name NAME`
out=""; name=""; resume=""
while [ $# -gt 0 ]; do
  case "$1" in --out) out="$2"; shift ;; --name) name="$2"; shift ;; --resume) resume="+resume" ;; esac
  shift
done
echo "$name$resume" >> "$CALLS"
mkdir -p "$out"
[ "$name" = "${FAIL_NAME:-}" ] && { touch "$out/checkpoint_last.pt"; echo "boom" >&2; exit 3; }
echo '{}' > "$out/results.json"
"""

DRIVER = r"""
set -euo pipefail
. "$ROOT/recipes/rationale_runs.sh"
COMMON=(--epochs 2)
declare -A RUNS=([a]="--gate none" [b]="--gate hardkuma --selection ${SEL:-0.3}")
launch_runs t a b
"""


def _launch(tmp_path, **env):
    py = tmp_path / "fake_py"
    py.write_text(FAKE_PY)
    py.chmod(0o755)
    calls = tmp_path / "calls"
    before = calls.read_text().split() if calls.exists() else []
    full = dict(os.environ, ROOT=str(ROOT), OUT=str(tmp_path / "out"), PY=str(py), PARALLEL="2",
                CALLS=str(calls), **env)
    (tmp_path / "out").mkdir(exist_ok=True)
    proc = subprocess.run(["bash", "-c", DRIVER], capture_output=True, text=True, timeout=60, env=full)
    after = calls.read_text().split() if calls.exists() else []
    return proc, sorted(after[len(before):])


def test_second_run_reuses_finished_runs(tmp_path):
    first, trained = _launch(tmp_path)
    assert first.returncode == 0 and trained == ["t_a", "t_b"], first.stderr
    second, trained = _launch(tmp_path)
    assert second.returncode == 0 and trained == [], second.stderr
    assert "reuse a:" in second.stdout and "reuse b:" in second.stdout and "FRESH=1 retrains" in second.stdout


def test_other_arguments_stop_before_training_and_fresh_retrains(tmp_path):
    _launch(tmp_path)
    other, trained = _launch(tmp_path, SEL="0.5")
    assert other.returncode == 2 and trained == []
    assert f"error: {tmp_path / 'out' / 'b'} was trained with other arguments" in other.stderr
    assert "< 0.3" in other.stderr and "> 0.5" in other.stderr
    fresh, trained = _launch(tmp_path, SEL="0.5", FRESH="1")
    assert fresh.returncode == 0 and trained == ["t_a", "t_b"], fresh.stderr
    again, trained = _launch(tmp_path, SEL="0.5")
    assert again.returncode == 0 and trained == []


def test_failed_run_is_named_with_its_log_and_resumed_next_time(tmp_path):
    failed, trained = _launch(tmp_path, FAIL_NAME="t_b")
    assert failed.returncode == 1 and trained == ["t_a", "t_b"]
    assert failed.stderr.strip().endswith(f"error: run b failed: see {tmp_path / 'out' / 'b.log'}")
    assert "boom" in (tmp_path / "out" / "b.log").read_text()
    rerun, trained = _launch(tmp_path)
    # a reused; b (interrupted, with a checkpoint_last.pt) continues with --resume, its log appended
    assert rerun.returncode == 0 and trained == ["t_b+resume"] and "resume b ->" in rerun.stdout
    assert "boom" in (tmp_path / "out" / "b.log").read_text()
    fresh, trained = _launch(tmp_path, FRESH="1")
    assert trained == ["t_a", "t_b"]  # FRESH=1: from scratch, no --resume
