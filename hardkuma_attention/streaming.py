r"""Streaming (tiled) HardKuma attention: ``out = normalize(gates) @ v`` in O(T) memory.

:func:`streaming_attention` works through (query block x key block) tiles.  Per tile the two
score maps are computed by ``matmul``, turned into gates by an elementwise kernel and multiplied
into the values; nothing of size ``T x S`` is ever allocated or saved.  The backward pass
recomputes the scores and **regenerates the noise** from a counter-based hash
(:func:`counter_uniform`), so the forward saves only the inputs, the output and O(T) row
statistics, as memory-efficient softmax attention (FlashAttention) does.

Per cell (``a = clamp(softplus(sa), ab_min, ab_max)``, ``b`` likewise, ``u`` the counter noise)::

    training:  ls = log(u) / b,  w = -expm1(ls),  k = exp(log(w) / a),  z = clamp(l + (r - l) k, 0, 1)
    eval:      z = HardKumaraswamy(a, b).deterministic()   (no noise)
    p = z                         normalize "none" / "sum"
    p = z exp(sa - m_i)           normalize "softmax" (m_i: running row max over allowed cells)
    w = p / l_i                   l_i = sum_j p_ij (1 where it is 0); "none": l_i = 1
    out_i = sum_j w_ij d_ij v_j   d_ij = keep_ij / (1 - dropout_p) (training), else 1

With an online row max the running sums are rescaled by ``exp(m_old - m_new)`` when ``m`` grows.
Backward (``g_i`` = dL/d out_i, ``D_i = g_i . out_i``)::

    dw_ij = d_ij g_i . v_j,   dp_ij = (dw_ij - D_i) / l_i
    dz = dp (none/sum),  dz = dp exp(sa - m) and dsa += dp p (softmax)
    dsa = dz dz/dsa + g_L0 dL0/dsa,  dsb likewise (the gate of a cell depends only on its scores:
    the Jacobian is diagonal, dz/dsa and dz/dsb are per-cell factors)

with ``dz/dsa = (r - l) (-k log(k) / a) sigmoid(sa)`` and ``dz/dsb = (r - l) k s log(s) / (a b w)
sigmoid(sb)`` where ``0 < z < 1`` and the clamp of ``a`` (``b``) is inactive, else 0
(``s = 1 - w = u^(1/b)``, ``log s = ls``: the logarithms of the sample are shared, nothing is
recovered from ``z``).  Expected L0 per allowed cell ``(1 - k0^a)^b = exp(b L)``,
``L = log(1 - k0^a)``, with ``d/da = exp(b L) b (-log k0) / expm1(-a log k0)``, ``d/db = exp(b L) L``.
The eval gate is the median (the sample at ``u = 1/2``) where ``P(0 < z < 1) > max(P0, P1)``, else
the constant ``1(P1 >= P0)``: its Jacobian is the training one on the median cells, 0 elsewhere.

Shapes inside: queries, keys and values are flattened to contiguous ``(N, n, d)`` (``N`` = batch x
heads after broadcasting); the elementwise kernels see ``(*lead, t, s)`` views so that ``bias`` and
``valid`` broadcast as given.  Tile sizes (:func:`_tile_sizes`): ``block_q`` query rows and
``block_k`` keys (default up to 128 each: the score products have an inner dim of only
``head_dim / 2``, and on the CPU a product of few rows runs several times slower per flop), and as
many elements of the first leading (batch) dim as fit :attr:`TileKernels.eager_block_cells` /
``compiled_block_cells`` (the batch chunks run one after another); results do not depend on them
beyond float round-off, and the gates not at all.  The kernels are plain functions of tensors that
:class:`TileKernels` runs eagerly or through ``torch.compile``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .config import DEFAULT_AB_RANGE, check_normalize
from .distributions import DEFAULT_SUPPORT
from .stats import stats_requested

__all__ = [
    "counter_uniform",
    "murmur3_row_hash",
    "TileKernels",
    "default_kernels",
    "StreamConfig",
    "streaming_attention",
    "draw_seed",
    "check_call",
    "prepare_call",
    "counter_noise",
    "DROPOUT_STREAM",
]

# ---------------------------------------------------------------------- counter-based noise

_M32 = 0xFFFFFFFF


def _s32(c: int) -> int:
    """Signed representative of a 32-bit constant: ``x * _s32(c)`` has the low 32 bits of
    ``x * c`` and never overflows int64 for ``0 <= x < 2^32``."""
    return c - (1 << 32) if c >= (1 << 31) else c


_C1, _C2 = _s32(0xCC9E2D51), _s32(0x1B873593)
_F1, _F2 = _s32(0x85EBCA6B), _s32(0xC2B2AE35)
_N = _s32(0xE6546B64)
#: Bit 31 of ``seed_hi`` selects the dropout stream (seeds are drawn below 2^63).
DROPOUT_STREAM = 1 << 31


def _rotl32(x, r: int):
    return ((x << r) & _M32) | (x >> (32 - r))


def _mix_k(k):
    """MurmurHash3 block scramble: ``rotl(k * c1, 15) * c2`` (mod 2^32)."""
    return (_rotl32((k * _C1) & _M32, 15) * _C2) & _M32


def _mix_h(h, k):
    """MurmurHash3 block step: ``h = rotl(h ^ mix_k(k), 13) * 5 + 0xe6546b64`` (mod 2^32)."""
    return (_rotl32(h ^ _mix_k(k), 13) * 5 + _N) & _M32


def _fmix32(h):
    h = h ^ (h >> 16)
    h = (h * _F1) & _M32
    h = h ^ (h >> 13)
    h = (h * _F2) & _M32
    return h ^ (h >> 16)


def murmur3_row_hash(seed: int, bh, i):
    """The MurmurHash3 state after the first three key words ``(seed_hi, bh, i)`` (per row)."""
    seed_lo, seed_hi = seed & _M32, (seed >> 32) & _M32
    return _mix_h(_mix_h(_mix_h(seed_lo, seed_hi), bh), i)


def _cell_bits(hrow, kcol):
    """Finish the hash with the last word ``j`` (``kcol = mix_k(j)`` precomputed per column)."""
    h = (_rotl32(hrow ^ kcol, 13) * 5 + _N) & _M32
    return _fmix32(h ^ 16)


_MANTISSA = {torch.float64: 52, torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}


def _mantissa(dtype: torch.dtype) -> int:
    return min(_MANTISSA[dtype], 32)


def _bits_to_uniform(bits, dtype: torch.dtype):
    m = _mantissa(dtype)
    return ((bits >> (32 - m)).to(dtype) + 0.5) * (2.0 ** -m)


def counter_uniform(seed: int, bh, i, j, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Uniform noise in (0, 1) as a pure function of ``(seed, bh, i, j)``.

    ``h = MurmurHash3_x86_32(key = (seed_hi, bh, i, j) as four little-endian uint32 words,
    seed = seed_lo)`` with ``seed_lo = seed mod 2^32``, ``seed_hi = floor(seed / 2^32) mod 2^32``;
    then ``u = (floor(h / 2^(32 - m)) + 1/2) / 2^m`` with ``m = min(mantissa bits of dtype, 32)``
    (23 for float32, 32 for float64), so ``2^-(m+1) <= u <= 1 - 2^-(m+1)``, exactly representable.

    Only 32-bit unsigned operations (multiplication mod 2^32, xor, shifts, rotations, addition),
    here on int64 tensors masked to 32 bits, so a GPU kernel can regenerate the same bits.
    ``bh``, ``i``, ``j`` are integer tensors (or ints) that broadcast together; ``bh`` is the flat
    index of the (batch, head) pair, ``i`` the query and ``j`` the key position.
    """
    as_t = lambda x: torch.as_tensor(x, dtype=torch.int64)  # noqa: E731
    hrow = murmur3_row_hash(int(seed), as_t(bh), as_t(i))
    return _bits_to_uniform(_cell_bits(hrow, _mix_k(as_t(j))), dtype)


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """One 63-bit seed per call from the torch generator (``torch.manual_seed`` / ``generator=``
    reproduce a run)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, (1 << 63) - 1, (), generator=generator, device=device))


def check_call(normalize: str, dropout_p: float) -> None:
    """``ValueError`` unless ``normalize`` is a mode and ``0 <= dropout_p < 1``."""
    check_normalize(normalize)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")


def prepare_call(normalize: str, dropout_p: float, training: bool, want_stats: bool,
                 generator: Optional[torch.Generator] = None) -> Tuple[bool, int, float]:
    """The checks and draws every attention call makes before any work (the reference path and
    the Triton kernels alike): ``(want_stats, seed, dropout_p)``.  ``want_stats`` is also True
    inside a :func:`~hardkuma_attention.collect_attention_stats` context; in training one seed is
    drawn from ``generator`` (:func:`draw_seed`), else seed 0 and no dropout."""
    check_call(normalize, dropout_p)
    want_stats = bool(want_stats) or stats_requested()
    seed = draw_seed(generator) if training else 0
    return want_stats, seed, float(dropout_p) if training else 0.0


# ---------------------------------------------------------------------- elementwise tile kernels
#
# Written with in-place ops on fresh tile-sized intermediates: in eager mode every allocation
# costs about as much as the arithmetic; torch.compile fuses the same code into one loop.


def _as_int32(x):
    """32-bit values held in int64 as int32 tensors of the same bits (two's complement)."""
    return None if x is None else torch.where(x >= 1 << 31, x - (1 << 32), x).to(torch.int32)


def _srl(h, r: int):
    """Logical right shift of int32 ``h`` (``>>`` is arithmetic: clear the copied sign bits)."""
    return (h >> r) & ((1 << (32 - r)) - 1)


def _hash_uniform_int32(h, m: int, dtype):
    """(``m < 32``: float32 and narrower) The steps of :func:`_hash_uniform` on int32 states (multiplication and addition wrap mod 2^32,
    the same bits; half the memory traffic of int64 and vectorised multiplies: ~2.5x faster eager)."""
    t = _srl(h, 19)
    h <<= 13
    h |= t  # rotl(h, 13)
    h *= 5
    h += _N
    h ^= 16  # the key length in bytes
    h ^= _srl(h, 16)  # fmix32
    h *= _F1
    h ^= _srl(h, 13)
    h *= _F2
    h ^= _srl(h, 16)
    u = _srl(h, 32 - m).to(dtype)
    u += 0.5
    u *= 2.0 ** -m
    return u


def _hash_uniform(hrow, kcol, dtype):
    """:func:`counter_uniform` of a tile from the row states ``hrow`` (..., t, 1) and the column
    keys ``kcol`` (s,), in place on one int64 tile (one temporary per shift); int32 states (the
    eager kernels', :func:`_as_int32`) take :func:`_hash_uniform_int32`, with the same bits."""
    m = _mantissa(dtype)
    h = hrow ^ kcol
    if h.dtype == torch.int32:
        return _hash_uniform_int32(h, m, dtype)
    t = h >> 19
    h <<= 13
    h |= t
    h &= _M32  # rotl(h, 13)
    h *= 5
    h += _N
    h ^= 16  # the key length in bytes
    h &= _M32
    h ^= h >> 16  # fmix32
    h *= _F1
    h &= _M32
    h ^= h >> 13
    h *= _F2
    h &= _M32
    h ^= h >> 16
    h >>= 32 - m
    u = h.to(dtype)
    u += 0.5
    u *= 2.0 ** -m
    return u


def _param_grad(s, amin: float, amax: float):
    """``a = clamp(softplus(s), amin, amax)`` and ``da/ds`` (``sigmoid(s)``, 0 where clamped)."""
    sp = F.softplus(s)
    a = sp.clamp(amin, amax)
    return a, torch.sigmoid(s).mul_(a == sp)


def _kuma_from_log_u(a, b, lu, lo: float, hi: float):
    """``(t, k, lk, ls, w)`` from ``log u`` (consumed in place): ``ls = log(u)/b``,
    ``w = -expm1(ls)``, ``lk = log(w)/a``, ``k = exp(lk)``, ``t = l + (r - l) k``."""
    ls = lu.div_(b)
    w = torch.expm1(ls).neg_()
    lk = torch.log(w).div_(a)
    k = torch.exp(lk)
    return (k * (hi - lo)).add_(lo), k, lk, ls, w


def _gate_jacobian(t, k, lk, ls, w, a, b, da_ds, db_ds, valid, lo: float, hi: float):
    """``(z, dz/dsa, dz/dsb)`` per cell: ``dk/da = -k log(k)/a``, ``dk/db = k s log(s)/(a b w)``
    (``s = 1 - w``), times ``r - l`` where ``0 < t < 1`` (and allowed), times ``da/dsa`` / ``db/dsb``."""
    inside = (t > 0.0) & (t < 1.0)
    z = t.clamp_(0.0, 1.0)
    if valid is not None:
        z = z.mul_(valid)
        inside &= valid
    c = k.mul_(hi - lo).mul_(inside)
    s = torch.neg(w).add_(1.0)
    jb = ls.mul_(s).div_(w.clamp_min_(1e-30)).div_(a * b).mul_(c).mul_(db_ds)
    ja = lk.div_(a).neg_().mul_(c).mul_(da_ds)
    return z, ja, jb


def _log1mexp(x):
    """``log(1 - e^x)`` for ``x < 0`` as ``log(-expm1(x))``: two transcendentals instead of the four
    of the branch-free :func:`~hardkuma_attention.distributions.log1mexp` (which evaluates both
    branches).  Far below ``-log 2`` it loses the tiny result's relative precision (absolute error
    ~ float eps): harmless here, where it only enters ``exp(b L)`` and ``e L``."""
    return torch.log(torch.expm1(x).neg_())


def _l0_cells(a, b, log_k0: float):
    """``(1 - k0^a)^b`` and ``L = log(1 - k0^a)``."""
    L = _log1mexp(a * log_k0)
    return torch.exp(b * L), L


def _l0_score_grads(a, b, da_ds, db_ds, valid, g_l0, log_k0: float):
    """Gradient of ``g_l0 * sum_allowed (1 - k0^a)^b`` w.r.t. the scores:
    ``d/da = e b (-log k0) / expm1(-a log k0)``, ``d/db = e L`` with ``e = exp(b L)``."""
    e, L = _l0_cells(a, b, log_k0)
    e = e.mul_(g_l0)
    if valid is not None:
        e = e.mul_(valid)
    la = (e * b).mul_(-log_k0).div_(torch.expm1(a * -log_k0)).mul_(da_ds)
    return la, L.mul_(e).mul_(db_ds)


def _keep(hdrop, kcol, p_drop: float, dtype):
    """Dropout factor ``1(u >= p) / (1 - p)`` from the dropout noise stream."""
    u = _hash_uniform(hdrop, kcol, dtype)
    return (u >= p_drop).to(dtype).mul_(1.0 / (1.0 - p_drop))


def _softmax_factor(sa, m):
    """``exp(sa - m)`` for the online-softmax weights; ``min(., 0)`` keeps disallowed cells (whose
    gate is 0, and whose score may exceed the row max over allowed cells) finite."""
    return (sa - m).clamp_max_(0.0).exp_()


def _stats_tile(z, l0c, valid):
    """(sum of the expected-L0 cells over allowed cells, count of non-zero gates), float32."""
    if valid is not None:
        l0c = l0c.mul_(valid)
    return l0c.sum(), torch.count_nonzero(z).to(torch.float32)


def _finish_forward(z, sa, m, hdrop, kcol, p_drop: float):
    """``(p, p d)``: ``p = z`` or ``z exp(sa - m)``; ``d`` the dropout factor."""
    p = z if m is None else z * _softmax_factor(sa, m)
    return p, (p if hdrop is None else p * _keep(hdrop, kcol, p_drop, p.dtype))


def _fwd_train_tile(sa, sb, hrow, kcol, valid, m, hdrop, lo: float, hi: float, amin: float, amax: float,
                    log_k0: float, p_drop: float, want_stats: bool):
    """Training tile: sampled gates -> ``(p, p d, l0 sum, non-zero count)``."""
    a = F.softplus(sa).clamp_(amin, amax)
    b = F.softplus(sb).clamp_(amin, amax)
    u = _hash_uniform(hrow, kcol, sa.dtype)
    z = u.log_().div_(b).expm1_().neg_().log_().div_(a).exp_().mul_(hi - lo).add_(lo).clamp_(0.0, 1.0)
    if valid is not None:
        z = z.mul_(valid)
    stats = _stats_tile(z, _l0_cells(a, b, log_k0)[0], valid) if want_stats else (None, None)
    return _finish_forward(z, sa, m, hdrop, kcol, p_drop) + stats


def _eval_gate_parts(sa, sb, lo: float, hi: float, amin: float, amax: float, log_k0: float):
    """Deterministic gate (:meth:`HardKumaraswamy.deterministic`): the median ``t`` (the sample at
    ``u = 1/2``) where ``Pc > max(P0, P1)``, else ``1(P1 >= P0)``.  Returns
    ``(choice, t, k, lk, ls, w, e0, a, b)``: ``choice`` is 2 where the median is taken, else the
    discrete value; ``e0 = 1 - P0`` (the expected-L0 cell)."""
    a = F.softplus(sa).clamp_(amin, amax)
    b = F.softplus(sb).clamp_(amin, amax)
    e0 = _log1mexp(a * log_k0).mul_(b).exp_()  # 1 - P0
    p1 = _log1mexp(a * math.log((1.0 - lo) / (hi - lo))).mul_(b).exp_()  # P1
    p0, pc = torch.neg(e0).add_(1.0), e0 - p1
    choice = torch.where((pc > p0) & (pc > p1), 2.0, (p1 >= p0).to(sa.dtype))
    lu = torch.full_like(a, -math.log(2.0))
    return (choice,) + _kuma_from_log_u(a, b, lu, lo, hi) + (e0, a, b)


def _eval_gate(sa, sb, lo: float, hi: float, amin: float, amax: float, log_k0: float):
    """``(z, e0)``: the values of :func:`_eval_gate_parts` (bit for bit) in fewer passes over the
    tile, nothing kept for a backward: 13 transcendentals per cell, softplus of ``sa`` and ``sb``
    (``exp``, ``log1p`` each), ``1 - P0`` and ``P1`` (``expm1``, ``log``, ``exp`` each) and the
    median ``(1 - 2^(-1/b))^(1/a)`` (``expm1``, ``log``, ``exp``)."""
    a = F.softplus(sa).clamp_(amin, amax)
    b = F.softplus(sb).clamp_(amin, amax)
    e0 = (a * log_k0).expm1_().neg_().log_().mul_(b).exp_()  # 1 - P0
    p1 = (a * math.log((1.0 - lo) / (hi - lo))).expm1_().neg_().log_().mul_(b).exp_()  # P1
    p0, pc = torch.neg(e0).add_(1.0), e0 - p1
    median = (pc > p0) & (pc > p1)
    t = torch.full_like(a, -math.log(2.0)).div_(b).expm1_().neg_().log_().div_(a).exp_()
    t = t.mul_(hi - lo).add_(lo).clamp_(0.0, 1.0)
    return torch.where(median, t, (p1 >= p0).to(sa.dtype)), e0


def _fwd_eval_tile(sa, sb, valid, m, lo: float, hi: float, amin: float, amax: float, log_k0: float,
                   want_stats: bool):
    """Eval tile: deterministic gates -> ``(p, p, l0 sum, non-zero count)``."""
    z, e0 = _eval_gate(sa, sb, lo, hi, amin, amax, log_k0)
    if valid is not None:
        z = z.mul_(valid)
    stats = _stats_tile(z, e0, valid) if want_stats else (None, None)
    return _finish_forward(z, sa, m, None, None, 0.0) + stats


def _dz_tile(z, sa, m, dw, D, inv_l, hdrop, kcol, p_drop: float):
    """``(dz, dsa_extra, w d)`` of a tile from ``dw = g_i . v_j`` (a fresh tile, used in place):
    ``dp = (dw d - D) / l``, ``dz = dp`` or ``dp exp(sa - m)``; ``dsa_extra = dp p`` (softmax)."""
    e = None if m is None else _softmax_factor(sa, m)
    p = z if e is None else z * e
    pd = p
    if hdrop is not None:
        keep = _keep(hdrop, kcol, p_drop, dw.dtype)
        pd, dw = p * keep, dw.mul_(keep)
    if inv_l is None:  # normalize "none"
        return dw, None, pd
    dp = dw.sub_(D).mul_(inv_l)
    wd = pd * inv_l
    if e is None:
        return dp, None, wd
    extra = dp * p
    return dp.mul_(e), extra, wd


def _score_grads(ja, jb, dz, extra, a, b, da_ds, db_ds, valid, g_l0, log_k0: float):
    dsa, dsb = ja.mul_(dz), jb.mul_(dz)
    if extra is not None:
        dsa += extra
    if g_l0 is not None:
        la, lb = _l0_score_grads(a, b, da_ds, db_ds, valid, g_l0, log_k0)
        dsa += la
        dsb += lb
    return dsa, dsb


def _bwd_train_tile(sa, sb, hrow, kcol, valid, m, hdrop, dw, D, inv_l, g_l0, lo: float, hi: float,
                    amin: float, amax: float, log_k0: float, p_drop: float):
    """Training tile backward: ``(dsa, dsb, w d)`` with the noise regenerated."""
    a, da_ds = _param_grad(sa, amin, amax)
    b, db_ds = _param_grad(sb, amin, amax)
    lu = _hash_uniform(hrow, kcol, sa.dtype).log_()
    t, k, lk, ls, w = _kuma_from_log_u(a, b, lu, lo, hi)
    z, ja, jb = _gate_jacobian(t, k, lk, ls, w, a, b, da_ds, db_ds, valid, lo, hi)
    dz, extra, wd = _dz_tile(z, sa, m, dw, D, inv_l, hdrop, kcol, p_drop)
    return _score_grads(ja, jb, dz, extra, a, b, da_ds, db_ds, valid, g_l0, log_k0) + (wd,)


def _bwd_eval_tile(sa, sb, valid, m, dw, D, inv_l, g_l0, lo: float, hi: float, amin: float, amax: float,
                   log_k0: float):
    """Eval tile backward: only the median cells have a gradient (the discrete values are
    constants); the median is the Kuma sample at ``u = 1/2``, so its Jacobian is the training one."""
    choice, t, k, lk, ls, w, _, a, b = _eval_gate_parts(sa, sb, lo, hi, amin, amax, log_k0)
    da_ds = _param_grad(sa, amin, amax)[1]
    db_ds = _param_grad(sb, amin, amax)[1]
    median = choice == 2.0
    zm, ja, jb = _gate_jacobian(t, k, lk, ls, w, a, b, da_ds, db_ds, median, lo, hi)
    z = torch.where(median, zm, choice)
    if valid is not None:
        z = z.mul_(valid)
        ja, jb = ja.mul_(valid), jb.mul_(valid)
    dz, extra, wd = _dz_tile(z, sa, m, dw, D, inv_l, None, None, 0.0)
    return _score_grads(ja, jb, dz, extra, a, b, da_ds, db_ds, valid, g_l0, log_k0) + (wd,)


# ---------------------------------------------------------------------- kernel selection


def _probe_compiler() -> bool:
    """Whether ``torch.compile`` (inductor, a C++ compiler on CPU) works here: compile and run a
    two-op function once."""
    try:
        f = torch.compile(lambda x: torch.exp(x) * 2.0, dynamic=False)
        return bool(torch.allclose(f(torch.zeros(4)), torch.full((4,), 2.0)))
    except Exception:  # noqa: BLE001 - any failure means: no compiled kernels here
        return False


class TileKernels:
    """Runs the per-tile elementwise kernels eagerly or through ``torch.compile``.

    Args:
        compile: ``None`` ("auto", the default): compiled kernels for calls of at least
            ``min_compile_cells`` cells (batch x heads x T x S) when a probe (one tiny compiled
            function, run once per object) shows that ``torch.compile`` works, else eager with a
            one-time warning; ``True``: compiled whenever the probe passes; ``False``: eager.
        min_compile_cells: smaller calls stay eager in auto mode (compiling costs seconds).
        eager_block_cells / compiled_block_cells: cells per tile (batch x heads x rows x keys).

    The object caches the probe's answer and the compiled functions; pass one explicitly
    (``kernels=``) or let :func:`default_kernels` hand out a shared one per ``compile`` value.
    Nothing process-wide is changed.
    """

    def __init__(self, compile: Optional[bool] = None, min_compile_cells: int = 1 << 20,
                 eager_block_cells: int = 1 << 18, compiled_block_cells: int = 1 << 20):
        if compile not in (None, True, False):
            raise ValueError(f"compile must be None (auto), True or False, got {compile!r}")
        self.compile = compile
        self.min_compile_cells = int(min_compile_cells)
        self.eager_block_cells = int(eager_block_cells)
        self.compiled_block_cells = int(compiled_block_cells)
        self.works: Optional[bool] = None  # probe result, None until probed
        self._compiled: Dict[Callable, Callable] = {}
        self._warned = False

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"HardKuma attention: {why}; using the eager tile kernels (slower). "
                          "Pass compile=False to silence this.", RuntimeWarning, stacklevel=4)

    def use_compiled(self, cells: int) -> bool:
        """Whether a call of ``cells`` cells runs compiled kernels (probes on first need)."""
        if self.compile is False or (self.compile is None and cells < self.min_compile_cells):
            return False
        if self.works is None:
            self.works = _probe_compiler()
        if not self.works:
            self._warn("torch.compile does not work here (no working C++ compiler?)")
        return self.works

    def block_cells(self, compiled: bool) -> int:
        return self.compiled_block_cells if compiled else self.eager_block_cells

    def run(self, fn: Callable, compiled: bool, *args):
        """``fn(*args)``, through its compiled version when ``compiled`` (falling back to eager,
        with the one-time warning, if compiling fails)."""
        if not compiled or not self.works:
            return fn(*args)
        if fn not in self._compiled:
            self._compiled[fn] = torch.compile(fn, dynamic=True)
        try:
            return self._compiled[fn](*args)
        except Exception as e:  # noqa: BLE001 - an inductor failure: eager gives the same values
            self.works = False
            self._warn(f"compiling {fn.__name__} failed ({type(e).__name__})")
            return fn(*args)


_DEFAULT_KERNELS: Dict[Optional[bool], TileKernels] = {}


def default_kernels(compile: Optional[bool] = None) -> TileKernels:
    """The shared :class:`TileKernels` for ``compile`` (created on first use)."""
    if compile not in _DEFAULT_KERNELS:
        _DEFAULT_KERNELS[compile] = TileKernels(compile)
    return _DEFAULT_KERNELS[compile]


# ---------------------------------------------------------------------- tiling


@dataclass(frozen=True)
class StreamConfig:
    """Everything but the tensors of one :func:`streaming_attention` call."""

    scale: float
    normalize: str = "none"
    training: bool = False
    support: Tuple[float, float] = DEFAULT_SUPPORT
    ab_clamp: Tuple[float, float] = DEFAULT_AB_RANGE
    dropout_p: float = 0.0
    is_causal: bool = False
    want_stats: bool = False
    seed: int = 0
    block_q: Optional[int] = None
    block_k: Optional[int] = None
    kernels: TileKernels = field(default_factory=lambda: default_kernels(None), compare=False)

    @property
    def consts(self):
        lo, hi = float(self.support[0]), float(self.support[1])
        return lo, hi, float(self.ab_clamp[0]), float(self.ab_clamp[1]), math.log(-lo / (hi - lo))


def _tile(x, t0: int, t1: int, s0: int, s1: int):
    """Tile ``[t0:t1, s0:s1]`` of a tensor broadcastable to ``(..., T, S)`` (size-1 dims kept)."""
    if x is None:
        return None
    rows = slice(None) if x.shape[-2] == 1 else slice(t0, t1)
    cols = slice(None) if x.shape[-1] == 1 else slice(s0, s1)
    return x[..., rows, cols]


def _tile_valid(valid, t0: int, t1: int, s0: int, s1: int, causal_off: Optional[int], device):
    """Allowed cells of a tile (None: all), the causal condition ``j <= i + off`` included."""
    v = _tile(valid, t0, t1, s0, s1)
    if causal_off is not None and s1 - 1 > t0 + causal_off:  # the tile crosses the diagonal
        c = torch.arange(s0, s1, device=device) <= torch.arange(t0, t1, device=device).unsqueeze(-1) + causal_off
        v = c if v is None else v & c
    return v


@dataclass
class _Plan:
    """Shapes, tiles and the hash states of one call."""

    lead: torch.Size
    T: int
    S: int
    dtype: torch.dtype
    compiled: bool
    tiles: list
    causal_off: Optional[int]
    hrow: Optional[torch.Tensor]  # (..., T, 1) murmur state of the gate noise, training only
    hdrop: Optional[torch.Tensor]  # the same for the dropout stream
    kcol: Optional[torch.Tensor]  # (S,) mix_k(j)
    chunks: list = field(default_factory=lambda: [None])  # [(b0, b1)] along lead dim 0; [None]: whole


#: Default query rows and keys per tile (see :func:`_tile_sizes`).
DEFAULT_BLOCK = 128


def _lead_shape(*xs) -> torch.Size:
    return torch.broadcast_shapes(*(x.shape[:-2] for x in xs if x is not None))


def _compute_dtype(*xs) -> torch.dtype:
    return torch.float64 if any(x is not None and x.dtype == torch.float64 for x in xs) else torch.float32


def _make_plan(qa, ka, v, bias, valid, cfg: StreamConfig) -> _Plan:
    T, S = qa.shape[-2], ka.shape[-2]
    lead = _lead_shape(qa, ka, v, bias, valid)
    cells = math.prod(lead) * T * S
    compiled = cfg.kernels.use_compiled(cells)
    per_row = max(1, math.prod(lead))
    bq, bk, nb = _tile_sizes(lead, T, S, cfg.block_q, cfg.block_k, cfg.kernels.block_cells(compiled))
    chunks = [None] if nb >= (lead[0] if lead else 1) else [(b0, min(lead[0], b0 + nb)) for b0 in range(0, lead[0], nb)]
    off = (S - T) if cfg.is_causal else None
    dtype = _compute_dtype(qa, ka, v, bias)
    tiles = []
    for t0 in range(0, T, bq):
        t1 = min(T, t0 + bq)
        ks = [(s0, min(S, s0 + bk)) for s0 in range(0, S, bk) if off is None or s0 <= t1 - 1 + off]
        tiles.append((t0, t1, ks))
    hrow = hdrop = kcol = None
    if cfg.training:
        dev = qa.device
        bh = torch.arange(per_row, device=dev).view(tuple(lead) + (1, 1))
        i = torch.arange(T, device=dev).unsqueeze(-1)
        hrow = murmur3_row_hash(cfg.seed, bh, i)
        if cfg.dropout_p > 0:
            hdrop = murmur3_row_hash(cfg.seed | (DROPOUT_STREAM << 32), bh, i)
        kcol = _mix_k(torch.arange(S, device=dev))
        if not compiled and _mantissa(dtype) < 32:  # eager: int32 is faster, same bits
            hrow, hdrop, kcol = _as_int32(hrow), _as_int32(hdrop), _as_int32(kcol)
    return _Plan(lead, T, S, dtype, compiled, tiles, off, hrow, hdrop, kcol, chunks)


def _tile_sizes(lead, T: int, S: int, block_q: Optional[int], block_k: Optional[int], cells: int):
    """``(rows, keys, batch elements)`` per tile: up to ``DEFAULT_BLOCK`` (128) query rows and keys
    (matrix products of fewer rows run several times slower per flop on the CPU), and as many
    elements of the first leading (batch) dim as fit ``cells`` (``batch x heads x rows x keys``);
    where one batch element alone overflows it the rows shrink, down to 16."""
    rest = math.prod(lead[1:]) if lead else 1
    bk = block_k or max(1, min(S, DEFAULT_BLOCK))
    bq = block_q or max(1, min(T, DEFAULT_BLOCK, max(16, cells // (rest * bk))))
    return bq, bk, max(1, cells // (rest * bq * bk))


def _flat(x, lead, c, scale: float = 1.0):
    """``x`` (broadcastable leading dims, ..., n, d) as a contiguous ``(N, n, d)`` tensor of the
    compute dtype (scaled), ``N`` = the number of (batch, head) pairs."""
    x = x.to(c)
    if scale != 1.0:
        x = x * scale
    n = max(1, math.prod(lead))
    return x.expand(tuple(lead) + tuple(x.shape[-2:])).reshape(n, x.shape[-2], x.shape[-1]).contiguous()


def _prepare(qa, ka, qb, kb, v, bias, valid, plan: _Plan, scale: float):
    """Queries (scaled), keys and values as contiguous ``(N, n, d)``; masks at full rank."""
    c, lead = plan.dtype, plan.lead
    rank = len(lead) + 2  # masks padded to full rank, so that a batch chunk slices their dim 0
    bias = None if bias is None else bias.to(c).reshape((1,) * max(0, rank - bias.dim()) + tuple(bias.shape))
    if valid is not None:
        valid = valid.reshape((1,) * max(0, rank - valid.dim()) + tuple(valid.shape))
    flat = [_flat(x, lead, c, sc) for x, sc in ((qa, scale), (ka, 1.0), (qb, scale), (kb, 1.0), (v, 1.0))]
    return flat + [bias, valid]


def _scores(qa, ka, qb, kb, bias, lead, t0: int, t1: int, s0: int, s1: int):
    """``(qa ka^T + bias, qb kb^T)`` of a tile, as ``(*lead, t, s)`` views of fresh tensors."""
    shape = tuple(lead) + (t1 - t0, s1 - s0)
    sa = torch.bmm(qa[:, t0:t1], ka[:, s0:s1].transpose(1, 2)).view(shape)
    if bias is not None:
        sa += _tile(bias, t0, t1, s0, s1)
    return sa, torch.bmm(qb[:, t0:t1], kb[:, s0:s1].transpose(1, 2)).view(shape)


def _row_max(m, sa, vt):
    """Running row max over allowed cells; returns ``(new max, finite stand-in, rescale factor)``."""
    s = sa if vt is None else torch.where(vt, sa, float("-inf"))
    m_new = torch.maximum(m, s.amax(-1, keepdim=True))
    m_safe = torch.where(torch.isinf(m_new), 0.0, m_new)
    return m_new, m_safe, torch.exp(m - m_safe)


def _closed(vt) -> bool:
    """A tile that the masks close entirely (skipped)."""
    return vt is not None and not bool(vt.any())


def _acc(acc, a, b):
    """``acc + a @ b`` in place (``a @ b`` when ``acc`` is None: no zero fill)."""
    return torch.bmm(a, b) if acc is None else acc.baddbmm_(a, b)


def _stream_forward(prep, cfg: StreamConfig, plan: _Plan):
    """Tiled forward from the prepared inputs (:func:`_prepare`): ``(out (N, T, dv), m, l, stats)``
    (``m``, ``l``: row statistics, ``stats``: l0 sum, non-zero count, allowed cells)."""
    lo, hi, amin, amax, log_k0 = cfg.consts
    qa, ka, qb, kb, v, bias, valid = prep
    lead, dev, c, N = tuple(plan.lead), qa.device, plan.dtype, qa.shape[0]
    out = torch.empty(N, plan.T, v.shape[-1], dtype=c, device=dev)
    softmax, norm = cfg.normalize == "softmax", cfg.normalize != "none"
    m_all = torch.zeros(lead + (plan.T, 1), dtype=c, device=dev) if softmax else None
    l_all = torch.ones(lead + (plan.T, 1), dtype=c, device=dev) if norm else None
    stats = torch.zeros(3, dtype=torch.float64, device=dev)  # l0 sum, non-zero, cells
    for t0, t1, ks in plan.tiles:
        acc = None  # contiguous (N, t, dv): baddbmm_ accumulates in place
        rows = lead + (t1 - t0, 1)
        l = torch.zeros(rows, dtype=c, device=dev) if norm else None
        m = torch.full(rows, float("-inf"), dtype=c, device=dev) if softmax else None
        m_safe = None
        for s0, s1 in ks:
            vt = _tile_valid(valid, t0, t1, s0, s1, plan.causal_off, dev)
            if _closed(vt):
                continue
            sa, sb = _scores(qa, ka, qb, kb, bias, lead, t0, t1, s0, s1)
            if softmax:
                m, m_safe, alpha = _row_max(m, sa, vt)
                if acc is not None:
                    acc.mul_(alpha.view(N, -1, 1))
                l.mul_(alpha)
            if cfg.training:
                hd = None if plan.hdrop is None else plan.hdrop[..., t0:t1, :]
                p, pd, l0, nz = cfg.kernels.run(
                    _fwd_train_tile, plan.compiled, sa, sb, plan.hrow[..., t0:t1, :], plan.kcol[s0:s1], vt, m_safe,
                    hd, lo, hi, amin, amax, log_k0, cfg.dropout_p, cfg.want_stats)
            else:
                p, pd, l0, nz = cfg.kernels.run(
                    _fwd_eval_tile, plan.compiled, sa, sb, vt, m_safe, lo, hi, amin, amax, log_k0, cfg.want_stats)
            acc = _acc(acc, pd.reshape(N, t1 - t0, s1 - s0), v[:, s0:s1])
            if norm:
                l += p.sum(-1, keepdim=True)
            if cfg.want_stats:
                n = p.numel() if vt is None else torch.count_nonzero(vt.expand(p.shape))
                stats += torch.stack([l0.double(), nz.double(), torch.as_tensor(n, dtype=torch.float64, device=dev)])
        if acc is None:  # every tile of these rows closed
            out[:, t0:t1] = 0.0
            continue
        if norm:
            l_all[..., t0:t1, :] = l
            acc.div_(torch.where(l > 0, l, 1.0).view(N, -1, 1))
        out[:, t0:t1] = acc
        if softmax and m_safe is not None:
            m_all[..., t0:t1, :] = m_safe
    return out, m_all, l_all, stats


def _add_tile(buf, t0: int, t1: int, s0: int, s1: int, g):
    """``buf[tile] += g`` summed down to the broadcast shape of ``buf``."""
    view = _tile(buf, t0, t1, s0, s1)
    view += g.sum_to_size(view.shape)


def _cat_blocks(blocks, key_blocks, like):
    """The per-key-block gradients side by side (zeros for blocks that no open tile visited)."""
    if not key_blocks:
        return torch.zeros_like(like)
    n, d = like.shape[0], like.shape[-1]
    return torch.cat([like.new_zeros(n, k[1] - k[0], d) if x is None else x for x, k in zip(blocks, key_blocks)], 1)


def _stream_backward(grad_out, grad_l0, saved, cfg: StreamConfig, plan: _Plan, needs):
    """Tiled backward from the saved prepared inputs, ``out`` and row statistics; returns the
    gradients of ``(qa, ka, qb, kb, v)`` as ``(N, n, d)`` and of ``bias`` in its (at least 2-D)
    shape, in the compute dtype."""
    qa, ka, qb, kb, v, bias, valid, out, m_all, l_all = saved
    lo, hi, amin, amax, log_k0 = cfg.consts
    lead, dev, c, N = tuple(plan.lead), qa.device, plan.dtype, qa.shape[0]
    dqa, dqb = torch.zeros_like(qa), torch.zeros_like(qb)
    # per key block, contiguous (baddbmm_ accumulates in place only into contiguous tensors)
    key_blocks = sorted({k for _, _, ks in plan.tiles for k in ks})
    dk_blocks = {k: [None, None, None] for k in key_blocks}
    dbias = torch.zeros_like(bias) if bias is not None and needs[5] else None
    g_l0 = None if grad_l0 is None else grad_l0.to(c)
    norm = cfg.normalize != "none"
    g_all = _flat(grad_out, lead, c) if grad_out is not None else torch.zeros_like(out)
    for t0, t1, ks in plan.tiles:
        g = g_all[:, t0:t1]
        rows = lead + (t1 - t0, 1)
        D = (g * out[:, t0:t1]).sum(-1).view(rows) if norm else None
        inv_l = 1.0 / torch.where(l_all[..., t0:t1, :] > 0, l_all[..., t0:t1, :], 1.0) if norm else None
        m = m_all[..., t0:t1, :] if m_all is not None else None
        dqa_t = dqb_t = None
        for s0, s1 in ks:
            vt = _tile_valid(valid, t0, t1, s0, s1, plan.causal_off, dev)
            if _closed(vt):
                continue
            sa, sb = _scores(qa, ka, qb, kb, bias, lead, t0, t1, s0, s1)
            dw = torch.bmm(g, v[:, s0:s1].transpose(1, 2)).view(sa.shape)
            if cfg.training:
                hd = None if plan.hdrop is None else plan.hdrop[..., t0:t1, :]
                dsa, dsb, wd = cfg.kernels.run(
                    _bwd_train_tile, plan.compiled, sa, sb, plan.hrow[..., t0:t1, :], plan.kcol[s0:s1], vt, m, hd,
                    dw, D, inv_l, g_l0, lo, hi, amin, amax, log_k0, cfg.dropout_p)
            else:
                dsa, dsb, wd = cfg.kernels.run(
                    _bwd_eval_tile, plan.compiled, sa, sb, vt, m, dw, D, inv_l, g_l0, lo, hi, amin, amax, log_k0)
            if dbias is not None:
                _add_tile(dbias, t0, t1, s0, s1, dsa)
            shape = (N, t1 - t0, s1 - s0)
            dsa, dsb, wd = dsa.reshape(shape), dsb.reshape(shape), wd.reshape(shape)
            blk = dk_blocks[(s0, s1)]
            blk[0] = _acc(blk[0], dsa.transpose(1, 2), qa[:, t0:t1])
            blk[1] = _acc(blk[1], dsb.transpose(1, 2), qb[:, t0:t1])
            blk[2] = _acc(blk[2], wd.transpose(1, 2), g)
            dqa_t = _acc(dqa_t, dsa, ka[:, s0:s1])
            dqb_t = _acc(dqb_t, dsb, kb[:, s0:s1])
        if dqa_t is not None:
            dqa[:, t0:t1], dqb[:, t0:t1] = dqa_t, dqb_t
    dka, dkb, dv = (_cat_blocks([dk_blocks[k][i] for k in key_blocks], key_blocks, x) for i, x in enumerate((ka, kb, v)))
    return dqa.mul_(cfg.scale), dka, dqb.mul_(cfg.scale), dkb, dv, dbias


def _chunk(plan: _Plan, tensors, chunk):
    """The plan and the prepared (or saved) tensors of the batch elements ``chunk = (b0, b1)`` of
    the first leading dim, as views: the flat ``(N, n, d)`` tensors (positions 0-4, and 7, ``out``)
    by rows ``b0 * rest : b1 * rest``, the lead-shaped ones by dim 0 unless they broadcast there."""
    if chunk is None:
        return plan, tensors
    b0, b1 = chunk
    rest = math.prod(plan.lead[1:])
    rows = lambda x: x if x is None or x.shape[0] == 1 else x[b0:b1]  # noqa: E731
    part = lambda i, x: x[b0 * rest:b1 * rest] if x is not None and (i < 5 or i == 7) else rows(x)  # noqa: E731
    sub = replace(plan, lead=torch.Size((b1 - b0,) + tuple(plan.lead[1:])), hrow=rows(plan.hrow),
                  hdrop=rows(plan.hdrop), chunks=[None])
    return sub, [part(i, x) for i, x in enumerate(tensors)]


def _cat(parts, i):
    return None if parts[0][i] is None else torch.cat([p[i] for p in parts])


def _forward_chunks(prep, cfg: StreamConfig, plan: _Plan):
    """:func:`_stream_forward` over the batch chunks of ``plan``, one after another, joined."""
    if plan.chunks == [None]:
        return _stream_forward(prep, cfg, plan)
    parts = []
    for ch in plan.chunks:
        sub, tensors = _chunk(plan, prep, ch)
        parts.append(_stream_forward(tensors, cfg, sub))
    return _cat(parts, 0), _cat(parts, 1), _cat(parts, 2), sum(p[3] for p in parts)


def _backward_chunks(grad_out, grad_l0, saved, cfg: StreamConfig, plan: _Plan, needs):
    """:func:`_stream_backward` over the batch chunks of ``plan``; a bias that broadcasts over
    the batch dim gets the sum of the chunks' gradients."""
    if plan.chunks == [None]:
        return _stream_backward(grad_out, grad_l0, saved, cfg, plan, needs)
    parts = []
    for ch in plan.chunks:
        sub, tensors = _chunk(plan, saved, ch)
        g = None if grad_out is None else grad_out[ch[0]:ch[1]]
        parts.append(_stream_backward(g, grad_l0, tensors, cfg, sub, needs))
    dbias = _cat(parts, 5)
    if dbias is not None and saved[5].shape[0] == 1:
        dbias = sum(p[5] for p in parts)
    return tuple(_cat(parts, i) for i in range(5)) + (dbias,)


def _sum_to(grad, shape, dtype, lead):
    """A ``(N, n, d)`` gradient as one of an input of ``shape`` (summed over broadcast dims)."""
    grad = grad.view(tuple(lead) + tuple(grad.shape[-2:]))
    return (grad.sum_to_size(shape) if grad.shape != shape else grad).to(dtype)


class _StreamingAttention(torch.autograd.Function):
    """``(out, l0_sum, nonzero, cells)`` of :func:`streaming_attention`.  Saves the prepared
    (contiguous ``(N, n, d)``) queries, keys and values, ``out`` and the O(T) row statistics."""

    @staticmethod
    def forward(ctx, qa, ka, qb, kb, v, bias, valid, cfg: StreamConfig):
        plan = _make_plan(qa, ka, v, bias, valid, cfg)
        prep = _prepare(qa, ka, qb, kb, v, bias, valid, plan, cfg.scale)
        out, m, l, stats = _forward_chunks(prep, cfg, plan)
        ctx.cfg, ctx.plan = cfg, plan
        ctx.inputs = [(x.shape, x.dtype) for x in (qa, ka, qb, kb, v)]
        ctx.bias = None if bias is None else (bias.shape, bias.dtype)
        ctx.save_for_backward(*prep, out, m, l)
        l0 = stats[0].to(torch.promote_types(plan.dtype, torch.float32))
        nz, cells = stats[1].float(), stats[2].float()
        ctx.mark_non_differentiable(nz, cells)
        return out.view(tuple(plan.lead) + tuple(out.shape[-2:])).to(torch.promote_types(v.dtype, qa.dtype)), l0, nz, cells

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_l0, _nz, _cells):
        grads = _backward_chunks(grad_out, grad_l0 if ctx.cfg.want_stats else None, ctx.saved_tensors, ctx.cfg,
                                 ctx.plan, ctx.needs_input_grad)
        gbias = None
        if grads[5] is not None:
            gbias = grads[5].reshape(ctx.bias[0]).to(ctx.bias[1])
        lead = ctx.plan.lead
        return tuple(_sum_to(g, *sd, lead) for g, sd in zip(grads[:5], ctx.inputs)) + (gbias, None, None)


def streaming_attention(qa, ka, qb, kb, v, bias=None, valid=None, *, cfg: StreamConfig):
    r"""Tiled HardKuma attention; see the module docstring for the math.

    Shapes: ``qa`` (..., T, da), ``ka`` (..., S, da), ``qb`` (..., T, db), ``kb`` (..., S, db),
    ``v`` (..., S, dv) with broadcastable leading dims; ``bias`` (added to ``score_a``) and bool
    ``valid`` (True = allowed) broadcastable to (..., T, S).  ``cfg.is_causal`` also closes key
    ``j > i + S - T`` (and skips the key tiles entirely above that diagonal).  The noise of cell
    ``(bh, i, j)`` is :func:`counter_uniform` ``(cfg.seed, bh, i, j)`` with ``bh`` the flat index
    of the broadcast leading dims, whatever the tile sizes.

    Returns ``(out (..., T, dv), l0_sum, nonzero, cells)``: ``l0_sum`` the differentiable sum
    over allowed cells of ``P(z != 0)`` and the counts of exactly non-zero weights and of allowed
    cells (zeros unless ``cfg.want_stats``).  Gate math runs in float32 (float64 if an input is).
    """
    return _StreamingAttention.apply(qa, ka, qb, kb, v, bias, valid, cfg)


def counter_noise(seed: int, lead, T: int, S: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """The whole ``(*lead, T, S)`` map of :func:`counter_uniform` (the noise the tiles draw; for the
    whole-map path and the tests)."""
    bh = torch.arange(max(1, math.prod(lead)), device=device).view(tuple(lead) + (1, 1))
    i = torch.arange(T, device=device).unsqueeze(-1)
    return counter_uniform(seed, bh, i, torch.arange(S, device=device), dtype)
