"""HardKumaAttention as a drop-in for nn.MultiheadAttention."""
import io

import pytest
import torch
from torch import nn

from hardkuma_attention import GateConfig, HardKuma, HardKumaAttention, collect_attention_stats, convert
from hardkuma_attention.config import DEFAULT_AB_RANGE
from hardkuma_attention.distributions import DEFAULT_SUPPORT
from hardkuma_attention.fused import ab_from_scores

E, H = 16, 4


def make(batch_first=True, **kw):
    torch.manual_seed(0)
    return HardKumaAttention(E, H, batch_first=batch_first, **kw)


def inputs(B=3, T=5, S=7, batch_first=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, T, E, generator=g, dtype=dtype)
    kv = torch.randn(B, S, E, generator=g, dtype=dtype)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    return q, kv


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("parameterization", ["split", "separate"])
@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
def test_shapes_like_multihead_attention(batch_first, parameterization, normalize):
    m = make(batch_first, parameterization=parameterization, normalize=normalize)
    ref = nn.MultiheadAttention(E, H, batch_first=batch_first)
    q, kv = inputs(batch_first=batch_first)
    for mode in ("train", "eval"):
        getattr(m, mode)()
        out, w = m(q, kv, kv)
        rout, rw = ref(q, kv, kv)
        assert out.shape == rout.shape and w.shape == rw.shape
        out, w = m(q, kv, kv, average_attn_weights=False)
        assert w.shape == (3, H, 5, 7)
        out, w = m(q, kv, kv, need_weights=False)
        assert w is None


def test_unbatched_input():
    m = make()
    q, kv = inputs()
    out, w = m(q[0], kv[0], kv[0], key_padding_mask=torch.zeros(7, dtype=torch.bool))
    assert out.shape == (5, E) and w.shape == (5, 7)


def test_kdim_vdim():
    m = HardKumaAttention(E, H, kdim=6, vdim=10, batch_first=True)
    out, w = m(torch.randn(2, 3, E), torch.randn(2, 4, 6), torch.randn(2, 4, 10))
    assert out.shape == (2, 3, E) and w.shape == (2, 3, 4)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_masks_bool_and_additive_give_same_result(mode):
    m = make()
    getattr(m, mode)()
    q, kv = inputs()
    kpm = torch.zeros(3, 7, dtype=torch.bool)
    kpm[1, 4:] = True
    kpm[2, :] = True  # fully padded batch element
    causal = torch.ones(5, 7, dtype=torch.bool).triu(1)
    outs = []
    for kp, am in [
        (kpm, causal),
        (torch.zeros(3, 7).masked_fill(kpm, float("-inf")), torch.zeros(5, 7).masked_fill(causal, float("-inf"))),
        (torch.zeros(3, 7).masked_fill(kpm, -1e9), causal),
    ]:
        torch.manual_seed(3)
        out, w = m(q, kv, kv, key_padding_mask=kp, attn_mask=am, average_attn_weights=False)
        assert torch.isfinite(out).all() and torch.isfinite(w).all()
        assert (w[1, :, :, 4:] == 0).all()
        assert (w[2] == 0).all()
        assert (w.masked_select(causal.view(1, 1, 5, 7)) == 0).all()
        outs.append((out, w))
    for out, w in outs[1:]:
        assert torch.equal(w, outs[0][1])
        assert torch.allclose(out, outs[0][0])


def test_fully_masked_rows_no_nan_in_grads():
    m = make(normalize="sum")
    q, kv = inputs()
    q.requires_grad_()
    kpm = torch.ones(3, 7, dtype=torch.bool)
    kpm[0, 0] = False
    out, _, st = m(q, kv, kv, key_padding_mask=kpm, return_stats=True)
    (out.sum() + st.expected_l0).backward()
    for p in list(m.parameters()) + [q]:
        assert torch.isfinite(p.grad).all()
    assert st.cells.item() == 1 * H * 5


def test_is_causal_builds_mask():
    m = make().eval()
    q, _ = inputs(S=5)
    _, w1 = m(q, q, q, is_causal=True, average_attn_weights=False)
    _, w2 = m(q, q, q, attn_mask=torch.ones(5, 5, dtype=torch.bool).triu(1), average_attn_weights=False)
    assert torch.equal(w1, w2)
    assert (w1.triu(1) == 0).all()


def test_per_head_3d_attn_mask():
    m = make()
    q, kv = inputs()
    am = torch.zeros(3 * H, 5, 7, dtype=torch.bool)
    am[0, :, 0] = True  # batch 0, head 0, key 0
    _, w = m(q, kv, kv, attn_mask=am, average_attn_weights=False)
    assert (w[0, 0, :, 0] == 0).all()


def test_finite_additive_mask_shifts_score_a():
    m = make().eval()
    q, kv = inputs()
    bias = torch.zeros(5, 7)
    bias[:, 2] = 20.0  # strongly favour key 2
    _, w = m(q, kv, kv, attn_mask=bias, average_attn_weights=False)
    _, w0 = m(q, kv, kv, average_attn_weights=False)
    assert (w[..., 2] >= w0[..., 2]).all() and (w[..., 2] == 1).float().mean() > 0.9


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        HardKumaAttention(10, 3)
    with pytest.raises(ValueError, match="normalize"):
        HardKumaAttention(8, 2, normalize="max")
    with pytest.raises(ValueError, match="even head dim"):
        HardKumaAttention(6, 2)
    with pytest.raises(NotImplementedError):
        HardKumaAttention(8, 2, add_bias_kv=True)
    m = make()
    q, kv = inputs()
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(q, kv, kv, key_padding_mask=torch.zeros(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        m(q, kv, kv, attn_mask=torch.zeros(4, 7, dtype=torch.bool))


def test_empty_and_length_one_sequences():
    m = make()
    for T, S in [(1, 1), (5, 1), (0, 3), (3, 0)]:
        q, kv = inputs(T=T, S=S)
        for mode in ("train", "eval"):
            getattr(m, mode)()
            out, w, st = m(q, kv, kv, return_stats=True)
            assert out.shape == (3, T, E) and w.shape == (3, T, S)
            assert torch.isfinite(out).all() and torch.isfinite(st.expected_l0)


def test_eval_is_deterministic_train_is_stochastic():
    m = make()
    q, kv = inputs()
    m.eval()
    o1, w1 = m(q, kv, kv)
    o2, w2 = m(q, kv, kv)
    assert torch.equal(o1, o2) and torch.equal(w1, w2)
    m.train()
    _, w3 = m(q, kv, kv)
    _, w4 = m(q, kv, kv)
    assert not torch.equal(w3, w4)


def test_stats_match_distribution_and_collector():
    m = make()
    q, kv = inputs()
    kpm = torch.zeros(3, 7, dtype=torch.bool)
    kpm[0, 5:] = True
    with collect_attention_stats() as outer:
        with collect_attention_stats() as inner:
            out, w, st = m(q, kv, kv, key_padding_mask=kpm, return_stats=True, average_attn_weights=False)
        m(q, kv, kv)
    assert len(inner.items) == 1 and len(outer.items) == 2
    assert inner.items[0] is st
    # independent computation from the projections
    with torch.no_grad():
        qh = m.q_proj(q).view(3, 5, H, -1).transpose(1, 2)
        kh = m.k_proj(kv).view(3, 7, H, -1).transpose(1, 2)
        half = qh.size(-1) // 2
        sa = qh[..., :half] @ kh[..., :half].transpose(-1, -2) / half**0.5
        sb = qh[..., half:] @ kh[..., half:].transpose(-1, -2) / half**0.5
        d = HardKuma(ab_from_scores(sa, m.ab_clamp), ab_from_scores(sb, m.ab_clamp))
        valid = ~kpm.view(3, 1, 1, 7).expand(3, H, 5, 7)
        assert st.cells.item() == valid.sum().item()
        assert st.expected_l0.item() == pytest.approx(d.expected_l0()[valid].mean().item(), rel=1e-5)
        assert st.nonzero_rate.item() == pytest.approx((w != 0)[valid].float().mean().item())
    total = outer.total()
    assert total.cells.item() == st.cells.item() + 3 * H * 5 * 7


def _seeded(m, seed, *args, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return m(*args, **kw)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("parameterization", ["split", "separate"])
def test_module_gradcheck_float64(mode, parameterization):
    torch.manual_seed(0)
    m = HardKumaAttention(8, 2, batch_first=True, parameterization=parameterization, normalize="sum").double()
    getattr(m, mode)()
    q = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    kpm = torch.tensor([[False, False, False, True], [False, False, False, False]])

    def f(q, kv):
        out, _, st = _seeded(m, 11, q, kv, kv, key_padding_mask=kpm, return_stats=True)
        return out, st.expected_l0

    assert torch.autograd.gradcheck(f, (q, kv), atol=1e-5)


def test_state_dict_round_trip():
    m = make(parameterization="separate", normalize="sum").eval()
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    m2 = HardKumaAttention(E, H, batch_first=True, parameterization="separate", normalize="sum")
    m2.load_state_dict(torch.load(buf, weights_only=True))
    m2.eval()
    q, kv = inputs()
    assert torch.equal(m(q, kv, kv)[0], m2(q, kv, kv)[0])


def test_gate_config_or_keywords_build_the_same_module():
    """``gate=`` (a GateConfig or a preset name) and the older keywords give the same gate, the
    same repr and the same outputs; the keywords stay readable."""
    m0 = make()
    assert m0.gate == GateConfig.preset("attention") == make(gate="attention").gate
    assert (m0.normalize, m0.support, m0.ab_clamp) == ("none", DEFAULT_SUPPORT, DEFAULT_AB_RANGE)
    by_kw = make(normalize="softmax", support=(-0.2, 1.2), ab_clamp=(0.01, 50.0))
    gate = GateConfig(normalize="softmax", support=(-0.2, 1.2), ab_range=(0.01, 50.0))
    by_gate = make(gate=gate)
    assert by_kw.gate == gate and by_gate.gate == gate and repr(by_kw) == repr(by_gate)
    assert (by_gate.normalize, by_gate.support, by_gate.ab_clamp) == ("softmax", (-0.2, 1.2), (0.01, 50.0))
    assert make(gate=gate, normalize="softmax", ab_clamp=[0.01, 50]).gate == gate  # agreeing keywords are fine
    q, kv = inputs()
    for mode in ("train", "eval"):
        getattr(by_kw, mode)(), getattr(by_gate, mode)()
        torch.manual_seed(3)
        a = by_kw(q, kv, kv)
        torch.manual_seed(3)
        b = by_gate(q, kv, kv)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_gate_conflicts_are_clear_errors():
    with pytest.raises(ValueError, match="normalize='none'.*disagree"):
        HardKumaAttention(8, 2, gate=GateConfig(normalize="sum"), normalize="none")
    with pytest.raises(ValueError, match="ab_range"):
        HardKumaAttention(8, 2, gate="attention", ab_clamp=(0.1, 10.0))
    with pytest.raises(ValueError, match="ab_map must be 'clamp'"):
        HardKumaAttention(8, 2, gate="rationale")
    with pytest.raises(ValueError, match="unknown gate preset"):
        HardKumaAttention(8, 2, gate="nope")
    with pytest.raises(TypeError, match="GateConfig or a preset name"):
        HardKumaAttention(8, 2, gate={"normalize": "sum"})


def test_pickled_module_round_trip_keeps_gate():
    """A whole module saved with ``torch.save`` (and one pickled before ``gate`` existed, with
    the three fields as attributes) loads with its gate."""
    m = make(normalize="sum", ab_clamp=(0.01, 50.0)).eval()
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)
    assert m2.gate == m.gate
    state = dict(m.__dict__)
    state.pop("gate")
    state.update(normalize="sum", support=(-0.1, 1.1), ab_clamp=(0.01, 50.0))
    old = HardKumaAttention.__new__(HardKumaAttention)
    old.__setstate__(state)
    assert old.gate == m.gate and old.ab_clamp == (0.01, 50.0)
    q, kv = inputs()
    assert torch.equal(old(q, kv, kv)[0], m(q, kv, kv)[0])


def test_convert_passes_gate():
    model = nn.TransformerEncoderLayer(E, H, batch_first=True)
    convert(model, gate=GateConfig(normalize="sum"))
    assert model.self_attn.gate.normalize == "sum"


def test_from_softmax_copies_projections():
    ref = nn.MultiheadAttention(E, H, batch_first=True)
    m = HardKumaAttention.from_softmax(ref)
    q = torch.randn(2, 3, E)
    assert torch.allclose(m.v_proj(q), nn.functional.linear(q, *[t.chunk(3, 0)[2] for t in (ref.in_proj_weight, ref.in_proj_bias)]))
    assert torch.equal(m.out_proj.weight, ref.out_proj.weight)
    assert m.batch_first


def test_half_precision_forward():
    m = make().to(torch.bfloat16)
    q, kv = inputs(dtype=torch.bfloat16)
    out, w, st = m(q, kv, kv, return_stats=True)
    assert torch.isfinite(out.float()).all() and torch.isfinite(st.expected_l0)


# ---------------------------------------------------------------- drop-in inside nn.Transformer*


def _train_steps(model, fwd, steps=3):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        with collect_attention_stats() as stats:
            out = fwd()
        loss = out.pow(2).mean() + stats.total().expected_l0
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    return stats


@pytest.mark.parametrize("batch_first", [True, False])
def test_drop_in_transformer_encoder_layer(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, 32, dropout=0.1, batch_first=batch_first)
    layer.self_attn = HardKumaAttention(E, H, dropout=0.1, batch_first=batch_first, stats_key="self")
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    x, _ = inputs(T=6, batch_first=batch_first)
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[1, 3:] = True
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    stats = _train_steps(enc, lambda: enc(x, mask=causal, src_key_padding_mask=kpm))
    assert len(stats.items) == 2 and stats.keys() == ["self"]
    enc.eval()
    with torch.no_grad(), collect_attention_stats() as stats:
        y1 = enc(x, mask=causal, src_key_padding_mask=kpm)
        y2 = enc(x, mask=causal, src_key_padding_mask=kpm)
    assert len(stats.items) == 4  # our module ran: PyTorch's fused fast path was not taken
    assert torch.equal(y1, y2) and torch.isfinite(y1).all()


@pytest.mark.parametrize("batch_first", [True, False])
def test_drop_in_transformer_decoder_layer(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(E, H, 32, batch_first=batch_first)
    layer.self_attn = HardKumaAttention(E, H, batch_first=batch_first, stats_key="self")
    layer.multihead_attn = HardKumaAttention(E, H, batch_first=batch_first, stats_key="cross")
    tgt, mem = inputs(T=5, S=7, batch_first=batch_first)
    tgt_kpm = torch.zeros(3, 5, dtype=torch.bool)
    tgt_kpm[2, 3:] = True
    mem_kpm = torch.zeros(3, 7, dtype=torch.bool)
    mem_kpm[0, 4:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(5)

    def fwd():
        return layer(tgt, mem, tgt_mask=causal, tgt_key_padding_mask=tgt_kpm, memory_key_padding_mask=mem_kpm,
                     tgt_is_causal=True)

    stats = _train_steps(layer, fwd)
    assert stats.keys() == ["cross", "self"]
    assert 0 < stats.total("cross").nonzero_rate.item() <= 1
    layer.eval()
    with torch.no_grad():
        assert torch.equal(fwd(), fwd())


def test_collector_totals_by_key():
    a = HardKumaAttention(E, H, batch_first=True, stats_key="self")
    b = HardKumaAttention(E, H, batch_first=True, stats_key="cross")
    q, kv = inputs()
    with collect_attention_stats() as stats:
        a(q, q, q)
        b(q, kv, kv)
        b(q, kv, kv)
    assert stats.total("self").cells.item() == 3 * H * 5 * 5
    assert stats.total("cross").cells.item() == 2 * 3 * H * 5 * 7
    both = stats.total(["self", "cross"])
    assert both.cells.item() == stats.total().cells.item()
    assert stats.total("encoder") is None and stats.total([]) is None
