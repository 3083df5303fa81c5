"""The streaming (tiled) attention core against the whole-map chain-of-ops reference on the same
counter noise; the counter noise itself; memory that does not grow with T^2."""
import math
import struct
import warnings

import pytest
import torch

from hardkuma_attention import HardKuma, HardKumaAttention
from hardkuma_attention.distributions import kuma_sample_from_reflected_uniform
from hardkuma_attention.functional import normalize_gates, scaled_dot_product_hardkuma
from hardkuma_attention.fused import ab_from_scores
from hardkuma_attention.streaming import (
    DROPOUT_STREAM, TileKernels, _as_int32, _eval_gate, _eval_gate_parts, _hash_uniform, _mix_k, counter_noise, counter_uniform,
    draw_seed, murmur3_row_hash,
)

D = torch.float64
EAGER = TileKernels(compile=False)
SUPPORT, CLAMP = (-0.1, 1.1), (1e-3, 100.0)


# ---------------------------------------------------------------- counter noise


def murmur3_x86_32(data: bytes, seed: int) -> int:
    """MurmurHash3_x86_32 as published (Appleby), byte by byte: the independent check."""
    c1, c2, m = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & m
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & m  # noqa: E731
    for n in range(0, len(data) // 4 * 4, 4):
        k = struct.unpack_from("<I", data, n)[0]
        k = rotl((k * c1) & m, 15) * c2 & m
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & m
    assert len(data) % 4 == 0
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


@pytest.mark.parametrize("seed", [0, 1, 123456789123456789, (1 << 63) - 1, 5 | (DROPOUT_STREAM << 32)])
def test_counter_uniform_is_murmur3_of_the_documented_key(seed):
    for bh, i, j in [(0, 0, 0), (1, 2, 3), (7, 4095, 8191), (2**31, 2**32 - 1, 17)]:
        h = murmur3_x86_32(struct.pack("<4I", seed >> 32 & 0xFFFFFFFF, bh, i, j), seed & 0xFFFFFFFF)
        assert counter_uniform(seed, bh, i, j, torch.float64).item() == (h + 0.5) / 2**32
        assert counter_uniform(seed, bh, i, j, torch.float32).item() == ((h >> 9) + 0.5) / 2**23


def test_counter_uniform_is_uniform_and_neighbours_independent():
    scipy_stats = pytest.importorskip("scipy.stats")
    u = counter_noise(987654321, (2, 2), 200, 250, torch.float64)  # 200k cells
    assert 0 < u.min() and u.max() < 1
    assert scipy_stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    f32 = counter_noise(987654321, (2, 2), 200, 250, torch.float32)
    assert 0 < f32.min() and f32.max() < 1  # never rounds to 0 or 1
    bound = 5 / u.numel() ** 0.5

    def corr(x, y):
        return torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1].abs()

    assert corr(u[..., :-1], u[..., 1:]) < bound  # next key
    assert corr(u[..., :-1, :], u[..., 1:, :]) < bound  # next query
    assert corr(u[:, 0], u[:, 1]) < bound  # next head
    assert corr(u, counter_noise(987654322, (2, 2), 200, 250, torch.float64)) < bound  # next seed
    assert corr(u, counter_noise(987654321 | (DROPOUT_STREAM << 32), (2, 2), 200, 250, torch.float64)) < bound


def test_seed_comes_from_the_torch_generator():
    assert draw_seed(torch.Generator().manual_seed(4)) == draw_seed(torch.Generator().manual_seed(4))
    torch.manual_seed(4)
    s1 = draw_seed()
    torch.manual_seed(4)
    assert draw_seed() == s1 != draw_seed()


# ---------------------------------------------------------------- whole-map reference


def reference(qa, ka, qb, kb, v, *, scale, valid=None, bias=None, is_causal=False, training=False,
              normalize="none", dropout_p=0.0, seed=0):
    """Chain-of-ops attention on the whole map, noise = counter_noise(seed): (out, l0, nonzero, cells)."""
    T, S = qa.shape[-2], ka.shape[-2]
    if is_causal:
        c = torch.arange(S) <= torch.arange(T).unsqueeze(-1) + (S - T)
        valid = c if valid is None else valid & c
    sa = qa @ ka.transpose(-1, -2) * scale + (0 if bias is None else bias)
    sb = qb @ kb.transpose(-1, -2) * scale
    lead = torch.broadcast_shapes(*(x.shape[:-2] for x in (qa, ka, v, bias, valid) if x is not None and x.dim() > 2))
    sa, sb = sa.expand(lead + (T, S)), sb.expand(lead + (T, S))
    ok = torch.ones(lead + (T, S), dtype=torch.bool) if valid is None else valid.expand(lead + (T, S))
    a, b = ab_from_scores(sa, CLAMP), ab_from_scores(sb, CLAMP)
    d = HardKuma(a, b, support=SUPPORT)
    if training:
        u = counter_noise(seed, lead, T, S, sa.dtype)
        z = (SUPPORT[0] + (SUPPORT[1] - SUPPORT[0]) * kuma_sample_from_reflected_uniform(u, a, b)).clamp(0, 1)
    else:
        z = d.deterministic()
    w = normalize_gates(z.masked_fill(~ok, 0.0), normalize, sa, ok)
    attn = w
    if training and dropout_p > 0:
        keep = counter_noise(seed | (DROPOUT_STREAM << 32), lead, T, S, sa.dtype) >= dropout_p
        attn = w * keep / (1 - dropout_p)
    l0 = (d.expected_l0() * ok).sum()
    return attn @ v, l0, ((w != 0) & ok).sum().float(), ok.sum().float(), w


def make_inputs(B=2, H=3, T=5, S=7, mask="none", seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.randn(*s, generator=g, dtype=dtype) * 1.3).requires_grad_()  # noqa: E731
    qa, qb, ka, kb, v = r(B, H, T, 4), r(B, H, T, 3), r(B, H, S, 4), r(B, H, S, 3), r(B, H, S, 2)
    valid = bias = None
    causal = mask == "causal"
    if mask == "padding":  # key padding (B, 1, 1, S); batch element 1 fully padded
        valid = torch.ones(B, 1, 1, S, dtype=torch.bool)
        valid[0, ..., S - 2:] = False
        if B > 1:
            valid[1] = False
    elif mask == "per_head":  # a per-head 3-D mask reshaped by the caller, with a fully masked row
        valid = torch.rand(B, H, T, S, generator=g) > 0.3
        valid[0, 1, 2] = False
    elif mask == "bias":
        bias = r(T, S)
    elif mask == "bias_bcast":
        bias = r(B, 1, 1, S)
        valid = torch.rand(T, S, generator=g) > 0.2
    return dict(qa=qa, ka=ka, qb=qb, kb=kb, v=v), dict(valid=valid, bias=bias, is_causal=causal)


MASKS = ["none", "padding", "per_head", "bias", "bias_bcast", "causal"]
TILES = [(None, None), (2, 3), (1, 1), (3, 7), (5, 2)]


def run_streaming(x, m, **kw):
    kw.setdefault("kernels", EAGER)
    out, _, st = scaled_dot_product_hardkuma(**x, scale=0.6, valid=m["valid"], bias=m["bias"],
                                             is_causal=m["is_causal"], want_stats=True, **kw)
    return out, st


def grads_of(out, l0, x, bias, go):
    wrt = list(x.values()) + ([bias] if bias is not None else [])
    return torch.autograd.grad((out * go).sum() + 0.3 * l0, wrt)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
@pytest.mark.parametrize("training", [True, False])
def test_tiles_match_whole_map_reference(mask, normalize, training):
    x, m = make_inputs(mask=mask)
    seed = draw_seed(torch.Generator().manual_seed(11))
    ref_out, ref_l0, ref_nz, ref_cells, _ = reference(**x, scale=0.6, **m, training=training, normalize=normalize,
                                                      seed=seed)
    go = torch.randn_like(ref_out)
    ref_g = grads_of(ref_out, ref_l0, x, m["bias"], go)
    for bq, bk in TILES:
        out, st = run_streaming(x, m, training=training, normalize=normalize, block_q=bq, block_k=bk,
                                generator=torch.Generator().manual_seed(11))
        assert torch.allclose(out, ref_out, atol=1e-10), (bq, bk)
        assert torch.allclose(st.l0_sum, ref_l0, atol=1e-10)
        assert st.nonzero == ref_nz and st.cells == ref_cells
        for g1, g2 in zip(grads_of(out, st.l0_sum, x, m["bias"], go), ref_g):
            assert torch.allclose(g1, g2, atol=1e-9), (bq, bk)
    if mask in ("padding", "per_head"):  # fully masked rows: exactly 0
        rows = ~m["valid"].expand(2, 3, 5, 7).any(-1)
        assert rows.any() and (out[rows] == 0).all()
    assert 0 < ref_nz < ref_cells or not training  # the sample has zeros and non-zeros


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
def test_dropout_from_the_counter_matches_reference(normalize):
    x, m = make_inputs(mask="padding", T=6, S=9)
    seed = draw_seed(torch.Generator().manual_seed(2))
    ref_out, ref_l0, *_ = reference(**x, scale=0.6, **m, training=True, normalize=normalize, dropout_p=0.3, seed=seed)
    go = torch.randn_like(ref_out)
    ref_g = grads_of(ref_out, ref_l0, x, None, go)
    for bq, bk in TILES:
        out, st = run_streaming(x, m, training=True, normalize=normalize, dropout_p=0.3, block_q=bq, block_k=bk,
                                generator=torch.Generator().manual_seed(2))
        assert torch.allclose(out, ref_out, atol=1e-10)
        for g1, g2 in zip(grads_of(out, st.l0_sum, x, None, go), ref_g):
            assert torch.allclose(g1, g2, atol=1e-9)
    no_drop, _ = run_streaming(x, m, training=True, normalize=normalize, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(out, no_drop)


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
@pytest.mark.parametrize("training", [True, False])
def test_need_weights_path_gives_the_same_output_and_differentiable_weights(normalize, training):
    x, m = make_inputs(mask="bias_bcast")
    kw = dict(scale=0.6, valid=m["valid"], bias=m["bias"], training=training, normalize=normalize, want_stats=True,
              kernels=EAGER)
    out1, w, st1 = scaled_dot_product_hardkuma(**x, need_weights=True, generator=torch.Generator().manual_seed(5), **kw)
    out2, none, st2 = scaled_dot_product_hardkuma(**x, generator=torch.Generator().manual_seed(5), **kw)
    assert none is None and w.shape == (2, 3, 5, 7)
    assert torch.allclose(out1, out2, atol=1e-10)
    assert torch.allclose(st1.l0_sum, st2.l0_sum) and st1.nonzero == st2.nonzero and st1.cells == st2.cells
    (gq,) = torch.autograd.grad(w.sum(), x["qa"])
    assert torch.isfinite(gq).all() and (gq != 0).any()


@pytest.mark.parametrize("T,S", [(1, 1), (1, 6), (6, 1), (0, 4), (4, 0), (0, 0)])
@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
def test_lengths_zero_and_one(T, S, normalize):
    x, m = make_inputs(T=T, S=S)
    seed = draw_seed(torch.Generator().manual_seed(1))
    for training in (True, False):
        ref_out, ref_l0, ref_nz, ref_cells, _ = reference(**x, scale=0.6, training=training, normalize=normalize,
                                                          seed=seed)
        out, st = run_streaming(x, m, training=training, normalize=normalize, block_q=2, block_k=2,
                                generator=torch.Generator().manual_seed(1))
        assert out.shape == (2, 3, T, 2) and torch.allclose(out, ref_out, atol=1e-10)
        assert torch.allclose(st.l0_sum, ref_l0) and st.nonzero == ref_nz and st.cells == ref_cells
        go = torch.randn_like(out)
        for g1, g2 in zip(grads_of(out, st.l0_sum, x, None, go), grads_of(ref_out, ref_l0, x, None, go)):
            assert torch.allclose(g1, g2, atol=1e-9)


def identity_values(S, dtype=torch.float32):
    return torch.eye(S, dtype=dtype).view(1, 1, S, S)  # out = weights @ I = the weights themselves


def test_tile_noise_is_bit_identical_to_the_whole_map():
    """Every tile hashes exactly the noise of its cells, whatever the tile sizes."""
    seed, lead, T, S = 2**40 + 12345, (2, 3), 9, 11
    whole = counter_noise(seed, lead, T, S, torch.float32)
    bh = torch.arange(6).view(2, 3, 1, 1)
    hrow = murmur3_row_hash(seed, bh, torch.arange(T).unsqueeze(-1))
    kcol = _mix_k(torch.arange(S))
    for hr, kc in ((hrow, kcol), (_as_int32(hrow), _as_int32(kcol))):  # the eager kernels' int32 states too
        for bq, bk in [(1, 1), (4, 3), (9, 11), (2, 5)]:
            for t0 in range(0, T, bq):
                for s0 in range(0, S, bk):
                    tile = _hash_uniform(hr[..., t0:t0 + bq, :], kc[s0:s0 + bk], torch.float32)
                    assert torch.equal(tile, whole[..., t0:t0 + bq, s0:s0 + bk])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_int32_hash_has_the_bits_of_the_int64_hash(dtype):
    """Over 1M cells (every vector width and tail), int32 states give the int64 hash's noise."""
    hrow = murmur3_row_hash(987654321987, torch.arange(8).view(8, 1, 1), torch.arange(131).unsqueeze(-1))
    kcol = _mix_k(torch.arange(1001))
    u = _hash_uniform(_as_int32(hrow), _as_int32(kcol), dtype)
    assert u.dtype == dtype and torch.equal(u, _hash_uniform(hrow, kcol, dtype))


def test_gates_identical_across_tile_sizes():
    """Same gates whatever the tiles: the exact 0/1 pattern is identical and the values agree to
    a few float32 ulps (PyTorch's vectorised loops and their scalar tails round log/exp differently,
    and a tile's tail depends on its width)."""
    x, m = make_inputs(B=2, H=2, T=9, S=11, mask="padding", dtype=torch.float32)
    x = {k: (t.detach() * 4).round() / 4 for k, t in x.items()}  # exact scores whatever the matmul kernel
    x["v"] = identity_values(11)
    outs = [run_streaming(x, m, training=True, block_q=bq, block_k=bk, generator=torch.Generator().manual_seed(7))[0]
            for bq, bk in [(None, None), (1, 1), (4, 3), (9, 5), (2, 11)]]
    z = outs[0]
    for o in outs[1:]:
        assert torch.equal(o == 0, z == 0) and torch.equal(o == 1, z == 1)
        assert ((o - z).abs() <= 5e-7).all()
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    other = run_streaming(x, m, training=True, generator=torch.Generator().manual_seed(8))[0]
    assert not torch.equal(other == 0, z == 0)  # another seed, other gates


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lean_eval_gate_is_bit_identical_to_the_gate_parts(dtype):
    """The eval forward's gate (fewer passes, nothing kept) equals the backward's decomposition
    bit for bit, saturated scores and both clamps included."""
    g = torch.Generator().manual_seed(0)
    sa, sb = (torch.randn(300, 400, generator=g, dtype=dtype) * 5 for _ in range(2))
    sa[0, :6], sb[0, :6] = torch.tensor([-30.0, 30.0, 200.0, -200.0, 0.0, 8.0]), torch.tensor([30.0, -30.0, -200.0, 200.0, 0.0, -9.0])
    consts = (SUPPORT[0], SUPPORT[1], CLAMP[0], CLAMP[1], math.log(0.1 / 1.2))
    choice, t, *_, e0, _, _ = _eval_gate_parts(sa, sb, *consts)
    z, e = _eval_gate(sa, sb, *consts)
    assert torch.equal(z, torch.where(choice == 2.0, t.clamp(0.0, 1.0), choice)) and torch.equal(e, e0)
    assert 0.1 < (z == 0).double().mean() < 0.9 and 0.1 < (z == 1).double().mean() < 0.9
    assert ((z > 0) & (z < 1)).any()


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_chunks_match_one_pass(mask, training):
    """Tiles that hold fewer batch elements than the call (``eager_block_cells`` forces chunks of 1
    and of 2 of 3, a ragged last chunk) give the same output, statistics and gradients, the bias
    gradient summed over chunks where the bias broadcasts over the batch."""
    x, m = make_inputs(B=3, mask=mask, seed=5)
    go = torch.randn(3, 3, 5, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    results = []
    for cells in (1 << 20, 18, 36):  # 18 = heads x block_q x block_k: one batch element per chunk
        kernels = TileKernels(compile=False, eager_block_cells=cells)
        out, st = run_streaming(x, m, training=training, normalize="softmax", dropout_p=0.3 * training,
                                block_q=2, block_k=3, generator=torch.Generator().manual_seed(2), kernels=kernels)
        g = grads_of(out, st.l0_sum, x, m["bias"], go)
        results.append((out, st.l0_sum, st.nonzero, st.cells) + tuple(g))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert results[0][2] > 0


@pytest.mark.parametrize("mask,normalize", list(zip(MASKS, ["none", "sum", "softmax"] * 2)) + [("none", "softmax")])
def test_gradcheck_through_tiles(mask, normalize):
    """Each mask kind and each normalisation (with dropout and the L0 term) in float64."""
    x, m = make_inputs(B=1, H=2, T=3, S=4, mask=mask, seed=3)
    names = list(x) + (["bias"] if m["bias"] is not None else [])
    tensors = tuple(x[n] if n in x else m["bias"] for n in names)

    def f(*ts):
        kw = dict(zip(names, ts))
        bias = kw.pop("bias", None)
        out, _, st = scaled_dot_product_hardkuma(
            **kw, scale=0.6, valid=m["valid"], bias=bias, is_causal=m["is_causal"], training=True,
            normalize=normalize, dropout_p=0.2, want_stats=True, kernels=EAGER, block_q=2, block_k=3,
            generator=torch.Generator().manual_seed(3),
        )
        return out, st.l0_sum

    assert torch.autograd.gradcheck(f, tensors)


@pytest.mark.parametrize("normalize", ["none", "softmax"])
def test_gradcheck_eval_gates_through_tiles(normalize):
    x, m = make_inputs(B=1, H=1, T=3, S=5, mask="padding", seed=4)

    def f(*ts):
        out, _, st = scaled_dot_product_hardkuma(*ts, scale=0.6, valid=m["valid"], normalize=normalize,
                                                 want_stats=True, kernels=EAGER, block_q=2, block_k=2)
        return out, st.l0_sum

    assert torch.autograd.gradcheck(f, tuple(x.values()))


def test_sampled_gates_match_closed_form_p0_p1():
    """Over 400k cells with the same (a, b), the fractions of exact zeros and ones match P0, P1."""
    T, S = 1000, 400
    qa = torch.full((1, 1, T, 1), 0.8)
    qb = torch.full((1, 1, T, 1), -1.5)
    k = torch.ones(1, 1, S, 1)
    z, _, _ = scaled_dot_product_hardkuma(qa, k, qb, k, identity_values(S), scale=1.0, training=True, kernels=EAGER,
                                          generator=torch.Generator().manual_seed(0))
    d = HardKuma(ab_from_scores(torch.tensor(0.8), CLAMP), ab_from_scores(torch.tensor(-1.5), CLAMP))
    n = z.numel()
    for frac, p in (((z == 0).double().mean(), d.prob_zero()), ((z == 1).double().mean(), d.prob_one())):
        assert abs(frac - p) < 5 * (p * (1 - p) / n) ** 0.5


def saved_bytes(fn):
    total = 0

    def pack(t):
        nonlocal total
        total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
def test_saved_bytes_grow_linearly_not_quadratically(normalize):
    def step(T):
        x, m = make_inputs(B=1, H=2, T=T, S=T, mask="padding", dtype=torch.float32)
        return saved_bytes(lambda: run_streaming(x, m, training=True, normalize=normalize, dropout_p=0.1))

    small, large = step(64), step(512)
    assert large < 9 * small  # 8x the length; a T x S map would make it ~64x
    mha = HardKumaAttention(16, 2, batch_first=True, normalize=normalize, compile=False)
    xs = {T: torch.randn(1, T, 16) for T in (64, 512)}
    for causal in (False, True):
        sizes = {T: saved_bytes(lambda: mha(xs[T], xs[T], xs[T], need_weights=False, is_causal=causal)) for T in xs}
        assert sizes[512] < 9 * sizes[64]


@pytest.mark.parametrize("training", [True, False])
def test_module_is_causal_streams_the_same_as_a_causal_mask(training):
    mha = HardKumaAttention(16, 2, batch_first=True, compile=False).train(training)
    x = torch.randn(2, 7, 16)
    mask = torch.ones(7, 7, dtype=torch.bool).triu(1)
    torch.manual_seed(0)
    a, _ = mha(x, x, x, need_weights=False, is_causal=True)
    torch.manual_seed(0)
    b, _ = mha(x, x, x, need_weights=False, attn_mask=mask)
    assert torch.allclose(a, b, atol=1e-6)


def test_low_precision_inputs_use_float32_gate_math():
    x, m = make_inputs(mask="padding", dtype=torch.float32)
    for dt in (torch.bfloat16, torch.float16):
        xl = {k: t.detach().to(dt).requires_grad_() for k, t in x.items()}
        x32 = {k: t.detach().float().requires_grad_() for k, t in xl.items()}
        out_l, _ = run_streaming(xl, m, training=True, generator=torch.Generator().manual_seed(0))
        out_32, _ = run_streaming(x32, m, training=True, generator=torch.Generator().manual_seed(0))
        assert out_l.dtype == dt and torch.equal(out_l, out_32.to(dt))
        g_l = torch.autograd.grad(out_l.float().sum(), xl["qa"])[0]
        g_32 = torch.autograd.grad(out_32.sum(), x32["qa"])[0]
        assert g_l.dtype == dt and torch.equal(g_l, g_32.to(dt))


def test_auto_compile_policy_and_fallback_warning():
    auto = TileKernels(compile=None, min_compile_cells=1000)
    assert not auto.use_compiled(999) and auto.works is None  # small calls never probe
    broken = TileKernels(compile=True)
    broken.works = False  # as if the probe had failed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not broken.use_compiled(10**9)
        assert not broken.use_compiled(10**9)
    assert len(caught) == 1 and "eager" in str(caught[0].message)
    assert not TileKernels(compile=False).use_compiled(10**9)
    with pytest.raises(ValueError, match="compile"):
        TileKernels(compile="yes")


@pytest.mark.parametrize("bias_shape", [(3, 4), (1, 4), (2, 1, 3, 4)])
def test_gradcheck_broadcast_leading_dims_and_bias(bias_shape):
    """Queries broadcast over heads, keys over the batch, row-wise or broadcast biases."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 1, 3, 4, generator=g, dtype=D, requires_grad=True)
    k = torch.randn(1, 2, 4, 4, generator=g, dtype=D, requires_grad=True)
    v = torch.randn(1, 1, 4, 2, generator=g, dtype=D, requires_grad=True)
    bias = torch.randn(bias_shape, generator=g, dtype=D, requires_grad=True)
    valid = torch.tensor([True, True, False, True]).view(1, 1, 1, 4)

    def f(q, k, v, bias):
        out, _, st = scaled_dot_product_hardkuma(
            q[..., :2], k[..., :2], q[..., 2:], k[..., 2:], v, scale=0.8, bias=bias, valid=valid, training=True,
            normalize="sum", want_stats=True, kernels=EAGER, block_q=2, block_k=3,
            generator=torch.Generator().manual_seed(3))
        return out, st.l0_sum

    out, _ = f(q, k, v, bias)
    assert out.shape == (2, 2, 3, 2)
    assert torch.autograd.gradcheck(f, (q, k, v, bias))
