"""End-to-end smoke test of the SNLI recipe scripts on a few hundred real pairs.

Runs the real ``recipes/snli/run.sh`` (prepare -> preprocess -> train softmax and hardkuma ->
evaluate -> heatmap) for a few updates, runs it again (issue #18: the finished models are reused and
the same table printed), then resumes the HardKuma run from checkpoint_last.pt and
checks that the Lagrangian multiplier state came back.  About 8 fairseq CLI calls.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fairseq")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SNLI = ROOT.parent / "shared" / "data" / "snli"

pytestmark = pytest.mark.skipif(not (SNLI / "snli_1.0_dev.jsonl").is_file(), reason="../shared/data/snli absent")


def _run(cmd, env):
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _criterion_state(path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["criterion"]


def test_run_sh_end_to_end_then_resume(tmp_path):
    env = dict(os.environ, SNLI_WORK=str(tmp_path / "snli"), TRAIN_SIZE="300", VALID_SIZE="200",
               MAX_UPDATE="4", MAX_EPOCH="1", L0_LR="0.5", LOG_INTERVAL="1",
               PYTHONWARNINGS="ignore")
    out = _run(["bash", "recipes/snli/run.sh", str(SNLI)], env)
    rows = dict(re.findall(r"^\| (softmax|hardkuma) \| (.*) \|$", out, flags=re.M))
    assert set(rows) == {"softmax", "hardkuma"}, out
    for att, row in rows.items():
        acc, nz, wps = (float(x) for x in row.split(" | "))
        assert 0 <= acc <= 100 and wps > 0
        if att == "softmax":
            assert nz == 100.0
        else:
            assert 0 <= nz <= 100
    assert "words/s ratio hardkuma/softmax" in out
    work = tmp_path / "snli"
    assert len((work / "text/train.label").read_text().splitlines()) == 300
    assert (work / "heatmap.png").stat().st_size > 1000

    # Issue #18: the same command again reuses both finished models and prints the same table.
    logs = {att: (work / att / "train.log").read_text() for att in ("softmax", "hardkuma")}
    again = _run(["bash", "recipes/snli/run.sh", str(SNLI)], env)
    table = re.findall(r"^\|.*\|$|^words/s ratio.*$|^Reduced training set.*$", out, flags=re.M)
    assert len(table) == 6 and table == re.findall(r"^\|.*\|$|^words/s ratio.*$|^Reduced training set.*$", again, flags=re.M)
    assert logs == {att: (work / att / "train.log").read_text() for att in logs}  # fairseq-train did not run
    assert (work / "summary.md").read_text().splitlines()[-1] == table[-1]

    # Resume the HardKuma run: the multiplier state must come back from checkpoint_last.pt.
    ckpt = work / "hardkuma/checkpoint_last.pt"
    before = _criterion_state(ckpt)
    assert int(before["l0.constraint.num_updates"]) == 4
    assert float(before["l0.constraint.lagrange_multiplier"]) > 1e-4  # it moved (L0_LR 0.5)
    env.update(MAX_UPDATE="7", SAVE_DIR=str(work / "hardkuma"))
    log = _run(["bash", "recipes/snli/train.sh", "hardkuma"], env)
    assert "Loaded checkpoint" in log
    after = _criterion_state(ckpt)
    assert int(after["l0.constraint.num_updates"]) == 7  # 4 restored + 3 new (not 3: state was restored)
    for line in log.splitlines():
        if "| valid |" in line or "valid on 'valid'" in line:
            assert re.search(r"\| accuracy [\d.]+ \| l0 [\d.]+ \| nz [\d.]+ \| lambda", line), line
