"""The real recipe scripts on a slice of Multi30k: prepare.sh -> train.sh (a few updates) ->
evaluate.sh (fairseq-generate, detokenise, sacrebleu, sparsity, heatmap).  Skips without the
shared data or the fairseq CLIs."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT.parent / "shared" / "data" / "multi30k"
RECIPE = ROOT / "recipes" / "multi30k"

pytestmark = pytest.mark.skipif(
    not (RAW / "train.de.gz").is_file() or shutil.which("fairseq-train") is None,
    reason="needs ../shared/data/multi30k and the fairseq CLIs",
)


def run(cmd, env):
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_prepare_train_generate_score(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MAX_TRAIN="400", MAX_EVAL="24", VOCAB_SIZE="400",
               DATA_BIN=str(tmp_path / "data-bin"), TEXT_DIR=str(tmp_path / "text"),
               ARCH="transformer_hardkuma_tiny", MAX_UPDATE="4", MAX_TOKENS="1024", LOG_INTERVAL="1",
               BEAM="2", BATCH="24")
    run(["bash", str(RECIPE / "prepare.sh"), str(RAW), str(tmp_path)], env)
    assert len((tmp_path / "text" / "raw" / "test.en").read_text().splitlines()) == 24
    ckpt = tmp_path / "ckpt"
    log = run(["bash", str(RECIPE / "train.sh"), "hardkuma", str(ckpt), "--max-epoch", "1"], env)
    assert "l0_penalty" in log and "num_updates 4" in log
    assert (ckpt / "checkpoint_last.pt").is_file()
    out = run(["bash", str(RECIPE / "evaluate.sh"), str(ckpt), "test"], dict(env, CHECKPOINT="checkpoint_last.pt"))
    assert "signature: nrefs:1" in out
    hyps = (ckpt / "hyp.test.txt").read_text().splitlines()
    assert len(hyps) == 24  # every test sentence translated (no dropped last batch)
    bleu = json.loads((ckpt / "bleu.test.json").read_text())
    assert 0.0 <= bleu["bleu"] <= 100.0 and "tok:13a" in bleu["signature"]
    sparsity = json.loads((ckpt / "sparsity.test.json").read_text())
    assert set(sparsity) == {"cross", "all"}
    assert 0.0 <= sparsity["cross"]["nonzero_pct"] <= 100.0 and sparsity["cross"]["cells"] > 0
    rows = json.loads((ckpt / "rows.test.json").read_text())
    assert len(rows["layers"]) == 1 and rows["tokens"] > 24  # tiny arch: one decoder layer
    assert 0.0 <= rows["layers"][0]["empty_rows_pct"] <= 100.0 and 0.0 <= rows["blind_tokens_pct"] <= 100.0
    assert (ckpt / "heatmap.test.png").stat().st_size > 1000
