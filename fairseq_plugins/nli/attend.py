r"""The "attend" step of the decomposable attention model (Parikh et al., 2016), softmax or HardKuma.

Both produce one matrix over the (premise word i, hypothesis word j) cells and use it in both
directions::

    beta_i  = sum_j W^{p->h}_{ij} h_j      (what premise word i aligns to in the hypothesis)
    alpha_j = sum_i W^{h->p}_{ji} p_i      (what hypothesis word j aligns to in the premise)

Softmax (Parikh et al.): ``e_ij = F(p_i) . F(h_j)``; ``W^{p->h} = softmax_j(e)``,
``W^{h->p} = softmax_i(e)^T``.

HardKuma (Bastings et al., 2019): two separate attend MLPs give the two shape parameters of one
HardKuma gate per cell::

    score_a_ij = F_a(p_i) . F_a(h_j)      a_ij = clamp(softplus(score_a_ij), ab_clamp)
    score_b_ij = F_b(p_i) . F_b(h_j)      b_ij = clamp(softplus(score_b_ij), ab_clamp)
    z_ij ~ HardKuma(a_ij, b_ij)  (training: reparameterised sample; eval: deterministic gate)

(``mlp="separate"``, the paper: F_a and F_b are two independent 2-layer MLPs, computed with one
GEMM for both first layers; ``mlp="shared"``: F_a and F_b share their first layer and differ in
the second, one layer cheaper) and ``W^{p->h} = N(z)``, ``W^{h->p} = N(z^T)`` with the normalisation ``N`` of the core
(``"none"``: raw gates in [0, 1], the paper; ``"sum"``: divided by the row sum; ``"softmax"``:
``z * softmax(score_a)`` renormalised).  The gates come from the core attention path
:func:`hardkuma_attention.functional.scaled_dot_product_hardkuma` (one head, ``scale = 1``,
``qa = F_a(p)``, ``ka = F_a(h)``, ``qb = F_b(p)``, ``kb = F_b(h)``, ``normalize="none"``,
weights requested), which also reports the expected L0 ``sum_valid P(z_ij != 0)`` and the number
of exactly non-zero gates to :func:`hardkuma_attention.collect_attention_stats`.

Every MLP runs once over the words of both sentences (concatenated along time) rather than once
per sentence: the same values with half the kernel launches.

Shapes: ``p`` (B, P, D), ``h`` (B, H, D), ``mask`` (B, P, H) bool (True = both words real).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import nn

from hardkuma_attention.config import GateConfig
from hardkuma_attention.functional import normalize_gates, scaled_dot_product_hardkuma

from ..common.gates import GateOptions, attention_gate, core_gate_kwargs

__all__ = ["FeedForward", "TwinFeedForward", "Alignment", "SoftmaxAttend", "HardKumaAttend", "STATS_KEY", "ATTEND_MLPS"]

STATS_KEY = "nli"
ATTEND_MLPS = ("separate", "shared")


class FeedForward(nn.Sequential):
    """Parikh et al.'s 2-layer ReLU MLP with dropout before each layer: (..., in) -> (..., hidden)."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__(
            nn.Dropout(dropout), nn.Linear(in_dim, hidden_dim), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )


class TwinFeedForward(nn.Module):
    """Two 2-layer ReLU MLPs ``F_a``, ``F_b`` on the same input: (..., in) -> two (..., hidden).

    ``shared=False``: independent MLPs (their first layers stacked into one ``Linear(in, 2 hidden)``,
    which is the same function as two separate layers; the input dropout mask is common to both).
    ``shared=True``: one common first layer, two second layers.
    """

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float, shared: bool = False):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.shared = shared
        self.dropout = nn.Dropout(dropout)
        self.first = nn.Linear(in_dim, hidden_dim if shared else 2 * hidden_dim)
        self.second_a = nn.Linear(hidden_dim, hidden_dim)
        self.second_b = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden = self.dropout(torch.relu(self.first(self.dropout(x))))
        if self.shared:
            h_a = h_b = hidden
        else:
            h_a, h_b = hidden.split(self.hidden_dim, dim=-1)
        return torch.relu(self.second_a(h_a)), torch.relu(self.second_b(h_b))


def _split_time(x: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return x[:, :n], x[:, n:]


class Alignment(NamedTuple):
    """Output of an attend module.

    to_hypothesis: (B, P, H) weights of each premise word over the hypothesis words.
    to_premise:    (B, H, P) weights of each hypothesis word over the premise words.
    matrix:        (B, P, H) the cell matrix to display (softmax: ``to_hypothesis``; HardKuma: the gates z).
    """

    to_hypothesis: torch.Tensor
    to_premise: torch.Tensor
    matrix: torch.Tensor


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to ``mask``; an all-masked row is all zero (not NaN)."""
    probs = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)
    return probs * mask


class SoftmaxAttend(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.f = FeedForward(dim, hidden_dim, dropout)

    def forward(self, p: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> Alignment:
        fp, fh = _split_time(self.f(torch.cat([p, h], dim=1)), p.size(1))
        e = torch.bmm(fp, fh.transpose(1, 2))  # (B, P, H)
        to_h = _masked_softmax(e, mask)
        to_p = _masked_softmax(e.transpose(1, 2), mask.transpose(1, 2))
        return Alignment(to_h, to_p, to_h)


class HardKumaAttend(GateOptions, nn.Module):
    """HardKuma attend step; see the module docstring.  ``stats_key`` labels its AttentionStats.

    ``gate``: a :class:`~hardkuma_attention.config.GateConfig` (default: the ``"attention"``
    preset, ``normalize="none"``, the paper); ``normalize``, ``support``, ``ab_clamp`` (=
    ``ab_range``) replace its fields when given.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        dropout: float,
        normalize: Optional[str] = None,
        support: Optional[Tuple[float, float]] = None,
        ab_clamp: Optional[Tuple[float, float]] = None,
        stats_key: str = STATS_KEY,
        mlp: str = "separate",
        gate: Optional[GateConfig] = None,
    ):
        super().__init__()
        if mlp not in ATTEND_MLPS:
            raise ValueError(f"mlp must be one of {ATTEND_MLPS}, got {mlp!r}")
        self.gate = attention_gate(gate, default_normalize="none", normalize=normalize, support=support,
                                   ab_clamp=ab_clamp)
        self.f_ab = TwinFeedForward(dim, hidden_dim, dropout, shared=(mlp == "shared"))
        self.stats_key = stats_key

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}, support={self.support}, ab_clamp={self.ab_clamp}"

    def features(self, p: torch.Tensor, h: torch.Tensor):
        """``(F_a(p), F_a(h), F_b(p), F_b(h))``: (B, P, hidden), (B, H, hidden), twice."""
        fa, fb = self.f_ab(torch.cat([p, h], dim=1))
        return (*_split_time(fa, p.size(1)), *_split_time(fb, p.size(1)))

    def scores(self, p: torch.Tensor, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(score_a, score_b)``, each (B, P, H) (for inspection; ``forward`` never builds them)."""
        fa_p, fa_h, fb_p, fb_h = self.features(p, h)
        return torch.bmm(fa_p, fa_h.transpose(1, 2)), torch.bmm(fb_p, fb_h.transpose(1, 2))

    def forward(self, p: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> Alignment:
        fa_p, fa_h, fb_p, fb_h = self.features(p, h)
        # One head, scale 1: the core path samples (training) or decodes (eval) the gates
        # z (B, P, H), exactly 0 on masked cells, and reports the stats to any collector; its
        # output (values h; = beta when normalize is "none") is not used: the model pools itself.
        _, gates, _ = scaled_dot_product_hardkuma(
            fa_p, fa_h, fb_p, fb_h, h, scale=1.0, valid=mask, training=self.training,
            **core_gate_kwargs(self.gate.replace(normalize="none")), need_weights=True, stats_key=self.stats_key,
        )
        score_a = torch.bmm(fa_p, fa_h.transpose(1, 2)) if self.normalize == "softmax" else None
        to_h = normalize_gates(gates, self.normalize, score_a, mask)
        score_a_t = None if score_a is None else score_a.transpose(1, 2)
        to_p = normalize_gates(gates.transpose(1, 2), self.normalize, score_a_t, mask.transpose(1, 2))
        return Alignment(to_h, to_p, gates)
