r"""Functional API: masked reductions of HardKuma gates and HardKuma attention weights.

Every reduction takes an optional boolean ``mask`` (True = a valid position) and reduces only over
valid positions.  Masked positions count as gates that are exactly 0 (``P0 = 1``).
"""
from __future__ import annotations

import importlib.util

from typing import Optional, Tuple, Union

import torch

from .config import DEFAULT_AB_RANGE, NORMALIZE_MODES, check_normalize
from .distributions import DEFAULT_SUPPORT, HardKumaraswamy, uniform_open
from .fused import ab_from_scores, expected_l0_sum, hardkuma_gates, row_sum_or_one
from .stats import AttentionStats, gate_stats, reported
from .streaming import (
    DROPOUT_STREAM, StreamConfig, TileKernels, _compute_dtype, counter_noise, default_kernels, prepare_call,
    streaming_attention,
)

__all__ = [
    "masked_mean",
    "expected_l0",
    "expected_transitions",
    "nonzero_rate",
    "hardkuma_attention_weights",
    "normalize_gates",
    "hardkuma_weights_from_scores",
    "scaled_dot_product_hardkuma",
    "causal_valid",
    "NORMALIZE_MODES",
]

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
    if check_normalize(normalize) == "none":
        return gates
    if normalize == "sum":
        return gates / row_sum_or_one(gates)
    if scores is None:
        raise ValueError('normalize="softmax" needs scores')
    s = scores if mask is None else scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    p = torch.softmax(s, dim=-1) * gates
    return p / row_sum_or_one(p)


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
    check_normalize(normalize)
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
    ab_clamp: Tuple[float, float] = DEFAULT_AB_RANGE,
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
    check_normalize(normalize)
    if training and fused and normalize != "softmax":
        shape = torch.broadcast_shapes(score_a.shape, score_b.shape)
        u = uniform_open(shape, score_a.dtype, score_a.device, generator)
        return hardkuma_gates(score_a, score_b, u, mask, support, ab_clamp, normalize == "sum", compile)
    a = ab_from_scores(score_a, ab_clamp)
    b = ab_from_scores(score_b, ab_clamp)
    return hardkuma_attention_weights(
        a, b, mask, training, normalize, scores=score_a, support=support, generator=generator
    )


def causal_valid(T: int, S: int, device=None) -> torch.Tensor:
    """Bool ``(T, S)`` mask, True where key ``j <= i + (S - T)`` (causal, aligned bottom-right:
    the ``T`` queries are the last ``T`` positions of the ``S`` keys, as with a KV cache; the
    usual lower triangle when ``T == S``)."""
    i = torch.arange(T, device=device).unsqueeze(-1)
    j = torch.arange(S, device=device)
    return j <= i + (S - T)


def _whole_map_attention(qa, ka, qb, kb, v, scale, valid, bias, training, normalize, support, ab_clamp,
                         dropout_p, want_stats, seed):
    """The whole-map path (``need_weights=True``): the ``(..., T, S)`` weights are materialised
    and differentiable; the noise is the same counter noise as the tiles draw, so the weights and
    the output equal the streaming path's.  Returns ``(out, weights, l0_sum or None)``."""
    c = _compute_dtype(qa, ka, v, bias)
    score_a = torch.matmul(qa.to(c), ka.to(c).transpose(-1, -2)) * scale
    if bias is not None:
        score_a = score_a + bias.to(c)
    score_b = torch.matmul(qb.to(c), kb.to(c).transpose(-1, -2)) * scale
    T, S = score_a.shape[-2:]
    lead = torch.broadcast_shapes(*(x.shape[:-2] for x in (qa, ka, v, bias, valid) if x is not None and x.dim() >= 2))
    if training:
        u = counter_noise(seed, lead, T, S, c, qa.device)
        gates = hardkuma_gates(score_a, score_b, u, valid, support, ab_clamp, normalize == "sum")
        weights = normalize_gates(gates, "softmax", score_a, valid) if normalize == "softmax" else gates
    else:
        weights = hardkuma_weights_from_scores(
            score_a, score_b, valid, training=False, normalize=normalize, support=support, ab_clamp=ab_clamp
        )
    weights = weights.expand(tuple(lead) + (T, S))
    l0 = expected_l0_sum(score_a, score_b, valid, support, ab_clamp) if want_stats else None
    attn = weights
    if training and dropout_p > 0:
        keep = counter_noise(seed | (DROPOUT_STREAM << 32), lead, T, S, c, qa.device) >= dropout_p
        attn = weights * keep.to(c) * (1.0 / (1.0 - dropout_p))
    return torch.matmul(attn, v.to(c)), weights, l0


BACKENDS = ("auto", "triton", "reference")


def _triton_backend(backend, qa, ka, qb, kb, v, valid, bias, need_weights):
    """The Triton entry point this call goes to, or None for the reference (CPU streaming) path."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference" or (backend == "auto" and qa.device.type != "cuda"):
        return None
    if importlib.util.find_spec("triton") is None:
        if backend == "triton":
            raise ValueError('backend="triton" needs triton: pip install "hardkuma-attention[gpu]"')
        return None
    from . import triton_kernels

    why = triton_kernels.unsupported_reason(qa, ka, qb, kb, v, valid, bias, need_weights=need_weights)
    if why is not None:
        if backend == "triton":
            raise ValueError(f'backend="triton": {why}')
        return None
    return triton_kernels.scaled_dot_product_hardkuma_triton


def scaled_dot_product_hardkuma(
    qa: torch.Tensor, ka: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor, v: torch.Tensor, *,
    scale: float, valid: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
    is_causal: bool = False, training: bool = False, normalize: str = "none",
    support: Tuple[float, float] = DEFAULT_SUPPORT, ab_clamp: Tuple[float, float] = DEFAULT_AB_RANGE,
    dropout_p: float = 0.0, need_weights: bool = False, want_stats: bool = False, stats_key: Optional[str] = None,
    compile: Optional[bool] = None, generator: Optional[torch.Generator] = None,
    kernels: Optional[TileKernels] = None, block_q: Optional[int] = None, block_k: Optional[int] = None,
    backend: str = "auto",
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[AttentionStats]]:
    r"""HardKuma attention from per-head queries, keys and values: the one core path that
    :class:`~hardkuma_attention.HardKumaAttention`, the fairseq plugins and the integrations call.

    ``score_a = scale * qa @ ka^T + bias``, ``score_b = scale * qb @ kb^T``,
    ``a = clamp(softplus(score_a), *ab_clamp)``, ``b`` likewise; one gate per cell,
    ``z ~ HardKuma(a, b)`` in training, ``HardKuma(a, b).deterministic()`` otherwise; weights =
    ``normalize`` (see :func:`hardkuma_attention_weights`) of the masked gates, dropout
    ``dropout_p`` on the weights in training; ``out = weights @ v``.

    With ``need_weights=False`` this streams (:mod:`hardkuma_attention.streaming`): (query block
    x key block) tiles, nothing of size T x S allocated or saved, the backward recomputes the
    scores and regenerates the noise.  With ``need_weights=True`` the weights are materialised
    (differentiable) from the same noise, so both give the same values: the noise of cell
    ``(bh, i, j)`` is :func:`~hardkuma_attention.streaming.counter_uniform` of one seed per call
    drawn from ``generator`` in training (dropout: a second stream of the same seed).

    Shapes: ``qa`` (..., T, da), ``ka`` (..., S, da), ``qb`` (..., T, db), ``kb`` (..., S, db),
    ``v`` (..., S, dv); ``valid`` (bool, True = allowed) and ``bias`` (added to ``score_a``)
    broadcastable to (..., T, S); ``is_causal`` also disallows key ``j > i + S - T``
    (:func:`causal_valid`; the streaming path skips key tiles above that diagonal).  Disallowed
    cells are exactly 0, a fully disallowed row gives a zero output with finite gradients.  Gate
    math runs in float32 for float32/bfloat16/float16 inputs (float64 for float64); ``out`` and
    ``weights`` come back in the inputs' dtype.

    ``compile``: None (auto: compiled tile kernels for large calls when ``torch.compile`` works,
    else eager with a one-time warning), True or False; ``kernels`` (a :class:`TileKernels`)
    overrides it.  ``block_q`` / ``block_k``: tile sizes (results do not depend on them).
    ``backend``: ``"auto"`` (CUDA tensors go to the Triton kernels of
    :mod:`hardkuma_attention.triton_kernels` when triton is importable and the call is one they
    take, see ``triton_kernels.unsupported_reason``; everything else to the path above),
    ``"triton"`` (those kernels or a ``ValueError`` saying why not) or ``"reference"`` (never).

    Returns ``(out (..., T, dv), weights (..., T, S) or None, stats or None)``: ``weights`` only
    with ``need_weights``; the :class:`AttentionStats` (differentiable expected-L0 sum, valid
    cells, exactly non-zero cells) when ``want_stats`` or a :func:`collect_attention_stats`
    context is active, and then also handed to the active collectors.
    """
    options = dict(scale=scale, valid=valid, bias=bias, is_causal=is_causal, training=training, normalize=normalize,
                   support=support, ab_clamp=ab_clamp, dropout_p=dropout_p, need_weights=need_weights,
                   want_stats=want_stats, stats_key=stats_key, generator=generator)
    triton_path = _triton_backend(backend, qa, ka, qb, kb, v, valid, bias, need_weights)
    if triton_path is not None:
        return triton_path(qa, ka, qb, kb, v, **options)
    options["want_stats"], seed, options["dropout_p"] = prepare_call(normalize, dropout_p, training, want_stats,
                                                                     generator)
    del options["generator"], options["need_weights"]
    if need_weights:
        return _whole_map_call(qa, ka, qb, kb, v, seed=seed, **options)
    return _streaming_call(qa, ka, qb, kb, v, seed=seed, block_q=block_q, block_k=block_k,
                           kernels=kernels if kernels is not None else default_kernels(compile), **options)


def _whole_map_call(qa, ka, qb, kb, v, *, scale, valid, bias, is_causal, training, normalize, support, ab_clamp,
                    dropout_p, want_stats, stats_key, seed):
    """:func:`scaled_dot_product_hardkuma` with ``need_weights=True`` after the common checks
    (:func:`~hardkuma_attention.streaming.prepare_call`): the causal cells folded into ``valid``,
    the whole map, its statistics, results in the inputs' dtype."""
    if is_causal:
        c = causal_valid(qa.shape[-2], ka.shape[-2], qa.device)
        valid = c if valid is None else valid & c
    out, weights, l0 = _whole_map_attention(
        qa, ka, qb, kb, v, scale, valid, bias, training, normalize, support, ab_clamp, dropout_p, want_stats, seed
    )
    stats = gate_stats(l0, weights, valid, stats_key) if want_stats else None
    out_dtype = torch.promote_types(qa.dtype, v.dtype)
    return out.to(out_dtype), weights.to(out_dtype), reported(stats)


def _streaming_call(qa, ka, qb, kb, v, *, scale, valid, bias, is_causal, training, normalize, support, ab_clamp,
                    dropout_p, want_stats, stats_key, seed, block_q, block_k, kernels):
    """:func:`scaled_dot_product_hardkuma` with ``need_weights=False`` after the common checks:
    :func:`~hardkuma_attention.streaming.streaming_attention` and its statistics."""
    cfg = StreamConfig(
        scale=float(scale), normalize=normalize, training=bool(training), support=tuple(support),
        ab_clamp=tuple(ab_clamp), dropout_p=dropout_p, is_causal=bool(is_causal), want_stats=want_stats,
        seed=seed, block_q=block_q, block_k=block_k, kernels=kernels,
    )
    out, l0, nonzero, cells = streaming_attention(qa, ka, qb, kb, v, bias, valid, cfg=cfg)
    return out, None, reported(AttentionStats(l0, cells, nonzero, stats_key) if want_stats else None)
