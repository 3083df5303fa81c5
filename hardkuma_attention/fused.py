r"""Fused HardKuma gate math with hand-written backward passes.

Written as a chain of autograd ops, sampling one HardKuma gate per attention cell saves a dozen
full-size intermediates (softplus, clamp, log, expm1, exp, ... each keeps its input).  The
:class:`torch.autograd.Function` s here compute the same values under ``no_grad`` and save little:

- :func:`hardkuma_gates` (scores given): saves the two score maps and the output;
- :func:`expected_l0_sum` (scores given): saves the score maps.

(The attention layer's path, from per-head queries and keys without any ``T x S`` map, is
:mod:`hardkuma_attention.streaming`.)  :func:`hardkuma_gates` does not save the uniform noise: where a gate is strictly inside (0, 1) its Kumaraswamy value is
recovered from the output, ``k = (z - l)/(r - l)``, and everywhere else the gradient is 0.
``tests/test_core_functional.py`` checks both against the chain-of-ops reference with ``gradcheck``.

The elementwise kernels are plain functions of tensors; with ``compile=True`` they are wrapped in
``torch.compile`` (one fused loop instead of ~15 passes over the attention map; needs a C++
compiler, costs a one-off compilation of tens of seconds, then cached on disk by inductor).

Parameter map (shared by every function here)::

    a = clamp(softplus(score_a), ab_min, ab_max)       b = clamp(softplus(score_b), ab_min, ab_max)

Sampling (``u`` uniform in (0, 1); ``1 - u`` is uniform too, so ``log u`` replaces ``log(1 - u)``)::

    w = 1 - u^(1/b) = -expm1(log(u) / b)
    k = w^(1/a)                        # Kuma(a, b) sample
    z = clamp(l + (r - l) k, 0, 1)     # HardKuma sample

Derivatives, with ``w = k^a`` and ``s = 1 - w = u^(1/b)``::

    dk/da = -k log(k) / a
    dk/db = k s log(s) / (a b w)
    dz/dk = (r - l) on 0 < z < 1, else 0
    da/dscore = sigmoid(score) where ab_min < softplus(score) < ab_max, else 0

Expected L0 of a cell: ``1 - P0 = (1 - k0^a)^b = exp(b L)`` with ``L = log(1 - k0^a)``;
``d/da = exp(b L) b (-log k0) / expm1(-a log k0)``, ``d/db = exp(b L) L``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .distributions import DEFAULT_SUPPORT, log1mexp

__all__ = [
    "DEFAULT_AB_RANGE",
    "ab_from_scores",
    "hardkuma_gates",
    "expected_l0_sum",
    "row_sum_or_one",
]


#: The range ``(ab_min, ab_max)`` of ``a`` and ``b`` under the clamp map (the attention layers'
#: default); everyone else reads it as :data:`hardkuma_attention.config.DEFAULT_AB_RANGE`.
DEFAULT_AB_RANGE: Tuple[float, float] = (1e-3, 100.0)


# ---------------------------------------------------------------------- elementwise kernels


def ab_from_scores(score: torch.Tensor, ab_clamp: Tuple[float, float]) -> torch.Tensor:
    """``clamp(softplus(score), *ab_clamp)`` (the reference map, plain autograd)."""
    return F.softplus(score).clamp(ab_clamp[0], ab_clamp[1])


def _gate_forward(sa, sb, u, lo: float, hi: float, amin: float, amax: float):
    """z = clamp(l + (r - l) (1 - u^(1/b))^(1/a), 0, 1), before masking."""
    a = F.softplus(sa).clamp_(amin, amax)
    b = F.softplus(sb).clamp_(amin, amax)
    w = torch.log(u).div_(b).expm1_().neg_()
    k = torch.log(w).div_(a).exp_()
    return k.mul_(hi - lo).add_(lo).clamp_(0.0, 1.0)


def _l0_cells(sa, sb, log_k0: float, amin: float, amax: float):
    """Per-cell expected L0, ``(1 - k0^a)^b``."""
    a = F.softplus(sa).clamp_(amin, amax)
    b = F.softplus(sb).clamp_(amin, amax)
    return torch.exp(b * log1mexp(a * log_k0))


def _softplus_and_sigmoid(s):
    """``(softplus(s), sigmoid(s))`` from one ``exp``: ``log1p(e)`` and ``e / (1 + e)`` with
    ``e = exp(s)``; ``softplus(s) = s`` above 20 exactly as ``F.softplus`` defines it."""
    e = torch.exp(s.clamp(max=20.0))
    sp = torch.where(s > 20.0, s, torch.log1p(e))
    return sp, e.div_(e + 1.0)


def _gate_backward(gz, z, inside, sa, sb, g_l0, lo: float, hi: float, amin: float, amax: float, log_k0: float):
    """Gradients w.r.t. the scores of ``sum(gz * z) + g_l0 * sum(l0 cells)``.

    ``inside`` marks the cells with ``0 < z < 1`` (None: computed from ``z``, which must then be
    exact); masked cells must be outside.  ``g_l0`` is a tensor broadcastable to the cells (0 where
    masked) or a Python 0.0 when no L0 gradient flows.  Written with in-place ops on fresh
    intermediates: in eager mode each full-size allocation costs about as much as the arithmetic.
    """
    spa, sig_a = _softplus_and_sigmoid(sa)
    spb, sig_b = _softplus_and_sigmoid(sb)
    a, b = spa.clamp(amin, amax), spb.clamp(amin, amax)
    a_clamped, b_clamped = a != spa, b != spb  # zero gradient where the clamp is active
    del spa, spb
    if inside is None:
        inside = (z > 0) & (z < 1)
    outside = ~inside
    k = (z - lo).div_(hi - lo).masked_fill_(outside, 0.5)  # 0.5 keeps the logs finite outside
    log_k = torch.log(k)
    w = (a * log_k).exp_()  # k^a = 1 - u^(1/b)
    gk = (gz * k).mul_(hi - lo).masked_fill_(outside, 0.0)  # dL/dk * ... common factor
    del k, outside
    grad_a = (gk * log_k).div_(a).neg_()  # -gk log(k) / a
    del log_k
    # log(s) / w -> -1 as w -> 0 (w = k^a underflows for large a even where 0 < z < 1)
    tiny = w <= 1e-20
    log_s_over_w = torch.log1p(-w).div_(w.clamp_min(1e-20)).masked_fill_(tiny, -1.0)
    grad_b = gk.mul_(w.neg_().add_(1.0)).mul_(log_s_over_w).div_(a * b)  # gk s log(s) / (a b w)
    del w, log_s_over_w, tiny
    if not isinstance(g_l0, float) or g_l0 != 0.0:
        x = a * log_k0
        L = log1mexp(x)
        e = torch.exp(b * L) * g_l0
        grad_a = grad_a + e * b * (-log_k0) / torch.expm1(-x)
        grad_b = grad_b + e * L
    grad_a = grad_a.mul_(sig_a).masked_fill_(a_clamped, 0.0)
    grad_b = grad_b.mul_(sig_b).masked_fill_(b_clamped, 0.0)
    return grad_a, grad_b


_COMPILED = {}


def _kernel(fn, compile: bool):
    if not compile:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


# ---------------------------------------------------------------------- helpers


def row_sum_or_one(z: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim, with 1 where the sum is 0 (an all-zero row stays exactly 0 and its
    gradient stays finite)."""
    s = z.sum(-1, keepdim=True)
    return torch.where(s > 0, s, torch.ones_like(s))


def _sum_to(grad: Optional[torch.Tensor], shape, dtype) -> Optional[torch.Tensor]:
    if grad is None:
        return None
    if grad.shape != shape:
        grad = grad.sum_to_size(shape)
    return grad.to(dtype)


def _finish_forward(z, valid, normalize_sum):
    """Mask and normalise the raw gates in place; returns ``(out, denom, inside)``.

    With ``normalize_sum`` the backward pass recovers ``z = out * denom`` only up to round-off, so
    the exact ``0 < z < 1`` mask is kept (1 byte a cell); otherwise ``out`` is ``z`` itself."""
    if valid is not None:
        z = z.masked_fill_(~valid, 0.0)
    if not normalize_sum:
        return z, None, None
    inside = (z > 0) & (z < 1)
    denom = row_sum_or_one(z)
    return z.div_(denom), denom, inside


def _unnormalize(grad_out, out, denom):
    """Map the gradient w.r.t. ``out = z / denom`` (or ``out = z``) to the gradient w.r.t. ``z``,
    and recover ``z``."""
    if denom is None:
        return grad_out, out
    grad_z = (grad_out - (grad_out * out).sum(-1, keepdim=True)).div_(denom)
    return grad_z, out * denom


def _l0_sum(sa, sb, valid, log_k0, amin, amax, compile):
    e = _kernel(_l0_cells, compile)(sa, sb, log_k0, amin, amax)
    if valid is not None:
        e = e.masked_fill(~valid, 0.0)
    # accumulate in at least float32 (half / bfloat16 sums of many cells lose the target scale)
    return e.sum(dtype=torch.promote_types(e.dtype, torch.float32))


def _l0_grad(g_l0, valid, dtype):
    if g_l0 is None:
        return 0.0
    g = g_l0.to(dtype)
    return g if valid is None else g * valid


# ---------------------------------------------------------------------- score-level function


class _HardKumaGates(torch.autograd.Function):
    """z (optionally renormalised to sum 1 over the last dim) from scores and noise."""

    @staticmethod
    def forward(ctx, score_a, score_b, u, valid, lo, hi, ab_min, ab_max, normalize_sum, compile):
        z = _kernel(_gate_forward, compile)(score_a, score_b, u, lo, hi, ab_min, ab_max)
        z, denom, inside = _finish_forward(z, valid, normalize_sum)
        ctx.consts = (lo, hi, ab_min, ab_max, compile)
        ctx.save_for_backward(score_a, score_b, z, denom, inside)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        lo, hi, ab_min, ab_max, compile = ctx.consts
        score_a, score_b, out, denom, inside = ctx.saved_tensors
        grad_z, z = _unnormalize(grad_out, out, denom)
        log_k0 = math.log(-lo / (hi - lo))
        ga, gb = _kernel(_gate_backward, compile)(
            grad_z, z, inside, score_a, score_b, 0.0, lo, hi, ab_min, ab_max, log_k0
        )
        return (
            _sum_to(ga, score_a.shape, score_a.dtype), _sum_to(gb, score_b.shape, score_b.dtype),
            None, None, None, None, None, None, None, None,
        )


class _ExpectedL0Sum(torch.autograd.Function):
    """Sum over valid cells of ``1 - P0 = (1 - k0^a)^b`` from scores."""

    @staticmethod
    def forward(ctx, score_a, score_b, valid, lo, hi, ab_min, ab_max):
        log_k0 = math.log(-lo / (hi - lo))
        ctx.consts = (lo, hi, log_k0, ab_min, ab_max)
        ctx.save_for_backward(score_a, score_b, valid)
        return _l0_sum(score_a, score_b, valid, log_k0, ab_min, ab_max, False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        lo, hi, log_k0, ab_min, ab_max = ctx.consts
        score_a, score_b, valid = ctx.saved_tensors
        shape = torch.broadcast_shapes(score_a.shape, score_b.shape)
        zeros = torch.zeros(shape, dtype=score_a.dtype, device=score_a.device)
        g_l0 = _l0_grad(grad, valid, score_a.dtype)
        # z = 0 everywhere: only the L0 term contributes
        ga, gb = _gate_backward(zeros, zeros, None, score_a, score_b, g_l0, lo, hi, ab_min, ab_max, log_k0)
        return _sum_to(ga, score_a.shape, score_a.dtype), _sum_to(gb, score_b.shape, score_b.dtype), None, None, None, None, None


# ---------------------------------------------------------------------- public wrappers


def hardkuma_gates(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    u: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    support: Tuple[float, float] = DEFAULT_SUPPORT,
    ab_clamp: Tuple[float, float] = DEFAULT_AB_RANGE,
    normalize_sum: bool = False,
    compile: bool = False,
) -> torch.Tensor:
    """Fused HardKuma gate sample from raw scores; see the module docstring for the math.

    ``z = clamp(l + (r - l) (1 - u^(1/b))^(1/a), 0, 1)``, identical to
    ``distributions.kuma_sample_from_uniform(1 - u, a, b)`` stretched and rectified.
    Shapes: ``score_a``, ``score_b``, ``u`` broadcast to the output shape ``(..., S)``;
    ``valid`` (bool, True = keep) broadcasts to it as well.  Invalid cells are exactly 0.
    With ``normalize_sum`` the gates are divided by their sum over the last dim (an all-zero row
    stays all zero).
    """
    return _HardKumaGates.apply(
        score_a, score_b, u, valid, float(support[0]), float(support[1]),
        float(ab_clamp[0]), float(ab_clamp[1]), bool(normalize_sum), bool(compile),
    )


def expected_l0_sum(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    support: Tuple[float, float] = DEFAULT_SUPPORT,
    ab_clamp: Tuple[float, float] = DEFAULT_AB_RANGE,
) -> torch.Tensor:
    """Fused ``sum over valid cells of P(z != 0)`` from raw scores (a differentiable scalar,
    accumulated in at least float32)."""
    return _ExpectedL0Sum.apply(
        score_a, score_b, valid, float(support[0]), float(support[1]),
        float(ab_clamp[0]), float(ab_clamp[1]),
    )
