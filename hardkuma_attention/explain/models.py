r"""The frozen classifier of a ``hardkuma-rationale train`` model as a function of embeddings.

:func:`full_text_logits` runs the model's classifier on given embeddings with every valid token
kept (all gates 1), bypassing the selector::

    logits = finish_logits(classifier(emb, z = valid, valid))        emb (B, T, E) -> (B, C)

(``finish_logits``: the identity for classification, a sigmoid for regression).  It does not
change the model's mode: the post-hoc explainers run it inside :func:`eval_mode`, which puts the
model in eval mode (dropout off) and restores the mode it had on exit; the RRR trainer hook runs
it in whatever mode the trainer set.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["full_text_logits", "eval_mode"]


def full_text_logits(model: nn.Module, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, C)`` (regression: ``(B,)``) of ``model`` (a
    :class:`~hardkuma_attention.rationale.models.RationaleModel`) on the embeddings ``emb``
    ``(B, T, E)`` with every valid token kept; ``valid`` ``(B, T)`` bool."""
    return model.finish_logits(model.classifier(emb, valid.to(emb.dtype), valid))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` the model (and its sub-modules) in eval mode inside; on exit,
    also on an exception, every sub-module gets back the ``training`` flag it had."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
