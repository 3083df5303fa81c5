r"""Triton GPU kernels for HardKuma attention (forward and backward), O(T) memory.

The same tiled algorithm as :mod:`hardkuma_attention.streaming` (the CPU reference path), as
fused GPU kernels in the structure of FlashAttention-2: one program per (query block, batch x
head) loops over the key blocks; nothing of size ``T x S`` is ever written (except the gradient
of a ``bias`` that requires one).  The uniform noise of cell ``(bh, i, j)`` is the streaming
path's counter hash (MurmurHash3_x86_32 of ``(seed_hi, bh, i, j)`` with seed ``seed_lo``, its
top 23 bits as ``(bits + 1/2) 2^-23``), computed here with 32-bit unsigned integer operations, so
the same seed gives the same gates on the CPU and the GPU up to float rounding.

Per cell, with ``a = clamp(softplus(sa), ab_min, ab_max)``, ``b`` likewise::

    sa = scale qa_i . ka_j + bias_ij          sb = scale qb_i . kb_j
    training:  ls = log(u)/b, w = -expm1(ls), lk = log(w)/a, k = exp(lk), z = clamp(l + (r - l) k, 0, 1)
    eval:      z = HardKumaraswamy(a, b).deterministic()  (0 / 1 / the median l + (r - l)(1 - 2^(-1/b))^(1/a))
    p = z  (normalize "none", "sum"),  p = z exp(sa - m_i)  ("softmax", m_i the running row max)
    out_i = sum_j p_ij d_ij v_j / l_i,  l_i = sum_j p_ij (1 where 0; "none": 1),  d_ij the dropout factor
    stats: sum_allowed (1 - k0^a)^b (expected L0), #(z != 0), #allowed, per row then summed

Backward (three kernels as FlashAttention-2: ``D_i = g_i . out_i``, then one per
key block for ``dv, dka, dkb`` and one per query block for ``dqa, dqb``, both regenerating the
noise): ``dw_ij = d_ij g_i . v_j``, ``dp = (dw - D_i)/l_i`` (``dw`` for "none"), ``dz = dp``
(``dp exp(sa - m)`` and ``dsa += dp p`` for softmax), ``dsa = dz dz/dsa + g_L0 dL0/dsa``,
``dsb`` likewise, with the per-cell derivatives of :mod:`hardkuma_attention.streaming`.

Transcendental operations per cell, counted by running the kernels under the interpreter with
``exp``/``log``/division instrumented (``python benchmarks/gpu_attention.py --count-only``; each
is one special-function-unit instruction on NVIDIA GPUs, a division one reciprocal):

=====================================  =====  =====  ========
pass (per cell)                         exp    log   division
=====================================  =====  =====  ========
forward, training, none                  4      4       4
forward, training, softmax + stats       7      5       4
forward, eval, softmax + stats           9      5       4
backward, training, softmax + L0 grad   14     10      20
backward, eval, softmax + L0 grad       18     10      20
backward, training, atomic dq            7      5      10
=====================================  =====  =====  ========

(training forward: softplus of a and b = 2 exp + 2 log, ``log u``, ``expm1(ls)`` = exp + a
polynomial, ``log w``, ``exp lk``; ``log1p`` is ``log`` with Goldberg's correction.  The backward
counts both kernels, ``dk/dv`` and ``dq``, each of which recomputes the gate.  Softmax attention
needs one exp per cell: this kernel is bound by the special-function units, not the tensor cores.)

Supported: CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``, how the tests run them),
float32 / bfloat16 / float16 inputs (gate math and accumulation in float32), any head dims up to
256 (padded to a power of two >= 16; 32, 64, 128 are the tuned ones), at most two leading dims
(``(T, D)``, ``(H, T, D)`` or ``(B, H, T, D)``, broadcastable), ``valid`` / ``bias``
broadcastable to ``(B, H, T, S)`` (key padding ``(B, 1, 1, S)``, ``(T, S)``, per head),
``is_causal`` (bottom-right aligned as :func:`~hardkuma_attention.functional.causal_valid`; key
blocks above the diagonal are never visited), normalize "none" / "sum" / "softmax", training
and eval, dropout on the weights (its own counter stream, as the CPU path).  Not supported:
``need_weights=True`` (the weights are a ``T x S`` map: use the reference path) and float64.

This module imports ``triton``: the core imports it lazily, only for CUDA tensors and only when
``triton`` is installed (``pip install .[gpu]``); everything else depends on torch alone.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .config import DEFAULT_AB_RANGE
from .distributions import DEFAULT_SUPPORT
from .stats import AttentionStats, reported
from .streaming import DROPOUT_STREAM, check_call, prepare_call

__all__ = [
    "scaled_dot_product_hardkuma_triton",
    "hardkuma_attention_triton",
    "unsupported_reason",
    "interpreting",
    "KernelConfig",
]

_LN2 = 0.6931471805599453
_NORM_CODE = {"none": 0, "sum": 1, "softmax": 2}


#: Whether ``TRITON_INTERPRET=1`` was set when this module (and so its ``@triton.jit`` kernels)
#: was created: then the kernels run in Triton's interpreter on CPU tensors (the tests).
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreting() -> bool:
    """Whether the kernels run in Triton's interpreter (CPU tensors, for the tests)."""
    return _INTERPRETED


# ---------------------------------------------------------------------- counter noise (32-bit)


@triton.jit
def _rotl(x, r: tl.constexpr):
    return (x << r) | (x >> (32 - r))


@triton.jit
def _mix_k(k):
    """MurmurHash3 block scramble ``rotl(k c1, 15) c2`` (uint32, mod 2^32)."""
    return _rotl(k * 0xCC9E2D51, 15) * 0x1B873593


@triton.jit
def _mix_h(h, k):
    """MurmurHash3 block step ``rotl(h ^ mix_k(k), 13) 5 + 0xe6546b64``."""
    return _rotl(h ^ _mix_k(k), 13) * 5 + 0xE6546B64


@triton.jit
def _row_hash(h_seed, bh, offs_m):
    """The hash state after ``(seed_hi, bh, i)``: ``h_seed = mix_h(seed_lo, seed_hi)`` (int32
    bit pattern, from the host), ``offs_m`` the query indices."""
    h = _mix_h(h_seed.to(tl.uint32, bitcast=True), bh.to(tl.uint32))
    return _mix_h(h, offs_m.to(tl.uint32))


@triton.jit
def _uniform(hrow, kcol):
    """``u`` of cells ``(hrow (M, 1), kcol (1, N))`` (``kcol = mix_k(j)``): the last hash
    block, MurmurHash3's length word (16 bytes) and finaliser, top 23 bits."""
    h = _rotl(hrow ^ kcol, 13) * 5 + 0xE6546B64
    h = h ^ 16
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    h = h ^ (h >> 16)
    return ((h >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07


# ---------------------------------------------------------------------- elementwise math (fp32)


@triton.jit
def _expm1(x, ex):
    """``expm1(x)`` given ``ex = exp(x)``: Taylor polynomial (degree 9, relative error < 2e-8)
    for ``|x| < 1/2``, else ``ex - 1``."""
    p = 1.0 / 362880.0
    p = p * x + 1.0 / 40320.0
    p = p * x + 1.0 / 5040.0
    p = p * x + 1.0 / 720.0
    p = p * x + 1.0 / 120.0
    p = p * x + 1.0 / 24.0
    p = p * x + 1.0 / 6.0
    p = p * x + 0.5
    p = (p * x + 1.0) * x
    return tl.where(tl.abs(x) < 0.5, p, ex - 1.0)


@triton.jit
def _log1p_of(u, y):
    """``log1p(y)`` given ``u = 1 + y`` (rounded): ``log(u) y / (u - 1)`` (Goldberg)."""
    return tl.where(u == 1.0, y, tl.log(u) * (y / (u - 1.0)))


@triton.jit
def _log1mexp(x):
    """``(log(1 - e^x), e^x, expm1(x))`` for ``x < 0``, as the CPU path: ``log(-expm1(x))`` (far
    below ``-log 2`` the tiny result keeps only an absolute accuracy of ~float eps, harmless where
    it enters: ``exp(b L)`` and ``e L``)."""
    ex = tl.exp(x)
    em1 = _expm1(x, ex)
    return tl.log(-em1), ex, em1


@triton.jit
def _ab(s, amin, amax, GRAD: tl.constexpr):
    """``(clamp(softplus(s), amin, amax), its derivative or 0)`` (softplus threshold 20 as
    torch; the derivative ``sigmoid(s)`` where the clamp is inactive, only with ``GRAD``)."""
    e = tl.exp(tl.minimum(s, 20.0))
    u = 1.0 + e
    sp = tl.where(s > 20.0, s, _log1p_of(u, e))
    x = tl.minimum(tl.maximum(sp, amin), amax)
    if GRAD:
        d = tl.where(x == sp, tl.where(s > 20.0, 1.0, e / u), 0.0)
    else:
        d = 0.0
    return x, d


@triton.jit
def _kuma(a, b, log_u):
    """Kumaraswamy sample from ``log u`` with its shared logs: ``(k, log k, log s, w)``,
    ``s = u^(1/b)``, ``w = 1 - s``."""
    ls = log_u / b
    w = -_expm1(ls, tl.exp(ls))
    lk = tl.log(w) / a
    return tl.exp(lk), lk, ls, w


@triton.jit
def _eval_gate(a, b, e0, lo, hi, log_k1):
    """Deterministic gate ``(z, median selected, k, log k, log s, w)`` given ``e0 = 1 - P0``
    (the expected-L0 cell, shared with the statistics): 0 where ``P0 > P1``, 1 otherwise, the
    median (the Kuma sample at ``u = 1/2``) where ``Pc = (1 - P0) - P1`` exceeds both."""
    p1 = tl.exp(b * _log1mexp(a * log_k1)[0])
    p0 = 1.0 - e0
    pc = e0 - p1
    k, lk, ls, w = _kuma(a, b, -0.6931471805599453)
    med = (pc > p0) & (pc > p1)
    t = lo + (hi - lo) * k
    z = tl.where(med, tl.minimum(tl.maximum(t, 0.0), 1.0), tl.where(p1 >= p0, 1.0, 0.0))
    return z, med, k, lk, ls, w


@triton.jit
def _gate_fwd(sa, sb, hrow, kcol, lo, hi, amin, amax, log_k0, log_k1,
              TRAINING: tl.constexpr, WANT_STATS: tl.constexpr):
    """Gates ``z`` of a tile and the expected L0 of its cells (0.0 without ``WANT_STATS``)."""
    a = _ab(sa, amin, amax, False)[0]
    b = _ab(sb, amin, amax, False)[0]
    if TRAINING:
        k = _kuma(a, b, tl.log(_uniform(hrow, kcol)))[0]
        z = tl.minimum(tl.maximum(lo + (hi - lo) * k, 0.0), 1.0)
        if WANT_STATS:
            e = tl.exp(b * _log1mexp(a * log_k0)[0])
        else:
            e = 0.0
    else:
        e = tl.exp(b * _log1mexp(a * log_k0)[0])
        z = _eval_gate(a, b, e, lo, hi, log_k1)[0]
    return z, e


@triton.jit
def _keep(hdrop, kcol, p_drop):
    """Dropout factor ``1(u >= p) / (1 - p)`` from the dropout stream."""
    return tl.where(_uniform(hdrop, kcol) >= p_drop, 1.0 / (1.0 - p_drop), 0.0)


@triton.jit
def _gate_bwd(sa, sb, allowed, hrow, hdrop, kcol, m, Di, il, dw, g_l0, p_drop,
              lo, hi, amin, amax, log_k0, log_k1,
              TRAINING: tl.constexpr, NORM: tl.constexpr, WANT_L0: tl.constexpr, DROPOUT: tl.constexpr):
    """Per-cell backward: ``(dsa, dsb, w d)`` of a tile, ``dw = g_i . v_j`` (before dropout);
    ``m``, ``Di``, ``il`` are the row max, ``g_i . out_i`` and ``1 / l_i`` as (M, 1)."""
    a, da = _ab(sa, amin, amax, True)
    b, db = _ab(sb, amin, amax, True)
    L, ex0, em0 = _log1mexp(a * log_k0)  # the expected-L0 cell: eval gate and L0 gradient (else unused)
    e0 = tl.exp(b * L)
    if TRAINING:
        k, lk, ls, w = _kuma(a, b, tl.log(_uniform(hrow, kcol)))
        t = lo + (hi - lo) * k
        z = tl.minimum(tl.maximum(t, 0.0), 1.0)
        has_grad = allowed
    else:  # only the median cells have a gradient: the sample at u = 1/2, the same Jacobian
        z, med, k, lk, ls, w = _eval_gate(a, b, e0, lo, hi, log_k1)
        t = lo + (hi - lo) * k
        has_grad = allowed & med
    c = tl.where((t > 0.0) & (t < 1.0) & has_grad, (hi - lo) * k, 0.0)
    jzb = c * (1.0 - w) * ls / (a * b * tl.maximum(w, 1e-30)) * db
    jza = c * (-lk / a) * da
    z = tl.where(allowed, z, 0.0)
    if NORM == 2:
        ex = tl.where(allowed, tl.exp(sa - m), 0.0)
        p = z * ex
    else:
        ex = 0.0
        p = z
    if DROPOUT:
        keep = _keep(hdrop, kcol, p_drop)
        pd = p * keep
        dw = dw * keep
    else:
        pd = p
    if NORM == 0:
        dz = dw
        wd = pd
        extra = 0.0
    else:
        dp = (dw - Di) * il
        wd = pd * il
        if NORM == 2:
            dz = dp * ex
            extra = dp * p
        else:
            dz = dp
            extra = 0.0
    dsa = dz * jza + extra
    dsb = dz * jzb
    if WANT_L0:
        e = tl.where(allowed, e0 * g_l0, 0.0)
        dsa += e * b * (-log_k0) / (-em0 / ex0) * da  # expm1(-x) = -expm1(x) / exp(x)
        dsb += e * L * db
    return dsa, dsb, wd


# ---------------------------------------------------------------------- tile loads


@triton.jit
def _load_rows(ptr, offs, n, s_n, s_d, D: tl.constexpr, BD: tl.constexpr):
    """``(len(offs), BD)`` tile of rows ``offs`` of a (n, D) matrix, zero padded."""
    d = tl.arange(0, BD)
    return tl.load(ptr + offs[:, None] * s_n + d[None, :] * s_d, mask=(offs[:, None] < n) & (d[None, :] < D),
                   other=0.0)


@triton.jit
def _store_rows(ptr, x, offs, n, s_n, s_d, D: tl.constexpr, BD: tl.constexpr):
    d = tl.arange(0, BD)
    tl.store(ptr + offs[:, None] * s_n + d[None, :] * s_d, x, mask=(offs[:, None] < n) & (d[None, :] < D))


@triton.jit
def _add_rows(ptr, x, offs, n, D: tl.constexpr, BD: tl.constexpr):
    """``atomic_add`` of a (len(offs), BD) tile into rows ``offs`` of a contiguous (n, D) matrix."""
    d = tl.arange(0, BD)
    tl.atomic_add(ptr + offs[:, None] * D + d[None, :], x, mask=(offs[:, None] < n) & (d[None, :] < D))


@triton.jit
def _allowed(VALID, sv_t, sv_s, offs_m, offs_n, T, S, causal_off,
             HAS_VALID: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """Allowed cells of a tile; ``HAS_VALID``: 0 no mask, 1 a key mask (the same for every query:
    one (N,) load), 2 a full (T, S) mask."""
    ok = (offs_m[:, None] < T) & (offs_n[None, :] < S)
    if IS_CAUSAL:
        ok = ok & (offs_n[None, :] <= offs_m[:, None] + causal_off)
    if HAS_VALID == 1:
        vk = tl.load(VALID + offs_n * sv_s, mask=offs_n < S, other=0)
        ok = ok & (vk != 0)[None, :]
    elif HAS_VALID == 2:
        vv = tl.load(VALID + offs_m[:, None] * sv_t + offs_n[None, :] * sv_s, mask=ok, other=0)
        ok = ok & (vv != 0)
    return ok


@triton.jit
def _dot(a, b, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    """``a @ b`` accumulated in float32; ``DOT_F32``: operands upcast first (only under the
    interpreter for bfloat16, whose ``dot`` of Triton 3.9 multiplies the raw bfloat16 bits)."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _scores(qa, qb, ka, kb, BIAS, offs_m, offs_n, T, S, sbi_t, sbi_s, scale,
            HAS_BIAS: tl.constexpr, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    """``(sa, sb)`` of a tile (float32) from the query tiles (M, D) and key tiles (N, D);
    ``HAS_BIAS`` 0 / 1 (a key bias, one (N,) load) / 2 (a full (T, S) bias)."""
    sa = _dot(qa, tl.trans(ka), PREC, DOT_F32) * scale
    sb = _dot(qb, tl.trans(kb), PREC, DOT_F32) * scale
    if HAS_BIAS == 1:
        sa += tl.load(BIAS + offs_n * sbi_s, mask=offs_n < S, other=0.0).to(tl.float32)[None, :]
    elif HAS_BIAS == 2:
        inb = (offs_m[:, None] < T) & (offs_n[None, :] < S)
        sa += tl.load(BIAS + offs_m[:, None] * sbi_t + offs_n[None, :] * sbi_s, mask=inb, other=0.0).to(tl.float32)
    return sa, sb


@triton.jit
def _head_pointers(bh, H, QA, KA, QB, KB, V, BIAS, VALID, sqa_b, sqa_h, ska_b, ska_h, sqb_b, sqb_h,
                   skb_b, skb_h, sv_b, sv_h, sbi_b, sbi_h, sva_b, sva_h):
    """The input pointers moved to head ``bh = b H + h`` (64-bit offsets: (B, H, T, S) masks can
    exceed 2^31 elements), and ``(b, h)``."""
    b_i = (bh // H).to(tl.int64)
    h_i = (bh % H).to(tl.int64)
    return (QA + b_i * sqa_b + h_i * sqa_h, KA + b_i * ska_b + h_i * ska_h, QB + b_i * sqb_b + h_i * sqb_h,
            KB + b_i * skb_b + h_i * skb_h, V + b_i * sv_b + h_i * sv_h, BIAS + b_i * sbi_b + h_i * sbi_h,
            VALID + b_i * sva_b + h_i * sva_h, b_i, h_i)


@triton.jit
def _row_hashes(h_seed, h_drop, bh, offs_m):
    """The gate and dropout streams' hash states of rows ``offs_m``, as (M, 1)."""
    return _row_hash(h_seed, bh, offs_m)[:, None], _row_hash(h_drop, bh, offs_m)[:, None]


@triton.jit
def _key_end(pid_m, S, causal_off, BLOCK_M: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """One past the last key a query block visits (causal: key blocks above the diagonal are skipped)."""
    end_n = S
    if IS_CAUSAL:
        end_n = tl.minimum(S, pid_m * BLOCK_M + BLOCK_M + causal_off)
    return end_n


@triton.jit
def _grad_l0(GL0, WANT_L0: tl.constexpr):
    """The gradient of the expected-L0 sum (a scalar; 0.0 without ``WANT_L0``)."""
    g_l0 = 0.0
    if WANT_L0:
        g_l0 = tl.load(GL0)
    return g_l0


# ---------------------------------------------------------------------- forward kernel


@triton.jit
def _fwd_weights(z, sa, ok, acc, m_i, m_safe, l_i, NORM: tl.constexpr):
    """A tile's weights ``p`` before dropout and the updated running state ``(acc, m, m_safe,
    l)``: "softmax" keeps the running row max ``m`` (``m_safe``: 0 where still ``-inf``) and
    rescales ``acc`` and ``l`` by ``exp(m_old - m_new)`` (FlashAttention's online softmax);
    ``l`` sums ``p`` unless ``NORM`` is "none"."""
    if NORM == 2:
        m_new = tl.maximum(m_i, tl.max(tl.where(ok, sa, float("-inf")), 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        acc = acc * alpha[:, None]
        l_i = l_i * alpha
        m_i = m_new
        p = z * tl.where(ok, tl.exp(sa - m_safe[:, None]), 0.0)
    else:
        p = z
    if NORM != 0:
        l_i += tl.sum(p, 1)
    return p, acc, m_i, m_safe, l_i


@triton.jit
def _add_pv(acc, pd, V, offs_n, S, sv_n, sv_d, DV: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
            DOT_F32: tl.constexpr, SKIP_ZERO: tl.constexpr):
    """``acc + pd @ v`` of a key block; ``SKIP_ZERO``: nothing loaded or multiplied when every
    weight of the tile is exactly 0 (AdaSplash: such a tile adds nothing)."""
    if SKIP_ZERO:
        if tl.max(pd) > 0.0:
            v = _load_rows(V, offs_n, S, sv_n, sv_d, DV, BDV)
            acc += _dot(pd.to(v.dtype), v, PREC, DOT_F32)
    else:
        v = _load_rows(V, offs_n, S, sv_n, sv_d, DV, BDV)
        acc += _dot(pd.to(v.dtype), v, PREC, DOT_F32)
    return acc


@triton.jit
def _store_row_state(ML, STATS, bh, offs_m, T, m_safe, l_i, l0_i, nz_i, n_i,
                     NORM: tl.constexpr, WANT_STATS: tl.constexpr):
    """The forward's per-row outputs: row max and normaliser into ``ML`` (2, BH, T) (not for
    "none"), expected L0 / non-zero / allowed counts into ``STATS`` (3, BH, T)."""
    row = bh * T + offs_m
    rmask = offs_m < T
    n_rows = tl.num_programs(1) * T
    if NORM != 0:
        tl.store(ML + row, m_safe, mask=rmask)
        tl.store(ML + n_rows + row, l_i, mask=rmask)
    if WANT_STATS:
        tl.store(STATS + row, l0_i, mask=rmask)
        tl.store(STATS + n_rows + row, nz_i, mask=rmask)
        tl.store(STATS + 2 * n_rows + row, n_i, mask=rmask)




@triton.jit(do_not_specialize=["h_seed", "h_drop"])
def _fwd_kernel(QA, KA, QB, KB, V, BIAS, VALID, OUT, ML, STATS,
                sqa_b, sqa_h, sqa_t, sqa_d, ska_b, ska_h, ska_n, ska_d,
                sqb_b, sqb_h, sqb_t, sqb_d, skb_b, skb_h, skb_n, skb_d,
                sv_b, sv_h, sv_n, sv_d, sbi_b, sbi_h, sbi_t, sbi_s,
                sva_b, sva_h, sva_t, sva_s, so_b, so_h, so_t, so_d,
                H, T, S, scale, causal_off, h_seed, h_drop, p_drop, lo, hi, amin, amax, log_k0, log_k1,
                DA: tl.constexpr, DB: tl.constexpr, DV: tl.constexpr,
                BDA: tl.constexpr, BDB: tl.constexpr, BDV: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_VALID: tl.constexpr, IS_CAUSAL: tl.constexpr,
                TRAINING: tl.constexpr, NORM: tl.constexpr, WANT_STATS: tl.constexpr,
                DROPOUT: tl.constexpr, SKIP_ZERO: tl.constexpr, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    """One program: query rows ``[pid_m BLOCK_M, +BLOCK_M)`` of head ``bh``; writes ``out``,
    the row max / normaliser (``ML``: (2, BH, T)) and the row statistics (``STATS``: (3, BH, T))."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    QA, KA, QB, KB, V, BIAS, VALID, b_i, h_i = _head_pointers(
        bh, H, QA, KA, QB, KB, V, BIAS, VALID, sqa_b, sqa_h, ska_b, ska_h, sqb_b, sqb_h, skb_b, skb_h,
        sv_b, sv_h, sbi_b, sbi_h, sva_b, sva_h)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    qa = _load_rows(QA, offs_m, T, sqa_t, sqa_d, DA, BDA)
    qb = _load_rows(QB, offs_m, T, sqb_t, sqb_d, DB, BDB)
    hrow, hdrop = _row_hashes(h_seed, h_drop, bh, offs_m)
    acc = tl.zeros([BLOCK_M, BDV], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    m_safe = tl.zeros([BLOCK_M], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    l0_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    nz_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    n_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(0, _key_end(pid_m, S, causal_off, BLOCK_M, IS_CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ok = _allowed(VALID, sva_t, sva_s, offs_m, offs_n, T, S, causal_off, HAS_VALID, IS_CAUSAL)
        ka = _load_rows(KA, offs_n, S, ska_n, ska_d, DA, BDA)
        kb = _load_rows(KB, offs_n, S, skb_n, skb_d, DB, BDB)
        sa, sb = _scores(qa, qb, ka, kb, BIAS, offs_m, offs_n, T, S, sbi_t, sbi_s, scale, HAS_BIAS, PREC, DOT_F32)
        kcol = _mix_k(offs_n.to(tl.uint32))[None, :]
        z, e = _gate_fwd(sa, sb, hrow, kcol, lo, hi, amin, amax, log_k0, log_k1, TRAINING, WANT_STATS)
        z = tl.where(ok, z, 0.0)
        p, acc, m_i, m_safe, l_i = _fwd_weights(z, sa, ok, acc, m_i, m_safe, l_i, NORM)
        if DROPOUT:
            pd = p * _keep(hdrop, kcol, p_drop)
        else:
            pd = p
        if WANT_STATS:
            l0_i += tl.sum(tl.where(ok, e, 0.0), 1)
            nz_i += tl.sum((z != 0.0).to(tl.float32), 1)
            n_i += tl.sum(ok.to(tl.float32), 1)
        acc = _add_pv(acc, pd, V, offs_n, S, sv_n, sv_d, DV, BDV, PREC, DOT_F32, SKIP_ZERO)
    if NORM != 0:
        acc = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    OUT += b_i * so_b + h_i * so_h
    _store_rows(OUT, acc.to(OUT.dtype.element_ty), offs_m, T, so_t, so_d, DV, BDV)
    _store_row_state(ML, STATS, bh, offs_m, T, m_safe, l_i, l0_i, nz_i, n_i, NORM, WANT_STATS)


# ---------------------------------------------------------------------- backward kernels


@triton.jit
def _delta_kernel(OUT, GO, DELTA, H, T, so_b, so_h, so_t, so_d, sg_b, sg_h, sg_t, sg_d,
                  DV: tl.constexpr, BDV: tl.constexpr, BLOCK_M: tl.constexpr):
    """``D_i = g_i . out_i`` in float32 (``DELTA``: (BH, T))."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b_i = (bh // H).to(tl.int64)  # 64-bit base offsets: (B, H, T, S) masks can exceed 2^31 elements
    h_i = (bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o = _load_rows(OUT + b_i * so_b + h_i * so_h, offs_m, T, so_t, so_d, DV, BDV).to(tl.float32)
    g = _load_rows(GO + b_i * sg_b + h_i * sg_h, offs_m, T, sg_t, sg_d, DV, BDV).to(tl.float32)
    tl.store(DELTA + bh * T + offs_m, tl.sum(o * g, 1), mask=offs_m < T)


@triton.jit
def _row_vectors(ML, DELTA, bh, offs_m, T, n_rows, NORM: tl.constexpr):
    """``(m, D, 1/l)`` of rows ``offs_m`` as (M, 1) (zeros / ones where unused)."""
    rmask = offs_m < T
    row = bh * T + offs_m
    if NORM != 0:
        m = tl.load(ML + row, mask=rmask, other=0.0)
        l = tl.load(ML + n_rows + row, mask=rmask, other=1.0)
        il = 1.0 / tl.where(l > 0.0, l, 1.0)
        Di = tl.load(DELTA + row, mask=rmask, other=0.0)
    else:
        m = tl.zeros_like(offs_m.to(tl.float32))
        il = m + 1.0
        Di = m
    return m[:, None], Di[:, None], il[:, None]


@triton.jit
def _add_dv(dv, wd, g, PREC: tl.constexpr, DOT_F32: tl.constexpr, SKIP_ZERO: tl.constexpr):
    """``dv + wd^T @ g`` of a query block (``SKIP_ZERO``: skipped when every weight is 0)."""
    if SKIP_ZERO:
        if tl.max(tl.abs(wd)) > 0.0:
            dv += _dot(tl.trans(wd.to(g.dtype)), g, PREC, DOT_F32)
    else:
        dv += _dot(tl.trans(wd.to(g.dtype)), g, PREC, DOT_F32)
    return dv


@triton.jit
def _add_dq_atomic(DQA, DQB, dsa, dsb, ka, kb, bh, offs_m, T, scale, DA: tl.constexpr, DB: tl.constexpr,
                   BDA: tl.constexpr, BDB: tl.constexpr, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    """``dq`` of a tile added into the float32 (BH, T, D) buffers with atomics (``atomic_dq``:
    the gate is recomputed once per tile, not twice)."""
    _add_rows(DQA + bh.to(tl.int64) * T * DA, _dot(dsa.to(ka.dtype), ka, PREC, DOT_F32) * scale,
              offs_m, T, DA, BDA)
    _add_rows(DQB + bh.to(tl.int64) * T * DB, _dot(dsb.to(kb.dtype), kb, PREC, DOT_F32) * scale,
              offs_m, T, DB, BDB)


@triton.jit(do_not_specialize=["h_seed", "h_drop"])
def _bwd_kv_kernel(QA, KA, QB, KB, V, BIAS, VALID, GO, ML, DELTA, GL0, DKA, DKB, DV, DQA, DQB,
                   sqa_b, sqa_h, sqa_t, sqa_d, ska_b, ska_h, ska_n, ska_d,
                   sqb_b, sqb_h, sqb_t, sqb_d, skb_b, skb_h, skb_n, skb_d,
                   sv_b, sv_h, sv_n, sv_d, sbi_b, sbi_h, sbi_t, sbi_s,
                   sva_b, sva_h, sva_t, sva_s, sg_b, sg_h, sg_t, sg_d,
                   H, T, S, scale, causal_off, h_seed, h_drop, p_drop, lo, hi, amin, amax, log_k0, log_k1,
                   DA: tl.constexpr, DB: tl.constexpr, DV_: tl.constexpr,
                   BDA: tl.constexpr, BDB: tl.constexpr, BDV: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   HAS_BIAS: tl.constexpr, HAS_VALID: tl.constexpr, IS_CAUSAL: tl.constexpr,
                   TRAINING: tl.constexpr, NORM: tl.constexpr, WANT_L0: tl.constexpr,
                   DROPOUT: tl.constexpr, SKIP_ZERO: tl.constexpr, PREC: tl.constexpr, DOT_F32: tl.constexpr,
                   ATOMIC_DQ: tl.constexpr):
    """One program: key rows ``[pid_n BLOCK_N, +BLOCK_N)`` of head ``bh``; loops over the query
    blocks and writes ``dka``, ``dkb`` and ``dv`` (contiguous (BH, S, D), their own dtype)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    QA, KA, QB, KB, V, BIAS, VALID, b_i, h_i = _head_pointers(
        bh, H, QA, KA, QB, KB, V, BIAS, VALID, sqa_b, sqa_h, ska_b, ska_h, sqb_b, sqb_h, skb_b, skb_h,
        sv_b, sv_h, sbi_b, sbi_h, sva_b, sva_h)
    GO += b_i * sg_b + h_i * sg_h
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ka = _load_rows(KA, offs_n, S, ska_n, ska_d, DA, BDA)
    kb = _load_rows(KB, offs_n, S, skb_n, skb_d, DB, BDB)
    v = _load_rows(V, offs_n, S, sv_n, sv_d, DV_, BDV)
    kcol = _mix_k(offs_n.to(tl.uint32))[None, :]
    dka = tl.zeros([BLOCK_N, BDA], dtype=tl.float32)
    dkb = tl.zeros([BLOCK_N, BDB], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BDV], dtype=tl.float32)
    g_l0 = _grad_l0(GL0, WANT_L0)
    n_rows = tl.num_programs(1) * T
    start_m = 0
    if IS_CAUSAL:
        start_m = tl.maximum(pid_n * BLOCK_N - causal_off, 0) // BLOCK_M * BLOCK_M
    for sm in range(start_m, T, BLOCK_M):
        offs_m = sm + tl.arange(0, BLOCK_M)
        ok = _allowed(VALID, sva_t, sva_s, offs_m, offs_n, T, S, causal_off, HAS_VALID, IS_CAUSAL)
        qa = _load_rows(QA, offs_m, T, sqa_t, sqa_d, DA, BDA)
        qb = _load_rows(QB, offs_m, T, sqb_t, sqb_d, DB, BDB)
        sa, sb = _scores(qa, qb, ka, kb, BIAS, offs_m, offs_n, T, S, sbi_t, sbi_s, scale, HAS_BIAS, PREC, DOT_F32)
        g = _load_rows(GO, offs_m, T, sg_t, sg_d, DV_, BDV)
        dw = _dot(g, tl.trans(v), PREC, DOT_F32)
        m, Di, il = _row_vectors(ML, DELTA, bh, offs_m, T, n_rows, NORM)
        hrow, hdrop = _row_hashes(h_seed, h_drop, bh, offs_m)
        dsa, dsb, wd = _gate_bwd(sa, sb, ok, hrow, hdrop, kcol, m, Di, il, dw, g_l0, p_drop,
                                 lo, hi, amin, amax, log_k0, log_k1, TRAINING, NORM, WANT_L0, DROPOUT)
        dv = _add_dv(dv, wd, g, PREC, DOT_F32, SKIP_ZERO)
        dka += _dot(tl.trans(dsa.to(qa.dtype)), qa, PREC, DOT_F32)
        dkb += _dot(tl.trans(dsb.to(qb.dtype)), qb, PREC, DOT_F32)
        if ATOMIC_DQ:  # dq here too (float32 atomics): the gate is recomputed once, not twice
            _add_dq_atomic(DQA, DQB, dsa, dsb, ka, kb, bh, offs_m, T, scale, DA, DB, BDA, BDB, PREC, DOT_F32)
    _store_rows(DKA + bh * S * DA, (dka * scale).to(DKA.dtype.element_ty), offs_n, S, DA, 1, DA, BDA)
    _store_rows(DKB + bh * S * DB, (dkb * scale).to(DKB.dtype.element_ty), offs_n, S, DB, 1, DB, BDB)
    _store_rows(DV + bh * S * DV_, dv.to(DV.dtype.element_ty), offs_n, S, DV_, 1, DV_, BDV)


@triton.jit(do_not_specialize=["h_seed", "h_drop"])
def _bwd_q_kernel(QA, KA, QB, KB, V, BIAS, VALID, GO, ML, DELTA, GL0, DQA, DQB, DBIAS,
                  sqa_b, sqa_h, sqa_t, sqa_d, ska_b, ska_h, ska_n, ska_d,
                  sqb_b, sqb_h, sqb_t, sqb_d, skb_b, skb_h, skb_n, skb_d,
                  sv_b, sv_h, sv_n, sv_d, sbi_b, sbi_h, sbi_t, sbi_s,
                  sva_b, sva_h, sva_t, sva_s, sg_b, sg_h, sg_t, sg_d,
                  H, T, S, scale, causal_off, h_seed, h_drop, p_drop, lo, hi, amin, amax, log_k0, log_k1,
                  DA: tl.constexpr, DB: tl.constexpr, DV_: tl.constexpr,
                  BDA: tl.constexpr, BDB: tl.constexpr, BDV: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  HAS_BIAS: tl.constexpr, HAS_VALID: tl.constexpr, IS_CAUSAL: tl.constexpr,
                  TRAINING: tl.constexpr, NORM: tl.constexpr, WANT_L0: tl.constexpr,
                  DROPOUT: tl.constexpr, WANT_DBIAS: tl.constexpr, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    """One program: query rows ``[pid_m BLOCK_M, +BLOCK_M)`` of head ``bh``; loops over the key
    blocks and writes ``dqa``, ``dqb`` (contiguous (BH, T, D), their own dtype) and, if asked,
    ``dsa`` into the (BH, T, S) ``DBIAS``."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    QA, KA, QB, KB, V, BIAS, VALID, b_i, h_i = _head_pointers(
        bh, H, QA, KA, QB, KB, V, BIAS, VALID, sqa_b, sqa_h, ska_b, ska_h, sqb_b, sqb_h, skb_b, skb_h,
        sv_b, sv_h, sbi_b, sbi_h, sva_b, sva_h)
    GO += b_i * sg_b + h_i * sg_h
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    qa = _load_rows(QA, offs_m, T, sqa_t, sqa_d, DA, BDA)
    qb = _load_rows(QB, offs_m, T, sqb_t, sqb_d, DB, BDB)
    g = _load_rows(GO, offs_m, T, sg_t, sg_d, DV_, BDV)
    n_rows = tl.num_programs(1) * T
    m, Di, il = _row_vectors(ML, DELTA, bh, offs_m, T, n_rows, NORM)
    hrow, hdrop = _row_hashes(h_seed, h_drop, bh, offs_m)
    g_l0 = _grad_l0(GL0, WANT_L0)
    dqa = tl.zeros([BLOCK_M, BDA], dtype=tl.float32)
    dqb = tl.zeros([BLOCK_M, BDB], dtype=tl.float32)
    for start_n in range(0, _key_end(pid_m, S, causal_off, BLOCK_M, IS_CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ok = _allowed(VALID, sva_t, sva_s, offs_m, offs_n, T, S, causal_off, HAS_VALID, IS_CAUSAL)
        ka = _load_rows(KA, offs_n, S, ska_n, ska_d, DA, BDA)
        kb = _load_rows(KB, offs_n, S, skb_n, skb_d, DB, BDB)
        v = _load_rows(V, offs_n, S, sv_n, sv_d, DV_, BDV)
        sa, sb = _scores(qa, qb, ka, kb, BIAS, offs_m, offs_n, T, S, sbi_t, sbi_s, scale, HAS_BIAS, PREC, DOT_F32)
        dw = _dot(g, tl.trans(v), PREC, DOT_F32)
        kcol = _mix_k(offs_n.to(tl.uint32))[None, :]
        dsa, dsb, wd = _gate_bwd(sa, sb, ok, hrow, hdrop, kcol, m, Di, il, dw, g_l0, p_drop,
                                 lo, hi, amin, amax, log_k0, log_k1, TRAINING, NORM, WANT_L0, DROPOUT)
        dqa += _dot(dsa.to(ka.dtype), ka, PREC, DOT_F32)
        dqb += _dot(dsb.to(kb.dtype), kb, PREC, DOT_F32)
        if WANT_DBIAS:
            inb = (offs_m[:, None] < T) & (offs_n[None, :] < S)
            tl.store(DBIAS + bh.to(tl.int64) * T * S + offs_m[:, None] * S + offs_n[None, :], dsa, mask=inb)
    _store_rows(DQA + bh * T * DA, (dqa * scale).to(DQA.dtype.element_ty), offs_m, T, DA, 1, DA, BDA)
    _store_rows(DQB + bh * T * DB, (dqb * scale).to(DQB.dtype.element_ty), offs_m, T, DB, 1, DB, BDB)


# ---------------------------------------------------------------------- host side


@dataclass(frozen=True)
class KernelConfig:
    """Launch parameters (results do not depend on them beyond float rounding).

    ``block_m`` x ``block_n``, ``num_warps``, ``num_stages``: the query x key tile and launch of
    the forward kernel; ``bwd_*`` the same for both backward kernels (the ``dk/dv`` kernel owns
    ``bwd_block_n`` keys and loops over query blocks of ``bwd_block_m``, the ``dq`` kernel the
    other way round); ``skip_zero_tiles``: skip the ``P V`` (forward) and ``P^T dO`` (backward)
    products of tiles whose weights are all exactly 0; ``atomic_dq``: the ``dk/dv`` kernel also
    adds each tile's ``dq`` into a float32 buffer with atomics and the ``dq`` kernel is not run
    (half the backward's transcendental ops; not bit-reproducible run to run; not used when a
    bias needs its gradient).

    The defaults are the largest tiles whose training kernels (bf16, head dim 64, softmax,
    statistics, key padding, causal) compile for sm_90 without register spills (head dim 128:
    88 bytes in the dk/dv kernel; ``python benchmarks/gpu_attention.py --compile-only 90``); the gate math keeps
    many float32 values per cell live, so the tiles are smaller than FlashAttention's."""

    block_m: int = 64
    block_n: int = 32
    num_warps: int = 4
    num_stages: int = 2
    bwd_block_m: int = 64
    bwd_block_n: int = 16
    bwd_num_warps: int = 4
    bwd_num_stages: int = 2
    skip_zero_tiles: bool = True
    atomic_dq: bool = False

    @staticmethod
    def default(head_dim: int) -> "KernelConfig":
        if interpreting():
            return KernelConfig(block_m=16, block_n=16, num_warps=1, num_stages=1, bwd_block_m=16, bwd_block_n=16,
                                bwd_num_warps=1, bwd_num_stages=1)
        return KernelConfig()

    def launch(self, backward: bool) -> dict:
        if backward:
            return dict(BLOCK_M=self.bwd_block_m, BLOCK_N=self.bwd_block_n, num_warps=self.bwd_num_warps,
                        num_stages=self.bwd_num_stages)
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, num_warps=self.num_warps, num_stages=self.num_stages)


@dataclass(frozen=True)
class _Call:
    """Everything but the tensors of one call."""

    scale: float
    normalize: str
    training: bool
    support: Tuple[float, float]
    ab_clamp: Tuple[float, float]
    dropout_p: float
    is_causal: bool
    want_stats: bool
    seed: int
    kernel: KernelConfig

    def scalars(self, T: int, S: int):
        """The kernels' scalar arguments after ``(H, T, S)``."""
        lo, hi = float(self.support[0]), float(self.support[1])
        h_gate = _s32(_seed_state(self.seed))
        h_drop = _s32(_seed_state(self.seed | (DROPOUT_STREAM << 32)))
        return (float(self.scale), S - T, h_gate, h_drop, float(self.dropout_p), lo, hi,
                float(self.ab_clamp[0]), float(self.ab_clamp[1]),
                math.log(-lo / (hi - lo)), math.log((1.0 - lo) / (hi - lo)))


def _seed_state(seed: int) -> int:
    """``mix_h(seed_lo, seed_hi)``: the first MurmurHash3 step, the same for every cell."""
    from .streaming import _mix_h

    return int(_mix_h(seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF))


def _s32(x: int) -> int:
    return x - (1 << 32) if x >= (1 << 31) else x


def _pow2(d: int) -> int:
    return max(16, 1 << max(0, d - 1).bit_length())


def _lead(*xs) -> Tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*(x.shape[:-2] for x in xs if x is not None)))


def _at_least_2d(x):
    return None if x is None else x.reshape((1,) * max(0, 2 - x.dim()) + tuple(x.shape))


def unsupported_reason(qa, ka, qb, kb, v, valid=None, bias=None, *, need_weights: bool = False) -> Optional[str]:
    """Why these inputs cannot run on the Triton kernels (None: they can)."""
    xs = (qa, ka, qb, kb, v)
    if need_weights:
        return "need_weights=True materialises the (T, S) weights: use the reference path"
    if any(x.dtype not in (torch.float32, torch.bfloat16, torch.float16) for x in xs):
        return f"dtypes {sorted({str(x.dtype) for x in xs})}: the kernels take float32, bfloat16, float16"
    devices = {x.device for x in xs + (valid, bias) if x is not None}
    if len(devices) != 1:
        return f"inputs on several devices {sorted(map(str, devices))}"
    if qa.device.type != "cuda" and not interpreting():
        return f"device {qa.device}: the kernels run on CUDA (or under TRITON_INTERPRET=1)"
    if any(x.dim() < 2 for x in xs):
        return "q/k/v must be at least 2-D (..., length, head dim)"
    if len(_lead(*xs, _at_least_2d(valid), _at_least_2d(bias))) > 2:
        return "more than two leading dims (batch, heads)"
    if max(qa.shape[-1], qb.shape[-1], v.shape[-1]) > 256:
        return "head dim above 256"
    if qa.shape[-1] != ka.shape[-1] or qb.shape[-1] != kb.shape[-1]:
        return "query and key head dims differ"
    return None


@dataclass
class _Prepared:
    """Inputs as (B, H, N, D) views of the compute dtype (broadcast dims with stride 0)."""

    lead: Tuple[int, ...]
    B: int
    H: int
    T: int
    S: int
    xs: tuple  # qa, ka, qb, kb, v
    bias: Optional[torch.Tensor]
    valid: Optional[torch.Tensor]


def _prepare(qa, ka, qb, kb, v, bias, valid) -> _Prepared:
    bias, valid = _at_least_2d(bias), _at_least_2d(valid)
    lead = _lead(qa, ka, qb, kb, v, bias, valid)
    B, H = ((1, 1) + lead)[-2:]
    T, S = qa.shape[-2], ka.shape[-2]
    dtype = qa.dtype
    for x in (ka, qb, kb, v):
        dtype = torch.promote_types(dtype, x.dtype)
    xs = tuple(x.to(dtype).expand((B, H) + tuple(x.shape[-2:])) for x in (qa, ka, qb, kb, v))
    if bias is not None:
        bias = bias.expand(B, H, T, S)
    if valid is not None:
        valid = valid.to(torch.bool).expand(B, H, T, S).view(torch.uint8)
    return _Prepared(lead, B, H, T, S, xs, bias, valid)


def _mask_args(p: _Prepared, dummy):
    """``(BIAS, VALID, bias strides, valid strides)`` (a dummy pointer and zero strides if absent)."""
    bias = p.bias if p.bias is not None else dummy
    valid = p.valid if p.valid is not None else dummy
    sb = p.bias.stride() if p.bias is not None else (0, 0, 0, 0)
    sv = p.valid.stride() if p.valid is not None else (0, 0, 0, 0)
    return bias, valid, sb, sv


def _mask_kind(x) -> int:
    """0: no mask / bias; 1: the same for every query (an expanded (..., 1, S) key mask: one
    (N,) load per key block); 2: a full (..., T, S) one."""
    if x is None:
        return 0
    return 1 if x.stride(2) == 0 else 2


def _flags(p: _Prepared, c: _Call, backward: bool = False):
    qa, _, qb, _, v = p.xs
    da, db, dv = qa.shape[-1], qb.shape[-1], v.shape[-1]
    return dict(DA=da, DB=db, BDA=_pow2(da), BDB=_pow2(db), BDV=_pow2(dv),
                HAS_BIAS=_mask_kind(p.bias), HAS_VALID=_mask_kind(p.valid), IS_CAUSAL=c.is_causal,
                TRAINING=c.training, NORM=_NORM_CODE[c.normalize],
                DROPOUT=c.training and c.dropout_p > 0, PREC="ieee" if qa.dtype == torch.float32 else "tf32",
                DOT_F32=interpreting() and qa.dtype == torch.bfloat16, **c.kernel.launch(backward))


def _strides(*xs):
    return [s for x in xs for s in x.stride()]


def _forward(p: _Prepared, c: _Call):
    """Launch the forward kernel: ``(out (B, H, T, DV), ML (2, BH, T), STATS (3, BH, T))``."""
    qa, ka, qb, kb, v = p.xs
    dev, BH = qa.device, p.B * p.H
    out = torch.empty((p.B, p.H, p.T, v.shape[-1]), dtype=v.dtype, device=dev)
    ml = torch.empty((2, BH, p.T), dtype=torch.float32, device=dev)
    stats = torch.zeros((3, BH, p.T), dtype=torch.float32, device=dev)
    bias, valid, sb, sv = _mask_args(p, ml)
    grid = (triton.cdiv(p.T, c.kernel.block_m), BH)
    _fwd_kernel[grid](qa, ka, qb, kb, v, bias, valid, out, ml, stats,
                      *_strides(qa, ka, qb, kb, v), *sb, *sv, *out.stride(),
                      p.H, p.T, p.S, *c.scalars(p.T, p.S), DV=v.shape[-1],
                      WANT_STATS=c.want_stats, SKIP_ZERO=c.kernel.skip_zero_tiles, **_flags(p, c))
    return out, ml, stats


def _grad_buffer(x, p: _Prepared, n: int):
    """Where the kernels write the gradient of input ``x``: (B, H, n, D) contiguous, in ``x``'s
    dtype, or float32 when ``x`` is broadcast over (B, H) (summed down afterwards)."""
    full = math.prod(x.shape[:-2]) == p.B * p.H
    return torch.empty((p.B, p.H, n, x.shape[-1]), dtype=x.dtype if full else torch.float32, device=x.device)


def _backward(p: _Prepared, c: _Call, inputs, out, ml, grad_out, grad_l0, want_dbias: bool):
    """Launch the backward kernels: ``(dqa, dka, dqb, dkb, dv, dbias)`` as (B, H, N, D) (``dbias``
    float32 (B, H, T, S) or None); ``inputs`` the original ``(qa, ka, qb, kb, v)``."""
    qa, ka, qb, kb, v = p.xs
    dev, BH, f = qa.device, p.B * p.H, _flags(p, c, backward=True)
    g = grad_out.to(v.dtype).reshape(p.B, p.H, p.T, v.shape[-1])
    delta = torch.empty(BH * p.T, dtype=torch.float32, device=dev)
    _delta_kernel[(triton.cdiv(p.T, 64), BH)](
        out, g, delta, p.H, p.T, *out.stride(), *g.stride(), DV=v.shape[-1], BDV=f["BDV"], BLOCK_M=64)
    want_l0 = c.want_stats and grad_l0 is not None
    gl0 = grad_l0.detach().float().reshape(1).contiguous() if want_l0 else delta
    dqa, dka, dqb, dkb, dv = (_grad_buffer(x, p, n) for x, n in zip(inputs, (p.T, p.S, p.T, p.S, p.S)))
    atomic = c.kernel.atomic_dq and not want_dbias
    if atomic:
        dqa = torch.zeros(dqa.shape, dtype=torch.float32, device=dev)
        dqb = torch.zeros(dqb.shape, dtype=torch.float32, device=dev)
    dbias = torch.zeros((p.B, p.H, p.T, p.S), dtype=torch.float32, device=dev) if want_dbias else delta
    bias, valid, sb, sv = _mask_args(p, delta)
    common = (*_strides(qa, ka, qb, kb, v), *sb, *sv, *g.stride(), p.H, p.T, p.S, *c.scalars(p.T, p.S))
    _bwd_kv_kernel[(triton.cdiv(p.S, c.kernel.bwd_block_n), BH)](
        qa, ka, qb, kb, v, bias, valid, g, ml, delta, gl0, dka, dkb, dv, dqa, dqb, *common, DV_=v.shape[-1],
        WANT_L0=want_l0, SKIP_ZERO=c.kernel.skip_zero_tiles, ATOMIC_DQ=atomic, **f)
    if not atomic:
        _bwd_q_kernel[(triton.cdiv(p.T, c.kernel.bwd_block_m), BH)](
            qa, ka, qb, kb, v, bias, valid, g, ml, delta, gl0, dqa, dqb, dbias, *common, DV_=v.shape[-1],
            WANT_L0=want_l0, WANT_DBIAS=want_dbias, **f)
    return dqa, dka, dqb, dkb, dv, dbias if want_dbias else None


def _sum_to(grad, x):
    """A (B, H, N, D) gradient summed down to the shape of the input ``x`` it belongs to."""
    if x is None or grad is None:
        return None
    return grad.sum_to_size(x.shape).to(x.dtype) if grad.shape != x.shape else grad.to(x.dtype)


def _empty(p: _Prepared) -> bool:
    return p.B * p.H == 0 or p.T == 0 or p.S == 0


class _TritonHardKuma(torch.autograd.Function):
    """``(out, l0_sum, nonzero, cells)``; saves the inputs, ``out`` and two float32 numbers per
    row (the row max and normaliser)."""

    @staticmethod
    def forward(ctx, qa, ka, qb, kb, v, bias, valid, call: _Call):
        p = _prepare(qa, ka, qb, kb, v, bias, valid)
        res_dtype = torch.promote_types(v.dtype, qa.dtype)
        dev = qa.device
        if _empty(p):
            out = torch.zeros(p.lead + (p.T, v.shape[-1]), dtype=res_dtype, device=dev)
            ml = None
            l0 = nz = cells = torch.zeros((), dtype=torch.float32, device=dev)
        else:
            out4, ml, stats = _forward(p, call)
            out = out4.reshape(p.lead + (p.T, v.shape[-1])).to(res_dtype)
            tot = stats.sum((1, 2), dtype=torch.float64)
            l0, nz, cells = tot[0].float(), tot[1].float(), tot[2].float()
        ctx.call = call
        ctx.save_for_backward(qa, ka, qb, kb, v, bias, valid, out, ml)
        ctx.mark_non_differentiable(nz, cells)
        return out, l0, nz, cells

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_l0, _nz, _cells):
        qa, ka, qb, kb, v, bias, valid, out, ml = ctx.saved_tensors
        p = _prepare(qa, ka, qb, kb, v, bias, valid)
        want_dbias = bias is not None and ctx.needs_input_grad[5]
        if _empty(p):
            grads = [torch.zeros_like(x) for x in (qa, ka, qb, kb, v)]
            return (*grads, torch.zeros_like(bias) if want_dbias else None, None, None)
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        out4 = out.reshape(p.B, p.H, p.T, -1)
        grads = _backward(p, ctx.call, (qa, ka, qb, kb, v), out4, ml, grad_out, grad_l0, want_dbias)
        res = tuple(_sum_to(g, x) for g, x in zip(grads[:5], (qa, ka, qb, kb, v)))
        gbias = _sum_to(grads[5], bias) if want_dbias else None
        return (*res, gbias, None, None)


def hardkuma_attention_triton(qa, ka, qb, kb, v, bias=None, valid=None, *, call: _Call):
    """``(out, l0_sum, nonzero, cells)`` through the kernels (see the module docstring); the
    same contract as :func:`hardkuma_attention.streaming.streaming_attention`."""
    return _TritonHardKuma.apply(qa, ka, qb, kb, v, bias, valid, call)


def scaled_dot_product_hardkuma_triton(
    qa: torch.Tensor, ka: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor, v: torch.Tensor, *,
    scale: float, valid: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
    is_causal: bool = False, training: bool = False, normalize: str = "none",
    support: Tuple[float, float] = DEFAULT_SUPPORT, ab_clamp: Tuple[float, float] = DEFAULT_AB_RANGE,
    dropout_p: float = 0.0, need_weights: bool = False, want_stats: bool = False, stats_key: Optional[str] = None,
    compile: Optional[bool] = None, generator: Optional[torch.Generator] = None, kernels=None,
    block_q: Optional[int] = None, block_k: Optional[int] = None, kernel: Optional[KernelConfig] = None,
    backend: str = "triton",
) -> Tuple[torch.Tensor, None, Optional[AttentionStats]]:
    r""":func:`hardkuma_attention.functional.scaled_dot_product_hardkuma` on the Triton kernels:
    the same arguments and results (the CPU path's ``compile``, ``kernels``, ``block_q`` and
    ``block_k``, and ``backend``, are accepted and ignored, so a caller can pass its arguments on unchanged;
    ``kernel`` sets the launch parameters), the same seed drawn from ``generator`` in training
    and so the same gates as the CPU path up to float rounding.  ``need_weights=True`` and float64 raise ``ValueError``
    (:func:`unsupported_reason`): the caller uses the reference path for those.

    Returns ``(out (..., T, dv), None, stats or None)``.
    """
    check_call(normalize, dropout_p)
    why = unsupported_reason(qa, ka, qb, kb, v, valid, bias, need_weights=need_weights)
    if why is not None:
        raise ValueError(f"Triton HardKuma attention: {why}")
    want_stats, seed, dropout_p = prepare_call(normalize, dropout_p, training, want_stats, generator)
    call = _Call(
        scale=float(scale), normalize=normalize, training=bool(training), support=tuple(support),
        ab_clamp=tuple(ab_clamp), dropout_p=dropout_p, is_causal=bool(is_causal), want_stats=want_stats, seed=seed,
        kernel=kernel or KernelConfig.default(max(qa.shape[-1], qb.shape[-1], v.shape[-1])),
    )
    out, l0, nonzero, cells = hardkuma_attention_triton(qa, ka, qb, kb, v, bias, valid, call=call)
    return out, None, reported(AttentionStats(l0, cells, nonzero, stats_key) if want_stats else None)
