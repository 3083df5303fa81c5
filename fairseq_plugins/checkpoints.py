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
disable safe loading.  The plugin's own command lines (:mod:`fairseq_plugins.nli.heatmap`,
:mod:`fairseq_plugins.translation.analyze`; :func:`cli_errors`) print that line as ``<prog>: error: ...`` and
exit with code 2, no traceback (``--debug`` shows it).  fairseq's own console scripts
(``fairseq-train --restore-file``, ``fairseq-generate --path``, ``fairseq-validate --path``) are
not forked: they end with fairseq's traceback, whose last line is the same one-line
``fairseq_plugins.checkpoints.CheckpointError: <file>: ...``, and exit with code 1;
``recipes/snli/evaluate.sh`` shows only that line.
"""
from __future__ import annotations

import functools
import sys
import threading
from contextlib import contextmanager

import torch

__all__ = ["CheckpointError", "cli_errors", "install", "load_full_pickle"]

_LOCK = threading.RLock()


class CheckpointError(ValueError):
    """A file given as a fairseq checkpoint cannot be read as one."""


@contextmanager
def cli_errors(prog: str, debug: bool = False):
    """For a command line that loads checkpoints: a :class:`CheckpointError` or a missing file
    (``FileNotFoundError``: checkpoint, dictionary, data split) raised in the ``with`` block becomes
    one line ``<prog>: error: <message>`` on stderr and ``SystemExit(2)``; ``debug``: re-raised."""
    try:
        yield
    except (CheckpointError, FileNotFoundError) as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


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


class _PeerPickleTorch:
    """``torch`` as ``fairseq.distributed.utils`` sees it inside ``_broadcast_object_slow``: the
    receiving ranks unpickle what rank 0 pickled (the checkpoint state it loaded, tensor
    metadata), so ``load`` defaults to ``weights_only=False`` there and only there."""

    @staticmethod
    def load(f, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(f, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(torch, name)


def _scoped_torch(module, name: str, proxy, on_missing=None) -> None:
    """Replace ``module.name`` by a wrapper that lets ``module`` see ``proxy`` as its ``torch``
    only during the call (idempotent)."""
    original = getattr(module, name)
    if getattr(original, "_hardkuma_full_pickle", False):
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        with _LOCK:
            saved = module.torch
            module.torch = proxy
            try:
                return original(*args, **kwargs)
            except FileNotFoundError:
                if on_missing is None:
                    raise
                raise CheckpointError(f"{args[0] if args else kwargs.get('path')}: {on_missing}") from None
            finally:
                module.torch = saved

    wrapper._hardkuma_full_pickle = True
    setattr(module, name, wrapper)


def install() -> None:
    """Wrap ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` and, for data-parallel resumes
    (rank 0 loads the checkpoint and broadcasts it), ``fairseq.distributed.utils.
    _broadcast_object_slow`` (idempotent)."""
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as distributed_utils

    _scoped_torch(checkpoint_utils, "load_checkpoint_to_cpu", _FullPickleTorch(), "no such checkpoint file")
    _scoped_torch(distributed_utils, "_broadcast_object_slow", _PeerPickleTorch())
