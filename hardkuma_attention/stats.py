"""Attention sparsity statistics, returned explicitly or gathered by a scoped collector.

Nothing here is cached on a module: a :class:`HardKumaAttention` either returns its
:class:`AttentionStats` (``return_stats=True``) or hands it to every :func:`collect_attention_stats`
context active around the forward call, which is how a loss gets the expected L0 of attention
layers buried inside ``nn.TransformerEncoderLayer`` and friends::

    with collect_attention_stats() as stats:
        logits = model(x)
    loss = ce(logits, y) + constraint(stats.total().expected_l0)
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterable, List, Optional, Union

import torch

__all__ = [
    "AttentionStats", "collect_attention_stats", "gate_stats", "report_stats", "reported", "stats_requested",
]


@dataclass
class AttentionStats:
    """Sums over the valid attention cells of one or more forward calls.

    Attributes:
        l0_sum: sum of ``P(gate != 0)`` (differentiable; the constraint's input).
        cells: number of valid cells (heads included).
        nonzero: number of valid cells whose weight is not exactly 0 (no gradient).
        key: optional label of the attention that produced it (e.g. ``"self"``, ``"cross"``).
    """

    l0_sum: torch.Tensor
    cells: torch.Tensor
    nonzero: torch.Tensor
    key: Optional[str] = None

    @property
    def expected_l0(self) -> torch.Tensor:
        """Expected fraction of non-zero cells (differentiable)."""
        return self.l0_sum / self.cells.clamp_min(1)

    @property
    def nonzero_rate(self) -> torch.Tensor:
        """Measured fraction of non-zero cells."""
        return self.nonzero / self.cells.clamp_min(1)

    def __add__(self, other: "AttentionStats") -> "AttentionStats":
        key = self.key if self.key == other.key else None
        return AttentionStats(
            self.l0_sum + other.l0_sum, self.cells + other.cells, self.nonzero + other.nonzero, key
        )


def gate_stats(
    l0_sum: torch.Tensor, weights: torch.Tensor, valid: Optional[torch.Tensor] = None, key: Optional[str] = None
) -> AttentionStats:
    """:class:`AttentionStats` of one attention map.

    Args:
        l0_sum: differentiable sum over valid cells of ``P(z != 0)`` (e.g. from
            :func:`hardkuma_attention.fused.expected_l0_sum`).
        weights: the weights (or gates); cells that are exactly 0 count as closed.
        valid: bool, broadcastable to ``weights``, True = a real cell (None: all are).
        key: label (``"self"``, ``"cross"``, ...).
    """
    if valid is None:
        cells = torch.tensor(float(weights.numel()), device=weights.device)
    else:
        cells = valid.expand(weights.shape).sum().to(torch.float32)
    nonzero = (weights.detach() != 0).sum().to(torch.float32)
    return AttentionStats(l0_sum, cells, nonzero, key)


_ACTIVE: ContextVar[tuple] = ContextVar("hardkuma_attention_stats_collectors", default=())


class collect_attention_stats:
    """Context manager that receives the :class:`AttentionStats` of every HardKuma attention call
    made inside it (nested collectors each receive all of them)."""

    def __init__(self):
        self.items: List[AttentionStats] = []
        self._token = None

    def __enter__(self) -> "collect_attention_stats":
        self._token = _ACTIVE.set(_ACTIVE.get() + (self.items,))
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)

    def total(self, key: Union[None, str, Iterable[str]] = None) -> Optional[AttentionStats]:
        """Sum of the collected stats; only those labelled ``key`` (a label or several) when
        given.  None if nothing matches."""
        if key is None:
            items = list(self.items)
        else:
            wanted = {key} if isinstance(key, str) else set(key)
            items = [s for s in self.items if s.key in wanted]
        if not items:
            return None
        out = items[0]
        for s in items[1:]:
            out = out + s
        return out

    def keys(self):
        return sorted({s.key for s in self.items if s.key is not None})


def stats_requested() -> bool:
    """True when at least one collector is active."""
    return bool(_ACTIVE.get())


def report_stats(stats: AttentionStats) -> None:
    """Hand ``stats`` to every active collector."""
    for items in _ACTIVE.get():
        items.append(stats)


def reported(stats: Optional[AttentionStats]) -> Optional[AttentionStats]:
    """``stats`` after :func:`report_stats` (None, when no stats were made, passes through): the
    last step of every attention call."""
    if stats is not None:
        report_stats(stats)
    return stats
