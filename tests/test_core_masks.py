"""hardkuma_attention.masks.merge_masks: PyTorch- and fairseq-style masks -> (valid, bias)."""
import itertools

import pytest
import torch

from hardkuma_attention.attention import MASKED_SCORE as EXPORTED
from hardkuma_attention.masks import MASKED_SCORE, merge_masks

B, H, T, S = 2, 3, 4, 5


def reference(attn_mask, kpm, key_padding):
    """Cell by cell: (valid, bias) of shape (B, H, T, S) from the documented rules."""
    valid = torch.ones(B, H, T, S, dtype=torch.bool)
    bias = torch.zeros(B, H, T, S, dtype=torch.float64)

    def apply(value, is_bool, cell):
        if is_bool:
            valid[cell] &= not bool(value)
        elif float(value) <= -1e4:
            valid[cell] = False
        else:
            bias[cell] += float(value)

    for b, h, t, s in itertools.product(range(B), range(H), range(T), range(S)):
        cell = (b, h, t, s)
        if attn_mask is not None:
            m = attn_mask[t, s] if attn_mask.dim() == 2 else attn_mask[b * H + h, t, s]
            apply(m, attn_mask.dtype == torch.bool, cell)
        if kpm is not None:
            if key_padding == "nonzero":
                valid[cell] &= float(kpm[b, s]) == 0
            else:
                apply(kpm[b, s], kpm.dtype == torch.bool, cell)
    return valid, bias


def full(valid, bias):
    v = torch.ones(B, H, T, S, dtype=torch.bool) if valid is None else valid.expand(B, H, T, S)
    z = torch.zeros(B, H, T, S, dtype=torch.float64) if bias is None else bias.double().expand(B, H, T, S)
    return v, z


def random_float(shape, g):
    x = torch.randn(shape, generator=g)
    x[torch.rand(shape, generator=g) < 0.3] = float("-inf")
    x[torch.rand(shape, generator=g) < 0.1] = -1e8
    x[torch.rand(shape, generator=g) < 0.1] = 0.0
    return x


@pytest.mark.parametrize("attn_kind", [None, "bool2", "float2", "bool3", "float3"])
@pytest.mark.parametrize("kpm_kind", [None, "bool", "float", "uint8"])
@pytest.mark.parametrize("key_padding", ["additive", "nonzero"])
def test_merge_matches_cell_by_cell_reference(attn_kind, kpm_kind, key_padding):
    g = torch.Generator().manual_seed(0)
    attn_mask = None
    if attn_kind is not None:
        shape = (T, S) if attn_kind.endswith("2") else (B * H, T, S)
        attn_mask = random_float(shape, g)
        if attn_kind.startswith("bool"):
            attn_mask = attn_mask < -1e4
    kpm = None
    if kpm_kind is not None:
        kpm = random_float((B, S), g)
        if kpm_kind == "bool":
            kpm = kpm < -1e4
        elif kpm_kind == "uint8":
            kpm = (kpm < -1e4).to(torch.uint8)
    if kpm_kind == "uint8" and key_padding == "additive":  # integer masks are fairseq's dialect only
        with pytest.raises(TypeError, match="key_padding_mask must be bool or floating point"):
            merge_masks(attn_mask, kpm, batch=B, heads=H, tgt_len=T, src_len=S, key_padding=key_padding)
        return
    valid, bias = merge_masks(attn_mask, kpm, batch=B, heads=H, tgt_len=T, src_len=S,
                              dtype=torch.float64, key_padding=key_padding)
    ref_valid, ref_bias = reference(attn_mask, kpm, key_padding)
    got_valid, got_bias = full(valid, bias)
    assert torch.equal(got_valid, ref_valid)
    assert torch.allclose(got_bias, ref_bias, atol=1e-6)  # bias only matters on valid cells, but is finite everywhere
    assert torch.isfinite(got_bias).all()
    if valid is not None:
        assert valid.dtype == torch.bool and valid.dim() == 4
    if attn_kind is None and kpm_kind is None:
        assert valid is None and bias is None


def test_threshold_and_dtype():
    assert EXPORTED == MASKED_SCORE == -1e4
    m = torch.tensor([[-1e4, -9999.0, 0.5, float("-inf"), 0.0]])
    valid, bias = merge_masks(m, None, batch=1, heads=1, tgt_len=1, src_len=5, dtype=torch.float16)
    assert valid.view(-1).tolist() == [False, True, True, False, True]
    assert bias.dtype == torch.float16 and bias.view(-1)[2].item() == 0.5 and bias.view(-1)[0].item() == 0.0


def test_zero_and_masking_float_masks_give_no_bias():
    causal = torch.zeros(T, S).masked_fill(torch.ones(T, S, dtype=torch.bool).triu(1), float("-inf"))
    kpm = torch.zeros(B, S)
    kpm[1, -1] = -1e9
    valid, bias = merge_masks(causal, kpm, batch=B, heads=H, tgt_len=T, src_len=S)
    assert bias is None
    assert torch.equal(valid.expand(B, H, T, S)[0, 0], ~torch.ones(T, S, dtype=torch.bool).triu(1))
    assert not valid.expand(B, H, T, S)[1, :, :, -1].any()


def test_per_head_mask_is_batch_major():
    am = torch.zeros(B * H, T, S, dtype=torch.bool)
    am[1 * H + 2, 0, 3] = True  # batch 1, head 2
    valid, _ = merge_masks(am, None, batch=B, heads=H, tgt_len=T, src_len=S)
    assert valid.shape == (B, H, T, S) and (~valid).sum() == 1 and not valid[1, 2, 0, 3]


def test_fairseq_style_treats_any_nonzero_float_as_padding():
    kpm = torch.tensor([[0.0, 1.0, -0.5, 0.0, 0.0]])
    valid, bias = merge_masks(None, kpm, batch=1, heads=1, tgt_len=1, src_len=5, key_padding="nonzero")
    assert valid.view(-1).tolist() == [True, False, False, True, True] and bias is None
    valid, bias = merge_masks(None, kpm, batch=1, heads=1, tgt_len=1, src_len=5, key_padding="additive")
    assert valid.all() and bias.view(-1).tolist() == [0.0, 1.0, -0.5, 0.0, 0.0]


def test_empty_masks():
    valid, bias = merge_masks(torch.zeros(0, 3), torch.zeros(2, 3, dtype=torch.bool), batch=2, heads=H,
                              tgt_len=0, src_len=3)
    assert valid.expand(2, H, 0, 3).numel() == 0 and bias is None


def test_bad_masks_are_named():
    with pytest.raises(ValueError, match=r"attn_mask of shape \(2, 2\), expected \(4, 5\)"):
        merge_masks(torch.zeros(2, 2), None, batch=B, heads=H, tgt_len=T, src_len=S)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(5, 4, 5\), expected \(6, 4, 5\)"):
        merge_masks(torch.zeros(5, T, S), None, batch=B, heads=H, tgt_len=T, src_len=S)
    with pytest.raises(ValueError, match="attn_mask must be 2-D or 3-D"):
        merge_masks(torch.zeros(S), None, batch=B, heads=H, tgt_len=T, src_len=S)
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(5, 2\), expected \(2, 5\)"):
        merge_masks(None, torch.zeros(S, B), batch=B, heads=H, tgt_len=T, src_len=S)
    with pytest.raises(TypeError, match="attn_mask must be bool or floating point"):
        merge_masks(torch.zeros(T, S, dtype=torch.long), None, batch=B, heads=H, tgt_len=T, src_len=S)
    with pytest.raises(ValueError, match="key_padding must be one of"):
        merge_masks(None, None, batch=B, heads=H, tgt_len=T, src_len=S, key_padding="pytorch")


def test_is_causal_mask_recognises_exactly_the_causal_pattern():
    from hardkuma_attention.masks import is_causal_mask

    upper = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert is_causal_mask(upper)
    assert is_causal_mask(torch.zeros(T, T).masked_fill(upper, float("-inf")))
    assert is_causal_mask(torch.zeros(T, T).masked_fill(upper, -1e8))
    assert is_causal_mask(torch.ones(T, S, dtype=torch.bool).triu(1 + S - T))  # bottom-right, T < S
    assert not is_causal_mask(torch.ones(T, S, dtype=torch.bool).triu(1))  # top-left, T < S
    shifted = torch.zeros(T, T).masked_fill(upper, float("-inf"))
    shifted[1, 0] = 0.5
    assert not is_causal_mask(shifted)  # a bias
    more = upper.clone()
    more[2, 0] = True
    assert not is_causal_mask(more)
    assert not is_causal_mask(upper.unsqueeze(0)) and not is_causal_mask(None)
    assert not is_causal_mask(torch.zeros(T, T, dtype=torch.long))


def test_hardkuma_attention_float_key_padding_mask_is_additive_as_in_pytorch():
    """HardKumaAttention._masks: a finite float key padding mask shifts score_a exactly as the same
    values in a per-head attn_mask do (PyTorch adds both to the scores); -inf pads."""
    from hardkuma_attention import HardKumaAttention

    torch.manual_seed(0)
    m = HardKumaAttention(8, 2, batch_first=True).eval()
    x = torch.randn(B, S, 8) * 3
    kpm = torch.randn(B, S) * 2
    kpm[0, -1] = float("-inf")
    per_head = kpm[:, None, None, :].expand(B, 2, S, S).reshape(B * 2, S, S)
    out_kp, w_kp = m(x, x, x, key_padding_mask=kpm, average_attn_weights=False)
    out_am, w_am = m(x, x, x, attn_mask=per_head, average_attn_weights=False)
    _, w_plain = m(x, x, x, average_attn_weights=False)
    assert torch.equal(w_kp, w_am) and torch.allclose(out_kp, out_am)
    assert (w_kp[0, :, :, -1] == 0).all() and not torch.equal(w_kp[1], w_plain[1])
