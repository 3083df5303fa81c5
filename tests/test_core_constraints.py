"""LagrangianConstraint: update rule, training-only updates, dtype handling, checkpointing."""
import io
import math

import pytest
import torch
from torch import nn

from hardkuma_attention import LagrangianConstraint


def test_update_rule_matches_hand_computation():
    c = LagrangianConstraint(target=0.1, alpha=0.9, lr=0.5, lambda_init=0.2)
    lam, m = 0.2, 0.0
    for measured in (0.6, 0.3, 0.05):
        x = torch.tensor(measured, requires_grad=True)
        pen = c(x)
        cv = measured - 0.1
        m = 0.9 * m + 0.1 * cv
        lam = lam * math.exp(0.5 * m)
        assert c.moving_average.item() == pytest.approx(m, rel=1e-6)
        assert c.multiplier == pytest.approx(lam, rel=1e-6)
        assert pen.item() == pytest.approx(lam * m, rel=1e-5)  # value of c_hat is the moving average
        (g,) = torch.autograd.grad(pen, x)
        assert g.item() == pytest.approx(lam, rel=1e-6)  # gradient of c, scaled by stopgrad(lambda)
    assert int(c.num_updates) == 3


def test_multiplier_is_clamped():
    c = LagrangianConstraint(0.0, alpha=0.0, lr=100.0, lambda_init=1.0, lambda_max=3.0)
    c(torch.tensor(1.0))
    assert c.multiplier == pytest.approx(3.0)
    c2 = LagrangianConstraint(1.0, alpha=0.0, lr=100.0, lambda_init=1.0, lambda_min=1e-3)
    c2(torch.tensor(0.0))
    assert c2.multiplier == pytest.approx(1e-3)


def test_equality_constraint_can_change_sign():
    c = LagrangianConstraint(0.5, alpha=0.0, lr=1.0, lambda_init=0.0, equality=True)
    c(torch.tensor(0.0))
    assert c.multiplier == pytest.approx(-0.5)


def test_eval_mode_does_not_update():
    c = LagrangianConstraint(0.1, lr=0.5)
    c(torch.tensor(0.9))
    state = {k: v.clone() for k, v in c.state_dict().items()}
    c.eval()
    pen = c(torch.tensor(0.9))
    for k, v in c.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.isfinite(pen)


@pytest.mark.parametrize("cast", [lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()])
def test_state_stays_float32_through_casts(cast):
    model = nn.Sequential(nn.Linear(3, 3))
    model.constraint = LagrangianConstraint(0.1, lambda_init=0.123456789)
    cast(model)
    assert model.constraint.lagrange_multiplier.dtype == torch.float32
    assert model.constraint.moving_average.dtype == torch.float32
    assert model.constraint.multiplier == pytest.approx(0.123456789, rel=1e-7)
    pen = model.constraint(torch.tensor(0.5, dtype=torch.float16))
    assert pen.dtype == torch.float32


def test_state_dict_round_trip():
    c = LagrangianConstraint(0.2, lr=0.3)
    for v in (0.9, 0.8, 0.7):
        c(torch.tensor(v))
    buf = io.BytesIO()
    torch.save(c.state_dict(), buf)
    buf.seek(0)
    c2 = LagrangianConstraint(0.2, lr=0.3)
    c2.load_state_dict(torch.load(buf, weights_only=True))
    assert c2.multiplier == c.multiplier and torch.equal(c2.moving_average, c.moving_average)
    assert int(c2.num_updates) == 3
    x = torch.tensor(0.4)
    assert torch.equal(c(x), c2(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        LagrangianConstraint(0.1, alpha=1.0)
    with pytest.raises(ValueError, match="lambda"):
        LagrangianConstraint(0.1, lambda_init=10.0, lambda_max=1.0)
    with pytest.raises(ValueError, match="scalar"):
        LagrangianConstraint(0.1)(torch.ones(3))


def test_drives_a_rate_to_its_target():
    # The task wants the open rate at 0.8; the constraint holds it at <= 0.3.  The multiplicative
    # multiplier update oscillates around the equilibrium (lambda* = 2 (0.8 - 0.3) = 1), so the
    # time-averaged rate is what reaches the target.
    torch.manual_seed(0)
    theta = nn.Parameter(torch.zeros(50))
    c = LagrangianConstraint(0.3, alpha=0.9, lr=0.5, lambda_init=0.01)
    opt = torch.optim.SGD([theta], lr=0.5)
    rates, lambdas = [], []
    for _ in range(3000):
        rate = torch.sigmoid(theta).mean()
        loss = (rate - 0.8) ** 2 + c(rate)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rates.append(rate.item())
        lambdas.append(c.multiplier)
    tail = rates[1500:]
    assert sum(tail) / len(tail) == pytest.approx(0.3, abs=0.03)
    assert rates[0] > 0.45  # it started well above the target and was pulled down
    assert min(lambdas[1500:]) < 1.0 < max(lambdas[1500:])


def test_damping_adds_proportional_term():
    d = 3.0
    c = LagrangianConstraint(0.5, alpha=0.5, lr=0.1, lambda_init=0.0, equality=True, damping=d)
    lam, m = 0.0, 0.0
    for measured in (0.9, 0.8, 0.2, 0.1):
        x = torch.tensor(measured, requires_grad=True)
        pen = c(x)
        m = 0.5 * m + 0.5 * (measured - 0.5)
        lam = lam + 0.1 * m
        (g,) = torch.autograd.grad(pen, x)
        assert c.multiplier == pytest.approx(lam, rel=1e-6)
        assert g.item() == pytest.approx(lam + d * m, rel=1e-6)
        assert pen.item() == pytest.approx((lam + d * m) * m, rel=1e-5)
    assert "damping=3.0" in repr(c)


def test_damping_never_pushes_a_satisfied_inequality_up():
    c = LagrangianConstraint(0.5, alpha=0.0, lr=0.1, lambda_init=1e-3, damping=10.0)
    x = torch.tensor(0.1, requires_grad=True)  # below the target: m = -0.4, lambda + d m < 0
    (g,) = torch.autograd.grad(c(x), x)
    assert g.item() == 0.0
    x = torch.tensor(0.9, requires_grad=True)
    (g,) = torch.autograd.grad(c(x), x)
    assert g.item() == pytest.approx(c.multiplier + 10.0 * 0.4, rel=1e-5)


def test_bad_damping_and_observed_shape_are_rejected():
    with pytest.raises(ValueError, match="damping"):
        LagrangianConstraint(0.1, damping=-1.0)
    c = LagrangianConstraint(0.1)
    with pytest.raises(ValueError, match="observed"):
        c(torch.tensor(0.2), torch.tensor([0.1, 0.2]))


def test_multiplier_tracks_observed_while_gradient_comes_from_measured():
    c = LagrangianConstraint(0.3, alpha=0.0, lr=0.5, lambda_init=0.0, equality=True)
    x = torch.tensor(0.3, requires_grad=True)  # measured exactly on target ...
    pen = c(x, observed=0.1)  # ... but the observed value is 0.2 below it
    assert c.moving_average.item() == pytest.approx(-0.2)
    assert c.multiplier == pytest.approx(-0.1)
    (g,) = torch.autograd.grad(pen, x)
    assert g.item() == pytest.approx(-0.1)
    c.eval()
    c(x, observed=torch.tensor(0.9))
    assert c.multiplier == pytest.approx(-0.1)  # eval: no update


def _gates_under_constraint(proxy: bool, steps: int = 3000):
    """50 gates p = sigmoid(theta) that the task wants open (weights 0.1..1), expected rate
    constrained to 0.3; decoded = share of gates with p > 0.5 (no gradient)."""
    torch.manual_seed(0)
    theta = torch.zeros(50, requires_grad=True)
    w = torch.linspace(0.1, 1.0, 50)
    opt = torch.optim.Adam([theta], lr=0.05)
    c = LagrangianConstraint(0.3, alpha=0.9, lr=0.05, lambda_init=0.0, lambda_max=50.0, equality=True)
    for _ in range(steps):
        p = torch.sigmoid(theta)
        decoded = (p.detach() > 0.5).float().mean()
        loss = -(w * torch.log(p)).mean() + c(p.mean(), decoded if proxy else None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = torch.sigmoid(theta).detach()
    return p.mean().item(), (p > 0.5).float().mean().item()


def test_proxy_lagrangian_meets_the_target_on_the_observed_quantity():
    expected, decoded = _gates_under_constraint(proxy=False)
    assert expected == pytest.approx(0.3, abs=0.01)
    assert decoded < 0.2  # graded gates: far fewer than 30 % are decoded as open
    expected, decoded = _gates_under_constraint(proxy=True)
    assert decoded == pytest.approx(0.3, abs=0.021)  # 50 gates: steps of 0.02
    assert expected > 0.32


@pytest.mark.parametrize("target", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_target_is_refused(target):
    with pytest.raises(ValueError, match="target must be finite"):
        LagrangianConstraint(target)


def test_target_outside_the_valid_range_is_refused():
    with pytest.raises(ValueError, match=r"target must be in \[0.0, 1.0\], got target=1.5"):
        LagrangianConstraint(1.5, valid_range=(0.0, 1.0))
    assert LagrangianConstraint(1.0, valid_range=(0.0, 1.0)).target == 1.0
    assert LagrangianConstraint(1.5).target == 1.5  # no range given: any finite target


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["measured", "observed"])
def test_non_finite_value_never_reaches_the_state(bad, where):
    c = LagrangianConstraint(0.1, alpha=0.5, lr=0.5, lambda_init=0.2, equality=True)
    c(torch.tensor(0.4))
    before = {k: v.clone() for k, v in c.state_dict().items()}
    x = torch.tensor(bad if where == "measured" else 0.3)
    with pytest.warns(RuntimeWarning, match="non-finite measured value"):
        pen = c(x, observed=bad) if where == "observed" else c(x)
    assert not torch.isfinite(pen) or where == "observed"
    for k, v in c.state_dict().items():
        assert torch.equal(v, before[k]), k  # multiplier, moving average, num_updates unchanged
    assert c.skipped_updates == 1
    c(torch.tensor(0.4))  # finite values update again, from the clean state
    assert int(c.num_updates) == 2 and math.isfinite(c.multiplier) and math.isfinite(float(c.moving_average))
    assert c.skipped_updates == 1 and "skipped_updates" not in c.state_dict()


def test_non_finite_in_eval_mode_changes_nothing_and_is_not_counted():
    c = LagrangianConstraint(0.1).eval()
    c(torch.tensor(float("nan")))
    assert c.skipped_updates == 0 and int(c.num_updates) == 0
