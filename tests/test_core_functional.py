"""Masked reductions, attention weights, and the fused autograd functions vs the reference path."""
import pytest
import torch

from hardkuma_attention import HardKuma
from hardkuma_attention.distributions import kuma_sample_from_reflected_uniform
from hardkuma_attention.functional import (
    expected_l0,
    expected_transitions,
    hardkuma_attention_weights,
    hardkuma_weights_from_scores,
    masked_mean,
    nonzero_rate,
)
from hardkuma_attention.fused import ab_from_scores, expected_l0_sum, hardkuma_gates, row_sum_or_one

D = torch.float64


def scores(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=D) * 1.5).requires_grad_()


def test_masked_mean_and_expected_l0():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(x, m).item() == pytest.approx(1.5)
    assert torch.allclose(masked_mean(x, m, dim=1), torch.tensor([1.5, 0.0]))  # empty row -> 0
    a = torch.tensor([[0.5, 2.0, 1.0], [1.0, 1.0, 1.0]])
    d = HardKuma(a, torch.ones_like(a))
    want = (1 - d.prob_zero())[m].mean()
    assert expected_l0(d, m).item() == pytest.approx(want.item())
    assert expected_l0(d.prob_zero(), m).item() == pytest.approx(want.item())
    assert torch.allclose(expected_l0(d, dim=1), (1 - d.prob_zero()).mean(1))


def test_expected_transitions_against_monte_carlo_and_brute_force():
    torch.manual_seed(0)
    a = torch.rand(4, 6, dtype=D) * 2 + 0.1
    b = torch.rand(4, 6, dtype=D) * 2 + 0.1
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, :] = False
    d = HardKuma(a, b)
    per_seq = expected_transitions(d, mask, normalize=False)
    # brute force with the definition
    p0 = d.prob_zero()
    for i in range(4):
        n = int(mask[i].sum())
        want = sum(p0[i, j] * (1 - p0[i, j + 1]) + (1 - p0[i, j]) * p0[i, j + 1] for j in range(n - 1)) if n > 1 else 0.0
        assert float(per_seq[i]) == pytest.approx(float(want))
    # Monte Carlo: count switches between zero and non-zero in samples
    z = d.rsample((100_000,), generator=torch.Generator().manual_seed(1))
    nz = z != 0
    sw = (nz[..., 1:] != nz[..., :-1]) & mask[:, 1:] & mask[:, :-1]
    assert torch.allclose(sw.double().sum(-1).mean(0), per_seq, atol=0.02)
    rate = expected_transitions(d, mask)
    lengths = mask.sum(1).clamp_min(1)
    assert rate.item() == pytest.approx((per_seq / lengths).mean().item())


def test_nonzero_rate():
    w = torch.tensor([[0.0, 0.3, 1.0, 0.0]])
    assert nonzero_rate(w).item() == pytest.approx(0.5)
    assert nonzero_rate(w, torch.tensor([[True, True, False, False]])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
@pytest.mark.parametrize("training", [True, False])
def test_attention_weights_masks_and_rows(normalize, training):
    sa, sb = scores(2, 3, 5), scores(2, 3, 5, seed=1)
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mask[0, 1] = False  # fully masked row
    mask[1, :, 3:] = False
    w = hardkuma_weights_from_scores(sa, sb, mask, training=training, normalize=normalize, fused=False)
    assert torch.isfinite(w).all()
    assert (w[~mask] == 0).all()
    assert (w[0, 1] == 0).all()
    assert (w >= 0).all() and (w <= 1).all()
    if normalize != "none":
        sums = w.sum(-1)
        nonempty = (w > 0).any(-1)
        assert torch.allclose(sums[nonempty], torch.ones_like(sums[nonempty]))
    w.sum().backward()
    assert torch.isfinite(sa.grad).all() and torch.isfinite(sb.grad).all()


def test_eval_weights_are_deterministic():
    a = torch.rand(3, 4, 7) * 3 + 0.05
    b = torch.rand(3, 4, 7) * 3 + 0.05
    w1 = hardkuma_attention_weights(a, b, training=False)
    w2 = hardkuma_attention_weights(a, b, training=False)
    assert torch.equal(w1, w2)
    assert torch.equal(w1, HardKuma(a, b).deterministic())


def test_training_weights_are_samples():
    a = torch.full((2000,), 1.0)
    w = hardkuma_attention_weights(a, a, training=True, generator=torch.Generator().manual_seed(0))
    assert (w == 0).float().mean().item() == pytest.approx(1 / 12, abs=0.02)
    assert (w == 1).float().mean().item() == pytest.approx(1 / 12, abs=0.02)


def test_bad_normalize_raises():
    a = torch.ones(2, 2)
    with pytest.raises(ValueError, match="normalize"):
        hardkuma_attention_weights(a, a, normalize="max")
    with pytest.raises(ValueError, match="scores"):
        hardkuma_attention_weights(a, a, normalize="softmax")


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (2, 0), (0, 4)])
def test_length_one_and_empty(shape):
    sa, sb = scores(*shape), scores(*shape, seed=2)
    for training in (True, False):
        for normalize in ("none", "sum", "softmax"):
            w = hardkuma_weights_from_scores(sa, sb, training=training, normalize=normalize)
            assert w.shape == shape and torch.isfinite(w).all()
    if 0 not in shape and shape[-1] == 1:
        w = hardkuma_weights_from_scores(sa, sb, normalize="sum")
        assert ((w == 0) | (w == 1)).all()


# ---------------------------------------------------------------- fused vs reference


def reference_gates(sa, sb, u, valid, normalize_sum, support=(-0.1, 1.1), ab_clamp=(1e-3, 100.0)):
    a, b = ab_from_scores(sa, ab_clamp), ab_from_scores(sb, ab_clamp)
    lo, hi = support
    z = (lo + (hi - lo) * kuma_sample_from_reflected_uniform(u, a, b)).clamp(0, 1)
    if valid is not None:
        z = z.masked_fill(~valid, 0.0)
    return z / row_sum_or_one(z) if normalize_sum else z


@pytest.mark.parametrize("normalize_sum", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_fused_gates_match_reference_values_and_grads(normalize_sum, with_mask):
    sa, sb = scores(2, 3, 4, 6), scores(2, 3, 4, 6, seed=1)
    u = torch.rand(2, 3, 4, 6, dtype=D, generator=torch.Generator().manual_seed(5))
    valid = None
    if with_mask:
        valid = torch.rand(2, 1, 4, 6, generator=torch.Generator().manual_seed(6)) > 0.3
        valid[0, 0, 1] = False  # a fully masked row
    z1 = hardkuma_gates(sa, sb, u, valid, normalize_sum=normalize_sum)
    z2 = reference_gates(sa, sb, u, valid, normalize_sum)
    assert torch.allclose(z1, z2, atol=1e-12)
    g = torch.randn_like(z1)
    g1 = torch.autograd.grad(z1, (sa, sb), g)
    g2 = torch.autograd.grad(z2, (sa, sb), g)
    for x, y in zip(g1, g2):
        assert torch.allclose(x, y, atol=1e-10)


@pytest.mark.parametrize("normalize_sum", [False, True])
def test_fused_gates_gradcheck(normalize_sum):
    sa, sb = scores(2, 2, 3, 5), scores(2, 2, 3, 5, seed=1)
    u = torch.rand(2, 2, 3, 5, dtype=D, generator=torch.Generator().manual_seed(7))
    valid = torch.rand(2, 1, 3, 5, generator=torch.Generator().manual_seed(8)) > 0.25
    assert torch.autograd.gradcheck(lambda a, b: hardkuma_gates(a, b, u, valid, normalize_sum=normalize_sum), (sa, sb))


def test_fused_gates_broadcast_scores():
    sa = scores(1, 5)  # broadcasts over the noise shape
    sb = scores(3, 5, seed=1)
    u = torch.rand(3, 5, dtype=D, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda a, b: hardkuma_gates(a, b, u), (sa, sb))


def test_fused_expected_l0_matches_distribution_and_gradcheck():
    sa, sb = scores(2, 3, 4, 5), scores(2, 3, 4, 5, seed=3)
    valid = torch.rand(2, 1, 4, 5, generator=torch.Generator().manual_seed(2)) > 0.3
    ab = (1e-3, 100.0)
    d = HardKuma(ab_from_scores(sa, ab), ab_from_scores(sb, ab))
    want = (d.expected_l0() * valid).sum()
    got = expected_l0_sum(sa, sb, valid)
    assert torch.allclose(got, want)
    ga = torch.autograd.grad(got, (sa, sb))
    gb = torch.autograd.grad(want, (sa, sb))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-10)
    assert torch.autograd.gradcheck(lambda a, b: expected_l0_sum(a, b, valid), (sa, sb))


def test_fused_path_is_used_in_training_and_same_as_unfused():
    sa, sb = scores(3, 4, 5), scores(3, 4, 5, seed=9)
    w1 = hardkuma_weights_from_scores(sa, sb, generator=torch.Generator().manual_seed(4))
    w2 = hardkuma_weights_from_scores(sa, sb, generator=torch.Generator().manual_seed(4), fused=False)
    assert "HardKumaGates" in type(w1.grad_fn).__name__
    assert torch.allclose(w1, w2, atol=1e-12)


def test_ab_clamp_zeroes_gradient_outside():
    sa = torch.tensor([-50.0, 0.0, 500.0], dtype=D, requires_grad=True)
    sb = torch.zeros(3, dtype=D, requires_grad=True)
    u = torch.full((3,), 0.5, dtype=D)
    l0 = expected_l0_sum(sa, sb, None)
    (ga,) = torch.autograd.grad(l0, sa)
    assert ga[0] == 0 and ga[2] == 0 and ga[1] != 0
    z = hardkuma_gates(sa, sb, u)
    assert torch.isfinite(z).all()
