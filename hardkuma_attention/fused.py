r"""Fused elementwise HardKuma gate math with hand-written backward passes.

Written as a chain of autograd ops, sampling one HardKuma gate per attention cell saves a dozen
full-size intermediates (softplus, clamp, log1p, expm1, log, exp, ... each keeps its input).  The
:class:`torch.autograd.Function` s here compute the same values in one forward pass under
``no_grad``, save only the raw scores and the uniform noise, and recompute what the backward pass
needs.  ``tests/test_fused.py`` checks them against the chain-of-ops reference with ``gradcheck``.

Parameter map (shared by every function here, "scores" mode)::

    a = clamp(softplus(score_a), ab_min, ab_max)       b = clamp(softplus(score_b), ab_min, ab_max)

Sampling (``u`` uniform in (0, 1))::

    log_s = log1p(-u) / b              # log (1-u)^(1/b)
    w     = -expm1(log_s)              # 1 - (1-u)^(1/b)
    k     = exp(log(w) / a)            # Kuma(a, b) sample
    z     = clamp(l + (r - l) k, 0, 1) # HardKuma sample

Derivatives::

    dk/da = -k log(k) / a
    dk/db = k s log(s) / (a b w),      s = 1 - w
    dz/dk = (r - l) on 0 < t < 1, else 0
    da/dscore = sigmoid(score) where ab_min < softplus(score) < ab_max, else 0
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .distributions import log1mexp

__all__ = ["ab_from_scores", "hardkuma_gates", "expected_l0_sum", "row_sum_or_one"]


def ab_from_scores(score: torch.Tensor, ab_clamp: Tuple[float, float]) -> torch.Tensor:
    """``clamp(softplus(score), *ab_clamp)`` (the reference map, plain autograd)."""
    return F.softplus(score).clamp(ab_clamp[0], ab_clamp[1])


def _ab_and_grad(score, ab_clamp):
    sp = F.softplus(score)
    inside = (sp > ab_clamp[0]) & (sp < ab_clamp[1])
    return sp.clamp_(ab_clamp[0], ab_clamp[1]), torch.sigmoid(score).mul_(inside)


def _sample_parts(a, b, u, lo, hi):
    log_s = torch.log1p(-u).div_(b)
    w = torch.expm1(log_s).neg_()
    log_k = torch.log(w).div_(a)
    k = torch.exp(log_k)
    t = k * (hi - lo) + lo
    return log_s, w, log_k, k, t


class _HardKumaGates(torch.autograd.Function):
    """z (optionally renormalised to sum 1 over the last dim) from scores and noise."""

    @staticmethod
    def forward(ctx, score_a, score_b, u, valid, lo, hi, ab_min, ab_max, normalize_sum):
        ab_clamp = (ab_min, ab_max)
        a = ab_from_scores(score_a, ab_clamp)
        b = ab_from_scores(score_b, ab_clamp)
        _, _, _, _, t = _sample_parts(a, b, u, lo, hi)
        z = t.clamp_(0.0, 1.0)
        if valid is not None:
            z = z.masked_fill_(~valid, 0.0)
        denom = None
        if normalize_sum:
            denom = row_sum_or_one(z)
            z = z.div_(denom)
        ctx.consts = (lo, hi, ab_clamp, normalize_sum)
        ctx.save_for_backward(score_a, score_b, u, valid, z, denom)
        return z

    @staticmethod
    def backward(ctx, grad_out):
        lo, hi, ab_clamp, normalize_sum = ctx.consts
        score_a, score_b, u, valid, out, denom = ctx.saved_tensors
        if normalize_sum:
            # out = z / sum(z):  dL/dz = (g - sum(g * out)) / sum(z)
            grad_z = (grad_out - (grad_out * out).sum(-1, keepdim=True)).div_(denom)
        else:
            grad_z = grad_out
        a, da_ds = _ab_and_grad(score_a, ab_clamp)
        b, db_ds = _ab_and_grad(score_b, ab_clamp)
        log_s, w, log_k, k, t = _sample_parts(a, b, u, lo, hi)
        inside = (t > 0) & (t < 1)
        if valid is not None:
            inside &= valid
        g_k = (grad_z * (hi - lo)).mul_(inside)
        g_k = g_k * k  # common factor dz/dk * k
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (g_k * log_k).div_(a).neg_().mul_(da_ds)
        if ctx.needs_input_grad[1]:
            s = torch.exp(log_s)
            grad_b = g_k.mul_(s).mul_(log_s).div_(a * b * w).mul_(db_ds)
        grad_a = _sum_to(grad_a, score_a.shape)
        grad_b = _sum_to(grad_b, score_b.shape)
        return grad_a, grad_b, None, None, None, None, None, None, None


class _ExpectedL0Sum(torch.autograd.Function):
    """Sum over valid cells of ``1 - P0 = (1 - k0^a)^b`` from scores."""

    @staticmethod
    def forward(ctx, score_a, score_b, valid, lo, hi, ab_min, ab_max):
        ab_clamp = (ab_min, ab_max)
        a = ab_from_scores(score_a, ab_clamp)
        b = ab_from_scores(score_b, ab_clamp)
        log_k0 = math.log(-lo / (hi - lo))
        x = a * log_k0  # log k0^a  (< 0)
        L = log1mexp(x)  # log(1 - k0^a)
        e = torch.exp(b * L)
        if valid is not None:
            e = e.masked_fill(~valid, 0.0)
        ctx.consts = (log_k0, ab_clamp)
        ctx.save_for_backward(score_a, score_b, valid)
        # accumulate in at least float32 (half / bfloat16 sums of many cells lose the target scale)
        return e.sum(dtype=torch.promote_types(e.dtype, torch.float32))

    @staticmethod
    def backward(ctx, grad):
        log_k0, ab_clamp = ctx.consts
        score_a, score_b, valid = ctx.saved_tensors
        a, da_ds = _ab_and_grad(score_a, ab_clamp)
        b, db_ds = _ab_and_grad(score_b, ab_clamp)
        x = a * log_k0
        L = log1mexp(x)
        e = torch.exp(b * L)
        if valid is not None:
            e = e.masked_fill_(~valid, 0.0)
        e = e * grad.to(e.dtype)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            # d(1-k0^a)^b/da = e * b * dL/da,  dL/da = -log k0 / expm1(-x)
            grad_a = _sum_to(e * b * (-log_k0) / torch.expm1(-x) * da_ds, score_a.shape).to(score_a.dtype)
        if ctx.needs_input_grad[1]:
            grad_b = _sum_to(e * L * db_ds, score_b.shape).to(score_b.dtype)
        return grad_a, grad_b, None, None, None, None, None


def row_sum_or_one(z: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim, with 1 where the sum is 0 (an all-zero row stays exactly 0 and its
    gradient stays finite)."""
    s = z.sum(-1, keepdim=True)
    return torch.where(s > 0, s, torch.ones_like(s))


def _sum_to(grad: Optional[torch.Tensor], shape) -> Optional[torch.Tensor]:
    if grad is None or grad.shape == shape:
        return grad
    return grad.sum_to_size(shape)


def hardkuma_gates(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    u: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    support: Tuple[float, float] = (-0.1, 1.1),
    ab_clamp: Tuple[float, float] = (1e-3, 100.0),
    normalize_sum: bool = False,
) -> torch.Tensor:
    """Fused HardKuma gate sample from raw scores; see the module docstring for the math.

    Shapes: ``score_a``, ``score_b``, ``u`` broadcast to the output shape ``(..., S)``;
    ``valid`` (bool, True = keep) broadcasts to it as well.  Invalid cells are exactly 0.
    With ``normalize_sum`` the gates are divided by their sum over the last dim (an all-zero row
    stays all zero).
    """
    return _HardKumaGates.apply(
        score_a, score_b, u, valid, float(support[0]), float(support[1]),
        float(ab_clamp[0]), float(ab_clamp[1]), bool(normalize_sum),
    )


def expected_l0_sum(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    support: Tuple[float, float] = (-0.1, 1.1),
    ab_clamp: Tuple[float, float] = (1e-3, 100.0),
) -> torch.Tensor:
    """Fused ``sum over valid cells of P(z != 0)`` from raw scores (a differentiable scalar)."""
    return _ExpectedL0Sum.apply(
        score_a, score_b, valid, float(support[0]), float(support[1]),
        float(ab_clamp[0]), float(ab_clamp[1]),
    )
