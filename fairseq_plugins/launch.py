r"""Data-parallel ``fairseq-train`` under ``torchrun``, on CPU (gloo) or GPU (nccl).

One machine, N processes::

    torchrun --nproc_per_node N -m fairseq_plugins.launch <fairseq-train args>

Several machines (run on each; ``--node_rank`` 0 .. M-1, HOST = node 0)::

    torchrun --nnodes M --node_rank K --master_addr HOST --master_port 29500 \
        --nproc_per_node N -m fairseq_plugins.launch <fairseq-train args>

Why a launcher: fairseq-fixed 0.12's own launch paths do not work on CPU.  Under ``torchrun``
without ``--distributed-world-size`` each process trains alone (world size 1: N independent
copies, no data parallelism, no error); with it, ``_infer_torch_distributed_launch_init`` computes
``rank % torch.cuda.device_count()`` (modulo by zero); its own spawn starts
``min(torch.cuda.device_count(), world_size) = 0`` processes.  And with ``--ddp-backend
pytorch_ddp`` fairseq passes ``device_ids=[device_id]`` to ``DistributedDataParallel``, which
torch refuses for a CPU module.

What it does, per process: reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT`` (set by torchrun) and runs ``fairseq_cli.train.cli_main`` with::

    --distributed-world-size WORLD_SIZE --distributed-rank RANK --distributed-init-method env://
    --device-id LOCAL_RANK --distributed-no-spawn --distributed-backend BACKEND
    --user-dir <this package>            (only when no --user-dir is given)

``BACKEND`` is ``gloo`` with ``--cpu`` or without CUDA, else ``nccl`` (a ``--distributed-backend``
given on the command line wins).  Before training it makes fairseq's ``DistributedDataParallel``
drop ``device_ids``/``output_device`` for CPU modules (:class:`CPUFriendlyDDP`); nothing changes for
GPU modules.  The patch is applied by :func:`main` only, never on import.

Refused with exit code 2 and a message, before anything starts: a missing or non-integer torchrun
variable (e.g. ``python -m fairseq_plugins.launch`` without torchrun), a flag above that the
launcher sets given by hand, a ``--user-dir`` that is not this package (fairseq would import a
second copy under the same module name).  A plain ``fairseq-train`` under torchrun that would
train ``WORLD_SIZE`` independent models is refused by the criterion
(:func:`fairseq_plugins.common.lagrangian_l0.check_world_size`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

__all__ = ["CPUFriendlyDDP", "LaunchError", "distributed_args", "install_cpu_ddp_shim", "main"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Flags the launcher derives from the environment (a hand-given one would contradict it).
_SET_BY_LAUNCHER = (
    "--distributed-world-size", "--distributed-rank", "--distributed-init-method", "--device-id",
    "--local_rank", "--local-rank", "--distributed-no-spawn", "--distributed-port", "--distributed-num-procs",
)
PACKAGE_DIR = Path(__file__).resolve().parent


class LaunchError(ValueError):
    """Bad launch: the message names the variable or flag."""


def _flag_value(args: Sequence[str], flag: str):
    """Value of ``flag`` in ``args`` (``--flag v`` or ``--flag=v``), True if bare, None if absent."""
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else True
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _read_env(env: Dict[str, str]) -> Dict[str, str]:
    missing = [k for k in _ENV if not env.get(k)]
    if missing:
        raise LaunchError(
            f"environment variable(s) {', '.join(missing)} not set: run under torchrun, "
            "e.g. `torchrun --nproc_per_node 2 -m fairseq_plugins.launch <fairseq-train args>` "
            "(for one process use fairseq-train itself)"
        )
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        if not env[k].isdigit():
            raise LaunchError(f"environment variable {k}={env[k]!r} is not a non-negative integer")
    if int(env["RANK"]) >= int(env["WORLD_SIZE"]):
        raise LaunchError(f"RANK={env['RANK']} must be < WORLD_SIZE={env['WORLD_SIZE']}")
    return env


def distributed_args(args: Sequence[str], env: Dict[str, str], cuda: bool) -> List[str]:
    """The fairseq-train arguments for this process: ``args`` plus the per-rank flags above.

    Raises :class:`LaunchError` on a missing torchrun variable or a conflicting flag."""
    env = _read_env(env)
    for flag in _SET_BY_LAUNCHER:
        if _flag_value(args, flag) is not None:
            raise LaunchError(f"{flag} is set by fairseq_plugins.launch from the torchrun environment; remove it")
    user_dir = _flag_value(args, "--user-dir")
    if user_dir is True:
        raise LaunchError("--user-dir needs a value")
    if user_dir is not None and Path(user_dir).resolve() != PACKAGE_DIR:
        raise LaunchError(
            f"--user-dir {user_dir} is not {PACKAGE_DIR}, the plugin this launcher already imported; "
            "fairseq would import a second copy under the module name 'fairseq_plugins'"
        )
    out = list(args)
    if user_dir is None:
        out += ["--user-dir", str(PACKAGE_DIR)]
    if _flag_value(args, "--distributed-backend") is None:
        cpu = _flag_value(args, "--cpu") is not None or not cuda
        out += ["--distributed-backend", "gloo" if cpu else "nccl"]
    out += [
        "--distributed-world-size", env["WORLD_SIZE"], "--distributed-rank", env["RANK"],
        "--distributed-init-method", "env://", "--device-id", env["LOCAL_RANK"], "--distributed-no-spawn",
    ]
    return out


class CPUFriendlyDDP(DistributedDataParallel):
    """``DistributedDataParallel`` that ignores ``device_ids``/``output_device`` for a module whose
    parameters are all on the CPU (torch raises there; fairseq always passes them)."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)


def install_cpu_ddp_shim() -> None:
    """Make fairseq's DDP wrapper build :class:`CPUFriendlyDDP` (this process only)."""
    from fairseq.models import distributed_fairseq_model

    distributed_fairseq_model.DistributedDataParallel = CPUFriendlyDDP


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        args = distributed_args(argv, dict(os.environ), cuda=torch.cuda.is_available())
    except LaunchError as e:
        print(f"fairseq_plugins.launch: error: {e}", file=sys.stderr)
        return 2
    install_cpu_ddp_shim()
    from fairseq_cli.train import cli_main

    sys.argv = ["fairseq-train"] + args
    cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
