"""recipes/hf/train.py: input checks before any work (exit 2, no traceback), and a tiny end-to-end
run on a few hand-written SST trees (the real data is not needed)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "recipes" / "hf" / "train.py"
TREES = ["(4 (3 a) (4 great) (2 film))", "(0 (1 a) (0 dull) (2 film))", "(3 (2 the) (3 good) (2 cast))",
         "(1 (2 the) (1 bad) (2 cast))", "(2 (2 a) (2 film))"]  # the neutral one is dropped (binary)


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture
def sst(tmp_path):
    d = tmp_path / "sst"
    d.mkdir()
    for name, n in (("train.txt", 8), ("dev.txt", 1), ("test.txt", 1)):
        (d / name).write_text("\n".join(TREES * n) + "\n")
    return d


def test_bad_input_exits_2_before_any_work(sst, tmp_path):
    out = tmp_path / "out"
    r = run("--data", tmp_path / "nope", "--attn", "hardkuma", "--out", out)
    assert r.returncode == 2 and "no train.txt" in r.stderr and "Traceback" not in r.stderr
    r = run("--data", sst, "--attn", "hardkuma", "--out", out, "--hidden", "30", "--heads", "4")
    assert r.returncode == 2 and "even head dim" in r.stderr
    r = run("--data", sst, "--attn", "hardkuma", "--out", out, "--target", "1.5")
    assert r.returncode == 2 and "--target" in r.stderr
    assert not out.exists()
    (out / "x").mkdir(parents=True)
    r = run("--data", sst, "--attn", "hardkuma", "--out", out)
    assert r.returncode == 2 and "not empty" in r.stderr


def test_tiny_run_writes_metrics_and_refuses_a_second_run(sst, tmp_path):
    out = tmp_path / "hk"
    args = ["--data", sst, "--attn", "hardkuma", "--out", out, "--hidden", "16", "--heads", "2",
            "--layers", "1", "--epochs", "1", "--batch", "8", "--min-count", "1"]
    r = run(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_sentences"] == 32 and m["vocab"] == 3 + 8
    assert 0 <= m["test_accuracy"] <= 100 and 0 <= m["test_nonzero_pct"] <= 100
    assert (out / "checkpoint-4" / "hardkuma_constraint.pt").is_file()
    r = run(*args)
    assert r.returncode == 2 and "finished run" in r.stderr
    # an unfinished run (no metrics.json): other arguments are refused, the same ones resume
    (out / "metrics.json").unlink()
    r = run(*args[:-1], "2")
    assert r.returncode == 2 and "other arguments" in r.stderr
    r = run(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from {out / 'checkpoint-4'}" in r.stdout
    assert json.loads((out / "metrics.json").read_text())["train_sentences"] == 32
