"""Issue #18: running the SNLI recipe twice.

``python -m fairseq_plugins.nli.summary`` (the summary step of ``run.sh``) on a tiny run
directory, twice: the same table both times, built from finished files only (needs fairseq: the
module is part of the plugin package); and ``recipes/fairseq_runs.sh`` (what a second
``train.sh`` in the same folder does, SNLI and Multi30k): reuse, continue, refuse, FRESH=1, and
``fairseq_user_dir`` (no fairseq needed).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
needs_fairseq = pytest.mark.skipif(importlib.util.find_spec("fairseq") is None, reason="fairseq not installed")


def _train_log(wps_inner, wps_epochs, accs, minute0=0):
    lines = []
    for i, w in enumerate(wps_inner):
        lines.append(f"2026-01-01 10:{minute0 + i:02d}:00 | INFO | train_inner | epoch 001:  {i} / 9 loss=1.0, wps={w}, ups=3")
    for e, (w, a) in enumerate(zip(wps_epochs, accs), 1):
        lines.append(f"2026-01-01 11:0{e}:00 | INFO | train | epoch {e:03d} | loss 1.01 | wps {w} | ups 3 | wall 60")
        lines.append(f"2026-01-01 11:0{e}:05 | INFO | valid | epoch {e:03d} | valid on 'valid' subset | loss 0.9 | accuracy {a} | wps 9")
    return "\n".join(lines) + "\n"


def _tiny_run(work: Path, parallel: bool = True):
    (work / "text").mkdir(parents=True)
    (work / "text" / "train.label").write_text("entailment\nneutral\ncontradiction\n")
    (work / "text" / "valid.label").write_text("neutral\nneutral\n")
    logs = {"softmax": _train_log([100, 200, 300], [150, 250], [40.0, 45.5]),
            "hardkuma": _train_log([50, 60, 70, 80], [55, 65], [41.0, 44.0])}
    for att, acc, nz, secs in (("softmax", "45.50", "100.00", 30), ("hardkuma", "44.00", "12.34", 42)):
        d = work / att
        d.mkdir()
        (d / "train.log").write_text(logs[att])
        (d / "eval.valid.txt").write_text(f"accuracy={acc} nonzero={nz} pairs=2 split=valid\n")
        (d / "train.stats").write_text(f"seconds={secs}\nparallel={int(parallel)}\n")


def _summary(work, *extra):
    return subprocess.run([sys.executable, "-m", "fairseq_plugins.nli.summary", str(work), "--seed", "3",
                           "--max-epoch", "2", *extra], capture_output=True, text=True, timeout=300)


@needs_fairseq
def test_summary_twice_gives_the_same_table(tmp_path):
    work = tmp_path / "snli"
    _tiny_run(work)
    first, second = _summary(work), _summary(work)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout == (work / "summary.md").read_text()
    out = first.stdout
    # overlap window: both logs' train_inner lines up to the earlier end (10:02): medians 200 and 60
    assert "| softmax | 45.50 | 100.00 | 200 |" in out
    assert "| hardkuma | 44.00 | 12.34 | 60 |" in out
    assert "words/s ratio hardkuma/softmax: 0.30" in out
    assert "3 SNLI train pairs, evaluated on SNLI dev (2 pairs); seed 3, 2 epochs max" in out
    assert "training took 42s wall (PARALLEL=1)" in out  # side by side: the longer of the two
    assert not list(work.glob("*.tmp"))


@needs_fairseq
def test_summary_sequential_uses_epoch_medians_and_sums_times(tmp_path):
    work = tmp_path / "snli"
    _tiny_run(work, parallel=False)
    out = _summary(work).stdout
    assert "| softmax | 45.50 | 100.00 | 200 |" in out  # median of the epoch wps 150, 250
    assert "| hardkuma | 44.00 | 12.34 | 60 |" in out
    assert "training took 72s wall (PARALLEL=0)" in out and "both running" not in out


@needs_fairseq
def test_summary_missing_evaluation_is_one_error_line(tmp_path):
    work = tmp_path / "snli"
    _tiny_run(work)
    (work / "hardkuma" / "eval.valid.txt").unlink()
    proc = _summary(work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "tensorboardX" not in line]  # fairseq's import notice
    assert lines == [f"error: {work / 'hardkuma' / 'eval.valid.txt'}: missing (run recipes/snli/run.sh)"]
    assert not (work / "summary.md").exists()


@needs_fairseq
def test_train_summary_counts_a_resumed_epoch_once():
    from fairseq_plugins.nli import parse_log

    first = _train_log([], [100, 200], [40.0, 50.0]).splitlines()
    # the resumed invocation appends to the same log and repeats epoch 2 (killed before its checkpoint)
    resumed = ["=== train.sh 2026-01-01 12:00:00"] + _train_log([], [100, 400, 500], [40.0, 55.0, 52.0]).splitlines()[2:]
    wps, best, epochs = parse_log.train_summary(first + resumed)
    assert epochs == 3 and best == 55.0 and wps == 400  # epochs 1: 100, 2: 400 (last), 3: 500
    with pytest.raises(ValueError, match="no finished training epoch"):
        parse_log.train_summary(["=== train.sh 2026-01-01 12:00:00"])


# ------------------------------------------------------------------ recipes/fairseq_runs.sh
_DRIVER = r"""
set -euo pipefail
. "$1/recipes/fairseq_runs.sh"
save="$2"; shift 2
args=("$@")
if fairseq_run_begin "$save" "${args[@]}"; then
    echo "fake fairseq-train ${args[*]}" >> "$save/train.log"
    touch "$save/checkpoint_last.pt"
    [ "${FAIL:-0}" = 1 ] && exit 1
    fairseq_run_end "$save" 5 "parallel=1" "${args[@]}"
    echo TRAINED
else
    echo REUSED
fi
"""


def _train(tmp_path, *args, **env):
    data = tmp_path / "bin"
    data.mkdir(exist_ok=True)
    if not (data / "dict.x.txt").exists():
        (data / "dict.x.txt").write_text("a 3\nb 2\n")
    proc = subprocess.run(["bash", "-c", _DRIVER, "driver", str(ROOT), str(tmp_path / "save"), str(data), *args],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))
    return proc


def test_rerun_reuses_continues_refuses_and_fresh(tmp_path):
    save = tmp_path / "save"
    first = _train(tmp_path, "--lr", "1", "--max-epoch", "2")
    assert first.returncode == 0 and first.stdout.strip() == "TRAINED", first.stderr
    assert (save / "train.done").read_text() == "--max-epoch\n2\n"
    again = _train(tmp_path, "--lr", "1", "--max-epoch", "2")
    assert again.stdout.strip() == "REUSED" and "reusing it (FRESH=1 retrains from scratch)" in again.stderr
    assert (save / "train.stats").read_text() == "seconds=5\nparallel=1\n"  # untouched by the reuse
    longer = _train(tmp_path, "--lr", "1", "--max-epoch", "3")  # larger budget: fairseq resumes
    assert longer.stdout.strip() == "TRAINED" and "resuming from checkpoint_last.pt" in longer.stderr
    assert (save / "train.stats").read_text().startswith("seconds=10\n")
    other = _train(tmp_path, "--lr", "2", "--max-epoch", "3")
    assert other.returncode == 2 and "holds a run with other settings" in other.stderr and "FRESH=1" in other.stderr
    assert "< 1" in other.stderr and "> 2" in other.stderr  # the differing setting is shown
    assert (save / "train.log").read_text().count("fake fairseq-train") == 2  # nothing ran
    fresh = _train(tmp_path, "--lr", "2", "--max-epoch", "3", FRESH="1")
    assert fresh.stdout.strip() == "TRAINED"
    assert (save / "train.log").read_text().count("fake fairseq-train") == 1  # old log removed
    assert (save / "train.stats").read_text().startswith("seconds=5\n")


def test_interrupted_run_resumes_and_changed_data_is_refused(tmp_path):
    save = tmp_path / "save"
    assert _train(tmp_path, "--lr", "1", FAIL="1").returncode == 1
    assert not (save / "train.done").exists() and (save / "train.settings").exists()
    resumed = _train(tmp_path, "--lr", "1")
    assert resumed.stdout.strip() == "TRAINED" and "resuming from checkpoint_last.pt" in resumed.stderr
    (tmp_path / "bin" / "dict.x.txt").write_text("a 4\nb 2\n")  # other training data, same paths
    changed = _train(tmp_path, "--lr", "1")
    assert changed.returncode == 2 and "data-dictionaries" in changed.stderr


def test_user_dir_is_the_installed_package_folder(tmp_path):
    """``fairseq_user_dir`` (the recipes' ``--user-dir``): the folder of the importable
    ``fairseq_plugins`` (here: this checkout, on PYTHONPATH), found without importing it; when the
    package cannot be found, one error line and status 2."""
    script = '. "$1/recipes/fairseq_runs.sh"; fairseq_user_dir'
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(["bash", "-c", script, "x", str(ROOT)], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == str(ROOT / "fairseq_plugins"), proc.stderr
    # a Python without site-packages (-S) and without the checkout: the package cannot be found
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (fake / "python").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PATH=f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "-c", script + "; echo status=$?", "x", str(ROOT)], capture_output=True,
                          text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.stdout.strip() == "status=2"
    assert proc.stderr.strip() == 'error: the fairseq_plugins package is not installed: pip install -e ".[fairseq]" ' \
        "(recipes/setup_env.sh)"
