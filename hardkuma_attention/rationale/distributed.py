r"""Data-parallel training of the rationale trainer under ``torchrun`` (issue #14, item 3).

``torchrun --nproc_per_node N -m hardkuma_attention.rationale train ...`` runs ``N`` copies of the
trainer; :func:`from_environment` sees torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and
returns a :class:`DistributedContext` (process group initialised explicitly with ``gloo``: the
rationale trainer runs on the CPU, so there is no ``nccl`` path here — fairseq's launcher covers
GPUs); without them it returns :class:`LocalContext`, whose hooks do nothing, so a
plain ``python -m hardkuma_attention.rationale train`` runs exactly as before.

What the context does for :func:`~.train.train`:

- the model is wrapped in ``DistributedDataParallel`` (gradients averaged over the ranks);
- sharding: every rank builds the same shuffled list of ``K = ceil(n / batch_size)`` batches (same
  seed, same per-epoch batch-order RNG state, saved in ``checkpoint_last.pt``) and trains on
  batches ``rank, rank + W, ...`` of its first ``W * floor(K / W)`` — disjoint shards, the same
  number of updates on every rank (the last ``K mod W`` batches of an epoch are dropped);
- the Lagrange multipliers: the objective passes ``count`` (its number of sequences) to the core
  :class:`~hardkuma_attention.LagrangianConstraint`, which all-reduces ``(count * value, count)``,
  so every rank takes the same update from the mean over the global batch;
- dev evaluation runs on rank 0; the best-checkpoint decision (and the best-so-far record) is
  broadcast; stopping (``--max-minutes``, SIGTERM) is agreed with an all-reduce (any rank stops ->
  all stop after the same update);
- rank 0 writes every output (atomically, as in one process); the other ranks write nothing.
  ``checkpoint_last.pt`` holds every rank's torch RNG state, so ``--resume`` (all ranks load it)
  continues each rank's noise stream; the world size is part of the run settings, so a resume
  with another ``--nproc_per_node`` is refused.

Debugging / tests: with ``HARDKUMA_RATIONALE_RANK_DUMP=DIR`` each rank saves its final model and
objective state (the multipliers) to ``DIR/rank<r>.pt`` after training (a diagnostic, not an
output of the run).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Mapping, Optional

import torch

__all__ = ["LaunchError", "LocalContext", "DistributedContext", "launch_env", "from_environment",
           "DUMP_ENV"]

DUMP_ENV = "HARDKUMA_RATIONALE_RANK_DUMP"
_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class LaunchError(ValueError):
    """The torchrun environment is incomplete or inconsistent; the message names the variable."""


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int


def _int_var(env: Mapping[str, str], name: str) -> int:
    text = env.get(name)
    if text is None:
        raise LaunchError(f"{name}: not set, but other torchrun variables are "
                          f"({', '.join(v for v in _VARS if v in env)}): launch with torchrun, or unset them")
    try:
        return int(text)
    except ValueError:
        raise LaunchError(f"{name}: expected an integer, got {text!r}") from None


def launch_env(env: Mapping[str, str]) -> Optional[LaunchEnv]:
    """``LaunchEnv`` from torchrun's variables; None without any of ``RANK`` / ``WORLD_SIZE`` /
    ``LOCAL_RANK`` (one process).  A partial or inconsistent set raises :class:`LaunchError`
    (e.g. ``WORLD_SIZE`` without ``RANK``: otherwise N copies would each train alone)."""
    if not any(v in env for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    rank, world, local = (_int_var(env, v) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if world < 1:
        raise LaunchError(f"WORLD_SIZE: must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise LaunchError(f"RANK: must be in [0, WORLD_SIZE={world}), got {rank}")
    if local < 0:
        raise LaunchError(f"LOCAL_RANK: must be >= 0, got {local}")
    if world > 1:
        for v in ("MASTER_ADDR", "MASTER_PORT"):
            if not env.get(v):
                raise LaunchError(f"{v}: not set (WORLD_SIZE={world}): launch with torchrun")
    return LaunchEnv(rank, world, local)


class LocalContext:
    """One process: every hook is the identity (the trainer's single-process path)."""

    rank, world_size, is_writer, distributed = 0, 1, True, False

    def wrap(self, model):
        return model

    def steps_per_epoch(self, num_batches: int) -> int:
        return num_batches

    def shard(self, batches: Iterator, num_batches: int) -> Iterator:
        return batches

    def any_rank(self, flag: bool) -> bool:
        return flag

    def from_writer(self, obj):
        return obj

    def rng_states(self) -> Optional[List[torch.Tensor]]:
        return None

    def run_identity(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class DistributedContext(LocalContext):
    """``torch.distributed`` initialised for ``env`` (see the module docstring)."""

    distributed = True

    def __init__(self, env: LaunchEnv):
        import torch.distributed as dist

        self.rank, self.world_size, self.local_rank = env.rank, env.world_size, env.local_rank
        self.is_writer = env.rank == 0
        # The trainer's models and batches live on the CPU (see train.py), hence gloo.
        dist.init_process_group("gloo", init_method="env://", rank=env.rank, world_size=env.world_size)

    def wrap(self, model):
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def steps_per_epoch(self, num_batches: int) -> int:
        return num_batches // self.world_size

    def shard(self, batches: Iterator, num_batches: int) -> Iterator:
        """Batches ``rank, rank + W, ...`` of the first ``W * floor(K / W)`` of ``batches`` (``K =
        num_batches``; the caller passes the epoch's full batch iterator, identical on every rank)."""
        W = self.world_size
        return itertools.islice(batches, self.rank, W * (num_batches // W), W)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (stop decisions: time budget, SIGTERM)."""
        import torch.distributed as dist

        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value[0])

    def from_writer(self, obj):
        import torch.distributed as dist

        box = [obj if self.is_writer else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def rng_states(self) -> List[torch.Tensor]:
        import torch.distributed as dist

        states: List[Optional[torch.Tensor]] = [None] * self.world_size
        dist.all_gather_object(states, torch.get_rng_state())
        return states  # type: ignore[return-value]

    def run_identity(self) -> dict:
        return {"world_size": self.world_size}

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def from_environment(env: Optional[Mapping[str, str]] = None):
    """:class:`DistributedContext` under torchrun (``WORLD_SIZE`` > 1), else :class:`LocalContext`.
    Raises :class:`LaunchError` for a broken launch, before any process group is created."""
    launch = launch_env(os.environ if env is None else env)
    if launch is None or launch.world_size == 1:
        return LocalContext()
    return DistributedContext(launch)


def on_writer(ctx, fn: Callable[[], object], error_types: tuple):
    """Run ``fn`` on rank 0 only; its result (or its error, one of ``error_types``) reaches every
    rank, which returns / raises alike, so no rank waits for one that has failed."""
    result, error = None, None
    if ctx.is_writer:
        try:
            result = fn()
        except error_types as err:
            error = (type(err).__name__, str(err))
    result, error = ctx.from_writer((result, error))
    if error is not None:
        cls = next((t for t in error_types if t.__name__ == error[0]), error_types[0])
        raise cls(error[1])
    return result


def dump_rank_state(ctx, model, objective, env: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """With ``HARDKUMA_RATIONALE_RANK_DUMP=DIR``: save this rank's model and objective state to
    ``DIR/rank<r>.pt`` (diagnostics: compare ranks); otherwise nothing."""
    folder = (os.environ if env is None else env).get(DUMP_ENV)
    if not folder:
        return None
    path = Path(folder) / f"rank{ctx.rank}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": model.state_dict(), "objective_state": objective.state_dict()}, path)
    return path
