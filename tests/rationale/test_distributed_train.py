"""Issue #14 item 3: ``torchrun --nproc_per_node 2 -m hardkuma_attention.rationale train`` (gloo, CPU).

One tiny 2-rank run (the synthetic marker data of ``synthetic.py`` as jsonl): both ranks end with
the same multiplier and moving average (and it moved), the same parameters, exactly one set of
outputs (rank 0's), whose checkpoints hold that same state; a second run stopped by SIGTERM and
continued with ``--resume`` under torchrun ends bit-identical to the uninterrupted one on both ranks.  Each rank's final state comes from the ``HARDKUMA_RATIONALE_RANK_DUMP`` diagnostic
(:func:`hardkuma_attention.rationale.distributed.dump_rank_state`)."""
import datetime
import json
import os
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hardkuma_attention.cli import main
from hardkuma_attention.rationale.distributed import DUMP_ENV, LaunchError, launch_env
from hardkuma_attention.rationale.objectives import pooled_mean

from synthetic import marker_examples

ROOT = Path(__file__).resolve().parents[2]


def _write(path, examples):
    with open(path, "w") as f:
        for ex in examples:
            pos = ex.rationale.index(True)
            f.write(json.dumps({"text": " ".join(ex.tokens), "label": ex.label, "rationale": [[pos, pos + 1]]}) + "\n")
    return path


EPOCHS, STEPS = 8, 48  # 120 examples / batch 10 = 12 batches a epoch, 6 per rank: 48 updates


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, _write(tmp / "train.jsonl", marker_examples(120, seed=0)), _write(tmp / "dev.jsonl", marker_examples(30, seed=1))


def _start(data, out, dump, *extra):
    tmp, train, dev = data
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", **{DUMP_ENV: str(dump)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hardkuma_attention.rationale", "train", "--format", "jsonl", "--train", str(train),
           "--dev", str(dev), "--test", str(dev), "--hidden-size", "8", "--epochs", str(EPOCHS), "--batch-size", "10",
           "--eval-every", "4", "--selection", "0.3", "--lagrange-lr", "0.05", "--dropout", "0.2",
           "--html-examples", "2", "--no-progress", "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc, dump):
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(out):
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "minutes"} for r in rows]


@pytest.fixture(scope="module")
def run(data):
    out = data[0] / "straight"
    stdout, ranks = _finish(_start(data, out, data[0] / "dump"), data[0] / "dump")
    return out, stdout, ranks


def test_two_ranks_share_lambda_and_parameters(run):
    out, _, (r0, r1) = run
    lam = r0["objective_state"]["selection_constraint.lagrange_multiplier"]
    assert float(lam) != 0.0  # the multiplier moved (lambda_init = 0 for the equality constraint)
    assert _same(r0["objective_state"], r1["objective_state"])
    assert _same(r0["model_state"], r1["model_state"])
    last = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert _same(last["objective_state"], r0["objective_state"]) and _same(last["model_state"], r0["model_state"])
    assert len(last["torch_rng_by_rank"]) == 2 and not torch.equal(*last["torch_rng_by_rank"])
    assert last["progress"]["step"] == STEPS  # disjoint shards: each rank half the batches of an epoch
    assert int(last["objective_state"]["selection_constraint.num_updates"]) == STEPS
    assert last["settings"]["world_size"] == 2


def test_one_set_of_outputs(run):
    out, stdout, _ = run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoint_last.pt", "history.jsonl", "model.pt", "predictions.dev.jsonl",
                     "predictions.test.jsonl", "rationales.dev.html", "rationales.test.html", "results.json"]
    assert [h["step"] for h in _history(out)] == list(range(4, STEPS + 1, 4))  # one line per evaluation
    assert stdout.count("step 4 dev") == 1 and stdout.count("straight: accuracy=") == 1  # rank 0 only
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["steps"] == STEPS and results["data"]["n_train"] == 120


def test_sigterm_then_resume_under_torchrun_is_bit_identical(data, run):
    straight, _, (r0, _) = run
    out, dump = data[0] / "resumed", data[0] / "dump_resumed"
    proc = _start(data, out, dump)
    history, deadline = out / "history.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    stopped = torch.load(out / "checkpoint_last.pt", weights_only=True)["progress"]
    assert not stopped["finished"] and stopped["step"] < STEPS
    _, (s0, s1) = _finish(_start(data, out, dump, "--resume"), dump)
    for s in (s0, s1):  # both ranks continued from the checkpoint to the uninterrupted run's state
        assert _same(s["objective_state"], r0["objective_state"]) and _same(s["model_state"], r0["model_state"])
    ma = torch.load(straight / "model.pt", weights_only=True)["model_state"]
    mb = torch.load(out / "model.pt", weights_only=True)["model_state"]
    assert _same(ma, mb) and _history(straight) == _history(out)
    ra, rb = (json.loads((o / "results.json").read_text()) for o in (straight, out))
    assert ra["dev"] == rb["dev"] and ra["final_multipliers"] == rb["final_multipliers"]


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


_POOLED = [torch.tensor([0.5, 2.0, 4.0]), torch.tensor([1.0]), torch.tensor([])]  # rank 0, rank 1 (twice)


def _pooled_worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        mine = [_POOLED[0], _POOLED[0]] if rank == 0 else [_POOLED[1], _POOLED[2]]  # rank 1 empty at call 2
        torch.save(torch.stack([pooled_mean(x) for x in mine]), f"{out_dir}/pooled{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_pooled_mean_is_the_mean_over_all_ranks(tmp_path):
    """The Bernoulli REINFORCE baseline's batch mean (``pooled_mean``): the same value on both
    ranks, the mean over the union of their values; an empty rank adds nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_pooled_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"pooled{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0, r1)
    assert torch.allclose(r0, torch.tensor([7.5 / 4, 6.5 / 3]))
    assert torch.equal(pooled_mean(_POOLED[0]), _POOLED[0].mean())  # one process: x.mean() itself
