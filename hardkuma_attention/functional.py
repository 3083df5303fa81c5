r"""Functional API: masked reductions of HardKuma gates and HardKuma attention weights.

Every reduction takes an optional boolean ``mask`` (True = a valid position) and reduces only over
valid positions.  Masked positions count as gates that are exactly 0 (``P0 = 1``).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .distributions import DEFAULT_SUPPORT, HardKumaraswamy, uniform_open
from .fused import row_sum_or_one, ab_from_scores, hardkuma_gates

__all__ = [
    "masked_mean",
    "expected_l0",
    "expected_transitions",
    "nonzero_rate",
    "hardkuma_attention_weights",
    "normalize_gates",
    "hardkuma_weights_from_scores",
    "NORMALIZE_MODES",
]

NORMALIZE_MODES = ("none", "sum", "softmax")
DistOrP0 = Union[HardKumaraswamy, torch.Tensor]


def _p0(x: DistOrP0) -> torch.Tensor:
    return x.prob_zero() if isinstance(x, HardKumaraswamy) else x


def masked_mean(x: torch.Tensor, mask: Optional[torch.Tensor] = None, dim=None) -> torch.Tensor:
    """Mean of ``x`` over valid positions (``mask`` True), over ``dim`` (all dims when None).

    A reduction with no valid position returns 0 (not NaN).
    """
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    mask = mask.to(x.dtype).expand_as(x)
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp_min(1.0)


def expected_l0(dist: DistOrP0, mask: Optional[torch.Tensor] = None, dim=None) -> torch.Tensor:
    r"""Expected fraction of non-zero gates, ``mean_valid (1 - P0)``.

    Args:
        dist: a :class:`HardKumaraswamy` or a tensor of ``P0`` values.
        mask: bool, broadcastable to the batch shape, True = valid.
        dim: dims to average over (None: all).
    """
    if isinstance(dist, HardKumaraswamy):
        rate = dist.expected_l0()
    else:
        rate = 1.0 - dist
    return masked_mean(rate, mask, dim)


def expected_transitions(
    dist: DistOrP0, mask: Optional[torch.Tensor] = None, dim: int = -1, normalize: bool = True
) -> torch.Tensor:
    r"""Expected number of 0/non-0 switches between neighbours along ``dim`` (fused lasso).

    ``sum_i P0_i (1 - P0_{i+1}) + (1 - P0_i) P0_{i+1}`` over pairs whose both positions are valid.
    With ``normalize`` (default) each sequence's sum is divided by its number of valid positions,
    as the paper's transition-rate constraint does, and the result is averaged over every other
    dim; otherwise the per-sequence sums are returned (shape: batch shape without ``dim``).
    """
    p0 = _p0(dist)
    dim = dim % p0.dim()
    n = p0.size(dim)
    left = p0.narrow(dim, 0, max(n - 1, 0))
    right = p0.narrow(dim, 1, max(n - 1, 0))
    pair = left * (1 - right) + (1 - left) * right
    if mask is not None:
        mask = mask.expand_as(p0)
        pair = pair * (mask.narrow(dim, 0, max(n - 1, 0)) & mask.narrow(dim, 1, max(n - 1, 0)))
        length = mask.to(p0.dtype).sum(dim)
    else:
        length = torch.full_like(p0.sum(dim), float(n))
    per_seq = pair.sum(dim)
    if not normalize:
        return per_seq
    return (per_seq / length.clamp_min(1.0)).mean()


def nonzero_rate(weights: torch.Tensor, mask: Optional[torch.Tensor] = None, dim=None) -> torch.Tensor:
    """Measured fraction of valid cells whose weight is not exactly 0 (no gradient)."""
    return masked_mean((weights.detach() != 0).to(torch.float32), mask, dim)


def normalize_gates(
    gates: torch.Tensor,
    normalize: str,
    scores: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Apply the normalisation ``normalize`` over the last dim (see :func:`hardkuma_attention_weights`)."""
    if normalize == "none":
        return gates
    if normalize == "sum":
        return gates / row_sum_or_one(gates)
    if normalize == "softmax":
        if scores is None:
            raise ValueError('normalize="softmax" needs scores')
        s = scores if mask is None else scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        p = torch.softmax(s, dim=-1) * gates
        return p / row_sum_or_one(p)
    raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")


def hardkuma_attention_weights(
    a: torch.Tensor,
    b: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    training: bool = True,
    normalize: str = "none",
    scores: Optional[torch.Tensor] = None,
    support: Tuple[float, float] = DEFAULT_SUPPORT,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Attention weights made of HardKuma gates, one per cell, normalised over the last dim.

    Training: a reparameterised sample ``z ~ HardKuma(a, b)``; eval: ``HardKuma(a, b).deterministic()``.
    Masked cells (``mask`` False) are exactly 0 and a fully masked row is all zero, never NaN.

    ``normalize``:
      - ``"none"`` (the paper): the raw gates in [0, 1];
      - ``"sum"``: gates divided by their row sum (an all-zero row stays 0);
      - ``"softmax"``: ``gate * softmax(scores)`` over valid cells, renormalised to sum 1.

    Shapes: ``a``, ``b`` (and ``scores``) ``(..., T, S)``; ``mask`` bool broadcastable to it.
    """
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    dist = HardKumaraswamy(a, b, support=support)
    if training:
        gates = dist.rsample(generator=generator)
    else:
        gates = dist.deterministic()
    if mask is not None:
        gates = gates.masked_fill(~mask, 0.0)
    return normalize_gates(gates, normalize, scores, mask)


def hardkuma_weights_from_scores(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    training: bool = True,
    normalize: str = "none",
    support: Tuple[float, float] = DEFAULT_SUPPORT,
    ab_clamp: Tuple[float, float] = (1e-3, 100.0),
    generator: Optional[torch.Generator] = None,
    fused: bool = True,
    compile: bool = False,
) -> torch.Tensor:
    r"""As :func:`hardkuma_attention_weights` with ``a = clamp(softplus(score_a), *ab_clamp)``,
    ``b`` likewise; ``normalize="softmax"`` uses ``score_a`` as the softmax scores.

    In training with ``normalize`` in {"none", "sum"} and ``fused=True`` the sample runs through the
    fused autograd function of :mod:`hardkuma_attention.fused` (same values, far less memory);
    ``compile=True`` additionally runs its elementwise kernels through ``torch.compile``.
    """
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if training and fused and normalize != "softmax":
        shape = torch.broadcast_shapes(score_a.shape, score_b.shape)
        u = uniform_open(shape, score_a.dtype, score_a.device, generator)
        return hardkuma_gates(score_a, score_b, u, mask, support, ab_clamp, normalize == "sum", compile)
    a = ab_from_scores(score_a, ab_clamp)
    b = ab_from_scores(score_b, ab_clamp)
    return hardkuma_attention_weights(
        a, b, mask, training, normalize, scores=score_a, support=support, generator=generator
    )
