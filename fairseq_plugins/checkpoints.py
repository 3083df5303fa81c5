r"""Loading fairseq checkpoints under torch >= 2.6 without changing the process.

torch >= 2.6 loads with ``weights_only=True`` by default, and fairseq checkpoints (argparse
``Namespace`` / omegaconf configs in ``args`` / ``cfg``) do not pass it.  The plugin does **not**
set ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` (that would switch safe loading off for every
``torch.load`` of the process and of its children).  Instead :func:`install` (called by
``import fairseq_plugins``) wraps ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` — the one
loader behind ``fairseq-train`` resume / ``--restore-file``, ``fairseq-generate``,
``fairseq-validate``, ``load_model_ensemble_and_task`` and
:class:`fairseq_plugins.nli.predict.NLIPredictor` — so that only *during that call* fairseq's
``checkpoint_utils`` module sees a ``torch`` whose ``load`` defaults to ``weights_only=False``.
Every other ``torch.load`` keeps torch's safe default.  Full pickle can run code from the file:
load only fairseq checkpoints you trust.

A file that is not a readable fairseq checkpoint (missing, empty, truncated, another program's
``.pt``) raises :class:`CheckpointError` with one line naming the file, never the advice to
disable safe loading.
"""
from __future__ import annotations

import functools
import threading

import torch

__all__ = ["CheckpointError", "install", "load_full_pickle"]

_LOCK = threading.RLock()


class CheckpointError(ValueError):
    """A file given as a fairseq checkpoint cannot be read as one."""


def load_full_pickle(f, *args, **kwargs):
    """``torch.load(f, ..., weights_only=False)`` of a fairseq checkpoint; checks that the result
    is a dict with ``model`` and ``args`` or ``cfg``.  Raises :class:`CheckpointError`."""
    name = getattr(f, "name", f)
    kwargs.setdefault("weights_only", False)
    try:
        state = torch.load(f, *args, **kwargs)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on bad files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{name}: not a readable fairseq checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(state, dict) or "model" not in state or not ({"args", "cfg"} & set(state)):
        keys = sorted(map(str, state))[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{name}: not a fairseq checkpoint (no 'model' with 'args' or 'cfg'; found {keys})")
    return state


class _FullPickleTorch:
    """``torch`` as fairseq's ``checkpoint_utils`` sees it inside the wrapped loader."""

    load = staticmethod(load_full_pickle)

    def __getattr__(self, name):
        return getattr(torch, name)


def install() -> None:
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` (idempotent)."""
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_hardkuma_full_pickle", False):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        with _LOCK:
            saved = checkpoint_utils.torch
            checkpoint_utils.torch = _FullPickleTorch()
            try:
                return original(path, *args, **kwargs)
            except FileNotFoundError:
                raise CheckpointError(f"{path}: no such checkpoint file") from None
            finally:
                checkpoint_utils.torch = saved

    load_checkpoint_to_cpu._hardkuma_full_pickle = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
