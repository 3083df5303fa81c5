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
``z * softmax(score_a)`` renormalised).  The expected L0 ``sum_valid P(z_ij != 0)`` and the number
of exactly non-zero gates are reported to :func:`hardkuma_attention.collect_attention_stats`.

Every MLP runs once over the words of both sentences (concatenated along time) rather than once
per sentence: the same values with half the kernel launches.

Shapes: ``p`` (B, P, D), ``h`` (B, H, D), ``mask`` (B, P, H) bool (True = both words real).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from torch import nn

from hardkuma_attention.distributions import DEFAULT_SUPPORT
from hardkuma_attention.functional import NORMALIZE_MODES, hardkuma_weights_from_scores, normalize_gates
from hardkuma_attention.fused import expected_l0_sum
from hardkuma_attention.stats import gate_stats, report_stats, stats_requested

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


class HardKumaAttend(nn.Module):
    """HardKuma attend step; see the module docstring.  ``stats_key`` labels its AttentionStats."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        dropout: float,
        normalize: str = "none",
        support: Tuple[float, float] = DEFAULT_SUPPORT,
        ab_clamp: Tuple[float, float] = (1e-3, 100.0),
        stats_key: str = STATS_KEY,
        mlp: str = "separate",
    ):
        super().__init__()
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if mlp not in ATTEND_MLPS:
            raise ValueError(f"mlp must be one of {ATTEND_MLPS}, got {mlp!r}")
        if not support[0] < 0 < 1 < support[1]:
            raise ValueError(f"HardKuma support must satisfy l < 0 < 1 < r, got {support}")
        self.f_ab = TwinFeedForward(dim, hidden_dim, dropout, shared=(mlp == "shared"))
        self.normalize = normalize
        self.support = (float(support[0]), float(support[1]))
        self.ab_clamp = (float(ab_clamp[0]), float(ab_clamp[1]))
        self.stats_key = stats_key

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}, support={self.support}, ab_clamp={self.ab_clamp}"

    def scores(self, p: torch.Tensor, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(score_a, score_b)``, each (B, P, H)."""
        fa, fb = self.f_ab(torch.cat([p, h], dim=1))
        fa_p, fa_h = _split_time(fa, p.size(1))
        fb_p, fb_h = _split_time(fb, p.size(1))
        return torch.bmm(fa_p, fa_h.transpose(1, 2)), torch.bmm(fb_p, fb_h.transpose(1, 2))

    def forward(self, p: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> Alignment:
        score_a, score_b = self.scores(p, h)
        gates = hardkuma_weights_from_scores(
            score_a, score_b, mask, training=self.training, normalize="none",
            support=self.support, ab_clamp=self.ab_clamp,
        )  # (B, P, H), exactly 0 on masked cells
        if stats_requested():
            l0 = expected_l0_sum(score_a, score_b, mask, self.support, self.ab_clamp)
            report_stats(gate_stats(l0.float(), gates, mask, self.stats_key))
        mask_t = mask.transpose(1, 2)
        to_h = normalize_gates(gates, self.normalize, score_a, mask)
        to_p = normalize_gates(gates.transpose(1, 2), self.normalize, score_a.transpose(1, 2), mask_t)
        return Alignment(to_h, to_p, gates)
