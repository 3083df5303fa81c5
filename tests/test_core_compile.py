"""The torch.compile'd tile kernels give the same output, statistics and gradients as the eager
kernels (the same counter noise in both), and sample the right distribution."""
import pytest
import torch

from hardkuma_attention import HardKuma, HardKumaAttention
from hardkuma_attention.functional import scaled_dot_product_hardkuma
from hardkuma_attention.fused import ab_from_scores
from hardkuma_attention.streaming import TileKernels

COMPILED = TileKernels(compile=True)


@pytest.fixture(autouse=True)
def needs_compiler():
    if not COMPILED.use_compiled(1):
        pytest.skip("torch.compile does not work here")


def test_compiled_kernels_match_eager(normalize="softmax"):
    torch.manual_seed(0)
    q = torch.randn(2, 3, 5, 8, requires_grad=True)
    k = torch.randn(2, 3, 7, 8, requires_grad=True)
    v = torch.randn(2, 3, 7, 4, requires_grad=True)
    valid = torch.rand(2, 1, 1, 7) > 0.2
    results = []
    for kernels in (TileKernels(compile=False), COMPILED):
        out, _, st = scaled_dot_product_hardkuma(
            q[..., :4], k[..., :4], q[..., 4:], k[..., 4:], v, scale=0.5, valid=valid, training=True,
            normalize=normalize, dropout_p=0.1, want_stats=True, kernels=kernels, block_q=2, block_k=4,
            generator=torch.Generator().manual_seed(1),
        )
        grads = torch.autograd.grad((out * torch.arange(4.0)).sum() + st.l0_sum, (q, k, v))
        results.append((out, st, grads))
    (o1, s1, g1), (o2, s2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-5)
    assert torch.allclose(s1.l0_sum, s2.l0_sum, rtol=1e-5) and s1.nonzero == s2.nonzero and s1.cells == s2.cells
    for x, y in zip(g1, g2):
        assert torch.allclose(x, y, atol=1e-4)


def test_compiled_module_trains():
    torch.manual_seed(0)
    m = HardKumaAttention(16, 2, batch_first=True, compile=True)
    x = torch.randn(3, 6, 16)
    out, _, st = m(x, x, x, return_stats=True, need_weights=False)
    (out.sum() + st.expected_l0).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_compiled_gates_match_closed_form():
    """The compiled path (noise hashed in the kernel) samples the right distribution: the fractions
    of exact zeros and ones over 400k cells match P0 and P1 of the same (a, b)."""
    T, S = 1000, 400
    qa, qb, k = torch.full((1, 1, T, 1), 0.8), torch.full((1, 1, T, 1), -1.5), torch.ones(1, 1, S, 1)
    eye = torch.eye(S).view(1, 1, S, S)  # out = the gates

    def gates(seed):
        return scaled_dot_product_hardkuma(qa, k, qb, k, eye, scale=1.0, training=True, kernels=COMPILED,
                                           generator=torch.Generator().manual_seed(seed))[0]

    w = gates(0)
    d = HardKuma(ab_from_scores(torch.tensor(0.8), (1e-3, 100.0)), ab_from_scores(torch.tensor(-1.5), (1e-3, 100.0)))
    n = w.numel()
    for frac, p in (((w == 0).float().mean(), d.prob_zero()), ((w == 1).float().mean(), d.prob_one())):
        assert abs(frac - p) < 5 * (p * (1 - p) / n) ** 0.5
    assert torch.equal(w, gates(0))  # seeded from the torch generator: reproducible
