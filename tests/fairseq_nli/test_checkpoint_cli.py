"""Issue #12: the plugin's own command lines that load fairseq checkpoints (fairseq_plugins.nli.heatmap,
fairseq_plugins.translation.analyze; recipes/snli/heatmap.py and recipes/multi30k/analyze.py call them) answer a corrupt, foreign, empty or missing checkpoint with one line
naming the file and exit code 2, no traceback (``--debug``: the CheckpointError)."""
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq_plugins.checkpoints import CheckpointError  # noqa: E402
from fairseq_plugins.nli import heatmap  # noqa: E402
from fairseq_plugins.translation import analyze  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bad_checkpoints(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 this is not a checkpoint")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    return {corrupt: "not a readable fairseq checkpoint", empty: "not a readable fairseq checkpoint",
            foreign: "not a fairseq checkpoint (no 'model' with 'args' or 'cfg'; found ['weights'])"}


def _commands(tmp_path, ckpt):
    return {"heatmap": (heatmap.main, [str(ckpt), "--data", str(tmp_path), "--out", str(tmp_path / "p.png"),
                                                           "--premise", "a man", "--hypothesis", "a person"]),
            "analyze": (analyze.main, ["sparsity", "--data-bin", str(tmp_path), "--path", str(ckpt)])}


def test_bad_checkpoint_one_line_exit_2(tmp_path, bad_checkpoints, capsys):
    for ckpt, reason in bad_checkpoints.items():
        for name, (main, argv) in _commands(tmp_path, ckpt).items():
            with pytest.raises(SystemExit) as exc:
                main(argv)
            err = capsys.readouterr().err
            assert exc.value.code == 2, (name, ckpt)
            line = [l for l in err.splitlines() if ": error: " in l]
            assert len(line) == 1 and f": error: {ckpt}: {reason}" in line[0], (name, err)
            assert "Traceback" not in err and "weights_only" not in err
            assert not (tmp_path / "p.png").exists()


def test_missing_checkpoint_and_debug(tmp_path, bad_checkpoints, capsys):
    for name, (main, argv) in _commands(tmp_path, tmp_path / "nope.pt").items():
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "nope.pt" in err.strip().splitlines()[-1] and "Traceback" not in err, name
    corrupt = next(iter(bad_checkpoints))
    for name, (main, argv) in _commands(tmp_path, corrupt).items():
        with pytest.raises(CheckpointError):
            main(argv + ["--debug"])


def test_predictor_raises_checkpoint_error(tmp_path, bad_checkpoints):
    from fairseq_plugins.nli.predict import NLIPredictor

    for ckpt, reason in {**bad_checkpoints, tmp_path / "nope.pt": "no such checkpoint file"}.items():
        with pytest.raises(CheckpointError, match="^" + str(ckpt) + ": " + reason.split(" (")[0]):
            NLIPredictor.from_checkpoint(str(ckpt), str(tmp_path))


@pytest.mark.parametrize("script", ["snli", "multi30k"])
def test_evaluate_sh_shows_only_the_checkpoint_error(script, tmp_path):
    """fairseq's console scripts end in a traceback; the recipes' evaluate.sh shows its last line."""
    import os
    import subprocess
    import sys

    bin_dir, ckpt_dir = tmp_path / "bin", tmp_path / "ckpt"
    bin_dir.mkdir(), ckpt_dir.mkdir()
    for name in ("dict.input0.txt", "dict.de.txt", "dict.en.txt"):
        (bin_dir / name).write_text("")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "test.en").write_text("")
    ckpt = ckpt_dir / "checkpoint_best.pt"
    ckpt.write_bytes(b"garbage")
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""), VIRTUAL_ENV=str(Path(venv_bin).parent),
               PYTHONPATH=str(ROOT), SNLI_BIN=str(bin_dir), DATA_BIN=str(bin_dir), TEXT_DIR=str(tmp_path),
               OUT_DIR=str(tmp_path / "out"))
    argv = [str(ckpt)] if script == "snli" else [str(ckpt_dir)]
    proc = subprocess.run(["bash", str(ROOT / "recipes" / script / "evaluate.sh"), *argv], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if "tensorboardX" not in line]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"{ckpt}: not a readable fairseq checkpoint (UnpicklingError: " in lines[0] and "Traceback" not in proc.stderr
