"""The torch.compile'd kernels give the same weights, L0 and gradients as the eager kernels."""
import pytest
import torch

from hardkuma_attention import HardKumaAttention
from hardkuma_attention.fused import hardkuma_attention_gates


@pytest.mark.parametrize("normalize_sum", [False, True])
def test_compiled_kernels_match_eager(normalize_sum):
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
