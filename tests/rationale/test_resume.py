"""Issue #12: resumable training and output folders that cannot mix two runs.

Fault injection: a tiny ``hardkuma-rationale train`` is killed (SIGKILL, then SIGTERM) mid-way in a
subprocess, resumed with ``--resume``, and compared with an uninterrupted run of the same command:
the same best model (tensor for tensor), the same history (wall-clock fields aside), the same
results."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hardkuma_attention.cli import main

from synthetic import marker_examples

ROOT = Path(__file__).resolve().parents[2]


def _write(path, examples):
    with open(path, "w") as f:
        for ex in examples:
            pos = ex.rationale.index(True)
            f.write(json.dumps({"text": " ".join(ex.tokens), "label": ex.label, "rationale": [[pos, pos + 1]]}) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    return d, _write(d / "train.jsonl", marker_examples(160, seed=0)), _write(d / "dev.jsonl", marker_examples(40, seed=1))


def _args(data, out, *extra):
    d, train, dev = data
    return ["train", "--format", "jsonl", "--train", str(train), "--dev", str(dev), "--test", str(dev),
            "--hidden-size", "8", "--epochs", "12", "--batch-size", "10", "--eval-every", "5", "--selection", "0.3",
            "--dropout", "0.2", "--html-examples", "2", "--no-progress", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def uninterrupted(data):
    out = data[0] / "straight"
    assert main(_args(data, out)) == 0
    return out


def _history(out):
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "minutes"} for r in rows]


def _same_run(a, b):
    ma = torch.load(a / "model.pt", weights_only=True)["model_state"]
    mb = torch.load(b / "model.pt", weights_only=True)["model_state"]
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert _history(a) == _history(b)
    ra, rb = (json.loads((o / "results.json").read_text()) for o in (a, b))
    assert ra["dev"] == rb["dev"] and ra["test"] == rb["test"]
    assert ra["final_multipliers"] == rb["final_multipliers"]
    assert (a / "predictions.test.jsonl").read_text() == (b / "predictions.test.jsonl").read_text()


def _start(data, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "hardkuma_attention.rationale", *_args(data, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _interrupt_after_evaluations(proc, out, sig, evaluations=3, timeout=120):
    history = out / "history.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if history.exists() and len(history.read_text().splitlines()) >= evaluations:
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr


def test_sigkill_mid_run_then_resume_is_bit_identical(data, uninterrupted):
    out = data[0] / "killed"
    rc, _ = _interrupt_after_evaluations(_start(data, out), out, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert (out / "checkpoint_last.pt").is_file() and not (out / "results.json").exists()
    assert main(_args(data, out, "--resume")) == 0
    _same_run(uninterrupted, out)
    assert not list(out.glob(".*.tmp"))


def test_sigterm_saves_the_state_and_exits_cleanly(data, uninterrupted):
    out = data[0] / "terminated"
    rc, stderr = _interrupt_after_evaluations(_start(data, out), out, signal.SIGTERM, evaluations=2)
    assert rc == 143 and "Traceback" not in stderr
    assert "SIGTERM: stopped after update" in stderr and "--resume" in stderr
    assert not list(out.glob(".*.tmp"))
    assert main(_args(data, out, "--resume")) == 0
    _same_run(uninterrupted, out)


def test_resume_of_a_finished_run_trains_nothing_and_rewrites_the_same_outputs(data, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    (out / "results.json").unlink()
    (out / ".model.pt.x1y2.tmp").write_bytes(b"half a write")  # left by a killed write
    assert main(_args(data, out, "--resume")) == 0
    _same_run(uninterrupted, out)
    assert not (out / ".model.pt.x1y2.tmp").exists()


def test_resume_with_other_settings_is_refused(data, uninterrupted, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    args = _args(data, out, "--resume")
    args[args.index("--selection") + 1] = "0.4"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "written with other settings (selection: 0.3 -> 0.4)" in err and len(err.splitlines()) == 1


def test_non_empty_out_is_refused_unless_resume_or_overwrite(data, uninterrupted, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(_args(data, out)) == 2
    assert capsys.readouterr().err.strip() == (f"hardkuma-rationale train: error: --out: {out} is not empty (an earlier "
                                               "run?): --resume continues it, --overwrite replaces it")
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}  # untouched
    (out / "notes.txt").write_text("mine")
    assert main(_args(data, out, "--overwrite")) == 2
    assert "also holds files train does not write (notes.txt)" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    (out / "predictions.test.jsonl").write_text("stale\n")
    args = _args(data, out, "--overwrite")
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["train_config"]["epochs"] == 1 and "stale" not in (out / "predictions.test.jsonl").read_text()
    assert len(_history(out)) == 3  # 16 updates, evaluated every 5: only this run's lines


def test_resume_without_checkpoint_is_refused(data, tmp_path, capsys):
    assert main(_args(data, tmp_path / "new", "--resume")) == 2
    assert "--resume: " in capsys.readouterr().err and not (tmp_path / "new").exists()
