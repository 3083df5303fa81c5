"""Issue #12, safe loading: ``import fairseq_plugins`` changes no environment variable, a plain
``torch.load`` of a pickle with a payload is still refused afterwards, and only fairseq's own
checkpoint loader gets full pickle (a bad file there: one line naming it)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fairseq")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this object creates the marker directory
        return (os.mkdir, (self.marker,))


CHILD = r"""
import os, sys, pickle, subprocess
import torch
before = dict(os.environ)
import fairseq_plugins  # noqa: F401
assert dict(os.environ) == before, sorted(set(os.environ.items()) ^ set(before.items()))
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'))"],
                       capture_output=True, text=True)
assert child.stdout.strip() == "None", child.stdout
try:
    torch.load(sys.argv[1])
except pickle.UnpicklingError:
    print("refused")
from fairseq import checkpoint_utils
assert checkpoint_utils.torch is torch
"""


def test_import_changes_no_environment_and_plain_load_stays_safe(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save(_Payload(str(marker)), evil)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CHILD, str(evil)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "refused"
    assert not marker.exists()


def _fake_checkpoint(path):
    from omegaconf import OmegaConf

    torch.save({"args": None, "model": {"w": torch.ones(2)},
                "cfg": OmegaConf.create({"common": {"seed": 1}, "model": {"_name": "m"}, "task": {"_name": "nli"}}),
                "optimizer_history": [{"criterion_name": "C", "optimizer_name": "Adam",
                                       "lr_scheduler_state": {"best": None}, "num_updates": 3}],
                "extra_state": {"epoch": 2}, "last_optimizer_state": None}, path)


def test_fairseq_loader_gets_full_pickle_only_during_the_call(tmp_path):
    import fairseq_plugins  # noqa: F401
    from fairseq import checkpoint_utils

    ckpt = tmp_path / "checkpoint_last.pt"
    _fake_checkpoint(ckpt)
    with pytest.raises(Exception, match="Weights only load failed"):  # an omegaconf config: not weights only
        torch.load(ckpt)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(ckpt))
    assert state["cfg"].common.seed == 1 and torch.equal(state["model"]["w"], torch.ones(2))
    assert checkpoint_utils.torch is torch  # restored after the call
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(ckpt)


@pytest.mark.parametrize("kind", ["empty", "truncated", "foreign", "missing"])
def test_bad_checkpoint_is_one_line_naming_the_file(tmp_path, kind):
    import fairseq_plugins  # noqa: F401
    from fairseq import checkpoint_utils
    from fairseq_plugins.checkpoints import CheckpointError

    path = tmp_path / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _fake_checkpoint(tmp_path / "good.pt")
        path.write_bytes((tmp_path / "good.pt").read_bytes()[:300])
    elif kind == "foreign":  # e.g. a hardkuma-rationale model.pt
        torch.save({"format": "hardkuma-rationale/1", "model_state": {}}, path)
    with pytest.raises(CheckpointError) as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "weights_only" not in message
