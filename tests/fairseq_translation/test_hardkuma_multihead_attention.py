"""HardKumaMultiheadAttention: no fused fast path, incremental == full decoding, masks, shapes,
outputs against the formulas (tests/hardkuma_reference.py)."""

import pytest
import torch
import torch.nn.functional as F

from fairseq.modules.multihead_attention import MultiheadAttention

from fairseq_plugins.translation.hardkuma_multihead_attention import HardKumaMultiheadAttention
from hardkuma_attention import collect_attention_stats

E, H = 16, 2


def causal(T):
    return torch.triu(torch.full((T, T), float("-inf")), 1)


@pytest.fixture
def self_attn():
    torch.manual_seed(0)
    return HardKumaMultiheadAttention(E, H, self_attention=True, stats_key="decoder_self")


@pytest.fixture
def cross_attn():
    torch.manual_seed(1)
    return HardKumaMultiheadAttention(E, H, encoder_decoder_attention=True, stats_key="cross")


def test_is_a_fairseq_multihead_attention(self_attn):
    assert isinstance(self_attn, MultiheadAttention)
    names = {n for n, _ in self_attn.named_parameters()}
    assert names == {n for n, _ in MultiheadAttention(E, H, self_attention=True).named_parameters()}


@pytest.mark.parametrize("training", [True, False])
def test_fused_fast_path_is_never_taken(monkeypatch, self_attn, cross_attn, training):
    def forbidden(*args, **kwargs):
        raise AssertionError("fused attention path taken")

    monkeypatch.setattr(F, "multi_head_attention_forward", forbidden)
    monkeypatch.setattr(F, "scaled_dot_product_attention", forbidden)
    # the plain fairseq module does take it (so the patch is effective) ...
    plain = MultiheadAttention(E, H, self_attention=True).train(training)
    x = torch.randn(5, 3, E)
    with pytest.raises(AssertionError, match="fused attention path"):
        plain(x, x, x)
    # ... the HardKuma one never does, and its weights contain exact zeros in training
    torch.manual_seed(0)
    x = torch.randn(30, 4, E)
    for m in (self_attn.train(training), cross_attn.train(training)):
        out, w = m(x, x, x, need_head_weights=True)
        assert out.shape == x.shape and torch.isfinite(out).all()
    if training:
        assert (w == 0).any()


def test_incremental_self_attention_matches_full_in_eval(self_attn):
    self_attn.eval()
    T, B = 7, 3
    x = torch.randn(T, B, E)
    full, w_full = self_attn(x, x, x, attn_mask=causal(T), need_head_weights=True)
    state, outs = {}, []
    for t in range(T):
        o, w = self_attn(x[t : t + 1], x[t : t + 1], x[t : t + 1], incremental_state=state, need_head_weights=True)
        assert torch.allclose(w[..., 0, :], w_full[..., t, : t + 1], atol=1e-6)
        outs.append(o)
    assert torch.allclose(torch.cat(outs), full, atol=1e-5)


def test_beam_shared_cross_attention_and_cache(cross_attn):
    cross_attn.eval()
    S, B, beam, T = 6, 2, 3, 4
    enc = torch.randn(S, B, E).repeat_interleave(beam, dim=1)
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[1, -2:] = True
    pad = pad.repeat_interleave(beam, dim=0)
    q = torch.randn(T, B * beam, E)
    ref, w_ref = cross_attn(q, enc, enc, key_padding_mask=pad, static_kv=True)
    cross_attn.set_beam_size(beam)
    state = {}
    out, w = cross_attn(q, enc, enc, key_padding_mask=pad, incremental_state=state, static_kv=True)
    assert torch.allclose(out, ref, atol=1e-6) and torch.allclose(w, w_ref, atol=1e-6)
    cached, _ = cross_attn(q, None, None, key_padding_mask=pad, incremental_state=state, static_kv=True)
    assert torch.allclose(cached, ref, atol=1e-6)
    # beam search reorders hypotheses within a sentence (cache untouched) ...
    order = torch.tensor([2, 0, 1, 5, 3, 4])
    cross_attn.reorder_incremental_state(state, order)
    reordered, _ = cross_attn(q[:, order], None, None, key_padding_mask=pad[order], incremental_state=state, static_kv=True)
    assert torch.allclose(reordered, ref[:, order], atol=1e-6)
    # ... and drops finished sentences (cache shrinks to the remaining sentence)
    keep = torch.tensor([3, 4, 5])
    cross_attn.reorder_incremental_state(state, keep)
    rest, _ = cross_attn(q[:, keep], None, None, key_padding_mask=pad[keep], incremental_state=state, static_kv=True)
    assert torch.allclose(rest, ref[:, keep], atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_key_padding_gets_exact_zero_and_does_not_change_outputs(cross_attn, training):
    cross_attn.train(training)
    S, B, T = 5, 2, 3
    enc, q = torch.randn(S, B, E), torch.randn(T, B, E)
    padded = torch.cat([enc, torch.randn(2, B, E)])
    pad = torch.zeros(B, S + 2, dtype=torch.bool)
    pad[:, S:] = True
    torch.manual_seed(3)
    _, w = cross_attn(q, padded, padded, key_padding_mask=pad, need_head_weights=True)
    assert (w[..., S:] == 0).all()
    if not training:
        out_pad, _ = cross_attn(q, padded, padded, key_padding_mask=pad)
        out, _ = cross_attn(q, enc, enc)
        assert torch.allclose(out_pad, out, atol=1e-6)


@pytest.mark.parametrize("mask_kind", ["float", "bool", "fairseq_1e8"])
def test_causal_mask_and_stats(self_attn, mask_kind):
    T, B = 6, 2
    x = torch.randn(T, B, E)
    mask = {"float": causal(T), "bool": causal(T) != 0, "fairseq_1e8": (causal(T) != 0).float() * -1e8}[mask_kind]
    with collect_attention_stats() as stats:
        _, w = self_attn.train()(x, x, x, attn_mask=mask, need_head_weights=True)
    assert (w.masked_select(torch.triu(torch.ones(T, T, dtype=torch.bool), 1)) == 0).all()
    total = stats.total("decoder_self")
    assert total is not None and stats.keys() == ["decoder_self"]
    assert float(total.cells) == H * B * T * (T + 1) / 2
    assert float(total.nonzero) == float((w != 0).sum())
    assert 0 < float(total.expected_l0.detach()) < 1
    total.expected_l0.backward()
    assert self_attn.q_proj.weight.grad is not None and self_attn.q_proj.weight.grad.abs().sum() > 0


def test_need_weights_shapes_and_eval_determinism(cross_attn):
    S, B, T = 4, 3, 5
    enc, q = torch.randn(S, B, E), torch.randn(T, B, E)
    cross_attn.eval()
    o1, w_mean = cross_attn(q, enc, enc)
    o2, w_heads = cross_attn(q, enc, enc, need_head_weights=True)
    _, none = cross_attn(q, enc, enc, need_weights=False)
    assert w_mean.shape == (B, T, S) and w_heads.shape == (H, B, T, S) and none is None
    assert torch.equal(o1, o2) and torch.allclose(w_heads.mean(0), w_mean)
    assert torch.allclose(w_mean.sum(-1)[w_mean.sum(-1) > 0], torch.ones(()))  # normalize="sum"
    cross_attn.train()
    torch.manual_seed(0)
    a, _ = cross_attn(q, enc, enc)
    b, _ = cross_attn(q, enc, enc)
    assert not torch.equal(a, b)  # training samples gates


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        HardKumaMultiheadAttention(6, 2, self_attention=True)
    with pytest.raises(ValueError, match="normalize"):
        HardKumaMultiheadAttention(E, H, self_attention=True, normalize="entmax")
    m = HardKumaMultiheadAttention(E, H, self_attention=True)
    x = torch.randn(3, 2, E)
    with pytest.raises(ValueError, match="attn_mask of shape"):
        m(x, x, x, attn_mask=torch.zeros(2, 2))
    with pytest.raises(NotImplementedError):
        m(x, x, x, before_softmax=True)


def test_softmax_normalisation_matches_reference_in_eval():
    """normalize="softmax" (the recipe default): w = z * softmax(score_a) / sum_s(z * softmax(score_a)),
    z the deterministic gate; exact zeros where z = 0 and on padding, rows of open cells sum to 1."""
    from hardkuma_attention.distributions import HardKumaraswamy

    torch.manual_seed(4)
    m = HardKumaMultiheadAttention(E, H, encoder_decoder_attention=True, normalize="softmax").eval()
    S, B, T, half = 6, 2, 4, E // H // 2
    enc, q = torch.randn(S, B, E), torch.randn(T, B, E)
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[1, -2:] = True
    _, w = m(q, enc, enc, key_padding_mask=pad, need_head_weights=True)  # (H, B, T, S)

    qh = m._heads(m.q_proj(q)) / half**0.5  # (B, H, T, d)
    kh = m._heads(m.k_proj(enc))
    score_a = qh[..., :half] @ kh[..., :half].transpose(-1, -2)
    score_b = qh[..., half:] @ kh[..., half:].transpose(-1, -2)
    ab = lambda s: F.softplus(s).clamp(*m.ab_clamp)  # noqa: E731
    z = HardKumaraswamy(ab(score_a), ab(score_b), support=m.support).deterministic()
    valid = ~pad[:, None, None, :]
    p = torch.softmax(score_a.masked_fill(~valid, float("-inf")), -1) * z.masked_fill(~valid, 0.0)
    rows = p.sum(-1, keepdim=True)
    ref = torch.where(rows > 0, p / rows.clamp_min(1e-30), torch.zeros_like(p)).transpose(0, 1)
    assert torch.allclose(w, ref, atol=1e-6)
    assert (w == 0).any() and (w[:, 1, :, -2:] == 0).all()
    assert torch.equal(w == 0, ref == 0)
    sums = w.sum(-1)
    assert torch.allclose(sums[sums > 0], torch.ones(()), atol=1e-6)


# ---------------------------------------------------------------- against the formulas (eval)
from tests.hardkuma_reference import gate_attention  # noqa: E402


def reference_forward(m, query, key, kpm=None, attn_mask=None):
    """The module's eval output from the formulas (module doc): whole score maps, fairseq masks."""
    T, B, _ = query.shape
    S, H, d = key.size(0), m.num_heads, m.head_dim
    half = d // 2
    heads = lambda x, n: x.reshape(n, B, H, d).permute(1, 2, 0, 3)  # noqa: E731
    q, k, v = heads(m.q_proj(query), T), heads(m.k_proj(key), S), heads(m.v_proj(key), S)
    sa = q[..., :half] @ k[..., :half].transpose(-1, -2) / half**0.5
    sb = q[..., half:] @ k[..., half:].transpose(-1, -2) / half**0.5
    valid = torch.ones(B, H, T, S, dtype=torch.bool)
    if attn_mask is not None:
        am = attn_mask.reshape(-1, H, T, S) if attn_mask.dim() == 3 else attn_mask
        if am.dtype == torch.bool:
            valid = valid & ~am
        else:
            valid = valid & (am > -1e4)
            sa = sa + torch.where(am > -1e4, am, torch.zeros_like(am))
    if kpm is not None:
        valid = valid & (kpm == 0)[:, None, None, :]
    w, l0 = gate_attention(sa, sb, valid, m.normalize, m.support, m.ab_clamp)
    out = m.out_proj((w @ v).permute(2, 0, 1, 3).reshape(T, B, H * d))
    return out, w.transpose(0, 1), l0, valid


def mask_case(kind, B, T, S, g):
    """(key_padding_mask, attn_mask) of a named kind."""
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[1, -2:] = True
    if kind == "padding":
        kpm[0, :] = True  # a fully padded sentence: zero attention, no NaN
        return kpm.to(torch.uint8), None
    if kind == "causal_float":
        return kpm, torch.triu(torch.full((T, S), float("-inf"), dtype=torch.float64), 1)
    if kind == "bias_2d":  # finite values shift score_a; -1e8 disallows
        am = torch.randn(T, S, generator=g, dtype=torch.float64)
        am[0, 1] = -1e8
        return None, am
    if kind == "per_head_bool":
        return kpm, torch.rand(B * H, T, S, generator=g) < 0.3
    return None, None


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
@pytest.mark.parametrize("kind", ["none", "padding", "causal_float", "bias_2d", "per_head_bool"])
def test_eval_outputs_weights_and_stats_match_formulas(normalize, kind):
    torch.manual_seed(5)
    m = HardKumaMultiheadAttention(E, H, encoder_decoder_attention=True, normalize=normalize,
                                   stats_key="cross").double().eval()
    T, B, S = 5, 3, 5
    g = torch.Generator().manual_seed(7)
    q = torch.randn(T, B, E, generator=g, dtype=torch.float64) * 3
    enc = torch.randn(S, B, E, generator=g, dtype=torch.float64) * 3
    kpm, am = mask_case(kind, B, T, S, g)
    with collect_attention_stats() as stats:
        out, w = m(q, enc, enc, key_padding_mask=kpm, attn_mask=am, need_head_weights=True)
    ref_out, ref_w, ref_l0, valid = reference_forward(m, q, enc, kpm, am)
    assert torch.allclose(w, ref_w, atol=1e-10) and torch.equal(w == 0, ref_w == 0)
    assert torch.allclose(out, ref_out, atol=1e-10)
    assert (w != 0).any() and (w == 0).any()  # the inputs exercise open and closed gates
    total = stats.total("cross")
    assert torch.allclose(total.l0_sum.double(), ref_l0) and float(total.cells) == float(valid.sum())
    assert float(total.nonzero) == float((ref_w != 0).sum())
    if kind == "padding":
        assert torch.allclose(out[:, 0], m.out_proj.bias.expand(T, E))


@pytest.mark.parametrize("kind", ["padding", "bias_2d", "per_head_bool"])
def test_beam_shared_keys_match_formulas_with_masks(kind):
    """Beam-shared cross attention (queries of a beam folded onto one key set) == the formulas on
    the repeated keys, with 2-D and per-head 3-D masks, also from the cache."""
    torch.manual_seed(6)
    m = HardKumaMultiheadAttention(E, H, encoder_decoder_attention=True).double().eval()
    S, N, beam, T = 5, 2, 3, 4
    g = torch.Generator().manual_seed(8)
    enc = torch.randn(S, N, E, generator=g, dtype=torch.float64).repeat_interleave(beam, dim=1) * 3
    q = torch.randn(T, N * beam, E, generator=g, dtype=torch.float64) * 3
    kpm, am = mask_case(kind, N * beam, T, S, g)
    if kpm is not None:  # one padding per sentence, repeated over its beam
        kpm = kpm[::beam].repeat_interleave(beam, dim=0)
    ref_out, ref_w, _, _ = reference_forward(m, q, enc, kpm, am)
    m.set_beam_size(beam)
    state = {}
    for keys in (enc, None):  # the second call reads the cached keys
        out, w = m(q, keys, keys, key_padding_mask=kpm, attn_mask=am, incremental_state=state,
                   static_kv=True, need_head_weights=True)
        assert state[next(iter(state))]["prev_key"].size(0) == N  # one key set per sentence
        assert torch.allclose(out, ref_out, atol=1e-10) and torch.allclose(w, ref_w, atol=1e-10)


@pytest.mark.parametrize("normalize", ["none", "softmax"])
def test_incremental_decoding_matches_full_with_padding(normalize):
    torch.manual_seed(2)
    m = HardKumaMultiheadAttention(E, H, self_attention=True, normalize=normalize).double().eval()
    T, B = 6, 2
    x = torch.randn(T, B, E, dtype=torch.float64) * 3
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, 0] = True  # a left-padded target
    full, _ = m(x, x, x, key_padding_mask=kpm, attn_mask=causal(T).double())
    ref, _, _, _ = reference_forward(m, x, x, kpm, causal(T).double())
    assert torch.allclose(full, ref, atol=1e-10)
    state, outs = {}, []
    for t in range(T):
        step = x[t : t + 1]  # fairseq passes the key padding of this step only
        o, _ = m(step, step, step, key_padding_mask=kpm[:, t : t + 1], incremental_state=state)
        outs.append(o)
    assert torch.allclose(torch.cat(outs)[:, 0], full[:, 0], atol=1e-10)
    assert torch.allclose(torch.cat(outs)[1:, 1], full[1:, 1], atol=1e-10)  # row 0 of batch 1 sees only padding


def test_weights_requested_only_when_the_caller_asks(monkeypatch, self_attn):
    import fairseq_plugins.translation.hardkuma_multihead_attention as mod

    calls = []
    core = mod.scaled_dot_product_hardkuma

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return core(*args, **kwargs)

    monkeypatch.setattr(mod, "scaled_dot_product_hardkuma", spy)
    x = torch.randn(4, 2, E)
    assert self_attn(x, x, x, need_weights=False)[1] is None
    assert self_attn(x, x, x)[1].shape == (2, 4, 4)  # fairseq's default need_weights=True
    assert self_attn(x, x, x, need_weights=False, need_head_weights=True)[1].shape == (H, 2, 4, 4)
    assert [c["need_weights"] for c in calls] == [False, True, True]


def test_dropout_on_weights_in_training_only():
    m = HardKumaMultiheadAttention(E, H, self_attention=True, dropout=0.5).double()
    x = torch.randn(5, 2, E, dtype=torch.float64)
    m.eval()
    assert torch.allclose(m(x, x, x)[0], reference_forward(m, x, x)[0], atol=1e-10)
    m.train()
    torch.manual_seed(0)
    out_drop, w_drop = m(x, x, x, need_head_weights=True)
    m.dropout_module.p = 0.0
    torch.manual_seed(0)
    out, w = m(x, x, x, need_head_weights=True)
    assert torch.equal(w, w_drop)  # the same sampled gates are returned (before dropout) ...
    assert not torch.allclose(out, out_drop)  # ... and dropout changed the output


def test_future_mask_reaches_the_core_as_is_causal(monkeypatch, self_attn):
    import fairseq_plugins.translation.hardkuma_multihead_attention as mod

    calls = []
    core = mod.scaled_dot_product_hardkuma
    spy = lambda *a, **kw: calls.append(kw) or core(*a, **kw)  # noqa: E731
    monkeypatch.setattr(mod, "scaled_dot_product_hardkuma", spy)
    x = torch.randn(5, 2, E)
    self_attn.eval()
    out, w = self_attn(x, x, x, attn_mask=causal(5), need_head_weights=True)
    other = causal(5)
    other[4, 0] = float("-inf")  # not causal: stays a mask
    self_attn(x, x, x, attn_mask=other)
    assert calls[0]["is_causal"] and calls[0]["valid"] is None
    assert not calls[1]["is_causal"] and calls[1]["valid"] is not None
    assert (w.masked_select(torch.ones(5, 5, dtype=torch.bool).triu(1)) == 0).all()


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
def test_fully_padded_sentence_trains_with_finite_gradients(normalize):
    torch.manual_seed(0)
    m = HardKumaMultiheadAttention(E, H, encoder_decoder_attention=True, normalize=normalize).train()
    q, enc = torch.randn(3, 2, E, requires_grad=True), torch.randn(4, 2, E)
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[0] = True  # nothing to attend to in sentence 0
    with collect_attention_stats() as stats:
        out, w = m(q, enc, enc, key_padding_mask=pad, need_head_weights=True)
    (out.sum() + stats.total().expected_l0).backward()
    assert (w[:, 0] == 0).all() and torch.allclose(out[:, 0], m.out_proj.bias.expand(3, E))
    assert torch.isfinite(q.grad).all() and all(torch.isfinite(p.grad).all() for p in m.parameters())
    assert float(stats.total().cells) == H * 3 * 4


# ---------------------------------------------------------------- one GateConfig
def test_gate_config_is_the_modules_gate_options():
    """``gate=GateConfig(...)`` and the keyword options build the same module (same eval outputs
    on fixed inputs, with padding and an additive bias); the model reads its gate from the
    ``--hardkuma-*`` args; a sigmoid a/b map, which the core attention path does not use, is refused."""
    from types import SimpleNamespace

    from fairseq_plugins.translation.model import HardKumaOptions
    from hardkuma_attention.config import GateConfig

    gate = GateConfig(normalize="softmax", support=(-0.2, 1.05), ab_range=(1e-3, 50.0))
    outs = []
    for kwargs in ({"gate": gate}, {"normalize": "softmax", "support": (-0.2, 1.05), "ab_clamp": (1e-3, 50.0)}):
        torch.manual_seed(9)
        m = HardKumaMultiheadAttention(E, H, encoder_decoder_attention=True, **kwargs).double().eval()
        assert m.gate == gate and m.ab_clamp == (1e-3, 50.0) and m.support == (-0.2, 1.05)
        g = torch.Generator().manual_seed(3)
        kpm, am = mask_case("bias_2d", 2, 4, 5, g)
        q, enc = (torch.randn(n, 2, E, generator=g, dtype=torch.float64) * 3 for n in (4, 5))
        outs.append(m(q, enc, enc, key_padding_mask=kpm, attn_mask=am, need_head_weights=True))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    args = SimpleNamespace(hardkuma_attention="all", hardkuma_normalize="sum", hardkuma_support_left=-0.2,
                           hardkuma_support_right=1.05, hardkuma_ab_max=50.0)
    assert HardKumaOptions.from_args(args).gate == gate.replace(normalize="sum")
    with pytest.raises(ValueError, match="ab_map"):
        HardKumaMultiheadAttention(E, H, self_attention=True, gate=GateConfig.preset("rationale"))
