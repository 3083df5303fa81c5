"""Unit tests of fairseq_plugins.common.lagrangian_l0 (the reusable L0 criterion helper)."""
import pytest
import torch

pytest.importorskip("fairseq")

from fairseq.logging import metrics  # noqa: E402

from fairseq_plugins.common import LagrangianL0, LagrangianL0Criterion  # noqa: E402
from hardkuma_attention import AttentionStats, collect_attention_stats  # noqa: E402
from hardkuma_attention.stats import report_stats  # noqa: E402


def _collect(l0_sum, cells, nonzero, key=None, requires_grad=True):
    with collect_attention_stats() as stats:
        x = torch.tensor(float(l0_sum), requires_grad=requires_grad)
        report_stats(AttentionStats(x, torch.tensor(float(cells)), torch.tensor(float(nonzero)), key))
    return stats, x


class _Cfg:
    l0_target = 0.1
    l0_keys = ""
    l0_lagrange_lr = 0.5
    l0_lagrange_alpha = 0.0
    l0_lambda_init = 1e-2
    l0_lambda_min = 1e-6
    l0_lambda_max = 5.0


def test_penalty_in_training_only_and_scaled_by_sample_size():
    l0 = LagrangianL0.from_cfg(_Cfg)
    stats, x = _collect(60.0, 100.0, 55.0)
    penalty, log = l0(stats, sample_size=8)
    lam = l0.multiplier
    assert lam > 1e-2  # measured 0.6 > target 0.1: lambda grew
    # alpha = 0: c_hat = c = 0.6 - 0.1
    assert penalty.item() == pytest.approx(8 * lam * 0.5, rel=1e-5)
    penalty.backward()
    assert x.grad.item() == pytest.approx(8 * lam / 100.0, rel=1e-5)
    assert log["l0_cells"].item() == 100.0 and log["l0_nonzero"].item() == 55.0

    l0.eval()
    stats, _ = _collect(60.0, 100.0, 55.0)
    penalty, log = l0(stats, sample_size=8)
    assert penalty is None
    assert l0.multiplier == lam  # eval never moves lambda
    assert log["l0_lambda"].item() == pytest.approx(lam)


def test_keys_select_constrained_stats_and_no_stats_means_no_penalty():
    cfg = type("C", (_Cfg,), {"l0_keys": "cross"})
    l0 = LagrangianL0.from_cfg(cfg)
    with collect_attention_stats() as stats:
        a = torch.tensor(90.0, requires_grad=True)
        b = torch.tensor(5.0, requires_grad=True)
        report_stats(AttentionStats(a, torch.tensor(100.0), torch.tensor(90.0), "self"))
        report_stats(AttentionStats(b, torch.tensor(100.0), torch.tensor(5.0), "cross"))
    penalty, log = l0(stats, 1)
    penalty.backward()
    assert a.grad is None and b.grad is not None
    assert log["l0_cells:self"].item() == 100.0 and log["l0_cells"].item() == 200.0
    with collect_attention_stats() as empty:
        pass
    assert l0(empty, 1) == (None, {})


def test_reduce_metrics_weighted_and_per_key():
    logs = [
        {"l0_sum": 10.0, "l0_cells": 100.0, "l0_nonzero": 4.0, "l0_sum:cross": 10.0,
         "l0_cells:cross": 100.0, "l0_nonzero:cross": 4.0, "l0_lambda": 0.2, "l0_lambda_n": 1,
         "l0_sum:self": 50.0, "l0_cells:self": 100.0, "l0_nonzero:self": 50.0},
        {"l0_sum": 30.0, "l0_cells": 100.0, "l0_nonzero": 16.0, "l0_sum:cross": 30.0,
         "l0_cells:cross": 100.0, "l0_nonzero:cross": 16.0, "l0_lambda": 0.4, "l0_lambda_n": 1,
         "l0_sum:self": 50.0, "l0_cells:self": 100.0, "l0_nonzero:self": 50.0},
    ]
    with metrics.aggregate() as agg:
        LagrangianL0.reduce_metrics(logs)
        out = agg.get_smoothed_values()
    assert out["l0"] == pytest.approx(0.2)
    assert out["nz"] == pytest.approx(0.1)
    assert out["l0_cross"] == pytest.approx(0.2)
    assert out["nz_self"] == pytest.approx(0.5)
    assert out["lambda"] == pytest.approx(0.3)
    with metrics.aggregate() as agg:  # a single key adds nothing: no per-key metric
        LagrangianL0.reduce_metrics([{k: v for k, v in log.items() if not k.endswith(":self")} for log in logs])
        assert "l0_cross" not in agg.get_smoothed_values()


def test_criterion_state_is_checkpointed_and_fp16_safe():
    crit = LagrangianL0Criterion(task=None, l0_cfg=_Cfg)
    from fairseq import utils

    assert utils.has_parameters(crit)  # else fairseq would not save the criterion state
    assert all(p.numel() == 0 for p in crit.parameters())  # nothing an optimizer could change
    assert not any(p.requires_grad for p in crit.parameters())  # one process: not even listed
    crit.train()
    stats, _ = _collect(60.0, 100.0, 55.0)
    loss = crit.add_l0_penalty(torch.tensor(1.0), stats, 4, {})
    assert loss.item() > 1.0
    sd = crit.state_dict()
    assert "l0.constraint.lagrange_multiplier" in sd
    fresh = LagrangianL0Criterion(task=None, l0_cfg=_Cfg).half()
    fresh.load_state_dict(sd, strict=True)
    assert fresh.l0.constraint.lagrange_multiplier.dtype == torch.float32
    assert fresh.l0.multiplier == pytest.approx(crit.l0.multiplier)
    assert int(fresh.l0.constraint.num_updates) == 1


def test_equality_constraint_pushes_a_low_l0_up():
    cfg = type("C", (_Cfg,), {"l0_equality": True, "l0_lambda_init": 0.0})
    l0 = LagrangianL0.from_cfg(cfg)
    stats, x = _collect(2.0, 100.0, 2.0)  # 2 % < target 10 %
    penalty, _ = l0(stats, sample_size=1)
    assert l0.multiplier < 0  # lambda turned negative ...
    penalty.backward()
    assert x.grad.item() < 0  # ... so the loss gradient raises the expected L0


def test_checkpoint_with_the_old_0d_anchor_loads():
    crit = LagrangianL0Criterion(task=None, l0_cfg=_Cfg)
    sd = crit.state_dict()
    sd["l0_state_anchor"] = torch.zeros(())  # written before the anchor became empty
    fresh = LagrangianL0Criterion(task=None, l0_cfg=_Cfg)
    fresh.load_state_dict(sd, strict=True)
    assert fresh.l0_state_anchor.shape == (0,)


def test_no_constrained_stats_in_training_still_joins_the_update_and_changes_nothing():
    cfg = type("C", (_Cfg,), {"l0_keys": "cross"})
    l0 = LagrangianL0.from_cfg(cfg)
    before = {k: v.clone() for k, v in l0.state_dict().items()}
    stats, _ = _collect(60.0, 100.0, 55.0, key="self")
    penalty, log = l0(stats, 1)
    assert penalty is None and "l0_penalty" not in log and log["l0_cells"].item() == 100.0
    for k, v in l0.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_world_size_mismatch_is_refused():
    from fairseq_plugins.common.lagrangian_l0 import check_world_size

    check_world_size({})  # not under torchrun
    check_world_size({"WORLD_SIZE": "1"})
    with pytest.raises(RuntimeError, match="2 independent trainings.*fairseq_plugins.launch"):
        check_world_size({"WORLD_SIZE": "2"})  # torchrun, but no process group: N copies


# ------------------------------------------------------------------ the controller configuration
def _steps(l0, n=5):
    """Penalties (exact values) and the final state of ``n`` training steps on fixed stats."""
    out = []
    for i in range(n):
        stats, x = _collect(60.0 - 10 * i, 100.0, 55.0 - 10 * i)
        penalty, _ = l0(stats, sample_size=8)
        penalty.backward()
        out.append((penalty.detach().clone(), x.grad.clone()))
    return out, {k: v.clone() for k, v in l0.state_dict().items()}


def test_default_config_is_the_papers_controller_bit_for_bit():
    """The default options (no controller flag) give exactly the controller the criterion built
    before the presets: LagrangianConstraint(alpha 0.99, lr 0.01, lambda_init 1e-4, lambda_min
    1e-12, lambda_max 5, inequality, no damping), tracking the expected L0."""
    from fairseq_plugins.nli.criterion import NLICrossEntropyConfig
    from hardkuma_attention import LagrangianConstraint

    new = LagrangianL0.from_cfg(NLICrossEntropyConfig(l0_target=0.1))
    old = LagrangianL0(target=0.1)
    old.constraint = LagrangianConstraint(0.1, alpha=0.99, lr=0.01, lambda_init=1e-4, lambda_min=1e-12,
                                          lambda_max=5.0, equality=False)
    for name in ("target", "alpha", "lr", "lambda_min", "lambda_max", "equality", "damping"):
        assert getattr(new.constraint, name) == getattr(old.constraint, name), name
    assert new.controller.observe == "expected"
    (new_steps, new_state), (old_steps, old_state) = _steps(new), _steps(old)
    for (p_new, g_new), (p_old, g_old) in zip(new_steps, old_steps):
        assert torch.equal(p_new, p_old) and torch.equal(g_new, g_old)
    assert new_state.keys() == old_state.keys()
    for k in new_state:
        assert torch.equal(new_state[k], old_state[k]), k


def test_preset_and_flags_make_the_controller():
    from fairseq_plugins.common.lagrangian_l0 import controller_from_cfg
    from fairseq_plugins.nli.criterion import NLICrossEntropyConfig
    from hardkuma_attention.config import ControllerConfig

    assert controller_from_cfg(NLICrossEntropyConfig()) == ControllerConfig.preset("paper")
    assert controller_from_cfg(_Cfg) == ControllerConfig(lr=0.5, alpha=0.0, lambda_init=1e-2, lambda_min=1e-6)
    cfg = NLICrossEntropyConfig(l0_preset="multi30k", l0_lagrange_lr=0.02, l0_damping=0.5, l0_observe="decoded")
    assert controller_from_cfg(cfg) == ControllerConfig(
        alpha=0.9, lr=0.02, lambda_init=5e-3, lambda_max=0.1, damping=0.5, observe="decoded")
    with pytest.raises(ValueError, match="unknown controller preset"):
        controller_from_cfg(type("C", (_Cfg,), {"l0_preset": "nope"}))
    with pytest.raises(ValueError, match="warmup"):
        LagrangianL0(0.1, controller=ControllerConfig(warmup=3))


def test_decoded_observation_moves_lambda_by_the_nonzero_rate_and_keeps_the_expected_gradient():
    """expected L0 0.6 > target 0.1 but only 5 % of the gates non-zero: ``observe="decoded"``
    lowers lambda (an inequality constraint that holds), ``"expected"`` raises it.  The penalty's
    value is ``lambda * m`` (alpha = 0: m = observed - target), its gradient that of the expected
    L0 in both cases."""
    from hardkuma_attention.config import ControllerConfig

    lams = {}
    for observe, observed in (("expected", 0.6), ("decoded", 0.05)):
        ctrl = ControllerConfig(lr=0.5, alpha=0.0, lambda_init=1e-2, observe=observe)
        l0 = LagrangianL0(0.1, controller=ctrl)
        stats, x = _collect(60.0, 100.0, 5.0)
        penalty, _ = l0(stats, sample_size=2)
        lams[observe] = lam = l0.multiplier
        assert penalty.item() == pytest.approx(2 * lam * (observed - 0.1), rel=1e-6)
        penalty.backward()
        assert x.grad.item() == pytest.approx(2 * lam / 100.0, rel=1e-6)
    assert lams["decoded"] == pytest.approx(1e-2 * torch.exp(torch.tensor(0.5 * (0.05 - 0.1))).item(), rel=1e-6)
    assert lams["expected"] == pytest.approx(1e-2 * torch.exp(torch.tensor(0.5 * (0.6 - 0.1))).item(), rel=1e-6)


def test_damping_adds_the_proportional_term():
    from hardkuma_attention.config import ControllerConfig

    l0 = LagrangianL0(0.1, controller=ControllerConfig(lr=0.5, alpha=0.0, lambda_init=1e-2, damping=2.0))
    stats, x = _collect(60.0, 100.0, 55.0)
    penalty, _ = l0(stats, sample_size=1)
    m = 0.6 - 0.1  # alpha = 0: the moving average is this step's violation
    assert penalty.item() == pytest.approx((l0.multiplier + 2.0 * m) * m, rel=1e-6)
    penalty.backward()
    assert x.grad.item() == pytest.approx((l0.multiplier + 2.0 * m) / 100.0, rel=1e-6)
