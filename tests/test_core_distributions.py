"""Kumaraswamy / HardKumaraswamy: closed forms vs reference values, Monte Carlo and independent
formulas (scipy quadrature and incomplete beta), gradients, extreme parameters."""
import math

import pytest
import torch

from hardkuma_attention.distributions import HardKuma, HardKumaraswamy, Kumaraswamy, kuma_sample_from_uniform

scipy = pytest.importorskip("scipy")
from scipy import integrate, special  # noqa: E402

L, R = -0.1, 1.1
K0, K1 = -L / (R - L), (1 - L) / (R - L)
GRID = [(0.2, 3.0), (0.5, 0.5), (1.0, 1.0), (2.0, 5.0), (3.0, 0.4), (0.7, 1.8), (5.0, 5.0), (0.3, 0.3)]


def hk(a, b, dtype=torch.float64):
    return HardKuma(torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype))


def kuma_pdf(k, a, b):
    return a * b * k ** (a - 1) * (1 - k**a) ** (b - 1)


@pytest.mark.parametrize(
    "a,b,p0,p1",
    [(1.0, 1.0, 1 / 12, 1 / 12), (0.5, 0.5, 0.1566, 0.2063), (2.0, 5.0, 0.0342, None), (0.2, 3.0, 0.9399, None)],
)
def test_reference_values(a, b, p0, p1):
    d = hk(a, b)
    tol = 1e-12 if a == b == 1.0 else 5e-5
    assert d.prob_zero().item() == pytest.approx(p0, abs=tol)
    if p1 is not None:
        assert d.prob_one().item() == pytest.approx(p1, abs=tol)


@pytest.mark.parametrize("a,b", GRID)
def test_closed_forms_match_independent_quadrature(a, b):
    d = hk(a, b)
    p0 = integrate.quad(kuma_pdf, 0, K0, args=(a, b), limit=200)[0]
    p1 = integrate.quad(kuma_pdf, K1, 1, args=(a, b), limit=200)[0]
    assert d.prob_zero().item() == pytest.approx(p0, rel=1e-7, abs=1e-10)
    assert d.prob_one().item() == pytest.approx(p1, rel=1e-7, abs=1e-10)
    assert d.prob_continuous().item() == pytest.approx(1 - p0 - p1, rel=1e-7, abs=1e-10)
    assert d.expected_l0().item() == pytest.approx(1 - p0, rel=1e-7, abs=1e-10)
    # E[Z] = P1 + ∫_{k0}^{k1} (l + (r-l)k) f(k) dk
    inner = integrate.quad(lambda k: (L + (R - L) * k) * kuma_pdf(k, a, b), K0, K1, limit=200)[0]
    assert d.mean.item() == pytest.approx(p1 + inner, abs=1e-6)


@pytest.mark.parametrize("a,b", GRID)
def test_mean_matches_incomplete_beta(a, b):
    # E[Z] = (r-l)/a B(1/a, b+1) [I_{k1^a} - I_{k0^a}](1/a, b+1)
    d = hk(a, b)
    p, q = 1 / a, b + 1
    expected = (R - L) / a * special.beta(p, q) * (special.betainc(p, q, K1**a) - special.betainc(p, q, K0**a))
    assert d.mean.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("a,b", GRID)
def test_closed_forms_match_monte_carlo(a, b):
    d = hk(a, b)
    g = torch.Generator().manual_seed(1234)
    n = 200_000
    z = d.rsample((n,), generator=g)
    assert z.min() >= 0 and z.max() <= 1
    tol = 5 * math.sqrt(0.25 / n)  # 5 standard errors of a proportion
    assert (z == 0).double().mean().item() == pytest.approx(d.prob_zero().item(), abs=tol)
    assert (z == 1).double().mean().item() == pytest.approx(d.prob_one().item(), abs=tol)
    assert ((z > 0) & (z < 1)).double().mean().item() == pytest.approx(d.prob_continuous().item(), abs=tol)
    assert z.mean().item() == pytest.approx(d.mean.item(), abs=tol)
    assert z.var().item() == pytest.approx(d.variance.item(), abs=tol)
    for x in (0.0, 0.25, 0.5, 0.9):
        emp = (z <= x).double().mean().item()
        assert emp == pytest.approx(d.cdf(torch.tensor(x, dtype=torch.float64)).item(), abs=tol)
    assert z.median().item() == pytest.approx(d.median().item(), abs=0.01)


@pytest.mark.parametrize("a,b", GRID)
def test_log_prob_is_a_density_wrt_delta0_delta1_lebesgue(a, b):
    d = hk(a, b)
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    assert d.log_prob(zero).exp().item() == pytest.approx(d.prob_zero().item(), rel=1e-10)
    assert d.log_prob(one).exp().item() == pytest.approx(d.prob_one().item(), rel=1e-10)

    def dens(z):
        return d.log_prob(torch.tensor(z, dtype=torch.float64)).exp().item()

    cont = integrate.quad(dens, 0, 1, limit=200, points=[1e-9, 1 - 1e-9])[0]
    assert cont == pytest.approx(d.prob_continuous().item(), rel=1e-6)
    total = d.prob_zero().item() + d.prob_one().item() + cont
    assert total == pytest.approx(1.0, abs=1e-6)
    # cdf(z) - cdf(0) = ∫_0^z density
    part = integrate.quad(dens, 0, 0.4, limit=200)[0]
    cdf = d.cdf(torch.tensor([0.0, 0.4], dtype=torch.float64))
    assert (cdf[1] - cdf[0]).item() == pytest.approx(part, rel=1e-6)


def test_cdf_edges_and_icdf():
    d = hk(0.7, 1.8)
    z = torch.tensor([-0.5, 0.0, 0.3, 0.999, 1.0, 2.0], dtype=torch.float64)
    c = d.cdf(z)
    assert c[0] == 0 and c[-1] == 1 and c[-2] == 1
    assert c[1].item() == pytest.approx(d.prob_zero().item())
    assert torch.all(c[1:] >= c[:-1])
    p = torch.tensor([0.3, 0.6], dtype=torch.float64)
    assert torch.allclose(d.cdf(d.icdf(p)), p)


def test_kumaraswamy_matches_torch_and_closed_forms():
    a = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    b = torch.tensor([0.5, 5.0, 0.7], dtype=torch.float64)
    ours, ref = Kumaraswamy(a, b), torch.distributions.Kumaraswamy(a, b)
    x = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(ours.log_prob(x), ref.log_prob(x))
    assert torch.allclose(ours.mean, ref.mean)
    assert torch.allclose(ours.variance, ref.variance)
    assert torch.allclose(ours.cdf(x), 1 - (1 - x**a) ** b)
    k = ours.rsample((200_000,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(k.mean(0), ours.mean, atol=5e-3)


def test_kuma_sampler_more_accurate_than_torch_for_large_b():
    # Same uniforms; float64 evaluation is the reference.  Naive 1 - u^(1/b) cancels for large b.
    u = torch.linspace(0.05, 0.95, 50)
    a, b = torch.tensor(1.0), torch.tensor(1e6)
    ref = kuma_sample_from_uniform(u.double(), a.double(), b.double())
    ours = kuma_sample_from_uniform(u, a, b)
    naive = (1 - (1 - u) ** (1 / b)) ** (1 / a)  # the chain of power transforms torch uses
    err_ours = ((ours.double() - ref) / ref).abs().max().item()
    err_naive = ((naive.double() - ref) / ref).abs().max().item()
    assert err_ours < 1e-5
    assert err_naive > 100 * err_ours


def test_rsample_has_pathwise_gradients_and_matches_formula():
    a = torch.tensor([0.6, 1.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([2.0, 0.8], dtype=torch.float64, requires_grad=True)

    def sample(a, b):
        return HardKuma(a, b).rsample((16,), generator=torch.Generator().manual_seed(3))

    assert torch.autograd.gradcheck(sample, (a, b))


@pytest.mark.parametrize("fn", ["prob_zero", "prob_one", "prob_continuous", "expected_l0", "mean", "median"])
def test_gradcheck_closed_forms(fn):
    a = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64, requires_grad=True)

    def f(a, b):
        d = HardKuma(a, b)
        out = getattr(d, fn)
        return out() if callable(out) else out

    assert torch.autograd.gradcheck(f, (a, b))


def test_gradcheck_log_prob_and_cdf():
    a = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([0.0, 0.37, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: HardKuma(a, b).log_prob(z), (a, b))
    assert torch.autograd.gradcheck(lambda a, b: HardKuma(a, b).cdf(torch.tensor(0.37, dtype=torch.float64)), (a, b))


EXTREME = torch.tensor([1e-6, 1e-4, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_parameters_are_finite(dtype):
    a, b = torch.meshgrid(EXTREME, EXTREME, indexing="ij")
    a = a.to(dtype).requires_grad_()
    b = b.to(dtype).requires_grad_()
    d = HardKuma(a, b)
    outs = {
        "p0": d.prob_zero(), "p1": d.prob_one(), "pc": d.prob_continuous(), "l0": d.expected_l0(),
        "det": d.deterministic(), "z": d.rsample((8,), generator=torch.Generator().manual_seed(0)),
    }
    for name, t in outs.items():
        assert torch.isfinite(t).all(), name
        assert (t >= 0).all() and (t <= 1).all(), name
    total = (outs["p0"] + outs["p1"] + outs["pc"]).float()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(total, torch.ones_like(total), atol=tol)
    (outs["l0"].sum() + outs["z"].sum() + outs["p1"].sum()).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_no_spurious_round_off_to_zero_or_one():
    # Where the float64 value is representable in float32 and strictly inside (0, 1), the float32
    # closed forms must be strictly inside (0, 1) too, with small relative error.
    a, b = torch.meshgrid(EXTREME, EXTREME, indexing="ij")
    d32, d64 = HardKuma(a, b), HardKuma(a.double(), b.double())
    tiny = torch.finfo(torch.float32).tiny
    for name in ("prob_zero", "expected_l0", "prob_one", "prob_continuous"):
        v32, v64 = getattr(d32, name)(), getattr(d64, name)()
        inside = (v64 > 1e3 * tiny) & (v64 < 1 - 1e-6)
        assert ((v32 > 0) & (v32 < 1))[inside].all(), name
        rel = ((v32.double() - v64) / v64).abs()[inside]
        assert rel.max() < 1e-3, name


def test_deterministic_rule_and_median():
    a = torch.tensor([1.0, 0.2, 50.0, 0.05], dtype=torch.float64)
    b = torch.tensor([1.0, 3.0, 0.05, 0.05], dtype=torch.float64)
    d = HardKuma(a, b)
    det = d.deterministic()
    p0, p1, pc = d.prob_zero(), d.prob_one(), d.prob_continuous()
    assert pc[0] > max(p0[0], p1[0]) and det[0].item() == pytest.approx(0.5)  # median of a=b=1
    assert det[1] == 0 and p0[1] > p1[1]
    assert det[2] == 1 and p1[2] > p0[2]
    cont = (pc > p0) & (pc > p1)
    assert ((det > 0) & (det < 1))[cont].all()
    assert torch.equal(det[~cont], (p1 >= p0).double()[~cont])
    assert torch.allclose(det[cont], d.median()[cont])


def test_batch_shape_expand_and_validation():
    d = HardKumaraswamy(torch.ones(3, 1), torch.ones(1, 4))
    assert d.batch_shape == (3, 4)
    assert d.rsample((2,)).shape == (2, 3, 4)
    e = d.expand((5, 3, 4))
    assert e.batch_shape == (5, 3, 4) and e.stretch == d.stretch
    assert torch.equal(e.prob_zero()[2], d.prob_zero())
    assert HardKuma(1.0, 2.0).batch_shape == torch.Size()
    with pytest.raises(ValueError):
        HardKuma(torch.tensor([-1.0]), torch.tensor([1.0]), validate_args=True)
    with pytest.raises(ValueError, match="support"):
        HardKuma(1.0, 1.0, support=(0.1, 1.1))
    with pytest.raises(ValueError):
        HardKuma(torch.tensor([1.0]), torch.tensor([1.0]), validate_args=True).log_prob(torch.tensor([1.5]))


def test_custom_support():
    d = HardKuma(torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), support=(-0.5, 1.5))
    assert d.prob_zero().item() == pytest.approx(0.25)
    assert d.prob_one().item() == pytest.approx(0.25)
