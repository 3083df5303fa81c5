"""Independent reference formulas for eval-mode HardKuma attention (used by the plugin tests).

Written from the paper's closed forms, cell by cell on whole maps, without the package's code:

    a = clamp(softplus(score_a), *ab_clamp),  b likewise
    k0 = -l / (r - l),  k1 = (1 - l) / (r - l)           (support (l, r))
    P0 = 1 - (1 - k0^a)^b,  P1 = (1 - k1^a)^b,  Pc = 1 - P0 - P1
    eval gate = median (l + (r - l) (1 - 2^(-1/b))^(1/a), clipped to [0, 1]) where Pc > P0, P1,
                else 1 if P1 >= P0 else 0
"""
import torch
import torch.nn.functional as F


def shape_params(score, ab_clamp):
    return F.softplus(score).clamp(*ab_clamp)


def prob_nonzero(a, b, support):
    """``1 - P0 = (1 - k0^a)^b``."""
    lo, hi = support
    k0 = -lo / (hi - lo)
    return (1 - k0**a) ** b


def eval_gate(a, b, support):
    lo, hi = support
    p_open = prob_nonzero(a, b, support)
    p0 = 1 - p_open
    p1 = (1 - ((1 - lo) / (hi - lo)) ** a) ** b
    pc = p_open - p1
    median = (lo + (hi - lo) * (1 - 2 ** (-1 / b)) ** (1 / a)).clamp(0, 1)
    return torch.where((pc > p0) & (pc > p1), median, (p1 >= p0).to(a.dtype))


def normalized(z, mode, score_a, valid):
    """``none``: z; ``sum``: z / row sum; ``softmax``: z * softmax(score_a) renormalised (valid cells
    only); a row without weight stays 0."""
    z = z * valid
    if mode == "softmax":
        s = score_a.masked_fill(~valid, float("-inf"))
        top = s.amax(-1, keepdim=True).clamp_min(-1e30)
        z = z * torch.exp(s - top)
    if mode == "none":
        return z
    rows = z.sum(-1, keepdim=True)
    return torch.where(rows > 0, z / rows.clamp_min(1e-300), torch.zeros_like(z))


def gate_attention(sa, sb, valid, mode, support, ab_clamp):
    """Eval weights (normalised gates) and the expected-L0 sum over valid cells."""
    a, b = shape_params(sa, ab_clamp), shape_params(sb, ab_clamp)
    z = eval_gate(a, b, support)
    l0 = (prob_nonzero(a, b, support) * valid).sum()
    return normalized(z, mode, sa, valid), l0
