"""Issue #14 item 3: ``torchrun --nproc_per_node 2 -m hardkuma_attention.rationale train`` (gloo, CPU).

One tiny 2-rank run (the synthetic marker data of ``synthetic.py`` as jsonl): both ranks end with
the same multiplier and moving average (and it moved), the same parameters, exactly one set of
outputs (rank 0's), whose checkpoints hold that same state; ``--resume`` under torchrun loads it on
both ranks.  Each rank's final state comes from the ``HARDKUMA_RATIONALE_RANK_DUMP`` diagnostic
(:func:`hardkuma_attention.rationale.distributed.dump_rank_state`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hardkuma_attention.rationale.cli import main
from hardkuma_attention.rationale.distributed import DUMP_ENV, LaunchError, launch_env

from synthetic import marker_examples

ROOT = Path(__file__).resolve().parents[2]


def _write(path, examples):
    with open(path, "w") as f:
        for ex in examples:
            pos = ex.rationale.index(True)
            f.write(json.dumps({"text": " ".join(ex.tokens), "label": ex.label, "rationale": [[pos, pos + 1]]}) + "\n")
    return path


def _torchrun(tmp, out, dump, *extra):
    train = _write(tmp / "train.jsonl", marker_examples(120, seed=0))
    dev = _write(tmp / "dev.jsonl", marker_examples(30, seed=1))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", **{DUMP_ENV: str(dump)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hardkuma_attention.rationale", "train", "--format", "jsonl", "--train", str(train),
           "--dev", str(dev), "--test", str(dev), "--hidden-size", "8", "--epochs", "3", "--batch-size", "10",
           "--eval-every", "4", "--selection", "0.3", "--lagrange-lr", "0.05", "--html-examples", "2",
           "--no-progress", "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "out"
    return tmp, out, _torchrun(tmp, out, tmp / "dump")


def test_two_ranks_share_lambda_and_parameters(run):
    _, out, (r0, r1) = run
    lam = r0["objective_state"]["selection_constraint.lagrange_multiplier"]
    assert float(lam) != 0.0  # the multiplier moved (lambda_init = 0 for the equality constraint)
    assert _same(r0["objective_state"], r1["objective_state"])
    assert _same(r0["model_state"], r1["model_state"])
    last = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert _same(last["objective_state"], r0["objective_state"]) and _same(last["model_state"], r0["model_state"])
    assert len(last["torch_rng_by_rank"]) == 2 and not torch.equal(*last["torch_rng_by_rank"])
    # 120 examples / 10 = 12 batches, 6 per rank and epoch: 18 updates, one constraint step each.
    assert last["progress"]["step"] == 18
    assert int(last["objective_state"]["selection_constraint.num_updates"]) == 18


def test_one_set_of_outputs(run):
    _, out, _ = run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoint_last.pt", "history.jsonl", "model.pt", "predictions.dev.jsonl",
                     "predictions.test.jsonl", "rationales.dev.html", "rationales.test.html", "results.json"]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [4, 8, 12, 16]  # one line per evaluation, not one per rank
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["steps"] == 18 and results["data"]["n_train"] == 120


def test_resume_under_torchrun_loads_the_same_state(run):
    tmp, out, (r0, _) = run
    before = (out / "results.json").read_text()
    s0, s1 = _torchrun(tmp, out, tmp / "dump_resume", "--resume")
    assert _same(s0["objective_state"], r0["objective_state"]) and _same(s1["objective_state"], r0["objective_state"])
    assert _same(s1["model_state"], r0["model_state"])
    assert json.loads((out / "results.json").read_text())["dev"] == json.loads(before)["dev"]


@pytest.mark.parametrize("env, flag", [({"WORLD_SIZE": "2"}, "RANK"), ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "MASTER_ADDR"),
                                       ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK"),
                                       ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK")])
def test_broken_launch_is_refused(env, flag):
    with pytest.raises(LaunchError, match=f"^{flag}:"):
        launch_env(env)


def test_broken_launch_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["train", "--format", "jsonl", "--train", str(tmp_path / "t.jsonl"), "--dev", str(tmp_path / "d.jsonl"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "RANK: not set" in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_no_torchrun_is_one_process():
    assert launch_env({}) is None and launch_env({"PATH": "/bin"}) is None
