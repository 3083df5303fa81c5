"""The torch.compile'd kernels give the same weights, L0 and gradients as the eager kernels."""
import pytest
import torch

from hardkuma_attention import HardKuma, HardKumaAttention
from hardkuma_attention.fused import _counter_uniform, ab_from_scores
from hardkuma_attention.fused import hardkuma_attention_gates


@pytest.mark.parametrize("normalize_sum", [False, True])
def test_compiled_kernels_match_eager(monkeypatch, normalize_sum):
    from hardkuma_attention import fused

    monkeypatch.setattr(fused, "COUNTER_NOISE", False)  # the same torch.rand noise in both
    torch.manual_seed(0)
    q = torch.randn(2, 3, 5, 8, requires_grad=True)
    k = torch.randn(2, 3, 7, 8, requires_grad=True)
    valid = torch.rand(2, 1, 1, 7) > 0.2
    results = []
    for compile in (False, True):
        w, l0 = hardkuma_attention_gates(
            q[..., :4], k[..., :4], q[..., 4:], k[..., 4:], 0.5, None, valid,
            normalize_sum=normalize_sum, want_l0=True, compile=compile, generator=torch.Generator().manual_seed(1),
        )
        grads = torch.autograd.grad((w * torch.arange(7.0)).sum() + l0, (q, k))
        results.append((w, l0, grads))
    (w1, l1, g1), (w2, l2, g2) = results
    assert torch.allclose(w1, w2, atol=1e-6)
    assert torch.allclose(l1, l2, rtol=1e-5)
    for x, y in zip(g1, g2):
        assert torch.allclose(x, y, atol=1e-5)
    assert (w1 == 0).any() and ((w1 > 0) & (w1 < 1)).any()  # both branches were exercised


def test_compiled_module_trains():
    torch.manual_seed(0)
    m = HardKumaAttention(16, 2, batch_first=True, compile=True)
    x = torch.randn(3, 6, 16)
    out, _, st = m(x, x, x, return_stats=True)
    (out.sum() + st.expected_l0).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_counter_noise_is_uniform_and_uncorrelated():
    scipy_stats = pytest.importorskip("scipy.stats")
    u = _counter_uniform((400, 500), torch.tensor(987654321), torch.float64).flatten()
    assert 0 < u.min() and u.max() < 1
    assert scipy_stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    lag1 = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1]
    assert abs(lag1) < 5 / len(u) ** 0.5
    v = _counter_uniform((400, 500), torch.tensor(987654322), torch.float64).flatten()  # next seed
    assert abs(torch.corrcoef(torch.stack([u, v]))[0, 1]) < 5 / len(u) ** 0.5


def test_compiled_gates_with_counter_noise_match_closed_form():
    """The compiled path (noise drawn in the kernel) samples the right distribution: the fractions
    of exact zeros and ones over 400k cells match P0 and P1 of the same (a, b)."""
    q = torch.tensor([[0.8, -1.5]]).expand(1, 1, 1000, 2).contiguous()  # one score per map
    k = torch.ones(1, 1, 400, 2)
    w, _ = hardkuma_attention_gates(q[..., :1], k[..., :1], q[..., 1:], k[..., 1:], 1.0, compile=True,
                                    generator=torch.Generator().manual_seed(0))
    d = HardKuma(ab_from_scores(torch.tensor(0.8), (1e-3, 100.0)), ab_from_scores(torch.tensor(-1.5), (1e-3, 100.0)))
    n = w.numel()
    for frac, p in (((w == 0).float().mean(), d.prob_zero()), ((w == 1).float().mean(), d.prob_one())):
        assert abs(frac - p) < 5 * (p * (1 - p) / n) ** 0.5
    again, _ = hardkuma_attention_gates(q[..., :1], k[..., :1], q[..., 1:], k[..., 1:], 1.0, compile=True,
                                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(w, again)  # seeded from the torch generator: reproducible
